"""What the server clients share on top of ``http.py``: inference results and error context.

Xinference and LocalAI both answer OpenAI-shaped embeddings and completions, so one parser
serves both. ``with_operation`` prefixes an ``HttpError`` with the operation that failed
("launch of qwen2.5-instruct as uid qwen: xinference: POST ... -> 400: <server message>"),
keeping its class so callers can still tell transient trouble from the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from difystack.clients.http import HttpError, server_message
from difystack.errors import DifystackError

ErrorT = TypeVar("ErrorT", bound=HttpError)


@dataclass(frozen=True)
class Embeddings:
    """The vectors of one embeddings call, in input order."""

    vectors: list[list[float]]
    total_tokens: int

    @property
    def dimensions(self) -> int:
        return len(self.vectors[0]) if self.vectors else 0


@dataclass(frozen=True)
class Completion:
    """The text of one chat / text completion."""

    text: str
    total_tokens: int


class UnexpectedAnswer(DifystackError):
    """A server answered 200 with a body that lacks what the call needs."""


def with_operation(exc: ErrorT, operation: str) -> ErrorT:
    """The same error, its message prefixed with the operation that failed."""
    exc.args = (f"{operation}: {exc.args[0] if exc.args else exc.server_message}",)
    return exc


def error_from(service: str, response: httpx.Response, error_type: type[ErrorT]) -> ErrorT:
    """An ``error_type`` built from a response the caller accepted but judged a failure."""
    body: Any
    try:
        body = response.json()
    except ValueError:
        body = response.text
    request = response.request
    return error_type(
        service, request.method, str(request.url), response.status_code, server_message(response), body
    )


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    body = _json(response, what)
    if not isinstance(body, dict):
        raise UnexpectedAnswer(f"{what}: expected a JSON object, got {_preview(body)}")
    return body


def json_list(response: httpx.Response, what: str) -> list[Any]:
    body = _json(response, what)
    if not isinstance(body, list):
        raise UnexpectedAnswer(f"{what}: expected a JSON list, got {_preview(body)}")
    return body


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UnexpectedAnswer(f"{what}: the answer is not JSON: {_preview(response.text)}") from None


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def total_tokens(body: Mapping[str, Any]) -> int:
    usage = body.get("usage")
    value = usage.get("total_tokens") if isinstance(usage, Mapping) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def parse_embeddings(body: Mapping[str, Any], what: str) -> Embeddings:
    """An OpenAI ``/v1/embeddings`` answer; vectors ordered by their ``index``."""
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise UnexpectedAnswer(f"{what}: the answer has no embeddings: {_preview(dict(body))}")
    items = sorted(data, key=lambda item: item.get("index", 0) if isinstance(item, Mapping) else 0)
    vectors = []
    for item in items:
        vector = item.get("embedding") if isinstance(item, Mapping) else None
        if not isinstance(vector, list):
            raise UnexpectedAnswer(f"{what}: an embedding is not a list of numbers: {_preview(item)}")
        vectors.append([float(value) for value in vector])
    return Embeddings(vectors=vectors, total_tokens=total_tokens(body))


def parse_chat_completion(body: Mapping[str, Any], what: str) -> Completion:
    """An OpenAI ``/v1/chat/completions`` answer (non-streaming)."""
    message = _first_choice(body, what).get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, str):
        raise UnexpectedAnswer(f"{what}: the answer has no message content: {_preview(dict(body))}")
    return Completion(text=content, total_tokens=total_tokens(body))


def parse_text_completion(body: Mapping[str, Any], what: str) -> Completion:
    """An OpenAI ``/v1/completions`` answer (non-streaming)."""
    text = _first_choice(body, what).get("text")
    if not isinstance(text, str):
        raise UnexpectedAnswer(f"{what}: the answer has no text: {_preview(dict(body))}")
    return Completion(text=text, total_tokens=total_tokens(body))


def _first_choice(body: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise UnexpectedAnswer(f"{what}: the answer has no choices: {_preview(dict(body))}")
    return choices[0]
