"""What the contract tests of the fake Xinference share: a running fake and a client, its
error details, launches, registrations and the custom specs they register."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.xinference import create_app
from tests.conftest import serve_app

# Errors raised inside Xinference's actors carry this prefix; REST-layer errors do not.
ACTOR_PREFIX = re.compile(r"^\[address=[^\]]+, pid=\d+\] ")

QWEN_GGUF = {
    "model_name": "qwen2.5-instruct",
    "model_type": "LLM",
    "model_engine": "llama.cpp",
    "model_format": "ggufv2",
    "model_size_in_billions": "0_5",
    "quantization": "q4_k_m",
    "n_gpu": None,
    "replica": 1,
}
LLM_DESCRIBE_KEYS = [
    "model_type",
    "address",
    "accelerators",
    "model_name",
    "model_lang",
    "model_ability",
    "model_description",
    "model_format",
    "model_size_in_billions",
    "model_family",
    "quantization",
    "multimodal_projector",
    "model_hub",
    "revision",
    "context_length",
    "strict_system_first",
    "model_engine",
    "n_worker",
    "replica",
]
EMBEDDING_DESCRIBE_KEYS = [
    "model_type",
    "address",
    "accelerators",
    "model_name",
    "model_engine",
    "model_format",
    "dimensions",
    "max_tokens",
    "language",
    "model_ability",
    "model_hub",
    "model_revision",
    "quantization",
    "n_worker",
    "replica",
]


def fake_env(home: Path, **extra: str) -> dict[str, str]:
    return {"XINFERENCE_HOME": str(home), "XINFERENCE_AUTH_ADVANCED": "0", **extra}


@contextmanager
def xinference(
    home: Path, behaviour: Behaviour | None = None, env: dict[str, str] | None = None
) -> Iterator[httpx.Client]:
    app = create_app(behaviour or Behaviour(), env if env is not None else fake_env(home))
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def detail(response: httpx.Response) -> Any:
    return response.json()["detail"]


def actor_detail(response: httpx.Response) -> str:
    """The detail of an actor-raised error, with its ``[address=..., pid=...]`` prefix checked."""
    text = detail(response)
    assert ACTOR_PREFIX.match(text), text
    return ACTOR_PREFIX.sub("", text)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def instance_status(client: httpx.Client, uid: str) -> str | None:
    rows = client.get("/v1/models/instances", params={"model_uid": uid}).json()
    return rows[0]["status"] if rows else None


def launch(client: httpx.Client, body: dict[str, Any], wait_ready: bool = True) -> httpx.Response:
    return client.post("/v1/models", params={"wait_ready": str(wait_ready).lower()}, json=body)


def register(client: httpx.Client, model_type: str, spec: dict[str, Any], persist: bool) -> httpx.Response:
    body = {"model": json.dumps(spec), "worker_ip": None, "persist": persist}
    return client.post(f"/v1/model_registrations/{model_type}", json=body)


def embedding_spec(
    name: str, model_dir: Path, dimensions: int = 384, max_tokens: int = 256
) -> dict[str, Any]:
    return {
        "version": 2,
        "model_name": name,
        "dimensions": dimensions,
        "max_tokens": max_tokens,
        "language": ["en"],
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_id": None,
                "model_uri": f"file://{model_dir}",
                "quantization": "none",
            }
        ],
    }


def gguf_llm_spec(name: str, model_dir: Path) -> dict[str, Any]:
    return {
        "version": 2,
        "context_length": 2048,
        "model_name": name,
        "model_lang": ["en"],
        "model_ability": ["generate", "chat"],
        "model_description": "Gemma 3 270M Q4_K_M GGUF",
        "model_family": "gemma-3-1b-it",
        "model_specs": [
            {
                "model_format": "ggufv2",
                "model_size_in_billions": "0_27",
                "quantization": "Q4_K_M",
                "model_id": None,
                "model_file_name_template": "gemma-3-270m-q4_k_m.gguf",
                "model_uri": f"file://{model_dir}",
            }
        ],
        "chat_template": None,
        "stop_token_ids": None,
        "stop": None,
    }
