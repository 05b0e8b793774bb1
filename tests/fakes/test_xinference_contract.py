"""Contract tests for the fake Xinference 4.1.0.

Every expectation comes from the project's reference notes (xinference-localai-api.md PART A,
xinference-real-offline*.md with verbatim answers of a real 4.1.0, dify-console-api.md §6.1),
not from the fake's code: exact status codes, error texts, body shapes and state transitions.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

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


# ---- helpers ---------------------------------------------------------------------------------


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


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "models" / "minilm"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    return directory


# ---- readiness and cluster -------------------------------------------------------------------


def test_status_lists_no_worker_until_ready_delay(tmp_path: Path) -> None:
    with xinference(tmp_path, Behaviour(ready_delay=0.4)) as client:
        first = client.get("/status")
        assert first.status_code == 200
        assert first.json()["workers"] == {}
        assert isinstance(first.json()["uptime"], int)
        # No worker yet: a blocking launch has nowhere to go.
        refused = launch(client, {"model_name": "bge-small-en-v1.5", "model_type": "embedding"})
        assert refused.status_code == 503
        assert actor_detail(refused) == "No available worker found"

        # The worker joins later (no lower bound on how much later: a loaded machine is slower).
        wait_until(lambda: client.get("/status").json()["workers"] != {})
        workers = client.get("/status").json()["workers"]
        assert len(workers) == 1
        (worker,) = workers.values()
        assert isinstance(worker["update_time"], float)
        assert worker["failure_remaining_count"] == 5
        assert set(worker["status"]["cpu"]) == {
            "usage",
            "total",
            "memory_used",
            "memory_available",
            "memory_total",
        }


def test_never_ready_keeps_the_worker_list_empty(tmp_path: Path) -> None:
    with xinference(tmp_path, Behaviour(failures=frozenset({"never-ready"}))) as client:
        for _ in range(3):
            response = client.get("/status")
            assert response.status_code == 200
            assert response.json()["workers"] == {}
            time.sleep(0.1)


def test_cluster_endpoints_without_auth(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        assert client.get("/v1/cluster/auth").json() == {"auth": False}
        version = client.get("/v1/cluster/version").json()
        assert version["version"] == "4.1.0"
        assert re.fullmatch(r"[0-9a-f]{40}", version["full-revisionid"])
        assert isinstance(client.get("/v1/address").json(), str)
        assert client.get("/v1/models").json() == {"object": "list", "data": []}


# ---- catalogue ---------------------------------------------------------------------------------


def test_builtin_catalogue_and_engines(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        llms = client.get("/v1/model_registrations/LLM").json()
        assert {"model_name": "qwen2.5-instruct", "is_builtin": True} in llms
        assert [row["model_name"] for row in llms] == sorted(row["model_name"] for row in llms)
        qwen = client.get("/v1/model_registrations/LLM/qwen2.5-instruct").json()
        assert qwen["model_ability"] == ["chat", "tools"]
        assert qwen["context_length"] == 32768
        assert qwen["is_builtin"] is True

        bge = client.get("/v1/model_registrations/embedding/bge-small-en-v1.5").json()
        assert (bge["dimensions"], bge["max_tokens"]) == (384, 512)
        missing = client.get("/v1/model_registrations/LLM/no-such-model")
        assert missing.status_code == 400
        assert actor_detail(missing) == "Model no-such-model not found"

        engines = client.get("/v1/engines/qwen2.5-instruct").json()
        gguf_05 = next(p for p in engines["llama.cpp"] if p["model_size_in_billions"] == "0_5")
        assert gguf_05["model_format"] == "ggufv2"
        assert gguf_05["quantizations"] == [
            "q2_k",
            "q3_k_m",
            "q4_0",
            "q4_k_m",
            "q5_0",
            "q5_k_m",
            "q6_k",
            "q8_0",
        ]
        assert {
            "model_format": "pytorch",
            "model_size_in_billions": "0_5",
            "quantizations": ["none"],
        }.items() <= next(p for p in engines["Transformers"] if p["model_size_in_billions"] == "0_5").items()
        assert isinstance(engines["vLLM"], str)
        assert client.get("/v1/engines/LLM/qwen2.5-instruct").json() == engines

        assert client.get("/v1/engines/embedding/bge-small-en-v1.5").json() == {
            "sentence_transformers": [
                {"model_name": "bge-small-en-v1.5", "model_format": "pytorch", "quantization": "none"}
            ]
        }
        unknown = client.get("/v1/engines/no-such-model")
        assert unknown.status_code == 200
        assert unknown.json() is None
        # /v1/engines/{name} only looks at LLMs.
        assert client.get("/v1/engines/bge-small-en-v1.5").json() is None


# ---- launch validation -------------------------------------------------------------------------

LAUNCH_ERRORS: list[tuple[dict[str, Any], str, bool]] = [
    (
        {"model_type": "LLM", "model_engine": "llama.cpp"},
        "Invalid input. Please specify the `model_name` field.",
        False,
    ),
    ({"model_name": "qwen2.5-instruct"}, "Invalid input. Please specify the `model_engine` field.", False),
    ({"model_name": "no-such-llm", "model_engine": "llama.cpp"}, "Model no-such-llm not found.", True),
    (
        {"model_name": "qwen2.5-instruct", "model_engine": "vLLM"},
        "Model qwen2.5-instruct cannot be run on engine vLLM.",
        True,
    ),
    (
        {**QWEN_GGUF, "quantization": "Q4_K_M"},
        "Model qwen2.5-instruct cannot be run on engine llama.cpp, with format ggufv2, size 0_5 "
        "and quantization Q4_K_M.",
        True,
    ),
    (
        {**QWEN_GGUF, "model_size_in_billions": 0.5},
        "Model qwen2.5-instruct cannot be run on engine llama.cpp, with format ggufv2, size 0.5 "
        "and quantization q4_k_m.",
        True,
    ),
    (
        {**QWEN_GGUF, "replica": 2, "gpu_idx": [0]},
        "Invalid input. Allocated gpu must be a multiple of replica.",
        False,
    ),
    (
        {**QWEN_GGUF, "request_limits": -1},
        "The `request_limits` parameter must be greater or equal than 0.",
        True,
    ),
    (
        {**QWEN_GGUF, "model_uid": "x" * 101},
        "The model UID is invalid. Please specify the model UID by 0 < length <= 100.",
        True,
    ),
    (
        {**QWEN_GGUF, "model_uid": "qwen-rep0"},
        "The model UID is invalid. Please specify the model UID by 0 < length <= 100.",
        True,
    ),
]


@pytest.mark.parametrize(("body", "message", "from_actor"), LAUNCH_ERRORS)
def test_launch_validation_errors(
    tmp_path: Path, body: dict[str, Any], message: str, from_actor: bool
) -> None:
    with xinference(tmp_path) as client:
        response = launch(client, body)
        assert response.status_code == 400
        assert (actor_detail(response) if from_actor else detail(response)) == message
        assert client.get("/v1/models").json()["data"] == []


def test_unknown_embedding_name_lists_available_models(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        response = launch(client, {"model_name": "no-such-embedding", "model_type": "embedding"})
        assert response.status_code == 400
        text = actor_detail(response)
        assert text.startswith("Embedding model no-such-embedding not found, available models: dict_keys([")
        assert "'bge-small-en-v1.5'" in text


def test_uid_defaults_and_duplicates(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        body = {"model_name": "bge-small-en-v1.5", "model_type": "embedding"}
        assert launch(client, body).json() == {"model_uid": "bge-small-en-v1.5"}
        second = launch(client, body).json()["model_uid"]
        assert re.fullmatch(r"bge-small-en-v1\.5-[A-Za-z0-9]{8}", second)
        duplicate = launch(client, {**body, "model_uid": "bge-small-en-v1.5"})
        assert duplicate.status_code == 400
        assert actor_detail(duplicate) == "Model is already in the model list, uid: bge-small-en-v1.5"


def test_size_may_be_an_int_or_a_string(tmp_path: Path) -> None:
    gemma = {"model_name": "gemma-3-1b-it", "model_engine": "llama.cpp", "model_format": "ggufv2"}
    with xinference(tmp_path) as client:
        as_int = launch(
            client, {**gemma, "model_uid": "a", "model_size_in_billions": 1, "quantization": "Q4_K_M"}
        )
        assert as_int.status_code == 200
        assert client.get("/v1/models/a").json()["model_size_in_billions"] == 1
        as_text = launch(
            client, {**gemma, "model_uid": "b", "model_size_in_billions": "1", "quantization": "Q8_0"}
        )
        assert as_text.status_code == 200
        # Extra fields are engine kwargs, accepted as they are.
        assert (
            launch(client, {**QWEN_GGUF, "model_uid": "c", "n_ctx": 2048, "size_in_billions": 7}).status_code
            == 200
        )


# ---- lifecycle ---------------------------------------------------------------------------------


def test_non_blocking_launch_is_503_while_loading_then_ready(tmp_path: Path) -> None:
    with xinference(tmp_path, Behaviour(launch_latency=0.6)) as client:
        response = launch(client, {**QWEN_GGUF, "model_uid": "qwen-small"}, wait_ready=False)
        assert response.status_code == 200
        assert response.json() == {"model_uid": "qwen-small"}

        # The POST came back before the load finished.
        loading = client.get("/v1/models/qwen-small")
        assert loading.status_code == 503
        assert loading.headers["retry-after"] == "30"
        assert detail(loading).startswith("Model is loading, please retry later: ")
        assert instance_status(client, "qwen-small") == "LOADING"
        progress = client.get("/v1/models/qwen-small/progress").json()
        assert 0.0 <= progress["progress"] < 1.0
        assert progress["stage"] in {"pending", "downloading", "loading", "launching"}
        assert client.get("/v1/models").json()["data"] == []  # only loaded models are listed
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "qwen-small", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 503
        assert chat.headers["retry-after"] == "30"

        wait_until(lambda: instance_status(client, "qwen-small") == "READY")
        described = client.get("/v1/models/qwen-small")
        assert described.status_code == 200
        info = described.json()
        assert list(info) == LLM_DESCRIBE_KEYS
        assert info["model_type"] == "LLM"
        assert info["model_name"] == "qwen2.5-instruct"
        assert info["model_family"] == "qwen2.5-instruct"
        assert info["model_ability"] == ["chat", "tools"]
        assert info["model_engine"] == "llama.cpp"
        assert (info["model_format"], info["model_size_in_billions"], info["quantization"]) == (
            "ggufv2",
            "0_5",
            "q4_k_m",
        )
        assert info["context_length"] == 32768
        assert info["replica"] == 1
        assert client.get("/v1/models/qwen-small/progress").json()["progress"] == 1.0

        listed = client.get("/v1/models").json()
        assert listed["object"] == "list"
        (item,) = listed["data"]
        assert {
            "id": "qwen-small",
            "object": "model",
            "created": 0,
            "owned_by": "xinference",
        }.items() <= item.items()
        assert item["model_ability"] == ["chat", "tools"]


def test_blocking_launch_returns_when_loaded(tmp_path: Path) -> None:
    with xinference(tmp_path, Behaviour(launch_latency=0.3)) as client:
        start = time.monotonic()
        response = launch(
            client, {"model_uid": "emb", "model_name": "bge-small-en-v1.5", "model_type": "embedding"}
        )
        assert response.json() == {"model_uid": "emb"}
        assert time.monotonic() - start >= 0.3
        described = client.get("/v1/models/emb").json()
        assert list(described) == EMBEDDING_DESCRIBE_KEYS
        assert described["model_engine"] == "sentence_transformers"  # the default embedding engine
        assert described["model_ability"] == ["embed"]
        assert (described["dimensions"], described["max_tokens"]) == (384, 512)


def test_injected_launch_failure_ends_in_error(tmp_path: Path) -> None:
    behaviour = Behaviour(
        launch_latency=0.1, failures=frozenset({"launch:bge-small-en-v1.5", "launch:doomed"})
    )
    with xinference(tmp_path, behaviour) as client:
        body = {"model_uid": "emb", "model_name": "bge-small-en-v1.5", "model_type": "embedding"}
        assert launch(client, body, wait_ready=False).status_code == 200
        wait_until(lambda: instance_status(client, "emb") == "ERROR")
        gone = client.get("/v1/models/emb")
        assert gone.status_code == 400
        assert actor_detail(gone) == "Model not found in the model list, uid: emb"
        assert client.get("/v1/models").json()["data"] == []

        blocking = launch(client, {**QWEN_GGUF, "model_uid": "doomed"})
        assert blocking.status_code == 500
        assert "doomed" in detail(blocking)
        assert instance_status(client, "doomed") == "ERROR"
        # The uid is free again for a new launch.
        assert launch(client, {**QWEN_GGUF, "model_uid": "emb"}).status_code == 200


def test_non_blocking_launch_of_unknown_model_fails_in_the_background(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        response = launch(
            client, {"model_uid": "x", "model_name": "nope", "model_engine": "llama.cpp"}, wait_ready=False
        )
        assert response.json() == {"model_uid": "x"}
        wait_until(lambda: instance_status(client, "x") == "ERROR")
        assert client.get("/v1/models/x").status_code == 400


@pytest.mark.parametrize("limit", [2, 4])
def test_concurrent_launch_limit(tmp_path: Path, limit: int) -> None:
    latency = 0.3
    env = fake_env(tmp_path, XINFERENCE_MAX_CONCURRENT_LAUNCHES=str(limit))
    with xinference(tmp_path, Behaviour(launch_latency=latency), env) as client:
        start = time.monotonic()
        for i in range(4):
            body = {"model_uid": f"emb-{i}", "model_name": "bge-small-en-v1.5", "model_type": "embedding"}
            assert launch(client, body, wait_ready=False).status_code == 200

        def statuses() -> list[str]:
            return [row["status"] for row in client.get("/v1/models/instances").json()]

        first = statuses()
        # Launches beyond the limit wait their turn (CREATING) instead of loading.
        assert first.count("LOADING") == limit
        assert first.count("CREATING") == 4 - limit
        most_loading = 0

        def all_ready() -> bool:
            nonlocal most_loading
            current = statuses()
            most_loading = max(most_loading, current.count("LOADING"))
            return current == ["READY"] * 4

        wait_until(all_ready)
        assert most_loading <= limit
        # Four launches in batches of `limit` need at least that many latencies.
        assert time.monotonic() - start >= latency * (4 // limit)


def test_terminate(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        launch(client, {"model_uid": "emb", "model_name": "bge-small-en-v1.5", "model_type": "embedding"})
        terminated = client.delete("/v1/models/emb")
        assert terminated.status_code == 200
        assert terminated.json() is None
        assert client.get("/v1/models").json()["data"] == []
        assert client.get("/v1/models/emb").status_code == 400
        again = client.delete("/v1/models/emb")
        assert again.status_code == 400
        assert actor_detail(again) == "Model not found in the model list, uid: emb"


def test_cancel_an_inflight_launch(tmp_path: Path) -> None:
    with xinference(tmp_path, Behaviour(launch_latency=5)) as client:
        launch(client, {**QWEN_GGUF, "model_uid": "slow"}, wait_ready=False)
        assert client.post("/v1/models/slow/cancel").status_code == 200
        assert instance_status(client, "slow") == "ERROR"
        assert client.get("/v1/models/slow").status_code == 400


# ---- registrations and restarts ----------------------------------------------------------------


def test_restart_forgets_running_models_but_keeps_persisted_registrations(
    tmp_path: Path, model_dir: Path
) -> None:
    home = tmp_path / "home"
    with xinference(home) as client:
        assert (
            register(client, "embedding", embedding_spec("kept-minilm", model_dir), persist=True).json()
            is None
        )
        assert (
            register(client, "embedding", embedding_spec("lost-minilm", model_dir), persist=False).status_code
            == 200
        )
        launch(client, {"model_uid": "kept", "model_name": "kept-minilm", "model_type": "embedding"})
        assert len(client.get("/v1/models").json()["data"]) == 1
    assert (home / "model" / "v2" / "embedding" / "kept-minilm.json").is_file()

    with xinference(home) as client:
        assert client.get("/v1/models").json() == {"object": "list", "data": []}
        assert client.get("/v1/models/kept").status_code == 400
        names = client.get("/v1/model_registrations/embedding").json()
        assert {"model_name": "kept-minilm", "is_builtin": False} in names
        assert all(row["model_name"] != "lost-minilm" for row in names)
        assert client.get("/v1/model_registrations/embedding/kept-minilm").json() == {
            "version": 2,
            "model_name": "kept-minilm",
            "dimensions": 384,
            "max_tokens": 256,
            "language": ["en"],
            "model_ability": [],
            "model_specs": [
                {
                    "model_format": "pytorch",
                    "model_hub": "huggingface",
                    "model_id": None,
                    "model_uri": f"file://{model_dir}",
                    "model_revision": None,
                    "quantization": "none",
                }
            ],
            "cache_config": None,
            "virtualenv": None,
            "is_builtin": False,
        }
        assert (
            launch(
                client, {"model_uid": "kept", "model_name": "kept-minilm", "model_type": "embedding"}
            ).status_code
            == 200
        )

        assert client.delete("/v1/model_registrations/embedding/kept-minilm").status_code == 200
        assert not (home / "model" / "v2" / "embedding" / "kept-minilm.json").exists()
        assert client.get("/v1/model_registrations/embedding/kept-minilm").status_code == 400


REGISTRATION_ERRORS: list[tuple[str, Callable[[Path], dict[str, Any]], int, str]] = [
    (
        "embedding",
        lambda d: {
            **embedding_spec("rel", d),
            "model_specs": [{"model_format": "pytorch", "model_uri": "file://models/x"}],
        },
        400,
        "Model URI cannot be a relative path: file://models/x",
    ),
    (
        "embedding",
        lambda d: {
            **embedding_spec("gone", d),
            "model_specs": [{"model_format": "pytorch", "model_uri": f"file://{d}/does-not-exist"}],
        },
        400,
        "Invalid model URI file://{dir}/does-not-exist.",
    ),
    (
        "LLM",
        lambda d: {k: v for k, v in gguf_llm_spec("no-family", d).items() if k != "model_family"},
        400,
        "You must specify `model_family` when registering custom LLM models.",
    ),
    ("embedding", lambda d: embedding_spec("bad/name", d), 400, "Invalid model name bad/name."),
    ("embedding", lambda d: embedding_spec("bad name", d), 400, "Invalid model name bad name."),
    (
        "embedding",
        lambda d: embedding_spec("bge-small-en-v1.5", d),
        400,
        "Model name conflicts with existing model bge-small-en-v1.5",
    ),
    ("llm", lambda d: gguf_llm_spec("lower-type", d), 400, "Unsupported model type: llm"),
]


@pytest.mark.parametrize(("model_type", "make_spec", "status", "message"), REGISTRATION_ERRORS)
def test_registration_errors(
    tmp_path: Path,
    model_dir: Path,
    model_type: str,
    make_spec: Callable[[Path], dict[str, Any]],
    status: int,
    message: str,
) -> None:
    with xinference(tmp_path / "home") as client:
        response = register(client, model_type, make_spec(model_dir), persist=True)
        assert response.status_code == status
        assert actor_detail(response) == message.replace("{dir}", str(model_dir))
        assert not (tmp_path / "home" / "model").exists()


def test_registration_rejects_duplicates_and_invalid_specs(tmp_path: Path, model_dir: Path) -> None:
    with xinference(tmp_path) as client:
        assert (
            register(client, "embedding", embedding_spec("twice", model_dir), persist=False).status_code
            == 200
        )
        duplicate = register(client, "embedding", embedding_spec("twice", model_dir), persist=False)
        assert duplicate.status_code == 400
        assert actor_detail(duplicate) == "Model twice already registered"
        no_dimensions = {k: v for k, v in embedding_spec("nodim", model_dir).items() if k != "dimensions"}
        assert register(client, "embedding", no_dimensions, persist=False).status_code == 500
        # The spec must be a JSON *string*.
        nested = client.post(
            "/v1/model_registrations/embedding", json={"model": embedding_spec("x", model_dir)}
        )
        assert nested.status_code == 422


def test_custom_embedding_reports_declared_dimensions(tmp_path: Path, model_dir: Path) -> None:
    with xinference(tmp_path) as client:
        spec = embedding_spec("tiny-embed", model_dir, dimensions=256, max_tokens=128)
        assert register(client, "embedding", spec, persist=False).status_code == 200
        assert client.get("/v1/engines/embedding/tiny-embed").json() == {
            "sentence_transformers": [
                {"model_name": "tiny-embed", "model_format": "pytorch", "quantization": "none"}
            ]
        }
        assert client.get("/v1/engines/tiny-embed").json() is None
        launch(client, {"model_uid": "tiny", "model_name": "tiny-embed", "model_type": "embedding"})
        info = client.get("/v1/models/tiny").json()
        assert (info["dimensions"], info["max_tokens"], info["model_engine"]) == (
            256,
            128,
            "sentence_transformers",
        )
        vector = client.post("/v1/embeddings", json={"model": "tiny", "input": "hello"}).json()["data"][0][
            "embedding"
        ]
        assert len(vector) == 256


def test_custom_gguf_llm_borrows_its_family_template(tmp_path: Path, model_dir: Path) -> None:
    with xinference(tmp_path) as client:
        assert (
            register(client, "LLM", gguf_llm_spec("itest-gemma3", model_dir), persist=False).status_code
            == 200
        )
        registered = client.get("/v1/model_registrations/LLM/itest-gemma3").json()
        assert registered["chat_template"]
        assert registered["stop"] == ["<eos>", "<end_of_turn>", "<start_of_turn>"]
        engines = client.get("/v1/engines/LLM/itest-gemma3").json()
        assert engines["llama.cpp"][0]["model_size_in_billions"] == "0_27"
        assert engines["llama.cpp"][0]["quantizations"] == ["Q4_K_M"]
        body = {
            "model_uid": "itest-llm",
            "model_name": "itest-gemma3",
            "model_type": "LLM",
            "model_engine": "llama.cpp",
            "model_format": "ggufv2",
            "model_size_in_billions": "0_27",
            "quantization": "Q4_K_M",
        }
        assert launch(client, body).json() == {"model_uid": "itest-llm"}
        info = client.get("/v1/models/itest-llm").json()
        assert info["model_family"] == "gemma-3-1b-it"
        assert info["model_ability"] == ["generate", "chat"]
        assert info["context_length"] == 2048
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "itest-llm", "messages": [{"role": "user", "content": "Capital of France?"}]},
        ).json()
        # llama.cpp answers with the GGUF path in `model`, not the uid.
        assert chat["model"].endswith("gemma-3-270m-q4_k_m.gguf")


# ---- inference ---------------------------------------------------------------------------------


def test_embeddings_shape_dimensions_and_usage(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        launch(client, {"model_uid": "emb", "model_name": "bge-small-en-v1.5", "model_type": "embedding"})
        response = client.post(
            "/v1/embeddings", json={"model": "emb", "input": ["hello world", "xinference"]}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["object"] == "list"
        assert body["model"] == "emb"
        assert [item["index"] for item in body["data"]] == [0, 1]
        assert all(item["object"] == "embedding" for item in body["data"])
        first, second = (item["embedding"] for item in body["data"])
        assert len(first) == len(second) == 384
        assert math.isclose(math.fsum(v * v for v in first), 1.0, rel_tol=1e-6)
        assert first != second
        usage = body["usage"]
        assert usage["prompt_tokens"] == usage["total_tokens"] > 0

        single = client.post("/v1/embeddings", json={"model": "emb", "input": "hello world"}).json()
        assert single["data"][0]["embedding"] == first  # deterministic
        assert single["usage"]["total_tokens"] < usage["total_tokens"]


def test_chat_completion_shape_and_streaming(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        launch(client, {**QWEN_GGUF, "model_uid": "qwen"})
        request = {"model": "qwen", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 4}
        body = client.post("/v1/chat/completions", json=request).json()
        assert body["object"] == "chat.completion"
        assert body["id"].startswith("chatcmpl-")
        (choice,) = body["choices"]
        assert choice["index"] == 0
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"]
        assert choice["finish_reason"] == "length"
        usage = body["usage"]
        assert usage["completion_tokens"] == 4
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

        with client.stream("POST", "/v1/chat/completions", json={**request, "stream": True}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in stream.iter_lines() if line]
        assert all(line.startswith("data: ") for line in lines)
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert streamed == choice["message"]["content"]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"

        completion = client.post(
            "/v1/completions", json={"model": "qwen", "prompt": "The capital", "max_tokens": 3}
        ).json()
        assert completion["object"] == "text_completion"
        assert completion["choices"][0]["text"]
        assert completion["usage"]["completion_tokens"] == 3


def test_inference_errors(tmp_path: Path) -> None:
    with xinference(tmp_path, Behaviour(failures=frozenset({"infer:broken"}))) as client:
        launch(client, {"model_uid": "emb", "model_name": "bge-small-en-v1.5", "model_type": "embedding"})
        launch(client, {**QWEN_GGUF, "model_uid": "qwen"})
        launch(client, {"model_uid": "broken", "model_name": "bge-small-en-v1.5", "model_type": "embedding"})

        unknown = client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
        assert unknown.status_code == 404
        assert actor_detail(unknown) == (
            "Model not found in the model list, uid: nope. Available model uids: ['emb', 'qwen', 'broken']"
        )
        unknown_chat = client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
        assert unknown_chat.status_code == 404

        # 4.1.0 answers both mix-ups with a 500 (seen on the real server).
        wrong_kind = client.post("/v1/embeddings", json={"model": "qwen", "input": "x"})
        assert wrong_kind.status_code == 500
        assert actor_detail(wrong_kind).startswith("Model ") and "model_format=" in actor_detail(wrong_kind)
        assert actor_detail(wrong_kind).endswith(" is not for creating embedding.")
        chat_on_embedding = client.post(
            "/v1/chat/completions", json={"model": "emb", "messages": [{"role": "user", "content": "x"}]}
        )
        assert chat_on_embedding.status_code == 500
        assert detail(chat_on_embedding) == (
            "The chat completion request failed. Check the server logs for details."
        )

        failing = client.post("/v1/embeddings", json={"model": "broken", "input": "x"})
        assert failing.status_code == 500
        assert client.post("/v1/embeddings", json={"model": "emb", "input": "x"}).status_code == 200


def test_rerank_as_dify_calls_it(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        launch(client, {"model_uid": "rr", "model_name": "bge-reranker-v2-m3", "model_type": "rerank"})
        assert client.get("/v1/models/rr").json()["model_type"] == "rerank"
        documents = [
            "Kasumi is a girl's name of Japanese origin",
            "Guitar strings",
            "Kasumi plays the guitar",
        ]
        body = {
            "model": "rr",
            "documents": documents,
            "query": "Whose kasumi",
            "top_n": None,
            "return_documents": True,
        }
        results = client.post("/v1/rerank", json=body).json()["results"]
        assert sorted(r["index"] for r in results) == [0, 1, 2]
        scores = [r["relevance_score"] for r in results]
        assert scores == sorted(scores, reverse=True)
        assert all(r["document"]["text"] == documents[r["index"]] for r in results)
        top = client.post("/v1/rerank", json={**body, "top_n": 1}).json()["results"]
        assert len(top) == 1


# ---- Dify's plugin validation ------------------------------------------------------------------


def dify_embedding_validation(client: httpx.Client, uid: str, api_key: str | None) -> None:
    """dify-official-plugins xinference text_embedding.validate_credentials (§6.1)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    described = client.get(f"/v1/models/{uid}", headers=headers)
    assert described.status_code == 200
    assert described.json()["model_type"] == "embedding"
    auth = client.get("/v1/cluster/auth")  # the xinference client sends no header here
    assert auth.status_code == 200
    assert auth.json() == {"auth": api_key is not None}
    assert client.get(f"/v1/models/{uid}", headers=headers).status_code == 200
    embedded = client.post("/v1/embeddings", headers=headers, json={"model": uid, "input": ["ping"]})
    assert embedded.status_code == 200
    assert embedded.json()["data"][0]["embedding"]
    assert embedded.json()["usage"]["total_tokens"] > 0


def test_dify_plugin_validation_sequence_without_auth(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        launch(client, {"model_uid": "bge-m3", "model_name": "bge-m3", "model_type": "embedding"})
        dify_embedding_validation(client, "bge-m3", api_key=None)


# ---- authentication (on by default in 4.1.0) ---------------------------------------------------


def bootstrap_admin(client: httpx.Client, setup_token: str) -> str:
    created = client.post(
        "/v1/admin/setup",
        json={"setup_token": setup_token, "username": "admin", "password": "admin-pass-123"},
    )
    assert created.status_code == 201
    assert created.json() == {"id": 1, "username": "admin"}
    login = client.post("/token", json={"username": "admin", "password": "admin-pass-123"})
    assert login.status_code == 200
    assert login.json()["token_type"] == "bearer"
    return str(login.json()["access_token"])


def printed_setup_token(capsys: pytest.CaptureFixture[str]) -> str:
    match = re.search(r"Setup token: (\S+)", capsys.readouterr().out)
    assert match, "the setup token must be printed in the log"
    return match.group(1)


def test_auth_is_on_by_default_with_setup_token_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"XINFERENCE_HOME": str(tmp_path / "home")}
    with xinference(tmp_path, env=env) as client:
        token = printed_setup_token(capsys)
        assert client.get("/status").status_code == 200
        assert client.get("/v1/cluster/auth").json() == {"auth": True}
        denied = client.get("/v1/models")
        assert denied.status_code == 401
        assert detail(denied) == "Could not validate credentials"
        assert client.get("/v1/cluster/version").status_code == 401

        assert client.get("/v1/admin/setup/status").json() == {
            "needs_setup": True,
            "initialized": False,
            "password_min_length": 8,
        }
        wrong = client.post(
            "/v1/admin/setup", json={"setup_token": "nope", "username": "admin", "password": "x" * 12}
        )
        assert wrong.status_code == 403
        short = client.post(
            "/v1/admin/setup", json={"setup_token": token, "username": "admin", "password": "short"}
        )
        assert short.status_code == 400
        admin = bootstrap_admin(client, token)
        again = client.post(
            "/v1/admin/setup", json={"setup_token": token, "username": "eve", "password": "x" * 12}
        )
        assert again.status_code == 403
        assert detail(again) == "Setup already completed; an account already exists."
        assert (
            client.post("/token", json={"username": "admin", "password": "wrong-password"}).status_code == 401
        )

        as_admin = {"Authorization": f"Bearer {admin}"}
        assert client.get("/v1/cluster/version", headers=as_admin).json()["version"] == "4.1.0"
        created = client.post("/v1/admin/keys", headers=as_admin, json={"name": "controller"})
        assert created.status_code == 201
        key = created.json()
        assert set(key) >= {"id", "key", "prefix", "name"}
        assert key["key"].startswith("xf-")
        assert key["prefix"] == key["key"][:7]
        assert key["name"] == "controller"

        as_key = {"Authorization": f"Bearer {key['key']}"}
        assert client.get("/v1/models", headers=as_key).status_code == 200
        body = {"model_uid": "bge-m3", "model_name": "bge-m3", "model_type": "embedding"}
        refused = client.post("/v1/models", headers=as_key, json=body)
        assert refused.status_code == 403
        assert detail(refused) == "API keys can only access model query and inference endpoints"
        assert client.get("/v1/cluster/version", headers=as_key).status_code == 403
        assert client.post("/v1/models", headers=as_admin, json=body).status_code == 200
        assert client.delete("/v1/models/bge-m3", headers=as_key).status_code == 403
        assert client.get("/v1/models", headers={"Authorization": "Bearer xf-wrong"}).status_code == 401

        dify_embedding_validation(client, "bge-m3", api_key=key["key"])


def test_accounts_and_keys_survive_a_restart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"XINFERENCE_HOME": str(tmp_path / "home")}
    with xinference(tmp_path, env=env) as client:
        admin = bootstrap_admin(client, printed_setup_token(capsys))
        key = client.post(
            "/v1/admin/keys", headers={"Authorization": f"Bearer {admin}"}, json={"name": "k"}
        ).json()
    with xinference(tmp_path, env=env) as client:
        assert "Setup token" not in capsys.readouterr().out
        assert client.get("/v1/admin/setup/status").json()["needs_setup"] is False
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key['key']}"}).status_code == 200
        assert (
            client.post("/token", json={"username": "admin", "password": "admin-pass-123"}).status_code == 200
        )


# ---- journal -----------------------------------------------------------------------------------


def test_journal_records_requests_with_their_host_header(tmp_path: Path) -> None:
    with xinference(tmp_path) as client:
        client.get("/v1/cluster/auth", headers={"Host": "xinference:9997"})
        client.get("/v1/models/nope")
        entries = client.get("/_fake/requests").json()
        assert [(e["method"], e["path"], e["host"], e["status"]) for e in entries] == [
            ("GET", "/v1/cluster/auth", "xinference:9997", 200),
            ("GET", "/v1/models/nope", entries[1]["host"], 400),
        ]
        assert client.delete("/_fake/requests").status_code == 204
        assert client.get("/_fake/requests").json() == []


def test_launch_once_failure_fails_only_the_first_attempt(tmp_path: Path) -> None:
    behaviour = Behaviour(failures=frozenset({"launch-once:bge-small-en-v1.5"}))
    with xinference(tmp_path, behaviour) as client:
        body = {"model_uid": "emb", "model_name": "bge-small-en-v1.5", "model_type": "embedding"}
        first = client.post("/v1/models", json=body)
        assert first.status_code == 500
        assert "injected launch failure" in first.json()["detail"]
        assert client.get("/v1/models/emb").status_code == 400
        second = client.post("/v1/models", json=body)
        assert second.status_code == 200, second.text
        assert client.get("/v1/models/emb").json()["model_name"] == "bge-small-en-v1.5"
