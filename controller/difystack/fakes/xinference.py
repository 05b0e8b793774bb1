"""A faithful fake of the Xinference 4.1.0 REST API (``xinference-local``).

What it mimics, from the project's reference notes (``xinference-localai-api.md`` PART A and
the verbatim answers of a real 4.1.0 in ``xinference-real-offline-report.md``):

- readiness: ``GET /status`` lists no worker until the fake is "ready";
- a small built-in catalogue (LLM / embedding / rerank), ``/v1/engines`` and
  ``/v1/model_registrations`` including custom registrations persisted under
  ``$XINFERENCE_HOME/model/v2/<type>/<name>.json``;
- the model lifecycle (blocking and ``wait_ready=false`` launches, a per-worker limit of
  concurrent launches, LOADING/READY/ERROR instances, describe/list/terminate/cancel);
- OpenAI-shaped inference with deterministic output (embeddings, chat, completions, rerank);
- the v3+ auth system (on by default): setup token, admin account, JWT login, ``xf-`` API keys,
  all kept in ``$XINFERENCE_HOME/auth/auth.db`` so they survive a restart.

Errors raised by Xinference's actors carry the ``[address=..., pid=...]`` prefix the real
server adds; errors raised by the REST layer itself do not.

Environment (read from the ``env`` mapping given to :func:`create_app`):

- ``XINFERENCE_HOME`` (default ``~/.xinference``), ``XINFERENCE_AUTH_ADVANCED`` (auth is off
  only for ``0``/``false``/``no``), ``XINFERENCE_MAX_CONCURRENT_LAUNCHES`` (default 5),
  ``XINFERENCE_ACCESS_TOKEN_EXPIRE_MINUTES`` (default 30).

Failure kinds understood in ``DIFYSTACK_FAKE_FAIL``:

- ``never-ready``: ``/status`` never lists a worker (launches fail: no worker);
- ``launch`` / ``launch:<model_name>`` / ``launch:<model_uid>``: the launch crashes after
  loading (instance ``ERROR``, uid removed, a blocking launch answers 500);
- ``launch-once:<model_name or uid>``: only the first launch of that model crashes (a
  transient failure; the next attempt succeeds);
- ``infer`` / ``infer:<model_uid>``: inference on that model answers 500;
- ``worker-restart-once:<model_name or uid>``: right after the first launch of that model its
  worker restarts: ``/v1/models`` still lists it, ``/v1/workers`` shows the worker without it
  (the real supervisor's record until the worker registers again).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import math
import os
import random
import re
import secrets
import sqlite3
import string
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common import JournalMiddleware, RequestJournal, json_body

VERSION = "4.1.0"
FULL_REVISION_ID = "a3625815f8daa70a1beb428734147ca973cf916c"

ENV_HOME = "XINFERENCE_HOME"
ENV_AUTH = "XINFERENCE_AUTH_ADVANCED"
ENV_MAX_CONCURRENT_LAUNCHES = "XINFERENCE_MAX_CONCURRENT_LAUNCHES"
ENV_TOKEN_MINUTES = "XINFERENCE_ACCESS_TOKEN_EXPIRE_MINUTES"
DEFAULT_MAX_CONCURRENT_LAUNCHES = 5
AUTH_OFF_VALUES = frozenset({"0", "false", "no"})
FALSE_QUERY_VALUES = frozenset({"0", "false", "no", "off", "f", "n"})  # FastAPI's bool parsing

RETRY_AFTER_SECONDS = "30"
PASSWORD_MIN_LENGTH = 8
HEALTH_CHECK_FAILURE_THRESHOLD = 5

# Model types with a catalogue in this fake; the others exist in Xinference but are empty here.
LLM = "LLM"
EMBEDDING = "embedding"
RERANK = "rerank"
SUPPORTED_TYPES = (LLM, EMBEDDING, RERANK)
EMPTY_TYPES = ("image", "audio", "video", "flexible")

MODEL_ABILITIES = frozenset(
    {"embed", "generate", "chat", "tools", "vision", "audio", "omni", "reasoning", "hybrid"}
)


# --------------------------------------------------------------------------------------------
# Built-in catalogue
# --------------------------------------------------------------------------------------------

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else 'user' }}\n{{ message['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
    "<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def _gguf_specs(
    size: str | int | None, quantizations: list[str], model_id: str, template: str
) -> list[dict[str, Any]]:
    """One v2 spec per quantization (LLM specs carry a size, embedding specs do not)."""
    specs = []
    for quantization in quantizations:
        spec: dict[str, Any] = {"model_format": "ggufv2"}
        if size is not None:
            spec["model_size_in_billions"] = size
        spec.update(
            {
                "quantization": quantization,
                "model_hub": "huggingface",
                "model_id": model_id,
                "model_uri": None,
                "model_revision": None,
                "model_file_name_template": template,
            }
        )
        if size is not None:
            spec.update({"model_file_name_split_template": None, "quantization_parts": None})
        specs.append(spec)
    return specs


def _pytorch_spec(size: str | int | None, model_id: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"model_format": "pytorch"}
    if size is not None:
        spec["model_size_in_billions"] = size
    spec.update(
        {
            "quantization": "none",
            "model_hub": "huggingface",
            "model_id": model_id,
            "model_uri": None,
            "model_revision": None,
        }
    )
    return spec


def _llm_family(
    name: str,
    *,
    lang: list[str],
    ability: list[str],
    context_length: int,
    description: str,
    specs: list[dict[str, Any]],
    chat_template: str,
    stop: list[str],
    stop_token_ids: list[int],
) -> dict[str, Any]:
    return {
        "version": 2,
        "context_length": context_length,
        "model_name": name,
        "model_lang": lang,
        "model_ability": ability,
        "model_description": description,
        "model_specs": specs,
        "chat_template": chat_template,
        "stop_token_ids": stop_token_ids,
        "stop": stop,
        "reasoning_start_tag": "<think>" if "reasoning" in ability else None,
        "reasoning_end_tag": "</think>" if "reasoning" in ability else None,
        "cache_config": None,
        "virtualenv": None,
    }


QWEN25_GGUF_QUANTIZATIONS = ["q2_k", "q3_k_m", "q4_0", "q4_k_m", "q5_0", "q5_k_m", "q6_k", "q8_0"]
QWEN_STOP = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

BUILTIN_LLMS: tuple[dict[str, Any], ...] = (
    _llm_family(
        "qwen2.5-instruct",
        lang=["en", "zh"],
        ability=["chat", "tools"],
        context_length=32768,
        description="Qwen2.5 is the latest series of Qwen large language models.",
        specs=[
            _pytorch_spec("0_5", "Qwen/Qwen2.5-0.5B-Instruct"),
            _pytorch_spec("1_5", "Qwen/Qwen2.5-1.5B-Instruct"),
            *_gguf_specs(
                "0_5",
                QWEN25_GGUF_QUANTIZATIONS,
                "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
                "qwen2.5-0.5b-instruct-{quantization}.gguf",
            ),
            *_gguf_specs(
                "1_5",
                QWEN25_GGUF_QUANTIZATIONS,
                "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
                "qwen2.5-1.5b-instruct-{quantization}.gguf",
            ),
        ],
        chat_template=QWEN_CHAT_TEMPLATE,
        stop=QWEN_STOP,
        stop_token_ids=[151643, 151644, 151645],
    ),
    _llm_family(
        "qwen3",
        lang=["en", "zh"],
        ability=["chat", "reasoning", "hybrid", "tools"],
        context_length=40960,
        description="Qwen3 is the latest generation of large language models in Qwen series.",
        specs=[
            _pytorch_spec("0_6", "Qwen/Qwen3-0.6B"),
            *_gguf_specs(
                "0_6", ["Q4_K_M", "Q8_0"], "unsloth/Qwen3-0.6B-GGUF", "Qwen3-0.6B-{quantization}.gguf"
            ),
        ],
        chat_template=QWEN_CHAT_TEMPLATE,
        stop=QWEN_STOP,
        stop_token_ids=[151643, 151644, 151645],
    ),
    _llm_family(
        "gemma-3-1b-it",
        lang=["en"],
        ability=["chat"],
        context_length=32768,
        description="Gemma 3 1B instruction-tuned text model from Google.",
        specs=[
            _pytorch_spec(1, "google/gemma-3-1b-it"),
            *_gguf_specs(
                1, ["Q4_K_M", "Q8_0"], "unsloth/gemma-3-1b-it-GGUF", "gemma-3-1b-it-{quantization}.gguf"
            ),
        ],
        chat_template=GEMMA_CHAT_TEMPLATE,
        stop=["<eos>", "<end_of_turn>", "<start_of_turn>"],
        stop_token_ids=[1, 105, 106],
    ),
    _llm_family(
        "llama-3.2-instruct",
        lang=["en", "de", "fr", "it", "pt", "hi", "es", "th"],
        ability=["chat", "tools"],
        context_length=131072,
        description="Llama 3.2 multilingual instruction-tuned text models (1B and 3B).",
        specs=[
            _pytorch_spec(1, "meta-llama/Llama-3.2-1B-Instruct"),
            _pytorch_spec(3, "meta-llama/Llama-3.2-3B-Instruct"),
            *_gguf_specs(
                1,
                ["Q4_K_M", "Q8_0"],
                "bartowski/Llama-3.2-1B-Instruct-GGUF",
                "Llama-3.2-1B-Instruct-{quantization}.gguf",
            ),
            *_gguf_specs(
                3,
                ["Q4_K_M", "Q8_0"],
                "bartowski/Llama-3.2-3B-Instruct-GGUF",
                "Llama-3.2-3B-Instruct-{quantization}.gguf",
            ),
        ],
        chat_template=LLAMA3_CHAT_TEMPLATE,
        stop=["<|end_of_text|>", "<|eot_id|>", "<|eom_id|>"],
        stop_token_ids=[128001, 128008, 128009],
    ),
)


def _embedding_family(
    name: str, dimensions: int, max_tokens: int, language: list[str], specs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "version": 2,
        "model_name": name,
        "dimensions": dimensions,
        "max_tokens": max_tokens,
        "language": language,
        "model_ability": ["embed"],
        "model_specs": specs,
        "cache_config": None,
        "virtualenv": None,
    }


BUILTIN_EMBEDDINGS: tuple[dict[str, Any], ...] = (
    _embedding_family("bge-small-en-v1.5", 384, 512, ["en"], [_pytorch_spec(None, "BAAI/bge-small-en-v1.5")]),
    _embedding_family("bge-base-en-v1.5", 768, 512, ["en"], [_pytorch_spec(None, "BAAI/bge-base-en-v1.5")]),
    _embedding_family(
        "bge-m3",
        1024,
        8192,
        ["zh", "en"],
        [
            _pytorch_spec(None, "BAAI/bge-m3"),
            *_gguf_specs(None, ["Q4_K_M", "F16"], "gpustack/bge-m3-GGUF", "bge-m3-{quantization}.gguf"),
        ],
    ),
)

BUILTIN_RERANKS: tuple[dict[str, Any], ...] = (
    {
        "version": 2,
        "model_name": "bge-reranker-v2-m3",
        "type": "normal",
        "language": ["en", "zh", "multilingual"],
        "max_tokens": 8192,
        "model_ability": ["rerank"],
        "model_specs": [_pytorch_spec(None, "BAAI/bge-reranker-v2-m3")],
        "cache_config": None,
        "virtualenv": None,
    },
)

BUILTIN_FAMILIES: dict[str, dict[str, dict[str, Any]]] = {
    LLM: {family["model_name"]: family for family in BUILTIN_LLMS},
    EMBEDDING: {family["model_name"]: family for family in BUILTIN_EMBEDDINGS},
    RERANK: {family["model_name"]: family for family in BUILTIN_RERANKS},
}

# Engines that work in this fake, with the model formats each can load.
USABLE_ENGINES: dict[str, dict[str, tuple[str, ...]]] = {
    LLM: {"llama.cpp": ("ggufv2",), "Transformers": ("pytorch", "gptq", "awq", "bnb", "fp4", "fp8")},
    EMBEDDING: {"sentence_transformers": ("pytorch",), "llama.cpp": ("ggufv2",)},
    RERANK: {"sentence_transformers": ("pytorch",)},
}
DEFAULT_ENGINE: dict[str, str] = {EMBEDDING: "sentence_transformers", RERANK: "sentence_transformers"}
# Reason strings of a real 4.1.0 without these libraries (verbatim from /v1/engines).
UNUSABLE_LLM_ENGINES: dict[str, str] = {
    "vLLM": "Failed to import vLLM: No module named 'vllm'",
    "SGLang": "Failed to import sglang: No module named 'sglang'",
    "MLX": "Failed to import mlx_lm: No module named 'mlx_lm'",
    "TRT-LLM": "Failed to import tensorrt-llm: No module named 'tensorrt_llm'",
}
NO_MATCHING_FORMAT_REASON: dict[str, str] = {
    "llama.cpp": "llama.cpp only supports the ggufv2 format",
    "Transformers": "Transformers only supports the pytorch, gptq, awq, bnb, fp4 and fp8 formats",
}

CUSTOM_SPEC_CLASS_NAMES = {
    LLM: "CustomLLMFamilyV2",
    EMBEDDING: "CustomEmbeddingModelFamilyV2",
    RERANK: "CustomRerankModelFamilyV2",
}
INVALID_MODEL_NAME = re.compile(r"[+/?%#&=\s]")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """Becomes a FastAPI-style ``{"detail": ...}`` response."""

    def __init__(self, status: int, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


class RegistrationError(Exception):
    """A custom spec is unacceptable; ``status`` is what the real server answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def missing_field(location: str, name: str, given: Any) -> ApiError:
    """The 422 FastAPI returns when a pydantic request model lacks a field."""
    return ApiError(
        422, [{"type": "missing", "loc": [location, name], "msg": "Field required", "input": given}]
    )


def wrong_type(location: str, name: str, expected: str, given: Any) -> ApiError:
    return ApiError(
        422,
        [
            {
                "type": f"{expected}_type",
                "loc": [location, name],
                "msg": f"Input should be a valid {expected}",
                "input": given,
            }
        ],
    )


async def object_body(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    return body if isinstance(body, dict) else {}


async def api_error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


async def http_error_response(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


# --------------------------------------------------------------------------------------------
# Model registry: built-in catalogue + custom registrations
# --------------------------------------------------------------------------------------------


def persisted_dir_name(model_type: str) -> str:
    return "llm" if model_type == LLM else model_type


def uri_problem(model_uri: str) -> str | None:
    """Why a ``model_uri`` is refused at registration time, or None when it is accepted.

    Like Xinference: an existing path (with or without ``file://``) is fine; a ``file``
    (or scheme-less) URI must be absolute and exist on this machine; other schemes pass.
    """
    if os.path.exists(model_uri):
        return None if os.path.isabs(model_uri) else f"Model URI cannot be a relative path: {model_uri}"
    parsed = urlparse(model_uri)
    if parsed.scheme not in ("", "file") and len(parsed.scheme) > 1:
        return None
    path = parsed.netloc + parsed.path
    if not os.path.isabs(path):
        return f"Model URI cannot be a relative path: {model_uri}"
    if not os.path.exists(path):
        return f"Invalid model URI {model_uri}."
    return None


def _validation_failure(model_type: str, problems: list[tuple[str, str]]) -> RegistrationError:
    count = len(problems)
    lines = [f"{count} validation error{'s' if count > 1 else ''} for {CUSTOM_SPEC_CLASS_NAMES[model_type]}"]
    for location, message in problems:
        lines.extend([location, f"  {message}"])
    return RegistrationError(500, "\n".join(lines))


def _check_field(
    problems: list[tuple[str, str]],
    data: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    label: str,
) -> None:
    value = data.get(name)
    if value is None:
        problems.append((name, "Field required"))
    elif not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        problems.append((name, f"Input should be a valid {label}"))


def _normalized_spec(
    model_type: str, raw: Mapping[str, Any], index: int, problems: list[tuple[str, str]]
) -> dict:
    where = f"model_specs.{index}"
    if not isinstance(raw, Mapping):
        problems.append((where, "Input should be a valid dictionary"))
        return {}
    _check_field(problems, raw, "model_format", str, "string")
    spec: dict[str, Any] = {"model_format": raw.get("model_format")}
    if model_type == LLM:
        size = raw.get("model_size_in_billions")
        if size is None or isinstance(size, bool) or not isinstance(size, (int, str)):
            problems.append((f"{where}.model_size_in_billions", "Field required"))
        spec["model_size_in_billions"] = size
        if not isinstance(raw.get("quantization"), str):
            problems.append((f"{where}.quantization", "Field required"))
        spec["quantization"] = raw.get("quantization")
    spec["model_hub"] = raw.get("model_hub") or "huggingface"
    spec["model_id"] = raw.get("model_id")
    spec["model_uri"] = raw.get("model_uri")
    spec["model_revision"] = raw.get("model_revision")
    if model_type != LLM:
        spec["quantization"] = raw.get("quantization") or "none"
    if spec["model_format"] == "ggufv2" or model_type == LLM:
        spec["model_file_name_template"] = raw.get("model_file_name_template")
    if model_type == LLM:
        spec["model_file_name_split_template"] = raw.get("model_file_name_split_template")
        spec["quantization_parts"] = raw.get("quantization_parts")
        # 4.1.0's LLM spec model, in its field order (its errors print specs as key=value pairs).
        return {key: spec.get(key, raw.get(key)) for key in LLM_SPEC_FIELDS}
    return spec


LLM_SPEC_FIELDS = (
    "model_metadata",
    "model_format",
    "model_size_in_billions",
    "quantization",
    "multimodal_projectors",
    "model_id",
    "model_file_name_template",
    "model_file_name_split_template",
    "quantization_parts",
    "model_hub",
    "model_uri",
    "model_revision",
    "activated_size_in_billions",
    "draft_model_id",
    "draft_model_file_name_template",
    "draft_quantizations",
    "draft_model_revision",
)


def parse_custom_spec(model_type: str, text: Any) -> dict[str, Any]:
    """Validate and normalize a custom model spec the way ``Custom*FamilyV2.parse_raw`` does."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise _validation_failure(model_type, [("__root__", f"Invalid JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise _validation_failure(model_type, [("__root__", "Input should be a valid dictionary")])
    if model_type == LLM and not data.get("model_family"):
        raise RegistrationError(400, "You must specify `model_family` when registering custom LLM models.")

    problems: list[tuple[str, str]] = []
    _check_field(problems, data, "model_name", str, "string")
    raw_specs = data.get("model_specs")
    if not isinstance(raw_specs, list) or not raw_specs:
        problems.append(("model_specs", "Field required"))
        raw_specs = []
    specs = [_normalized_spec(model_type, raw, i, problems) for i, raw in enumerate(raw_specs)]
    abilities = data.get("model_ability", [])
    if not isinstance(abilities, list) or any(a not in MODEL_ABILITIES for a in abilities):
        problems.append(("model_ability", f"Input should be one of: {', '.join(sorted(MODEL_ABILITIES))}"))

    if model_type == LLM:
        _check_field(problems, data, "model_lang", list, "list")
        family = _normalized_llm(data, specs)
    elif model_type == EMBEDDING:
        _check_field(problems, data, "dimensions", int, "integer")
        _check_field(problems, data, "max_tokens", int, "integer")
        _check_field(problems, data, "language", list, "list")
        family = _normalized_embedding(data, specs)
    else:
        _check_field(problems, data, "language", list, "list")
        family = _normalized_rerank(data, specs)
    if problems:
        raise _validation_failure(model_type, problems)
    return family


def _normalized_llm(data: Mapping[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any]:
    family = {
        "version": 2,
        "context_length": data.get("context_length") or 2048,
        "model_name": data.get("model_name"),
        "model_lang": data.get("model_lang"),
        "model_ability": data.get("model_ability", []),
        "model_description": data.get("model_description"),
        "model_family": data.get("model_family"),
        "model_specs": specs,
        "chat_template": data.get("chat_template"),
        "stop_token_ids": data.get("stop_token_ids"),
        "stop": data.get("stop"),
        "architectures": data.get("architectures"),
        "reasoning_start_tag": data.get("reasoning_start_tag"),
        "reasoning_end_tag": data.get("reasoning_end_tag"),
        "cache_config": data.get("cache_config"),
        "virtualenv": data.get("virtualenv"),
        "tool_parser": data.get("tool_parser"),
    }
    # A chat model without its own template borrows the built-in family's template and stops.
    parent = BUILTIN_FAMILIES[LLM].get(str(family["model_family"]))
    if parent and family["chat_template"] is None and "chat" in family["model_ability"]:
        family["chat_template"] = parent["chat_template"]
        family["stop_token_ids"] = list(parent["stop_token_ids"])
        family["stop"] = list(parent["stop"])
    return family


def _normalized_embedding(data: Mapping[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 2,
        "model_name": data.get("model_name"),
        "dimensions": data.get("dimensions"),
        "max_tokens": data.get("max_tokens"),
        "language": data.get("language"),
        "model_ability": data.get("model_ability", []),
        "model_specs": specs,
        "cache_config": data.get("cache_config"),
        "virtualenv": data.get("virtualenv"),
    }


def _normalized_rerank(data: Mapping[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 2,
        "model_name": data.get("model_name"),
        "type": data.get("type") or "normal",
        "language": data.get("language"),
        "max_tokens": data.get("max_tokens") or 512,
        "model_ability": data.get("model_ability", []),
        "model_specs": specs,
        "cache_config": data.get("cache_config"),
        "virtualenv": data.get("virtualenv"),
    }


class ModelRegistry:
    """Built-in families plus custom registrations (persisted ones live in ``model_dir``)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.custom: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in SUPPORTED_TYPES}
        self._load_persisted()

    def _persisted_path(self, model_type: str, name: str) -> Path:
        return self.model_dir / persisted_dir_name(model_type) / f"{name}.json"

    def _load_persisted(self) -> None:
        for model_type in SUPPORTED_TYPES:
            directory = self.model_dir / persisted_dir_name(model_type)
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.json")):
                try:
                    family = json.loads(path.read_text(encoding="utf-8"))
                    self.custom[model_type][family["model_name"]] = family
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    print(f"fake xinference: skipping unreadable registration {path}: {exc}", file=sys.stderr)

    def find(self, model_type: str, name: str) -> tuple[dict[str, Any], bool] | None:
        """The family called ``name`` and whether it is built in."""
        if name in BUILTIN_FAMILIES.get(model_type, {}):
            return BUILTIN_FAMILIES[model_type][name], True
        if name in self.custom.get(model_type, {}):
            return self.custom[model_type][name], False
        return None

    def names(self, model_type: str) -> list[tuple[str, bool]]:
        builtin = [(name, True) for name in BUILTIN_FAMILIES.get(model_type, {})]
        custom = [(name, False) for name in self.custom.get(model_type, {})]
        return sorted(builtin + custom)

    def register(self, model_type: str, family: dict[str, Any], persist: bool) -> None:
        name = str(family["model_name"])
        if name in self.custom[model_type]:
            raise RegistrationError(400, f"Model {name} already registered")
        if not name or INVALID_MODEL_NAME.search(name):
            raise RegistrationError(400, f"Invalid model name {name}.")
        for spec in family["model_specs"]:
            problem = uri_problem(spec["model_uri"]) if spec.get("model_uri") else None
            if problem:
                raise RegistrationError(400, problem)
        if name in BUILTIN_FAMILIES[model_type]:
            raise RegistrationError(400, f"Model name conflicts with existing model {name}")
        self.custom[model_type][name] = family
        if persist:
            path = self._persisted_path(model_type, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(family, indent=2), encoding="utf-8")

    def unregister(self, model_type: str, name: str) -> None:
        self.custom[model_type].pop(name, None)
        self._persisted_path(model_type, name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Engines and launch matching
# --------------------------------------------------------------------------------------------


def engine_params(model_type: str, family: Mapping[str, Any]) -> dict[str, Any]:
    """What ``/v1/engines`` reports: usable engine -> parameter combos, unusable -> reason."""
    result: dict[str, Any] = {}
    for engine, formats in USABLE_ENGINES[model_type].items():
        specs = [spec for spec in family["model_specs"] if spec["model_format"] in formats]
        if model_type != LLM:
            if specs:
                result[engine] = [
                    {
                        "model_name": family["model_name"],
                        "model_format": spec["model_format"],
                        "quantization": spec["quantization"],
                    }
                    for spec in specs
                ]
            continue
        result[engine] = _llm_param_combos(engine, family, specs) or NO_MATCHING_FORMAT_REASON[engine]
    if model_type == LLM:
        usable = {k: v for k, v in result.items() if isinstance(v, list)}
        reasons = {k: v for k, v in result.items() if isinstance(v, str)}
        result = {**usable, **UNUSABLE_LLM_ENGINES, **reasons}
    return result


def _llm_param_combos(engine: str, family: Mapping[str, Any], specs: list[dict[str, Any]]) -> list[dict]:
    combos: dict[tuple[str, str], dict[str, Any]] = {}
    for spec in specs:
        key = (spec["model_format"], str(spec["model_size_in_billions"]))
        if key not in combos:
            combos[key] = {
                "model_name": family["model_name"],
                "model_format": spec["model_format"],
                "model_size_in_billions": spec["model_size_in_billions"],
                "quantizations": [],
            }
            if engine == "llama.cpp":
                combos[key].update({"multimodal_projectors": None, "support_draft_model": True})
        combos[key]["quantizations"].append(spec["quantization"])
    return list(combos.values())


@dataclass(frozen=True)
class LaunchPlan:
    family: dict[str, Any]
    engine: str
    spec: dict[str, Any]


def match_spec(
    model_type: str,
    family: Mapping[str, Any],
    engine: str,
    model_format: str | None,
    size: Any,
    quantization: str | None,
) -> LaunchPlan:
    """The engine + model spec a launch request selects, or a ValueError with Xinference's text."""
    name = family["model_name"]
    usable = {k: v for k, v in engine_params(model_type, family).items() if isinstance(v, list)}
    canonical = next((k for k in usable if k.lower() == engine.lower()), None)
    if canonical is None:
        raise ValueError(f"Model {name} cannot be run on engine {engine}.")
    formats = USABLE_ENGINES[model_type][canonical]
    for spec in family["model_specs"]:
        if spec["model_format"] not in formats:
            continue
        if model_format and spec["model_format"] != model_format:
            continue
        if size is not None and model_type == LLM and str(spec["model_size_in_billions"]) != str(size):
            continue
        if quantization and spec["quantization"] != quantization:
            continue
        return LaunchPlan(dict(family), canonical, dict(spec))
    raise ValueError(
        f"Model {name} cannot be run on engine {engine}, with format {model_format}, "
        f"size {size} and quantization {quantization}."
    )


def unknown_model_message(model_type: str, name: str, available: list[str]) -> str:
    if model_type == LLM:
        return f"Model {name} not found."
    label = "Embedding" if model_type == EMBEDDING else "Rerank"
    return f"{label} model {name} not found, available models: dict_keys({available!r})"


# --------------------------------------------------------------------------------------------
# Running models
# --------------------------------------------------------------------------------------------


class Status(str, Enum):
    CREATING = "CREATING"
    LOADING = "LOADING"
    READY = "READY"
    ERROR = "ERROR"


ACTIVE_STATUSES = frozenset({Status.CREATING, Status.LOADING, Status.READY})


@dataclass
class LaunchRequest:
    model_uid: str
    model_name: str
    model_type: str
    model_engine: str | None
    model_format: str | None
    model_size_in_billions: Any
    quantization: str | None
    replica: int


@dataclass
class ModelInstance:
    request: LaunchRequest
    address: str
    created_ts: int = field(default_factory=lambda: int(time.time()))
    status: Status = Status.CREATING
    plan: LaunchPlan | None = None
    loading_since: float | None = None
    failure: ApiError | None = None
    terminating: bool = False
    # False once the worker "restarted": the supervisor still lists the model, the worker forgot it.
    held_by_worker: bool = True
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return self.request.model_uid

    @property
    def finished(self) -> bool:
        return self.status in (Status.READY, Status.ERROR)

    def log(self, event_type: str, content: str) -> None:
        self.events.append({"event_type": event_type, "event_ts": int(time.time()), "event_content": content})


STAGE_INFO = {"downloading": "Downloading model", "loading": "Loading model"}


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


def describe(instance: ModelInstance) -> dict[str, Any]:
    """``GET /v1/models/{uid}`` for a loaded model (field order as the real server)."""
    plan = instance.plan
    assert plan is not None
    family, spec = plan.family, plan.spec
    base: dict[str, Any] = {
        "model_type": instance.request.model_type,
        "address": instance.address,
        "accelerators": [],
        "model_name": family["model_name"],
    }
    if instance.request.model_type == LLM:
        base.update(
            {
                "model_lang": family["model_lang"],
                "model_ability": family["model_ability"],
                "model_description": family.get("model_description"),
                "model_format": spec["model_format"],
                "model_size_in_billions": spec["model_size_in_billions"],
                "model_family": family.get("model_family") or family["model_name"],
                "quantization": spec["quantization"],
                "multimodal_projector": None,
                "model_hub": spec["model_hub"],
                "revision": spec.get("model_revision"),
                "context_length": family["context_length"],
                "strict_system_first": False,
                "model_engine": plan.engine,
            }
        )
    elif instance.request.model_type == EMBEDDING:
        base.update(
            {
                "model_engine": plan.engine,
                "model_format": spec["model_format"],
                "dimensions": family["dimensions"],
                "max_tokens": family["max_tokens"],
                "language": family["language"],
                "model_ability": ["embed"],
                "model_hub": spec["model_hub"],
                "model_revision": spec.get("model_revision"),
                "quantization": spec["quantization"],
            }
        )
    else:
        base.update(
            {
                "model_engine": plan.engine,
                "model_format": spec["model_format"],
                "type": family.get("type", "normal"),
                "language": family["language"],
                "max_tokens": family.get("max_tokens"),
                "model_ability": ["rerank"],
                "model_hub": spec["model_hub"],
                "model_revision": spec.get("model_revision"),
                "quantization": spec["quantization"],
            }
        )
    base.update({"n_worker": 1, "replica": instance.request.replica})
    return base


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


# --------------------------------------------------------------------------------------------
# Authentication (v3+): accounts, JWTs, API keys in $XINFERENCE_HOME/auth/auth.db
# --------------------------------------------------------------------------------------------


class Access(Enum):
    PUBLIC = "public"
    QUERY = "query"  # model query + inference: API keys allowed
    ADMIN = "admin"  # register, launch, terminate, cluster, key management: admin JWT only


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _password_hash(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 20_000).hex()


KEY_ALPHABET = string.ascii_letters + string.digits
# The scopes 4.1.0 puts in an admin's access token.
ADMIN_SCOPES = (
    "admin",
    "cache:delete",
    "cache:list",
    "keys:create",
    "keys:manage",
    "logs:list",
    "model_requests:read_body",
    "models:list",
    "models:read",
    "models:register",
    "models:write",
    "monitor:view",
    "routers:list",
    "routers:operate",
    "routers:read",
    "routers:write",
    "settings:read",
    "settings:write",
    "users:manage",
    "virtualenv:delete",
    "virtualenv:list",
)


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class AuthStore:
    """SQLite-backed accounts, API keys and secrets, like the real ``auth.db``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "auth.db"
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS system_config (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " username TEXT UNIQUE NOT NULL, password_hash TEXT NOT NULL, salt TEXT NOT NULL,"
                " created_at REAL NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " name TEXT NOT NULL, prefix TEXT NOT NULL, key_hash TEXT UNIQUE NOT NULL,"
                " user_id INTEGER NOT NULL, created_at REAL NOT NULL, expires_at TEXT)"
            )
        self.jwt_secret = self._config("jwt_secret_key") or self._set_config(
            "jwt_secret_key", secrets.token_hex(32)
        )

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path)
        try:
            with connection:
                yield connection
        finally:
            connection.close()

    def _config(self, key: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT value FROM system_config WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_config(self, key: str, value: str) -> str:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO system_config (key, value) VALUES (?, ?)", (key, value))
        return value

    def has_account(self) -> bool:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM users").fetchone()[0] > 0

    def setup_token(self) -> str:
        """The one-time setup token (kept in the DB until an account exists)."""
        return self._config("setup_token") or self._set_config("setup_token", secrets.token_urlsafe(32))

    def create_first_account(self, username: str, password: str) -> int:
        salt = secrets.token_hex(16)
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO users (username, password_hash, salt, created_at) VALUES (?, ?, ?, ?)",
                (username, _password_hash(password, salt), salt, time.time()),
            )
            db.execute("DELETE FROM system_config WHERE key = 'setup_token'")
        return int(cursor.lastrowid or 0)

    def user_id(self, username: str, password: str | None = None) -> int | None:
        with self._db() as db:
            row = db.execute(
                "SELECT id, password_hash, salt FROM users WHERE username = ?", (username,)
            ).fetchone()
        if row is None:
            return None
        if password is not None and not hmac.compare_digest(row[1], _password_hash(password, row[2])):
            return None
        return int(row[0])

    def create_key(self, name: str, user_id: int, expires_at: str | None) -> dict[str, Any]:
        key = "xf-" + "".join(secrets.choice(KEY_ALPHABET) for _ in range(48))
        prefix = key[:7]
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO api_keys (name, prefix, key_hash, user_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, prefix, hashlib.sha256(key.encode()).hexdigest(), user_id, time.time(), expires_at),
            )
        return {"id": int(cursor.lastrowid or 0), "key": key, "prefix": prefix, "name": name}

    def key_is_valid(self, key: str) -> bool:
        with self._db() as db:
            row = db.execute(
                "SELECT id FROM api_keys WHERE key_hash = ?", (hashlib.sha256(key.encode()).hexdigest(),)
            ).fetchone()
        return row is not None

    def list_keys(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute(
                "SELECT k.id, k.user_id, u.username, k.prefix, k.name, k.created_at, k.expires_at"
                " FROM api_keys k LEFT JOIN users u ON u.id = k.user_id ORDER BY k.id"
            ).fetchall()
        return [
            {
                "id": key_id,
                "user_id": user_id,
                "owner_username": owner,
                "key_prefix": prefix,
                "name": name,
                "description": None,
                "enabled": True,
                "expires_at": expires_at,
                "model_permissions": [
                    {"id": key_id, "api_key_id": key_id, "permission_type": "all", "permission_value": None}
                ],
                "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created_at)),
            }
            for key_id, user_id, owner, prefix, name, created_at, expires_at in rows
        ]

    def delete_key(self, key_id: int) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount > 0

    def issue_token(self, username: str, token_type: str, lifetime_seconds: int) -> str:
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "sub": username,
            "user_id": self.user_id(username),
            "scopes": list(ADMIN_SCOPES),
            "token_version": 0,
            "exp": int(time.time()) + lifetime_seconds,
            "type": token_type,
        }
        signing_input = f"{_b64url(_compact_json(header))}.{_b64url(_compact_json(claims))}"
        signature = hmac.new(self.jwt_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"

    def token_subject(self, token: str, token_type: str) -> str | None:
        """The username of a valid, unexpired token of ``token_type``."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        signing_input = f"{parts[0]}.{parts[1]}"
        expected = hmac.new(self.jwt_secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(expected, _unb64url(parts[2])):
                return None
            claims = json.loads(_unb64url(parts[1]))
        except ValueError:
            return None
        if claims.get("type") != token_type or claims.get("exp", 0) < time.time():
            return None
        username = claims.get("sub")
        return username if isinstance(username, str) and self.user_id(username) is not None else None


@dataclass(frozen=True)
class Caller:
    """Who sent a request: an admin (JWT), an API key, or nobody (auth off)."""

    kind: str  # "admin" | "key" | "anonymous"
    username: str | None = None


# --------------------------------------------------------------------------------------------
# Deterministic inference
# --------------------------------------------------------------------------------------------

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    return len(TOKEN_PATTERN.findall(text))


def embedding_vector(model_name: str, text: str, dimensions: int) -> list[float]:
    """A unit vector derived from a hash of (model, text): same input, same vector."""
    raw = hashlib.shake_256(f"{model_name}\0{text}".encode()).digest(dimensions * 2)
    values = [int.from_bytes(raw[i : i + 2], "big") / 32767.5 - 1.0 for i in range(0, len(raw), 2)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def random_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def reply_words(model_name: str, prompt: str, max_tokens: Any) -> tuple[list[str], str]:
    """The words of a deterministic reply and its finish reason."""
    words = f"This is a fake reply from {model_name}. You said: {prompt}".split()[:256]
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 0 < max_tokens < len(words):
        return words[:max_tokens], "length"
    return words, "stop"


def relevance(model_name: str, query: str, document: str) -> float:
    """Word overlap plus a tiny hash-derived tie breaker, in [0, 1]."""
    query_words = set(TOKEN_PATTERN.findall(query.lower()))
    doc_words = set(TOKEN_PATTERN.findall(document.lower()))
    overlap = len(query_words & doc_words) / (len(query_words) or 1)
    jitter = int.from_bytes(hashlib.sha256(f"{model_name}\0{query}\0{document}".encode()).digest()[:2], "big")
    return round(min(1.0, 0.9 * overlap + 0.1 * jitter / 65535), 6)


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


# --------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from exc
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


class FakeXinference:
    def __init__(self, behaviour: Behaviour, env: Mapping[str, str]) -> None:
        self.behaviour = behaviour
        self.home = Path(env.get(ENV_HOME) or Path.home() / ".xinference").expanduser()
        self.max_concurrent_launches = _positive_int(
            env, ENV_MAX_CONCURRENT_LAUNCHES, DEFAULT_MAX_CONCURRENT_LAUNCHES
        )
        self.token_minutes = _positive_int(env, ENV_TOKEN_MINUTES, 30)
        self.auth_enabled = env.get(ENV_AUTH, "true").strip().lower() not in AUTH_OFF_VALUES
        self.journal = RequestJournal()
        self.registry = ModelRegistry(self.home / "model" / "v2")
        self.auth = AuthStore(self.home / "auth") if self.auth_enabled else None
        rng = random.Random()
        self.supervisor_address = f"0.0.0.0:{rng.randint(20000, 65000)}"
        self.worker_address = f"0.0.0.0:{rng.randint(20000, 65000)}"
        self.error_prefix = f"[address={self.supervisor_address}, pid={os.getpid()}] "
        self.started_at = time.monotonic()
        self.instances: dict[str, ModelInstance] = {}
        self._launch_slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed_once: set[str] = set()
        self._restarted_once: set[str] = set()
        if self.auth is not None and not self.auth.has_account():
            self._print_setup_banner(self.auth.setup_token())

    @staticmethod
    def _print_setup_banner(token: str) -> None:
        print("FIRST-RUN SETUP REQUIRED", flush=True)
        print(f"  Setup token: {token}", flush=True)
        print("  Create the initial admin account at POST /v1/admin/setup", flush=True)

    # ---- plumbing ---------------------------------------------------------------------------

    def actor_error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> ApiError:
        """An error raised inside an Xinference actor (carries the address/pid prefix)."""
        return ApiError(status, self.error_prefix + message, headers)

    @asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self.started_at = time.monotonic()
        try:
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def launch_slots(self) -> asyncio.Semaphore:
        if self._launch_slots is None:
            self._launch_slots = asyncio.Semaphore(self.max_concurrent_launches)
        return self._launch_slots

    def workers_ready(self) -> bool:
        if self.behaviour.fails("never-ready"):
            return False
        return time.monotonic() - self.started_at >= self.behaviour.ready_delay

    def active(self) -> dict[str, ModelInstance]:
        return {uid: inst for uid, inst in self.instances.items() if inst.status in ACTIVE_STATUSES}

    def ready_models(self) -> list[ModelInstance]:
        return [inst for inst in self.instances.values() if inst.status == Status.READY]

    def guard(self, access: Access, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if access is not Access.PUBLIC:
                caller = self.caller(request)
                if access is Access.ADMIN and caller.kind == "key":
                    raise ApiError(403, "API keys can only access model query and inference endpoints")
            return await endpoint(request)

        return guarded

    def caller(self, request: Request) -> Caller:
        if self.auth is None:
            return Caller("anonymous")
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        if scheme.lower() == "bearer" and credential:
            if credential.startswith("xf-") and self.auth.key_is_valid(credential):
                return Caller("key")
            username = self.auth.token_subject(credential, "access")
            if username is not None:
                return Caller("admin", username)
        raise ApiError(401, "Could not validate credentials", {"WWW-Authenticate": "Bearer"})

    # ---- readiness and cluster --------------------------------------------------------------

    def worker_status(self) -> dict[str, Any]:
        if not self.workers_ready():
            return {}
        loaded = len(self.ready_models())
        return {
            self.worker_address: {
                "update_time": time.time(),
                "failure_remaining_count": HEALTH_CHECK_FAILURE_THRESHOLD,
                "status": {
                    "cpu": {
                        "usage": 0.03,
                        "total": os.cpu_count() or 1,
                        "memory_used": 1_195_626_496 + loaded * 700_000_000,
                        "memory_available": 24_080_883_712 - loaded * 700_000_000,
                        "memory_total": 25_276_510_208,
                    }
                },
            }
        }

    async def status(self, _: Request) -> Response:
        return JSONResponse(
            {"uptime": int(time.monotonic() - self.started_at), "workers": self.worker_status()}
        )

    async def cluster_auth(self, _: Request) -> Response:
        return JSONResponse({"auth": self.auth_enabled})

    async def address(self, _: Request) -> Response:
        return JSONResponse(self.supervisor_address)

    async def cluster_version(self, _: Request) -> Response:
        return JSONResponse({"version": VERSION, "full-revisionid": FULL_REVISION_ID})

    async def cluster_info(self, _: Request) -> Response:
        nodes = [
            {
                "node_type": "Supervisor",
                "ip_address": self.supervisor_address,
                "gpu_count": 0,
                "gpu_vram_total": 0,
            }
        ]
        if self.workers_ready():
            nodes.append(
                {
                    "node_type": "Worker",
                    "ip_address": self.worker_address,
                    "gpu_count": 0,
                    "gpu_vram_total": 0,
                }
            )
        return JSONResponse(nodes)

    async def cluster_devices(self, _: Request) -> Response:
        return JSONResponse(0)

    # ---- catalogue and registrations --------------------------------------------------------

    def _require_known_type(self, model_type: str, *, allow_empty: bool) -> None:
        if model_type in SUPPORTED_TYPES or (allow_empty and model_type in EMPTY_TYPES):
            return
        raise self.actor_error(400, f"Unsupported model type: {model_type}")

    async def list_registrations(self, request: Request) -> Response:
        model_type = request.path_params["model_type"]
        self._require_known_type(model_type, allow_empty=True)
        if model_type in EMPTY_TYPES:
            return JSONResponse([])
        detailed = request.query_params.get("detailed", "false").lower() in ("true", "1")
        if not detailed:
            return JSONResponse(
                [
                    {"model_name": name, "is_builtin": builtin}
                    for name, builtin in self.registry.names(model_type)
                ]
            )
        rows = []
        for name, _builtin in self.registry.names(model_type):
            found = self.registry.find(model_type, name)
            assert found is not None
            rows.append(self._detailed_registration(model_type, *found))
        return JSONResponse(rows)

    def _detailed_registration(
        self, model_type: str, family: dict[str, Any], builtin: bool
    ) -> dict[str, Any]:
        instances = [
            inst
            for inst in self.active().values()
            if inst.request.model_type == model_type and inst.request.model_name == family["model_name"]
        ]
        return {
            **copy.deepcopy(family),
            "is_builtin": builtin,
            "model_specs": [{**spec, "cache_status": False} for spec in family["model_specs"]],
            "download_hubs": sorted({spec["model_hub"] for spec in family["model_specs"]}),
            "model_version_count": len(family["model_specs"]),
            "model_instance_count": len(instances),
        }

    async def get_registration(self, request: Request) -> Response:
        model_type, name = request.path_params["model_type"], request.path_params["model_name"]
        self._require_known_type(model_type, allow_empty=True)
        found = self.registry.find(model_type, name)
        if found is None:
            raise self.actor_error(400, f"Model {name} not found")
        family, builtin = found
        return JSONResponse({**copy.deepcopy(family), "is_builtin": builtin})

    async def register_model(self, request: Request) -> Response:
        model_type = request.path_params["model_type"]
        body = await json_body(request)
        if not isinstance(body, dict) or "model" not in body:
            raise missing_field("body", "model", body)
        if not isinstance(body["model"], str):
            raise wrong_type("body", "model", "string", body["model"])
        self._require_known_type(model_type, allow_empty=False)
        try:
            family = parse_custom_spec(model_type, body["model"])
            self.registry.register(model_type, family, bool(body.get("persist", False)))
        except RegistrationError as exc:
            raise self.actor_error(exc.status, exc.message) from exc
        return JSONResponse(None)

    async def unregister_model(self, request: Request) -> Response:
        model_type, name = request.path_params["model_type"], request.path_params["model_name"]
        self._require_known_type(model_type, allow_empty=False)
        self.registry.unregister(model_type, name)
        return JSONResponse(None)

    async def llm_engines(self, request: Request) -> Response:
        return self._engines(LLM, request.path_params["model_name"])

    async def typed_engines(self, request: Request) -> Response:
        model_type = request.path_params["model_type"]
        self._require_known_type(model_type, allow_empty=True)
        return self._engines(model_type, request.path_params["model_name"])

    def _engines(self, model_type: str, name: str) -> Response:
        found = self.registry.find(model_type, name) if model_type in SUPPORTED_TYPES else None
        return JSONResponse(engine_params(model_type, found[0]) if found else None)

    # ---- model lifecycle ----------------------------------------------------------------------

    def _launch_request(self, payload: dict[str, Any]) -> LaunchRequest:
        model_name = payload.get("model_name")
        model_type = payload.get("model_type") or LLM
        model_engine = payload.get("model_engine")
        if not model_name:
            raise ApiError(400, "Invalid input. Please specify the `model_name` field.")
        if not model_engine and model_type == LLM:
            raise ApiError(400, "Invalid input. Please specify the `model_engine` field.")
        for name in ("model_name", "model_type", "model_engine", "model_format", "quantization"):
            if payload.get(name) is not None and not isinstance(payload[name], str):
                raise wrong_type("body", name, "string", payload[name])
        replica = payload.get("replica", 1)
        if not isinstance(replica, int) or isinstance(replica, bool) or replica < 1:
            raise wrong_type("body", "replica", "integer", replica)
        gpu_idx = payload.get("gpu_idx")
        gpus = [gpu_idx] if isinstance(gpu_idx, int) else gpu_idx
        if gpus and len(gpus) % replica:
            raise ApiError(400, "Invalid input. Allocated gpu must be a multiple of replica.")
        model_uid = payload.get("model_uid")
        if model_uid is None:
            suffix = "".join(random.choices(string.ascii_letters + string.digits, k=8))
            model_uid = model_name if model_name not in self.active() else f"{model_name}-{suffix}"
        if not isinstance(model_uid, str) or not self._valid_uid(model_uid):
            raise self.actor_error(
                400, "The model UID is invalid. Please specify the model UID by 0 < length <= 100."
            )
        request_limits = payload.get("request_limits")
        if isinstance(request_limits, int) and request_limits < 0:
            raise self.actor_error(400, "The `request_limits` parameter must be greater or equal than 0.")
        if model_uid in self.active():
            raise self.actor_error(400, f"Model is already in the model list, uid: {model_uid}")
        return LaunchRequest(
            model_uid=model_uid,
            model_name=str(model_name),
            model_type=str(model_type),
            model_engine=model_engine,
            model_format=payload.get("model_format"),
            model_size_in_billions=payload.get("model_size_in_billions"),
            quantization=payload.get("quantization"),
            replica=replica,
        )

    @staticmethod
    def _valid_uid(uid: str) -> bool:
        stripped = uid.strip()
        # "<uid>-rep<N>" names a replica internally, so Xinference refuses it as a uid.
        return 0 < len(stripped) <= 100 and re.search(r"-rep\d+$", stripped) is None

    async def launch_model(self, request: Request) -> Response:
        launch = self._launch_request(await object_body(request))
        wait_ready = request.query_params.get("wait_ready", "true").lower() not in FALSE_QUERY_VALUES
        # Each model runs in its own sub-pool of the worker, on a port of its own.
        instance = ModelInstance(request=launch, address=f"0.0.0.0:{random.randint(20000, 65000)}")
        self.instances[launch.model_uid] = instance
        instance.log("INFO", f"Launch model {launch.model_name} as {launch.model_uid}")
        task = asyncio.get_running_loop().create_task(self._run_launch(instance))
        instance.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda finished: self._launch_task_done(instance, finished))
        if wait_ready:
            await instance.done.wait()
            if instance.failure is not None:
                raise instance.failure
        return JSONResponse({"model_uid": launch.model_uid})

    def _plan(self, launch: LaunchRequest) -> LaunchPlan:
        if not self.workers_ready():
            raise self.actor_error(503, "No available worker found")
        if launch.model_type not in SUPPORTED_TYPES:
            raise self.actor_error(400, f"Unsupported model type: {launch.model_type}")
        found = self.registry.find(launch.model_type, launch.model_name)
        if found is None:
            available = [name for name, _ in self.registry.names(launch.model_type)]
            raise self.actor_error(
                400, unknown_model_message(launch.model_type, launch.model_name, available)
            )
        engine = launch.model_engine or DEFAULT_ENGINE.get(launch.model_type, "")
        try:
            return match_spec(
                launch.model_type,
                found[0],
                engine,
                launch.model_format,
                launch.model_size_in_billions,
                launch.quantization,
            )
        except ValueError as exc:
            raise self.actor_error(400, str(exc)) from exc

    async def _run_launch(self, instance: ModelInstance) -> None:
        launch = instance.request
        try:
            instance.plan = self._plan(launch)
            async with self.launch_slots():
                instance.status = Status.LOADING
                instance.loading_since = time.monotonic()
                await asyncio.sleep(self.behaviour.launch_latency)
            if self._launch_injected_to_fail(launch):
                raise self.actor_error(
                    500,
                    f"Failed to launch model {launch.model_uid}: RuntimeError: injected launch failure "
                    "(DIFYSTACK_FAKE_FAIL)",
                )
            instance.status = Status.READY
            instance.log("INFO", f"Model {launch.model_uid} is ready")
            instance.held_by_worker = not self._worker_restarts_after(launch)
        except ApiError as exc:
            self._launch_failed(instance, exc)

    def _launch_injected_to_fail(self, launch: LaunchRequest) -> bool:
        if any(self.behaviour.fails("launch", t) for t in (launch.model_name, launch.model_uid)):
            return True
        # A transient failure (a download hiccup, an OOM...): only the first attempt fails.
        for target in (launch.model_name, launch.model_uid):
            if self.behaviour.fails("launch-once", target) and target not in self._failed_once:
                self._failed_once.add(target)
                return True
        return False

    def _worker_restarts_after(self, launch: LaunchRequest) -> bool:
        for target in (launch.model_name, launch.model_uid):
            if self.behaviour.fails("worker-restart-once", target) and target not in self._restarted_once:
                self._restarted_once.add(target)
                return True
        return False

    def _launch_task_done(self, instance: ModelInstance, task: asyncio.Task[None]) -> None:
        # Runs even when the task was cancelled before its first step.
        self._tasks.discard(task)
        if not instance.finished:
            self._launch_failed(instance, ApiError(499, "Launch cancelled"))
        instance.done.set()

    def _launch_failed(self, instance: ModelInstance, error: ApiError) -> None:
        instance.failure = error
        instance.status = Status.ERROR
        instance.log("ERROR", str(error.detail))
        if instance.terminating:
            self.instances.pop(instance.uid, None)

    async def list_models(self, _: Request) -> Response:
        data = []
        for instance in self.ready_models():
            description = describe(instance)
            description.pop("n_worker")
            data.append(
                {"id": instance.uid, "object": "model", "created": 0, "owned_by": "xinference", **description}
            )
        return JSONResponse({"object": "list", "data": data})

    def _loaded(self, uid: str, *, not_found_status: int) -> ModelInstance:
        instance = self.instances.get(uid)
        if instance is None or instance.status not in ACTIVE_STATUSES:
            message = f"Model not found in the model list, uid: {uid}"
            if not_found_status == 404:
                message += f". Available model uids: {list(self.active())!r}"
            raise self.actor_error(not_found_status, message)
        if instance.status is not Status.READY:
            raise ApiError(
                503,
                f"Model is loading, please retry later: "
                f"Model {uid} is launching, not yet ready for inference",
                {"Retry-After": RETRY_AFTER_SECONDS},
            )
        return instance

    async def describe_model(self, request: Request) -> Response:
        instance = self._loaded(request.path_params["model_uid"], not_found_status=400)
        return JSONResponse(describe(instance))

    async def workers_info(self, _: Request) -> Response:
        # Each worker answers with the models it holds, keyed by replica uid.
        held = {
            f"{instance.uid}-rep{replica}": {"model_name": instance.request.model_name}
            for instance in self.ready_models()
            if instance.held_by_worker
            for replica in range(instance.request.replica)
        }
        workers = [{"work-ip": self.worker_address, "models": held}] if self.workers_ready() else []
        return JSONResponse(workers)

    async def terminate_model(self, request: Request) -> Response:
        uid = request.path_params["model_uid"]
        instance = self.instances.get(uid)
        if instance is None or instance.status not in ACTIVE_STATUSES:
            raise self.actor_error(400, f"Model not found in the model list, uid: {uid}")
        if instance.status is Status.READY:
            self.instances.pop(uid)
        else:
            instance.terminating = True
            await self._cancel(instance)
        return JSONResponse(None)

    async def cancel_launch(self, request: Request) -> Response:
        uid = request.path_params["model_uid"]
        instance = self.instances.get(uid)
        if instance is None or instance.status not in ACTIVE_STATUSES:
            raise self.actor_error(400, f"Model {uid} has not been launched yet")
        if instance.status is not Status.READY:
            await self._cancel(instance)
        return JSONResponse(None)

    @staticmethod
    async def _cancel(instance: ModelInstance) -> None:
        if instance.task is not None and not instance.task.done():
            instance.task.cancel()
        await instance.done.wait()

    async def list_instances(self, request: Request) -> Response:
        name, uid = request.query_params.get("model_name"), request.query_params.get("model_uid")
        rows = []
        for instance in sorted(self.instances.values(), key=lambda inst: inst.uid):
            if (uid and instance.uid != uid) or (name and instance.request.model_name != name):
                continue
            rows.append(self._instance_info(instance))
        return JSONResponse(rows)

    def _instance_info(self, instance: ModelInstance) -> dict[str, Any]:
        abilities: list[str] = []
        if instance.plan is not None:
            abilities = describe(instance)["model_ability"]
        return {
            "model_name": instance.request.model_name,
            "model_uid": instance.uid,
            "model_version": None,
            "model_ability": abilities,
            "replica": instance.request.replica,
            "status": instance.status.value,
            "instance_created_ts": instance.created_ts,
            "n_worker": 1,
            "replica_statuses": [
                {
                    "replica_id": i,
                    "replica_model_uid": f"{instance.uid}-rep{i}",
                    "worker_address": self.worker_address,
                    "status": instance.status.value,
                    "model_state": "ready" if instance.status is Status.READY else "",
                    "created_ts": instance.created_ts,
                    "error_message": str(instance.failure.detail) if instance.failure else None,
                    "replica_uid": None,
                    "gpu_idx": None,
                }
                for i in range(instance.request.replica)
            ],
        }

    async def launch_progress(self, request: Request) -> Response:
        uid = request.path_params["model_uid"]
        instance = self.instances.get(uid)
        progress, stage = self._progress(instance)
        replica = {
            "replica_id": 0,
            "replica_model_uid": f"{uid}-rep0",
            "progress": progress,
            "stage": stage,
            "info": STAGE_INFO.get(stage, ""),
            "updated_at": float(instance.created_ts) if instance else time.time(),
            "download_files": [],
            "dependency_install_completed": None,
            "dependency_install_total": None,
            "dependency_install_plan": None,
            "dependency_install_status": "skipped",
        }
        return JSONResponse(
            {"progress": progress, "stage": stage, "download_files": [], "replicas": [replica]}
        )

    def _progress(self, instance: ModelInstance | None) -> tuple[float, str]:
        if instance is None or instance.status in (Status.CREATING, Status.ERROR):
            return 0.0, "pending"
        if instance.status is Status.READY:
            return 1.0, "loading"  # 4.1.0 keeps the last stage once the model is ready
        latency = self.behaviour.launch_latency or 1.0
        elapsed = time.monotonic() - (instance.loading_since or time.monotonic())
        fraction = round(min(0.99, elapsed / latency), 3)
        return fraction, "downloading" if fraction < 0.5 else "loading"

    async def model_events(self, request: Request) -> Response:
        instance = self.instances.get(request.path_params["model_uid"])
        return JSONResponse(instance.events if instance else [])

    # ---- inference ------------------------------------------------------------------------------

    async def _inference_target(self, request: Request, kind: str) -> tuple[ModelInstance, dict[str, Any]]:
        body = await json_body(request)
        if not isinstance(body, dict) or not body.get("model"):
            raise missing_field("body", "model", body)
        instance = self._loaded(str(body["model"]), not_found_status=404)
        if self.behaviour.fails("infer", instance.uid):
            raise self.actor_error(
                500, f"Model {instance.uid} failed to run inference: injected failure (infer:{instance.uid})"
            )
        model_type = instance.request.model_type
        if kind == EMBEDDING and model_type != EMBEDDING:
            assert instance.plan is not None
            raise self.actor_error(
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
        return instance, body

    async def embeddings(self, request: Request) -> Response:
        instance, body = await self._inference_target(request, EMBEDDING)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, "Invalid input: `input` must be a string or a non-empty list of strings.")
        assert instance.plan is not None
        name, dimensions = instance.plan.family["model_name"], int(instance.plan.family["dimensions"])
        tokens = sum(count_tokens(text) + 2 for text in texts)
        data = [
            {"index": i, "object": "embedding", "embedding": embedding_vector(name, text, dimensions)}
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
        prompt = next(
            (
                message_text(m.get("content"))
                for m in reversed(messages)
                if isinstance(m, dict) and m.get("role") == "user"
            ),
            "",
        )
        prompt_tokens = sum(
            count_tokens(message_text(m.get("content"))) + 4 for m in messages if isinstance(m, dict)
        )
        words, finish = reply_words(instance.request.model_name, prompt, body.get("max_tokens"))
        common = {
            "id": random_id("chatcmpl-"),
            "created": int(time.time()),
            "model": served_model_field(instance, self.home),
            "system_fingerprint": "b0-unknown",
        }
        usage = {
            "completion_tokens": len(words),
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(words),
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        if body.get("stream"):
            return StreamingResponse(
                self._chat_stream(common, words, finish, usage, body), media_type="text/event-stream"
            )
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
    async def _chat_stream(
        common: dict[str, Any], words: list[str], finish: str, usage: dict[str, Any], body: dict[str, Any]
    ) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            choice = {"finish_reason": finish_reason, "index": 0, "delta": delta}
            return {"choices": [choice], **common, "object": "chat.completion.chunk"}

        yield sse(chunk({"role": "assistant", "content": None}, None))
        for i, word in enumerate(words):
            yield sse(chunk({"content": word if i == 0 else f" {word}"}, None))
        last = chunk({}, finish)
        stream_options = body.get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            last["usage"] = usage
        yield sse(last)
        yield "data: [DONE]\n\n"

    async def completions(self, request: Request) -> Response:
        instance, body = await self._inference_target(request, "generate")
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise missing_field("body", "prompt", body)
        words, finish = reply_words(instance.request.model_name, prompt, body.get("max_tokens", 16))
        prompt_tokens = count_tokens(prompt)
        common = {
            "id": random_id("cmpl-"),
            "created": int(time.time()),
            "model": served_model_field(instance, self.home),
        }
        usage = {
            "completion_tokens": len(words),
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + len(words),
        }
        text = " " + " ".join(words)
        if body.get("stream"):
            return StreamingResponse(
                self._completion_stream(common, words, finish), media_type="text/event-stream"
            )
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        return JSONResponse({**common, "object": "text_completion", "choices": [choice], "usage": usage})

    @staticmethod
    async def _completion_stream(common: dict[str, Any], words: list[str], finish: str) -> AsyncIterator[str]:
        for i, word in enumerate(words):
            reason = finish if i == len(words) - 1 else None
            choice = {"text": f" {word}", "index": 0, "logprobs": None, "finish_reason": reason}
            yield sse({**common, "object": "text_completion", "choices": [choice]})
        yield "data: [DONE]\n\n"

    async def rerank(self, request: Request) -> Response:
        instance, body = await self._inference_target(request, RERANK)
        query, documents = body.get("query"), body.get("documents")
        if not isinstance(query, str):
            raise missing_field("body", "query", body)
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            raise missing_field("body", "documents", body)
        name = instance.request.model_name
        scored = sorted(
            ((relevance(name, query, doc), i, doc) for i, doc in enumerate(documents)),
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
        input_tokens = count_tokens(query) * len(documents) + sum(count_tokens(d) for d in documents)
        meta = {
            "api_version": None,
            "billed_units": None,
            "tokens": {"input_tokens": input_tokens, "output_tokens": 0},
            "warnings": None,
        }
        return JSONResponse({"id": str(uuid.uuid4()), "results": results, "meta": meta})

    # ---- auth bootstrap -------------------------------------------------------------------------

    def _auth_store(self) -> AuthStore:
        if self.auth is None:
            raise ApiError(400, "Authentication is not enabled on this server.")
        return self.auth

    async def setup_status(self, _: Request) -> Response:
        needs_setup = self.auth is not None and not self.auth.has_account()
        return JSONResponse(
            {
                "needs_setup": needs_setup,
                "initialized": not needs_setup,
                "password_min_length": PASSWORD_MIN_LENGTH,
            }
        )

    async def setup(self, request: Request) -> Response:
        store = self._auth_store()
        body = await json_body(request)
        for name in ("setup_token", "username", "password"):
            if not isinstance(body, dict) or not isinstance(body.get(name), str):
                raise missing_field("body", name, body)
        assert isinstance(body, dict)
        if store.has_account():
            raise ApiError(403, "Setup already completed; an account already exists.")
        if not hmac.compare_digest(body["setup_token"], store.setup_token()):
            raise ApiError(403, "Invalid setup token.")
        if len(body["password"]) < PASSWORD_MIN_LENGTH:
            raise ApiError(400, f"Password must be at least {PASSWORD_MIN_LENGTH} characters")
        user_id = store.create_first_account(body["username"], body["password"])
        return JSONResponse({"id": user_id, "username": body["username"]}, status_code=201)

    async def login(self, request: Request) -> Response:
        store = self._auth_store()
        body = await json_body(request)
        if not isinstance(body, dict):
            form = parse_qs((await request.body()).decode("utf-8", "replace"))
            body = {key: values[0] for key, values in form.items()}
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise missing_field("body", "username" if not isinstance(username, str) else "password", body)
        if store.user_id(username, password) is None:
            raise ApiError(401, "Incorrect username or password", {"WWW-Authenticate": "Bearer"})
        return JSONResponse(self._tokens(store, username))

    def _tokens(self, store: AuthStore, username: str) -> dict[str, Any]:
        return {
            "access_token": store.issue_token(username, "access", self.token_minutes * 60),
            "refresh_token": store.issue_token(username, "refresh", 7 * 24 * 3600),
            "token_type": "bearer",
        }

    async def refresh(self, request: Request) -> Response:
        store = self._auth_store()
        body = await object_body(request)
        username = store.token_subject(str(body.get("refresh_token", "")), "refresh")
        if username is None:
            raise ApiError(401, "Could not validate credentials", {"WWW-Authenticate": "Bearer"})
        return JSONResponse(self._tokens(store, username))

    async def create_key(self, request: Request) -> Response:
        store = self._auth_store()
        caller = self.caller(request)
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise missing_field("body", "name", body)
        user_id = store.user_id(caller.username or "") or 0
        key = store.create_key(body["name"], user_id, body.get("expires_at"))
        return JSONResponse(key, status_code=201)

    async def list_keys(self, _: Request) -> Response:
        return JSONResponse(self._auth_store().list_keys())

    async def delete_key(self, request: Request) -> Response:
        raw_id = request.path_params["key_id"]
        if not raw_id.isdigit() or not self._auth_store().delete_key(int(raw_id)):
            raise ApiError(404, "API key not found")
        return JSONResponse(None)

    # ---- routing --------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        public, query, admin = Access.PUBLIC, Access.QUERY, Access.ADMIN
        table: list[tuple[str, Endpoint, str, Access]] = [
            ("/status", self.status, "GET", public),
            ("/v1/address", self.address, "GET", public),
            ("/v1/cluster/auth", self.cluster_auth, "GET", public),
            ("/v1/cluster/version", self.cluster_version, "GET", admin),
            ("/v1/cluster/info", self.cluster_info, "GET", admin),
            ("/v1/cluster/devices", self.cluster_devices, "GET", admin),
            ("/v1/workers", self.workers_info, "GET", admin),
            ("/v1/admin/setup/status", self.setup_status, "GET", public),
            ("/v1/admin/setup", self.setup, "POST", public),
            ("/token", self.login, "POST", public),
            ("/v1/auth/refresh", self.refresh, "POST", public),
            ("/v1/admin/keys", self.create_key, "POST", admin),
            ("/v1/admin/keys", self.list_keys, "GET", admin),
            ("/v1/admin/keys/{key_id}", self.delete_key, "DELETE", admin),
            ("/v1/models", self.list_models, "GET", query),
            ("/v1/models", self.launch_model, "POST", admin),
            ("/v1/models/instances", self.list_instances, "GET", query),
            ("/v1/models/{model_uid}", self.describe_model, "GET", query),
            ("/v1/models/{model_uid}", self.terminate_model, "DELETE", admin),
            ("/v1/models/{model_uid}/progress", self.launch_progress, "GET", query),
            ("/v1/models/{model_uid}/events", self.model_events, "GET", query),
            ("/v1/models/{model_uid}/cancel", self.cancel_launch, "POST", admin),
            ("/v1/model_registrations/{model_type}", self.list_registrations, "GET", query),
            ("/v1/model_registrations/{model_type}", self.register_model, "POST", admin),
            ("/v1/model_registrations/{model_type}/{model_name}", self.get_registration, "GET", query),
            ("/v1/model_registrations/{model_type}/{model_name}", self.unregister_model, "DELETE", admin),
            ("/v1/engines/{model_name}", self.llm_engines, "GET", query),
            ("/v1/engines/{model_type}/{model_name}", self.typed_engines, "GET", query),
            ("/v1/embeddings", self.embeddings, "POST", query),
            ("/v1/chat/completions", self.chat_completions, "POST", query),
            ("/v1/completions", self.completions, "POST", query),
            ("/v1/rerank", self.rerank, "POST", query),
        ]
        routes = [
            Route(path, self.guard(access, endpoint), methods=[method])
            for path, endpoint, method, access in table
        ]
        return [*self.journal.routes(), *routes]


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    """A fresh fake Xinference 4.1.0 (all state lives in this app)."""
    fake = FakeXinference(behaviour, env)
    app = Starlette(
        routes=fake.routes(),
        middleware=[Middleware(JournalMiddleware, journal=fake.journal)],
        exception_handlers={ApiError: api_error_response, HTTPException: http_error_response},
        lifespan=fake.lifespan,
    )
    app.state.fake = fake
    return app
