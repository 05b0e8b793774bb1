"""OpenAI-shaped inference routes: embeddings, chat completions (plain and streamed),
completions and rerank, with the deterministic answers of :mod:`difystack.fakes.common.inference`.

Usage as 4.1.0 reports it: an embedding input costs its tokens plus 2 (the begin and end
markers), a chat message its tokens plus 4 (the chat template's role markers).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.common import inference as shared
from difystack.fakes.common.http import json_body
from difystack.fakes.common.streaming import SSE_DONE, chat_stream, event_stream, sse_event
from difystack.fakes.common.tokens import random_token
from difystack.fakes.xinference.catalogue import EMBEDDING, LLM, RERANK
from difystack.fakes.xinference.errors import ApiError, missing_field
from difystack.fakes.xinference.state import ModelInstance, XinferenceState, describe


def reply(instance: ModelInstance, prompt: str, max_tokens: Any) -> tuple[list[str], str]:
    return shared.reply_words(
        f"This is a fake reply from {instance.request.model_name}. You said: {prompt}", max_tokens
    )


def spec_repr(spec: Mapping[str, Any]) -> str:
    """How 4.1.0 prints a model spec in its errors (pydantic's repr: ``key=value`` pairs)."""
    return " ".join(f"{key}={value!r}" for key, value in spec.items())


def llama_cpp_timings(prompt_tokens: int, predicted_tokens: int) -> dict[str, Any]:
    """The ``timings`` block llama.cpp adds to chat completions (figures from a 2-core CPU run)."""
    prompt_ms, predicted_ms = 4.2 * prompt_tokens, 13.9 * predicted_tokens
    return {
        "cache_n": 0,
        "prompt_n": prompt_tokens,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / max(prompt_tokens, 1),
        "prompt_per_second": 1000 * prompt_tokens / prompt_ms if prompt_ms else 0.0,
        "predicted_n": predicted_tokens,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / max(predicted_tokens, 1),
        "predicted_per_second": 1000 * predicted_tokens / predicted_ms if predicted_ms else 0.0,
    }


def served_model_field(instance: ModelInstance, home: Path) -> str:
    """The ``model`` field of completions: llama.cpp reports the GGUF path, others the uid."""
    plan = instance.plan
    if plan is None or plan.engine != "llama.cpp":
        return instance.uid
    spec = plan.spec
    name = plan.family["model_name"]
    cache = f"{name}-{spec['model_format']}-{spec.get('model_size_in_billions', 0)}b-{spec['quantization']}"
    template = spec.get("model_file_name_template") or f"{name}-{{quantization}}.gguf"
    return str(home / "cache" / "v2" / cache / template.format(quantization=spec["quantization"]))


class InferenceHandlers:
    def __init__(self, state: XinferenceState) -> None:
        self.state = state

    async def _inference_target(self, request: Request, kind: str) -> tuple[ModelInstance, dict[str, Any]]:
        body = await json_body(request)
        if not isinstance(body, dict) or not body.get("model"):
            raise missing_field("body", "model", body)
        instance = self.state.loaded(str(body["model"]), not_found_status=404)
        if self.state.behaviour.fails("infer", instance.uid):
            raise self.state.actor_error(
                500, f"Model {instance.uid} failed to run inference: injected failure (infer:{instance.uid})"
            )
        self._check_kind(instance, kind)
        return instance, body

    def _check_kind(self, instance: ModelInstance, kind: str) -> None:
        model_type = instance.request.model_type
        if kind == EMBEDDING and model_type != EMBEDDING:
            assert instance.plan is not None
            raise self.state.actor_error(
                500, f"Model {spec_repr(instance.plan.spec)} is not for creating embedding."
            )
        if kind == RERANK and model_type != RERANK:
            raise ApiError(400, f"Model {instance.uid} is not a rerank model (model_type: {model_type}).")
        if kind == "chat" and model_type != LLM:
            # 4.1.0 logs the real cause and answers with this generic text.
            raise ApiError(500, "The chat completion request failed. Check the server logs for details.")
        if kind == "generate" and model_type != LLM:
            raise ApiError(400, f"Model {instance.uid} is not a LLM (model_type: {model_type}).")
        if kind == "chat" and "chat" not in describe(instance)["model_ability"]:
            raise ApiError(400, f"Model {instance.uid} does not support chat.")

    async def embeddings(self, request: Request) -> Response:
        instance, body = await self._inference_target(request, EMBEDDING)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "Invalid input: `input` must be a string or a non-empty list of strings.")
        assert instance.plan is not None
        name, dimensions = instance.plan.family["model_name"], int(instance.plan.family["dimensions"])
        tokens = sum(shared.count_tokens(text) + 2 for text in texts)
        data = [
            {"index": i, "object": "embedding", "embedding": shared.embed(name, text, dimensions)}
            for i, text in enumerate(texts)
        ]
        return JSONResponse(
            {
                "object": "list",
                "model": instance.uid,
                "model_replica": f"{instance.uid}-rep0",
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def chat_completions(self, request: Request) -> Response:
        instance, body = await self._inference_target(request, "chat")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise missing_field("body", "messages", body)
        self._check_system_first(instance, messages)
        prompt_tokens = shared.message_tokens(messages, per_message=4)
        words, finish = reply(instance, shared.last_user_text(messages), body.get("max_tokens"))
        common = {
            "id": "chatcmpl-" + random_token(32),
            "created": int(time.time()),
            "model": served_model_field(instance, self.state.home),
            "system_fingerprint": "b0-unknown",
        }
        usage = {
            **shared.usage_block(prompt_tokens, len(words)),
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        if body.get("stream"):
            return event_stream(self._chat_stream(common, words, finish, usage, body))
        message = {"role": "assistant", "content": " ".join(words)}
        choice = {"finish_reason": finish, "index": 0, "message": message}
        answer = {"choices": [choice], **common, "object": "chat.completion", "usage": usage}
        if instance.plan is not None and instance.plan.engine == "llama.cpp":
            answer["timings"] = llama_cpp_timings(prompt_tokens, len(words))
        return JSONResponse(answer)

    @staticmethod
    def _check_system_first(instance: ModelInstance, messages: list[Any]) -> None:
        assert instance.plan is not None
        family = instance.plan.family.get("model_family") or instance.plan.family["model_name"]
        late_system = any(isinstance(m, dict) and m.get("role") == "system" for m in messages[1:])
        if family == "qwen3" and late_system:
            raise ApiError(400, "System message must be at the beginning.")

    @staticmethod
    def _chat_stream(
        common: dict[str, Any], words: list[str], finish: str, usage: dict[str, Any], body: dict[str, Any]
    ) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            choice = {"finish_reason": finish_reason, "index": 0, "delta": delta}
            return {"choices": [choice], **common, "object": "chat.completion.chunk"}

        stream_options = body.get("stream_options")
        wants_usage = isinstance(stream_options, dict) and stream_options.get("include_usage")
        return chat_stream(chunk, words, finish, opening_content=None, usage=usage if wants_usage else None)

    async def completions(self, request: Request) -> Response:
        instance, body = await self._inference_target(request, "generate")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise missing_field("body", "prompt", body)
        words, finish = reply(instance, prompt, body.get("max_tokens", 16))
        common = {
            "id": "cmpl-" + random_token(32),
            "created": int(time.time()),
            "model": served_model_field(instance, self.state.home),
        }
        if body.get("stream"):
            return event_stream(self._completion_stream(common, words, finish))
        choice = {"text": " " + " ".join(words), "index": 0, "logprobs": None, "finish_reason": finish}
        usage = shared.usage_block(shared.count_tokens(prompt), len(words))
        return JSONResponse({**common, "object": "text_completion", "choices": [choice], "usage": usage})

    @staticmethod
    async def _completion_stream(common: dict[str, Any], words: list[str], finish: str) -> AsyncIterator[str]:
        for i, word in enumerate(words):
            reason = finish if i == len(words) - 1 else None
            choice = {"text": f" {word}", "index": 0, "logprobs": None, "finish_reason": reason}
            yield sse_event({**common, "object": "text_completion", "choices": [choice]})
        yield SSE_DONE

    async def rerank(self, request: Request) -> Response:
        instance, body = await self._inference_target(request, RERANK)
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str):
            raise missing_field("body", "query", body)
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            raise missing_field("body", "documents", body)
        name = instance.request.model_name
        scored = sorted(
            ((shared.relevance(name, query, doc), i, doc) for i, doc in enumerate(documents)),
            key=lambda row: (-row[0], row[1]),
        )
        top_n = body.get("top_n")
        if isinstance(top_n, int) and not isinstance(top_n, bool) and top_n >= 0:
            scored = scored[:top_n]
        return_documents = bool(body.get("return_documents"))
        results = [
            {"index": i, "relevance_score": score, "document": {"text": doc} if return_documents else None}
            for score, i, doc in scored
        ]
        input_tokens = shared.count_tokens(query) * len(documents) + sum(
            shared.count_tokens(d) for d in documents
        )
        meta = {
            "api_version": None,
            "billed_units": None,
            "tokens": {"input_tokens": input_tokens, "output_tokens": 0},
            "warnings": None,
        }
        return JSONResponse({"id": str(uuid.uuid4()), "results": results, "meta": meta})
