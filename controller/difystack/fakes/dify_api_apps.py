"""Apps and knowledge bases of the fake Dify api: what ``difystack verify`` drives.

Console (session auth): ``POST /apps/imports`` (a chat app from its DSL), ``GET /apps``,
``DELETE /apps/{id}``, ``POST|GET /apps/{id}/api-keys``, ``POST|GET /datasets/api-keys``,
``DELETE /datasets/api-keys/{id}``. Service API (``Authorization: Bearer <token>``):
``POST /v1/chat-messages`` (blocking; the app's model answers through the plugin daemon's
``dispatch/llm/invoke``), ``POST|GET /v1/datasets``, ``DELETE /v1/datasets/{id}``,
``POST /v1/datasets/{id}/document/create-by-text`` (indexed in the background: segments embedded
through ``dispatch/text_embedding/invoke``), ``GET .../documents/{batch}/indexing-status`` and
``POST /v1/datasets/{id}/retrieve`` (cosine similarity of the query's vector to the segments').

Written from Dify 1.13.3's controllers (console/app/app_import.py, console/apikey.py,
console/datasets/datasets.py, service_api/app/completion.py, service_api/dataset/*.py,
service_api/wraps.py); only chat apps run. State is kept in :class:`ApiState` (persisted).
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from difystack.fakes.common_old import json_body
from difystack.fakes.dify_api_core import (
    ApiState,
    DifyError,
    PluginDaemonClient,
    PluginDaemonFailure,
    PluginDaemonUnavailable,
    Principal,
    invalid_param,
)
from difystack.fakes.dify_api_models import ModelProviders
from difystack.fakes.dify_api_schemas import Provider, normalize_provider

CONSOLE = "/console/api"
SERVICE = "/v1"
CURRENT_DSL_VERSION = "0.6.0"  # services/app_dsl_service.py in 1.13.x
APP_MODES = {"chat", "agent-chat", "advanced-chat", "workflow", "completion"}
MAX_KEYS = 10
SEGMENT_MAX_CHARS = 500  # the automatic rule's segmentation.max_tokens
DEFAULT_TOP_K = 4
ConsoleWrapper = Callable[[Callable[[Request, Principal], Awaitable[Response]]], Callable[..., Any]]
ServiceHandler = Callable[[Request, dict[str, Any]], Awaitable[Response]]

NOT_CHAT_APP = DifyError(400, "not_chat_app", "Please check if your app mode matches the right API route.")
APP_NOT_FOUND = DifyError(404, "app_not_found", "App not found.")
DATASET_NOT_FOUND = DifyError(404, "not_found", "Dataset not found.")
DATASET_NAME_DUPLICATE = DifyError(
    409, "dataset_name_duplicate", "The dataset name already exists. Please modify your dataset name."
)


def unauthorized(message: str) -> DifyError:
    return DifyError(401, "unauthorized", message)


def now() -> int:
    return int(time.time())


class AppsAndDatasets:
    def __init__(self, state: ApiState, daemon: PluginDaemonClient, models: ModelProviders) -> None:
        self.state = state
        self.daemon = daemon
        self.models = models
        self._indexing: set[asyncio.Task[None]] = set()

    # --- lookups ------------------------------------------------------------------------

    def app(self, app_id: str, tenant_id: str) -> dict[str, Any]:
        found = next((a for a in self.state.apps if a["id"] == app_id and a["tenant_id"] == tenant_id), None)
        if found is None:
            raise APP_NOT_FOUND
        return found

    def dataset(self, dataset_id: str, tenant_id: str) -> dict[str, Any]:
        found = next(
            (d for d in self.state.datasets if d["id"] == dataset_id and d["tenant_id"] == tenant_id), None
        )
        if found is None:
            raise DATASET_NOT_FOUND
        return found

    def owner(self) -> Principal:
        if self.state.tenant is None or not self.state.accounts:
            raise unauthorized("Tenant does not exist.")
        return Principal(account=next(iter(self.state.accounts.values())), tenant=self.state.tenant)

    async def provider(self, principal: Principal, raw: str) -> Provider | None:
        return (await self.models.providers(principal)).get(normalize_provider(raw))

    async def model_credentials(
        self, principal: Principal, raw_provider: str, model: str, model_type: str
    ) -> tuple[Provider, dict[str, Any]]:
        """The provider and the stored credentials of a registered, enabled model."""
        provider = await self.provider(principal, raw_provider)
        record = (
            self.models.model_record(provider.provider, model, model_type) if provider is not None else None
        )
        credential = self.models.credential_by_id(record["credential_id"]) if record else None
        if provider is None or credential is None:
            raise DifyError(400, "provider_not_initialize", f"Model {model} credentials is not initialized.")
        if not self.models.model_enabled(provider.provider, model, model_type):
            raise DifyError(400, "provider_not_initialize", f"Model {model} is disabled.")
        return provider, dict(credential["credentials"])

    # --- console: apps ------------------------------------------------------------------

    async def import_app(self, request: Request, principal: Principal) -> Response:
        body = await json_body(request)
        body = body if isinstance(body, dict) else {}
        mode = body.get("mode")
        if mode not in {"yaml-content", "yaml-url"}:
            raise invalid_param(f"mode: Input should be 'yaml-content' or 'yaml-url' (got {mode!r})")
        import_id = str(uuid.uuid4())
        if mode == "yaml-url":
            return import_result(import_id, "failed", error="yaml-url imports are not supported by this fake")
        content = body.get("yaml_content")
        if not isinstance(content, str) or not content:
            return import_result(
                import_id, "failed", error="yaml_content is required when import mode is yaml-content"
            )
        try:
            data = yaml.safe_load(content)
        except yaml.YAMLError as exc:
            return import_result(import_id, "failed", error=f"Invalid YAML format: {exc}")
        if not isinstance(data, dict):
            return import_result(import_id, "failed", error="Invalid YAML format: content must be a mapping")
        version = data.get("version", "0.1.0")
        if not isinstance(version, str):
            return import_result(
                import_id, "failed", error=f"Invalid version type, expected str, got {type(version).__name__}"
            )
        app_data = data.get("app")
        if not isinstance(app_data, dict):
            return import_result(
                import_id, "failed", error="Missing app data in YAML content", imported=version
            )
        app_mode = app_data.get("mode")
        if app_mode not in APP_MODES:
            return import_result(import_id, "failed", error="Invalid app mode", imported=version)
        if app_mode != "chat":
            return import_result(
                import_id,
                "failed",
                error=f"this fake runs chat apps only (mode {app_mode})",
                imported=version,
            )
        model_config = data.get("model_config")
        if not isinstance(model_config, dict):
            return import_result(
                import_id,
                "failed",
                error="Missing model_config for chat/agent-chat/completion app",
                imported=version,
            )
        model = model_config.get("model")
        if not (
            isinstance(model, dict)
            and isinstance(model.get("provider"), str)
            and isinstance(model.get("name"), str)
        ):
            return import_result(
                import_id, "failed", error="model_config.model needs provider and name", imported=version
            )
        status = version_status(version)
        if status == "pending":  # the real api asks for a confirmation; this fake does not keep it
            return import_result(import_id, "pending", imported=version, app_mode=app_mode)
        app = {
            "id": str(uuid.uuid4()),
            "tenant_id": principal.tenant_id,
            "name": str(app_data.get("name") or "Untitled"),
            "description": str(app_data.get("description") or ""),
            "mode": app_mode,
            "icon_type": app_data.get("icon_type", "emoji"),
            "icon": app_data.get("icon", "🤖"),
            "icon_background": app_data.get("icon_background", "#FFEAD5"),
            "model_config": model_config,
            "created_by": principal.user_id,
            "created_at": now(),
            "updated_at": now(),
        }
        self.state.apps.append(app)
        self.state.save()
        return import_result(import_id, status, app_id=app["id"], app_mode=app_mode, imported=version)

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
        page = int_query(request, "page", 1, 1, 99999)
        limit = int_query(request, "limit", 20, 1, 100)
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
        window = apps[(page - 1) * limit : page * limit]
        return JSONResponse(
            {
                "page": page,
                "limit": limit,
                "total": len(apps),
                "has_more": page * limit < len(apps),
                "data": [self.app_summary(a) for a in window],
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
            "token": f"{kind}-{random_key(24)}",
            "tenant_id": principal.tenant_id,
            "app_id": app_id,
            "last_used_at": None,
            "created_at": now(),
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

    # --- service API: auth --------------------------------------------------------------

    def service(self, scope: str, handler: ServiceHandler) -> Callable[[Request], Awaitable[Response]]:
        """``validate_and_get_api_token(scope)``: 401 ``unauthorized`` with Dify's messages."""

        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request, self.api_token(request, scope))
            except DifyError as error:
                return error.response()
            except PluginDaemonUnavailable as exc:
                return DifyError(500, "internal_server_error", str(exc)).response()

        return wrapped

    def api_token(self, request: Request, scope: str) -> dict[str, Any]:
        header = request.headers.get("Authorization")
        if header is None or " " not in header:
            raise unauthorized("Authorization header must be provided and start with 'Bearer'")
        scheme, value = header.split(None, 1)
        if scheme.lower() != "bearer":
            raise unauthorized("Authorization scheme must be 'Bearer'")
        token = next((t for t in self.state.api_tokens if t["token"] == value and t["type"] == scope), None)
        if token is None:
            raise unauthorized("Access token is invalid")
        token["last_used_at"] = now()
        return token

    # --- service API: chat --------------------------------------------------------------

    async def chat_message(self, request: Request, token: dict[str, Any]) -> Response:
        app = next((a for a in self.state.apps if a["id"] == token["app_id"]), None)
        if app is None:
            raise DifyError(403, "forbidden", "The app no longer exists.")
        body = await json_body(request)
        body = body if isinstance(body, dict) else {}
        user = body.get("user")
        if not user:
            raise invalid_param("Arg user must be provided.")
        if app["mode"] not in {"chat", "agent-chat", "advanced-chat"}:
            raise NOT_CHAT_APP
        if not isinstance(body.get("inputs"), dict):
            raise invalid_param("inputs: Field required")
        query = body.get("query")
        if not isinstance(query, str):
            raise invalid_param("query: Field required")
        if body.get("response_mode") not in {None, "blocking"}:
            raise invalid_param("this fake answers response_mode blocking only")
        principal = self.owner()
        model = app["model_config"]["model"]
        provider, credentials = await self.model_credentials(
            principal, model["provider"], model["name"], "llm"
        )
        config = app["model_config"]
        messages = []
        if config.get("pre_prompt"):
            messages.append({"role": "system", "content": str(config["pre_prompt"]), "name": None})
        messages.append({"role": "user", "content": query, "name": None})
        payload = {
            "user_id": str(user),
            "data": {
                "provider": provider.short_name,
                "model_type": "llm",
                "model": model["name"],
                "credentials": credentials,
                "prompt_messages": messages,
                "model_parameters": dict(model.get("completion_params") or {}),
                "stop": list((model.get("completion_params") or {}).get("stop") or []),
                "tools": [],
                "stream": True,
            },
        }
        started = time.monotonic()
        path = f"/plugin/{principal.tenant_id}/dispatch/llm/invoke"
        try:
            chunks = await self.daemon.dispatch_stream(path, provider.plugin_id, payload)
        except PluginDaemonFailure as failure:
            raise invoke_error(failure) from failure
        answer = "".join(str(chunk["delta"]["message"].get("content") or "") for chunk in chunks)
        usage = next((c["delta"]["usage"] for c in reversed(chunks) if c["delta"].get("usage")), None) or {}
        usage = {**usage, "latency": round(time.monotonic() - started, 3)}
        message_id = str(uuid.uuid4())
        conversation_id = body.get("conversation_id") or str(uuid.uuid4())
        return JSONResponse(
            {
                "event": "message",
                "task_id": str(uuid.uuid4()),
                "id": message_id,
                "message_id": message_id,
                "conversation_id": conversation_id,
                "mode": app["mode"],
                "answer": answer,
                "metadata": {"annotation_reply": None, "retriever_resources": [], "usage": usage},
                "created_at": now(),
            }
        )

    # --- service API: datasets ----------------------------------------------------------

    async def create_dataset(self, request: Request, token: dict[str, Any]) -> Response:
        body = await json_body(request)
        body = body if isinstance(body, dict) else {}
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 40:
            raise invalid_param("name: String should have between 1 and 40 characters")
        technique = body.get("indexing_technique")
        if technique not in {None, "high_quality", "economy"}:
            raise invalid_param("indexing_technique: Input should be 'high_quality' or 'economy'")
        if technique == "economy":
            raise invalid_param("this fake indexes high_quality datasets only")
        tenant_id = token["tenant_id"]
        if any(d["name"] == name and d["tenant_id"] == tenant_id for d in self.state.datasets):
            raise DATASET_NAME_DUPLICATE
        model, provider = body.get("embedding_model"), body.get("embedding_model_provider")
        if technique == "high_quality":
            if not isinstance(model, str) or not isinstance(provider, str):
                raise invalid_param(
                    "embedding_model and embedding_model_provider are required for high_quality"
                )
            await self.model_credentials(self.owner(), provider, model, "text-embedding")
        dataset = {
            "id": str(uuid.uuid4()),
            "tenant_id": tenant_id,
            "name": name,
            "description": body.get("description") or "",
            "indexing_technique": technique,
            "embedding_model": model,
            "embedding_model_provider": normalize_provider(provider) if isinstance(provider, str) else None,
            "permission": body.get("permission") or "only_me",
            "retrieval_model": body.get("retrieval_model") or default_retrieval_model(),
            "created_by": self.owner().user_id,
            "created_at": now(),
        }
        self.state.datasets.append(dataset)
        self.state.save()
        return JSONResponse(self.dataset_detail(dataset))

    def dataset_detail(self, dataset: Mapping[str, Any]) -> dict[str, Any]:
        documents = [d for d in self.state.documents if d["dataset_id"] == dataset["id"]]
        return {
            "id": dataset["id"],
            "name": dataset["name"],
            "description": dataset["description"],
            "provider": "vendor",
            "permission": dataset["permission"],
            "data_source_type": "upload_file" if documents else None,
            "indexing_technique": dataset["indexing_technique"],
            "app_count": 0,
            "document_count": len(documents),
            "word_count": sum(d["word_count"] for d in documents),
            "created_by": dataset["created_by"],
            "created_at": dataset["created_at"],
            "updated_by": dataset["created_by"],
            "updated_at": dataset["created_at"],
            "embedding_model": dataset["embedding_model"],
            "embedding_model_provider": dataset["embedding_model_provider"],
            "embedding_available": True,
            "retrieval_model_dict": dataset["retrieval_model"],
            "tags": [],
            "doc_form": "text_model" if documents else None,
            "external_knowledge_info": None,
            "external_retrieval_model": None,
            "doc_metadata": [],
            "built_in_field_enabled": False,
            "icon_info": None,
            "is_published": False,
            "total_documents": len(documents),
            "total_available_documents": len(documents),
            "enable_api": True,
        }

    async def list_datasets(self, request: Request, token: dict[str, Any]) -> Response:
        page = int_query(request, "page", 1, 1, 99999)
        limit = int_query(request, "limit", 20, 1, 100)
        keyword = request.query_params.get("keyword", "")
        found = [
            d for d in self.state.datasets if d["tenant_id"] == token["tenant_id"] and keyword in d["name"]
        ]
        found.sort(key=lambda d: d["created_at"], reverse=True)
        window = found[(page - 1) * limit : page * limit]
        return JSONResponse(
            {
                "data": [self.dataset_detail(d) for d in window],
                "has_more": page * limit < len(found),
                "limit": limit,
                "total": len(found),
                "page": page,
            }
        )

    async def delete_dataset(self, request: Request, token: dict[str, Any]) -> Response:
        dataset = self.dataset(request.path_params["dataset_id"], token["tenant_id"])
        self.state.datasets.remove(dataset)
        self.state.documents = [d for d in self.state.documents if d["dataset_id"] != dataset["id"]]
        self.state.segments = [s for s in self.state.segments if s["dataset_id"] != dataset["id"]]
        self.state.save()
        return Response(status_code=204)

    async def create_by_text(self, request: Request, token: dict[str, Any]) -> Response:
        dataset = self.dataset(request.path_params["dataset_id"], token["tenant_id"])
        body = await json_body(request)
        body = body if isinstance(body, dict) else {}
        name, text = body.get("name"), body.get("text")
        if not isinstance(text, str) or not isinstance(name, str) or not name:
            raise invalid_param("text and name are required")
        technique = body.get("indexing_technique") or dataset["indexing_technique"]
        if not technique:
            raise invalid_param("indexing_technique is required.")
        if technique != "high_quality":
            raise invalid_param("this fake indexes high_quality datasets only")
        rule = body.get("process_rule") or {"mode": "automatic"}
        if not isinstance(rule, dict) or rule.get("mode") not in {"automatic", "custom", "hierarchical"}:
            raise invalid_param("Process rule mode is invalid")
        batch = time.strftime("%Y%m%d%H%M%S") + str(secrets.randbelow(900000) + 100000)
        position = 1 + sum(1 for d in self.state.documents if d["dataset_id"] == dataset["id"])
        document = {
            "id": str(uuid.uuid4()),
            "dataset_id": dataset["id"],
            "batch": batch,
            "position": position,
            "name": name,
            "text": text,
            "created_by": dataset["created_by"],
            "created_at": now(),
            "indexing_status": "waiting",
            "error": None,
            "processing_started_at": None,
            "completed_at": None,
            "word_count": len(text),
            "tokens": 0,
        }
        self.state.documents.append(document)
        self.state.save()
        task = asyncio.get_running_loop().create_task(self.index(dataset, document))
        self._indexing.add(task)
        task.add_done_callback(self._indexing.discard)
        return JSONResponse({"document": document_detail(document), "batch": batch})

    async def index(self, dataset: Mapping[str, Any], document: dict[str, Any]) -> None:
        """The indexing task: split, embed through the plugin, store; or the plugin's error."""
        document["indexing_status"] = "indexing"
        document["processing_started_at"] = now()
        pieces = split_text(document["text"])
        try:
            vectors, tokens = await self.embed(dataset, pieces, "document")
        except (DifyError, PluginDaemonFailure, PluginDaemonUnavailable) as exc:
            document["indexing_status"] = "error"
            document["error"] = error_text(exc)
            self.state.save()
            return
        if not any(d is document for d in self.state.documents):
            return  # deleted while indexing
        for position, (piece, vector) in enumerate(zip(pieces, vectors, strict=True), start=1):
            self.state.segments.append(
                {
                    "id": str(uuid.uuid4()),
                    "dataset_id": dataset["id"],
                    "document_id": document["id"],
                    "position": position,
                    "content": piece,
                    "vector": vector,
                    "created_at": now(),
                }
            )
        document["tokens"] = tokens
        document["indexing_status"] = "completed"
        document["completed_at"] = now()
        self.state.save()

    async def embed(
        self, dataset: Mapping[str, Any], texts: list[str], input_type: str
    ) -> tuple[list[list[float]], int]:
        principal = self.owner()
        model = str(dataset["embedding_model"])
        provider, credentials = await self.model_credentials(
            principal, str(dataset["embedding_model_provider"]), model, "text-embedding"
        )
        payload = {
            "user_id": principal.user_id,
            "data": {
                "provider": provider.short_name,
                "model_type": "text-embedding",
                "model": model,
                "credentials": credentials,
                "texts": texts,
                "input_type": input_type,
            },
        }
        path = f"/plugin/{principal.tenant_id}/dispatch/text_embedding/invoke"
        result = await self.daemon.dispatch(path, provider.plugin_id, payload)
        vectors = [list(map(float, vector)) for vector in result["embeddings"]]
        if len(vectors) != len(texts):
            raise PluginDaemonFailure(
                "InvokeError", f"{len(texts)} texts but {len(vectors)} embeddings", -500
            )
        return vectors, int((result.get("usage") or {}).get("tokens") or 0)

    async def indexing_status(self, request: Request, token: dict[str, Any]) -> Response:
        dataset = self.dataset(request.path_params["dataset_id"], token["tenant_id"])
        batch = request.path_params["batch"]
        documents = [
            d for d in self.state.documents if d["dataset_id"] == dataset["id"] and d["batch"] == batch
        ]
        if not documents:
            raise DifyError(404, "not_found", "Documents not found.")
        data = []
        for document in documents:
            segments = sum(1 for s in self.state.segments if s["document_id"] == document["id"])
            total = (
                segments if document["indexing_status"] == "completed" else len(split_text(document["text"]))
            )
            data.append(
                {
                    "id": document["id"],
                    "indexing_status": document["indexing_status"],
                    "processing_started_at": document["processing_started_at"],
                    "parsing_completed_at": document["processing_started_at"],
                    "cleaning_completed_at": document["processing_started_at"],
                    "splitting_completed_at": document["processing_started_at"],
                    "completed_at": document["completed_at"],
                    "paused_at": None,
                    "error": document["error"],
                    "stopped_at": None,
                    "completed_segments": segments,
                    "total_segments": total,
                }
            )
        return JSONResponse({"data": data})

    async def retrieve(self, request: Request, token: dict[str, Any]) -> Response:
        dataset = self.dataset(request.path_params["dataset_id"], token["tenant_id"])
        body = await json_body(request)
        body = body if isinstance(body, dict) else {}
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise invalid_param("query: Field required")
        model = body.get("retrieval_model") or dataset["retrieval_model"]
        top_k = int(model.get("top_k") or DEFAULT_TOP_K)
        enabled = bool(model.get("score_threshold_enabled"))
        threshold = float(model.get("score_threshold") or 0) if enabled else None
        segments = [s for s in self.state.segments if s["dataset_id"] == dataset["id"]]
        records: list[tuple[float, dict[str, Any]]] = []
        if segments:
            try:
                vectors, _ = await self.embed(dataset, [query], "query")
            except PluginDaemonFailure as failure:
                raise invoke_error(failure) from failure
            scored = [(cosine(vectors[0], s["vector"]), s) for s in segments]
            kept = [item for item in scored if threshold is None or item[0] >= threshold]
            records = sorted(kept, key=lambda item: -item[0])[:top_k]
        return JSONResponse(
            {
                "query": {"content": query},
                "records": [
                    {
                        "segment": self.segment_detail(segment),
                        "child_chunks": [],
                        "score": round(score, 6),
                        "tsne_position": None,
                        "files": [],
                    }
                    for score, segment in records
                ],
            }
        )

    def segment_detail(self, segment: Mapping[str, Any]) -> dict[str, Any]:
        document = next(d for d in self.state.documents if d["id"] == segment["document_id"])
        return {
            "id": segment["id"],
            "position": segment["position"],
            "document_id": segment["document_id"],
            "content": segment["content"],
            "sign_content": segment["content"],
            "answer": None,
            "word_count": len(segment["content"]),
            "tokens": 0,
            "keywords": [],
            "index_node_id": segment["id"],
            "index_node_hash": None,
            "hit_count": 0,
            "enabled": True,
            "disabled_at": None,
            "disabled_by": None,
            "status": "completed",
            "created_by": document["created_by"],
            "created_at": segment["created_at"],
            "indexing_at": segment["created_at"],
            "completed_at": segment["created_at"],
            "error": None,
            "stopped_at": None,
            "document": {
                "id": document["id"],
                "data_source_type": "upload_file",
                "name": document["name"],
                "doc_type": None,
                "doc_metadata": None,
            },
        }

    # --- routing ------------------------------------------------------------------------

    def routes(self, console: ConsoleWrapper) -> list[Route]:
        app_token = "app"
        dataset = f"{SERVICE}/datasets/{{dataset_id}}"
        return [
            Route(f"{CONSOLE}/apps/imports", console(self.import_app), methods=["POST"]),
            Route(f"{CONSOLE}/apps", console(self.list_apps), methods=["GET"]),
            Route(f"{CONSOLE}/apps/{{app_id}}", console(self.delete_app), methods=["DELETE"]),
            Route(f"{CONSOLE}/apps/{{app_id}}/api-keys", console(self.create_app_key), methods=["POST"]),
            Route(f"{CONSOLE}/apps/{{app_id}}/api-keys", console(self.list_app_keys), methods=["GET"]),
            Route(f"{CONSOLE}/datasets/api-keys", console(self.create_dataset_key), methods=["POST"]),
            Route(f"{CONSOLE}/datasets/api-keys", console(self.list_dataset_keys), methods=["GET"]),
            Route(
                f"{CONSOLE}/datasets/api-keys/{{api_key_id}}",
                console(self.delete_dataset_key),
                methods=["DELETE"],
            ),
            Route(f"{SERVICE}/chat-messages", self.service(app_token, self.chat_message), methods=["POST"]),
            Route(f"{SERVICE}/datasets", self.service("dataset", self.create_dataset), methods=["POST"]),
            Route(f"{SERVICE}/datasets", self.service("dataset", self.list_datasets), methods=["GET"]),
            Route(dataset, self.service("dataset", self.delete_dataset), methods=["DELETE"]),
            Route(
                f"{dataset}/document/create-by-text",
                self.service("dataset", self.create_by_text),
                methods=["POST"],
            ),
            Route(
                f"{dataset}/documents/{{batch}}/indexing-status",
                self.service("dataset", self.indexing_status),
                methods=["GET"],
            ),
            Route(f"{dataset}/retrieve", self.service("dataset", self.retrieve), methods=["POST"]),
        ]


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


def random_key(length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def int_query(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_param(f"{name}: Input should be a valid integer") from None
    if not minimum <= value <= maximum:
        raise invalid_param(f"{name}: Input should be between {minimum} and {maximum}")
    return value


def default_retrieval_model() -> dict[str, Any]:
    return {
        "search_method": "semantic_search",
        "reranking_enable": False,
        "reranking_model": {"reranking_provider_name": "", "reranking_model_name": ""},
        "top_k": DEFAULT_TOP_K,
        "score_threshold_enabled": False,
        "score_threshold": None,
    }


def document_detail(document: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": document["id"],
        "position": document["position"],
        "data_source_type": "upload_file",
        "data_source_info": None,
        "dataset_process_rule_id": None,
        "name": document["name"],
        "created_from": "api",
        "created_by": document["created_by"],
        "created_at": document["created_at"],
        "tokens": document["tokens"],
        "indexing_status": document["indexing_status"],
        "error": document["error"],
        "enabled": True,
        "disabled_at": None,
        "disabled_by": None,
        "archived": False,
        "display_status": "queuing" if document["indexing_status"] == "waiting" else "indexing",
        "word_count": document["word_count"],
        "hit_count": 0,
        "doc_form": "text_model",
    }


def split_text(text: str) -> list[str]:
    """The automatic rule, simplified: paragraphs, then lines, packed up to the segment size."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        current = ""
        for line in paragraph.splitlines() or [paragraph]:
            line = line.strip()
            while len(line) > SEGMENT_MAX_CHARS:
                if current:
                    pieces.append(current)
                    current = ""
                pieces.append(line[:SEGMENT_MAX_CHARS])
                line = line[SEGMENT_MAX_CHARS:]
            if current and len(current) + 1 + len(line) > SEGMENT_MAX_CHARS:
                pieces.append(current)
                current = line
            elif line:
                current = f"{current}\n{line}" if current else line
        if current:
            pieces.append(current)
    return pieces


def cosine(left: list[float], right: list[float]) -> float:
    dot = sum(a * b for a, b in zip(left, right, strict=False))
    norm = math.sqrt(sum(a * a for a in left)) * math.sqrt(sum(b * b for b in right))
    return dot / norm if norm else 0.0


def error_text(exc: Exception) -> str:
    if isinstance(exc, PluginDaemonFailure):
        inner = exc.plugin_invoke_error()
        return inner[1] if inner else exc.message
    if isinstance(exc, DifyError):
        return exc.message
    return str(exc)


def invoke_error(failure: PluginDaemonFailure) -> DifyError:
    """A plugin's InvokeError → 400 completion_request_error with its message; else 500."""
    inner = failure.plugin_invoke_error()
    if inner is None:
        return DifyError(500, "internal_server_error", failure.message)
    return DifyError(400, "completion_request_error", inner[1])
