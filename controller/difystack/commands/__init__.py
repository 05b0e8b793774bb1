"""CLI commands beyond the lifecycle ones in cli.py."""
