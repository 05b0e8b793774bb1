"""Workers on other hosts: the real Xinference 4.1.0 as a supervisor with one local worker, and
a worker on a "second host": a compose project of its own (`difystack worker up`), on its own
network, that reaches the supervisor only through the ports the supervisor publishes on this
machine's address, and is reached back through the ports it publishes itself.

The address both sides use is the one containers reach this machine at (`host-gateway`), the
way two machines on one LAN reach each other. Dify is the strict fake, whose plugin daemon
validates the credentials against the supervisor over the compose network.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from difystack.pytest_plugin import remove_project
from tests.conftest import free_port, user_env
from tests.docker.conftest import BASE_IMAGE, StackUnderTest
from tests.docker.fakes_access import secrets_of
from tests.docker.test_real_xinference import (
    CHAT,
    EMBEDDING,
    IN_COMPOSE,
    assert_registered_and_default,
    assert_validated_by_the_real_plugin,
    xinference_api,
)

pytestmark = pytest.mark.docker


def host_gateway() -> str:
    """The address a container reaches this machine at (what `host-gateway` stands for)."""
    found = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--add-host",
            "this-host:host-gateway",
            BASE_IMAGE,
            "python3",
            "-c",
            "import socket; print(socket.gethostbyname('this-host'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


def on_second_host(home: Path, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """A difystack command on the second "host": its own state directory, nothing of the stack's."""
    return subprocess.run(
        [sys.executable, "-m", "difystack", *args],
        capture_output=True,
        text=True,
        cwd=home.parent,
        env=user_env(DIFYSTACK_HOME=home, COLUMNS="200"),
        timeout=timeout,
        check=False,
    )


def networks_of(container: str) -> set[str]:
    found = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", container],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    return set(json.loads(found.stdout))


def cluster_config(real_xinference: dict[str, Any], gateway: str, name: str) -> dict[str, Any]:
    models = {m["uid"]: dict(m) for m in real_xinference["xinference"]["models"]}
    models[CHAT]["worker"] = 1
    models[EMBEDDING]["worker"] = name
    return {
        "topology": "distributed",
        "workers": 1,
        "supervisor_port": free_port(),
        "join_address": gateway,
        # Counted from the supervisor's first answer; short, so the missing case fails soon.
        "external_workers": [{"name": name, "address": gateway, "gpu": False, "join_timeout": 45}],
        "models": [models[CHAT], models[EMBEDDING]],
    }


def test_a_worker_on_a_second_network_joins_through_the_published_ports_and_runs_its_model(
    make_stack, real_xinference
) -> None:
    gateway = host_gateway()
    name = f"gpu-{secrets.token_hex(2)}"
    stack: StackUnderTest = make_stack(
        images=real_xinference["images"],
        xinference=cluster_config(real_xinference, gateway, name),
        localai={"enabled": False},
    )
    second_host = stack.root / "second-host"
    try:
        # Nothing runs on the second host yet: `up` names the worker and the command to run there.
        missing = stack.cli("up", "--timeout", "900", timeout=1200)
        assert missing.returncode != 0, missing.stdout + missing.stderr
        join = (
            f"difystack worker up --supervisor {gateway}:{stack.config['xinference']['port']} "
            f"--name {name} --address {gateway} --cpu --image {real_xinference['images']['xinference']}"
        )
        assert f"external worker {name} is not ready" in missing.stderr, missing.stderr
        assert f"on {name} ({gateway}) run: {join}" in missing.stderr, missing.stderr

        # The second host runs exactly that command.
        joined = on_second_host(second_host, shlex.split(join)[1:])
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert f"joined as {name}:30001" in joined.stdout, joined.stdout
        worker_container = f"difystack-worker-{name}-xinference-worker-1"
        assert networks_of(worker_container) == {f"difystack-worker-{name}_default"}
        assert not networks_of(worker_container) & networks_of(f"{stack.name}-xinference-1")

        # Now `up` finds both workers (one row each) and places each model on its own.
        second = stack.cli("up", "--timeout", "900", timeout=1200)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"external worker {name}" in second.stdout and f"joined as {name}:30001" in second.stdout
        listed = stack.cli("models", "--json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        rows = {m["id"]: (m["server_state"], m["worker"]) for m in json.loads(listed.stdout)}
        assert rows == {
            CHAT: ("running", "xinference-worker-1:30001"),
            EMBEDDING: ("running", f"{name}:30001"),
        }

        # The supervisor reaches the model process on the second host through its published ports.
        api_key = secrets_of(stack)["xinference_api_key"]
        with xinference_api(stack, api_key) as api:
            vectors = api.post("/v1/embeddings", json={"model": EMBEDDING, "input": ["hi"]}).json()
            assert len(vectors["data"][0]["embedding"]) == 384
            assert_validated_by_the_real_plugin(stack, api, IN_COMPOSE)
        assert_registered_and_default(stack, api_key=api_key)

        status = on_second_host(second_host, ["worker", "status", "--json"], timeout=120)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert (report["worker"], report["joined_as"]) == (name, f"{name}:30001")
        assert report["container"]["health"] == "healthy"
    finally:
        remove_project(f"difystack-worker-{name}")
