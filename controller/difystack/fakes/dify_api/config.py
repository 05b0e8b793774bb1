"""The fake Dify api's settings (the real api container's environment) and the behaviour
switches at the version boundaries of the reference notes (§0)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from difystack import settings
from difystack.fakes.common.env import env_flag
from difystack.fakes.dify_plugin_daemon.config import DEFAULT_SERVER_KEY as DEFAULT_PLUGIN_DAEMON_KEY

DEFAULT_VERSION = "1.13.3"
DEFAULT_SECRET_KEY = "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U"


@dataclass(frozen=True, order=True)
class DifyVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> DifyVersion:
        match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+.].*)?", text.strip())
        if not match:
            raise ValueError(f"DIFYSTACK_FAKE_DIFY_VERSION must look like 1.13.3, got {text!r}")
        version = cls(*(int(part) for part in match.groups()))
        if version.major != 1:
            raise ValueError(
                f"the fake Dify api only supports Dify 1.x (plugins, model-credential API); got {text!r}"
            )
        return version

    def at_least(self, text: str) -> bool:
        return self >= DifyVersion(*(int(part) for part in text.split(".")))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class Features:
    """Behaviour switches at the version boundaries of the reference notes (§0)."""

    paginated_plugin_list: bool  # >= 1.1.0: {"plugins", "total"}
    credentials_api: bool  # >= 1.8.0: .../models/credentials CRUD; old POST .../models is a no-op
    strict_default_model: bool  # >= 1.9.0: a bad default-model entry is an error
    cookie_session: bool  # >= 1.9.2: HttpOnly cookies + X-CSRF-Token
    base64_password: bool  # >= 1.11.1: /login password is base64

    @classmethod
    def of(cls, version: DifyVersion) -> Features:
        return cls(
            paginated_plugin_list=version.at_least("1.1.0"),
            credentials_api=version.at_least("1.8.0"),
            strict_default_model=version.at_least("1.9.0"),
            cookie_session=version.at_least("1.9.2"),
            base64_password=version.at_least("1.11.1"),
        )


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class ApiConfig:
    version: DifyVersion
    features: Features
    secret_key: str
    init_password: str
    access_token_minutes: int
    refresh_token_days: int
    secure_cookies: bool
    console_api_url: str
    plugin_daemon_url: str
    plugin_daemon_key: str
    marketplace_enabled: bool
    marketplace_api_url: str
    marketplace_reachable: bool
    marketplace_packages: Path | None
    max_package_size: int
    state_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiConfig:
        version = DifyVersion.parse(settings.FAKE_DIFY_VERSION.read(env) or DEFAULT_VERSION)
        console_api_url = env.get("CONSOLE_API_URL", "")
        console_web_url = env.get("CONSOLE_WEB_URL", "")
        marketplace = (settings.FAKE_MARKETPLACE.read(env) or "reachable").strip().lower()
        if marketplace not in {"reachable", "unreachable"}:
            raise ValueError(
                f"DIFYSTACK_FAKE_MARKETPLACE must be reachable or unreachable, got {marketplace!r}"
            )
        return cls(
            version=version,
            features=Features.of(version),
            secret_key=env.get("SECRET_KEY") or DEFAULT_SECRET_KEY,
            init_password=env.get("INIT_PASSWORD", ""),
            access_token_minutes=int(env.get("ACCESS_TOKEN_EXPIRE_MINUTES") or 60),
            refresh_token_days=int(env.get("REFRESH_TOKEN_EXPIRE_DAYS") or 30),
            secure_cookies=console_api_url.startswith("https") and console_web_url.startswith("https"),
            console_api_url=console_api_url.rstrip("/"),
            plugin_daemon_url=(env.get("PLUGIN_DAEMON_URL") or "http://plugin_daemon:5002").rstrip("/"),
            plugin_daemon_key=env.get("PLUGIN_DAEMON_KEY") or DEFAULT_PLUGIN_DAEMON_KEY,
            marketplace_enabled=env_flag(env, "MARKETPLACE_ENABLED", True),
            marketplace_api_url=(env.get("MARKETPLACE_API_URL") or "https://marketplace.dify.ai").rstrip("/"),
            marketplace_reachable=marketplace == "reachable",
            marketplace_packages=Path(given)
            if (given := settings.FAKE_MARKETPLACE_PACKAGES.read(env))
            else None,
            max_package_size=int(env.get("PLUGIN_MAX_PACKAGE_SIZE") or 52428800),
            state_dir=Path(settings.FAKE_STATE_DIR.read(env) or "/app/api/storage/difystack-fake"),
        )

    def cookie_name(self, name: str) -> str:
        return f"__Host-{name}" if self.secure_cookies else name
