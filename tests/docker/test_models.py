"""Deploying the declared models and registering them in Dify, on the real compose network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from difystack.clients.dify import CredentialsRejected, DifyConsole
from difystack.standins import with_env
from tests.conftest import free_port, user_env
from tests.docker.conftest import StackUnderTest
from tests.docker.fakes_access import (
    XINFERENCE,
    container_journal,
    credentials,
    dify_console,
    mutating,
    published_journal,
    secrets_of,
)

pytestmark = pytest.mark.docker

LOCALAI = "langgenius/localai/localai"


def validates(
    console: DifyConsole, provider: str, model: str, model_type: str, creds: dict[str, str]
) -> bool:
    response = console._console(
        "validate",
        "POST",
        f"/console/api/workspaces/current/model-providers/{provider}/models/credentials/validate",
        json={"model": model, "model_type": model_type, "credentials": creds},
    )
    return bool(response.json().get("result") == "success")


def test_up_deploys_verifies_registers_and_converges(make_stack) -> None:
    stack: StackUnderTest = make_stack()
    xport, lport = stack.config["xinference"]["port"], stack.config["localai"]["port"]
    first = stack.cli("up", "--timeout", "300")
    assert first.returncode == 0, first.stdout + first.stderr

    running = httpx.get(f"http://127.0.0.1:{xport}/v1/models").json()["data"]
    assert {m["id"] for m in running} == {"qwen2.5-instruct-0.5b", "bge-small-en-v1.5"}
    listed = httpx.get(f"http://127.0.0.1:{lport}/v1/models").json()["data"]
    assert {"qwen3-0.6b", "granite-embedding-107m"} <= {m["id"] for m in listed}

    console = dify_console(stack)
    assert console.version() == (1, 13, 3)
    llm = credentials(console, XINFERENCE, "qwen2.5-instruct-0.5b", "llm")
    assert {k: llm[k] for k in ("server_url", "model_uid", "invoke_timeout", "max_retries")} == {
        "server_url": "http://xinference:9997",
        "model_uid": "qwen2.5-instruct-0.5b",
        "invoke_timeout": "60",
        "max_retries": "3",
    }
    # Added by the real plugin's validation, from the server's describe, as in real Dify.
    assert llm["completion_type"] == "chat" and int(llm["context_length"]) > 0, llm
    embedding = credentials(console, XINFERENCE, "bge-small-en-v1.5", "text-embedding")
    assert (
        embedding["model_uid"] == "bge-small-en-v1.5" and embedding["server_url"] == "http://xinference:9997"
    )
    assert int(embedding["max_tokens"]) > 0, embedding
    local_llm = credentials(console, LOCALAI, "qwen3-0.6b", "llm")
    assert local_llm["server_url"] == "http://localai:8080/"  # the real plugin adds the trailing /
    assert (local_llm["completion_type"], local_llm["context_size"]) == ("chat_completion", "4096")
    local_embedding = credentials(console, LOCALAI, "granite-embedding-107m", "text-embedding")
    assert "completion_type" not in local_embedding and "context_size" not in local_embedding
    assert console.default_model("llm")["model"] == "qwen2.5-instruct-0.5b"
    assert console.default_model("text-embedding")["model"] == "bge-small-en-v1.5"

    # Dify's plugin validated the registrations by calling the servers over the compose network.
    xinference_seen = published_journal(xport)
    by_dify = [e for e in xinference_seen if e["host"] == "xinference:9997"]
    assert {"/v1/models/qwen2.5-instruct-0.5b", "/v1/models/bge-small-en-v1.5", "/v1/embeddings"} <= {
        e["path"] for e in by_dify
    }
    localai_seen = published_journal(lport)
    assert any(e["host"] == "localai:8080" and e["path"] == "/v1/chat/completions" for e in localai_seen)
    assert any(e["host"] == "localai:8080" and e["path"] == "/embeddings" for e in localai_seen)

    # Second up: nothing changes, no server receives a mutating call.
    published_journal(xport, clear=True)
    published_journal(lport, clear=True)
    container_journal(stack, "api", 5001, clear=True)
    container_journal(stack, "plugin_daemon", 5002, clear=True)
    second = stack.cli("up", "--timeout", "300")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changes     none" in second.stdout
    assert mutating(published_journal(xport)) == []
    assert mutating(published_journal(lport)) == []
    assert mutating(container_journal(stack, "api", 5001)) == []
    assert mutating(container_journal(stack, "plugin_daemon", 5002)) == []

    plan = stack.cli("plan", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout) == []

    # Xinference forgets its models on restart: plan shows the relaunches, up does only those.
    restarted = subprocess.run(
        ["docker", "restart", f"{stack.name}-xinference-1"], capture_output=True, check=False
    )
    assert restarted.returncode == 0
    actions = json.loads(stack.cli("plan", "--json").stdout)
    assert sorted((a["kind"], a["target"]) for a in actions) == [
        ("launch", "bge-small-en-v1.5"),
        ("launch", "qwen2.5-instruct-0.5b"),
    ]
    third = stack.cli("up", "--timeout", "300")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "changes     2:" in third.stdout
    running = httpx.get(f"http://127.0.0.1:{xport}/v1/models").json()["data"]
    assert {m["id"] for m in running} == {"qwen2.5-instruct-0.5b", "bge-small-en-v1.5"}
    console = dify_console(stack)
    assert validates(
        console,
        XINFERENCE,
        "qwen2.5-instruct-0.5b",
        "llm",
        {
            "server_url": "http://xinference:9997",
            "model_uid": "qwen2.5-instruct-0.5b",
            "invoke_timeout": "60",
            "max_retries": "3",
        },
    )
    assert validates(
        console,
        XINFERENCE,
        "bge-small-en-v1.5",
        "text-embedding",
        {
            "server_url": "http://xinference:9997",
            "model_uid": "bge-small-en-v1.5",
            "invoke_timeout": "60",
            "max_retries": "3",
        },
    )

    models = json.loads(stack.cli("models", "--json").stdout)
    assert {(m["id"], m["server_state"], m["dify_state"]) for m in models} == {
        ("qwen2.5-instruct-0.5b", "running", "registered"),
        ("bge-small-en-v1.5", "running", "registered"),
        ("qwen3-0.6b", "installed", "registered"),
        ("granite-embedding-107m", "installed", "registered"),
    }

    # The real plugins refuse what is wrong; difystack names the model and passes their message on.
    xinference_creds = {"server_url": "http://xinference:9997", "invoke_timeout": "60", "max_retries": "3"}
    with pytest.raises(CredentialsRejected) as wrong_uid:
        console.create_credential(XINFERENCE, "ghost", "llm", {**xinference_creds, "model_uid": "ghost"}, "x")
    assert "llm model ghost" in str(wrong_uid.value) and "uid: ghost" in wrong_uid.value.reason
    with pytest.raises(CredentialsRejected) as wrong_type:
        chat_uid = {**xinference_creds, "model_uid": "qwen2.5-instruct-0.5b"}
        console.create_credential(XINFERENCE, "qwen-as-embedding", "text-embedding", chat_uid, "x")
    assert "text-embedding model qwen-as-embedding" in str(wrong_type.value)
    assert "not a text embedding model" in wrong_type.value.reason
    stopped = subprocess.run(["docker", "stop", f"{stack.name}-localai-1"], capture_output=True, check=False)
    assert stopped.returncode == 0, stopped.stderr
    local_creds = {k: local_llm[k] for k in ("server_url", "completion_type", "context_size")}
    with pytest.raises(CredentialsRejected) as server_down:
        console.create_credential(LOCALAI, "qwen3-0.6b-again", "llm", local_creds, "x")
    assert "llm model qwen3-0.6b-again" in str(server_down.value)
    assert "Connection error" in server_down.value.reason, server_down.value.reason  # the plugin's own words


def test_failures_name_the_step_and_a_rerun_after_the_fix_finishes_the_rest(
    make_stack, standin_images
) -> None:
    daemon_failing = with_env(
        standin_images["plugin_daemon"],
        "daemon-install-fails",
        {"DIFYSTACK_FAKE_FAIL": "install:langgenius/xinference"},
    )
    xinference_flaky = with_env(
        standin_images["xinference"],
        "xinference-flaky",
        {"DIFYSTACK_FAKE_FAIL": "launch-once:qwen2.5-instruct"},
    )
    embedding = {"uid": "emb", "type": "embedding", "name": "bge-small-en-v1.5", "dimensions": 384}
    chat = {"uid": "chat", "type": "llm", "name": "no-such-model", "engine": "llama.cpp"}
    stack: StackUnderTest = make_stack(
        images={**standin_images, "plugin_daemon": daemon_failing, "xinference": xinference_flaky},
        localai={"enabled": False},
        xinference={"models": [embedding, chat]},
    )

    broken = stack.cli("up", "--timeout", "300")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "xinference model chat failed: xinference has no LLM model named no-such-model" in broken.stderr
    assert "dify plugins failed" in broken.stderr and "langgenius/xinference" in broken.stderr
    assert "failed to install dependencies" in broken.stderr
    assert "Traceback" not in broken.stderr
    xport = stack.config["xinference"]["port"]
    assert [m["id"] for m in httpx.get(f"http://127.0.0.1:{xport}/v1/models").json()["data"]] == ["emb"]

    stack.config["images"]["plugin_daemon"] = standin_images["plugin_daemon"]
    stack.config["xinference"]["models"][1] = {
        **chat,
        "name": "qwen2.5-instruct",
        "engine": "vLLM",
        "format": "pytorch",
        "size": "0_5",
        "quantization": "none",
    }
    engine = stack.cli("up", "--timeout", "300")
    assert engine.returncode == 1, engine.stdout + engine.stderr
    assert "xinference model chat failed" in engine.stderr and "vLLM" in engine.stderr
    assert "install-plugins" in engine.stdout or "dify plugins" in engine.stdout
    assert "launch             emb" not in engine.stdout  # the embedding model kept running

    stack.config["xinference"]["models"][1] = {
        **chat,
        "name": "qwen2.5-instruct",
        "engine": "llama.cpp",
        "format": "ggufv2",
        "size": "0_5",
        "quantization": "q4_k_m",
    }
    crashed = stack.cli("up", "--timeout", "300")
    assert crashed.returncode == 1, crashed.stdout + crashed.stderr
    assert "xinference model chat failed: launch failed" in crashed.stderr
    assert "injected launch failure" in crashed.stderr

    fixed = stack.cli("up", "--timeout", "300")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    changes = fixed.stdout.split("changes", 1)[1]
    assert "launch             chat" in changes and "create-credential  xinference/chat (llm)" in changes
    assert "emb" not in changes.split("set-default-models")[0].replace(
        "create-credential  xinference/chat", ""
    )

    # A wrong admin password in the state: one clear error, exactly one login attempt (no lockout).
    home = stack.root / "home" / stack.name
    correct = stack.cli("secrets", "show", "admin_password").stdout.strip().split("=", 1)[1]
    (home / "dify-session.json").unlink()
    setter = subprocess.run(
        [sys.executable, "-m", "difystack", "secrets", "set", "admin_password", "-c", str(stack.stack_file)],
        input="Wrong-passw0rd\n",
        text=True,
        capture_output=True,
        env=user_env(DIFYSTACK_HOME=stack.root / "home"),
        check=False,
    )
    assert setter.returncode == 0, setter.stderr
    container_journal(stack, "api", 5001, clear=True)
    refused = stack.cli("up", "--timeout", "300")
    assert refused.returncode == 1
    assert "stored admin password does not match" in refused.stderr
    logins = [e for e in container_journal(stack, "api", 5001) if e["path"] == "/console/api/login"]
    assert len(logins) == 1
    subprocess.run(
        [sys.executable, "-m", "difystack", "secrets", "set", "admin_password", "-c", str(stack.stack_file)],
        input=correct + "\n",
        text=True,
        capture_output=True,
        env=user_env(DIFYSTACK_HOME=stack.root / "home"),
        check=True,
    )
    repaired = stack.cli("up", "--timeout", "300")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "changes     none" in repaired.stdout


def test_register_against_servers_started_outside_difystack(make_stack, tmp_path: Path) -> None:
    xport, lport = free_port(), free_port()
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "difystack.fakes", role, "--host", "0.0.0.0", "--port", str(port)],
            env=user_env(**extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for role, port, extra in (
            ("xinference", xport, {"XINFERENCE_HOME": str(tmp_path / "xh"), "XINFERENCE_AUTH_ADVANCED": "0"}),
            ("localai", lport, {"MODELS_PATH": str(tmp_path / "models")}),
        )
    ]
    try:
        # Dify started elsewhere: a rendered project brought up with plain `docker compose`.
        stack: StackUnderTest = make_stack(
            xinference={"external": {"url": f"http://127.0.0.1:{xport}"}},
            localai={"external": {"url": f"http://127.0.0.1:{lport}"}},
        )
        rendered = stack.cli("render")
        assert rendered.returncode == 0, rendered.stderr
        started = stack.compose("up", "-d", "--wait")
        assert started.returncode == 0, started.stderr
        for port in (xport, lport):
            httpx.get(f"http://127.0.0.1:{port}/_fake/requests", timeout=10).raise_for_status()

        dify = f"http://127.0.0.1:{stack.config['dify']['port']}"
        register = (
            "register",
            "--dify-url",
            dify,
            "--xinference-url",
            f"http://127.0.0.1:{xport}",
            "--localai-url",
            f"http://127.0.0.1:{lport}",
        )
        # As its owner would: the INIT_PASSWORD that Dify was started with, in the environment.
        owner = {"DIFYSTACK_DIFY_INIT_PASSWORD": secrets_of(stack)["init_password"]}
        refused = stack.cli(
            *register, timeout=300, extra_env={"DIFYSTACK_DIFY_INIT_PASSWORD": "wrong-Passw0rd"}
        )
        assert refused.returncode == 1 and "INIT_PASSWORD" in refused.stderr, refused.stdout + refused.stderr
        result = stack.cli(*register, timeout=300, extra_env=owner)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "host.docker.internal" in result.stderr  # the note about reaching the host from Dify
        console = dify_console(stack)
        llm = credentials(console, XINFERENCE, "qwen2.5-instruct-0.5b", "llm")
        assert llm["server_url"] == f"http://host.docker.internal:{xport}"
        assert credentials(console, LOCALAI, "qwen3-0.6b", "llm")["server_url"].rstrip("/") == (
            f"http://host.docker.internal:{lport}"
        )
        seen = published_journal(xport)
        assert any(
            e["host"] == f"host.docker.internal:{xport}" and e["path"] == "/v1/models/qwen2.5-instruct-0.5b"
            for e in seen
        ), "Dify's validation did not reach the host's Xinference"

        again = stack.cli(*register, timeout=300, extra_env=owner)
        assert again.returncode == 0 and "0 change(s)" in again.stdout, again.stdout + again.stderr
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)


def test_xinference_accounts_are_bootstrapped_and_dify_gets_an_api_key(make_stack) -> None:
    stack: StackUnderTest = make_stack(xinference={"auth": True}, localai={"enabled": False})
    first = stack.cli("up", "--timeout", "300")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "create-admin       admin" in first.stdout and "create-api-key" in first.stdout
    xport = stack.config["xinference"]["port"]
    assert httpx.get(f"http://127.0.0.1:{xport}/v1/models").status_code == 401  # accounts are on
    held = credentials(dify_console(stack), XINFERENCE, "bge-small-en-v1.5", "text-embedding")
    assert held["api_key"] and held["api_key"] != secrets_key(stack)  # stored, shown obfuscated
    by_dify = [e for e in published_journal(xport) if e["host"] == "xinference:9997"]
    assert by_dify and all(e["status"] == 200 for e in by_dify)  # the plugin authenticated with the key
    again = stack.cli("up", "--timeout", "300")
    assert again.returncode == 0 and "changes     none" in again.stdout, again.stdout + again.stderr


def secrets_key(stack: StackUnderTest) -> str:
    return secrets_of(stack)["xinference_api_key"]
