"""Prove every registered model works through Dify, the way an application uses it.

For an LLM: a throwaway chat app (imported from a DSL) answers one message sent to Dify's app
API. For an embedding model: a throwaway knowledge base built with it indexes one document and
a retrieval finds it again. Dify's api calls the plugin daemon, which runs the provider's plugin,
which calls the model server: a failure is named by the hop it came from. Everything
throwaway is deleted afterwards, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from difystack.clients.dify_apps import DatasetKey, DifyApps
from difystack.clients.http import HttpError
from difystack.errors import DifystackError
from difystack.registration import Registration
from difystack.waits import Probe, WaitGroup, WaitStrategy, WaitTarget

THROWAWAY_PREFIX = "difystack-verify-"
CHAT_QUERY = "Reply with one word: hello."
DOCUMENT = "The difystack verify marker {marker} lives in this document about local model servers."

# Dify's own error codes and the plugin's error types that say where the chain broke.
DAEMON_SIGNS = re.compile(r"plugin ?daemon|PluginDaemon|plugin not found|PluginNotFound", re.IGNORECASE)
SERVER_SIGNS = re.compile(
    r"Invoke(Connection|ServerUnavailable|BadRequest|RateLimit|Authorization)Error|connection|refused|"
    r"not found|not running|timed out|timeout|\b(40[0-9]|50[0-9])\b|Name or service",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class VerifyRow:
    model: str  # provider/model (type)
    server: str  # xinference | localai
    server_id: str  # the Xinference UID or LocalAI model name
    path: str  # what was sent through Dify
    ok: bool
    latency: float  # seconds, Dify's answer (index + retrieve for an embedding model)
    tokens: int | None
    detail: str  # the answer, or Dify's error message
    hop: str | None = None  # where a failure came from: Dify api | plugin daemon | plugin | model server

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def failing_hop(exc: Exception) -> str:
    """The hop of the chain a failure came from, read off Dify's answer."""
    if isinstance(exc, HttpError):
        if exc.status is None:
            return "Dify api"
        message = exc.server_message
    else:
        message = str(exc)
    if isinstance(exc, HttpError) and isinstance(exc.body, dict) and exc.body.get("code") == "invalid_param":
        return "Dify api"  # Dify refused the request itself
    if DAEMON_SIGNS.search(message):
        return "plugin daemon"
    if SERVER_SIGNS.search(message):
        return "model server"
    if isinstance(exc, HttpError) and exc.status in (401, 403, 404):
        return "Dify api"
    return "plugin"


def error_text(exc: Exception) -> str:
    return exc.server_message if isinstance(exc, HttpError) and exc.server_message else str(exc)


class IndexingDone(WaitStrategy):
    """Ready when the document's indexing completed; failed when Dify reports an error."""

    def __init__(self, apps: DifyApps, key: DatasetKey, dataset_id: str, batch: str) -> None:
        self.apps, self.key, self.dataset_id, self.batch = apps, key, dataset_id, batch

    def probe(self) -> Probe:
        status = self.apps.indexing_status(self.key.token, self.dataset_id, self.batch)
        state = str(status.get("indexing_status", "unknown"))
        if state == "completed":
            return Probe(True, "indexed")
        if state in ("error", "paused", "stopped"):
            return Probe(False, str(status.get("error") or state), failed=True)
        done, total = status.get("completed_segments"), status.get("total_segments")
        return Probe(False, f"{state} {done}/{total} segments" if total else state)


class Verifier:
    def __init__(
        self,
        apps: DifyApps,
        on_row: Callable[[VerifyRow], None] = lambda row: None,
        indexing_timeout: float = 600.0,
    ) -> None:
        self.apps = apps
        self.on_row = on_row
        self.indexing_timeout = indexing_timeout
        self.run_id = secrets.token_hex(4)
        self.made = 0

    def run(self, registrations: list[Registration]) -> list[VerifyRow]:
        self.remove_leftovers()
        rows: list[VerifyRow] = []
        for registration in registrations:
            row = self.check(registration)
            rows.append(row)
            self.on_row(row)
        return rows

    def remove_leftovers(self) -> None:
        """Apps and knowledge bases an interrupted earlier run could not delete."""
        for app_id in self.apps.apps_named(THROWAWAY_PREFIX):
            self.apps.delete_app(app_id)
        key = self.apps.create_dataset_key()
        try:
            for dataset_id in self.apps.datasets_named(key.token, THROWAWAY_PREFIX):
                self.apps.delete_dataset(key.token, dataset_id)
        finally:
            self.apps.delete_dataset_key(key)

    def check(self, registration: Registration) -> VerifyRow:
        if registration.model_type == "llm":
            return self._measured(registration, "chat app → /v1/chat-messages", self._chat)
        if registration.model_type == "text-embedding":
            return self._measured(registration, "knowledge base → index + retrieve", self._embed)
        return VerifyRow(
            registration.key,
            registration.provider,
            registration.server_id,
            "-",
            True,
            0.0,
            None,
            "not checked (no app path)",
        )

    def _measured(
        self, registration: Registration, path: str, check: Callable[[Registration], tuple[str, int | None]]
    ) -> VerifyRow:
        started = time.monotonic()
        try:
            detail, tokens = check(registration)
        except (HttpError, DifystackError) as exc:
            elapsed = time.monotonic() - started
            return VerifyRow(
                registration.key,
                registration.provider,
                registration.server_id,
                path,
                False,
                elapsed,
                None,
                error_text(exc),
                failing_hop(exc),
            )
        return VerifyRow(
            registration.key,
            registration.provider,
            registration.server_id,
            path,
            True,
            time.monotonic() - started,
            tokens,
            detail,
        )

    def _name(self, registration: Registration) -> str:
        # Dify caps knowledge-base names at 40 characters: the model is in the row, not the name.
        self.made += 1
        return f"{THROWAWAY_PREFIX}{self.run_id}-{self.made}"

    def _chat(self, registration: Registration) -> tuple[str, int | None]:
        provider = self.apps.console.provider_id(registration.provider)
        with self._throwaway_app(self._name(registration), provider, registration.model) as token:
            answer = self.apps.chat(token, CHAT_QUERY)
        if not answer.answer.strip():
            raise DifystackError("the chat app answered with an empty message")
        total = answer.usage.get("total_tokens")
        return answer.answer.strip()[:60], total if isinstance(total, int) else None

    def _embed(self, registration: Registration) -> tuple[str, int | None]:
        provider = self.apps.console.provider_id(registration.provider)
        marker = f"m{self.run_id}{secrets.token_hex(3)}"
        name = self._name(registration)
        with self._throwaway_dataset(name, provider, registration.model) as (key, dataset):
            batch = self.apps.add_text(key.token, dataset, f"{marker}.txt", DOCUMENT.format(marker=marker))
            target = WaitTarget(
                "indexing",
                IndexingDone(self.apps, key, dataset, batch),
                timeout=self.indexing_timeout,
                stall_timeout=self.indexing_timeout,
            )
            status = WaitGroup([target]).run()["indexing"]
            if not status.ok:
                raise DifystackError(f"indexing the document failed: {status.detail}")
            records = self.apps.retrieve(key.token, dataset, f"Which document holds the marker {marker}?")
        if not any(marker in str((r.get("segment") or {}).get("content", "")) for r in records):
            raise DifystackError(f"retrieval did not find the indexed document ({len(records)} records)")
        return "indexed and found again", None

    @contextmanager
    def _throwaway_app(self, name: str, provider: str, model: str) -> Iterator[str]:
        app_id = self.apps.import_chat_app(name, provider, model)
        try:
            yield self.apps.create_app_key(app_id)
        finally:
            self.apps.delete_app(app_id)

    @contextmanager
    def _throwaway_dataset(self, name: str, provider: str, model: str) -> Iterator[tuple[DatasetKey, str]]:
        key = self.apps.create_dataset_key()
        try:
            dataset = self.apps.create_dataset(key.token, name, provider, model)
            try:
                yield key, dataset
            finally:
                self.apps.delete_dataset(key.token, dataset)
        finally:
            self.apps.delete_dataset_key(key)
