"""The fake plugin daemon's routes, all in one table, and its app factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from enum import Enum

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.http import Endpoint, Handler, RouteRow, fake_app, table_routes
from difystack.fakes.common.journal import RequestJournal
from difystack.fakes.common.readiness import Readiness, ReadinessGate
from difystack.fakes.dify_plugin_daemon.config import DaemonConfig
from difystack.fakes.dify_plugin_daemon.dispatch import DispatchHandlers
from difystack.fakes.dify_plugin_daemon.envelope import DaemonError
from difystack.fakes.dify_plugin_daemon.installs import InstallHandlers
from difystack.fakes.dify_plugin_daemon.packages import PackageHandlers
from difystack.fakes.dify_plugin_daemon.runtime import PluginRuntime
from difystack.fakes.dify_plugin_daemon.state import DaemonStore


class Access(Enum):
    PUBLIC = "public"
    KEY = "key"  # the api's X-Api-Key must be SERVER_KEY


class PluginDaemon:
    """One fake daemon: its settings, store, running plugins and handlers."""

    def __init__(self, behaviour: Behaviour, config: DaemonConfig) -> None:
        self.config = config
        self.store = DaemonStore(config.storage_root)
        self.runtime = PluginRuntime(config, self.store)
        self.packages = PackageHandlers(config, self.store)
        self.installs = InstallHandlers(behaviour, self.store, self.runtime)
        self.dispatch = DispatchHandlers(self.store, self.runtime)

    async def health_check(self, _: Request) -> Response:
        return JSONResponse({"status": "ok", "pool_status": {}, "version": self.config.version})

    def route_table(self) -> list[RouteRow[Access]]:
        """Every route: ``(method, path, handler, access)``."""
        packages, installs, dispatch, key = self.packages, self.installs, self.dispatch.action, Access.KEY
        management, model = "/plugin/{tenant_id}/management", "/plugin/{tenant_id}/dispatch/model"
        return [
            ("GET", "/health/check", self.health_check, Access.PUBLIC),
            ("POST", f"{management}/install/upload/package", packages.upload_package, key),
            ("POST", f"{management}/install/identifiers", installs.install_from_identifiers, key),
            ("GET", f"{management}/install/tasks", installs.fetch_tasks, key),
            ("POST", f"{management}/install/tasks/delete_all", installs.delete_all_tasks, key),
            ("GET", f"{management}/install/tasks/{{task_id}}", installs.fetch_task, key),
            ("POST", f"{management}/install/tasks/{{task_id}}/delete", installs.delete_task, key),
            ("GET", f"{management}/decode/from_identifier", packages.decode_from_identifier, key),
            ("GET", f"{management}/fetch/identifier", packages.fetch_identifier, key),
            ("GET", f"{management}/list", installs.list_plugins, key),
            ("POST", f"{management}/uninstall", installs.uninstall, key),
            ("GET", f"{management}/models", installs.list_models, key),
            ("POST", f"{model}/validate_model_credentials", dispatch("validate_model_credentials"), key),
            (
                "POST",
                f"{model}/validate_provider_credentials",
                dispatch("validate_provider_credentials"),
                key,
            ),
            ("POST", f"{model}/schema", dispatch("get_ai_model_schemas"), key),
            # What an app's chat message and a knowledge base's indexing and retrieval call.
            ("POST", "/plugin/{tenant_id}/dispatch/llm/invoke", dispatch("invoke_llm"), key),
            (
                "POST",
                "/plugin/{tenant_id}/dispatch/text_embedding/invoke",
                dispatch("invoke_text_embedding"),
                key,
            ),
        ]

    def guard(self, access: Access, handler: Handler) -> Endpoint:
        """KEY routes answer 401 without the server key and turn a DaemonError into its envelope."""
        if access is Access.PUBLIC:
            return handler

        async def checked(request: Request) -> Response:
            if request.headers.get("X-Api-Key") != self.config.server_key:
                return DaemonError(
                    "unauthorized", "PluginDaemonUnauthorizedError", -401, http_status=401
                ).response()
            try:
                return await handler(request)
            except DaemonError as error:
                return error.response()

        return checked

    async def stop(self) -> None:
        for worker in list(self.installs.workers):
            worker.cancel()
        await self.runtime.stop_all()


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    daemon = PluginDaemon(behaviour, DaemonConfig.from_env(env))
    readiness = Readiness(behaviour)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        readiness.mark_started()
        yield
        await daemon.stop()

    app = fake_app(
        table_routes(daemon.route_table(), daemon.guard),
        RequestJournal(),
        middleware=[Middleware(ReadinessGate, readiness=readiness)],
        lifespan=lifespan,
    )
    app.state.daemon = daemon
    return app
