"""Service API routes for knowledge bases (what ``difystack verify`` drives): create, list and
delete datasets; ``document/create-by-text`` (indexed in the background: segments embedded
through the plugin daemon's ``dispatch/text_embedding/invoke``), its indexing status, and
``retrieve`` (cosine similarity of the query's vector to the segments').

Written from Dify 1.13.3's console/datasets/datasets.py and service_api/dataset/*.py.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.dify_api.daemon_client import (
    PluginDaemonClient,
    PluginDaemonFailure,
    PluginDaemonUnavailable,
)
from difystack.fakes.dify_api.errors import DifyError, error_text, invalid_param, invoke_error
from difystack.fakes.dify_api.providers import ModelProviders
from difystack.fakes.dify_api.schemas import normalize_provider, object_body, query_int, window
from difystack.fakes.dify_api.state import ApiState, timestamp

SEGMENT_MAX_CHARS = 500  # the automatic rule's segmentation.max_tokens
DEFAULT_TOP_K = 4
DATASET_NOT_FOUND = DifyError(404, "not_found", "Dataset not found.")
DATASET_NAME_DUPLICATE = DifyError(
    409, "dataset_name_duplicate", "The dataset name already exists. Please modify your dataset name."
)


class DatasetHandlers:
    def __init__(self, state: ApiState, daemon: PluginDaemonClient, providers: ModelProviders) -> None:
        self.state = state
        self.daemon = daemon
        self.providers = providers
        self._indexing: set[asyncio.Task[None]] = set()

    def dataset(self, dataset_id: str, tenant_id: str) -> dict[str, Any]:
        found = next(
            (d for d in self.state.datasets if d["id"] == dataset_id and d["tenant_id"] == tenant_id), None
        )
        if found is None:
            raise DATASET_NOT_FOUND
        return found

    async def create_dataset(self, request: Request, token: dict[str, Any]) -> Response:
        body = await object_body(request)
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
            await self.providers.model_credentials(self.state.owner(), provider, model, "text-embedding")
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
            "created_by": self.state.owner().user_id,
            "created_at": timestamp(),
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
        page = query_int(request, "page", default=1, maximum=99999)
        limit = query_int(request, "limit", default=20, maximum=100)
        keyword = request.query_params.get("keyword", "")
        found = [
            d for d in self.state.datasets if d["tenant_id"] == token["tenant_id"] and keyword in d["name"]
        ]
        found.sort(key=lambda d: d["created_at"], reverse=True)
        return JSONResponse(
            {
                "data": [self.dataset_detail(d) for d in window(found, page, limit)],
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
        body = await object_body(request)
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
            "created_at": timestamp(),
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
        document["processing_started_at"] = timestamp()
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
                    "created_at": timestamp(),
                }
            )
        document["tokens"] = tokens
        document["indexing_status"] = "completed"
        document["completed_at"] = timestamp()
        self.state.save()

    async def embed(
        self, dataset: Mapping[str, Any], texts: list[str], input_type: str
    ) -> tuple[list[list[float]], int]:
        principal = self.state.owner()
        model = str(dataset["embedding_model"])
        provider, credentials = await self.providers.model_credentials(
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
        body = await object_body(request)
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
