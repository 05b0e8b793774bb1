"""Contract tests for the fake Dify 1.x api's plugin endpoints: marketplace and local-package
installs through the plugin daemon (async tasks, signatures, injected failures).

Expectations come from the reference notes (/work/shared/reference/dify-console-api.md §4),
not from the fakes' code. Each test runs the api and the plugin daemon over real sockets.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from difystack.fakes import difypkg
from difystack.fakes.behaviour import Behaviour
from tests.fakes.dify_support import (
    CONSOLE,
    LOCALAI,
    XINFERENCE,
    admin,
    dify_error,
    running_stack,
    tampered,
    wait_for_task,
)
from tests.fakes.real_plugins import (
    marketplace_identifier,
    marketplace_package,
)
from tests.fakes.real_plugins import package as real_package

# ---- plugins ----------------------------------------------------------------------------------


def test_marketplace_install_runs_an_async_task_then_the_provider_exists(tmp_path: Path) -> None:
    with running_stack(tmp_path, daemon_behaviour=Behaviour(launch_latency=0.6)) as stack:
        console = admin(stack)
        assert console.get("/workspaces/current/model-providers").json() == {"data": []}
        versions = console.post(
            "/workspaces/current/plugin/list/latest-versions", json={"plugin_ids": ["langgenius/xinference"]}
        ).json()["versions"]
        latest = versions["langgenius/xinference"]
        assert latest["version"] == "0.0.15"
        assert latest["unique_identifier"].startswith("langgenius/xinference:0.0.15@")
        assert len(latest["unique_identifier"].split("@")[1]) == 64

        started = console.post(
            "/workspaces/current/plugin/install/marketplace",
            json={"plugin_unique_identifiers": [latest["unique_identifier"]]},
        )
        assert started.status_code == 200
        assert started.json()["all_installed"] is False and started.json()["task_id"]
        seen, task = wait_for_task(console, started.json()["task_id"])
        assert seen[0] in ("pending", "running") and seen[-1] == "success"
        assert "running" in seen
        assert task["total_plugins"] == 1
        plugin = task["plugins"][0]
        assert plugin["plugin_id"] == "langgenius/xinference" and plugin["status"] == "success"

        plugins = console.get("/workspaces/current/plugin/list", params={"page": 1, "page_size": 256}).json()
        assert plugins["total"] == 1
        assert plugins["plugins"][0]["plugin_id"] == "langgenius/xinference"
        assert plugins["plugins"][0]["version"] == "0.0.15"
        assert plugins["plugins"][0]["plugin_unique_identifier"] == latest["unique_identifier"]

        providers = console.get("/workspaces/current/model-providers").json()["data"]
        assert [provider["provider"] for provider in providers] == [XINFERENCE]
        forms = {
            form["variable"]: form
            for form in providers[0]["model_credential_schema"]["credential_form_schemas"]
        }
        assert set(forms) == {"server_url", "model_uid", "api_key", "invoke_timeout", "max_retries"}
        assert forms["invoke_timeout"]["required"] is True and forms["invoke_timeout"]["default"] == "60"
        assert forms["max_retries"]["required"] is True and forms["max_retries"]["default"] == "3"
        assert forms["api_key"]["type"] == "secret-input" and forms["api_key"]["required"] is False

        again = console.post(
            "/workspaces/current/plugin/install/marketplace",
            json={"plugin_unique_identifiers": [latest["unique_identifier"]]},
        )
        assert again.json() == {"all_installed": True, "task_id": ""}


def test_marketplace_disabled_or_unreachable(tmp_path: Path) -> None:
    identifier = marketplace_identifier("langgenius/xinference")
    body = {"plugin_unique_identifiers": [identifier]}
    with running_stack(tmp_path / "off", api_env={"MARKETPLACE_ENABLED": "false"}) as stack:
        console = admin(stack)
        assert stack.client.get(f"{CONSOLE}/system-features").json()["enable_marketplace"] is False
        response = console.post("/workspaces/current/plugin/install/marketplace", json=body)
        assert dify_error(response, 400, "invalid_param") == "marketplace is not enabled"
    with running_stack(tmp_path / "offline", api_env={"DIFYSTACK_FAKE_MARKETPLACE": "unreachable"}) as stack:
        console = admin(stack)
        response = console.post("/workspaces/current/plugin/install/marketplace", json=body)
        message = dify_error(response, 400, "invalid_param")
        assert message == (
            "Reached maximum retries (3) for URL "
            f"https://marketplace.dify.ai/api/v1/plugins/download?unique_identifier={identifier}"
        )
        assert console.get("/workspaces/current/plugin/list").json()["total"] == 0


def test_upload_then_install_a_local_package(tmp_path: Path) -> None:
    package = marketplace_package("langgenius/localai")
    with running_stack(tmp_path) as stack:
        console = admin(stack)
        uploaded = console.post(
            "/workspaces/current/plugin/upload/pkg",
            files={"pkg": ("localai.difypkg", package, "application/octet-stream")},
        )
        assert uploaded.status_code == 200, uploaded.text
        decoded = uploaded.json()
        assert decoded["unique_identifier"] == difypkg.unique_identifier(package)
        assert decoded["manifest"]["name"] == "localai" and decoded["manifest"]["version"] == "0.0.8"
        assert decoded["verification"] == {"authorized_category": "langgenius"}

        started = console.post(
            "/workspaces/current/plugin/install/pkg",
            json={"plugin_unique_identifiers": [decoded["unique_identifier"]]},
        )
        _, task = wait_for_task(console, started.json()["task_id"])
        assert task["status"] == "success"
        assert task["plugins"][0]["source"] == "package"
        providers = console.get("/workspaces/current/model-providers").json()["data"]
        assert [provider["provider"] for provider in providers] == [LOCALAI]
        tasks = console.get("/workspaces/current/plugin/tasks", params={"page": 1, "page_size": 100}).json()[
            "tasks"
        ]
        assert [item["id"] for item in tasks] == [task["id"]]

        installation_id = console.get("/workspaces/current/plugin/list").json()["plugins"][0][
            "installation_id"
        ]
        assert console.post(
            "/workspaces/current/plugin/uninstall", json={"plugin_installation_id": installation_id}
        ).json() == {"success": True}
        assert console.get("/workspaces/current/model-providers").json() == {"data": []}


@pytest.mark.parametrize("kind", ["unsigned", "badly signed"])
def test_unverified_packages_need_force_verifying_signature_off(tmp_path: Path, kind: str) -> None:
    if kind == "unsigned":
        package = real_package("xinference").read_bytes()  # the unmodified sources, zipped
    else:
        package = tampered(marketplace_package("langgenius/xinference"))
    upload = {"files": {"pkg": ("x.difypkg", package, "application/octet-stream")}}
    with running_stack(tmp_path / "strict") as stack:
        console = admin(stack)
        rejected = console.post("/workspaces/current/plugin/upload/pkg", **upload)
        message = dify_error(rejected, 400, "plugin_error")
        assert (
            "plugin verification has been enabled, and the plugin you want to install has a bad signature"
            in message
        )
    with running_stack(tmp_path / "lax", daemon_env={"FORCE_VERIFYING_SIGNATURE": "false"}) as stack:
        console = admin(stack)
        accepted = console.post("/workspaces/current/plugin/upload/pkg", **upload)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["verification"] is None
        started = console.post(
            "/workspaces/current/plugin/install/pkg",
            json={"plugin_unique_identifiers": [accepted.json()["unique_identifier"]]},
        )
        assert wait_for_task(console, started.json()["task_id"])[1]["status"] == "success"


def test_injected_install_failure_fails_the_task(tmp_path: Path) -> None:
    behaviour = Behaviour(launch_latency=0.1, failures=frozenset({"install:langgenius/xinference"}))
    with running_stack(tmp_path, daemon_behaviour=behaviour) as stack:
        console = admin(stack)
        identifier = marketplace_identifier("langgenius/xinference")
        started = console.post(
            "/workspaces/current/plugin/install/marketplace", json={"plugin_unique_identifiers": [identifier]}
        )
        _, task = wait_for_task(console, started.json()["task_id"])
        assert task["status"] == "failed"
        assert task["plugins"][0]["status"] == "failed"
        assert task["plugins"][0]["message"].startswith("failed to install dependencies: ")
        assert console.get("/workspaces/current/model-providers").json() == {"data": []}
        assert console.get("/workspaces/current/plugin/list").json()["total"] == 0
