"""Health routes: ``/healthz`` always 200, ``/readyz`` 503 ``starting`` until the startup
preload is done and ``ready_delay`` has passed, ``/version``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.localai.catalogue import LOCALAI_COMMIT, LOCALAI_VERSION
from difystack.fakes.localai.state import LocalAIState


class HealthHandlers:
    def __init__(self, state: LocalAIState) -> None:
        self.state = state

    async def healthz(self, _: Request) -> Response:
        return Response(status_code=200)

    async def readyz(self, _: Request) -> Response:
        if self.state.is_ready():
            return Response(status_code=200)
        return JSONResponse({"status": "starting", "reason": "startup preload in progress"}, status_code=503)

    async def version(self, _: Request) -> Response:
        return JSONResponse({"version": f"{LOCALAI_VERSION} ({LOCALAI_COMMIT})"})
