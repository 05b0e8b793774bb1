"""Server-sent events: one ``data: <json>`` event per chunk, as the real servers stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from starlette.responses import StreamingResponse

SSE_DONE = "data: [DONE]\n\n"
ChatChunk = Callable[[dict[str, Any], "str | None"], dict[str, Any]]


def sse_event(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream")


def sse_response(chunks: Iterable[Any]) -> StreamingResponse:
    """A stream of the given chunks, one event each (no ``[DONE]``)."""

    async def stream() -> AsyncIterator[str]:
        for chunk in chunks:
            yield sse_event(chunk)

    return event_stream(stream())


async def chat_stream(
    chunk: ChatChunk,
    words: list[str],
    finish_reason: str,
    *,
    opening_content: str | None,
    usage: dict[str, Any] | None,
) -> AsyncIterator[str]:
    """An OpenAI ``chat.completion.chunk`` stream: the assistant role, one word a chunk, the
    finish reason (with ``usage`` when given), then ``[DONE]``; ``chunk`` shapes each event."""
    yield sse_event(chunk({"role": "assistant", "content": opening_content}, None))
    for index, word in enumerate(words):
        yield sse_event(chunk({"content": word if index == 0 else f" {word}"}, None))
        await asyncio.sleep(0)
    last = chunk({}, finish_reason)
    if usage is not None:
        last["usage"] = usage
    yield sse_event(last)
    yield SSE_DONE
