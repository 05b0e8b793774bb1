"""Converging a running stack's models onto its configuration (deploy, verify, register)."""
