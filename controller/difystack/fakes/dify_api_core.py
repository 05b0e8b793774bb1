"""Shared pieces of the fake Dify api: configuration, version gates, Dify's error shape,
persisted state, signed tokens and the HTTP client for the plugin daemon."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from starlette.responses import JSONResponse

from difystack import settings

DEFAULT_VERSION = "1.13.3"
DEFAULT_SECRET_KEY = "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U"
DEFAULT_PLUGIN_DAEMON_KEY = "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi"
LOGIN_MAX_ERROR_LIMITS = 5
LOGIN_LOCKOUT_SECONDS = 86400


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    return default if not raw else raw in {"1", "true", "yes", "on"}


# --- versions ----------------------------------------------------------------------------


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


# --- Dify's error shape ------------------------------------------------------------------


class DifyError(Exception):
    """A Dify HTTP error: ``{"code", "message", "status"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "message": self.message, "status": self.status}, self.status)


def invalid_param(message: str) -> DifyError:
    """What a ValueError or a pydantic ValidationError becomes in Dify's console API."""
    return DifyError(400, "invalid_param", message)


NOT_SETUP = DifyError(
    401,
    "not_setup",
    "Dify has not been initialized and installed yet. "
    "Please proceed with the initialization and installation process first.",
)
NOT_INIT_VALIDATED = DifyError(
    401,
    "not_init_validated",
    "Init validation has not been completed yet. Please proceed with the init validation process first.",
)
ALREADY_SETUP = DifyError(
    403,
    "already_setup",
    "Dify has been successfully installed. Please refresh the page or return to the dashboard homepage.",
)
INIT_VALIDATE_FAILED = DifyError(
    401, "init_validate_failed", "Init validation failed. Please check the password and try again."
)
AUTHENTICATION_FAILED = DifyError(401, "authentication_failed", "Invalid email or password.")
INVALID_ENCRYPTED_DATA = DifyError(401, "authentication_failed", "Invalid encrypted data")
LOGIN_LOCKED = DifyError(
    429, "email_code_login_limit", "Too many incorrect password attempts. Please try again later."
)
UNAUTHORIZED = DifyError(401, "unauthorized", "Unauthorized.")
CSRF_INVALID = DifyError(401, "unauthorized", "CSRF token is missing or invalid.")


# --- signed tokens -----------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_encode(payload: Mapping[str, Any], key: str) -> str:
    """An HS256 JWT signed with ``SECRET_KEY`` (Dify's PassportService)."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(dict(payload), separators=(",", ":")).encode())
    signature = hmac.new(key.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(signature)}"


def jwt_decode(token: str, key: str) -> dict[str, Any] | None:
    """The payload of a valid, unexpired token; None otherwise."""
    try:
        header, body, signature = token.split(".")
        expected = hmac.new(key.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _b64url_decode(signature)):
            return None
        payload = json.loads(_b64url_decode(body))
    except (ValueError, TypeError):
        return None
    if not isinstance(payload, dict) or float(payload.get("exp", 0)) < time.time():
        return None
    return payload


def sign_session(data: Mapping[str, Any], key: str) -> str:
    """A Flask-like signed session cookie value."""
    body = _b64url(json.dumps(dict(data), separators=(",", ":")).encode())
    signature = hmac.new(f"session:{key}".encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64url(signature)}"


def read_session(value: str | None, key: str) -> dict[str, Any]:
    if not value or "." not in value:
        return {}
    body, signature = value.rsplit(".", 1)
    expected = hmac.new(f"session:{key}".encode(), body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _b64url_decode(signature)):
            return {}
        data = json.loads(_b64url_decode(body))
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def hash_password(password: str, salt: bytes) -> str:
    """Dify's ``libs.password.hash_password``: PBKDF2-SHA256, 10000 rounds."""
    return base64.b64encode(
        hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10000).hex().encode()
    ).decode()


def obfuscated_token(token: str) -> str:
    """Dify's ``encrypter.obfuscated_token``."""
    if not token:
        return token
    if len(token) <= 8:
        return "*" * 20
    return token[:6] + "*" * 12 + token[-2:]


# --- persisted state ---------------------------------------------------------------------


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


# --- plugin daemon client ----------------------------------------------------------------


class PluginDaemonUnavailable(Exception):
    pass


class PluginDaemonFailure(Exception):
    """A non-zero daemon envelope: ``error_type`` and ``message`` from its JSON message."""

    def __init__(self, error_type: str, message: str, code: int) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.code = code

    def plugin_invoke_error(self) -> tuple[str, str] | None:
        """(inner error type, inner message) when the plugin itself raised."""
        if self.error_type != "PluginInvokeError":
            return None
        try:
            inner = json.loads(self.message)
            return str(inner.get("error_type")), str(inner.get("message"))
        except (ValueError, AttributeError):
            return "PluginInvokeError", self.message


def _empty_stream() -> PluginDaemonFailure:
    return PluginDaemonFailure("PluginDaemonInnerError", "got empty data from plugin daemon", -500)


def _stream_data(response: httpx.Response) -> Iterator[Any]:
    """The data of each ``data: {envelope}`` line of a daemon stream, in order; a failed one raises."""
    for line in response.text.splitlines():
        line = line.strip()
        if not line:
            continue
        envelope = json.loads(line[5:].strip() if line.startswith("data:") else line)
        if envelope.get("code") != 0:
            raise _failure(envelope)
        yield envelope.get("data")


def _failure(envelope: Mapping[str, Any]) -> PluginDaemonFailure:
    message = str(envelope.get("message", ""))
    try:
        error = json.loads(message)
        return PluginDaemonFailure(str(error["error_type"]), str(error["message"]), int(envelope["code"]))
    except (ValueError, KeyError, TypeError):
        return PluginDaemonFailure("PluginDaemonInnerError", message, int(envelope.get("code", -500)))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # built once: loading CA certificates per client is slow


@dataclass
class PluginDaemonClient:
    base_url: str
    key: str

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A management call; returns the envelope's data or raises PluginDaemonFailure."""
        response = await self._send(method, path, **kwargs)
        try:
            envelope = response.json()
        except ValueError as exc:
            raise PluginDaemonUnavailable(f"plugin daemon answered {response.status_code}") from exc
        if envelope.get("code") != 0:
            raise _failure(envelope)
        return envelope.get("data")

    async def dispatch(self, path: str, plugin_id: str, payload: Mapping[str, Any]) -> Any:
        """A dispatch call; the daemon streams ``data: {envelope}`` lines, the first one counts."""
        response = await self._send("POST", path, json=dict(payload), headers={"X-Plugin-ID": plugin_id})
        for data in _stream_data(response):
            return data
        raise _empty_stream()

    async def dispatch_stream(self, path: str, plugin_id: str, payload: Mapping[str, Any]) -> list[Any]:
        """Every chunk of a streamed dispatch (an LLM's answer); a failed chunk raises."""
        response = await self._send("POST", path, json=dict(payload), headers={"X-Plugin-ID": plugin_id})
        chunks = list(_stream_data(response))
        if not chunks:
            raise _empty_stream()
        return chunks

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-Api-Key": self.key, **kwargs.pop("headers", {})}
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url, timeout=600, trust_env=False, verify=_tls_context()
            ) as client:
                return await client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise PluginDaemonUnavailable("Request to Plugin Daemon Service failed") from exc


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
