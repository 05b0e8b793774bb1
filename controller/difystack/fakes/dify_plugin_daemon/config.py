"""The fake plugin daemon's settings, from the real daemon's environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from difystack import settings
from difystack.config_model import version_tuple
from difystack.fakes.common.env import env_flag

DEFAULT_SERVER_KEY = "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi"
DEFAULT_DAEMON_VERSION = "0.5.5"
# Up to 0.5.4 the daemon bound decode/from_identifier's identifier from a JSON body only, while
# Dify's api sends it as a query parameter: every local-package install failed with this 400.
QUERY_IDENTIFIER_SINCE = (0, 5, 5)


@dataclass(frozen=True)
class DaemonConfig:
    server_key: str
    force_verifying_signature: bool
    storage_root: Path
    max_package_size: int
    version: str = DEFAULT_DAEMON_VERSION
    plugin_envs: Path | None = None
    tiktoken_cache: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DaemonConfig:
        return cls(
            server_key=env.get("SERVER_KEY") or DEFAULT_SERVER_KEY,
            force_verifying_signature=env_flag(env, "FORCE_VERIFYING_SIGNATURE", True),
            storage_root=Path(env.get("PLUGIN_STORAGE_LOCAL_ROOT") or "/app/storage"),
            max_package_size=int(env.get("MAX_PLUGIN_PACKAGE_SIZE") or 52428800),
            version=settings.FAKE_DAEMON_VERSION.read(env) or DEFAULT_DAEMON_VERSION,
            plugin_envs=Path(envs) if (envs := settings.FAKE_PLUGIN_ENVS.read(env)) else None,
            tiktoken_cache=env.get("TIKTOKEN_CACHE_DIR", ""),
        )

    @property
    def binds_query_identifier(self) -> bool:
        return version_tuple(self.version) >= QUERY_IDENTIFIER_SINCE
