"""The real Xinference profile: the stack's `xinference` service is a REAL Xinference 4.1.0.

Built here by `difystack standins xinference` (CPU torch, two models baked in, no hub). Dify is
the strict fake, whose plugin daemon validates credentials by calling that real server over
the compose network; every other service is a stand-in.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import pytest

from tests.docker.conftest import StackUnderTest
from tests.docker.fakes_access import (
    OUTBOUND,
    XINFERENCE,
    container_journal,
    credentials,
    dify_console,
    secrets_of,
)

pytestmark = pytest.mark.docker

CHAT, EMBEDDING = "gemma-3-270m", "all-minilm-l6-v2"
IN_COMPOSE = "http://xinference:9997"


def up_real_stack(make_stack: Any, real_xinference: dict[str, Any], auth: bool) -> tuple[StackUnderTest, str]:
    """A fresh stack whose `xinference` is the real image, brought up once; returns its output."""
    stack: StackUnderTest = make_stack(
        images=real_xinference["images"],
        xinference={"auth": auth, "models": real_xinference["xinference"]["models"]},
        localai={"enabled": False},
    )
    first = stack.cli("up", "--timeout", "900", timeout=1200)
    assert first.returncode == 0, first.stdout + first.stderr
    return stack, first.stdout


def assert_up_again_changes_nothing(stack: StackUnderTest) -> None:
    again = stack.cli("up", "--timeout", "300")
    assert again.returncode == 0 and "changes     none" in again.stdout, again.stdout + again.stderr


def xinference_api(stack: StackUnderTest, api_key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.config['xinference']['port']}", headers=headers, timeout=120
    )


def assert_real_models_answer(api: httpx.Client) -> None:
    """The models run on the real server and answer real requests."""
    running = {m["id"]: m for m in api.get("/v1/models").json()["data"]}
    assert set(running) == {CHAT, EMBEDDING}
    described = api.get(f"/v1/models/{EMBEDDING}").json()
    assert (described["model_type"], described["dimensions"]) == ("embedding", 384)
    vectors = api.post("/v1/embeddings", json={"model": EMBEDDING, "input": ["hello"]}).json()["data"]
    assert len(vectors[0]["embedding"]) == 384
    chat = api.post(
        "/v1/chat/completions",
        json={"model": CHAT, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    ).json()
    assert chat["usage"]["completion_tokens"] >= 1 and chat["choices"][0]["message"]["role"] == "assistant"


def assert_registered_from_paths(api: httpx.Client) -> None:
    assert api.get("/v1/cluster/version").json()["version"] == "4.1.0"  # the real release
    for name, model_type in ((CHAT, "LLM"), (EMBEDDING, "embedding")):
        registration = api.get(f"/v1/model_registrations/{model_type}/{name}").json()
        assert registration["is_builtin"] is False


def assert_registered_and_default(stack: StackUnderTest, api_key: str | None) -> None:
    console = dify_console(stack)
    for model, model_type in ((CHAT, "llm"), (EMBEDDING, "text-embedding")):
        held = credentials(console, XINFERENCE, model, model_type)
        assert (held["server_url"], held["model_uid"]) == (IN_COMPOSE, model)
        assert bool(held.get("api_key")) == bool(api_key)
    assert console.default_model("llm")["model"] == CHAT
    assert console.default_model("text-embedding")["model"] == EMBEDDING


def validation_calls(stack: StackUnderTest) -> list[tuple[str, str, int]]:
    """What Dify's plugin daemon asked the model server while validating credentials."""
    entries = container_journal(stack, "plugin_daemon", 5002, path=OUTBOUND)
    return [(e["method"], e["url"], e["status"]) for e in entries if e["url"].startswith(IN_COMPOSE)]


def test_real_xinference_models_are_registered_launched_verified_and_given_to_dify(
    make_stack, real_xinference
) -> None:
    stack, output = up_real_stack(make_stack, real_xinference, auth=False)
    assert f"register-custom    {CHAT}" in output and f"register-custom    {EMBEDDING}" in output
    assert "384-dimensional embeddings" in output

    with xinference_api(stack) as api:
        assert_real_models_answer(api)
        assert_registered_from_paths(api)
    assert_registered_and_default(stack, api_key=None)
    calls = validation_calls(stack)
    assert ("GET", f"{IN_COMPOSE}/v1/models/{CHAT}", 200) in calls
    assert ("POST", f"{IN_COMPOSE}/v1/embeddings", 200) in calls

    assert_up_again_changes_nothing(stack)

    # A restarted Xinference keeps the persisted registrations but forgets running models.
    restarted = subprocess.run(["docker", "restart", f"{stack.name}-xinference-1"], capture_output=True)
    assert restarted.returncode == 0, restarted.stderr
    third = stack.cli("up", "--timeout", "900", timeout=1200)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "register-custom" not in third.stdout
    assert f"launch             {CHAT}" in third.stdout and f"launch             {EMBEDDING}" in third.stdout
    with xinference_api(stack) as api:
        assert {m["id"] for m in api.get("/v1/models").json()["data"]} == {CHAT, EMBEDDING}


def test_real_xinference_with_accounts_hands_dify_an_api_key_that_validates(
    make_stack, real_xinference
) -> None:
    stack, output = up_real_stack(make_stack, real_xinference, auth=True)
    assert "create-admin" in output and "create-api-key" in output

    with xinference_api(stack) as anonymous:
        assert anonymous.get("/v1/models").status_code == 401  # the real server's accounts are on
    api_key = secrets_of(stack)["xinference_api_key"]
    with xinference_api(stack, api_key) as api:
        assert_real_models_answer(api)
    assert_registered_and_default(stack, api_key=api_key)
    calls = validation_calls(stack)
    assert ("GET", f"{IN_COMPOSE}/v1/models/{CHAT}", 200) in calls
    assert calls and all(status == 200 for _, _, status in calls), json.dumps(calls)

    # Read-only commands log in as difystack's Xinference admin.
    plan = stack.cli("plan", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout) == [], plan.stdout + plan.stderr
    models = json.loads(stack.cli("models", "--json").stdout)
    assert {(m["id"], m["server_state"], m["dify_state"]) for m in models} == {
        (CHAT, "running", "registered"),
        (EMBEDDING, "running", "registered"),
    }
    assert_up_again_changes_nothing(stack)
