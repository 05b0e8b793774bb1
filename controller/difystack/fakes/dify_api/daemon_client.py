"""The api's HTTP client for the plugin daemon: management calls answer an envelope, dispatch
calls a stream of ``data: {envelope}`` lines; a non-zero envelope becomes PluginDaemonFailure."""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx


class PluginDaemonUnavailable(Exception):
    pass


class PluginDaemonFailure(Exception):
    """A non-zero daemon envelope: ``error_type`` and ``message`` from its JSON message."""

    def __init__(self, error_type: str, message: str, code: int) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.code = code

    def plugin_invoke_error(self) -> tuple[str, str] | None:
        """(inner error type, inner message) when the plugin itself raised."""
        if self.error_type != "PluginInvokeError":
            return None
        try:
            inner = json.loads(self.message)
            return str(inner.get("error_type")), str(inner.get("message"))
        except (ValueError, AttributeError):
            return "PluginInvokeError", self.message


def _empty_stream() -> PluginDaemonFailure:
    return PluginDaemonFailure("PluginDaemonInnerError", "got empty data from plugin daemon", -500)


def _stream_data(response: httpx.Response) -> Iterator[Any]:
    """The data of each ``data: {envelope}`` line of a daemon stream, in order; a failed one raises."""
    for line in response.text.splitlines():
        line = line.strip()
        if not line:
            continue
        envelope = json.loads(line[5:].strip() if line.startswith("data:") else line)
        if envelope.get("code") != 0:
            raise _failure(envelope)
        yield envelope.get("data")


def _failure(envelope: Mapping[str, Any]) -> PluginDaemonFailure:
    message = str(envelope.get("message", ""))
    try:
        error = json.loads(message)
        return PluginDaemonFailure(str(error["error_type"]), str(error["message"]), int(envelope["code"]))
    except (ValueError, KeyError, TypeError):
        return PluginDaemonFailure("PluginDaemonInnerError", message, int(envelope.get("code", -500)))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # built once: loading CA certificates per client is slow


@dataclass
class PluginDaemonClient:
    base_url: str
    key: str

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A management call; returns the envelope's data or raises PluginDaemonFailure."""
        response = await self._send(method, path, **kwargs)
        try:
            envelope = response.json()
        except ValueError as exc:
            raise PluginDaemonUnavailable(f"plugin daemon answered {response.status_code}") from exc
        if envelope.get("code") != 0:
            raise _failure(envelope)
        return envelope.get("data")

    async def dispatch(self, path: str, plugin_id: str, payload: Mapping[str, Any]) -> Any:
        """A dispatch call; the daemon streams ``data: {envelope}`` lines, the first one counts."""
        response = await self._send("POST", path, json=dict(payload), headers={"X-Plugin-ID": plugin_id})
        for data in _stream_data(response):
            return data
        raise _empty_stream()

    async def dispatch_stream(self, path: str, plugin_id: str, payload: Mapping[str, Any]) -> list[Any]:
        """Every chunk of a streamed dispatch (an LLM's answer); a failed chunk raises."""
        response = await self._send("POST", path, json=dict(payload), headers={"X-Plugin-ID": plugin_id})
        chunks = list(_stream_data(response))
        if not chunks:
            raise _empty_stream()
        return chunks

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-Api-Key": self.key, **kwargs.pop("headers", {})}
        try:
            async with httpx.AsyncClient(
                base_url=self.base_url, timeout=600, trust_env=False, verify=_tls_context()
            ) as client:
                return await client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise PluginDaemonUnavailable("Request to Plugin Daemon Service failed") from exc
