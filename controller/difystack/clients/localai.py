"""Client of the LocalAI HTTP API (reference: xinference-localai-api.md PART B, E2).

Pinned server: LocalAI v4.9.0. Gallery installs are asynchronous jobs (``POST /models/apply``
-> uuid -> ``GET /models/jobs/<uuid>``); an apply is never retried, since a second POST
queues a second install. The first inference on a freshly installed model may download a
backend and load weights, hence the generous inference timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from difystack.clients.http import HttpClient, HttpError, TransientHttpError
from difystack.clients.results import (
    Completion,
    Embeddings,
    UnexpectedAnswer,
    json_list,
    json_object,
    parse_chat_completion,
    parse_embeddings,
    parse_text_completion,
    with_operation,
)
from difystack.errors import DifystackError
from difystack.waits import Probe, WaitStrategy

COMPLETION_TYPES = ("chat_completion", "completion")
INFERENCE_TIMEOUT = 600.0
GALLERY_TIMEOUT = 120.0  # the first /models/available fetches the gallery index


@dataclass(frozen=True)
class JobStatus:
    """One ``GET /models/jobs/<uuid>`` answer, reduced to what a controller decides on."""

    processed: bool
    failed: bool
    message: str
    progress: float
    error: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> JobStatus:
        """Failed per the reference rule: processed and (error not null/{} or message starts with
        "error" or cancelled); v2/v3 serialised a failure's error as ``{}``."""
        processed = bool(body.get("processed"))
        message = str(body.get("message") or "")
        raw_error = body.get("error")
        has_error = raw_error not in (None, "", {})
        failed = processed and (
            has_error or message.lower().startswith("error") or bool(body.get("cancelled"))
        )
        error = str(raw_error) if has_error else None
        if failed and error is None:
            error = message.removeprefix("error:").strip() or (
                "cancelled" if body.get("cancelled") else message
            )
        progress = body.get("progress")
        return cls(
            processed=processed,
            failed=failed,
            message=message,
            progress=float(progress) if isinstance(progress, (int, float)) else 0.0,
            error=error,
        )


class LocalAIJobFailed(DifystackError):
    """A gallery job (install or delete) ended in failure."""

    def __init__(self, message: str, status: JobStatus) -> None:
        super().__init__(message)
        self.status = status


class JobWait(WaitStrategy):
    """A gallery job, for the waits runner: ready once processed; a failed job raises LocalAIJobFailed."""

    def __init__(
        self,
        client: LocalAIClient,
        uuid: str,
        what: str = "",
        on_progress: Callable[[JobStatus], None] | None = None,
    ) -> None:
        self.client = client
        self.uuid = uuid
        self.what = what or f"job {uuid}"
        self.on_progress = on_progress

    def probe(self) -> Probe:
        status = self.client.job(self.uuid)
        if self.on_progress is not None:
            self.on_progress(status)
        if status.failed:
            raise LocalAIJobFailed(f"localai {self.what} failed: {status.error}", status)
        if status.processed:
            return Probe(True, "done")
        detail = status.message or "queued"
        if status.progress:
            detail = f"{detail} {status.progress:.0f}%"
        return Probe(False, detail, marker=(status.message, round(status.progress)))


class LocalAIClient(HttpClient):
    service = "localai"

    def __init__(self, base_url: str, api_key: str | None = None, **kwargs: Any) -> None:
        headers = dict(kwargs.pop("headers", None) or {})
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        super().__init__(base_url, headers=headers, **kwargs)

    def __enter__(self) -> LocalAIClient:
        return self

    def _call(self, operation: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.request(method, path, **kwargs)
        except HttpError as exc:
            raise with_operation(exc, operation) from None

    # ---- health --------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True once ``/readyz`` answers 200; False while starting (503) or while the port is closed."""
        try:
            response = self.request("GET", "/readyz", ok=(200, 503), retry=False)
        except TransientHttpError:
            return False
        return response.status_code == 200

    def version(self) -> str:
        operation = "localai version"
        return str(json_object(self._call(operation, "GET", "/version"), operation).get("version", ""))

    # ---- models and gallery --------------------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the configured models (``GET /v1/models``)."""
        operation = "list localai models"
        data = json_object(self._call(operation, "GET", "/v1/models"), operation).get("data") or []
        return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]

    def available(self) -> list[dict[str, Any]]:
        """The gallery (``GET /models/available``; large, and slow the first time)."""
        operation = "list the localai gallery"
        response = self._call(operation, "GET", "/models/available", timeout=GALLERY_TIMEOUT)
        return [item for item in json_list(response, operation) if isinstance(item, dict)]

    def apply(self, body: Mapping[str, Any]) -> str:
        """Queue a gallery install; returns the job uuid. Never retried."""
        label = body.get("name") or body.get("id") or body.get("url") or "?"
        operation = f"localai install of {label}"
        response = self._call(operation, "POST", "/models/apply", json=dict(body), retry=False)
        return self._job_uuid(response, operation)

    def delete(self, name: str) -> str:
        """Queue the deletion of a model (config and files); returns the job uuid."""
        operation = f"localai delete of {name}"
        response = self._call(operation, "POST", f"/models/delete/{quote(name, safe='')}", retry=False)
        return self._job_uuid(response, operation)

    @staticmethod
    def _job_uuid(response: httpx.Response, operation: str) -> str:
        uuid = json_object(response, operation).get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise UnexpectedAnswer(f"{operation}: the answer has no job uuid: {response.text[:200]}")
        return uuid

    def job(self, uuid: str) -> JobStatus:
        operation = f"localai job {uuid}"
        return JobStatus.from_json(
            json_object(self._call(operation, "GET", f"/models/jobs/{uuid}"), operation)
        )

    # ---- inference -------------------------------------------------------------------------------

    def chat(
        self,
        name: str,
        prompt: str,
        max_tokens: int = 8,
        completion_type: str = "chat_completion",
        *,
        timeout: float = INFERENCE_TIMEOUT,
    ) -> Completion:
        """One completion, the way Dify's LocalAI plugin asks for it (chat or plain completion)."""
        if completion_type not in COMPLETION_TYPES:
            raise ValueError(f"completion_type must be one of {COMPLETION_TYPES}, got {completion_type!r}")
        operation = f"{completion_type.replace('_', ' ')} with localai model {name}"
        if completion_type == "chat_completion":
            body: dict[str, Any] = {
                "model": name,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
            }
            response = self._call(
                operation, "POST", "/v1/chat/completions", json=body, retry=True, timeout=timeout
            )
            return parse_chat_completion(json_object(response, operation), operation)
        body = {"model": name, "prompt": prompt, "max_tokens": max_tokens}
        response = self._call(operation, "POST", "/v1/completions", json=body, retry=True, timeout=timeout)
        return parse_text_completion(json_object(response, operation), operation)

    def embed(self, name: str, texts: list[str], *, timeout: float = INFERENCE_TIMEOUT) -> Embeddings:
        operation = f"embeddings from localai model {name}"
        response = self._call(
            operation,
            "POST",
            "/v1/embeddings",
            json={"model": name, "input": list(texts)},
            retry=True,
            timeout=timeout,
        )
        return parse_embeddings(json_object(response, operation), operation)
