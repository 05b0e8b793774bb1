"""OpenAI-shaped inference routes (with and without ``/v1``): chat completions (plain and SSE),
completions, embeddings (dimension from the model's weights, float or base64) and Jina-style
``POST /v1/rerank``, with the deterministic answers of :mod:`difystack.fakes.common.inference`."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.common import inference as shared
from difystack.fakes.common.http import json_object
from difystack.fakes.common.streaming import chat_stream, event_stream
from difystack.fakes.localai.errors import BAD_JSON_BODY, LocalAIError, model_not_found
from difystack.fakes.localai.model_configs import ModelConfig, missing_weights
from difystack.fakes.localai.state import LocalAIState

# What the backend answers when a model is asked for what its configuration does not load.
REFUSALS = {
    "embeddings": "rpc error: code = Unknown desc = embeddings are not enabled for model {model} "
    '(set "embeddings: true" in its configuration)',
    "rerank": "rpc error: code = Unknown desc = reranking is not enabled for model {model}",
    "chat": "rpc error: code = Unimplemented desc = model {model} is loaded for embeddings/reranking "
    "and cannot generate text",
}


def compose_reply(model_name: str, prompt: str) -> str:
    if prompt.strip().lower() in {"ping", "ping."}:
        return "pong"
    excerpt = " ".join(prompt.split()[:24])
    return f"This is {model_name} on a fake LocalAI server. You said: {excerpt}"


def text_inputs(raw: Any) -> list[str]:
    """OpenAI ``input``: a string, a list of strings, a token list or a list of token lists."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list):
        if raw and all(isinstance(item, int) for item in raw):
            return [" ".join(str(item) for item in raw)]
        return [" ".join(str(t) for t in item) if isinstance(item, list) else str(item) for item in raw]
    return [str(raw)]


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class InferenceHandlers:
    def __init__(self, state: LocalAIState) -> None:
        self.state = state

    def resolve(self, body: Mapping[str, Any], usecase: str) -> ModelConfig:
        """The config a request targets, or the LocalAIError the real server answers."""
        name = body.get("model")
        if not name:
            # LocalAI falls back to the first configured model serving the use case.
            configs = self.state.configs.values()
            fallback = next((config for config in configs if config.serves(usecase)), None)
            if fallback is None:
                raise model_not_found("")
            return fallback
        config = self.state.configs.get(str(name))
        if config is None:
            if "/" in str(name):
                raise LocalAIError(500, f"could not load model {json.dumps(name)}: no model file found")
            raise model_not_found(str(name))
        if self.state.behaviour.fails("infer", config.name):
            raise LocalAIError(500, "rpc error: code = Unavailable desc = error reading from server: EOF")
        absent = missing_weights(config, self.state.settings.models_path)
        if absent is not None:
            raise LocalAIError(
                500,
                "failed to load model with internal loader: could not load model: "
                f"rpc error: code = Unknown desc = model file not found: {absent}",
            )
        return config

    async def _inference_request(self, request: Request, usecase: str) -> tuple[dict[str, Any], ModelConfig]:
        body = await json_object(request)
        if body is None:
            raise LocalAIError(400, BAD_JSON_BODY)
        config = self.resolve(body, usecase)
        if not config.serves(usecase):
            refusal = REFUSALS.get(usecase, REFUSALS["chat"])
            raise LocalAIError(500, refusal.format(model=json.dumps(config.name)))
        return body, config

    async def chat_completions(self, request: Request) -> Response:
        body, config = await self._inference_request(request, "chat")
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        prompt_tokens = shared.message_tokens(messages)
        words, finish_reason = shared.reply_words(
            compose_reply(config.name, shared.last_user_text(messages)), body.get("max_tokens")
        )
        usage = shared.usage_block(prompt_tokens, len(words))
        completion_id = str(uuid.uuid4())
        if body.get("stream"):
            return event_stream(self._chat_chunks(completion_id, config.name, words, finish_reason, usage))
        choice = {
            "index": 0,
            "finish_reason": finish_reason,
            "message": {"role": "assistant", "content": " ".join(words)},
        }
        return JSONResponse(
            {
                "created": int(time.time()),
                "object": "chat.completion",
                "id": completion_id,
                "model": config.name,
                "choices": [choice],
                "usage": usage,
            }
        )

    @staticmethod
    def _chat_chunks(
        completion_id: str, model: str, words: list[str], finish_reason: str, usage: dict[str, int]
    ) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "created": int(time.time()),
                "object": "chat.completion.chunk",
                "id": completion_id,
                "model": model,
                "choices": [{"index": 0, "finish_reason": finish, "delta": delta}],
            }

        return chat_stream(chunk, words, finish_reason, opening_content="", usage=usage)

    async def completions(self, request: Request) -> Response:
        body, config = await self._inference_request(request, "completion")
        choices = []
        prompt_tokens = completion_tokens = 0
        for index, prompt in enumerate(text_inputs(body.get("prompt")) or [""]):
            words, finish_reason = shared.reply_words(
                compose_reply(config.name, prompt), body.get("max_tokens")
            )
            choices.append({"index": index, "finish_reason": finish_reason, "text": " ".join(words)})
            prompt_tokens += shared.count_tokens(prompt)
            completion_tokens += len(words)
        return JSONResponse(
            {
                "created": int(time.time()),
                "object": "text_completion",
                "id": str(uuid.uuid4()),
                "model": config.name,
                "choices": choices,
                "usage": shared.usage_block(prompt_tokens, completion_tokens),
            }
        )

    async def embeddings(self, request: Request) -> Response:
        body, config = await self._inference_request(request, "embeddings")
        dimensions = config.embedding_dimensions()
        as_base64 = body.get("encoding_format") == "base64"
        texts = text_inputs(body.get("input"))
        data = []
        for index, text in enumerate(texts):
            vector = shared.embed(config.model_reference or config.name, text, dimensions)
            embedding = encode_base64(vector) if as_base64 else vector
            data.append({"embedding": embedding, "index": index, "object": "embedding"})
        tokens = sum(shared.count_tokens(text) for text in texts)
        response: dict[str, Any] = {"created": int(time.time()), "object": "list", "id": str(uuid.uuid4())}
        response["model"] = config.name
        if data:  # Go's omitempty drops an empty data list
            response["data"] = data
        response["usage"] = shared.usage_block(tokens, 0)
        return JSONResponse(response)

    async def rerank(self, request: Request) -> Response:
        body, config = await self._inference_request(request, "rerank")
        query = str(body.get("query") or "")
        documents = [str(document) for document in body.get("documents") or []]
        model = config.model_reference or config.name
        scored = sorted(
            (
                {"index": i, "document": {"text": d}, "relevance_score": shared.relevance(model, query, d)}
                for i, d in enumerate(documents)
            ),
            key=lambda result: -result["relevance_score"],
        )
        top_n = body.get("top_n")
        if isinstance(top_n, int) and top_n > 0:
            scored = scored[:top_n]
        tokens = shared.count_tokens(query) + sum(shared.count_tokens(document) for document in documents)
        return JSONResponse(
            {
                "model": config.name,
                "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
                "results": scored,
            }
        )
