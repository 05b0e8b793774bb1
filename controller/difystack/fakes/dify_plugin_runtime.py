"""Shared pieces of the emulated model-provider plugins the fake plugin daemon runs.

The real daemon runs each plugin as a Python subprocess; credential validation therefore
makes real HTTP calls from the *plugin_daemon* container to the model server. The modules
:mod:`~difystack.fakes.dify_plugin_xinference` and :mod:`~difystack.fakes.dify_plugin_localai`
reproduce those calls (paths, bodies, headers, timeouts, retries, error texts) for
``langgenius/xinference`` 0.0.15 and ``langgenius/localai`` 0.0.8 (reference notes §6,
dify-official-plugins@7af22831); plugins the fake does not know accept any credentials.

Errors mimic Python exceptions raised inside the plugin: the daemon reports them as
``PluginInvokeError`` wrapping ``{"error_type": <exception class>, "message": <str(exc)>}``.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from difystack.fakes.common import OUTBOUND_PATH, OutboundEntry, RequestJournal

# A valid, silent 8 kHz mono WAV header (the plugins send a bundled demo file).
DEMO_AUDIO = (
    b"RIFF$\x00\x00\x00WAVEfmt "
    + bytes.fromhex("1000000001000100401f0000803e00000200100064617461")
    + bytes(4)
)


# --- exceptions with the names the real plugin code raises -------------------------------


class CredentialsValidateFailedError(Exception):
    pass


class InvokeError(Exception):
    pass


class InvokeBadRequestError(InvokeError):
    pass


class InvokeConnectionError(InvokeError):
    pass


class InvokeServerUnavailableError(InvokeError):
    pass


class InvokeAuthorizationError(InvokeError):
    pass


class ConnectionError_(Exception):  # reported as "ConnectionError", like requests' exception
    pass


def error_type_of(exc: BaseException) -> str:
    name = type(exc).__name__
    return "ConnectionError" if name == "ConnectionError_" else name


class ModelProviderRuntime(Protocol):
    async def validate_credentials(self, model_type: str, model: str, credentials: dict[str, Any]) -> None:
        """Validate (and possibly enrich, in place) the credentials; raise on rejection."""

    async def model_schema(
        self, model_type: str, model: str, credentials: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The customizable model's AIModelEntity."""


# --- requests-like HTTP helpers ---------------------------------------------------------


def join_url(base: str, *segments: str) -> str:
    """``yarl.URL(base) / seg / ...``: one slash between parts, segments percent-encoded."""
    url = base
    for segment in segments:
        url = url.rstrip("/") + "/" + quote(segment, safe="")
    return url


def _pool_prefix(url: str) -> str:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    pool = "HTTPSConnectionPool" if https else "HTTPConnectionPool"
    return f"{pool}(host='{parts.hostname}', port={port})"


def requests_error_text(url: str, exc: httpx.HTTPError, timeout: float | None) -> str:
    """The text ``str(exc)`` has when ``requests`` fails the same way."""
    prefix = _pool_prefix(url)
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(exc, httpx.ConnectTimeout):
        return (
            f"{prefix}: Max retries exceeded with url: {path} (Caused by ConnectTimeoutError("
            f"'Connection to {parts.hostname} timed out. (connect timeout={timeout})'))"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"{prefix}: Read timed out. (read timeout={timeout})"
    reason = str(exc) or type(exc).__name__
    if "Name or service not known" in reason or "nodename nor servname" in reason or "getaddrinfo" in reason:
        return (
            f"{prefix}: Max retries exceeded with url: {path} (Caused by NameResolutionError("
            f"\"Failed to resolve '{parts.hostname}' ([Errno -2] Name or service not known)\"))"
        )
    if "All connection attempts failed" in reason or "refused" in reason.lower():
        reason = "[Errno 111] Connection refused"
    return (
        f"{prefix}: Max retries exceeded with url: {path} (Caused by NewConnectionError("
        f"'Failed to establish a new connection: {reason}'))"
    )


def check_scheme(url: str) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise RuntimeError(f"Invalid URL '{url}': No scheme supplied. Perhaps you meant http://{url}?")


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # built once: loading CA certificates per client is slow


# Every call the emulated plugins make, served at GET /_fake/outbound: tests read it to prove
# that Dify's validation reached the model server (a real one included) and what it answered.
OUTBOUND = RequestJournal(OUTBOUND_PATH)


async def _record_outbound(response: httpx.Response) -> None:
    request = response.request
    entry = OutboundEntry(request.method, str(request.url), response.status_code, time.time())
    OUTBOUND.entries.append(entry)


def http_client() -> httpx.AsyncClient:
    # trust_env=False: the plugin subprocess only gets proxies the daemon passes explicitly.
    return httpx.AsyncClient(
        trust_env=False, verify=_tls_context(), event_hooks={"response": [_record_outbound]}
    )


async def get_with_connect_retries(
    url: str, headers: Mapping[str, str], *, timeout: float, retries: int
) -> httpx.Response:
    """``requests`` with ``HTTPAdapter(max_retries=n)``: connection failures retried at once."""
    async with http_client() as client:
        for attempt in range(retries + 1):
            try:
                return await client.get(url, headers=dict(headers), timeout=timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if attempt == retries:
                    raise
    raise AssertionError("unreachable")


# --- plugins the fake does not know ------------------------------------------------------


class GenericRuntime:
    async def validate_credentials(self, model_type: str, model: str, credentials: dict[str, Any]) -> None:
        return None

    async def model_schema(
        self, model_type: str, model: str, credentials: Mapping[str, Any]
    ) -> dict[str, Any]:
        properties = {"mode": "chat", "context_size": 2048} if model_type == "llm" else {}
        return ai_model_entity(model, model_type, properties)


# --- shared ------------------------------------------------------------------------------

LLM_PARAMETER_RULES: list[dict[str, Any]] = [
    {"name": "temperature", "use_template": "temperature", "type": "float", "required": False},
    {"name": "top_p", "use_template": "top_p", "type": "float", "required": False},
    {
        "name": "max_tokens",
        "use_template": "max_tokens",
        "type": "int",
        "min": 1,
        "default": 512,
        "required": False,
    },
]


def ai_model_entity(
    model: str,
    model_type: str,
    properties: Mapping[str, Any],
    features: list[str] | None = None,
    parameter_rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "model": model,
        "label": {"zh_Hans": model, "en_US": model},
        "model_type": model_type,
        "features": features or [],
        "fetch_from": "customizable-model",
        "model_properties": dict(properties),
        "deprecated": False,
        "parameter_rules": parameter_rules or [],
        "pricing": None,
    }
