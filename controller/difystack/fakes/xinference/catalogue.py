"""What a real Xinference 4.1.0 ships with: its identity, model types, the built-in model
families this fake serves (a small subset, in the v2 JSON shape of ``/v1/model_registrations``)
and the engines that can load each model format (with 4.1.0's verbatim reasons for the engines
it lacks). Data only."""

from __future__ import annotations

import re
from typing import Any

VERSION = "4.1.0"
FULL_REVISION_ID = "a3625815f8daa70a1beb428734147ca973cf916c"

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
