"""LocalAIClient against the fake LocalAI v4.9.0 (reference: xinference-localai-api.md PART B, E2)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from difystack.clients.http import HttpError, TransientHttpError
from difystack.clients.localai import JobStatus, JobWait, LocalAIClient, LocalAIJobFailed
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.localai import create_app
from tests.clients import RequestRecorder, ScriptedServer
from tests.conftest import free_port, serve_app, wait_until_done

LLAMA = {"id": "localai@llama-3.2-1b-instruct:q4_k_m", "name": "llama"}
GRANITE = {"id": "localai@granite-embedding-107m-multilingual", "name": "text-embedding-ada-002"}


@pytest.fixture(scope="module")
def localai_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    models = tmp_path_factory.mktemp("localai-models")
    with serve_app(create_app(Behaviour(launch_latency=0.3), {"MODELS_PATH": str(models)})) as url:
        yield url


@pytest.fixture
def client(localai_url: str) -> Iterator[LocalAIClient]:
    with LocalAIClient(localai_url) as localai:
        yield localai


def wait_job(client: LocalAIClient, job_uuid: str, **kwargs: Any) -> JobStatus:
    """Follow a job through the waits runner; its last status."""
    seen: list[JobStatus] = []
    status = wait_until_done(JobWait(client, job_uuid, on_progress=seen.append, **kwargs))
    assert status.ok, status
    return seen[-1]


def install(client: LocalAIClient, body: dict) -> JobStatus:
    return wait_job(client, client.apply(body))


def test_apply_then_poll_the_job_until_the_model_is_listed_then_chat(client: LocalAIClient) -> None:
    assert client.ready() is True
    recorder = RequestRecorder(client)
    job_uuid = client.apply(LLAMA)
    assert recorder.last("POST", "/models/apply").json == LLAMA
    assert "llama" not in client.models()

    seen: list[JobStatus] = []
    assert wait_until_done(JobWait(client, job_uuid, on_progress=seen.append)).ok
    final = seen[-1]
    assert recorder.last("GET", f"/models/jobs/{job_uuid}")
    assert any(not status.processed for status in seen), "the job was never seen running"
    assert all(not status.failed for status in seen)
    assert final == seen[-1]
    assert (final.processed, final.failed, final.message, final.progress, final.error) == (
        True,
        False,
        "completed",
        100.0,
        None,
    )
    assert "llama" in client.models()

    chat = client.chat("llama", "Hello there", max_tokens=4)
    assert recorder.last("POST", "/v1/chat/completions").json == {
        "model": "llama",
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": 4,
    }
    assert chat.text == "This is llama on"
    assert chat.total_tokens == 2 + 4

    completion = client.chat("llama", "ping", completion_type="completion")
    assert recorder.last("POST", "/v1/completions").json == {
        "model": "llama",
        "prompt": "ping",
        "max_tokens": 8,
    }
    assert completion.text == "pong"


def test_embeddings_have_the_dimension_of_the_installed_model(client: LocalAIClient) -> None:
    install(client, GRANITE)
    recorder = RequestRecorder(client)
    embeddings = client.embed("text-embedding-ada-002", ["hello world", "another text"])
    assert recorder.last("POST", "/v1/embeddings").json == {
        "model": "text-embedding-ada-002",
        "input": ["hello world", "another text"],
    }
    assert embeddings.dimensions == 384
    assert len(embeddings.vectors) == 2 and embeddings.vectors[0] != embeddings.vectors[1]
    assert math.isclose(math.sqrt(sum(v * v for v in embeddings.vectors[1])), 1.0, rel_tol=1e-6)
    assert embeddings.total_tokens == 4


def test_a_failed_install_is_detected_and_raised_with_the_server_error(client: LocalAIClient) -> None:
    job_uuid = client.apply({"id": "localai@no-such-model", "name": "ghost"})
    with pytest.raises(LocalAIJobFailed) as failed:
        wait_until_done(JobWait(client, job_uuid, what="install of ghost"))
    status = client.job(job_uuid)
    assert status.processed and status.failed
    assert status.error and "no-such-model" in status.error
    assert status.message == f"error: {status.error}"
    assert str(failed.value) == f"localai install of ghost failed: {status.error}"
    assert failed.value.status == status
    assert "ghost" not in client.models()


def test_delete_removes_the_model(client: LocalAIClient) -> None:
    install(client, {"id": "localai@qwen3-0.6b", "name": "to-delete"})
    assert "to-delete" in client.models()
    recorder = RequestRecorder(client)
    final = wait_job(client, client.delete("to-delete"))
    assert recorder.last("POST", "/models/delete/to-delete")
    assert final.processed and not final.failed
    assert "to-delete" not in client.models()


def test_inference_errors_name_the_model_and_carry_localais_message(client: LocalAIClient) -> None:
    with pytest.raises(HttpError) as failed:
        client.chat("ghost", "hi")
    assert failed.value.status == 404
    assert str(failed.value).startswith("chat completion with localai model ghost: localai: POST ")
    assert (
        failed.value.server_message == 'model "ghost" not found. To see available models, call GET /v1/models'
    )


def test_unknown_job_is_an_error(client: LocalAIClient) -> None:
    with pytest.raises(HttpError) as failed:
        client.job("00000000-0000-0000-0000-000000000000")
    assert "could not find any status for ID" in str(failed.value)


def test_the_gallery_lists_entries(client: LocalAIClient) -> None:
    names = {entry["name"] for entry in client.available()}
    assert {"qwen3-0.6b", "granite-embedding-107m-multilingual"} <= names
    assert client.version().startswith("v4.9.0")


def test_ready_is_false_while_starting_and_while_the_port_is_closed(tmp_path: Path) -> None:
    closed = LocalAIClient(f"http://127.0.0.1:{free_port()}")
    assert closed.ready() is False
    app = create_app(Behaviour(ready_delay=0.3), {"MODELS_PATH": str(tmp_path)})
    with serve_app(app) as url, LocalAIClient(url) as client:
        assert client.ready() is False
        time.sleep(0.35)
        assert client.ready() is True


def test_api_key_is_sent_as_a_bearer(tmp_path: Path) -> None:
    app = create_app(Behaviour(), {"MODELS_PATH": str(tmp_path), "LOCALAI_API_KEY": "secret-key"})
    with serve_app(app) as url:
        with LocalAIClient(url) as anonymous, pytest.raises(HttpError) as refused:
            anonymous.models()
        assert refused.value.status == 401
        with LocalAIClient(url, api_key="secret-key") as keyed:
            assert keyed.models() == []


@pytest.mark.parametrize(
    ("body", "failed", "error"),
    [
        ({"processed": False, "message": "processing model: x", "progress": 12.5}, False, None),
        ({"processed": True, "message": "completed", "progress": 100}, False, None),
        ({"processed": True, "message": "completed", "error": None}, False, None),
        # v2.x / v3.x: a Go error interface serialised as {} on failure
        (
            {"processed": True, "message": "error: could not download", "error": {}},
            True,
            "could not download",
        ),
        ({"processed": True, "message": "error: boom", "error": "boom"}, True, "boom"),
        ({"processed": True, "message": "cancelled", "cancelled": True}, True, "cancelled"),
    ],
)
def test_job_failure_follows_the_reference_rule(body: dict, failed: bool, error: str | None) -> None:
    status = JobStatus.from_json(body)
    assert status.failed is failed
    assert status.error == error


def test_a_job_that_never_finishes_times_out_with_its_last_state() -> None:
    server = ScriptedServer().on(
        "GET",
        "/models/jobs/j1",
        httpx.Response(200, json={"processed": False, "message": "downloading", "progress": 40}),
    )
    with LocalAIClient("http://localai:8080", transport=server.transport()) as client:
        status = wait_until_done(JobWait(client, "j1"), timeout=0.2, stall_timeout=10)
    assert status.state == "timeout"
    assert status.detail == "downloading 40% (gave up after 0s)"


def test_apply_is_never_retried_but_reads_are() -> None:
    busy = httpx.Response(503, json={"error": {"code": 503, "message": "busy", "type": ""}})
    server = (
        ScriptedServer()
        .on("POST", "/models/apply", busy)
        .on("GET", "/v1/models", busy, httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]}))
    )
    client = LocalAIClient("http://localai:8080", transport=server.transport())
    with pytest.raises(TransientHttpError) as failed:
        client.apply(LLAMA)
    assert failed.value.server_message == "busy"
    assert len(server.to("POST", "/models/apply")) == 1
    assert client.models() == ["m"]
    assert len(server.to("GET", "/v1/models")) == 2
    client.close()
