"""Fake LocalAI server mimicking LocalAI v4.9.0 (the version difystack pins).

It serves the HTTP contract a controller and Dify's LocalAI plugin rely on:

- health: ``GET /healthz`` (always 200), ``GET /readyz`` (503 ``starting`` until startup
  preload is done and ``DIFYSTACK_FAKE_READY_DELAY`` has passed), ``GET /version``;
- models: ``GET /v1/models`` and ``GET /models`` list the configured model names;
- gallery: ``GET /models/available``, ``GET /models/galleries``, ``POST /models/apply``,
  ``POST /models/delete/{name}``, ``GET /models/jobs[/{uuid}]``, ``POST /models/reload``.
  Installs and deletions are jobs run one at a time, each taking
  ``DIFYSTACK_FAKE_LAUNCH_LATENCY`` seconds;
- inference (OpenAI shapes): chat completions (plain and SSE streaming), completions,
  embeddings (with and without the ``/v1`` prefix) and Jina-style ``POST /v1/rerank``.

The gallery is a small built-in index (no network). Weight downloads are simulated by writing
small placeholder files into the models directory, so a model "installed" by the fake looks
on disk like one installed by the real server. Embeddings are deterministic unit vectors whose
dimension follows the model weights, including the gallery's ``bert-embeddings`` trap (a
Llama-3.2-1B used as embedder, 2048 dimensions).

Environment variables (same names as the real server):
``LOCALAI_MODELS_PATH``/``MODELS_PATH`` (default ``<cwd>/models``; the real container image
sets ``/models``), ``LOCALAI_CONFIG_FILE``/``CONFIG_FILE`` (YAML list of model configs),
``LOCALAI_PRELOAD_MODELS``/``PRELOAD_MODELS`` (JSON list of ``/models/apply`` bodies),
``LOCALAI_PRELOAD_MODELS_CONFIG``/``PRELOAD_MODELS_CONFIG`` (YAML file with the same list),
``LOCALAI_GALLERIES``/``GALLERIES`` (JSON list of galleries), ``LOCALAI_API_KEY``/``API_KEY``
(comma-separated keys), ``LOCALAI_DISABLE_GALLERY_ENDPOINT``/``DISABLE_GALLERY_ENDPOINT``.

Failure kinds understood in ``DIFYSTACK_FAKE_FAIL``: ``never-ready``,
``apply[:<gallery id|install name>]``, ``download[:<file name>]``, ``delete[:<model name>]``,
``infer[:<model name>]``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import logging
import math
import random
import re
import shutil
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common_old import JOURNAL_PATH, JournalMiddleware, RequestJournal, json_body

log = logging.getLogger(__name__)

LOCALAI_VERSION = "v4.9.0"
LOCALAI_COMMIT = "f7ad3f70"

DEFAULT_GALLERIES: tuple[dict[str, Any], ...] = (
    {
        "name": "localai",
        "url": "https://index.localai.io/models",
        "mirrors": ["github:mudler/LocalAI/gallery/index.yaml@master"],
    },
)

# Routes that never need an API key (``core/http/auth/public_routes.go``), plus the journal,
# which is the fake's own test hook.
PUBLIC_GET_PATHS = frozenset({"/healthz", "/readyz", "/", "/app", "/browse", "/login", "/favicon.svg"})
PUBLIC_GET_PREFIXES = ("/swagger", "/assets/", "/static/", "/locales/", "/app/", "/api/auth/")

WEIGHT_SUFFIXES = (".gguf", ".ggml", ".bin", ".safetensors", ".onnx", ".pt")
# Backends that compute embeddings / scores themselves, without llama.cpp's embeddings switch.
NATIVE_EMBEDDING_BACKENDS = frozenset({"sentencetransformers", "huggingface-embeddings", "bert-embeddings"})
RERANK_BACKENDS = frozenset({"rerankers"})
BACKEND_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")

# Dimension of the vectors an embedding model produces, by a fragment of its weights' name
# (``parameters.model``). First match wins; unknown models get DEFAULT_EMBEDDING_DIMENSIONS.
EMBEDDING_DIMENSIONS: tuple[tuple[str, int], ...] = (
    ("granite-embedding-107m", 384),
    ("granite-embedding-278m", 768),
    ("minilm-l6", 384),
    ("minilm-l12", 384),
    ("nomic-embed-text", 768),
    ("bge-small", 384),
    ("bge-base", 768),
    ("bge-large", 1024),
    ("bge-m3", 1024),
    ("mxbai-embed-large", 1024),
    ("e5-small", 384),
    ("e5-base", 768),
    ("e5-large", 1024),
    ("jina-embeddings-v2-base", 768),
    ("qwen3-embedding-0.6b", 1024),
    ("qwen3-0.6b", 1024),
    ("llama-3.2-1b", 2048),
    ("llama-3.2-3b", 3072),
)
DEFAULT_EMBEDDING_DIMENSIONS = 384


# --------------------------------------------------------------------------------------------
# Built-in gallery
# --------------------------------------------------------------------------------------------

GALLERY_FILE_URL = "github:mudler/LocalAI/gallery/{}.yaml@master"
RAW_GALLERY_FILE_URL = "https://raw.githubusercontent.com/mudler/LocalAI/master/gallery/{}.yaml"

_QWEN3_BASE_CONFIG = """\
backend: llama-cpp
context_size: 8192
f16: true
mmap: true
template:
  use_tokenizer_template: true
options:
- use_jinja:true
stopwords:
- <|im_end|>
- <|endoftext|>
known_usecases:
- chat
- completion
"""

_LLAMA32_BASE_CONFIG = """\
backend: llama-cpp
context_size: 8192
f16: true
mmap: true
template:
  use_tokenizer_template: true
options:
- use_jinja:true
stopwords:
- <|eot_id|>
- <|end_of_text|>
known_usecases:
- chat
- completion
"""

# Gallery-format files (name/description/config_file/files) a gallery entry's ``url`` points at.
GALLERY_BASE_FILES: dict[str, dict[str, Any]] = {
    "virtual": {"name": "virtual", "description": "A base model definition\n", "license": "N/A"},
    "sentencetransformers": {
        "name": "sentencetransformers",
        "description": "Dense vector representations with sentence-transformers.\n",
        "config_file": "backend: sentencetransformers\n",
    },
    "qwen3": {"name": "qwen3", "config_file": _QWEN3_BASE_CONFIG},
    "llama3.2-quantized": {"name": "llama3.2-quantized", "config_file": _LLAMA32_BASE_CONFIG},
}

_LLAMA_32_1B_FILE = {
    "filename": "llama-3.2-1b-instruct-q4_k_m.gguf",
    "sha256": "",
    "uri": "huggingface://hugging-quants/Llama-3.2-1B-Instruct-Q4_K_M-GGUF/llama-3.2-1b-instruct-q4_k_m.gguf",
}

GALLERY_ENTRIES: tuple[dict[str, Any], ...] = (
    {
        "name": "qwen3-0.6b",
        "url": GALLERY_FILE_URL.format("qwen3"),
        "description": "Qwen3 0.6B, a small dense chat model with thinking and non-thinking modes.\n",
        "license": "apache-2.0",
        "urls": ["https://huggingface.co/Qwen/Qwen3-0.6B"],
        "icon": "",
        "tags": ["llm", "gguf", "gpu", "cpu", "qwen", "qwen3"],
        "overrides": {"parameters": {"model": "Qwen_Qwen3-0.6B-Q4_K_M.gguf"}},
        "files": [
            {
                "filename": "Qwen_Qwen3-0.6B-Q4_K_M.gguf",
                "sha256": "",
                "uri": "huggingface://bartowski/Qwen_Qwen3-0.6B-GGUF/Qwen_Qwen3-0.6B-Q4_K_M.gguf",
            }
        ],
    },
    {
        "name": "llama-3.2-1b-instruct:q4_k_m",
        "url": GALLERY_FILE_URL.format("llama3.2-quantized"),
        "description": "Meta Llama 3.2 1B Instruct, quantized to Q4_K_M.\n",
        "license": "llama3.2",
        "urls": ["https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct"],
        "icon": "",
        "tags": ["llm", "gguf", "gpu", "cpu", "llama3.2"],
        "overrides": {"parameters": {"model": _LLAMA_32_1B_FILE["filename"]}},
        "files": [dict(_LLAMA_32_1B_FILE)],
    },
    {
        "name": "granite-embedding-107m-multilingual",
        "url": GALLERY_FILE_URL.format("virtual"),
        "description": "IBM Granite 107M multilingual text embedding model (384 dimensions).\n",
        "license": "apache-2.0",
        "urls": ["https://huggingface.co/ibm-granite/granite-embedding-107m-multilingual"],
        "icon": "",
        "tags": ["embeddings", "gguf", "gpu", "cpu"],
        "overrides": {
            "backend": "llama-cpp",
            "embeddings": True,
            "known_usecases": ["embeddings"],
            "parameters": {"model": "granite-embedding-107m-multilingual-f16.gguf"},
        },
        "files": [
            {
                "filename": "granite-embedding-107m-multilingual-f16.gguf",
                "sha256": "3fc99928632fcecad589c401ec33bbba86b51c457e9813e3a1cb801ff4106e21",
                "uri": "huggingface://bartowski/granite-embedding-107m-multilingual-GGUF/"
                "granite-embedding-107m-multilingual-f16.gguf",
            }
        ],
    },
    {
        "name": "all-MiniLM-L6-v2",
        "url": GALLERY_FILE_URL.format("sentencetransformers"),
        "description": "sentence-transformers all-MiniLM-L6-v2 (384 dimensions), "
        "downloaded by the backend on first use.\n",
        "license": "apache-2.0",
        "urls": ["https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2"],
        "icon": "",
        "tags": ["embeddings", "python", "gpu", "cpu"],
        "overrides": {
            "embeddings": True,
            "known_usecases": ["embeddings"],
            "parameters": {"model": "all-MiniLM-L6-v2"},
        },
        "files": [],
    },
    {
        "name": "nomic-embed-text-v1.5",
        "url": GALLERY_FILE_URL.format("virtual"),
        "description": "Nomic text embedding model v1.5 (768 dimensions).\n",
        "license": "apache-2.0",
        "urls": ["https://huggingface.co/nomic-ai/nomic-embed-text-v1.5"],
        "icon": "",
        "tags": ["embeddings", "gguf", "gpu", "cpu"],
        "overrides": {
            "backend": "llama-cpp",
            "embeddings": True,
            "known_usecases": ["embeddings"],
            "parameters": {"model": "nomic-embed-text-v1.5.f16.gguf"},
        },
        "files": [
            {
                "filename": "nomic-embed-text-v1.5.f16.gguf",
                "sha256": "",
                "uri": "huggingface://nomic-ai/nomic-embed-text-v1.5-GGUF/nomic-embed-text-v1.5.f16.gguf",
            }
        ],
    },
    {
        "name": "jina-reranker-v1-base-en",
        "url": GALLERY_FILE_URL.format("virtual"),
        "description": "Jina reranker v1 base (English), served by the rerankers backend.\n",
        "license": "apache-2.0",
        "urls": ["https://huggingface.co/jinaai/jina-reranker-v1-base-en"],
        "icon": "",
        "tags": ["reranker", "python", "gpu", "cpu"],
        "overrides": {
            "backend": "rerankers",
            "reranking": True,
            "known_usecases": ["rerank"],
            "parameters": {"model": "jinaai/jina-reranker-v1-base-en"},
        },
        "files": [],
    },
    {
        # The trap: despite its name this is Llama-3.2-1B-Instruct used as an embedder.
        "name": "bert-embeddings",
        "url": GALLERY_FILE_URL.format("virtual"),
        "description": "Llama-3.2-1B-Instruct used as an embedding model (2048 dimensions).\n",
        "license": "llama3.2",
        "urls": ["https://huggingface.co/hugging-quants/Llama-3.2-1B-Instruct-Q4_K_M-GGUF"],
        "icon": "",
        "tags": ["embeddings", "gguf", "gpu", "cpu"],
        "overrides": {
            "backend": "llama-cpp",
            "embeddings": True,
            "parameters": {"model": _LLAMA_32_1B_FILE["filename"]},
        },
        "files": [dict(_LLAMA_32_1B_FILE)],
    },
)


def gallery_base_file(url: str) -> dict[str, Any] | None:
    """The built-in gallery-format file a ``github:``/raw GitHub URL points at, if known."""
    for name, content in GALLERY_BASE_FILES.items():
        if url in (GALLERY_FILE_URL.format(name), RAW_GALLERY_FILE_URL.format(name)):
            return copy.deepcopy(content)
    return None


def find_gallery_entry(galleries: tuple[dict[str, Any], ...], gallery_id: str) -> dict[str, Any] | None:
    """Resolve ``<gallery>@<name>`` or a bare ``<name>`` (first match wins, case-insensitive)."""
    if not galleries:
        return None
    gallery_name, _, model_name = gallery_id.rpartition("@")
    if gallery_name and gallery_name.lower() != str(galleries[0].get("name", "")).lower():
        return None
    for entry in GALLERY_ENTRIES:
        if entry["name"].lower() == model_name.lower():
            return copy.deepcopy(entry)
    return None


def entry_backend(entry: Mapping[str, Any]) -> str:
    backend = entry.get("overrides", {}).get("backend")
    if backend:
        return str(backend)
    base = gallery_base_file(entry["url"]) or {}
    parsed = yaml.safe_load(base.get("config_file") or "") or {}
    return str(parsed.get("backend") or "")


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def _env(env: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def _is_true(value: str) -> bool:
    return value.lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    models_path: Path
    config_file: Path | None
    preload_requests: tuple[dict[str, Any], ...]
    galleries: tuple[dict[str, Any], ...]
    api_keys: frozenset[str]
    gallery_endpoints: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        models_path = Path(_env(env, "LOCALAI_MODELS_PATH", "MODELS_PATH") or Path.cwd() / "models")
        config_file = _env(env, "LOCALAI_CONFIG_FILE", "CONFIG_FILE")
        keys = _env(env, "LOCALAI_API_KEY", "API_KEY")
        return cls(
            models_path=models_path.absolute(),
            config_file=Path(config_file) if config_file else None,
            preload_requests=_preload_requests(env),
            galleries=_galleries(env),
            api_keys=frozenset(key.strip() for key in keys.split(",") if key.strip()),
            gallery_endpoints=not _is_true(
                _env(env, "LOCALAI_DISABLE_GALLERY_ENDPOINT", "DISABLE_GALLERY_ENDPOINT")
            ),
        )


def _preload_requests(env: Mapping[str, str]) -> tuple[dict[str, Any], ...]:
    requests: list[Any] = []
    inline = _env(env, "LOCALAI_PRELOAD_MODELS", "PRELOAD_MODELS")
    if inline:
        try:
            requests.extend(json.loads(inline))
        except (ValueError, TypeError) as exc:
            log.error("localai: cannot parse PRELOAD_MODELS as a JSON list: %s", exc)
    config_path = _env(env, "LOCALAI_PRELOAD_MODELS_CONFIG", "PRELOAD_MODELS_CONFIG")
    if config_path:
        try:
            requests.extend(yaml.safe_load(Path(config_path).read_text()) or [])
        except (OSError, yaml.YAMLError, TypeError) as exc:
            log.error("localai: cannot read PRELOAD_MODELS_CONFIG %s: %s", config_path, exc)
    return tuple(request for request in requests if isinstance(request, dict))


def _galleries(env: Mapping[str, str]) -> tuple[dict[str, Any], ...]:
    raw = _env(env, "LOCALAI_GALLERIES", "GALLERIES")
    if not raw:
        return copy.deepcopy(DEFAULT_GALLERIES)
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        log.error("localai: cannot parse GALLERIES as JSON: %s", exc)
        return copy.deepcopy(DEFAULT_GALLERIES)
    return tuple(gallery for gallery in parsed if isinstance(gallery, dict))


# --------------------------------------------------------------------------------------------
# Model configurations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    name: str
    data: dict[str, Any]

    @property
    def backend(self) -> str:
        return str(self.data.get("backend") or "")

    @property
    def model_reference(self) -> str:
        parameters = self.data.get("parameters") or {}
        return str(parameters.get("model") or "") if isinstance(parameters, dict) else ""

    @property
    def embeddings(self) -> bool:
        return bool(self.data.get("embeddings"))

    @property
    def reranking(self) -> bool:
        return bool(self.data.get("reranking"))

    @property
    def usecases(self) -> frozenset[str]:
        raw = self.data.get("known_usecases") or []
        items = raw.split(",") if isinstance(raw, str) else raw
        return frozenset(str(item).strip().lower() for item in items)

    def can_embed(self) -> bool:
        return self.embeddings or self.backend in NATIVE_EMBEDDING_BACKENDS

    def can_rerank(self) -> bool:
        return self.reranking or self.backend in RERANK_BACKENDS

    def can_generate(self) -> bool:
        # llama.cpp loaded in embeddings mode (and the Python embedding/rerank backends)
        # cannot produce text.
        return not (
            self.embeddings
            or self.reranking
            or self.backend in NATIVE_EMBEDDING_BACKENDS
            or self.backend in RERANK_BACKENDS
        )

    def serves(self, usecase: str) -> bool:
        if usecase == "embeddings":
            return self.can_embed()
        if usecase == "rerank":
            return self.can_rerank()
        return self.can_generate()

    def embedding_dimensions(self) -> int:
        reference = self.model_reference.lower().replace("_", "-")
        for fragment, dimensions in EMBEDDING_DIMENSIONS:
            if fragment in reference:
                return dimensions
        return DEFAULT_EMBEDDING_DIMENSIONS


def config_problem(data: Any) -> str | None:
    """Why a model config would be rejected by the real loader, or None when it is valid."""
    if not isinstance(data, dict):
        return "not a YAML mapping"
    if not str(data.get("name") or "").strip():
        return "missing name"
    return config_paths_problem(data)


def config_paths_problem(data: Mapping[str, Any]) -> str | None:
    parameters = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
    targets = [
        str(data.get("backend") or ""),
        str(parameters.get("model") or ""),
        str(data.get("mmproj") or ""),
    ]
    targets += [
        str(item.get("filename") or "") for item in data.get("download_files") or [] if isinstance(item, dict)
    ]
    for target in targets:
        if target and (target.startswith("/") or ".." in target):
            return f"invalid file path: {target}"
    backend = str(data.get("backend") or "")
    if backend and not BACKEND_NAME.match(backend):
        return f"invalid backend name: {backend}"
    return None


def _accept_config(data: Any, origin: str) -> ModelConfig | None:
    problem = config_problem(data)
    if problem is not None:
        log.warning("localai: skipping model config %s: %s", origin, problem)
        return None
    return ModelConfig(name=str(data["name"]), data=dict(data))


def read_models_directory(models_path: Path) -> list[ModelConfig]:
    """Every valid ``*.yaml``/``*.yml`` model config directly in the models directory."""
    configs: list[ModelConfig] = []
    if not models_path.is_dir():
        return configs
    for path in sorted(models_path.iterdir()):
        if path.name.startswith(".") or path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            log.warning("localai: skipping model config %s: %s", path, exc)
            continue
        config = _accept_config(data, str(path))
        if config is not None:
            configs.append(config)
    return configs


def read_config_list_file(path: Path) -> list[ModelConfig]:
    """The model configs of a multi-model ``CONFIG_FILE`` (a YAML list)."""
    try:
        items = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        log.error("localai: cannot load config file %s: %s", path, exc)
        return []
    if not isinstance(items, list):
        log.error("localai: config file %s is not a YAML list of model configs", path)
        return []
    accepted = (_accept_config(item, f"{path}[{index}]") for index, item in enumerate(items))
    return [config for config in accepted if config is not None]


def missing_weights(config: ModelConfig, models_path: Path) -> Path | None:
    """The local weights file a config names but that is absent (URIs are fetched at load)."""
    reference = config.model_reference
    if not reference or "://" in reference or not reference.lower().endswith(WEIGHT_SUFFIXES):
        return None
    path = models_path / reference
    return None if path.exists() else path


def merge_overrides(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base`` the way LocalAI's mergo call does.

    Nested mappings merge key by key; other values replace the base value, except empty
    values (``false``, ``0``, ``""``, empty lists/maps), which never override an existing key.
    """
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = merge_overrides(current, value)
        elif key not in merged or value not in (None, False, 0, "", [], {}):
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------------------------
# Deterministic "inference"
# --------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def count_tokens(text: str) -> int:
    return len(words_of(text)) if text.strip() else 0


@lru_cache(maxsize=8192)
def _word_direction(seed: str, dimensions: int) -> tuple[float, ...]:
    generator = random.Random(hashlib.sha256(seed.encode()).digest())
    return tuple(generator.gauss(0.0, 1.0) for _ in range(dimensions))


def embed(text: str, dimensions: int, model_reference: str) -> list[float]:
    """A unit vector: the normalised sum of per-word random directions (shared words => close)."""
    total = [0.0] * dimensions
    for word in words_of(text) or [""]:
        direction = _word_direction(f"{model_reference}\0{word}", dimensions)
        total = [a + b for a, b in zip(total, direction, strict=True)]
    norm = math.sqrt(sum(value * value for value in total)) or 1.0
    return [value / norm for value in total]


def relevance(query: str, document: str) -> float:
    """Score in (0, 1): cosine of the query and document vectors, rescaled."""
    dimensions = 256
    query_vector = embed(query, dimensions, "rerank")
    document_vector = embed(document, dimensions, "rerank")
    cosine = sum(a * b for a, b in zip(query_vector, document_vector, strict=True))
    return round((cosine + 1.0) / 2.0, 6)


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, list):
        parts = [part.get("text", "") for part in content if isinstance(part, dict)]
        return " ".join(str(part) for part in parts)
    return "" if content is None else str(content)


def compose_reply(model_name: str, prompt: str) -> str:
    if prompt.strip().lower() in {"ping", "ping."}:
        return "pong"
    excerpt = " ".join(prompt.split()[:24])
    return f"This is {model_name} on a fake LocalAI server. You said: {excerpt}"


def truncate_words(text: str, max_tokens: Any) -> tuple[list[str], str]:
    """The reply's words, cut to ``max_tokens``, and the matching finish reason."""
    words = text.split()
    if isinstance(max_tokens, int) and 0 < max_tokens < len(words):
        return words[:max_tokens], "length"
    return words, "stop"


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


# --------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------


def error_response(status: int, message: str, error_type: str = "") -> JSONResponse:
    """LocalAI's error body (``schema.ErrorResponse``); ``type`` is empty unless set."""
    return JSONResponse(
        {"error": {"code": status, "message": message, "type": error_type}}, status_code=status
    )


def model_not_found(name: str) -> JSONResponse:
    message = f"model {json.dumps(name)} not found. To see available models, call GET /v1/models"
    return error_response(404, message, "invalid_request_error")


def base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}/"


async def json_object(request: Request) -> dict[str, Any] | None:
    body = await json_body(request)
    return body if isinstance(body, dict) else None


def _go_number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


# --------------------------------------------------------------------------------------------
# Gallery operations
# --------------------------------------------------------------------------------------------


class InstallError(Exception):
    """A gallery operation failed; the message becomes the job's ``error``."""


@dataclass
class OpStatus:
    """``galleryop.OpStatus`` as LocalAI serialises it."""

    deletion: bool = False
    file_name: str = ""
    error: str | None = None
    processed: bool = False
    message: str = ""
    progress: float = 0.0
    phase: str = ""
    file_size: str = ""
    downloaded_size: str = ""
    gallery_element_name: str = ""
    cancelled: bool = False
    cancellable: bool = False

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"deletion": self.deletion, "file_name": self.file_name}
        if self.error:
            body["error"] = self.error
        body.update(processed=self.processed, message=self.message, progress=_go_number(self.progress))
        if self.phase:
            body["phase"] = self.phase
        body.update(
            file_size=self.file_size,
            downloaded_size=self.downloaded_size,
            gallery_element_name=self.gallery_element_name,
            cancelled=self.cancelled,
            cancellable=self.cancellable,
        )
        return body


@dataclass
class GalleryOp:
    id: str
    request: dict[str, Any]
    element_name: str
    deletion: bool = False


@dataclass
class InstallPlan:
    """What an install resolves to before anything is written."""

    name: str
    config_text: str
    overrides: dict[str, Any]
    files: list[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)


StatusSink = Callable[[OpStatus], None]
NOMINAL_FILE_BYTES = 64 * 1024 * 1024
DOWNLOAD_TICKS = 4


class ModelInstaller:
    """Installs and deletes models in the models directory, as LocalAI's gallery service does."""

    def __init__(self, settings: Settings, behaviour: Behaviour) -> None:
        self.settings = settings
        self.behaviour = behaviour

    @property
    def models_path(self) -> Path:
        return self.settings.models_path

    # -- install ------------------------------------------------------------------------

    async def install(self, op: GalleryOp, report: StatusSink) -> None:
        started = OpStatus(message=f"processing model: {op.element_name}", cancellable=True)
        report(started)
        plan = self.plan(op.request)
        tick = self._tick_seconds(len(plan.files))
        await asyncio.sleep(tick)
        self._check_injected_failure(op, plan)
        await self._download_files(plan.files, op.element_name, tick, report)
        self._write_config(plan)

    def plan(self, request: Mapping[str, Any]) -> InstallPlan:
        requested_name = str(request.get("name") or "")
        request_files = [dict(item) for item in request.get("files") or [] if isinstance(item, dict)]
        request_overrides = dict(request.get("overrides") or {})
        gallery_id = str(request.get("id") or "")
        if gallery_id:
            return self._plan_from_gallery(gallery_id, requested_name, request_files, request_overrides)
        url = str(request.get("url") or "")
        if url:
            base = self.fetch_gallery_file(url)
            return InstallPlan(
                name=requested_name or str(base.get("name") or ""),
                config_text=str(base.get("config_file") or ""),
                overrides=request_overrides,
                files=list(base.get("files") or []) + request_files,
                metadata=base,
            )
        inline = request.get("config_file")
        if isinstance(inline, dict) and inline:
            return InstallPlan(
                name=requested_name,
                config_text=yaml.safe_dump(inline, sort_keys=False),
                overrides=request_overrides,
                files=request_files,
                metadata={"name": requested_name},
            )
        raise InstallError("invalid gallery model: one of id, url or config_file must be specified")

    def _plan_from_gallery(
        self, gallery_id: str, requested_name: str, files: list[dict[str, Any]], overrides: dict[str, Any]
    ) -> InstallPlan:
        entry = find_gallery_entry(self.settings.galleries, gallery_id)
        if entry is None:
            raise InstallError(f"no model found with name {json.dumps(gallery_id)}")
        base = self.fetch_gallery_file(entry["url"])
        return InstallPlan(
            name=requested_name or entry["name"],
            config_text=str(base.get("config_file") or ""),
            overrides=merge_overrides(entry.get("overrides") or {}, overrides),
            files=list(base.get("files") or []) + files + list(entry.get("files") or []),
            metadata={key: entry.get(key) for key in ("name", "description", "license", "urls", "icon")},
        )

    def fetch_gallery_file(self, url: str) -> dict[str, Any]:
        """A gallery-format file (name, config_file, files...) from a built-in or file:// URL."""
        known = gallery_base_file(url)
        if known is not None:
            return known
        if url.startswith("file://"):
            return self._read_local_gallery_file(url.removeprefix("file://"))
        raise InstallError(
            f"failed to download {json.dumps(url)}: this fake LocalAI server is offline and only "
            "serves its built-in gallery files and file:// URLs under the models path"
        )

    def _read_local_gallery_file(self, raw_path: str) -> dict[str, Any]:
        path = Path(raw_path).absolute()
        if not self._inside_models_path(path):
            raise InstallError("path is outside of trusted root")
        try:
            content = yaml.safe_load(path.read_text())
        except FileNotFoundError as exc:
            raise InstallError(f"open {path}: no such file or directory") from exc
        except (OSError, yaml.YAMLError) as exc:
            raise InstallError(f"failed to read {path}: {exc}") from exc
        if not isinstance(content, dict):
            raise InstallError(f"failed to read {path}: not a YAML mapping")
        # A gallery file's config_file is YAML text; accept a mapping too.
        if isinstance(content.get("config_file"), dict):
            content["config_file"] = yaml.safe_dump(content["config_file"], sort_keys=False)
        return content

    def _check_injected_failure(self, op: GalleryOp, plan: InstallPlan) -> None:
        targets = {op.element_name, op.element_name.rpartition("@")[2], plan.name} - {""}
        failing = next((target for target in sorted(targets) if self.behaviour.fails("apply", target)), None)
        if failing is None and not self.behaviour.fails("apply"):
            return
        raise InstallError(f"failed to install {json.dumps(failing or plan.name)}: injected failure (apply)")

    def _tick_seconds(self, file_count: int) -> float:
        return self.behaviour.launch_latency / (1 + DOWNLOAD_TICKS * file_count)

    async def _download_files(
        self, files: list[dict[str, Any]], element_name: str, tick: float, report: StatusSink
    ) -> None:
        for item in files:
            filename = str(item.get("filename") or "")
            uri = str(item.get("uri") or "")
            target = self.verified_path(filename)
            if self.behaviour.fails("download", filename):
                raise InstallError(
                    f"failed to download file {json.dumps(filename)} from {uri}: injected failure"
                )
            for step in range(1, DOWNLOAD_TICKS + 1):
                done = NOMINAL_FILE_BYTES * step // DOWNLOAD_TICKS
                report(
                    OpStatus(
                        message=f"processing file: {filename}. Total: {_human_size(NOMINAL_FILE_BYTES)}. "
                        f"Current: {_human_size(done)}",
                        file_name=filename,
                        progress=100.0 * step / DOWNLOAD_TICKS,
                        phase="downloading",
                        file_size=_human_size(NOMINAL_FILE_BYTES),
                        downloaded_size=_human_size(done),
                        gallery_element_name=element_name,
                        cancellable=True,
                    )
                )
                await asyncio.sleep(tick)
            self.materialise(target, uri)

    def materialise(self, target: Path, uri: str) -> None:
        """Put the file in place: copy a file:// source, otherwise write a placeholder."""
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if uri.startswith("file://"):
            source = Path(uri.removeprefix("file://")).absolute()
            if not self._inside_models_path(source):
                raise InstallError("path is outside of trusted root")
            try:
                shutil.copyfile(source, target)
            except OSError as exc:
                raise InstallError(f"failed to copy {source}: {exc}") from exc
            return
        target.write_bytes(f"difystack fake LocalAI placeholder weights\nsource: {uri}\n".encode())

    def _write_config(self, plan: InstallPlan) -> None:
        config_path = self.verified_path(f"{plan.name}.yaml")
        if plan.overrides or plan.config_text.strip():
            try:
                base = yaml.safe_load(plan.config_text) or {}
            except yaml.YAMLError as exc:
                raise InstallError(f"failed to unmarshal config YAML: {exc}") from exc
            if not isinstance(base, dict):
                raise InstallError("failed to unmarshal config YAML: not a mapping")
            base["name"] = plan.name
            config = merge_overrides(base, plan.overrides)
            problem = config_paths_problem(config)
            if problem is not None:
                raise InstallError(f"failed to validate updated config YAML: {problem}")
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        gallery_record = dict(plan.metadata, name=plan.name, config_file=plan.config_text, files=plan.files)
        self.verified_path(f"._gallery_{plan.name}.yaml").write_text(yaml.safe_dump(gallery_record))

    # -- delete -------------------------------------------------------------------------

    async def delete(self, op: GalleryOp, report: StatusSink) -> None:
        report(OpStatus(message=f"processing model: {op.element_name}", deletion=True))
        await asyncio.sleep(self.behaviour.launch_latency)
        name = op.element_name
        if self.behaviour.fails("delete", name):
            raise InstallError(f"failed to delete {json.dumps(name)}: injected failure (delete)")
        config_path = self.verified_path(f"{name}.yaml")
        shared = self._files_of_other_models(name)
        for path in self._files_of_model(name):
            if path not in shared:
                with contextlib.suppress(OSError):
                    path.unlink()
        try:
            config_path.unlink()
        except FileNotFoundError as exc:
            raise InstallError(f"remove {config_path}: no such file or directory") from exc

    def _files_of_model(self, name: str) -> set[Path]:
        files: set[Path] = set()
        gallery_file = self.models_path / f"._gallery_{name}.yaml"
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
            record = yaml.safe_load(gallery_file.read_text()) or {}
            files |= {self.models_path / str(item["filename"]) for item in record.get("files") or []}
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
            data = yaml.safe_load((self.models_path / f"{name}.yaml").read_text()) or {}
            reference = ModelConfig(name=name, data=data).model_reference
            if reference and "://" not in reference:
                files.add(self.models_path / reference)
        files.add(gallery_file)
        return {path for path in files if self._inside_models_path(path)}

    def _files_of_other_models(self, name: str) -> set[Path]:
        others: set[Path] = set()
        for path in self.models_path.glob("*.y*ml"):
            other = path.stem
            if path.name.startswith(".") or other == name:
                continue
            others |= self._files_of_model(other)
        return others

    # -- paths --------------------------------------------------------------------------

    def _inside_models_path(self, path: Path) -> bool:
        root = self.models_path.resolve()
        return path.resolve().is_relative_to(root) and path.resolve() != root

    def verified_path(self, relative: str) -> Path:
        path = self.models_path / relative
        if relative.startswith("/") or not self._inside_models_path(path):
            raise InstallError("path is outside of trusted root")
        return path


# --------------------------------------------------------------------------------------------
# Server state
# --------------------------------------------------------------------------------------------


class LocalAIServer:
    """All state of one fake LocalAI instance, plus its request handlers."""

    def __init__(self, behaviour: Behaviour, settings: Settings) -> None:
        self.behaviour = behaviour
        self.settings = settings
        self.installer = ModelInstaller(settings, behaviour)
        self.configs: dict[str, ModelConfig] = {}
        self.jobs: dict[str, OpStatus] = {}
        self.started_at: float | None = None
        self._queue: asyncio.Queue[GalleryOp] | None = None
        self._preload_done: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Load configs and start preload + the gallery worker (idempotent)."""
        if self.started_at is not None:
            return
        self.started_at = time.monotonic()
        self.settings.models_path.mkdir(parents=True, exist_ok=True)
        self.reload_configs()
        self._queue = asyncio.Queue()
        self._preload_done = asyncio.Event()
        self._tasks = [asyncio.create_task(self._preload()), asyncio.create_task(self._work())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def reload_configs(self) -> None:
        """CONFIG_FILE first, then the models directory (whose configs win on name clashes)."""
        configs: dict[str, ModelConfig] = {}
        if self.settings.config_file is not None:
            configs.update(
                (config.name, config) for config in read_config_list_file(self.settings.config_file)
            )
        configs.update((config.name, config) for config in read_models_directory(self.settings.models_path))
        self._materialise_download_files(configs.values())
        self.configs = dict(sorted(configs.items()))

    def _materialise_download_files(self, configs: Iterable[ModelConfig]) -> None:
        # The real server fetches a config's download_files when it loads the config.
        for config in configs:
            for item in config.data.get("download_files") or []:
                if not isinstance(item, dict) or not item.get("filename"):
                    continue
                with contextlib.suppress(InstallError, OSError):
                    self.installer.materialise(
                        self.installer.verified_path(str(item["filename"])), str(item.get("uri") or "")
                    )

    async def _preload(self) -> None:
        assert self._preload_done is not None
        try:
            for request in self.settings.preload_requests:
                op = GalleryOp(
                    id=str(uuid.uuid1()), request=request, element_name=str(request.get("id") or "")
                )
                try:
                    await self.installer.install(op, lambda _status: None)
                except Exception as exc:  # the real server logs preload failures and starts anyway
                    log.error("localai: error installing preloaded model %s: %s", request, exc)
            self.reload_configs()
        finally:
            self._preload_done.set()

    async def _work(self) -> None:
        assert self._queue is not None and self._preload_done is not None
        await self._preload_done.wait()
        while True:
            op = await self._queue.get()
            await self._execute(op)

    async def _execute(self, op: GalleryOp) -> None:
        def report(status: OpStatus) -> None:
            status.gallery_element_name = status.gallery_element_name or op.element_name
            self.jobs[op.id] = status

        try:
            if op.deletion:
                await self.installer.delete(op, report)
            else:
                await self.installer.install(op, report)
        except InstallError as exc:
            self._fail(op, str(exc))
            return
        except Exception as exc:  # a fake bug must not kill the worker
            log.exception("localai: gallery operation %s crashed", op.id)
            self._fail(op, f"{type(exc).__name__}: {exc}")
            return
        self.reload_configs()
        self.jobs[op.id] = OpStatus(
            deletion=op.deletion,
            processed=True,
            message="completed",
            progress=100,
            gallery_element_name=op.element_name,
        )

    def _fail(self, op: GalleryOp, error: str) -> None:
        self.jobs[op.id] = OpStatus(
            deletion=op.deletion,
            processed=True,
            error=error,
            message=f"error: {error}",
            gallery_element_name=op.element_name,
        )

    def is_ready(self) -> bool:
        if self.behaviour.fails("never-ready") or self.started_at is None:
            return False
        preloaded = self._preload_done is not None and self._preload_done.is_set()
        return preloaded and time.monotonic() - self.started_at >= self.behaviour.ready_delay

    def enqueue(self, op: GalleryOp) -> None:
        assert self._queue is not None
        self.jobs[op.id] = OpStatus(
            message="queued",
            phase="queued",
            gallery_element_name=op.element_name,
            deletion=op.deletion,
            cancellable=not op.deletion,
        )
        self._queue.put_nowait(op)

    # -- health -------------------------------------------------------------------------

    async def healthz(self, _: Request) -> Response:
        return Response(status_code=200)

    async def readyz(self, _: Request) -> Response:
        if self.is_ready():
            return Response(status_code=200)
        return JSONResponse({"status": "starting", "reason": "startup preload in progress"}, status_code=503)

    async def version(self, _: Request) -> Response:
        return JSONResponse({"version": f"{LOCALAI_VERSION} ({LOCALAI_COMMIT})"})

    # -- models & gallery ---------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        pattern = request.query_params.get("filter", "")
        try:
            matcher = re.compile(pattern) if pattern else None
        except re.error as exc:
            return error_response(500, f"error parsing regexp: {exc}")
        names = [name for name in self.configs if matcher is None or matcher.search(name)]
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model"} for name in names]})

    async def available_models(self, _: Request) -> Response:
        if not self.settings.galleries:
            return JSONResponse([])
        gallery = self.settings.galleries[0]
        listing = [
            {
                "url": entry["url"],
                "name": entry["name"],
                "description": entry["description"],
                "license": entry["license"],
                "urls": entry["urls"],
                "icon": entry["icon"],
                "tags": entry["tags"],
                "files": entry["files"],
                "gallery": {"name": gallery.get("name", ""), "url": gallery.get("url", "")},
                "installed": (self.settings.models_path / f"{entry['name']}.yaml").exists(),
                "backend": entry_backend(entry),
            }
            for entry in GALLERY_ENTRIES
        ]
        return JSONResponse(listing)

    async def galleries(self, _: Request) -> Response:
        return JSONResponse(list(self.settings.galleries))

    async def apply(self, request: Request) -> Response:
        body = await json_object(request)
        if body is None:
            return error_response(
                400, "code=400, message=Syntax error: the request body must be a JSON object"
            )
        op = GalleryOp(id=str(uuid.uuid1()), request=body, element_name=str(body.get("id") or ""))
        self.enqueue(op)
        return self._job_accepted(request, op)

    async def delete(self, request: Request) -> Response:
        name = request.path_params["name"]
        op = GalleryOp(id=str(uuid.uuid1()), request={}, element_name=name, deletion=True)
        self.enqueue(op)
        return self._job_accepted(request, op)

    def _job_accepted(self, request: Request, op: GalleryOp) -> Response:
        return JSONResponse({"uuid": op.id, "status": f"{base_url(request)}models/jobs/{op.id}"})

    async def job_status(self, request: Request) -> Response:
        status = self.jobs.get(request.path_params["uuid"])
        if status is None:
            return error_response(500, "could not find any status for ID")
        return JSONResponse(status.as_json())

    async def all_jobs(self, _: Request) -> Response:
        return JSONResponse({job_id: status.as_json() for job_id, status in self.jobs.items()})

    async def reload(self, _: Request) -> Response:
        self.reload_configs()
        return JSONResponse({"success": True, "message": "Model configurations reloaded successfully"})

    # -- inference ----------------------------------------------------------------------

    def resolve(self, body: Mapping[str, Any], usecase: str) -> ModelConfig | Response:
        """The config a request targets, or the error response LocalAI would send."""
        name = body.get("model")
        if not name:
            # LocalAI falls back to the first configured model serving the use case.
            fallback = next((config for config in self.configs.values() if config.serves(usecase)), None)
            return fallback if fallback is not None else model_not_found("")
        config = self.configs.get(str(name))
        if config is None:
            if "/" in str(name):
                return error_response(500, f"could not load model {json.dumps(name)}: no model file found")
            return model_not_found(str(name))
        if self.behaviour.fails("infer", config.name):
            return error_response(500, "rpc error: code = Unavailable desc = error reading from server: EOF")
        absent = missing_weights(config, self.settings.models_path)
        if absent is not None:
            return error_response(
                500,
                "failed to load model with internal loader: could not load model: "
                f"rpc error: code = Unknown desc = model file not found: {absent}",
            )
        return config

    async def _inference_request(
        self, request: Request, usecase: str
    ) -> tuple[dict[str, Any], ModelConfig] | Response:
        body = await json_object(request)
        if body is None:
            return error_response(
                400, "code=400, message=Syntax error: the request body must be a JSON object"
            )
        resolved = self.resolve(body, usecase)
        if isinstance(resolved, Response):
            return resolved
        if usecase in ("chat", "completion") and not resolved.can_generate():
            return error_response(
                500,
                f"rpc error: code = Unimplemented desc = model {json.dumps(resolved.name)} "
                "is loaded for embeddings/reranking and cannot generate text",
            )
        return body, resolved

    async def chat_completions(self, request: Request) -> Response:
        parsed = await self._inference_request(request, "chat")
        if isinstance(parsed, Response):
            return parsed
        body, config = parsed
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        prompt_tokens = sum(count_tokens(message_text(message)) for message in messages)
        last_user = next(
            (message_text(m) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
            "",
        )
        words, finish_reason = truncate_words(compose_reply(config.name, last_user), body.get("max_tokens"))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        completion_id = str(uuid.uuid4())
        if body.get("stream"):
            chunks = self._chat_chunks(completion_id, config.name, words, finish_reason, usage)
            return StreamingResponse(chunks, media_type="text/event-stream")
        return JSONResponse(
            {
                "created": int(time.time()),
                "object": "chat.completion",
                "id": completion_id,
                "model": config.name,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": finish_reason,
                        "message": {"role": "assistant", "content": " ".join(words)},
                    }
                ],
                "usage": usage,
            }
        )

    async def _chat_chunks(
        self, completion_id: str, model: str, words: list[str], finish_reason: str, usage: dict[str, int]
    ) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None, with_usage: bool = False) -> str:
            payload: dict[str, Any] = {
                "created": int(time.time()),
                "object": "chat.completion.chunk",
                "id": completion_id,
                "model": model,
                "choices": [{"index": 0, "finish_reason": finish, "delta": delta}],
            }
            if with_usage:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"

        yield chunk({"role": "assistant", "content": ""}, None)
        for index, word in enumerate(words):
            yield chunk({"content": word if index == 0 else f" {word}"}, None)
            await asyncio.sleep(0)
        yield chunk({}, finish_reason, with_usage=True)
        yield "data: [DONE]\n\n"

    async def completions(self, request: Request) -> Response:
        parsed = await self._inference_request(request, "completion")
        if isinstance(parsed, Response):
            return parsed
        body, config = parsed
        prompts = text_inputs(body.get("prompt")) or [""]
        choices = []
        prompt_tokens = completion_tokens = 0
        for index, prompt in enumerate(prompts):
            words, finish_reason = truncate_words(compose_reply(config.name, prompt), body.get("max_tokens"))
            choices.append({"index": index, "finish_reason": finish_reason, "text": " ".join(words)})
            prompt_tokens += count_tokens(prompt)
            completion_tokens += len(words)
        return JSONResponse(
            {
                "created": int(time.time()),
                "object": "text_completion",
                "id": str(uuid.uuid4()),
                "model": config.name,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def embeddings(self, request: Request) -> Response:
        parsed = await self._inference_request(request, "embeddings")
        if isinstance(parsed, Response):
            return parsed
        body, config = parsed
        if not config.can_embed():
            return error_response(
                500,
                "rpc error: code = Unknown desc = embeddings are not enabled for model "
                f'{json.dumps(config.name)} (set "embeddings: true" in its configuration)',
            )
        dimensions = config.embedding_dimensions()
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(text_inputs(body.get("input"))):
            vector = embed(text, dimensions, config.model_reference or config.name)
            data.append(
                {
                    "embedding": encode_base64(vector) if as_base64 else vector,
                    "index": index,
                    "object": "embedding",
                }
            )
        tokens = sum(count_tokens(text) for text in text_inputs(body.get("input")))
        response: dict[str, Any] = {"created": int(time.time()), "object": "list", "id": str(uuid.uuid4())}
        response["model"] = config.name
        if data:  # Go's omitempty drops an empty data list
            response["data"] = data
        response["usage"] = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
        return JSONResponse(response)

    async def rerank(self, request: Request) -> Response:
        parsed = await self._inference_request(request, "rerank")
        if isinstance(parsed, Response):
            return parsed
        body, config = parsed
        if not config.can_rerank():
            return error_response(
                500,
                "rpc error: code = Unknown desc = reranking is not enabled for model "
                f"{json.dumps(config.name)}",
            )
        query = str(body.get("query") or "")
        documents = [str(document) for document in body.get("documents") or []]
        scored = sorted(
            (
                {"index": i, "document": {"text": d}, "relevance_score": relevance(query, d)}
                for i, d in enumerate(documents)
            ),
            key=lambda result: -result["relevance_score"],
        )
        top_n = body.get("top_n")
        if isinstance(top_n, int) and top_n > 0:
            scored = scored[:top_n]
        tokens = count_tokens(query) + sum(count_tokens(document) for document in documents)
        return JSONResponse(
            {
                "model": config.name,
                "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
                "results": scored,
            }
        )

    # -- routing ------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        routes = [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/version", self.version, methods=["GET"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/models", self.list_models, methods=["GET"]),
        ]
        if self.settings.gallery_endpoints:
            routes += [
                Route("/models/available", self.available_models, methods=["GET"]),
                Route("/models/galleries", self.galleries, methods=["GET"]),
                Route("/models/apply", self.apply, methods=["POST"]),
                Route("/models/delete/{name}", self.delete, methods=["POST"]),
                Route("/models/jobs", self.all_jobs, methods=["GET"]),
                Route("/models/jobs/{uuid}", self.job_status, methods=["GET"]),
                Route("/models/reload", self.reload, methods=["POST"]),
            ]
        for prefix in ("/v1", ""):
            routes += [
                Route(f"{prefix}/chat/completions", self.chat_completions, methods=["POST"]),
                Route(f"{prefix}/completions", self.completions, methods=["POST"]),
                Route(f"{prefix}/embeddings", self.embeddings, methods=["POST"]),
            ]
        routes.append(Route("/v1/rerank", self.rerank, methods=["POST"]))
        return routes


# --------------------------------------------------------------------------------------------
# Request gate: startup, path normalisation, API keys
# --------------------------------------------------------------------------------------------


def _headers(scope: Scope) -> dict[str, str]:
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}


def presented_key(headers: Mapping[str, str]) -> str:
    """The API key a request carries, looked up in the order LocalAI uses."""
    authorization = headers.get("authorization", "")
    if authorization.startswith("Bearer "):
        return authorization.removeprefix("Bearer ")
    if authorization:
        return authorization
    for header in ("x-api-key", "xi-api-key"):
        if headers.get(header):
            return headers[header]
    for cookie in headers.get("cookie", "").split(";"):
        name, _, value = cookie.strip().partition("=")
        if name == "token" and value:
            return value
    return ""


def is_public(method: str, path: str) -> bool:
    if path == JOURNAL_PATH:
        return True
    if method not in ("GET", "HEAD"):
        return False
    return path in PUBLIC_GET_PATHS or path.startswith(PUBLIC_GET_PREFIXES)


class LocalAIGate:
    """ASGI middleware: starts the server lazily, strips trailing slashes, checks API keys."""

    def __init__(self, app: ASGIApp, server: LocalAIServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.server.start()
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope, path=path.rstrip("/") or "/")
        if self.server.settings.api_keys and not is_public(scope["method"], scope["path"]):
            key = presented_key(_headers(scope))
            if key not in self.server.settings.api_keys:
                response = error_response(401, "An authentication key is required", "invalid_request_error")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _http_error(_: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return error_response(404, "Resource not found")
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return error_response(status, f"code={status}, message={detail}")


def create_app(behaviour: Behaviour, env: Mapping[str, str]) -> Starlette:
    """A fresh fake LocalAI application; all state lives in this call's objects."""
    server = LocalAIServer(behaviour, Settings.from_env(env))
    journal = RequestJournal()
    return Starlette(
        routes=[*journal.routes(), *server.routes()],
        middleware=[Middleware(JournalMiddleware, journal=journal), Middleware(LocalAIGate, server=server)],
        exception_handlers={HTTPException: _http_error},
        lifespan=server.lifespan,
    )


__all__ = ["create_app"]
