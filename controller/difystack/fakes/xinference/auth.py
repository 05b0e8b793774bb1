"""Xinference's accounts (on by default since v3): who may call which route.

Accounts, API keys and the JWT secret live in ``$XINFERENCE_HOME/auth/auth.db`` (SQLite, like
the real server) so they survive a restart. An admin logs in for a JWT; an ``xf-`` API key may
only query models and run inference (``Access.QUERY``); everything else is ``Access.ADMIN``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from difystack.fakes.common.http import Endpoint, Handler
from difystack.fakes.common.tokens import jwt_decode, jwt_encode, random_token
from difystack.fakes.xinference.errors import ApiError


class Access(Enum):
    PUBLIC = "public"
    QUERY = "query"  # model query + inference: API keys allowed
    ADMIN = "admin"  # register, launch, terminate, cluster, key management: admin JWT only


def _password_hash(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 20_000).hex()


# The scopes 4.1.0 puts in an admin's access token.
ADMIN_SCOPES = (
    "admin",
    "cache:delete",
    "cache:list",
    "keys:create",
    "keys:manage",
    "logs:list",
    "model_requests:read_body",
    "models:list",
    "models:read",
    "models:register",
    "models:write",
    "monitor:view",
    "routers:list",
    "routers:operate",
    "routers:read",
    "routers:write",
    "settings:read",
    "settings:write",
    "users:manage",
    "virtualenv:delete",
    "virtualenv:list",
)


class AuthStore:
    """SQLite-backed accounts, API keys and secrets, like the real ``auth.db``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "auth.db"
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS system_config (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " username TEXT UNIQUE NOT NULL, password_hash TEXT NOT NULL, salt TEXT NOT NULL,"
                " created_at REAL NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " name TEXT NOT NULL, prefix TEXT NOT NULL, key_hash TEXT UNIQUE NOT NULL,"
                " user_id INTEGER NOT NULL, created_at REAL NOT NULL, expires_at TEXT)"
            )
        self.jwt_secret = self._config("jwt_secret_key") or self._set_config(
            "jwt_secret_key", secrets.token_hex(32)
        )

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path)
        try:
            with connection:
                yield connection
        finally:
            connection.close()

    def _config(self, key: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT value FROM system_config WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_config(self, key: str, value: str) -> str:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO system_config (key, value) VALUES (?, ?)", (key, value))
        return value

    def has_account(self) -> bool:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM users").fetchone()[0] > 0

    def setup_token(self) -> str:
        """The one-time setup token (kept in the DB until an account exists)."""
        return self._config("setup_token") or self._set_config("setup_token", secrets.token_urlsafe(32))

    def create_first_account(self, username: str, password: str) -> int:
        salt = secrets.token_hex(16)
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO users (username, password_hash, salt, created_at) VALUES (?, ?, ?, ?)",
                (username, _password_hash(password, salt), salt, time.time()),
            )
            db.execute("DELETE FROM system_config WHERE key = 'setup_token'")
        return int(cursor.lastrowid or 0)

    def user_id(self, username: str, password: str | None = None) -> int | None:
        with self._db() as db:
            row = db.execute(
                "SELECT id, password_hash, salt FROM users WHERE username = ?", (username,)
            ).fetchone()
        if row is None:
            return None
        if password is not None and not hmac.compare_digest(row[1], _password_hash(password, row[2])):
            return None
        return int(row[0])

    def create_key(self, name: str, user_id: int, expires_at: str | None) -> dict[str, Any]:
        key = "xf-" + random_token(48)
        prefix = key[:7]
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO api_keys (name, prefix, key_hash, user_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, prefix, hashlib.sha256(key.encode()).hexdigest(), user_id, time.time(), expires_at),
            )
        return {"id": int(cursor.lastrowid or 0), "key": key, "prefix": prefix, "name": name}

    def key_is_valid(self, key: str) -> bool:
        with self._db() as db:
            row = db.execute(
                "SELECT id FROM api_keys WHERE key_hash = ?", (hashlib.sha256(key.encode()).hexdigest(),)
            ).fetchone()
        return row is not None

    def list_keys(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute(
                "SELECT k.id, k.user_id, u.username, k.prefix, k.name, k.created_at, k.expires_at"
                " FROM api_keys k LEFT JOIN users u ON u.id = k.user_id ORDER BY k.id"
            ).fetchall()
        return [
            {
                "id": key_id,
                "user_id": user_id,
                "owner_username": owner,
                "key_prefix": prefix,
                "name": name,
                "description": None,
                "enabled": True,
                "expires_at": expires_at,
                "model_permissions": [
                    {"id": key_id, "api_key_id": key_id, "permission_type": "all", "permission_value": None}
                ],
                "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created_at)),
            }
            for key_id, user_id, owner, prefix, name, created_at, expires_at in rows
        ]

    def delete_key(self, key_id: int) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount > 0

    def issue_token(self, username: str, token_type: str, lifetime_seconds: int) -> str:
        claims = {
            "sub": username,
            "user_id": self.user_id(username),
            "scopes": list(ADMIN_SCOPES),
            "token_version": 0,
            "exp": int(time.time()) + lifetime_seconds,
            "type": token_type,
        }
        return jwt_encode(claims, self.jwt_secret)

    def token_subject(self, token: str, token_type: str) -> str | None:
        """The username of a valid, unexpired token of ``token_type``."""
        claims = jwt_decode(token, self.jwt_secret)
        if claims is None or claims.get("type") != token_type:
            return None
        username = claims.get("sub")
        return username if isinstance(username, str) and self.user_id(username) is not None else None


@dataclass(frozen=True)
class Caller:
    """Who sent a request: an admin (JWT), an API key, or nobody (auth off)."""

    kind: str  # "admin" | "key" | "anonymous"
    username: str | None = None


def caller(auth: AuthStore | None, request: Request) -> Caller:
    """Who sent ``request``; 401 without valid credentials while accounts are on."""
    if auth is None:
        return Caller("anonymous")
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer" and credential:
        if credential.startswith("xf-") and auth.key_is_valid(credential):
            return Caller("key")
        username = auth.token_subject(credential, "access")
        if username is not None:
            return Caller("admin", username)
    raise ApiError(401, "Could not validate credentials", {"WWW-Authenticate": "Bearer"})


def access_guard(auth: AuthStore | None) -> Callable[[Access, Handler], Endpoint]:
    """The route-table guard: PUBLIC passes, QUERY needs any credential, ADMIN an admin's."""

    def guard(access: Access, handler: Handler) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if access is not Access.PUBLIC:
                who = caller(auth, request)
                if access is Access.ADMIN and who.kind == "key":
                    raise ApiError(403, "API keys can only access model query and inference endpoints")
            return await handler(request)

        return guarded

    return guard
