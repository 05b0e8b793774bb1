"""Console routes for apps and API keys (what ``difystack verify`` drives): a chat app imported
from its DSL (``POST /apps/imports``), listing and deleting apps, app keys and dataset keys.

Written from Dify 1.13.3's console/app/app_import.py and console/apikey.py; only chat apps run.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.common.tokens import random_token
from difystack.fakes.dify_api.errors import DifyError, invalid_param
from difystack.fakes.dify_api.schemas import object_body, query_int, window
from difystack.fakes.dify_api.state import ApiState, Principal, timestamp

CURRENT_DSL_VERSION = "0.6.0"  # services/app_dsl_service.py in 1.13.x
APP_MODES = {"chat", "agent-chat", "advanced-chat", "workflow", "completion"}
MAX_KEYS = 10
APP_NOT_FOUND = DifyError(404, "app_not_found", "App not found.")


class ImportFailed(Exception):
    """A DSL Dify refuses: the import answers ``failed`` with this error."""

    def __init__(self, error: str, imported: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.imported = imported


def read_dsl(body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The DSL's version and content, from ``yaml_content``."""
    if body.get("mode") == "yaml-url":
        raise ImportFailed("yaml-url imports are not supported by this fake")
    content = body.get("yaml_content")
    if not isinstance(content, str) or not content:
        raise ImportFailed("yaml_content is required when import mode is yaml-content")
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise ImportFailed(f"Invalid YAML format: {exc}") from exc
    if not isinstance(data, dict):
        raise ImportFailed("Invalid YAML format: content must be a mapping")
    version = data.get("version", "0.1.0")
    if not isinstance(version, str):
        raise ImportFailed(f"Invalid version type, expected str, got {type(version).__name__}")
    return version, data


def check_chat_app(data: Mapping[str, Any], version: str) -> None:
    """A chat app with a model: what this fake can run."""
    app_data = data.get("app")
    if not isinstance(app_data, dict):
        raise ImportFailed("Missing app data in YAML content", version)
    app_mode = app_data.get("mode")
    if app_mode not in APP_MODES:
        raise ImportFailed("Invalid app mode", version)
    if app_mode != "chat":
        raise ImportFailed(f"this fake runs chat apps only (mode {app_mode})", version)
    model_config = data.get("model_config")
    if not isinstance(model_config, dict):
        raise ImportFailed("Missing model_config for chat/agent-chat/completion app", version)
    model = model_config.get("model")
    if not (
        isinstance(model, dict)
        and isinstance(model.get("provider"), str)
        and isinstance(model.get("name"), str)
    ):
        raise ImportFailed("model_config.model needs provider and name", version)


class AppHandlers:
    def __init__(self, state: ApiState) -> None:
        self.state = state

    def app(self, app_id: str, tenant_id: str) -> dict[str, Any]:
        found = next((a for a in self.state.apps if a["id"] == app_id and a["tenant_id"] == tenant_id), None)
        if found is None:
            raise APP_NOT_FOUND
        return found

    async def import_app(self, request: Request, principal: Principal) -> Response:
        body = await object_body(request)
        mode = body.get("mode")
        if mode not in {"yaml-content", "yaml-url"}:
            raise invalid_param(f"mode: Input should be 'yaml-content' or 'yaml-url' (got {mode!r})")
        import_id = str(uuid.uuid4())
        try:
            version, data = read_dsl(body)
            check_chat_app(data, version)
        except ImportFailed as failed:
            return import_result(import_id, "failed", error=failed.error, imported=failed.imported)
        status = version_status(version)
        if status == "pending":  # the real api asks for a confirmation; this fake does not keep it
            return import_result(import_id, "pending", imported=version, app_mode="chat")
        app = self.create_app(principal, data)
        return import_result(import_id, status, app_id=app["id"], app_mode=app["mode"], imported=version)

    def create_app(self, principal: Principal, data: Mapping[str, Any]) -> dict[str, Any]:
        app_data = data["app"]
        app = {
            "id": str(uuid.uuid4()),
            "tenant_id": principal.tenant_id,
            "name": str(app_data.get("name") or "Untitled"),
            "description": str(app_data.get("description") or ""),
            "mode": app_data["mode"],
            "icon_type": app_data.get("icon_type", "emoji"),
            "icon": app_data.get("icon", "🤖"),
            "icon_background": app_data.get("icon_background", "#FFEAD5"),
            "model_config": data["model_config"],
            "created_by": principal.user_id,
            "created_at": timestamp(),
            "updated_at": timestamp(),
        }
        self.state.apps.append(app)
        self.state.save()
        return app

    def app_summary(self, app: Mapping[str, Any]) -> dict[str, Any]:
        model = app["model_config"].get("model", {})
        return {
            "id": app["id"],
            "name": app["name"],
            "description": app["description"],
            "mode": app["mode"],
            "icon_type": app["icon_type"],
            "icon": app["icon"],
            "icon_background": app["icon_background"],
            "icon_url": None,
            "model_config": {"model": model, "pre_prompt": app["model_config"].get("pre_prompt", "")},
            "workflow": None,
            "use_icon_as_answer_icon": False,
            "created_by": app["created_by"],
            "created_at": app["created_at"],
            "updated_by": app["created_by"],
            "updated_at": app["updated_at"],
            "tags": [],
            "access_mode": None,
            "create_user_name": None,
            "author_name": None,
            "has_draft_trigger": None,
        }

    async def list_apps(self, request: Request, principal: Principal) -> Response:
        page = query_int(request, "page", default=1, maximum=99999)
        limit = query_int(request, "limit", default=20, maximum=100)
        mode = request.query_params.get("mode", "all")
        name = request.query_params.get("name", "")
        apps = [
            a
            for a in self.state.apps
            if a["tenant_id"] == principal.tenant_id
            and (mode == "all" or a["mode"] == mode)
            and name.lower() in a["name"].lower()
        ]
        apps.sort(key=lambda a: a["created_at"], reverse=True)
        return JSONResponse(
            {
                "page": page,
                "limit": limit,
                "total": len(apps),
                "has_more": page * limit < len(apps),
                "data": [self.app_summary(a) for a in window(apps, page, limit)],
            }
        )

    async def delete_app(self, request: Request, principal: Principal) -> Response:
        app = self.app(request.path_params["app_id"], principal.tenant_id)
        self.state.apps.remove(app)
        self.state.api_tokens = [t for t in self.state.api_tokens if t.get("app_id") != app["id"]]
        self.state.save()
        return Response(status_code=204)

    def create_token(self, principal: Principal, kind: str, app_id: str | None) -> dict[str, Any]:
        existing = [
            t
            for t in self.state.api_tokens
            if t["type"] == kind and t["tenant_id"] == principal.tenant_id and t.get("app_id") == app_id
        ]
        if len(existing) >= MAX_KEYS:
            raise DifyError(
                400,
                "max_keys_exceeded",
                f"Cannot create more than {MAX_KEYS} API keys for this resource type.",
            )
        token = {
            "id": str(uuid.uuid4()),
            "type": kind,
            "token": f"{kind}-{random_token(24)}",
            "tenant_id": principal.tenant_id,
            "app_id": app_id,
            "last_used_at": None,
            "created_at": timestamp(),
        }
        self.state.api_tokens.append(token)
        self.state.save()
        return token

    async def create_app_key(self, request: Request, principal: Principal) -> Response:
        app = self.app(request.path_params["app_id"], principal.tenant_id)
        return JSONResponse(key_item(self.create_token(principal, "app", app["id"])), status_code=201)

    async def list_app_keys(self, request: Request, principal: Principal) -> Response:
        app = self.app(request.path_params["app_id"], principal.tenant_id)
        keys = [t for t in self.state.api_tokens if t["type"] == "app" and t.get("app_id") == app["id"]]
        return JSONResponse({"data": [key_item(t) for t in keys]})

    async def create_dataset_key(self, _: Request, principal: Principal) -> Response:
        return JSONResponse(key_item(self.create_token(principal, "dataset", None)))  # 200 in Dify

    async def list_dataset_keys(self, _: Request, principal: Principal) -> Response:
        keys = [
            t
            for t in self.state.api_tokens
            if t["type"] == "dataset" and t["tenant_id"] == principal.tenant_id
        ]
        return JSONResponse({"data": [key_item(t) for t in keys]})

    async def delete_dataset_key(self, request: Request, principal: Principal) -> Response:
        key_id = request.path_params["api_key_id"]
        found = next(
            (
                t
                for t in self.state.api_tokens
                if t["id"] == key_id and t["type"] == "dataset" and t["tenant_id"] == principal.tenant_id
            ),
            None,
        )
        if found is None:
            raise DifyError(404, "not_found", "API key not found")
        self.state.api_tokens.remove(found)
        self.state.save()
        return Response(status_code=204)


def import_result(
    import_id: str,
    status: str,
    *,
    app_id: str | None = None,
    app_mode: str | None = None,
    imported: str = "",
    error: str = "",
) -> JSONResponse:
    """The ``Import`` entity; 200 completed, 202 pending, 400 failed (app_import.py)."""
    code = {"failed": 400, "pending": 202}.get(status, 200)
    body = {
        "id": import_id,
        "status": status,
        "app_id": app_id,
        "app_mode": app_mode,
        "current_dsl_version": CURRENT_DSL_VERSION,
        "imported_dsl_version": imported,
        "error": error,
    }
    return JSONResponse(body, status_code=code)


def version_status(imported: str) -> str:
    """``_check_version_compatibility``: newer or other major → pending; older minor → warnings."""
    try:
        given = tuple(int(part) for part in imported.split("."))
    except ValueError:
        return "failed"
    current = tuple(int(part) for part in CURRENT_DSL_VERSION.split("."))
    if given > current or given[0] != current[0]:
        return "pending"
    if given[:2] < current[:2]:
        return "completed-with-warnings"
    return "completed"


def key_item(token: Mapping[str, Any]) -> dict[str, Any]:
    return {k: token[k] for k in ("id", "type", "token", "last_used_at", "created_at")}
