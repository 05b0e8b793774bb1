"""Faithful fake servers for Xinference, LocalAI and Dify (console API + plugin daemon).

Each fake implements the real HTTP contract (paths, status codes, error bodies, state
transitions) documented in the project's reference notes, so that difystack - and any CI
without GPUs - can run a real Compose stack against them. Run one with
``python -m difystack.fakes <role> --port N``.
"""
