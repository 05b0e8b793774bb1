"""Tests of the HTTP clients (difystack.clients) against the project's fake servers.

Helpers shared by the client tests: a recorder of the exact requests a client sends and a
scripted ``httpx.MockTransport`` for the branches the fakes do not cover (old Dify versions,
lockouts, transient failures).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from difystack.clients.http import HttpClient


@dataclass(frozen=True)
class Sent:
    """One request as it left the client."""

    method: str
    path: str
    query: dict[str, str]
    headers: httpx.Headers
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None


def sent_from(request: httpx.Request) -> Sent:
    return Sent(
        method=request.method,
        path=request.url.path,
        query=dict(request.url.params),
        headers=request.headers,
        raw=request.read(),
    )


class RequestRecorder:
    """Records every request a client sends (hooked into its httpx client)."""

    def __init__(self, client: HttpClient) -> None:
        self.sent: list[Sent] = []
        client.http.event_hooks["request"].append(self._record)

    def _record(self, request: httpx.Request) -> None:
        self.sent.append(sent_from(request))

    def to(self, method: str, path: str) -> list[Sent]:
        return [item for item in self.sent if item.method == method and item.path == path]

    def last(self, method: str, path: str) -> Sent:
        matching = self.to(method, path)
        assert matching, f"no {method} {path} among {[(s.method, s.path) for s in self.sent]}"
        return matching[-1]


Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class ScriptedServer:
    """A MockTransport answering by (method, path); a list of responses is served in order
    (the last one repeats). Every request is recorded."""

    routes: dict[tuple[str, str], list[httpx.Response] | Handler] = field(default_factory=dict)
    version: str | None = None
    sent: list[Sent] = field(default_factory=list)

    def on(self, method: str, path: str, *responses: httpx.Response | Handler) -> ScriptedServer:
        if len(responses) == 1 and callable(responses[0]) and not isinstance(responses[0], httpx.Response):
            self.routes[(method, path)] = responses[0]
        else:
            self.routes[(method, path)] = [r for r in responses if isinstance(r, httpx.Response)]
        return self

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(sent_from(request))
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            response = httpx.Response(
                404, json={"code": "not_found", "message": "no such route", "status": 404}
            )
        elif callable(route):
            response = route(request)
        else:
            response = route.pop(0) if len(route) > 1 else route[0]
            response = httpx.Response(
                response.status_code, headers=response.headers, content=response.content
            )
        if self.version is not None:
            response.headers["X-Version"] = self.version
        return response

    def to(self, method: str, path: str) -> list[Sent]:
        return [item for item in self.sent if item.method == method and item.path == path]


def dify_error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "status": status})
