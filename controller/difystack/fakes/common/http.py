"""Request bodies, route tables and the app factory every fake is built with.

Each fake declares all its routes in one table of ``(method, path, handler, access)`` rows;
``access`` is the fake's own enum (who may call the route) and its ``guard`` turns a handler
into the Starlette endpoint that enforces it. The journal's routes come first in every app.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from difystack.fakes.common.journal import JournalMiddleware, RequestJournal

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[..., Awaitable[Response]]
AccessT = TypeVar("AccessT")
RouteRow = tuple[str, str, Handler, AccessT]
Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


async def json_body(request: Request) -> Any:
    """The request's JSON body, or None when it is empty or not JSON."""
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def json_object(request: Request) -> dict[str, Any] | None:
    """The request's JSON body when it is an object, else None."""
    body = await json_body(request)
    return body if isinstance(body, dict) else None


def table_routes(
    table: Iterable[tuple[str, str, Handler, AccessT]], guard: Callable[[AccessT, Handler], Endpoint]
) -> list[Route]:
    """One Starlette route per row, its handler wrapped by ``guard`` for the row's access."""
    return [Route(path, guard(access, handler), methods=[method]) for method, path, handler, access in table]


def fake_app(
    routes: Sequence[Route],
    journal: RequestJournal,
    *,
    middleware: Sequence[Middleware] = (),
    exception_handlers: Mapping[Any, Callable[[Request, Exception], Awaitable[Response]]] | None = None,
    lifespan: Lifespan | None = None,
) -> Starlette:
    """The app of one fake: the journal's routes, then the fake's; the journal outermost, so it
    records every answer, gate refusals included."""
    return Starlette(
        routes=[*journal.routes(), *routes],
        middleware=[Middleware(JournalMiddleware, journal=journal), *middleware],
        exception_handlers=dict(exception_handlers or {}),
        lifespan=lifespan,
    )
