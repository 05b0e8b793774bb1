"""The request journal: the only thing a fake adds to the real API.

``GET /_fake/requests`` lists every request the server received (method, path, Host header,
client address, status) and ``DELETE /_fake/requests`` clears it. Tests use it to prove facts
that cannot be seen from the client side, e.g. that Dify's credential validation reached
Xinference by its compose service name, or that a second ``difystack up`` made no mutating call.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JOURNAL_PATH = "/_fake/requests"
JOURNAL_PATHS = frozenset({JOURNAL_PATH})  # never journalled, never gated


@dataclass
class JournalEntry:
    method: str
    path: str
    query: str
    host: str
    client: str
    status: int
    at: float


class RequestJournal:
    def __init__(self, path: str = JOURNAL_PATH) -> None:
        self.path = path
        self.entries: list[Any] = []

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(entry) for entry in self.entries]

    def routes(self) -> list[Route]:
        async def read(_: Request) -> Response:
            return JSONResponse(self.as_json())

        async def clear(_: Request) -> Response:
            self.entries.clear()
            return Response(status_code=204)

        return [
            Route(self.path, read, methods=["GET"]),
            Route(self.path, clear, methods=["DELETE"]),
        ]


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers, names lower-cased (as ASGI gives them)."""
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}


class JournalMiddleware:
    """ASGI middleware recording each HTTP request (except journal reads) in a journal."""

    def __init__(self, app: ASGIApp, journal: RequestJournal) -> None:
        self.app = app
        self.journal = journal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in JOURNAL_PATHS:
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            client = scope.get("client")
            self.journal.entries.append(
                JournalEntry(
                    method=scope["method"],
                    path=scope["path"],
                    query=scope.get("query_string", b"").decode("latin-1"),
                    host=request_headers(scope).get("host", ""),
                    client=client[0] if client else "",
                    status=status,
                    at=time.time(),
                )
            )
