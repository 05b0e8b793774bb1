"""Service API ``POST /v1/chat-messages`` (blocking): the app's model answers through the plugin
daemon's ``dispatch/llm/invoke`` with the credentials Dify holds for it.

Written from Dify 1.13.3's service_api/app/completion.py; only chat apps run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.dify_api.daemon_client import PluginDaemonClient, PluginDaemonFailure
from difystack.fakes.dify_api.errors import DifyError, invalid_param, invoke_error
from difystack.fakes.dify_api.providers import ModelProviders
from difystack.fakes.dify_api.schemas import Provider, object_body
from difystack.fakes.dify_api.state import ApiState, timestamp

CHAT_MODES = {"chat", "agent-chat", "advanced-chat"}
NOT_CHAT_APP = DifyError(400, "not_chat_app", "Please check if your app mode matches the right API route.")


def chat_request(body: Mapping[str, Any], app: Mapping[str, Any]) -> str:
    """The query of a valid chat request, checked in Dify's order."""
    if not body.get("user"):
        raise invalid_param("Arg user must be provided.")
    if app["mode"] not in CHAT_MODES:
        raise NOT_CHAT_APP
    if not isinstance(body.get("inputs"), dict):
        raise invalid_param("inputs: Field required")
    query = body.get("query")
    if not isinstance(query, str):
        raise invalid_param("query: Field required")
    if body.get("response_mode") not in {None, "blocking"}:
        raise invalid_param("this fake answers response_mode blocking only")
    return query


def llm_payload(
    app: Mapping[str, Any], user: str, query: str, provider: Provider, credentials: Mapping[str, Any]
) -> dict[str, Any]:
    """What the api sends the daemon for one chat turn: the pre-prompt, then the query."""
    config = app["model_config"]
    model = config["model"]
    messages = []
    if config.get("pre_prompt"):
        messages.append({"role": "system", "content": str(config["pre_prompt"]), "name": None})
    messages.append({"role": "user", "content": query, "name": None})
    parameters = dict(model.get("completion_params") or {})
    return {
        "user_id": user,
        "data": {
            "provider": provider.short_name,
            "model_type": "llm",
            "model": model["name"],
            "credentials": dict(credentials),
            "prompt_messages": messages,
            "model_parameters": parameters,
            "stop": list(parameters.get("stop") or []),
            "tools": [],
            "stream": True,
        },
    }


class ChatHandlers:
    def __init__(self, state: ApiState, daemon: PluginDaemonClient, providers: ModelProviders) -> None:
        self.state = state
        self.daemon = daemon
        self.providers = providers

    async def chat_message(self, request: Request, token: dict[str, Any]) -> Response:
        app = next((a for a in self.state.apps if a["id"] == token["app_id"]), None)
        if app is None:
            raise DifyError(403, "forbidden", "The app no longer exists.")
        body = await object_body(request)
        query = chat_request(body, app)
        principal = self.state.owner()
        model = app["model_config"]["model"]
        provider, credentials = await self.providers.model_credentials(
            principal, model["provider"], model["name"], "llm"
        )
        started = time.monotonic()
        path = f"/plugin/{principal.tenant_id}/dispatch/llm/invoke"
        payload = llm_payload(app, str(body["user"]), query, provider, credentials)
        try:
            chunks = await self.daemon.dispatch_stream(path, provider.plugin_id, payload)
        except PluginDaemonFailure as failure:
            raise invoke_error(failure) from failure
        answer = "".join(str(chunk["delta"]["message"].get("content") or "") for chunk in chunks)
        usage = next((c["delta"]["usage"] for c in reversed(chunks) if c["delta"].get("usage")), None) or {}
        message_id = str(uuid.uuid4())
        return JSONResponse(
            {
                "event": "message",
                "task_id": str(uuid.uuid4()),
                "id": message_id,
                "message_id": message_id,
                "conversation_id": body.get("conversation_id") or str(uuid.uuid4()),
                "mode": app["mode"],
                "answer": answer,
                "metadata": {
                    "annotation_reply": None,
                    "retriever_resources": [],
                    "usage": {**usage, "latency": round(time.monotonic() - started, 3)},
                },
                "created_at": timestamp(),
            }
        )
