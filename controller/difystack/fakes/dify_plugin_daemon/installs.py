"""Installation routes: install from identifiers (an async task: a quarter of ``launch_latency``
``pending``, the rest ``running``, then each plugin really started), the tasks, the tenant's
plugins and model providers, and uninstall. ``install`` / ``install:<plugin_id>`` in
``DIFYSTACK_FAKE_FAIL`` fail the task as a dependency install fails."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.http import json_object
from difystack.fakes.dify_plugin_daemon.envelope import DaemonError, internal_error, page_of, success
from difystack.fakes.dify_plugin_daemon.runtime import PluginRuntime
from difystack.fakes.dify_plugin_daemon.state import DaemonStore, now_iso
from difystack.fakes.plugin_process import PluginStartError

UNIQUE_IDENTIFIER_PATTERN = re.compile(
    r"^[a-z0-9_-]{1,64}/[a-z0-9_-]{1,255}:\d{1,4}(\.\d{1,4}){1,3}(-\w{1,16})?@[a-f0-9]{32,64}$"
)


class InstallHandlers:
    def __init__(self, behaviour: Behaviour, store: DaemonStore, runtime: PluginRuntime) -> None:
        self.behaviour = behaviour
        self.store = store
        self.runtime = runtime
        self.workers: set[asyncio.Task[None]] = set()

    async def install_from_identifiers(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        body = await json_object(request) or {}
        identifiers = body.get("plugin_unique_identifiers")
        if not isinstance(identifiers, list) or not identifiers or not body.get("source"):
            raise DaemonError("plugin_unique_identifiers and source are required")
        metas = body.get("metas") or []
        if len(metas) != len(identifiers):
            raise DaemonError("the number of metas must be equal to the number of plugin unique identifiers")
        for index, identifier in enumerate(identifiers):
            if not isinstance(identifier, str) or not UNIQUE_IDENTIFIER_PATTERN.match(identifier):
                field = f"PluginUniqueIdentifiers[{index}]"
                raise DaemonError(
                    f"Key: '{field}' Error:Field validation for '{field}' failed on the"
                    " 'plugin_unique_identifier' tag"
                )
            if identifier not in self.store.packages:
                raise internal_error("plugin not found")
        installed = {
            item["plugin_unique_identifier"] for item in self.store.tenant_installations(tenant_id).values()
        }
        pending = [identifier for identifier in dict.fromkeys(identifiers) if identifier not in installed]
        if not pending:
            return success({"all_installed": True, "task_id": ""})
        task = self.new_task(tenant_id, pending, str(body["source"]))
        worker = asyncio.create_task(self.run_install_task(task, str(body["source"])))
        self.workers.add(worker)
        worker.add_done_callback(self.workers.discard)
        return success({"all_installed": False, "task_id": task["id"]})

    def new_task(self, tenant_id: str, identifiers: list[str], source: str) -> dict[str, Any]:
        created = now_iso()
        task = {
            "id": str(uuid.uuid4()),
            "created_at": created,
            "updated_at": created,
            "status": "pending",
            "tenant_id": tenant_id,
            "total_plugins": len(identifiers),
            "completed_plugins": 0,
            "plugins": [
                {
                    "plugin_unique_identifier": identifier,
                    "plugin_id": identifier.split(":", 1)[0],
                    "status": "pending",
                    "message": "",
                    "icon": self.store.packages[identifier]["manifest"].get("icon", ""),
                    "labels": self.store.packages[identifier]["manifest"].get("label", {}),
                    "source": source,
                }
                for identifier in identifiers
            ],
        }
        self.store.tasks[task["id"]] = task
        self.store.save()
        return task

    async def run_install_task(self, task: dict[str, Any], source: str) -> None:
        latency = self.behaviour.launch_latency
        await asyncio.sleep(latency / 4)
        self.update_task(task, "running", "running", "Installing")
        await asyncio.sleep(latency * 3 / 4)
        for plugin in task["plugins"]:
            if self.behaviour.fails("install", plugin["plugin_id"]):
                plugin.update(status="failed", message=injected_dependency_failure(plugin["plugin_id"]))
            else:
                try:
                    await self.runtime.start(plugin["plugin_unique_identifier"])
                except PluginStartError as exc:
                    plugin.update(status="failed", message=str(exc))
                else:
                    self.install(task["tenant_id"], plugin["plugin_unique_identifier"], source)
                    plugin.update(status="success", message="installed")
            task["completed_plugins"] += 1
        failed = any(plugin["status"] == "failed" for plugin in task["plugins"])
        task.update(status="failed" if failed else "success", updated_at=now_iso())
        self.store.save()

    def update_task(self, task: dict[str, Any], task_status: str, plugin_status: str, message: str) -> None:
        task.update(status=task_status, updated_at=now_iso())
        for plugin in task["plugins"]:
            plugin.update(status=plugin_status, message=message)
        self.store.save()

    def install(self, tenant_id: str, identifier: str, source: str) -> None:
        decoded = self.store.packages[identifier]
        manifest = decoded["manifest"]
        plugin_id = identifier.split(":", 1)[0]
        installations = self.store.tenant_installations(tenant_id)
        previous = installations.get(plugin_id)
        created = now_iso()
        installations[plugin_id] = {
            "id": previous["id"] if previous else str(uuid.uuid4()),
            "created_at": previous["created_at"] if previous else created,
            "updated_at": created,
            "name": manifest["name"],
            "plugin_id": plugin_id,
            "plugin_unique_identifier": identifier,
            "tenant_id": tenant_id,
            "endpoints_setups": 0,
            "endpoints_active": 0,
            "runtime_type": "local",
            "source": source,
            "meta": {},
            "version": manifest["version"],
            "checksum": identifier.rsplit("@", 1)[1],
            "declaration": manifest,
        }

    async def fetch_task(self, request: Request) -> Response:
        task = self.store.tasks.get(request.path_params["task_id"])
        if task is None or task["tenant_id"] != request.path_params["tenant_id"]:
            raise internal_error("task not found")
        return success(task)

    async def fetch_tasks(self, request: Request) -> Response:
        tasks = [
            task
            for task in self.store.tasks.values()
            if task["tenant_id"] == request.path_params["tenant_id"]
        ]
        tasks.sort(key=lambda task: task["created_at"], reverse=True)
        return success(page_of(request, tasks))

    async def delete_task(self, request: Request) -> Response:
        task = self.store.tasks.get(request.path_params["task_id"])
        if task is not None and task["tenant_id"] == request.path_params["tenant_id"]:
            del self.store.tasks[task["id"]]
            self.store.save()
        return success(True)

    async def delete_all_tasks(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        self.store.tasks = {
            key: task for key, task in self.store.tasks.items() if task["tenant_id"] != tenant_id
        }
        self.store.save()
        return success(True)

    async def list_plugins(self, request: Request) -> Response:
        items = sorted(
            self.store.tenant_installations(request.path_params["tenant_id"]).values(),
            key=lambda i: i["created_at"],
        )
        listed = [{**item, "installation_id": item["id"]} for item in page_of(request, items)]
        return success({"list": listed, "total": len(items)})

    async def uninstall(self, request: Request) -> Response:
        body = await json_object(request) or {}
        installation_id = body.get("plugin_installation_id")
        if not installation_id:
            raise DaemonError("plugin_installation_id is required")
        installations = self.store.tenant_installations(request.path_params["tenant_id"])
        for plugin_id, installation in list(installations.items()):
            if installation["id"] == installation_id:
                del installations[plugin_id]
                self.store.save()
                if not any(plugin_id in tenant for tenant in self.store.installations.values()):
                    await self.runtime.stop(plugin_id)
                return success(True)
        raise internal_error("plugin installation not found")

    async def list_models(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        providers = []
        for installation in self.store.tenant_installations(tenant_id).values():
            model = installation["declaration"].get("model")
            if model:
                providers.append(
                    {
                        "id": installation["id"],
                        "created_at": installation["created_at"],
                        "updated_at": installation["updated_at"],
                        "provider": model["provider"],
                        "tenant_id": tenant_id,
                        "plugin_unique_identifier": installation["plugin_unique_identifier"],
                        "plugin_id": installation["plugin_id"],
                        "declaration": model,
                    }
                )
        return success(page_of(request, providers))


def injected_dependency_failure(plugin_id: str) -> str:
    return (
        "failed to install dependencies: exit status 2, output:   x Failed to fetch: "
        "`https://pypi.org/simple/dify-plugin/`\n  Caused by: Request failed after 3 retries "
        f"(injected by DIFYSTACK_FAKE_FAIL install:{plugin_id})"
    )
