"""A minimal stand-in for services difystack only needs to be alive (web UI, sandbox, weaviate).

It answers the paths listed in ``DIFYSTACK_STUB_PATHS`` (comma-separated) with 200 and a small
body, and everything else with 404, so a wrong healthcheck path fails as it would for real.
``DIFYSTACK_STUB_NAME`` names the service in the bodies and the request journal.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack import settings
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.http import Endpoint, Handler, RouteRow, fake_app, table_routes
from difystack.fakes.common.journal import RequestJournal


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    name = settings.STUB_NAME.read(env) or "stub"
    paths = [p.strip() for p in (settings.STUB_PATHS.read(env) or "/health").split(",") if p.strip()]

    async def answer(request: Request) -> Response:
        if behaviour.fails("never-ready"):
            return JSONResponse({"status": "starting", "service": name}, status_code=503)
        return JSONResponse({"status": "ok", "service": name, "path": request.url.path})

    def public(_: None, handler: Handler) -> Endpoint:
        return handler

    table: list[RouteRow[None]] = [("GET", path, answer, None) for path in paths]  # GET serves HEAD too
    return fake_app(table_routes(table, public), RequestJournal())
