"""What a real LocalAI v4.9.0 ships with: its identity, the default gallery, a small built-in
gallery index (entries and the gallery-format base files their ``url`` points at, no network),
the backends' capabilities and the embedding dimension of known weights. Data only, plus the
lookups into it."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import yaml

LOCALAI_VERSION = "v4.9.0"
LOCALAI_COMMIT = "f7ad3f70"

DEFAULT_GALLERIES: tuple[dict[str, Any], ...] = (
    {
        "name": "localai",
        "url": "https://index.localai.io/models",
        "mirrors": ["github:mudler/LocalAI/gallery/index.yaml@master"],
    },
)

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


def _llama_cpp_chat_config(*stopwords: str) -> str:
    """The ``config_file`` of a gallery base file for a llama.cpp chat model."""
    return (
        "backend: llama-cpp\ncontext_size: 8192\nf16: true\nmmap: true\n"
        "template:\n  use_tokenizer_template: true\noptions:\n- use_jinja:true\nstopwords:\n"
        + "".join(f"- {word}\n" for word in stopwords)
        + "known_usecases:\n- chat\n- completion\n"
    )


_QWEN3_BASE_CONFIG = _llama_cpp_chat_config("<|im_end|>", "<|endoftext|>")
_LLAMA32_BASE_CONFIG = _llama_cpp_chat_config("<|eot_id|>", "<|end_of_text|>")

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
