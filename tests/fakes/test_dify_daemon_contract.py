"""Contract tests for the fake Dify plugin daemon on its own (server key, envelope, dispatch
streams, readiness, the identifier binding of 0.5.4/0.5.5) and for ``.difypkg`` packages.

Expectations come from the reference notes (/work/shared/reference/dify-console-api.md §4, §6),
not from the fakes' code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from difystack import settings
from difystack.fakes import difypkg
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.dify_plugin_daemon import create_app as create_daemon
from tests.conftest import serve_app
from tests.fakes.dify_support import (
    DAEMON_KEY,
    ModelServer,
    admin,
    dify_error,
    running_stack,
    tampered,
    wait_for_task,
    xinference_credentials,
)
from tests.fakes.real_plugins import (
    finished_daemon_task,
    marketplace_package,
    real_plugins_env,
)

# ---- the plugin daemon on its own -------------------------------------------------------------


def envelope_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["code"] != 0 and body["data"] is None
    return dict(json.loads(body["message"]))


def test_daemon_requires_the_server_key_and_uses_its_envelope(tmp_path: Path) -> None:
    env = {"SERVER_KEY": DAEMON_KEY, "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path), **real_plugins_env()}
    with serve_app(create_daemon(Behaviour(), env)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/health/check").json()["status"] == "ok"
        unauthorized = client.get("/plugin/t1/management/list", params={"page": 1, "page_size": 10})
        assert unauthorized.status_code == 401
        assert envelope_error(unauthorized)["error_type"] == "PluginDaemonUnauthorizedError"
        keyed = {"X-Api-Key": DAEMON_KEY}
        listed = client.get("/plugin/t1/management/list", params={"page": 1, "page_size": 10}, headers=keyed)
        assert listed.json() == {"code": 0, "message": "success", "data": {"list": [], "total": 0}}

        package = marketplace_package("langgenius/xinference")
        uploaded = client.post(
            "/plugin/t1/management/install/upload/package", headers=keyed, files={"dify_pkg": ("p", package)}
        ).json()
        assert uploaded["code"] == 0
        assert uploaded["data"]["unique_identifier"] == difypkg.unique_identifier(package)
        assert uploaded["data"]["manifest"]["model"]["provider"] == "xinference"

        unsigned = difypkg.build_package("acme", "thing", "1.0.0", signed=False)
        rejected = client.post(
            "/plugin/t1/management/install/upload/package", headers=keyed, files={"dify_pkg": ("p", unsigned)}
        )
        assert rejected.status_code == 200
        assert envelope_error(rejected)["message"] == (
            "plugin verification has been enabled, and the plugin you want to install has a bad signature"
        )

        identifier = uploaded["data"]["unique_identifier"]
        without_metas = client.post(
            "/plugin/t1/management/install/identifiers",
            headers=keyed,
            json={"plugin_unique_identifiers": [identifier], "source": "package"},
        )
        assert envelope_error(without_metas)["error_type"] == "PluginDaemonBadRequestError"
        started = client.post(
            "/plugin/t1/management/install/identifiers",
            headers=keyed,
            json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
        ).json()["data"]
        assert started["all_installed"] is False
        task = finished_daemon_task(client, started["task_id"], keyed)
        assert task["status"] == "success" and task["completed_plugins"] == 1
        models = client.get(
            "/plugin/t1/management/models", params={"page": 1, "page_size": 256}, headers=keyed
        ).json()
        assert [(m["plugin_id"], m["provider"]) for m in models["data"]] == [
            ("langgenius/xinference", "xinference")
        ]
        other_tenant = client.get(
            "/plugin/t2/management/models", params={"page": 1, "page_size": 256}, headers=keyed
        )
        assert other_tenant.json()["data"] == []

    # persisted under PLUGIN_STORAGE_LOCAL_ROOT
    with serve_app(create_daemon(Behaviour(), env)) as url:
        listed = httpx.get(
            f"{url}/plugin/t1/management/list", params={"page": 1, "page_size": 10}, headers=keyed
        )
        assert listed.json()["data"]["total"] == 1


def daemon_validate(
    client: httpx.Client, plugin_id: str, data: dict[str, Any], *, tenant: str = "t1"
) -> httpx.Response:
    return client.post(
        f"/plugin/{tenant}/dispatch/model/validate_model_credentials",
        headers={"X-Api-Key": DAEMON_KEY, "X-Plugin-ID": plugin_id},
        json={"user_id": "u1", "data": data},
    )


def sse_data(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.splitlines() if line.startswith("data:")]
    return dict(json.loads(lines[0][5:]))


@contextmanager
def daemon_with_xinference(tmp_path: Path) -> Iterator[httpx.Client]:
    env = {"SERVER_KEY": DAEMON_KEY, "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path), **real_plugins_env()}
    keyed = {"X-Api-Key": DAEMON_KEY}
    with serve_app(create_daemon(Behaviour(), env)) as url, httpx.Client(base_url=url) as client:
        package = marketplace_package("langgenius/xinference")
        client.post(
            "/plugin/t1/management/install/upload/package", headers=keyed, files={"dify_pkg": ("p", package)}
        )
        task_id = client.post(
            "/plugin/t1/management/install/identifiers",
            headers=keyed,
            json={
                "plugin_unique_identifiers": [difypkg.unique_identifier(package)],
                "source": "marketplace",
                "metas": [{"plugin_unique_identifier": difypkg.unique_identifier(package)}],
            },
        ).json()["data"]["task_id"]
        task = finished_daemon_task(client, task_id, keyed)
        assert task["status"] == "success", task
        yield client


def test_daemon_dispatch_streams_validation_results(tmp_path: Path, server: ModelServer) -> None:
    with daemon_with_xinference(tmp_path) as client:
        data = {
            "provider": "xinference",
            "model_type": "llm",
            "model": "qwen",
            "credentials": xinference_credentials(server.url),
        }
        first = sse_data(daemon_validate(client, "langgenius/xinference", data))
        assert first["code"] == 0
        assert first["data"]["result"] is True
        assert server.paths() == ["GET /v1/models/qwen"]  # the real plugin's call, in the server's journal
        assert first["data"]["credentials"]["completion_type"] == "chat"
        assert first["data"]["credentials"]["context_length"] == 32768

        # the describe result is cached per uid (300 s): no second describe call, even for another server_url
        moved = {**data, "credentials": xinference_credentials("http://127.0.0.1:1")}
        assert sse_data(daemon_validate(client, "langgenius/xinference", moved))["code"] == 0
        assert server.paths() == ["GET /v1/models/qwen"]

        missing_header = client.post(
            "/plugin/t1/dispatch/model/validate_model_credentials",
            headers={"X-Api-Key": DAEMON_KEY},
            json={"data": data},
        )
        assert missing_header.status_code == 400
        assert envelope_error(missing_header)["message"] == "plugin_id is required"
        not_installed = daemon_validate(client, "langgenius/localai", data)
        assert not_installed.status_code == 404
        assert envelope_error(not_installed)["error_type"] == "PluginNotFoundError"

        ghost = sse_data(
            daemon_validate(
                client,
                "langgenius/xinference",
                {**data, "credentials": xinference_credentials(server.url, "ghost")},
            )
        )
        assert ghost["code"] == -500
        error = json.loads(ghost["message"])
        assert error["error_type"] == "PluginInvokeError"
        inner = json.loads(error["message"])
        assert inner["error_type"] == "CredentialsValidateFailedError"
        assert "uid: ghost" in inner["message"]


def test_daemon_readiness_delay(tmp_path: Path) -> None:
    env = {"SERVER_KEY": DAEMON_KEY, "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path)}
    with serve_app(create_daemon(Behaviour(ready_delay=0.3), env)) as url:
        assert httpx.get(f"{url}/health/check").status_code == 503
        time.sleep(0.35)
        assert httpx.get(f"{url}/health/check").status_code == 200


# ---- difypkg ----------------------------------------------------------------------------------


def test_difypkg_packages_are_deterministic_and_identified_by_their_sha256() -> None:
    first = difypkg.build_package("acme", "demo", "1.2.3", signed=True, extra_files={"README.md": "hi"})
    second = difypkg.build_package("acme", "demo", "1.2.3", signed=True, extra_files={"README.md": "hi"})
    assert first == second
    identifier = difypkg.unique_identifier(first)
    assert identifier == f"acme/demo:1.2.3@{difypkg.package_checksum(first)}"
    manifest = difypkg.read_manifest(first)
    assert (manifest["author"], manifest["name"], manifest["version"], manifest["type"]) == (
        "acme",
        "demo",
        "1.2.3",
        "plugin",
    )
    assert manifest["plugins"]["models"] == ["provider/demo.yaml"]
    assert difypkg.signature_status(first) == "valid"
    assert difypkg.signature_status(difypkg.build_package("acme", "demo", "1.2.3", signed=False)) == "missing"
    assert difypkg.signature_status(tampered(first)) == "invalid"
    with pytest.raises(difypkg.PackageError, match="not a valid zip"):
        difypkg.read_manifest(b"not a zip")


def test_difypkg_repackaging_for_offline_installs_breaks_the_signature() -> None:
    official = marketplace_package("langgenius/xinference")
    assert difypkg.signature_status(official) == "valid"
    assert difypkg.read_verification(official) == {"authorized_category": "langgenius"}
    assert [d["provider"] for d in difypkg.read_provider_declarations(official)] == ["xinference"]
    wheels = {"wheels/yarl-1.0-py3-none-any.whl": b"wheel"}
    unsigned = difypkg.repackage(official, wheels)
    resigned = difypkg.repackage(official, wheels, keep_signature=True)
    assert difypkg.signature_status(unsigned) == "missing"
    assert difypkg.signature_status(resigned) == "invalid"
    assert difypkg.read_verification(resigned) is None
    assert difypkg.package_files(unsigned)["wheels/yarl-1.0-py3-none-any.whl"] == b"wheel"
    assert difypkg.unique_identifier(unsigned).startswith("langgenius/xinference:0.0.15@")
    assert difypkg.unique_identifier(unsigned) != difypkg.unique_identifier(official)


@pytest.mark.parametrize(("daemon_version", "installs"), [("0.5.3", False), ("0.5.5", True)])
def test_local_package_install_needs_a_daemon_that_reads_the_identifier_from_the_query(
    tmp_path: Path, daemon_version: str, installs: bool
) -> None:
    package = marketplace_package("langgenius/localai")
    daemon_env = {settings.FAKE_DAEMON_VERSION.name: daemon_version}
    with running_stack(tmp_path, daemon_env=daemon_env) as stack:
        assert httpx.get(f"{stack.daemon_url}/health/check").json()["version"] == daemon_version
        console = admin(stack)
        uploaded = console.post(
            "/workspaces/current/plugin/upload/pkg",
            files={"pkg": ("localai.difypkg", package, "application/octet-stream")},
        )
        assert uploaded.status_code == 200, uploaded.text
        started = console.post(
            "/workspaces/current/plugin/install/pkg",
            json={"plugin_unique_identifiers": [uploaded.json()["unique_identifier"]]},
        )
        if installs:
            assert started.status_code == 200, started.text
            assert wait_for_task(console, started.json()["task_id"])[1]["status"] == "success"
        else:
            message = dify_error(started, 400, "plugin_error")
            assert "Field validation for 'PluginUniqueIdentifier' failed on the 'required' tag" in message
            assert console.get("/workspaces/current/plugin/list").json()["total"] == 0
