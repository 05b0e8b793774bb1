"""Everything Dify keeps in its database (and Redis) that the fake needs, persisted as one JSON
file under ``DIFYSTACK_FAKE_STATE_DIR``: setup, the workspace and its owner, login limits,
refresh tokens, model credentials and settings, apps, API keys and knowledge bases."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from difystack.fakes.dify_api.errors import unauthorized

LOGIN_MAX_ERROR_LIMITS = 5
LOGIN_LOCKOUT_SECONDS = 86400


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def timestamp() -> int:
    """Seconds since the epoch, as Dify's ``created_at`` fields of apps and datasets."""
    return int(time.time())


def hash_password(password: str, salt: bytes) -> str:
    """Dify's ``libs.password.hash_password``: PBKDF2-SHA256, 10000 rounds."""
    return base64.b64encode(
        hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10000).hex().encode()
    ).decode()


@dataclass(frozen=True)
class Principal:
    """The logged-in account and its workspace (Dify's ``current_account_with_tenant``)."""

    account: Mapping[str, Any]
    tenant: Mapping[str, Any]

    @property
    def tenant_id(self) -> str:
        return str(self.tenant["id"])

    @property
    def user_id(self) -> str:
        return str(self.account["id"])


@dataclass
class ApiState:
    """Everything Dify keeps in its database (and Redis) that the fake needs, as one JSON file."""

    path: Path
    setup: dict[str, Any] | None = None
    tenant: dict[str, Any] | None = None
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    login_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_credentials: list[dict[str, Any]] = field(default_factory=list)
    provider_models: list[dict[str, Any]] = field(default_factory=list)
    model_settings: list[dict[str, Any]] = field(default_factory=list)
    default_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    apps: list[dict[str, Any]] = field(default_factory=list)
    api_tokens: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)

    PERSISTED = (
        "setup",
        "tenant",
        "accounts",
        "login_errors",
        "refresh_tokens",
        "model_credentials",
        "provider_models",
        "model_settings",
        "default_models",
        "apps",
        "api_tokens",
        "datasets",
        "documents",
        "segments",
    )

    @classmethod
    def load(cls, state_dir: Path) -> ApiState:
        state = cls(path=state_dir / "state.json")
        if state.path.exists():
            stored = json.loads(state.path.read_text())
            for name in cls.PERSISTED:
                if name in stored:
                    setattr(state, name, stored[name])
        return state

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({name: getattr(self, name) for name in self.PERSISTED}, indent=1))
        os.replace(temporary, self.path)

    # accounts

    def create_owner(
        self, email: str, name: str, password: str, language: str, version: str
    ) -> dict[str, Any]:
        salt = secrets.token_bytes(16)
        account = {
            "id": str(uuid.uuid4()),
            "email": email,
            "name": name,
            "password": hash_password(password, salt),
            "password_salt": base64.b64encode(salt).decode(),
            "interface_language": language,
            "created_at": now_iso(),
            "last_login_at": None,
        }
        self.accounts[account["id"]] = account
        self.tenant = {"id": str(uuid.uuid4()), "name": f"{name}'s Workspace", "created_at": now_iso()}
        self.setup = {"version": version, "setup_at": now_iso()}
        self.save()
        return account

    def account_by_email(self, email: str) -> dict[str, Any] | None:
        return next((account for account in self.accounts.values() if account["email"] == email), None)

    @staticmethod
    def password_matches(account: Mapping[str, Any], password: str) -> bool:
        expected = hash_password(password, base64.b64decode(account["password_salt"]))
        return hmac.compare_digest(expected, account["password"])

    # login rate limit (Redis in the real api, with a 24 h expiry)

    def login_locked(self, email: str) -> bool:
        entry = self.login_errors.get(email)
        if entry is None or entry["expires_at"] < time.time():
            return False
        return int(entry["count"]) >= LOGIN_MAX_ERROR_LIMITS

    def add_login_error(self, email: str) -> None:
        entry = self.login_errors.get(email)
        if entry is None or entry["expires_at"] < time.time():
            entry = {"count": 0, "expires_at": time.time() + LOGIN_LOCKOUT_SECONDS}
        entry["count"] += 1
        self.login_errors[email] = entry
        self.save()

    def reset_login_errors(self, email: str) -> None:
        if self.login_errors.pop(email, None) is not None:
            self.save()

    def drop_refresh_tokens(self, account_id: Any) -> None:
        self.refresh_tokens = {
            token: entry for token, entry in self.refresh_tokens.items() if entry["account_id"] != account_id
        }

    def owner(self) -> Principal:
        """The workspace owner, on whose behalf the service API calls models."""
        if self.tenant is None or not self.accounts:
            raise unauthorized("Tenant does not exist.")
        return Principal(account=next(iter(self.accounts.values())), tenant=self.tenant)
