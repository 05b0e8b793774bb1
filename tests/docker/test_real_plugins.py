"""Dify's real official plugins in the docker tier, on the distributed reference stack.

The stack file is compose/xinference-distributed-offline-plugins/difystack.yaml as committed
(supervisor + two workers, plugins installed from local .difypkg files, signatures off), with the
real Xinference image, the real packages from ../shared/upstream/dify-official-plugins/ and the
plugin-daemon stand-in that runs them unmodified over the stdio protocol.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.docker.conftest import StackUnderTest
from tests.docker.fakes_access import XINFERENCE, credentials, dify_console
from tests.docker.test_distributed_xinference import pinned, worker_of
from tests.docker.test_real_xinference import CHAT, EMBEDDING, IN_COMPOSE
from tests.fakes.real_plugins import package

pytestmark = pytest.mark.docker

REFERENCE = REPO_ROOT / "compose" / "xinference-distributed-offline-plugins" / "difystack.yaml"


def reference_stack(make_stack: Any, real_xinference: dict[str, Any]) -> StackUnderTest:
    reference = yaml.safe_load(REFERENCE.read_text(encoding="utf-8"))
    plugins = reference["dify"]["plugins"]
    plugins["packages"] = {
        "langgenius/xinference": str(package("xinference")),
        "langgenius/localai": str(package("localai")),
    }
    return make_stack(
        gpu=reference["gpu"],
        localai=reference["localai"],
        images=real_xinference["images"],
        xinference={**reference["xinference"], "models": pinned(real_xinference)},
        dify=reference["dify"],
    )


def test_the_distributed_reference_stack_installs_the_real_packages_and_validates_through_them(
    make_stack, real_xinference
) -> None:
    stack = reference_stack(make_stack, real_xinference)
    first = stack.cli("up", "--timeout", "900", timeout=1200)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "install-plugins    langgenius/xinference" in first.stdout, first.stdout
    services = {s["service"]: s for s in stack.status()["services"]}
    assert {"xinference", "xinference-worker-1", "xinference-worker-2", "plugin_daemon"} <= set(services)
    for name, service in services.items():
        healthy = ("exited", 0) if service["one_shot"] else ("running", "healthy")
        state = (service["state"], service["exit_code"] if service["one_shot"] else service["health"])
        assert state == healthy and service["ready"], (name, service)
    assert worker_of(stack, CHAT) != worker_of(stack, EMBEDDING)

    console = dify_console(stack)
    installed = console.installed_plugins()["langgenius/xinference"]
    assert installed["version"] == "0.0.15" and installed["source"] == "package", installed
    llm = credentials(console, XINFERENCE, CHAT, "llm")
    assert (llm["server_url"], llm["model_uid"]) == (IN_COMPOSE, CHAT)
    # What the real plugin's validation added to the credentials, stored by Dify.
    assert {"completion_type", "context_length"} <= set(llm), llm
    embedding = credentials(console, XINFERENCE, EMBEDDING, "text-embedding")
    assert embedding["model_uid"] == EMBEDDING

    again = stack.cli("up", "--timeout", "300")
    assert again.returncode == 0 and "changes     none" in again.stdout, again.stdout + again.stderr
