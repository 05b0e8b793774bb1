"""Who may call the fake Dify api, and how its errors become answers.

- console routes: ``@setup_required @login_required``: the access token (an HS256 JWT signed
  with ``SECRET_KEY``) from the ``access_token`` cookie from 1.9.2 on (with the ``X-CSRF-Token``
  header matching the ``csrf_token`` cookie), else ``Authorization: Bearer``;
- service API routes: ``validate_and_get_api_token(scope)``, a bearer app or dataset key;
- the init-password gate: a Flask-like signed ``session`` cookie.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Mapping
from enum import Enum
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from difystack.fakes.common.http import Endpoint, Handler
from difystack.fakes.common.tokens import b64url, b64url_decode, compact_json, hmac_sha256, jwt_decode
from difystack.fakes.dify_api.config import ApiConfig
from difystack.fakes.dify_api.daemon_client import PluginDaemonFailure, PluginDaemonUnavailable
from difystack.fakes.dify_api.errors import (
    CSRF_INVALID,
    INVALID_ENCRYPTED_DATA,
    NOT_INIT_VALIDATED,
    NOT_SETUP,
    UNAUTHORIZED,
    DifyError,
    plugin_error,
    unauthorized,
)
from difystack.fakes.dify_api.state import ApiState, Principal


class Access(Enum):
    OPEN = "open"  # no check and no error translation (``/health``)
    PUBLIC = "public"
    SETUP = "setup"  # public, once Dify is set up
    CONSOLE = "console"  # a logged-in account (handlers get the Principal)
    APP_KEY = "app"  # service API with an app's key (handlers get the key's record)
    DATASET_KEY = "dataset"  # service API with a dataset key


def sign_session(data: Mapping[str, Any], key: str) -> str:
    """A Flask-like signed session cookie value."""
    body = b64url(compact_json(dict(data)))
    return f"{body}.{b64url(hmac_sha256(f'session:{key}', body))}"


def read_session(value: str | None, key: str) -> dict[str, Any]:
    if not value or "." not in value:
        return {}
    body, signature = value.rsplit(".", 1)
    try:
        if not hmac.compare_digest(hmac_sha256(f"session:{key}", body), b64url_decode(signature)):
            return {}
        data = json.loads(b64url_decode(body))
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def decode_base64_password(value: str) -> str:
    """Dify's ``decrypt_password_field`` (>= 1.11.1): base64, else 401 Invalid encrypted data."""
    try:
        return base64.b64decode(value).decode("utf-8")
    except (binascii.Error, ValueError):
        raise INVALID_ENCRYPTED_DATA from None


class Gatekeeper:
    def __init__(self, config: ApiConfig, state: ApiState) -> None:
        self.config = config
        self.state = state

    def guard(self, access: Access, handler: Handler) -> Endpoint:
        """The route-table guard: checks ``access`` and answers Dify's errors in Dify's shape."""
        if access is Access.OPEN:
            return handler

        async def guarded(request: Request) -> Response:
            try:
                return await self.call(access, handler, request)
            except DifyError as error:
                return error.response()
            except PluginDaemonFailure as failure:
                if access is not Access.CONSOLE:
                    raise
                return plugin_error(failure)
            except PluginDaemonUnavailable as exc:
                return DifyError(500, "internal_server_error", str(exc)).response()

        return guarded

    async def call(self, access: Access, handler: Handler, request: Request) -> Response:
        if access is Access.PUBLIC:
            return await handler(request)
        if access in (Access.APP_KEY, Access.DATASET_KEY):
            return await handler(request, self.api_token(request, access.value))
        self.require_setup()
        if access is Access.SETUP:
            return await handler(request)
        return await handler(request, self.authenticate(request))

    def require_setup(self) -> None:
        if self.state.setup is None:
            raise NOT_INIT_VALIDATED if self.config.init_password else NOT_SETUP

    def authenticate(self, request: Request) -> Principal:
        token = self.access_token(request)
        payload = jwt_decode(token, self.config.secret_key) if token else None
        account = self.state.accounts.get(str(payload.get("user_id"))) if payload else None
        if account is None or self.state.tenant is None:
            raise UNAUTHORIZED
        if self.config.features.cookie_session and request.method != "OPTIONS":
            self.check_csrf(request, account["id"])
        return Principal(account=account, tenant=self.state.tenant)

    def access_token(self, request: Request) -> str | None:
        if self.config.features.cookie_session:
            cookie = request.cookies.get(self.config.cookie_name("access_token"))
            if cookie:
                return cookie
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    def check_csrf(self, request: Request, user_id: str) -> None:
        header = request.headers.get("X-CSRF-Token", "")
        cookie = request.cookies.get(self.config.cookie_name("csrf_token"), "")
        payload = jwt_decode(header, self.config.secret_key) if header else None
        if not payload or header != cookie or payload.get("sub") != user_id:
            raise CSRF_INVALID

    def api_token(self, request: Request, scope: str) -> dict[str, Any]:
        header = request.headers.get("Authorization")
        if header is None or " " not in header:
            raise unauthorized("Authorization header must be provided and start with 'Bearer'")
        scheme, value = header.split(None, 1)
        if scheme.lower() != "bearer":
            raise unauthorized("Authorization scheme must be 'Bearer'")
        token = next((t for t in self.state.api_tokens if t["token"] == value and t["type"] == scope), None)
        if token is None:
            raise unauthorized("Access token is invalid")
        token["last_used_at"] = int(time.time())
        return token
