"""Errors difystack reports to its users as one clear line (no traceback)."""

from __future__ import annotations


class DifystackError(Exception):
    """An expected failure: the CLI prints ``Error: <message>`` and exits non-zero."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ConfigError(DifystackError):
    """The stack configuration is invalid; nothing was written or started."""

    exit_code = 2


class EngineError(DifystackError):
    """The Docker engine or the Compose plugin is missing or unreachable."""

    exit_code = 3


class Interrupted(DifystackError):
    """Ctrl-C: stop cleanly; the next run picks up where this one stopped."""

    exit_code = 130
