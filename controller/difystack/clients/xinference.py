"""Client of the Xinference REST API (reference: xinference-localai-api.md PART A, E1).

Pinned server: Xinference 4.1.0, where authentication is on by default and API keys may only
query and run inference; registering, launching and terminating need the admin's access
token (``use_token``). Launches are never retried: a second POST could start a second copy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from difystack.clients.http import HttpClient, HttpError, TransientHttpError
from difystack.clients.results import (
    Completion,
    Embeddings,
    UnexpectedAnswer,
    error_from,
    json_list,
    json_object,
    parse_chat_completion,
    parse_embeddings,
    with_operation,
)
from difystack.errors import DifystackError

LLM = "LLM"
MODEL_TYPES = ("LLM", "embedding", "rerank", "image", "audio", "video", "flexible")
# A blocking launch downloads and loads weights; the server sets no deadline of its own.
BLOCKING_LAUNCH_TIMEOUT = 3600.0
INFERENCE_TIMEOUT = 120.0
NOT_IN_MODEL_LIST = "not found in the model list"
# A worker keys its models by replica uid: "<model uid>-rep<n>" (Xinference 2.x and later).
REPLICA_SUFFIX = re.compile(r"-rep\d+$")
KNOWN_NAMES_SHOWN = 30
AUTH_HINTS = {
    401: "Xinference has authentication on (the default from 3.0): give difystack an API key or a token",
    403: "on Xinference 4.x API keys may only query and run models; registering, launching and "
    "terminating need the admin's access token (login)",
}


class ModelLoading(TransientHttpError):
    """``GET /v1/models/{uid}`` answered 503: the model is launched but still loading."""

    def __init__(self, *args: Any, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after


class XinferenceLoginFailed(DifystackError):
    """``POST /token`` refused the admin's username or password."""


class XinferenceAdminExists(DifystackError):
    """``POST /v1/admin/setup`` refused: the first (admin) account exists already."""


def _segment(value: str) -> str:
    """A path segment; uids and names never contain '/', but a stray one must not re-route."""
    return quote(value, safe="")


def _check_model_type(model_type: str) -> None:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown Xinference model type {model_type!r}; use one of {', '.join(MODEL_TYPES)}")


class XinferenceClient(HttpClient):
    service = "xinference"

    def __init__(self, base_url: str, api_key: str | None = None, **kwargs: Any) -> None:
        headers = dict(kwargs.pop("headers", None) or {})
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        super().__init__(base_url, headers=headers, **kwargs)

    def __enter__(self) -> XinferenceClient:
        return self

    def use_token(self, token: str | None) -> None:
        """Send ``Authorization: Bearer <token>`` (an API key or an admin access token) from now on."""
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        else:
            self.http.headers.pop("Authorization", None)

    def _call(self, operation: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.request(method, path, **kwargs)
        except HttpError as exc:
            exc.hint = exc.hint or AUTH_HINTS.get(exc.status or 0)
            raise with_operation(exc, operation) from None

    # ---- readiness, cluster --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``GET /status``: uptime and workers (``workers == {}`` means not ready yet)."""
        return json_object(self._call("xinference status", "GET", "/status"), "xinference status")

    def auth_enabled(self) -> bool:
        """Whether the server wants a bearer token; servers older than the endpoint have no auth."""
        response = self._call("xinference auth check", "GET", "/v1/cluster/auth", ok=(200, 404))
        if response.status_code == 404:
            return False
        return bool(json_object(response, "xinference auth check").get("auth"))

    def version(self) -> str | None:
        """The server version, or None when this credential may not read it (admin scope on 4.x)."""
        response = self._call("xinference version", "GET", "/v1/cluster/version", ok=(200, 401, 403, 404))
        if response.status_code != 200:
            return None
        value = json_object(response, "xinference version").get("version")
        return str(value) if value else None

    # ---- running models ------------------------------------------------------------------------

    def running_models(self) -> dict[str, dict[str, Any]]:
        """uid -> description of every loaded model (``GET /v1/models``)."""
        operation = "list running xinference models"
        body = json_object(self._call(operation, "GET", "/v1/models"), operation)
        if isinstance(body.get("data"), list):
            return {str(item["id"]): item for item in body["data"] if isinstance(item, dict) and "id" in item}
        # very old servers answered {uid: description}
        return {str(uid): item for uid, item in body.items() if isinstance(item, dict)}

    def models_held_by_workers(self) -> set[str] | None:
        """The uids some worker really holds, asked of every worker (``GET /v1/workers``).

        ``/v1/models`` is the supervisor's own record: a worker restarted under the same address
        keeps its models listed there until it registers again, though it no longer holds them.
        None when this server or credential cannot tell (no such endpoint, no admin scope)."""
        operation = "list the models each xinference worker holds"
        response = self._call(operation, "GET", "/v1/workers", ok=(200, 401, 403, 404))
        if response.status_code != 200:
            return None
        held: set[str] = set()
        for worker in json_list(response, operation):
            models = worker.get("models") if isinstance(worker, dict) else None
            for replica_uid in models or {}:
                held.add(REPLICA_SUFFIX.sub("", str(replica_uid)))
        return held

    def describe(self, uid: str) -> dict[str, Any] | None:
        """The model's description; None when the uid is not running; ModelLoading while it loads."""
        operation = f"describe xinference model uid {uid}"
        response = self._call(operation, "GET", f"/v1/models/{_segment(uid)}", ok=(200, 400, 404, 503))
        if response.status_code == 200:
            return json_object(response, operation)
        if response.status_code == 503:
            raise with_operation(self._loading_error(response), operation)
        error = error_from(self.service, response, HttpError)
        if NOT_IN_MODEL_LIST in error.server_message.lower():
            return None
        raise with_operation(error, operation)

    def _loading_error(self, response: httpx.Response) -> TransientHttpError:
        retry_after = response.headers.get("Retry-After")
        error = error_from(self.service, response, ModelLoading)
        if "loading" not in error.server_message.lower():
            return error_from(self.service, response, TransientHttpError)
        error.retry_after = float(retry_after) if retry_after and retry_after.isdigit() else None
        return error

    def instances(self, uid: str) -> list[dict[str, Any]]:
        """Instance rows of a uid (status CREATING / LOADING / READY / ERROR ...)."""
        operation = f"list instances of xinference uid {uid}"
        response = self._call(operation, "GET", "/v1/models/instances", params={"model_uid": uid})
        return [row for row in json_list(response, operation) if isinstance(row, dict)]

    def progress(self, uid: str) -> dict[str, Any]:
        """Launch progress: ``{"progress": 0..1, "stage": ...}`` (``stage`` on 3.x+)."""
        operation = f"launch progress of xinference uid {uid}"
        return json_object(self._call(operation, "GET", f"/v1/models/{_segment(uid)}/progress"), operation)

    def launch(
        self, body: Mapping[str, Any], wait_ready: bool = False, *, timeout: float | None = None
    ) -> str:
        """Launch a model and return its uid; with ``wait_ready=False`` the server loads it in the
        background (poll ``describe``). Never retried."""
        name = body.get("model_name")
        if not name:
            raise ValueError("an Xinference launch needs model_name")
        operation = f"launch of xinference model {name}" + (
            f" as uid {body['model_uid']}" if body.get("model_uid") else ""
        )
        response = self._call(
            operation,
            "POST",
            "/v1/models",
            params={"wait_ready": "true" if wait_ready else "false"},
            json=dict(body),
            retry=False,
            timeout=timeout or (BLOCKING_LAUNCH_TIMEOUT if wait_ready else None),
        )
        uid = json_object(response, operation).get("model_uid")
        if not isinstance(uid, str) or not uid:
            raise UnexpectedAnswer(f"{operation}: the answer names no model_uid: {response.text[:200]}")
        return uid

    def terminate(self, uid: str) -> None:
        self._call(f"terminate xinference uid {uid}", "DELETE", f"/v1/models/{_segment(uid)}")

    # ---- registrations and engines ------------------------------------------------------------

    def registrations(self, model_type: str) -> list[str]:
        """Names of the built-in and registered models of a type ("LLM", "embedding", "rerank"...)."""
        _check_model_type(model_type)
        operation = f"list xinference {model_type} registrations"
        response = self._call(
            operation, "GET", f"/v1/model_registrations/{model_type}", params={"detailed": "false"}
        )
        return [str(row["model_name"]) for row in json_list(response, operation) if isinstance(row, dict)]

    def registration(self, model_type: str, name: str) -> dict[str, Any] | None:
        """One model family (built-in or custom, with ``is_builtin``); None when unknown."""
        _check_model_type(model_type)
        operation = f"read xinference {model_type} registration {name}"
        path = f"/v1/model_registrations/{model_type}/{_segment(name)}"
        response = self._call(operation, "GET", path, ok=(200, 400, 404))
        if response.status_code == 200:
            return json_object(response, operation)
        error = error_from(self.service, response, HttpError)
        if "not found" in error.server_message.lower():
            return None
        raise with_operation(error, operation)

    def register(self, model_type: str, spec: Mapping[str, Any], persist: bool = True) -> None:
        """Register a custom model; the spec travels as a JSON *string* (A3.1)."""
        _check_model_type(model_type)
        name = spec.get("model_name", "?")
        self._call(
            f"register xinference {model_type} model {name}",
            "POST",
            f"/v1/model_registrations/{model_type}",
            json={"model": json.dumps(dict(spec)), "worker_ip": None, "persist": persist},
            retry=False,
        )

    def unregister(self, model_type: str, name: str) -> None:
        _check_model_type(model_type)
        self._call(
            f"unregister xinference {model_type} model {name}",
            "DELETE",
            f"/v1/model_registrations/{model_type}/{_segment(name)}",
        )

    def engines(self, model_name: str, model_type: str | None = None) -> dict[str, Any] | None:
        """engine -> parameter combos (list) or the reason it is unusable (str); None when unknown.

        With ``model_type`` the typed route is used (it also knows custom models; 4.1.0's untyped
        route answers null for them); servers older than it (< 1.7) fall back to the LLM route.
        """
        operation = f"list xinference engines of {model_name}"
        name = _segment(model_name)
        if model_type is not None:
            _check_model_type(model_type)
            response = self._call(operation, "GET", f"/v1/engines/{model_type}/{name}", ok=(200, 400, 404))
            if response.status_code != 404 or model_type != LLM:
                return self._engines_answer(response, operation)
        response = self._call(operation, "GET", f"/v1/engines/{name}", ok=(200, 400))
        return self._engines_answer(response, operation)

    def _engines_answer(self, response: httpx.Response, operation: str) -> dict[str, Any] | None:
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                raise UnexpectedAnswer(
                    f"{operation}: the answer is not JSON: {response.text[:200]}"
                ) from None
            return body if isinstance(body, dict) else None  # 200 null: unknown model (>= 1.17)
        error = error_from(self.service, response, HttpError)
        if response.status_code in (400, 404) and "not found" in error.server_message.lower():
            return None  # v1.x answered 400 "Model X not found"
        raise with_operation(error, operation)

    # ---- inference ----------------------------------------------------------------------------

    def embed(self, uid: str, texts: list[str], *, timeout: float = INFERENCE_TIMEOUT) -> Embeddings:
        operation = f"embeddings from xinference uid {uid}"
        response = self._call(
            operation,
            "POST",
            "/v1/embeddings",
            json={"model": uid, "input": list(texts)},
            retry=True,  # pure computation: safe to repeat
            timeout=timeout,
        )
        return parse_embeddings(json_object(response, operation), operation)

    def chat(
        self, uid: str, prompt: str, max_tokens: int = 8, *, timeout: float = INFERENCE_TIMEOUT
    ) -> Completion:
        operation = f"chat with xinference uid {uid}"
        body = {"model": uid, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
        response = self._call(
            operation, "POST", "/v1/chat/completions", json=body, retry=True, timeout=timeout
        )
        return parse_chat_completion(json_object(response, operation), operation)

    # ---- auth bootstrap (3.x / 4.x) -------------------------------------------------------------

    def setup_status(self) -> dict[str, Any]:
        """``{"needs_setup": bool, "initialized": bool, "password_min_length": int}``."""
        operation = "xinference setup status"
        return json_object(self._call(operation, "GET", "/v1/admin/setup/status"), operation)

    def setup_admin(self, setup_token: str, username: str, password: str) -> None:
        """Create the first (admin) account with the one-time token the server printed at startup."""
        operation = f"create the xinference admin account {username}"
        response = self._call(
            operation,
            "POST",
            "/v1/admin/setup",
            json={"setup_token": setup_token, "username": username, "password": password},
            ok=(200, 201, 403),
            retry=False,
        )
        if response.status_code == 403:
            error = error_from(self.service, response, HttpError)
            if "already" in error.server_message.lower():
                raise XinferenceAdminExists(
                    f"{operation}: the server already has an account ({error.server_message})",
                    hint="log in with the existing admin's password instead",
                )
            error.hint = (
                "the one-time setup token is printed at the server's first start and kept in "
                "$XINFERENCE_HOME/auth/auth.db (table system_config, key setup_token) until an account exists"
            )
            raise with_operation(error, operation)

    def login(self, username: str, password: str) -> str:
        """The admin's access token (``POST /token``, JSON body). Never retried."""
        operation = f"xinference login as {username}"
        response = self._call(
            operation,
            "POST",
            "/token",
            json={"username": username, "password": password},
            ok=(200, 401),
            retry=False,
        )
        if response.status_code == 401:
            error = error_from(self.service, response, HttpError)
            raise XinferenceLoginFailed(
                f"{operation}: {error.server_message}",
                hint="the stored Xinference admin password does not match this server's account",
            )
        token = json_object(response, operation).get("access_token")
        if not isinstance(token, str) or not token:
            raise UnexpectedAnswer(f"{operation}: the answer has no access_token")
        return token

    def create_api_key(self, admin_token: str, name: str) -> str:
        """A new API key (shown once) created with the admin's access token."""
        operation = f"create xinference API key {name}"
        response = self._call(
            operation,
            "POST",
            "/v1/admin/keys",
            json={"name": name},
            headers={"Authorization": f"Bearer {admin_token}"},
            ok=(200, 201),
            retry=False,
        )
        key = json_object(response, operation).get("key")
        if not isinstance(key, str) or not key:
            raise UnexpectedAnswer(f"{operation}: the answer has no key")
        return key


# ---- validation before a launch (A4) -------------------------------------------------------------


def check_launchable(
    client: XinferenceClient,
    model_type: str,
    name: str,
    engine: str | None,
    fmt: str | None,
    size: str | int | None,
    quantization: str | None,
) -> str | None:
    """None when Xinference can launch this model as asked, else the precise reason why not.

    The reference's algorithm: the registrations of the type contain the name; for LLMs the
    engine (case-insensitive) maps to a *list* of combos with one matching format, size
    (compared as strings: "0_5" is not 0.5) and quantization (exact). ``None`` for fmt, size
    or quantization means "any".
    """
    known = client.registrations(model_type)
    if name not in known:
        return f"xinference has no {model_type} model named {name} (known: {_names(known)})"
    if model_type != LLM and not engine:
        return None
    engines = client.engines(name, model_type)
    if engines is None:
        return None if model_type != LLM else f"xinference lists no engines for {name}"
    if not engines and model_type != LLM:
        return None
    return _engine_problem(name, engines, engine or "", fmt, size, quantization)


def _engine_problem(
    name: str,
    engines: Mapping[str, Any],
    engine: str,
    fmt: str | None,
    size: str | int | None,
    quantization: str | None,
) -> str | None:
    canonical = next((key for key in engines if key.lower() == engine.lower()), None)
    if canonical is None:
        usable = [key for key, value in engines.items() if isinstance(value, list)]
        return f"engine {engine} is not usable for {name}: xinference offers only {_names(usable)}"
    combos = engines[canonical]
    if not isinstance(combos, list):
        return f"engine {canonical} is not usable for {name}: {combos}"
    if any(_combo_matches(combo, fmt, size, quantization) for combo in combos):
        return None
    wanted = " ".join(str(part) for part in (fmt, size, quantization) if part is not None)
    hint = _case_hint(combos, fmt, size, quantization)
    return f"{name} has no {wanted} for engine {canonical} (available: {_describe_combos(combos)}){hint}"


def _combo_quantizations(combo: Mapping[str, Any]) -> list[str]:
    many = combo.get("quantizations")
    if isinstance(many, list):
        return [str(item) for item in many]
    one = combo.get("quantization")
    return [str(one)] if one is not None else []


def _combo_matches(combo: Any, fmt: str | None, size: str | int | None, quantization: str | None) -> bool:
    if not isinstance(combo, Mapping):
        return False
    if fmt is not None and combo.get("model_format") != fmt:
        return False
    if (
        size is not None
        and "model_size_in_billions" in combo
        and str(combo["model_size_in_billions"]) != str(size)
    ):
        return False
    return quantization is None or quantization in _combo_quantizations(combo)


def _case_hint(combos: list[Any], fmt: str | None, size: str | int | None, quantization: str | None) -> str:
    if quantization is None:
        return ""
    for combo in combos:
        if not _combo_matches(combo, fmt, size, None):
            continue
        for candidate in _combo_quantizations(combo):
            if candidate.lower() == quantization.lower():
                return f"; quantization names are case-sensitive: did you mean {candidate}?"
    return ""


def _describe_combos(combos: Iterable[Any]) -> str:
    parts = []
    for combo in combos:
        if not isinstance(combo, Mapping):
            continue
        head = " ".join(
            str(combo[key])
            for key in ("model_format", "model_size_in_billions")
            if combo.get(key) is not None
        )
        parts.append(f"{head} [{', '.join(_combo_quantizations(combo))}]")
    return "; ".join(parts) or "none"


def _names(names: list[str]) -> str:
    shown = sorted(names)[:KNOWN_NAMES_SHOWN]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "") if names else "none"
