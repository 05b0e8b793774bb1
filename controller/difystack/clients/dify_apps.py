"""What an application does with Dify: chat apps, knowledge bases and their API keys.

Console calls (import a DSL, create and delete API keys and apps) go through a logged-in
:class:`~difystack.clients.dify.DifyConsole`; the app and knowledge-base calls go to Dify's
service API (``/v1``) with the key made for them, as an application would send them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from difystack.clients.dify import DifyConsole
from difystack.clients.http import CallJournal, HttpClient, HttpError
from difystack.clients.results import json_object, with_operation
from difystack.errors import DifystackError

CONSOLE = "/console/api"
# An older minor version than the api's own: the import completes (with a warning) on every 1.x.
DSL_VERSION = "0.1.5"
IMPORTED = ("completed", "completed-with-warnings")


@dataclass(frozen=True)
class ChatAnswer:
    answer: str
    usage: dict[str, Any]


@dataclass(frozen=True)
class DatasetKey:
    id: str
    token: str


def chat_app_dsl(name: str, provider: str, model: str) -> str:
    """A minimal chat app whose model is the given provider's model."""
    document = {
        "version": DSL_VERSION,
        "kind": "app",
        "app": {"name": name, "mode": "chat", "description": "made by difystack verify; safe to delete"},
        "model_config": {
            "model": {
                "provider": provider,
                "name": model,
                "mode": "chat",
                "completion_params": {"max_tokens": 32, "temperature": 0},
            },
            "pre_prompt": "Answer in one short sentence.",
            "prompt_type": "simple",
            "user_input_form": [],
            "dataset_configs": {"datasets": {"datasets": []}, "retrieval_model": "multiple"},
        },
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


class DifyServiceApi(HttpClient):
    """Dify's service API (``/v1``): what an application calls with an app or knowledge-base key."""

    service = "Dify api"


class DifyApps:
    """Apps and knowledge bases in the workspace the console is logged in to."""

    def __init__(self, console: DifyConsole, journal: CallJournal | None = None) -> None:
        self.console = console
        self.service = DifyServiceApi(console.base_url, journal=journal, timeout=120.0)

    def close(self) -> None:
        self.service.close()

    # -- chat apps (console) ----------------------------------------------------------------------

    def import_chat_app(self, name: str, provider: str, model: str) -> str:
        """Import a chat app from its DSL; its app id."""
        operation = f"import the chat app {name}"
        body = {"mode": "yaml-content", "yaml_content": chat_app_dsl(name, provider, model)}
        response = self.console.call(operation, "POST", f"{CONSOLE}/apps/imports", json=body, ok=(200, 202))
        result = json_object(response, operation)
        if result.get("status") == "pending":
            confirm = f"{CONSOLE}/apps/imports/{result.get('id')}/confirm"
            result = json_object(self.console.call(operation, "POST", confirm), operation)
        if result.get("status") not in IMPORTED or not result.get("app_id"):
            raise DifystackError(f"{operation}: Dify answered {result.get('status')}: {result.get('error')}")
        return str(result["app_id"])

    def create_app_key(self, app_id: str) -> str:
        operation = "create the chat app's API key"
        response = self.console.call(operation, "POST", f"{CONSOLE}/apps/{app_id}/api-keys", ok=(200, 201))
        return str(json_object(response, operation)["token"])

    def delete_app(self, app_id: str) -> None:
        self.console.call("delete the chat app", "DELETE", f"{CONSOLE}/apps/{app_id}", ok=(200, 204, 404))

    def apps_named(self, prefix: str) -> list[str]:
        """Ids of the apps whose name starts with ``prefix`` (leftovers of an interrupted run)."""
        operation = "list Dify apps"
        params = {"page": 1, "limit": 100, "name": prefix}
        body = json_object(self.console.call(operation, "GET", f"{CONSOLE}/apps", params=params), operation)
        items = body.get("data") or []
        named = [a for a in items if isinstance(a, dict) and str(a.get("name", "")).startswith(prefix)]
        return [str(a["id"]) for a in named]

    # -- knowledge-base keys (console) ------------------------------------------------------------

    def create_dataset_key(self) -> DatasetKey:
        operation = "create a knowledge-base API key"
        response = self.console.call(operation, "POST", f"{CONSOLE}/datasets/api-keys", ok=(200, 201))
        body = json_object(response, operation)
        return DatasetKey(str(body["id"]), str(body["token"]))

    def delete_dataset_key(self, key: DatasetKey) -> None:
        path = f"{CONSOLE}/datasets/api-keys/{key.id}"
        self.console.call("delete the knowledge-base API key", "DELETE", path, ok=(200, 204, 404))

    # -- service API --------------------------------------------------------------------------------

    def _service(self, operation: str, method: str, path: str, token: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            response = self.service.request(method, path, headers=headers, **kwargs)
        except HttpError as exc:
            raise with_operation(exc, operation) from None
        return json_object(response, operation) if response.content else {}

    def chat(self, token: str, query: str) -> ChatAnswer:
        body = {"inputs": {}, "query": query, "response_mode": "blocking", "user": "difystack-verify"}
        operation = "send a chat message"
        answer = self._service(operation, "POST", "/v1/chat-messages", token, json=body, timeout=600)
        usage = (answer.get("metadata") or {}).get("usage") or {}
        return ChatAnswer(str(answer.get("answer") or ""), dict(usage))

    def create_dataset(self, token: str, name: str, provider: str, model: str) -> str:
        body = {
            "name": name,
            "description": "made by difystack verify; safe to delete",
            "indexing_technique": "high_quality",
            "permission": "only_me",
            "embedding_model_provider": provider,
            "embedding_model": model,
        }
        return str(self._service("create a knowledge base", "POST", "/v1/datasets", token, json=body)["id"])

    def add_text(self, token: str, dataset_id: str, name: str, text: str) -> str:
        """Add one document by text; the batch whose indexing status tells when it is searchable."""
        body = {
            "name": name,
            "text": text,
            "indexing_technique": "high_quality",
            "process_rule": {"mode": "automatic"},
        }
        path = f"/v1/datasets/{dataset_id}/document/create-by-text"
        return str(self._service("add a document", "POST", path, token, json=body)["batch"])

    def indexing_status(self, token: str, dataset_id: str, batch: str) -> dict[str, Any]:
        path = f"/v1/datasets/{dataset_id}/documents/{batch}/indexing-status"
        rows = self._service("read the indexing status", "GET", path, token).get("data") or [{}]
        return dict(rows[0])

    def retrieve(self, token: str, dataset_id: str, query: str) -> list[dict[str, Any]]:
        body = {"query": query}
        path = f"/v1/datasets/{dataset_id}/retrieve"
        found = self._service("retrieve from the knowledge base", "POST", path, token, json=body)
        return list(found.get("records") or [])

    def datasets_named(self, token: str, prefix: str) -> list[str]:
        """Ids of the knowledge bases whose name starts with ``prefix``."""
        found = self._service("list knowledge bases", "GET", "/v1/datasets", token, params={"limit": 100})
        items = [d for d in found.get("data") or [] if isinstance(d, dict)]
        return [str(d["id"]) for d in items if str(d.get("name", "")).startswith(prefix)]

    def delete_dataset(self, token: str, dataset_id: str) -> None:
        path = f"/v1/datasets/{dataset_id}"
        self._service("delete the knowledge base", "DELETE", path, token, ok=(200, 204, 404))
