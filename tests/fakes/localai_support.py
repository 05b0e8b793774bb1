"""What the contract tests of the fake LocalAI share: a running fake and a client, gallery jobs
and the listings and embeddings the tests read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.localai import create_app
from tests.conftest import serve_app

STARTING_BODY = {"status": "starting", "reason": "startup preload in progress"}
DIFY_CHAT_HEADERS = {"Authorization": "Bearer 1"}
DIFY_EMBEDDING_HEADERS = {"Authorization": "Bearer 123"}


@contextmanager
def localai(models_path: Path, behaviour: Behaviour | None = None, **env: str) -> Iterator[httpx.Client]:
    """A fake LocalAI on a free port with MODELS_PATH=models_path, and a client for it."""
    app = create_app(behaviour or Behaviour(), {"MODELS_PATH": str(models_path), **env})
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def wait_for_job(client: httpx.Client, job_uuid: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll GET /models/jobs/<uuid> until processed, as the LocalAI docs' wait loop does."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/models/jobs/{job_uuid}")
        assert response.status_code == 200, response.text
        status = response.json()
        if status["processed"]:
            return status
        assert time.monotonic() < deadline, f"job {job_uuid} still running: {status}"
        time.sleep(0.02)


def apply(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/models/apply", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["uuid"])


def install(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    status = wait_for_job(client, apply(client, body))
    assert status["message"] == "completed", status
    return status


def assert_failed(status: dict[str, Any]) -> None:
    """The failure shape of B3: processed, message 'error: <text>', error '<text>'."""
    assert status["processed"] is True
    assert status["message"].startswith("error")
    assert status["error"]
    assert status["message"] == f"error: {status['error']}"


def listed_models(client: httpx.Client, path: str = "/v1/models") -> list[str]:
    response = client.get(path)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert all(item["object"] == "model" for item in body["data"])
    return [item["id"] for item in body["data"]]


def embedding_length(client: httpx.Client, model: str, path: str = "/v1/embeddings") -> int:
    response = client.post(path, json={"model": model, "input": "ping"})
    assert response.status_code == 200, response.text
    return len(response.json()["data"][0]["embedding"])


def write_yaml(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(content))
    return path
