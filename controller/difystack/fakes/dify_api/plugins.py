"""Plugin routes of the fake Dify api: they forward to the plugin daemon over HTTP, like the real
api, and the simulated marketplace (:mod:`.marketplace`) serves the real packages it was given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes import difypkg
from difystack.fakes.common.http import json_body
from difystack.fakes.dify_api.config import ApiConfig
from difystack.fakes.dify_api.daemon_client import PluginDaemonClient
from difystack.fakes.dify_api.errors import DifyError, invalid_param
from difystack.fakes.dify_api.marketplace import Marketplace
from difystack.fakes.dify_api.schemas import query_int
from difystack.fakes.dify_api.state import Principal


async def plugin_identifiers(request: Request) -> list[str]:
    body = await json_body(request)
    identifiers = body.get("plugin_unique_identifiers") if isinstance(body, dict) else None
    if not isinstance(identifiers, list) or not all(isinstance(item, str) for item in identifiers):
        raise invalid_param("plugin_unique_identifiers: Input should be a valid list of strings")
    return identifiers


class PluginHandlers:
    def __init__(self, config: ApiConfig, daemon: PluginDaemonClient) -> None:
        self.config = config
        self.daemon = daemon
        self.marketplace = Marketplace(config.marketplace_packages)

    def plugin_path(self, principal: Principal, tail: str) -> str:
        return f"/plugin/{principal.tenant_id}/management/{tail}"

    async def plugin_list(self, request: Request, principal: Principal) -> Response:
        page = query_int(request, "page", default=1, minimum=1)
        page_size = query_int(request, "page_size", default=256, minimum=1, maximum=256)
        if not self.config.features.paginated_plugin_list:
            page, page_size = 1, 256
        data = await self.daemon.call(
            "GET", self.plugin_path(principal, "list"), params={"page": page, "page_size": page_size}
        )
        plugins = [self.with_latest_version(plugin) for plugin in data["list"]]
        if not self.config.features.paginated_plugin_list:
            return JSONResponse({"plugins": plugins})
        return JSONResponse({"plugins": plugins, "total": data["total"]})

    def with_latest_version(self, plugin: Mapping[str, Any]) -> dict[str, Any]:
        latest = self.latest_version(str(plugin["plugin_id"]))
        return {
            **plugin,
            "latest_version": latest["version"] if latest else None,
            "latest_unique_identifier": latest["unique_identifier"] if latest else None,
            "status": "active",
            "deprecated_reason": "",
            "alternative_plugin_id": "",
        }

    def latest_version(self, plugin_id: str) -> dict[str, Any] | None:
        if not (self.config.marketplace_enabled and self.config.marketplace_reachable):
            return None
        package = self.marketplace.latest(plugin_id)
        if package is None:
            return None
        return {
            "plugin_id": plugin_id,
            "version": difypkg.read_manifest(package)["version"],
            "unique_identifier": difypkg.unique_identifier(package),
            "status": "active",
            "deprecated_reason": "",
            "alternative_plugin_id": "",
        }

    async def latest_versions(self, request: Request, _: Principal) -> Response:
        body = await json_body(request)
        plugin_ids = body.get("plugin_ids") if isinstance(body, dict) else None
        if not isinstance(plugin_ids, list) or not all(isinstance(item, str) for item in plugin_ids):
            raise invalid_param("plugin_ids: Input should be a valid list")
        if not self.config.marketplace_enabled:
            return JSONResponse({"versions": {}})
        return JSONResponse(
            {"versions": {plugin_id: self.latest_version(plugin_id) for plugin_id in plugin_ids}}
        )

    def download_from_marketplace(self, identifier: str) -> bytes:
        """``GET {MARKETPLACE_API_URL}/api/v1/plugins/download?unique_identifier=...`` (simulated)."""
        url = f"{self.config.marketplace_api_url}/api/v1/plugins/download?unique_identifier={identifier}"
        if not self.config.marketplace_reachable:
            raise invalid_param(f"Reached maximum retries (3) for URL {url}")
        package = self.marketplace.download(identifier)
        if package is None:
            raise invalid_param("file not found")
        return package

    async def install_from_marketplace(self, request: Request, principal: Principal) -> Response:
        if not self.config.marketplace_enabled:
            raise invalid_param("marketplace is not enabled")
        identifiers = await plugin_identifiers(request)
        for identifier in identifiers:
            known = await self.daemon.call(
                "GET",
                self.plugin_path(principal, "fetch/identifier"),
                params={"plugin_unique_identifier": identifier},
            )
            if not known:
                await self.upload_to_daemon(principal, self.download_from_marketplace(identifier))
        metas = [{"plugin_unique_identifier": identifier} for identifier in identifiers]
        return await self.install_identifiers(principal, identifiers, "marketplace", metas)

    async def upload_to_daemon(self, principal: Principal, package: bytes) -> Any:
        return await self.daemon.call(
            "POST",
            self.plugin_path(principal, "install/upload/package"),
            files={"dify_pkg": ("plugin.difypkg", package, "application/octet-stream")},
            data={
                "verify_signature": "false"
            },  # restrict_to_marketplace_only is off in the community edition
        )

    async def install_identifiers(
        self, principal: Principal, identifiers: list[str], source: str, metas: list[dict[str, Any]]
    ) -> Response:
        data = await self.daemon.call(
            "POST",
            self.plugin_path(principal, "install/identifiers"),
            json={"plugin_unique_identifiers": identifiers, "source": source, "metas": metas},
        )
        return JSONResponse({"all_installed": data["all_installed"], "task_id": data["task_id"]})

    async def upload_package(self, request: Request, principal: Principal) -> Response:
        form = await request.form()
        upload = form.get("pkg")
        if not isinstance(upload, UploadFile):
            raise DifyError(
                400,
                "bad_request",
                "The browser (or proxy) sent a request that this server could not understand.",
            )
        package = await upload.read()
        if len(package) > self.config.max_package_size:
            raise invalid_param("File size exceeds the maximum allowed size")
        return JSONResponse(await self.upload_to_daemon(principal, package))

    async def install_package(self, request: Request, principal: Principal) -> Response:
        identifiers = await plugin_identifiers(request)
        for identifier in identifiers:
            # Dify checks each package's declaration (and signature verdict) before installing it.
            await self.daemon.call(
                "GET",
                self.plugin_path(principal, "decode/from_identifier"),
                params={"plugin_unique_identifier": identifier},
            )
        return await self.install_identifiers(principal, identifiers, "package", [{} for _ in identifiers])

    async def install_tasks(self, request: Request, principal: Principal) -> Response:
        page = query_int(request, "page", minimum=1)
        page_size = query_int(request, "page_size", minimum=1, maximum=256)
        params = {"page": page, "page_size": page_size}
        return JSONResponse(
            {
                "tasks": await self.daemon.call(
                    "GET", self.plugin_path(principal, "install/tasks"), params=params
                )
            }
        )

    async def install_task(self, request: Request, principal: Principal) -> Response:
        path = self.plugin_path(principal, f"install/tasks/{request.path_params['task_id']}")
        return JSONResponse({"task": await self.daemon.call("GET", path)})

    async def delete_install_task(self, request: Request, principal: Principal) -> Response:
        path = self.plugin_path(principal, f"install/tasks/{request.path_params['task_id']}/delete")
        return JSONResponse({"success": await self.daemon.call("POST", path)})

    async def delete_all_install_tasks(self, _: Request, principal: Principal) -> Response:
        return JSONResponse(
            {
                "success": await self.daemon.call(
                    "POST", self.plugin_path(principal, "install/tasks/delete_all")
                )
            }
        )

    async def uninstall(self, request: Request, principal: Principal) -> Response:
        body = await json_body(request)
        installation_id = body.get("plugin_installation_id") if isinstance(body, dict) else None
        if not isinstance(installation_id, str):
            raise invalid_param("plugin_installation_id: Field required")
        result = await self.daemon.call(
            "POST", self.plugin_path(principal, "uninstall"), json={"plugin_installation_id": installation_id}
        )
        return JSONResponse({"success": result})
