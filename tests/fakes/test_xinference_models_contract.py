"""Contract tests for the fake Xinference 4.1.0's models: launch validation, the launch
lifecycle (blocking and not, the concurrency limit, failures, terminate, cancel) and custom
registrations across restarts.

Every expectation comes from the project's reference notes (xinference-localai-api.md PART A,
xinference-real-offline*.md with verbatim answers of a real 4.1.0), not from the fake's code.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from difystack.fakes.behaviour import Behaviour
from tests.fakes.xinference_support import (
    EMBEDDING_DESCRIBE_KEYS,
    LLM_DESCRIBE_KEYS,
    QWEN_GGUF,
    actor_detail,
    detail,
    embedding_spec,
    fake_env,
    gguf_llm_spec,
    instance_status,
    launch,
    register,
    wait_until,
    xinference,
)

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
