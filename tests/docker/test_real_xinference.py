"""The real Xinference profile: the stack's `xinference` service is a REAL Xinference 4.1.0.

Built here by `difystack standins xinference` (CPU torch, two models baked in, no hub). Dify is
the strict fake, whose plugin daemon validates credentials by calling that real server over
the compose network; every other service is a stand-in.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from difystack.clients.dify import DifyConsole
from difystack.clients.xinference import XinferenceClient
from difystack.reconcile.xinference_accounts import SETUP_TOKEN
from tests.conftest import free_port
from tests.docker.conftest import StackUnderTest
from tests.docker.fakes_access import (
    XINFERENCE,
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


def assert_validated_by_the_real_plugin(stack: StackUnderTest, api: httpx.Client, server_url: str) -> None:
    """Dify holds what the real plugin read from that server while validating (the real
    Xinference keeps no access log, so its describe answers are the evidence)."""
    console = dify_console(stack)
    chat = api.get(f"/v1/models/{CHAT}").json()
    held = credentials(console, XINFERENCE, CHAT, "llm")
    assert held["server_url"] == server_url
    assert (held["completion_type"], str(held["context_length"])) == (
        "chat",
        str(chat.get("context_length", 2048)),
    )
    embedding = api.get(f"/v1/models/{EMBEDDING}").json()
    held = credentials(console, XINFERENCE, EMBEDDING, "text-embedding")
    assert held["server_url"] == server_url
    assert str(held["max_tokens"]) == str(embedding.get("max_tokens", 512)), held


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
    with xinference_api(stack) as api:
        assert_validated_by_the_real_plugin(stack, api, IN_COMPOSE)

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

    # A recreated container (new image, `up --force-recreate`) finds what the old one downloaded:
    # the hub caches live in the volume, so the links Xinference keeps into them still resolve.
    container = f"{stack.name}-xinference-1"
    before = container_id(container)
    in_container(container, PLANT_DOWNLOAD)
    recreated = stack.cli("up", "--force-recreate", "--timeout", "900", timeout=1200)
    assert recreated.returncode == 0, recreated.stdout + recreated.stderr
    assert container_id(container) != before
    assert f"launch             {CHAT}" in recreated.stdout, recreated.stdout
    assert f"launch             {EMBEDDING}" in recreated.stdout, recreated.stdout
    assert in_container(container, "find /data -xtype l") == ""  # no dangling link
    assert in_container(container, 'cat "$XINFERENCE_HOME/cache/probe-model/weights"') == "weights"
    with xinference_api(stack) as api:
        assert_real_models_answer(api)


# What a hub download leaves: the file in the Hugging Face cache, a link to it in Xinference's cache.
PLANT_DOWNLOAD = (
    'set -e; mkdir -p "$HF_HOME/hub/probe" "$XINFERENCE_HOME/cache/probe-model"; '
    'printf weights > "$HF_HOME/hub/probe/blob"; '
    'ln -sf "$HF_HOME/hub/probe/blob" "$XINFERENCE_HOME/cache/probe-model/weights"'
)


def container_id(name: str) -> str:
    found = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


def in_container(name: str, script: str) -> str:
    ran = subprocess.run(["docker", "exec", name, "sh", "-c", script], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


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
    with xinference_api(stack, api_key) as api:
        assert_validated_by_the_real_plugin(stack, api, IN_COMPOSE)

    # Read-only commands log in as difystack's Xinference admin.
    plan = stack.cli("plan", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout) == [], plan.stdout + plan.stderr
    models = json.loads(stack.cli("models", "--json").stdout)
    assert {(m["id"], m["server_state"], m["dify_state"]) for m in models} == {
        (CHAT, "running", "registered"),
        (EMBEDDING, "running", "registered"),
    }
    assert_up_again_changes_nothing(stack)


HAND_MADE_DIFY_PASSWORD = "Hand-made-Passw0rd"
XINFERENCE_ADMIN = ("boss", "Xinf-Passw0rd-by-hand")
NO_XINFERENCE_LOGIN = {
    name: ""
    for name in (
        "DIFYSTACK_XINFERENCE_USERNAME",
        "DIFYSTACK_XINFERENCE_PASSWORD",
        "DIFYSTACK_XINFERENCE_TOKEN",
        "DIFYSTACK_XINFERENCE_API_KEY",
        "DIFYSTACK_XINFERENCE_SETUP_TOKEN",
    )
}


def start_xinference_by_hand(image: str, project: str, port: int, where: Path) -> Path:
    """The real Xinference as a person runs it: its own compose project, accounts on (the default)."""
    compose_file = where / "compose.yaml"
    service = {
        "image": image,
        "command": ["xinference-local", "-H", "0.0.0.0", "--port", "9997"],
        "environment": {"XINFERENCE_HOME": "/data"},
        "ports": [f"{port}:9997"],
    }
    compose_file.write_text(yaml.safe_dump({"services": {"xinference": service}}), encoding="utf-8")
    started = by_hand(compose_file, project, "up", "-d")
    assert started.returncode == 0, started.stderr
    return compose_file


def by_hand(compose_file: Path, project: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["docker", "compose", "-f", str(compose_file), "-p", project, *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def set_up_xinference_admin(compose_file: Path, project: str, url: str) -> None:
    """What its owner does first: read the setup token from the log and create the admin."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        tokens = SETUP_TOKEN.findall(by_hand(compose_file, project, "logs", "xinference").stdout)
        if tokens:
            with XinferenceClient(url) as client:
                client.setup_admin(tokens[-1], *XINFERENCE_ADMIN)
            return
        time.sleep(2)
    pytest.fail(
        "the real Xinference printed no setup token: " + by_hand(compose_file, project, "logs").stdout
    )


def running_on(url: str) -> set[str]:
    with XinferenceClient(url) as client:
        client.http.headers["Authorization"] = f"Bearer {client.login(*XINFERENCE_ADMIN)}"
        return set(client.running_models())


def test_register_with_a_real_xinference_started_by_hand_with_its_accounts_on(
    make_stack, real_xinference, tmp_path: Path
) -> None:
    port, project = free_port(), f"xbyhand{secrets.token_hex(3)}"
    url = f"http://127.0.0.1:{port}"
    compose_file = start_xinference_by_hand(real_xinference["images"]["xinference"], project, port, tmp_path)
    try:
        # Dify set up by hand too: its own compose project, admin created in the setup page.
        stack: StackUnderTest = make_stack(
            xinference={"external": {"url": url}, "models": real_xinference["xinference"]["models"]},
            localai={"enabled": False},
        )
        assert stack.cli("render", extra_env=NO_XINFERENCE_LOGIN).returncode == 0
        dify_started = stack.compose("up", "-d", "--wait")
        assert dify_started.returncode == 0, dify_started.stderr
        dify = f"http://127.0.0.1:{stack.config['dify']['port']}"
        with DifyConsole(dify) as console:
            console.setup(
                "admin@example.com",
                "admin",
                HAND_MADE_DIFY_PASSWORD,
                init_password=secrets_of(stack)["init_password"],
            )
        set_up_xinference_admin(compose_file, project, url)

        register = ("register", "--dify-url", dify, "--xinference-url", url)
        owner = {"DIFYSTACK_DIFY_ADMIN_PASSWORD": HAND_MADE_DIFY_PASSWORD}
        refused = stack.cli(*register, timeout=1200, extra_env={**owner, **NO_XINFERENCE_LOGIN})
        assert refused.returncode != 0
        errors = [line for line in refused.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and "DIFYSTACK_XINFERENCE_USERNAME" in errors[0], refused.stderr
        assert running_on(url) == set()
        with DifyConsole(dify) as console:
            console.login("admin@example.com", HAND_MADE_DIFY_PASSWORD)
            assert console.installed_plugins() == {}

        username, password = XINFERENCE_ADMIN
        login = {"DIFYSTACK_XINFERENCE_USERNAME": username, "DIFYSTACK_XINFERENCE_PASSWORD": password}
        done = stack.cli(*register, timeout=1200, extra_env={**owner, **NO_XINFERENCE_LOGIN, **login})
        assert done.returncode == 0, done.stdout + done.stderr
        assert password not in done.stdout + done.stderr
        assert running_on(url) == {CHAT, EMBEDDING}
        assert "384-dimensional embeddings" in done.stdout
        console = dify_console(stack)
        from_dify = f"http://host.docker.internal:{port}"
        for model, model_type in ((CHAT, "llm"), (EMBEDDING, "text-embedding")):
            held = credentials(console, XINFERENCE, model, model_type)
            assert (held["server_url"], held["model_uid"]) == (from_dify, model)
            assert held.get("api_key")  # a key made with the login, for Dify
        with XinferenceClient(url) as client:
            client.http.headers["Authorization"] = f"Bearer {client.login(*XINFERENCE_ADMIN)}"
            assert_validated_by_the_real_plugin(stack, client.http, from_dify)
    finally:
        by_hand(compose_file, project, "down", "--volumes")
