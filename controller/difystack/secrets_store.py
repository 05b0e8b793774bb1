"""Secrets generated once per stack, kept in a 0600 file and reused on every render."""

from __future__ import annotations

import os
import secrets
import string
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

from difystack.errors import DifystackError

_ALPHANUMERIC = string.ascii_letters + string.digits


def token(length: int = 42) -> str:
    """A URL-safe random value without characters Compose or shells would interpret."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def password(length: int = 24) -> str:
    """A password that satisfies Dify's rule (a letter and a digit, 8+ characters)."""
    while True:
        candidate = token(length)
        if any(c.isalpha() for c in candidate) and any(c.isdigit() for c in candidate):
            return candidate


# name -> generator. INIT_PASSWORD is limited to 30 characters by Dify.
GENERATED: dict[str, Callable[[], str]] = {
    "dify_secret_key": lambda: token(48),
    "db_password": lambda: token(32),
    "redis_password": lambda: token(32),
    "sandbox_api_key": lambda: token(32),
    "plugin_daemon_key": lambda: token(48),
    "plugin_inner_api_key": lambda: token(48),
    "weaviate_api_key": lambda: token(32),
    "admin_password": lambda: password(24),
    "init_password": lambda: password(24),
    "xinference_admin_password": lambda: password(24),
    "localai_api_key": lambda: token(32),
}

PLACEHOLDERS = {name: f"placeholder-{name.replace('_', '-')}" for name in GENERATED}


class SecretsStore:
    """A YAML mapping of secret name -> value in a file only its owner can read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            # Someone loosened the permissions: tighten them rather than leak further.
            self.path.chmod(0o600)
        data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DifystackError(f"{self.path}: not a mapping of secret names to strings")
        return {str(k): v for k, v in data.items()}

    def completed(self, names: Iterable[str] = GENERATED) -> dict[str, str]:
        """Stored secrets plus freshly generated values for the missing ones (not saved)."""
        current = self.read()
        for name in names:
            if name not in current:
                current[name] = GENERATED[name]()
        return current

    def ensure(self, names: Iterable[str] = GENERATED) -> dict[str, str]:
        """Return every requested secret, generating and saving the ones not stored yet."""
        values = self.completed(names)
        self.save(values)
        return values

    def save(self, values: dict[str, str]) -> None:
        """Write ``values`` unless the file already holds exactly them."""
        if not self.path.exists() or self.read() != values:
            self.write(values)

    def set(self, name: str, value: str) -> None:
        current = self.read()
        current[name] = value
        self.write(current)

    def write(self, values: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "# difystack secrets: generated once, reused on every render. Keep private.\n"
        text += yaml.safe_dump(dict(sorted(values.items())), default_flow_style=False)
        write_private(self.path, text)


def write_private(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` with mode 0600 from the first byte on."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
