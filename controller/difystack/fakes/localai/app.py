"""The fake LocalAI's routes, all in one table, and its app factory."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.http import Endpoint, Handler, RouteRow, fake_app, table_routes
from difystack.fakes.common.journal import RequestJournal
from difystack.fakes.localai.auth import Access, LocalAIGate
from difystack.fakes.localai.config import Settings
from difystack.fakes.localai.errors import LocalAIError, http_error, localai_error
from difystack.fakes.localai.gallery import GalleryHandlers
from difystack.fakes.localai.health import HealthHandlers
from difystack.fakes.localai.inference import InferenceHandlers
from difystack.fakes.localai.state import LocalAIState


def route_table(state: LocalAIState) -> list[RouteRow[Access]]:
    """Every route: ``(method, path, handler, access)``; the gallery's only while its endpoints
    are enabled, inference with and without ``/v1`` (rerank only with it)."""
    health, gallery, inference = HealthHandlers(state), GalleryHandlers(state), InferenceHandlers(state)
    key = Access.KEY
    table: list[RouteRow[Access]] = [
        ("GET", "/healthz", health.healthz, Access.PUBLIC),
        ("GET", "/readyz", health.readyz, Access.PUBLIC),
        ("GET", "/version", health.version, key),
        ("GET", "/v1/models", gallery.list_models, key),
        ("GET", "/models", gallery.list_models, key),
    ]
    if state.settings.gallery_endpoints:
        table += [
            ("GET", "/models/available", gallery.available_models, key),
            ("GET", "/models/galleries", gallery.galleries, key),
            ("POST", "/models/apply", gallery.apply, key),
            ("POST", "/models/delete/{name}", gallery.delete, key),
            ("GET", "/models/jobs", gallery.all_jobs, key),
            ("GET", "/models/jobs/{uuid}", gallery.job_status, key),
            ("POST", "/models/reload", gallery.reload, key),
        ]
    for prefix in ("/v1", ""):
        table += [
            ("POST", f"{prefix}/chat/completions", inference.chat_completions, key),
            ("POST", f"{prefix}/completions", inference.completions, key),
            ("POST", f"{prefix}/embeddings", inference.embeddings, key),
        ]
    table.append(("POST", "/v1/rerank", inference.rerank, key))
    return table


def unguarded(_: Access, handler: Handler) -> Endpoint:
    return handler  # LocalAIGate checks keys before routing, as Echo's middleware does


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    """A fresh fake LocalAI application; all state lives in this call's objects."""
    state = LocalAIState(behaviour, Settings.from_env(env))
    table = route_table(state)
    public_paths = [path for _, path, _, access in table if access is Access.PUBLIC]
    app = fake_app(
        table_routes(table, unguarded),
        RequestJournal(),
        middleware=[Middleware(LocalAIGate, state=state, public_paths=public_paths)],
        exception_handlers={HTTPException: http_error, LocalAIError: localai_error},
        lifespan=state.lifespan,
    )
    app.state.fake = state
    return app
