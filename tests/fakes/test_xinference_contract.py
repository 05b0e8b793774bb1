"""Contract tests for the fake Xinference 4.1.0: readiness, the catalogue, inference, Dify's
plugin validation, accounts and the journal.

Every expectation comes from the project's reference notes (xinference-localai-api.md PART A,
xinference-real-offline*.md with verbatim answers of a real 4.1.0, dify-console-api.md §6.1),
not from the fake's code: exact status codes, error texts, body shapes and state transitions.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import httpx
import pytest

from difystack.fakes.behaviour import Behaviour
from tests.fakes.xinference_support import (
    QWEN_GGUF,
    actor_detail,
    detail,
    launch,
    wait_until,
    xinference,
)

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


def test_usage_counts_punctuation_as_a_model_tokeniser_does(tmp_path: Path) -> None:
    """``Say hello.`` is 3 tokens (tiktoken's gpt2 agrees); a chat message adds 4 for its role
    markers and an embedding input 2 for its begin and end markers."""
    with xinference(tmp_path) as client:
        launch(client, {**QWEN_GGUF, "model_uid": "qwen"})
        launch(client, {"model_uid": "emb", "model_name": "bge-small-en-v1.5", "model_type": "embedding"})
        message = {"role": "user", "content": "Say hello."}
        chat = client.post("/v1/chat/completions", json={"model": "qwen", "messages": [message]})
        assert chat.json()["usage"]["prompt_tokens"] == 3 + 4
        embedded = client.post("/v1/embeddings", json={"model": "emb", "input": "Say hello."})
        assert embedded.json()["usage"]["prompt_tokens"] == 3 + 2


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
