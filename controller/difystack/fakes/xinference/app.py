"""The fake Xinference's routes, all in one table, and its app factory."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.http import RouteRow, fake_app, table_routes
from difystack.fakes.common.journal import RequestJournal
from difystack.fakes.xinference.accounts import AccountHandlers
from difystack.fakes.xinference.auth import Access, access_guard
from difystack.fakes.xinference.cluster import ClusterHandlers
from difystack.fakes.xinference.errors import ApiError, api_error_response, http_error_response
from difystack.fakes.xinference.inference import InferenceHandlers
from difystack.fakes.xinference.models import ModelHandlers
from difystack.fakes.xinference.registrations import RegistrationHandlers
from difystack.fakes.xinference.state import XinferenceState


def route_table(state: XinferenceState) -> list[RouteRow[Access]]:
    """Every route: ``(method, path, handler, access)``."""
    cluster, accounts = ClusterHandlers(state), AccountHandlers(state)
    registrations, models, inference = (
        RegistrationHandlers(state),
        ModelHandlers(state),
        InferenceHandlers(state),
    )
    public, query, admin = Access.PUBLIC, Access.QUERY, Access.ADMIN
    registration = "/v1/model_registrations/{model_type}"
    return [
        ("GET", "/status", cluster.status, public),
        ("GET", "/v1/address", cluster.address, public),
        ("GET", "/v1/cluster/auth", cluster.cluster_auth, public),
        ("GET", "/v1/cluster/version", cluster.cluster_version, admin),
        ("GET", "/v1/cluster/info", cluster.cluster_info, admin),
        ("GET", "/v1/cluster/devices", cluster.cluster_devices, admin),
        ("GET", "/v1/workers", cluster.workers_info, admin),
        ("GET", "/v1/admin/setup/status", accounts.setup_status, public),
        ("POST", "/v1/admin/setup", accounts.setup, public),
        ("POST", "/token", accounts.login, public),
        ("POST", "/v1/auth/refresh", accounts.refresh, public),
        ("POST", "/v1/admin/keys", accounts.create_key, admin),
        ("GET", "/v1/admin/keys", accounts.list_keys, admin),
        ("DELETE", "/v1/admin/keys/{key_id}", accounts.delete_key, admin),
        ("GET", "/v1/models", models.list_models, query),
        ("POST", "/v1/models", models.launch_model, admin),
        ("GET", "/v1/models/instances", models.list_instances, query),
        ("GET", "/v1/models/{model_uid}", models.describe_model, query),
        ("DELETE", "/v1/models/{model_uid}", models.terminate_model, admin),
        ("GET", "/v1/models/{model_uid}/progress", models.launch_progress, query),
        ("GET", "/v1/models/{model_uid}/events", models.model_events, query),
        ("POST", "/v1/models/{model_uid}/cancel", models.cancel_launch, admin),
        ("GET", registration, registrations.list_registrations, query),
        ("POST", registration, registrations.register_model, admin),
        ("GET", f"{registration}/{{model_name}}", registrations.get_registration, query),
        ("DELETE", f"{registration}/{{model_name}}", registrations.unregister_model, admin),
        ("GET", "/v1/engines/{model_name}", registrations.llm_engines, query),
        ("GET", "/v1/engines/{model_type}/{model_name}", registrations.typed_engines, query),
        ("POST", "/v1/embeddings", inference.embeddings, query),
        ("POST", "/v1/chat/completions", inference.chat_completions, query),
        ("POST", "/v1/completions", inference.completions, query),
        ("POST", "/v1/rerank", inference.rerank, query),
    ]


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    """A fresh fake Xinference 4.1.0 (all state lives in this app)."""
    state = XinferenceState(behaviour, env)
    app = fake_app(
        table_routes(route_table(state), access_guard(state.auth)),
        RequestJournal(),
        exception_handlers={ApiError: api_error_response, HTTPException: http_error_response},
        lifespan=state.lifespan,
    )
    app.state.fake = state
    return app
