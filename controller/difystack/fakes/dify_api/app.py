"""The fake Dify api's routes, all in one table, and its app factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.http import RouteRow, fake_app, table_routes
from difystack.fakes.common.journal import RequestJournal
from difystack.fakes.common.readiness import Readiness, ReadinessGate
from difystack.fakes.dify_api.apps import AppHandlers
from difystack.fakes.dify_api.auth import Access, Gatekeeper
from difystack.fakes.dify_api.chat import ChatHandlers
from difystack.fakes.dify_api.config import ApiConfig
from difystack.fakes.dify_api.console import ConsoleHandlers
from difystack.fakes.dify_api.daemon_client import PluginDaemonClient
from difystack.fakes.dify_api.datasets import DatasetHandlers
from difystack.fakes.dify_api.errors import http_error
from difystack.fakes.dify_api.models import ModelHandlers
from difystack.fakes.dify_api.plugins import PluginHandlers
from difystack.fakes.dify_api.providers import ModelProviders
from difystack.fakes.dify_api.state import ApiState

CONSOLE = "/console/api"
WORKSPACE = f"{CONSOLE}/workspaces/current"


class DifyApi:
    """One fake api: its settings, state, the daemon client and the handlers."""

    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self.state = ApiState.load(config.state_dir)
        self.daemon = PluginDaemonClient(config.plugin_daemon_url, config.plugin_daemon_key)
        self.providers = ModelProviders(config, self.state, self.daemon)
        self.gate = Gatekeeper(config, self.state)
        self.console = ConsoleHandlers(config, self.state, self.gate)
        self.plugins = PluginHandlers(config, self.daemon)
        self.models = ModelHandlers(config, self.state, self.providers)
        self.apps = AppHandlers(self.state)
        self.chat = ChatHandlers(self.state, self.daemon, self.providers)
        self.datasets = DatasetHandlers(self.state, self.daemon, self.providers)

    def route_table(self) -> list[RouteRow[Access]]:
        """Every route: ``(method, path, handler, access)``."""
        return [*self.console_rows(), *self.plugin_rows(), *self.model_rows(), *self.app_rows()]

    def console_rows(self) -> list[RouteRow[Access]]:
        console, public = self.console, Access.PUBLIC
        return [
            ("GET", "/health", console.health, Access.OPEN),
            ("GET", f"{CONSOLE}/ping", console.ping, public),
            ("GET", f"{CONSOLE}/setup", console.setup_status, public),
            ("POST", f"{CONSOLE}/setup", console.setup, public),
            ("GET", f"{CONSOLE}/init", console.init_status, public),
            ("POST", f"{CONSOLE}/init", console.init_validate, public),
            ("GET", f"{CONSOLE}/system-features", console.system_features, public),
            ("POST", f"{CONSOLE}/login", console.login, Access.SETUP),
            ("POST", f"{CONSOLE}/logout", console.logout, Access.SETUP),
            ("POST", f"{CONSOLE}/refresh-token", console.refresh_token, public),
            ("GET", WORKSPACE, console.current_workspace, Access.CONSOLE),
            ("POST", WORKSPACE, console.current_workspace, Access.CONSOLE),
        ]

    def plugin_rows(self) -> list[RouteRow[Access]]:
        plugins, console, plugin = self.plugins, Access.CONSOLE, f"{WORKSPACE}/plugin"
        return [
            ("GET", f"{plugin}/list", plugins.plugin_list, console),
            ("POST", f"{plugin}/list/latest-versions", plugins.latest_versions, console),
            ("POST", f"{plugin}/install/marketplace", plugins.install_from_marketplace, console),
            ("POST", f"{plugin}/upload/pkg", plugins.upload_package, console),
            ("POST", f"{plugin}/install/pkg", plugins.install_package, console),
            ("GET", f"{plugin}/tasks", plugins.install_tasks, console),
            ("POST", f"{plugin}/tasks/delete_all", plugins.delete_all_install_tasks, console),
            ("GET", f"{plugin}/tasks/{{task_id}}", plugins.install_task, console),
            ("POST", f"{plugin}/tasks/{{task_id}}/delete", plugins.delete_install_task, console),
            ("POST", f"{plugin}/uninstall", plugins.uninstall, console),
        ]

    def model_rows(self) -> list[RouteRow[Access]]:
        """The credentials CRUD exists from 1.8 on; before it only reading them does."""
        models, console = self.models, Access.CONSOLE
        provider_models = f"{WORKSPACE}/model-providers/{{provider:path}}/models"
        credentials = f"{provider_models}/credentials"
        rows: list[RouteRow[Access]] = [
            ("GET", f"{WORKSPACE}/model-providers", models.list_providers, console),
            ("GET", provider_models, models.list_models, console),
            ("POST", provider_models, models.save_model, console),
            ("DELETE", provider_models, models.delete_model, console),
            ("POST", f"{credentials}/validate", models.validate_credentials, console),
            ("PATCH", f"{provider_models}/enable", models.enable_model, console),
            ("PATCH", f"{provider_models}/disable", models.disable_model, console),
            ("GET", f"{WORKSPACE}/models/model-types/{{model_type}}", models.models_by_type, console),
            ("GET", f"{WORKSPACE}/default-model", models.get_default_model, console),
            ("POST", f"{WORKSPACE}/default-model", models.set_default_models, console),
            ("GET", credentials, models.get_credentials, console),
        ]
        if self.config.features.credentials_api:
            rows += [
                ("POST", credentials, models.create_credential, console),
                ("PUT", credentials, models.update_credential, console),
                ("DELETE", credentials, models.delete_credential, console),
                ("POST", f"{credentials}/switch", models.switch_credential, console),
            ]
        return rows

    def app_rows(self) -> list[RouteRow[Access]]:
        apps, console, dataset_key = self.apps, Access.CONSOLE, Access.DATASET_KEY
        datasets, dataset = self.datasets, "/v1/datasets/{dataset_id}"
        return [
            ("POST", f"{CONSOLE}/apps/imports", apps.import_app, console),
            ("GET", f"{CONSOLE}/apps", apps.list_apps, console),
            ("DELETE", f"{CONSOLE}/apps/{{app_id}}", apps.delete_app, console),
            ("POST", f"{CONSOLE}/apps/{{app_id}}/api-keys", apps.create_app_key, console),
            ("GET", f"{CONSOLE}/apps/{{app_id}}/api-keys", apps.list_app_keys, console),
            ("POST", f"{CONSOLE}/datasets/api-keys", apps.create_dataset_key, console),
            ("GET", f"{CONSOLE}/datasets/api-keys", apps.list_dataset_keys, console),
            ("DELETE", f"{CONSOLE}/datasets/api-keys/{{api_key_id}}", apps.delete_dataset_key, console),
            ("POST", "/v1/chat-messages", self.chat.chat_message, Access.APP_KEY),
            ("POST", "/v1/datasets", datasets.create_dataset, dataset_key),
            ("GET", "/v1/datasets", datasets.list_datasets, dataset_key),
            ("DELETE", dataset, datasets.delete_dataset, dataset_key),
            ("POST", f"{dataset}/document/create-by-text", datasets.create_by_text, dataset_key),
            ("GET", f"{dataset}/documents/{{batch}}/indexing-status", datasets.indexing_status, dataset_key),
            ("POST", f"{dataset}/retrieve", datasets.retrieve, dataset_key),
        ]


class VersionHeaders:
    """``X-Version`` / ``X-Env`` on every response (``ext_app_metrics.after_request``)."""

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.version = version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Version"] = self.version
                headers["X-Env"] = "PRODUCTION"
            await send(message)

        await self.app(scope, receive, send_with_version)


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    config = ApiConfig.from_env(env)
    api = DifyApi(config)
    readiness = Readiness(behaviour)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        readiness.mark_started()
        yield

    app = fake_app(
        table_routes(api.route_table(), api.gate.guard),
        RequestJournal(),
        middleware=[
            Middleware(ReadinessGate, readiness=readiness),
            Middleware(VersionHeaders, version=str(config.version)),
        ],
        exception_handlers={404: http_error, 405: http_error},
        lifespan=lifespan,
    )
    app.state.api = api
    return app
