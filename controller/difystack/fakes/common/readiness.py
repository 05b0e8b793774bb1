"""Readiness: a fake is ready ``ready_delay`` seconds after it started, never with the
``never-ready`` failure (see :mod:`difystack.fakes.behaviour`)."""

from __future__ import annotations

import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.journal import JOURNAL_PATHS


class Readiness:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.started_at = time.monotonic()

    def mark_started(self) -> None:
        self.started_at = time.monotonic()

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def ready(self) -> bool:
        if self.behaviour.fails("never-ready"):
            return False
        return self.uptime() >= self.behaviour.ready_delay


class ReadinessGate:
    """ASGI middleware answering 503 to every request (but journal reads) until ready."""

    def __init__(self, app: ASGIApp, readiness: Readiness) -> None:
        self.app = app
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in JOURNAL_PATHS and not self.readiness.ready():
            await JSONResponse({"message": "service is starting"}, status_code=503)(scope, receive, send)
            return
        await self.app(scope, receive, send)
