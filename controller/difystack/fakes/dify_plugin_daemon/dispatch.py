"""Dispatch routes (``/plugin/{tenant}/dispatch/...``): forwarded to the real plugin over stdio.

The plugin's ``stream`` chunks become the events of a server-sent-event stream of envelopes, as
the real daemon answers; its ``error`` becomes the ``PluginInvokeError`` envelope around the
plugin's own error type and message. A plugin installed before a restart is started again on
its first dispatch.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from difystack.fakes.common.http import Endpoint, json_object
from difystack.fakes.common.streaming import sse_response
from difystack.fakes.dify_plugin_daemon.envelope import DaemonError, internal_error
from difystack.fakes.dify_plugin_daemon.runtime import PluginRuntime
from difystack.fakes.dify_plugin_daemon.state import DaemonStore
from difystack.fakes.plugin_process import PluginFailure, PluginStartError


class DispatchHandlers:
    def __init__(self, store: DaemonStore, runtime: PluginRuntime) -> None:
        self.store = store
        self.runtime = runtime

    def action(self, action: str) -> Endpoint:
        """The handler of a dispatch route: it asks the plugin for ``action``."""

        async def dispatch(request: Request) -> Response:
            return await self.dispatch(request, action)

        return dispatch

    async def dispatch(self, request: Request, action: str) -> Response:
        plugin_id = request.headers.get("X-Plugin-ID", "")
        if not plugin_id:
            return DaemonError("plugin_id is required", http_status=400).response()
        installation = self.store.tenant_installations(request.path_params["tenant_id"]).get(plugin_id)
        if installation is None:
            return DaemonError("plugin not found", "PluginNotFoundError", -404, http_status=404).response()
        body = await json_object(request) or {}
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        invocation = {"user_id": body.get("user_id", ""), "type": "model", "action": action, **data}
        return sse_response(await self.answers(installation["plugin_unique_identifier"], invocation))

    async def answers(self, identifier: str, invocation: dict[str, Any]) -> list[dict[str, Any]]:
        """The envelopes of the plugin's answer: one per ``stream`` chunk, or its error."""
        try:
            process = await self.runtime.running(identifier)
            results = await process.invoke(invocation)
        except PluginFailure as failure:
            inner = {"error_type": failure.error_type, "message": failure.message, "args": failure.args_}
            return [DaemonError(json.dumps(inner), "PluginInvokeError", -500).envelope()]
        except PluginStartError as exc:
            return [internal_error(str(exc)).envelope()]
        return [{"code": 0, "message": "", "data": result} for result in results]
