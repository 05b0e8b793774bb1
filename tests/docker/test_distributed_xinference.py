"""Real distributed Xinference: one supervisor and two workers, all the real 4.1.0 image.

The supervisor runs `xinference-supervisor`, each worker `xinference-worker` in its own
container; each declared model is pinned to a worker (`worker:` -> the launch's worker_ip).
Dify is the strict fake, whose plugin daemon validates the credentials against the supervisor
over the compose network.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.docker.conftest import StackUnderTest
from tests.docker.test_real_xinference import (
    CHAT,
    EMBEDDING,
    assert_registered_and_default,
    assert_up_again_changes_nothing,
    assert_validated_by_the_real_plugin,
    xinference_api,
)

pytestmark = pytest.mark.docker

IN_COMPOSE = "http://xinference:9997"


def pinned(real_xinference: dict[str, Any]) -> list[dict[str, Any]]:
    """The image's two models, the chat model on worker 1 and the embedding model on worker 2."""
    models = {m["uid"]: dict(m) for m in real_xinference["xinference"]["models"]}
    models[CHAT]["worker"] = 1
    models[EMBEDDING]["worker"] = 2
    return [models[CHAT], models[EMBEDDING]]


def worker_of(stack: StackUnderTest, uid: str) -> list[str]:
    with xinference_api(stack) as api:
        rows = api.get("/v1/models/instances", params={"model_uid": uid}).json()
    return [r["worker_address"] for row in rows for r in row.get("replica_statuses") or []]


def test_two_real_workers_run_the_models_pinned_to_them_and_a_restarted_worker_gets_its_own_back(
    make_stack, real_xinference
) -> None:
    stack: StackUnderTest = make_stack(
        images=real_xinference["images"],
        xinference={"topology": "distributed", "workers": 2, "models": pinned(real_xinference)},
        localai={"enabled": False},
    )
    first = stack.cli("up", "--timeout", "900", timeout=1200)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 workers joined" in first.stdout

    with xinference_api(stack) as api:
        workers = sorted(api.get("/status").json()["workers"])
        assert workers == ["xinference-worker-1:30001", "xinference-worker-2:30002"]
        assert {m["id"] for m in api.get("/v1/models").json()["data"]} == {CHAT, EMBEDDING}
        vectors = api.post("/v1/embeddings", json={"model": EMBEDDING, "input": ["hi"]}).json()
        assert len(vectors["data"][0]["embedding"]) == 384
    assert worker_of(stack, CHAT) == ["xinference-worker-1:30001"]
    assert worker_of(stack, EMBEDDING) == ["xinference-worker-2:30002"]

    listed = stack.cli("models", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = {m["id"]: (m["server_state"], m["worker"], m["dify_state"]) for m in json.loads(listed.stdout)}
    assert rows == {
        CHAT: ("running", "xinference-worker-1:30001", "registered"),
        EMBEDDING: ("running", "xinference-worker-2:30002", "registered"),
    }
    assert_registered_and_default(stack, api_key=None)
    with xinference_api(stack) as api:
        assert_validated_by_the_real_plugin(stack, api, IN_COMPOSE)
    assert_up_again_changes_nothing(stack)

    # Worker 2's container restarts: its model is gone; worker 1's keeps running.
    restarted = subprocess.run(
        ["docker", "restart", f"{stack.name}-xinference-worker-2-1"], capture_output=True, text=True
    )
    assert restarted.returncode == 0, restarted.stderr
    again = stack.cli("up", "--timeout", "900", timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"launch             {EMBEDDING}" in again.stdout, again.stdout
    assert f"launch             {CHAT}" not in again.stdout, again.stdout
    assert worker_of(stack, EMBEDDING) == ["xinference-worker-2:30002"]
    assert worker_of(stack, CHAT) == ["xinference-worker-1:30001"]
    with xinference_api(stack) as api:
        vectors = api.post("/v1/embeddings", json={"model": EMBEDDING, "input": ["hi"]}).json()
        assert len(vectors["data"][0]["embedding"]) == 384
    assert_up_again_changes_nothing(stack)
