"""What every HTTP client of difystack shares: timeouts, retries, errors, a call journal.

* Timeouts everywhere (connect 5 s, read configurable).
* Retries come from tenacity and only for transient trouble: connection errors, timeouts,
  502/503/504 - and only for idempotent methods unless a call opts in.
* Errors carry the server's own message (FastAPI ``detail``, Dify ``message``, LocalAI
  ``error.message``...) and the request, so the CLI can print one precise line.
* ``CallJournal`` counts the requests a client made, mutating ones apart: a converged
  ``difystack up`` must make none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from difystack.errors import DifystackError

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TRANSIENT_STATUS = frozenset({502, 503, 504})


class HttpError(DifystackError):
    """A request failed; ``status`` is None when no response arrived."""

    def __init__(
        self, service: str, method: str, url: str, status: int | None, message: str, body: Any = None
    ) -> None:
        where = f"{service}: {method} {url}"
        super().__init__(f"{where} -> {status}: {message}" if status else f"{where}: {message}")
        self.service = service
        self.method = method
        self.url = url
        self.status = status
        self.server_message = message
        self.body = body


class TransientHttpError(HttpError):
    """Worth retrying: the server was unreachable or answered 502/503/504."""


def server_message(response: httpx.Response) -> str:
    """The human message a server put in its error body, whatever its convention."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "error", "msg"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value
            if value:
                return str(value)
    return str(body)[:500]


@dataclass
class CallJournal:
    """Thread-safe record of (method, path) of every request made through the clients."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, request: httpx.Request) -> None:
        with self._lock:
            self.calls.append((request.method, f"{request.url.host}:{request.url.port}{request.url.path}"))

    @property
    def mutating(self) -> list[tuple[str, str]]:
        with self._lock:
            return [call for call in self.calls if call[0] in MUTATING]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientHttpError)


class HttpClient:
    """A small wrapper over ``httpx.Client`` that the server clients build on."""

    service = "http"

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        journal: CallJournal | None = None,
        retry_attempts: int = 4,
        retry_budget: float = 20.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.journal = journal
        self.retry_attempts = retry_attempts
        self.retry_budget = retry_budget
        hooks: dict[str, list[Callable[..., Any]]] = {"request": [journal.record]} if journal else {}
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=5.0),
            headers=dict(headers or {}),
            event_hooks=hooks,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: Iterable[int] = (200,),
        retry: bool | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request; statuses outside ``ok`` raise HttpError with the server's message.

        ``retry`` defaults to True for GET/HEAD and False for mutating methods, which are
        retried only when the caller knows they are idempotent.
        """
        accepted = frozenset(ok)
        should_retry = (method.upper() not in MUTATING) if retry is None else retry
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=5.0)

        def attempt() -> httpx.Response:
            return self._send_once(method.upper(), path, accepted, **kwargs)

        if not should_retry:
            return attempt()
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.retry_attempts) | stop_after_delay(self.retry_budget),
            wait=wait_exponential(multiplier=0.25, max=4.0),
            reraise=True,
            before_sleep=self._before_retry,
        )
        return retrying(attempt)

    def _before_retry(self, state: RetryCallState) -> None:
        """Hook for subclasses (e.g. to log); retries are silent by default."""

    def _send_once(self, method: str, path: str, accepted: frozenset[int], **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise TransientHttpError(self.service, method, url, None, "no answer (timed out)") from None
        except httpx.TransportError as exc:
            reason = str(exc) or exc.__class__.__name__
            raise TransientHttpError(self.service, method, url, None, f"cannot connect ({reason})") from None
        if response.status_code in accepted:
            return response
        error_type = TransientHttpError if response.status_code in TRANSIENT_STATUS else HttpError
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = response.text
        raise error_type(self.service, method, url, response.status_code, server_message(response), body)
