"""Who may call the fake LocalAI: with ``LOCALAI_API_KEY`` set, every route but the public ones
needs a key (Echo checks it before routing, so an unknown path answers 401 too).

The public routes are the table's ``Access.PUBLIC`` rows plus the web UI's pages the real
server also leaves open (``core/http/auth/public_routes.go``), which this fake does not serve.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import Enum

from starlette.types import ASGIApp, Receive, Scope, Send

from difystack.fakes.common.journal import JOURNAL_PATH, request_headers
from difystack.fakes.localai.errors import error_response
from difystack.fakes.localai.state import LocalAIState

UI_PUBLIC_GET_PATHS = frozenset({"/", "/app", "/browse", "/login", "/favicon.svg"})
UI_PUBLIC_GET_PREFIXES = ("/swagger", "/assets/", "/static/", "/locales/", "/app/", "/api/auth/")


class Access(Enum):
    PUBLIC = "public"
    KEY = "key"  # an API key, when the server has any


def presented_key(headers: Mapping[str, str]) -> str:
    """The API key a request carries, looked up in the order LocalAI uses."""
    authorization = headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        return authorization.removeprefix("Bearer ")
    if authorization:
        return authorization
    for header in ("x-api-key", "xi-api-key"):
        if headers.get(header):
            return headers[header]
    for cookie in headers.get("cookie", "").split(";"):
        name, _, value = cookie.strip().partition("=")
        if name == "token" and value:
            return value
    return ""


def is_public(method: str, path: str, public_paths: Collection[str]) -> bool:
    if path == JOURNAL_PATH:
        return True
    if method not in ("GET", "HEAD"):
        return False
    return path in public_paths or path in UI_PUBLIC_GET_PATHS or path.startswith(UI_PUBLIC_GET_PREFIXES)


class LocalAIGate:
    """ASGI middleware: starts the server lazily, strips trailing slashes, checks API keys."""

    def __init__(self, app: ASGIApp, state: LocalAIState, public_paths: Collection[str]) -> None:
        self.app = app
        self.state = state
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.state.start()
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope, path=path.rstrip("/") or "/")
        if self.refused(scope):
            response = error_response(401, "An authentication key is required", "invalid_request_error")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refused(self, scope: Scope) -> bool:
        api_keys = self.state.settings.api_keys
        if not api_keys or is_public(scope["method"], scope["path"], self.public_paths):
            return False
        return presented_key(request_headers(scope)) not in api_keys
