"""Contract tests for the fake LocalAI server (LocalAI v4.9.0).

Expectations come from the reference notes (xinference-localai-api.md PART B, C, D rows 14-19,
E2, and dify-console-api.md section 6.2), not from the fake's code: exact status codes, error
bodies and job state transitions, so that a server that merely echoes requests fails.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from difystack.fakes.behaviour import Behaviour
from tests.fakes.localai_support import (
    DIFY_CHAT_HEADERS,
    DIFY_EMBEDDING_HEADERS,
    STARTING_BODY,
    apply,
    assert_failed,
    embedding_length,
    install,
    listed_models,
    localai,
    wait_for_job,
    write_yaml,
)

# -- B1: health and readiness ------------------------------------------------------------


def test_readyz_reports_starting_until_ready_delay_then_200(tmp_path: Path) -> None:
    with localai(tmp_path, Behaviour(ready_delay=0.4)) as client:
        first = client.get("/readyz")
        assert first.status_code == 503
        assert first.json() == STARTING_BODY
        for _ in range(500):  # a bound on the polls, so a fake that never gets ready fails
            if client.get("/readyz").status_code != 503:
                break
            time.sleep(0.02)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.content == b""


def test_never_ready_keeps_readyz_503_while_healthz_is_200(tmp_path: Path) -> None:
    with localai(tmp_path, Behaviour(failures=frozenset({"never-ready"}))) as client:
        time.sleep(0.2)
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json() == STARTING_BODY
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.content == b""


def test_version_reports_the_pinned_release(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        version = client.get("/version").json()["version"]
        assert version.startswith("v4.9.0 (")


# -- B3: gallery jobs --------------------------------------------------------------------


def test_gallery_install_goes_from_processing_to_completed_and_is_listed(tmp_path: Path) -> None:
    with localai(tmp_path, Behaviour(launch_latency=0.4)) as client:
        assert client.get("/readyz").status_code == 200
        response = client.post(
            "/models/apply",
            json={"id": "localai@granite-embedding-107m-multilingual", "name": "text-embedding-ada-002"},
        )
        assert response.status_code == 200
        accepted = response.json()
        assert set(accepted) >= {"uuid", "status"}
        assert accepted["status"] == f"{client.base_url}/models/jobs/{accepted['uuid']}"
        assert "text-embedding-ada-002" not in listed_models(client)

        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 5
        while not (seen and seen[-1]["processed"]):
            assert time.monotonic() < deadline
            seen.append(client.get(f"/models/jobs/{accepted['uuid']}").json())
            time.sleep(0.02)
        running = [status for status in seen if not status["processed"]]
        assert running, "the job finished before it could be observed running"
        assert all(0 <= status["progress"] <= 100 and not status.get("error") for status in running)
        assert any(status["message"].startswith("processing") for status in running)

        done = seen[-1]
        assert done["message"] == "completed"
        assert done["progress"] == 100
        assert not done.get("error")
        assert done["deletion"] is False
        assert "text-embedding-ada-002" in listed_models(client)
        assert "text-embedding-ada-002" in listed_models(client, "/models")
        config = yaml.safe_load((tmp_path / "text-embedding-ada-002.yaml").read_text())
        assert config["name"] == "text-embedding-ada-002"
        assert config["embeddings"] is True
        assert (tmp_path / config["parameters"]["model"]).exists()
        assert embedding_length(client, "text-embedding-ada-002") == 384


def test_jobs_run_one_at_a_time_and_later_ones_wait_queued(tmp_path: Path) -> None:
    # A latency far above the test's own request times keeps it stable on a loaded machine.
    with localai(tmp_path, Behaviour(launch_latency=1.5)) as client:
        started = time.monotonic()
        first = apply(client, {"id": "localai@qwen3-0.6b"})
        second = apply(client, {"id": "llama-3.2-1b-instruct:q4_k_m"})
        time.sleep(0.05)
        queued = client.get(f"/models/jobs/{second}").json()
        assert queued["processed"] is False
        assert queued["message"] == "queued"
        assert queued["phase"] == "queued"
        assert client.get(f"/models/jobs/{first}").json()["processed"] is False

        def running(status: dict[str, Any]) -> bool:
            return not status["processed"] and status.get("phase") != "queued"

        deadline = time.monotonic() + 15
        while True:
            # One request, so both statuses are read at the same instant.
            snapshot = client.get("/models/jobs").json()
            statuses = [snapshot[first], snapshot[second]]
            assert not all(running(status) for status in statuses), statuses
            if all(status["processed"] for status in statuses):
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [status["message"] for status in statuses] == ["completed", "completed"]
        assert time.monotonic() - started >= 3.0
        all_jobs = client.get("/models/jobs").json()
        assert {first, second} <= set(all_jobs)
        assert all_jobs[second]["processed"] is True
        assert {"qwen3-0.6b", "llama-3.2-1b-instruct:q4_k_m"} <= set(listed_models(client))


def test_unknown_gallery_id_fails_with_an_error_naming_it(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        status = wait_for_job(client, apply(client, {"id": "localai@no-such-model"}))
        assert_failed(status)
        assert 'no model found with name "localai@no-such-model"' in status["error"]
        assert listed_models(client) == []


def test_unknown_job_uuid_is_an_error(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        response = client.get("/models/jobs/00000000-0000-0000-0000-000000000000")
        assert response.status_code != 200
        assert response.json()["error"]["message"] == "could not find any status for ID"


def test_injected_apply_failure_fails_only_that_install(tmp_path: Path) -> None:
    behaviour = Behaviour(failures=frozenset({"apply:qwen3-0.6b"}))
    with localai(tmp_path, behaviour) as client:
        failed = wait_for_job(client, apply(client, {"id": "localai@qwen3-0.6b", "name": "gpt-4"}))
        assert_failed(failed)
        install(client, {"id": "localai@llama-3.2-1b-instruct:q4_k_m", "name": "gpt-4"})
        assert listed_models(client) == ["gpt-4"]


def test_inline_config_file_is_written_and_loaded_by_a_new_instance(tmp_path: Path) -> None:
    body = {
        "name": "my-embedder",
        "config_file": {
            "backend": "llama-cpp",
            "embeddings": True,
            "parameters": {"model": "nomic-embed-text-v1.5.f16.gguf"},
        },
        "files": [
            {
                "filename": "nomic-embed-text-v1.5.f16.gguf",
                "sha256": "",
                "uri": "huggingface://nomic-ai/nomic-embed-text-v1.5-GGUF/nomic-embed-text-v1.5.f16.gguf",
            }
        ],
    }
    with localai(tmp_path) as client:
        install(client, body)
    written = yaml.safe_load((tmp_path / "my-embedder.yaml").read_text())
    assert written["name"] == "my-embedder"
    assert written["backend"] == "llama-cpp"

    with localai(tmp_path) as restarted:
        assert "my-embedder" in listed_models(restarted)
        assert embedding_length(restarted, "my-embedder") == 768


def test_installing_under_an_existing_name_replaces_the_model(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        install(client, {"id": "localai@granite-embedding-107m-multilingual", "name": "embedder"})
        assert embedding_length(client, "embedder") == 384
        install(client, {"id": "localai@nomic-embed-text-v1.5", "name": "embedder"})
        assert listed_models(client) == ["embedder"]
        assert embedding_length(client, "embedder") == 768


def test_gallery_base_url_with_overrides_and_files(tmp_path: Path) -> None:
    body = {
        "url": "github:mudler/LocalAI/gallery/virtual.yaml@master",
        "name": "text-embedding-3-small",
        "overrides": {
            "backend": "llama-cpp",
            "embeddings": True,
            "parameters": {"model": "granite-embedding-107m-multilingual-f16.gguf"},
        },
        "files": [
            {
                "filename": "granite-embedding-107m-multilingual-f16.gguf",
                "sha256": "",
                "uri": "huggingface://bartowski/granite-embedding-107m-multilingual-GGUF/"
                "granite-embedding-107m-multilingual-f16.gguf",
            }
        ],
    }
    with localai(tmp_path) as client:
        install(client, body)
        assert embedding_length(client, "text-embedding-3-small") == 384


def test_file_url_must_be_under_models_path_and_remote_urls_fail_offline(tmp_path: Path) -> None:
    models = tmp_path / "models"
    inside = write_yaml(
        models / "recipes" / "tiny.yaml",
        {"name": "tiny", "config_file": "backend: llama-cpp\nparameters:\n  model: tiny.gguf\n"},
    )
    outside = write_yaml(tmp_path / "elsewhere.yaml", {"name": "elsewhere", "config_file": "backend: x\n"})
    remote = "https://example.invalid/gallery/model.yaml"
    with localai(models) as client:
        install(client, {"url": f"file://{inside}"})
        assert "tiny" in listed_models(client)
        assert_failed(wait_for_job(client, apply(client, {"url": f"file://{outside}"})))
        remote_status = wait_for_job(client, apply(client, {"url": remote, "name": "remote"}))
        assert_failed(remote_status)
        assert remote in remote_status["error"]
        assert "remote" not in listed_models(client)


def test_delete_removes_the_config_and_unknown_delete_fails(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        install(client, {"id": "localai@qwen3-0.6b", "name": "gpt-4"})
        response = client.post("/models/delete/gpt-4")
        assert response.status_code == 200
        deleted = wait_for_job(client, response.json()["uuid"])
        assert deleted["message"] == "completed"
        assert deleted["deletion"] is True
        assert "gpt-4" not in listed_models(client)
        assert not (tmp_path / "gpt-4.yaml").exists()

        missing = client.post("/models/delete/never-installed").json()["uuid"]
        assert_failed(wait_for_job(client, missing))


def test_models_available_lists_the_gallery_with_metadata(tmp_path: Path) -> None:
    required = {
        "qwen3-0.6b",
        "llama-3.2-1b-instruct:q4_k_m",
        "granite-embedding-107m-multilingual",
        "all-MiniLM-L6-v2",
        "nomic-embed-text-v1.5",
        "jina-reranker-v1-base-en",
        "bert-embeddings",
    }
    with localai(tmp_path) as client:
        entries = {entry["name"]: entry for entry in client.get("/models/available").json()}
        assert required <= set(entries)
        for entry in entries.values():
            assert {"url", "name", "description", "license", "urls", "tags", "files"} <= set(entry)
            assert set(entry["gallery"]) >= {"name", "url"}
            assert entry["installed"] is False
        assert entries["all-MiniLM-L6-v2"]["backend"] == "sentencetransformers"
        galleries = client.get("/models/galleries").json()
        assert galleries and {"name", "url"} <= set(galleries[0])

        install(client, {"id": "localai@qwen3-0.6b"})
        refreshed = {entry["name"]: entry for entry in client.get("/models/available").json()}
        assert refreshed["qwen3-0.6b"]["installed"] is True


# -- B4: models directory, CONFIG_FILE and PRELOAD_MODELS ----------------------------------


def test_models_directory_configs_load_and_nameless_ones_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "phi.gguf").write_bytes(b"weights")
    write_yaml(
        tmp_path / "phi.yaml", {"name": "phi", "backend": "llama-cpp", "parameters": {"model": "phi.gguf"}}
    )
    write_yaml(tmp_path / "nameless.yml", {"backend": "llama-cpp", "parameters": {"model": "phi.gguf"}})
    with caplog.at_level(logging.WARNING), localai(tmp_path) as client:
        assert listed_models(client) == ["phi"]
    assert any("nameless.yml" in record.getMessage() for record in caplog.records)


def test_config_file_multi_model_list(tmp_path: Path) -> None:
    config_file = write_yaml(
        tmp_path / "models.yaml",
        [
            {"name": "chat-a", "backend": "llama-cpp", "parameters": {"model": "a.gguf"}},
            {
                "name": "embed-b",
                "backend": "sentencetransformers",
                "embeddings": True,
                "parameters": {"model": "all-MiniLM-L6-v2"},
            },
        ],
    )
    models = tmp_path / "models"
    models.mkdir()
    (models / "a.gguf").write_bytes(b"weights")
    with localai(models, CONFIG_FILE=str(config_file)) as client:
        assert {"chat-a", "embed-b"} <= set(listed_models(client))
        assert embedding_length(client, "embed-b") == 384


def test_preload_models_are_installed_before_ready(tmp_path: Path) -> None:
    preload = json.dumps([{"id": "localai@qwen3-0.6b", "name": "gpt-4"}])
    with localai(tmp_path, Behaviour(launch_latency=0.3), PRELOAD_MODELS=preload) as client:
        first = client.get("/readyz")
        assert first.status_code == 503
        assert first.json() == STARTING_BODY
        deadline = time.monotonic() + 5
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "gpt-4" in listed_models(client)
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4", "messages": [{"role": "user", "content": "hello"}]},
        )
        assert chat.status_code == 200


# -- B2 / C / 6.2: inference -----------------------------------------------------------------


def test_unknown_model_is_the_exact_404(tmp_path: Path) -> None:
    expected = {
        "error": {
            "code": 404,
            "message": 'model "x" not found. To see available models, call GET /v1/models',
            "type": "invalid_request_error",
        }
    }
    with localai(tmp_path) as client:
        chat = client.post("/v1/chat/completions", json={"model": "x", "messages": []})
        assert chat.status_code == 404
        assert chat.json() == expected
        embeddings = client.post("/embeddings", json={"model": "x", "input": "ping"})
        assert embeddings.status_code == 404
        assert embeddings.json() == expected


def test_chat_completion_shape_usage_and_max_tokens(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        install(client, {"id": "localai@qwen3-0.6b", "name": "gpt-4"})
        prompt = "tell me a very long story about a fake server " * 5
        response = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4", "messages": [{"role": "user", "content": prompt}], "max_tokens": 5},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == "gpt-4"
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
        assert choice["finish_reason"] in {"stop", "length"}
        usage = body["usage"]
        assert 0 < usage["completion_tokens"] <= 5
        assert usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_usage_counts_punctuation_as_a_model_tokeniser_does(tmp_path: Path) -> None:
    """``Say hello.`` is 3 tokens for a BPE tokeniser (tiktoken's gpt2 agrees), not 2 words."""
    with localai(tmp_path) as client:
        install(client, {"id": "localai@qwen3-0.6b", "name": "gpt-4"})
        message = {"role": "user", "content": "Say hello."}
        chat = client.post("/v1/chat/completions", json={"model": "gpt-4", "messages": [message]})
        assert chat.json()["usage"]["prompt_tokens"] == 3
        embedded = client.post("/v1/embeddings", json={"model": "gpt-4", "input": "Say hello."})
        assert embedded.status_code == 500  # a chat model does not embed


def test_chat_completion_streams_server_sent_events(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        install(client, {"id": "localai@qwen3-0.6b", "name": "gpt-4"})
        body = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi there"}], "stream": True}
        with client.stream("POST", "/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [
                line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")
            ]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(event) for event in events[:-1]]
        assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
        text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
        assert text.strip()
        assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


def test_completions_endpoint_with_and_without_v1(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        install(client, {"id": "localai@llama-3.2-1b-instruct:q4_k_m", "name": "llama"})
        for path in ("/v1/completions", "/completions"):
            response = client.post(path, json={"model": "llama", "prompt": "ping\n", "max_tokens": 10})
            assert response.status_code == 200
            body = response.json()
            assert body["object"] == "text_completion"
            assert isinstance(body["choices"][0]["text"], str)
            assert body["usage"]["total_tokens"] >= body["usage"]["completion_tokens"] > 0


def test_embedding_dimensions_follow_the_model_including_the_bert_trap(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        for gallery_name in (
            "granite-embedding-107m-multilingual",
            "nomic-embed-text-v1.5",
            "bert-embeddings",
            "all-MiniLM-L6-v2",
        ):
            install(client, {"id": f"localai@{gallery_name}"})
        assert embedding_length(client, "granite-embedding-107m-multilingual") == 384
        assert embedding_length(client, "nomic-embed-text-v1.5") == 768
        assert embedding_length(client, "bert-embeddings") == 2048
        assert embedding_length(client, "all-MiniLM-L6-v2") == 384


def test_embeddings_are_deterministic_unit_vectors_with_usage(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        install(client, {"id": "localai@nomic-embed-text-v1.5", "name": "embedder"})
        response = client.post("/v1/embeddings", json={"model": "embedder", "input": ["alpha beta", "gamma"]})
        assert response.status_code == 200
        body = response.json()
        assert body["object"] == "list"
        assert [item["index"] for item in body["data"]] == [0, 1]
        assert all(item["object"] == "embedding" for item in body["data"])
        first = body["data"][0]["embedding"]
        assert math.isclose(math.sqrt(sum(value * value for value in first)), 1.0, rel_tol=1e-6)
        assert first != body["data"][1]["embedding"]
        assert body["usage"]["prompt_tokens"] > 0
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
        again = client.post("/v1/embeddings", json={"model": "embedder", "input": "alpha beta"}).json()
        assert again["data"][0]["embedding"] == first


def test_embeddings_on_a_chat_model_fail_with_an_openai_error(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        install(client, {"id": "localai@qwen3-0.6b", "name": "gpt-4"})
        response = client.post("/v1/embeddings", json={"model": "gpt-4", "input": "ping"})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == 500
        assert error["message"]


def test_rerank_uses_the_jina_shape_and_only_v1(tmp_path: Path) -> None:
    documents = ["kasumi is a girl name", "the weather is nice", "kasumi plays guitar"]
    with localai(tmp_path) as client:
        install(client, {"id": "localai@jina-reranker-v1-base-en", "name": "reranker"})
        response = client.post(
            "/v1/rerank",
            json={"model": "reranker", "query": "Whose kasumi", "documents": documents, "top_n": 2},
        )
        assert response.status_code == 200
        body = response.json()
        assert len(body["results"]) == 2
        scores = [result["relevance_score"] for result in body["results"]]
        assert scores == sorted(scores, reverse=True)
        for result in body["results"]:
            assert result["document"]["text"] == documents[result["index"]]
        assert body["results"][0]["index"] != 1
        assert body["usage"]["total_tokens"] > 0
        assert (
            client.post("/rerank", json={"model": "reranker", "query": "q", "documents": []}).status_code
            == 404
        )


def test_injected_inference_failure_is_a_500(tmp_path: Path) -> None:
    with localai(tmp_path, Behaviour(failures=frozenset({"infer:gpt-4"}))) as client:
        install(client, {"id": "localai@qwen3-0.6b", "name": "gpt-4"})
        response = client.post(
            "/v1/chat/completions", json={"model": "gpt-4", "messages": [{"role": "user", "content": "ping"}]}
        )
        assert response.status_code == 500
        assert response.json()["error"]["message"]


def test_dify_localai_plugin_validation_calls_succeed(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        install(client, {"id": "localai@qwen3-0.6b", "name": "gpt-4"})
        install(
            client, {"id": "localai@granite-embedding-107m-multilingual", "name": "text-embedding-ada-002"}
        )

        chat = client.post(
            "/v1/chat/completions",
            headers=DIFY_CHAT_HEADERS,
            json={
                "model": "gpt-4",
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 10,
                "stream": False,
            },
        )
        assert chat.status_code == 200
        assert chat.json()["choices"][0]["message"]["content"]

        completion = client.post(
            "/v1/completions",
            headers=DIFY_CHAT_HEADERS,
            json={"model": "gpt-4", "prompt": "ping\n", "max_tokens": 10},
        )
        assert completion.status_code == 200

        embedding = client.post(
            "/embeddings",
            headers=DIFY_EMBEDDING_HEADERS,
            json={"model": "text-embedding-ada-002", "input": "ping"},
        )
        assert embedding.status_code == 200
        body = embedding.json()
        assert len(body["data"][0]["embedding"]) == 384
        assert body["usage"]["total_tokens"] > 0


# -- B3 Auth ---------------------------------------------------------------------------------


def test_api_keys_are_required_except_on_public_routes(tmp_path: Path) -> None:
    with localai(tmp_path, API_KEY="key-one, key-two") as client:
        missing = client.get("/v1/models")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/models/apply", json={"id": "localai@qwen3-0.6b"}).status_code == 401
        assert (
            client.post("/embeddings", headers=DIFY_EMBEDDING_HEADERS, json={"model": "m"}).status_code == 401
        )

        assert client.get("/v1/models", headers={"Authorization": "Bearer key-one"}).status_code == 200
        assert client.get("/v1/models", headers={"x-api-key": "key-two"}).status_code == 200
        assert client.get("/v1/models", headers={"xi-api-key": "key-one"}).status_code == 200

        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_without_api_key_any_bearer_is_accepted(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        for headers in ({}, {"Authorization": "Bearer 1"}, {"Authorization": "Bearer 123"}):
            assert client.get("/v1/models", headers=headers).status_code == 200


# -- Journal -----------------------------------------------------------------------------------


def test_journal_records_the_host_header_and_status_url_uses_it(tmp_path: Path) -> None:
    with localai(tmp_path) as client:
        accepted = client.post(
            "/models/apply", headers={"Host": "localai:8080"}, json={"id": "localai@qwen3-0.6b"}
        ).json()
        assert accepted["status"] == f"http://localai:8080/models/jobs/{accepted['uuid']}"
        entries = client.get("/_fake/requests").json()
        apply_entries = [entry for entry in entries if entry["path"] == "/models/apply"]
        assert apply_entries[-1]["host"] == "localai:8080"
        assert apply_entries[-1]["method"] == "POST"
        assert apply_entries[-1]["status"] == 200
