"""Fake Dify plugin daemon (role ``dify-plugin-daemon``, port 5002).

Only the Dify api container talks to the daemon, so this fake reproduces the daemon routes
the api uses, with the daemon's own naming and envelope:

- success: HTTP 200 ``{"code": 0, "message": "success", "data": ...}``;
- error: ``{"code": -400|-401|-404|-500, "message": "<json {message, error_type, args}>",
  "data": null}``, mostly with HTTP 200 like the real daemon (401 for a bad ``X-Api-Key``,
  400/404 for the dispatch pre-checks);
- dispatch routes (``/plugin/{tenant}/dispatch/model/...``, ``dispatch/llm/invoke``,
  ``dispatch/text_embedding/invoke``) answer as a server-sent-event
  stream of such envelopes (``data: {...}``), as the real daemon does.

Environment (same names as the real daemon): ``SERVER_KEY`` (the api must send it as
``X-Api-Key``), ``FORCE_VERIFYING_SIGNATURE`` (default true), ``PLUGIN_STORAGE_LOCAL_ROOT``
(default ``/app/storage``; packages, installations and tasks are persisted there),
and ``MAX_PLUGIN_PACKAGE_SIZE`` (default 52428800).

The plugins themselves are Dify's REAL official plugins, unmodified: an install task unpacks
the package and starts it (:mod:`~difystack.fakes.plugin_process`) with the environment built
from the package's own uv.lock under ``DIFYSTACK_FAKE_PLUGIN_ENVS`` (the plugin-daemon stand-in
image bakes them); the dispatch routes forward to it over stdio: its ``stream`` chunks become
the SSE events, its ``error`` becomes the ``PluginInvokeError`` envelope around the plugin's own
error type and message. A plugin installed before a restart is started again on its first
dispatch. Without an environment for a package the install task fails as a dependency install
does. The LocalAI plugin's token counting needs tiktoken's gpt2 files in ``TIKTOKEN_CACHE_DIR``
(see :mod:`~difystack.fakes.tiktoken_cache`). Packages are read with
:mod:`~difystack.fakes.difypkg` (see there for the fake signature scheme).

Behaviour knobs: ``ready_delay`` (503 until then), ``launch_latency`` (duration of a plugin
install task: a quarter ``pending``, the rest ``running``). Failure kinds: ``install`` /
``install:<plugin_id>`` (the install task fails with ``failed to install dependencies: ...``)
and ``never-ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from difystack import settings
from difystack.config_model import version_tuple
from difystack.fakes import difypkg
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common_old import JOURNAL_PATHS, JournalMiddleware, RequestJournal, json_body
from difystack.fakes.plugin_process import PluginFailure, PluginProcess, PluginStartError, env_python, unpack

DEFAULT_SERVER_KEY = "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi"
DEFAULT_DAEMON_VERSION = "0.5.5"
# Up to 0.5.4 the daemon bound decode/from_identifier's identifier from a JSON body only, while
# Dify's api sends it as a query parameter: every local-package install failed with this 400.
QUERY_IDENTIFIER_SINCE = (0, 5, 5)
MISSING_IDENTIFIER = (
    "Key: 'PluginUniqueIdentifier' Error:Field validation for 'PluginUniqueIdentifier' failed on the "
    "'required' tag"
)
SIGNATURE_ERROR = (
    "plugin verification has been enabled, and the plugin you want to install has a bad signature"
)
UNIQUE_IDENTIFIER_PATTERN = re.compile(
    r"^[a-z0-9_-]{1,64}/[a-z0-9_-]{1,255}:\d{1,4}(\.\d{1,4}){1,3}(-\w{1,16})?@[a-f0-9]{32,64}$"
)
TERMINAL_TASK_STATUSES = frozenset({"success", "failed"})


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


# --- envelope ----------------------------------------------------------------------------


class DaemonError(Exception):
    """An error the daemon reports in its envelope."""

    def __init__(
        self,
        message: str,
        error_type: str = "PluginDaemonBadRequestError",
        code: int = -400,
        http_status: int = 200,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.code = code
        self.http_status = http_status

    def envelope(self) -> dict[str, Any]:
        inner = {"message": self.message, "error_type": self.error_type, "args": None}
        return {"code": self.code, "message": json.dumps(inner), "data": None}

    def response(self) -> JSONResponse:
        return JSONResponse(self.envelope(), status_code=self.http_status)


def success(data: Any) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "success", "data": data})


def not_found(message: str) -> DaemonError:
    return DaemonError(message, "PluginDaemonNotFoundError", -404)


# --- configuration and persistent state --------------------------------------------------


@dataclass(frozen=True)
class DaemonConfig:
    server_key: str
    force_verifying_signature: bool
    storage_root: Path
    max_package_size: int
    version: str = DEFAULT_DAEMON_VERSION
    plugin_envs: Path | None = None
    tiktoken_cache: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DaemonConfig:
        return cls(
            server_key=env.get("SERVER_KEY") or DEFAULT_SERVER_KEY,
            force_verifying_signature=env_flag(env, "FORCE_VERIFYING_SIGNATURE", True),
            storage_root=Path(env.get("PLUGIN_STORAGE_LOCAL_ROOT") or "/app/storage"),
            max_package_size=int(env.get("MAX_PLUGIN_PACKAGE_SIZE") or 52428800),
            version=settings.FAKE_DAEMON_VERSION.read(env) or DEFAULT_DAEMON_VERSION,
            plugin_envs=Path(envs) if (envs := settings.FAKE_PLUGIN_ENVS.read(env)) else None,
            tiktoken_cache=env.get("TIKTOKEN_CACHE_DIR", ""),
        )

    @property
    def binds_query_identifier(self) -> bool:
        return version_tuple(self.version) >= QUERY_IDENTIFIER_SINCE


class DaemonStore:
    """Decoded packages, installations per tenant and install tasks, persisted as JSON."""

    def __init__(self, root: Path) -> None:
        self.package_dir = root / "plugin_packages"
        self.state_file = root / "difystack-fake" / "plugin-daemon-state.json"
        self.packages: dict[str, dict[str, Any]] = {}
        self.installations: dict[str, dict[str, dict[str, Any]]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        if not self.state_file.exists():
            return
        state = json.loads(self.state_file.read_text())
        self.packages = state.get("packages", {})
        self.installations = state.get("installations", {})
        self.tasks = state.get("tasks", {})
        for task in self.tasks.values():
            if task["status"] not in TERMINAL_TASK_STATUSES:  # the worker died with the process
                task["status"] = "failed"
                for plugin in task["plugins"]:
                    if plugin["status"] not in TERMINAL_TASK_STATUSES:
                        plugin.update(
                            status="failed", message="install task interrupted: plugin daemon restarted"
                        )

    def save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        state = {"packages": self.packages, "installations": self.installations, "tasks": self.tasks}
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=1))
        os.replace(temporary, self.state_file)

    def store_package(self, identifier: str, data: bytes, decoded: dict[str, Any]) -> None:
        self.package_dir.mkdir(parents=True, exist_ok=True)
        (self.package_dir / f"{difypkg.package_checksum(data)}.difypkg").write_bytes(data)
        self.packages[identifier] = decoded
        self.save()

    def tenant_installations(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        return self.installations.setdefault(tenant_id, {})


# --- the app -----------------------------------------------------------------------------


class PluginDaemon:
    def __init__(self, behaviour: Behaviour, config: DaemonConfig) -> None:
        self.behaviour = behaviour
        self.config = config
        self.store = DaemonStore(config.storage_root)
        self.workers: set[asyncio.Task[None]] = set()
        # Real plugins (package unpacked, environment prebuilt from its own lock), by plugin id.
        self.processes: dict[str, PluginProcess] = {}

    # -- health / auth

    async def health_check(self, _: Request) -> Response:
        return JSONResponse({"status": "ok", "pool_status": {}, "version": self.config.version})

    def require_key(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
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

    # -- packages

    async def upload_package(self, request: Request) -> Response:
        form = await request.form(max_part_size=self.config.max_package_size + 1024)
        upload = form.get("dify_pkg")
        if upload is None or isinstance(upload, str):
            raise DaemonError("http: no such file")
        data = await upload.read()
        if len(data) > self.config.max_package_size:
            raise DaemonError("file size exceeds the maximum limit")
        verify = self.config.force_verifying_signature or form.get("verify_signature") == "true"
        return success(self.decode_and_store(data, verify_signature=verify))

    def decode_and_store(self, data: bytes, *, verify_signature: bool) -> dict[str, Any]:
        try:
            manifest = difypkg.read_manifest(data)
            providers = difypkg.read_provider_declarations(data)
            status = difypkg.signature_status(data)
        except difypkg.PackageError as exc:
            raise DaemonError(str(exc)) from exc
        if verify_signature and status != "valid":
            raise DaemonError(SIGNATURE_ERROR)
        identifier = difypkg.unique_identifier(data)
        verification = difypkg.read_verification(data)
        decoded = {
            "unique_identifier": identifier,
            "manifest": plugin_declaration(manifest, providers, verified=verification is not None),
            "verification": verification,
        }
        self.store.store_package(identifier, data, decoded)
        return decoded

    async def decode_from_identifier(self, request: Request) -> Response:
        if self.config.binds_query_identifier:
            identifier = request.query_params.get("plugin_unique_identifier", "")
        else:
            try:
                parsed = json.loads(await request.body() or b"{}")
            except ValueError:
                parsed = {}
            identifier = parsed.get("plugin_unique_identifier", "") if isinstance(parsed, dict) else ""
        if not identifier:
            raise DaemonError(MISSING_IDENTIFIER, http_status=400)
        if identifier not in self.store.packages:
            raise DaemonError("plugin not found", "PluginDaemonInternalServerError", -500)
        return success(self.store.packages[identifier])

    async def fetch_identifier(self, request: Request) -> Response:
        return success(request.query_params.get("plugin_unique_identifier", "") in self.store.packages)

    # -- installation

    async def install_from_identifiers(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        body = await json_body(request) or {}
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
                raise DaemonError("plugin not found", "PluginDaemonInternalServerError", -500)
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
                    await self.start_real_plugin(plugin["plugin_unique_identifier"])
                except PluginStartError as exc:
                    plugin.update(status="failed", message=str(exc))
                else:
                    self.install(task["tenant_id"], plugin["plugin_unique_identifier"], source)
                    plugin.update(status="success", message="installed")
            task["completed_plugins"] += 1
        failed = any(plugin["status"] == "failed" for plugin in task["plugins"])
        task.update(status="failed" if failed else "success", updated_at=now_iso())
        self.store.save()

    async def start_real_plugin(self, identifier: str) -> None:
        """Unpack the package and start the plugin with the environment built for its lock."""
        plugin_id = identifier.split(":", 1)[0]
        checksum = identifier.rsplit("@", 1)[1]
        package = self.store.package_dir / f"{checksum}.difypkg"
        if not package.exists():
            raise PluginStartError(f"failed to install dependencies: package {identifier} is not stored")
        if self.config.plugin_envs is None:
            raise PluginStartError(
                "failed to install dependencies: this plugin daemon stand-in has no plugin environments"
                f" ({settings.FAKE_PLUGIN_ENVS.name} is unset)"
            )
        cwd = self.config.storage_root / "cwd" / plugin_id.replace("/", "-") / checksum
        plugin_dir = unpack(package, cwd)
        python = env_python(self.config.plugin_envs, plugin_dir)
        if python is None:
            raise PluginStartError(
                f"failed to install dependencies: no environment was built for {identifier}'s"
                f" uv.lock under {self.config.plugin_envs}"
            )
        previous = self.processes.pop(plugin_id, None)
        if previous is not None:
            await previous.stop()
        plugin_env = {"TIKTOKEN_CACHE_DIR": self.config.tiktoken_cache} if self.config.tiktoken_cache else {}
        process = PluginProcess(plugin_dir, str(python), plugin_env)
        await process.ensure_started()
        self.processes[plugin_id] = process

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
            raise DaemonError("task not found", "PluginDaemonInternalServerError", -500)
        return success(task)

    async def fetch_tasks(self, request: Request) -> Response:
        page, page_size = pagination(request)
        tasks = [
            task
            for task in self.store.tasks.values()
            if task["tenant_id"] == request.path_params["tenant_id"]
        ]
        tasks.sort(key=lambda task: task["created_at"], reverse=True)
        return success(tasks[(page - 1) * page_size : page * page_size])

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
        page, page_size = pagination(request)
        items = sorted(
            self.store.tenant_installations(request.path_params["tenant_id"]).values(),
            key=lambda i: i["created_at"],
        )
        listed = [
            {**item, "installation_id": item["id"]}
            for item in items[(page - 1) * page_size : page * page_size]
        ]
        return success({"list": listed, "total": len(items)})

    async def uninstall(self, request: Request) -> Response:
        body = await json_body(request) or {}
        installation_id = body.get("plugin_installation_id")
        if not installation_id:
            raise DaemonError("plugin_installation_id is required")
        installations = self.store.tenant_installations(request.path_params["tenant_id"])
        for plugin_id, installation in list(installations.items()):
            if installation["id"] == installation_id:
                del installations[plugin_id]
                self.store.save()
                if not any(plugin_id in tenant for tenant in self.store.installations.values()):
                    process = self.processes.pop(plugin_id, None)
                    if process is not None:
                        await process.stop()
                return success(True)
        raise DaemonError("plugin installation not found", "PluginDaemonInternalServerError", -500)

    async def list_models(self, request: Request) -> Response:
        page, page_size = pagination(request)
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
        return success(providers[(page - 1) * page_size : page * page_size])

    # -- dispatch (streamed)

    async def validate_provider_credentials(self, request: Request) -> Response:
        return await self.dispatch(request, "validate_provider_credentials")

    async def validate_model_credentials(self, request: Request) -> Response:
        return await self.dispatch(request, "validate_model_credentials")

    async def model_schema(self, request: Request) -> Response:
        return await self.dispatch(request, "get_ai_model_schemas")

    async def invoke_llm(self, request: Request) -> Response:
        return await self.dispatch(request, "invoke_llm")

    async def invoke_text_embedding(self, request: Request) -> Response:
        return await self.dispatch(request, "invoke_text_embedding")

    async def dispatch(self, request: Request, action: str) -> Response:
        """Forward the dispatch to the real plugin; each ``stream`` chunk becomes one event."""
        plugin_id = request.headers.get("X-Plugin-ID", "")
        if not plugin_id:
            return DaemonError("plugin_id is required", http_status=400).response()
        installation = self.store.tenant_installations(request.path_params["tenant_id"]).get(plugin_id)
        if installation is None:
            return DaemonError("plugin not found", "PluginNotFoundError", -404, http_status=404).response()
        body = await json_body(request) or {}
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        invocation = {"user_id": body.get("user_id", ""), "type": "model", "action": action, **data}
        try:
            process = self.processes.get(plugin_id)
            if process is None or not process.running:
                await self.start_real_plugin(installation["plugin_unique_identifier"])
                process = self.processes[plugin_id]
            results = await process.invoke(invocation)
            chunks = [{"code": 0, "message": "", "data": result} for result in results]
        except PluginFailure as failure:
            inner = {"error_type": failure.error_type, "message": failure.message, "args": failure.args_}
            chunks = [DaemonError(json.dumps(inner), "PluginInvokeError", -500).envelope()]
        except PluginStartError as exc:
            chunks = [DaemonError(str(exc), "PluginDaemonInternalServerError", -500).envelope()]
        return sse_response(chunks)


def plugin_declaration(
    manifest: Mapping[str, Any], providers: list[dict[str, Any]], *, verified: bool
) -> dict[str, Any]:
    """The daemon's PluginDeclaration: the manifest plus the parsed provider declaration."""
    return {
        **manifest,
        "category": "model" if providers else "extension",
        "model": providers[0] if providers else None,
        "tool": None,
        "endpoint": None,
        "agent_strategy": None,
        "tags": manifest.get("tags") or [],
        "verified": verified,
    }


def injected_dependency_failure(plugin_id: str) -> str:
    return (
        "failed to install dependencies: exit status 2, output:   x Failed to fetch: "
        "`https://pypi.org/simple/dify-plugin/`\n  Caused by: Request failed after 3 retries "
        f"(injected by DIFYSTACK_FAKE_FAIL install:{plugin_id})"
    )


def pagination(request: Request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", ""))
        page_size = int(request.query_params.get("page_size", ""))
    except ValueError as exc:
        raise DaemonError(
            "Key: 'Page' Error:Field validation for 'Page' failed on the 'required' tag"
        ) from exc
    if page < 1 or not 1 <= page_size <= 256:
        raise DaemonError("Key: 'PageSize' Error:Field validation for 'PageSize' failed on the 'max' tag")
    return page, page_size


def sse_response(chunks: list[dict[str, Any]]) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream")


class Readiness:
    """Ready ``ready_delay`` seconds after startup (never with the ``never-ready`` failure)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.started_at = time.monotonic()

    def mark_started(self) -> None:
        self.started_at = time.monotonic()

    def ready(self) -> bool:
        if self.behaviour.fails("never-ready"):
            return False
        return time.monotonic() - self.started_at >= self.behaviour.ready_delay


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


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    daemon = PluginDaemon(behaviour, DaemonConfig.from_env(env))
    journal = RequestJournal()
    keyed = daemon.require_key
    prefix = "/plugin/{tenant_id}"
    routes = [
        *journal.routes(),
        Route("/health/check", daemon.health_check, methods=["GET"]),
        Route(f"{prefix}/management/install/upload/package", keyed(daemon.upload_package), methods=["POST"]),
        Route(
            f"{prefix}/management/install/identifiers",
            keyed(daemon.install_from_identifiers),
            methods=["POST"],
        ),
        Route(f"{prefix}/management/install/tasks", keyed(daemon.fetch_tasks), methods=["GET"]),
        Route(
            f"{prefix}/management/install/tasks/delete_all", keyed(daemon.delete_all_tasks), methods=["POST"]
        ),
        Route(f"{prefix}/management/install/tasks/{{task_id}}", keyed(daemon.fetch_task), methods=["GET"]),
        Route(
            f"{prefix}/management/install/tasks/{{task_id}}/delete",
            keyed(daemon.delete_task),
            methods=["POST"],
        ),
        Route(
            f"{prefix}/management/decode/from_identifier",
            keyed(daemon.decode_from_identifier),
            methods=["GET"],
        ),
        Route(f"{prefix}/management/fetch/identifier", keyed(daemon.fetch_identifier), methods=["GET"]),
        Route(f"{prefix}/management/list", keyed(daemon.list_plugins), methods=["GET"]),
        Route(f"{prefix}/management/uninstall", keyed(daemon.uninstall), methods=["POST"]),
        Route(f"{prefix}/management/models", keyed(daemon.list_models), methods=["GET"]),
        Route(
            f"{prefix}/dispatch/model/validate_model_credentials",
            keyed(daemon.validate_model_credentials),
            methods=["POST"],
        ),
        Route(
            f"{prefix}/dispatch/model/validate_provider_credentials",
            keyed(daemon.validate_provider_credentials),
            methods=["POST"],
        ),
        Route(f"{prefix}/dispatch/model/schema", keyed(daemon.model_schema), methods=["POST"]),
        # What an app's chat message and a knowledge base's indexing and retrieval call.
        Route(f"{prefix}/dispatch/llm/invoke", keyed(daemon.invoke_llm), methods=["POST"]),
        Route(
            f"{prefix}/dispatch/text_embedding/invoke", keyed(daemon.invoke_text_embedding), methods=["POST"]
        ),
    ]

    readiness = Readiness(behaviour)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        readiness.mark_started()
        yield
        for worker in list(daemon.workers):
            worker.cancel()
        for process in list(daemon.processes.values()):
            await process.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.daemon = daemon
    app.add_middleware(ReadinessGate, readiness=readiness)
    app.add_middleware(JournalMiddleware, journal=journal)  # outermost: records the 503s too
    return app
