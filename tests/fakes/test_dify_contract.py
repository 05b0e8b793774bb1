"""Contract tests for the fake Dify 1.x api and plugin daemon.

Expectations come from the reference notes (/work/shared/reference/dify-console-api.md §0-§7
and xinference-localai-api.md PART C), not from the fakes' code: exact paths, status codes,
Dify's ``{"code","message","status"}`` errors, the daemon envelope, the version boundaries and
the HTTP calls the official plugins make to the model servers. Each test runs the api, the
plugin daemon and a small model-server stand-in over real sockets.
"""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from difystack import settings
from difystack.fakes import difypkg
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.journal import JournalMiddleware, RequestJournal
from difystack.fakes.dify_api import create_app as create_api
from difystack.fakes.dify_plugin_daemon import create_app as create_daemon
from tests.conftest import free_port, serve_app
from tests.fakes.real_plugins import (
    finished_daemon_task,
    marketplace_identifier,
    marketplace_package,
    real_plugins_env,
)
from tests.fakes.real_plugins import package as real_package

CONSOLE = "/console/api"
SECRET_KEY = "contract-test-secret"
DAEMON_KEY = "contract-test-daemon-key"
ADMIN_EMAIL = "Admin@Example.COM"
ADMIN_PASSWORD = "Passw0rd123"
XINFERENCE = "langgenius/xinference/xinference"
LOCALAI = "langgenius/localai/localai"
CSRF_MESSAGE = "CSRF token is missing or invalid."

QWEN_DESCRIBE = {
    "model_type": "LLM",
    "model_name": "qwen2.5-instruct",
    "model_ability": ["chat", "tools"],
    "model_format": "ggufv2",
    "model_family": "qwen2.5-instruct",
    "context_length": 32768,
}
BGE_DESCRIBE = {
    "model_type": "embedding",
    "model_name": "bge-m3",
    "model_format": "pytorch",
    "dimensions": 4,
    "max_tokens": 8192,
}


# ---- a model-server stand-in (Xinference + LocalAI paths), journaled ------------------------


@dataclass
class ModelServer:
    """Answers the calls of §6 like Xinference / LocalAI do and records what it received."""

    xinference: dict[str, dict[str, Any]] = field(default_factory=dict)
    localai: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        journal = RequestJournal()

        async def record(request: Request) -> Any:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            self.calls.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "authorization": request.headers.get("authorization"),
                    "body": body,
                }
            )
            return body or {}

        async def describe(request: Request) -> Response:
            await record(request)
            uid = request.path_params["uid"]
            if uid not in self.xinference:
                return JSONResponse({"detail": f"Model not found in the model list, uid: {uid}"}, 400)
            return JSONResponse({**self.xinference[uid], "address": "0.0.0.0:41231", "replica": 1})

        async def cluster_auth(request: Request) -> Response:
            await record(request)
            return JSONResponse({"detail": "Not Found"}, 404)

        async def embeddings(request: Request) -> Response:
            body = await record(request)
            known = body.get("model") in self.xinference or body.get("model") in self.localai
            if not known:
                return JSONResponse({"error": {"code": 404, "message": "model not found"}}, 404)
            return JSONResponse(
                {
                    "object": "list",
                    "data": [{"index": 0, "object": "embedding", "embedding": [0.1, 0.2, 0.3, 0.4]}],
                    "model": body["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            )

        async def chat(request: Request) -> Response:
            body = await record(request)
            if body.get("model") not in self.localai:
                message = (
                    f'model "{body.get("model")}" not found. To see available models, call GET /v1/models'
                )
                error = {"code": 404, "message": message, "type": "invalid_request_error"}
                return JSONResponse({"error": error}, 404)
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "pong"},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

        app = Starlette(
            routes=[
                *journal.routes(),
                Route("/v1/cluster/auth", cluster_auth, methods=["GET"]),
                Route("/v1/models/{uid}", describe, methods=["GET"]),
                Route("/v1/embeddings", embeddings, methods=["POST"]),
                Route("/embeddings", embeddings, methods=["POST"]),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )
        app.add_middleware(JournalMiddleware, journal=journal)
        return app

    def paths(self) -> list[str]:
        return [f"{call['method']} {call['path']}" for call in self.calls]


# ---- running the stack ------------------------------------------------------------------------


@dataclass
class Stack:
    api_url: str
    daemon_url: str
    api_env: dict[str, str]
    client: httpx.Client
    version: tuple[int, int, int]

    @property
    def cookie_session(self) -> bool:  # §0: HttpOnly cookies + CSRF from 1.9.2
        return self.version >= (1, 9, 2)

    @property
    def base64_password(self) -> bool:  # §2.2: base64 password from 1.11.1
        return self.version >= (1, 11, 1)


@contextmanager
def running_stack(
    tmp_path: Path,
    *,
    version: str = "1.13.3",
    api_env: dict[str, str] | None = None,
    daemon_env: dict[str, str] | None = None,
    daemon_behaviour: Behaviour | None = None,
    api_behaviour: Behaviour | None = None,
    state_dir: Path | None = None,
) -> Iterator[Stack]:
    daemon_config = {
        "SERVER_KEY": DAEMON_KEY,
        "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path / "daemon"),
        **real_plugins_env(),
        **(daemon_env or {}),
    }
    with serve_app(create_daemon(daemon_behaviour or Behaviour(), daemon_config)) as daemon_url:
        env = {
            "DIFYSTACK_FAKE_DIFY_VERSION": version,
            "SECRET_KEY": SECRET_KEY,
            "PLUGIN_DAEMON_URL": daemon_url,
            "PLUGIN_DAEMON_KEY": DAEMON_KEY,
            "DIFYSTACK_FAKE_STATE_DIR": str(state_dir or tmp_path / "api"),
            **real_plugins_env(),
            **(api_env or {}),
        }
        with (
            serve_app(create_api(api_behaviour or Behaviour(), env)) as api_url,
            httpx.Client(base_url=api_url, timeout=20) as client,
        ):
            parts = tuple(int(part) for part in version.split("."))
            yield Stack(api_url, daemon_url, env, client, (parts[0], parts[1], parts[2]))


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ModelServer]:
    server = ModelServer()
    with serve_app(server.app()) as url:
        server.url = url
        yield server


@pytest.fixture
def server(shared_server: ModelServer) -> ModelServer:
    """The module's model server, reset: Xinference uids qwen (chat) and bge (embedding),
    LocalAI models llama and text-embedding-ada-002, no calls recorded."""
    shared_server.xinference = {"qwen": QWEN_DESCRIBE, "bge": BGE_DESCRIBE}
    shared_server.localai = {"llama", "text-embedding-ada-002"}
    shared_server.calls.clear()
    return shared_server


class Console:
    """Calls under /console/api with the auth headers of the login scheme."""

    def __init__(self, client: httpx.Client, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, CONSOLE + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)


def login_password(stack: Stack, password: str = ADMIN_PASSWORD) -> str:
    return base64.b64encode(password.encode()).decode() if stack.base64_password else password


def do_setup(stack: Stack) -> None:
    response = stack.client.post(
        f"{CONSOLE}/setup", json={"email": ADMIN_EMAIL, "name": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 201, response.text


def login(stack: Stack) -> Console:
    response = stack.client.post(
        f"{CONSOLE}/login",
        json={"email": ADMIN_EMAIL.lower(), "password": login_password(stack), "remember_me": True},
    )
    assert response.status_code == 200, response.text
    if stack.cookie_session:
        return Console(stack.client, {"X-CSRF-Token": stack.client.cookies["csrf_token"]})
    return Console(stack.client, {"Authorization": f"Bearer {response.json()['data']['access_token']}"})


def admin(stack: Stack) -> Console:
    do_setup(stack)
    return login(stack)


def wait_for_task(console: Console, task_id: str, timeout: float = 90) -> tuple[list[str], dict[str, Any]]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = console.get(f"/workspaces/current/plugin/tasks/{task_id}")
        assert response.status_code == 200, response.text
        task = response.json()["task"]
        if not seen or seen[-1] != task["status"]:
            seen.append(task["status"])
        if task["status"] in ("success", "failed"):
            return seen, task
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not finish: {seen}")


def install_from_marketplace(console: Console, *plugin_ids: str) -> dict[str, Any]:
    versions = console.post(
        "/workspaces/current/plugin/list/latest-versions", json={"plugin_ids": list(plugin_ids)}
    )
    assert versions.status_code == 200, versions.text
    identifiers = [versions.json()["versions"][plugin_id]["unique_identifier"] for plugin_id in plugin_ids]
    response = console.post(
        "/workspaces/current/plugin/install/marketplace", json={"plugin_unique_identifiers": identifiers}
    )
    assert response.status_code == 200, response.text
    _, task = wait_for_task(console, response.json()["task_id"])
    assert task["status"] == "success", task
    return task


def xinference_credentials(server_url: str, uid: str = "qwen", **extra: Any) -> dict[str, Any]:
    return {"server_url": server_url, "model_uid": uid, "invoke_timeout": "60", "max_retries": "3", **extra}


def create_credential(console: Console, provider: str, body: dict[str, Any]) -> httpx.Response:
    return console.post(f"/workspaces/current/model-providers/{provider}/models/credentials", json=body)


def read_credentials(console: Console, provider: str, model: str, model_type: str) -> dict[str, Any]:
    response = console.get(
        f"/workspaces/current/model-providers/{provider}/models/credentials",
        params={"model": model, "model_type": model_type},
    )
    assert response.status_code == 200, response.text
    return response.json()


def dify_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert body.get("status", status) == status
    return str(body["message"])


# ---- health, setup, init ----------------------------------------------------------------------


def test_health_ping_and_version_header(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        health = stack.client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["version"] == "1.13.3"
        assert isinstance(health.json()["pid"], int)
        assert health.headers["X-Version"] == "1.13.3"
        ping = stack.client.get(f"{CONSOLE}/ping")
        assert ping.json() == {"result": "pong"}
        assert ping.headers["X-Version"] == "1.13.3"
        error = stack.client.post(f"{CONSOLE}/login", json={})
        assert error.headers["X-Version"] == "1.13.3"


def test_unsupported_0x_version_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"1\.x"):
        create_api(
            Behaviour(), {"DIFYSTACK_FAKE_DIFY_VERSION": "0.15.3", "DIFYSTACK_FAKE_STATE_DIR": str(tmp_path)}
        )


def test_everything_but_setup_answers_not_setup_before_setup(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        assert stack.client.get(f"{CONSOLE}/setup").json() == {"step": "not_started"}
        login = stack.client.post(f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": "x"})
        dify_error(login, 401, "not_setup")
        for path in (
            "/workspaces/current",
            "/workspaces/current/plugin/list",
            "/workspaces/current/model-providers",
        ):
            dify_error(stack.client.get(CONSOLE + path), 401, "not_setup")
        assert stack.client.get(f"{CONSOLE}/system-features").status_code == 200


def test_setup_creates_the_admin_once(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        response = stack.client.post(
            f"{CONSOLE}/setup",
            json={"email": ADMIN_EMAIL, "name": "admin", "password": ADMIN_PASSWORD, "language": "en-US"},
        )
        assert response.status_code == 201
        assert response.json() == {"result": "success"}
        status = stack.client.get(f"{CONSOLE}/setup").json()
        assert status["step"] == "finished" and status["setup_at"]
        again = stack.client.post(
            f"{CONSOLE}/setup", json={"email": "other@example.com", "name": "x", "password": ADMIN_PASSWORD}
        )
        dify_error(again, 403, "already_setup")
        # the email was lower-cased when stored: the lower-case login works
        assert login(stack).get("/workspaces/current").status_code == 200


INVALID_SETUP_BODIES = [
    {"email": "a@example.com", "name": "admin", "password": "short1"},
    {"email": "a@example.com", "name": "admin", "password": "onlyletters"},
    {"email": "a@example.com", "name": "admin", "password": "1234567890"},
    {"email": "a@example.com", "name": "x" * 31, "password": ADMIN_PASSWORD},
    {"email": "not-an-email", "name": "admin", "password": ADMIN_PASSWORD},
    {"email": "a@example.com", "name": "admin"},
]


def test_setup_rejects_invalid_fields(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        for body in INVALID_SETUP_BODIES:
            dify_error(stack.client.post(f"{CONSOLE}/setup", json=body), 400, "invalid_param")
        message = dify_error(
            stack.client.post(f"{CONSOLE}/setup", json=INVALID_SETUP_BODIES[0]), 400, "invalid_param"
        )
        assert message == "Password must contain letters and numbers, and the length must be greater than 8."
        assert stack.client.get(f"{CONSOLE}/setup").json() == {"step": "not_started"}


def test_init_password_gate_needs_the_session_cookie(tmp_path: Path) -> None:
    with running_stack(tmp_path, api_env={"INIT_PASSWORD": "init-secret"}) as stack:
        setup_body = {"email": ADMIN_EMAIL, "name": "admin", "password": ADMIN_PASSWORD}
        assert stack.client.get(f"{CONSOLE}/init").json() == {"status": "not_started"}
        dify_error(
            stack.client.post(f"{CONSOLE}/login", json={"email": "a@b.c", "password": "x"}),
            401,
            "not_init_validated",
        )
        dify_error(stack.client.get(f"{CONSOLE}/workspaces/current"), 401, "not_init_validated")
        dify_error(stack.client.post(f"{CONSOLE}/setup", json=setup_body), 401, "not_init_validated")
        dify_error(
            stack.client.post(f"{CONSOLE}/init", json={"password": "wrong"}), 401, "init_validate_failed"
        )

        validated = stack.client.post(f"{CONSOLE}/init", json={"password": "init-secret"})
        assert validated.status_code == 201
        assert validated.json() == {"result": "success"}
        assert "session" in validated.cookies
        assert stack.client.get(f"{CONSOLE}/init").json() == {"status": "finished"}

        # another cookie jar has not been validated
        with httpx.Client(base_url=stack.api_url) as stranger:
            dify_error(stranger.post(f"{CONSOLE}/setup", json=setup_body), 401, "not_init_validated")
        assert stack.client.post(f"{CONSOLE}/setup", json=setup_body).status_code == 201
        dify_error(
            stack.client.post(f"{CONSOLE}/init", json={"password": "init-secret"}), 403, "already_setup"
        )
        assert login(stack).get("/workspaces/current").status_code == 200


# ---- login, cookies, CSRF ---------------------------------------------------------------------


def test_login_on_1_13_needs_a_base64_password_and_sets_three_cookies(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        do_setup(stack)
        plain = stack.client.post(f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert dify_error(plain, 401, "authentication_failed") in {
            "Invalid encrypted data",
            "Invalid email or password.",
        }

        response = stack.client.post(
            f"{CONSOLE}/login",
            json={"email": ADMIN_EMAIL, "password": login_password(stack), "remember_me": True},
        )
        assert response.status_code == 200
        assert response.json() == {"result": "success"}  # no tokens in the body any more
        cookies = {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}
        assert set(cookies) == {"access_token", "refresh_token", "csrf_token"}
        assert "HttpOnly" in cookies["access_token"] and "HttpOnly" in cookies["refresh_token"]
        assert "HttpOnly" not in cookies["csrf_token"]
        for header in cookies.values():
            assert "Path=/" in header and "samesite=lax" in header.lower() and "Secure" not in header
        assert "Max-Age=3600" in cookies["access_token"]


def test_https_console_urls_give_host_prefixed_secure_cookies(tmp_path: Path) -> None:
    https = {"CONSOLE_API_URL": "https://dify.example.com", "CONSOLE_WEB_URL": "https://dify.example.com"}
    with running_stack(tmp_path, api_env=https) as stack:
        do_setup(stack)
        response = stack.client.post(
            f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": login_password(stack)}
        )
        names = {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}
        assert set(names) == {"__Host-access_token", "__Host-refresh_token", "__Host-csrf_token"}
        assert all("Secure" in header for header in names.values())


def test_csrf_is_checked_on_every_method(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        console = admin(stack)
        csrf = stack.client.cookies["csrf_token"]
        current = f"{CONSOLE}/workspaces/current"
        assert dify_error(stack.client.get(current), 401, "unauthorized") == CSRF_MESSAGE
        wrong = {"X-CSRF-Token": csrf[:-2] + "xx"}
        assert dify_error(stack.client.get(current, headers=wrong), 401, "unauthorized") == CSRF_MESSAGE
        install = f"{CONSOLE}/workspaces/current/plugin/install/pkg"
        body = {"plugin_unique_identifiers": []}
        assert dify_error(stack.client.post(install, json=body), 401, "unauthorized") == CSRF_MESSAGE
        models = f"{CONSOLE}/workspaces/current/model-providers"
        assert dify_error(stack.client.get(models, headers=wrong), 401, "unauthorized") == CSRF_MESSAGE

        workspace = console.get("/workspaces/current")
        assert workspace.status_code == 200
        assert workspace.json()["role"] == "owner"
        assert console.get("/workspaces/current/plugin/list").status_code == 200

        # The documented alternative: Bearer + csrf cookie + matching header, no session cookie jar.
        access = stack.client.cookies["access_token"]
        with httpx.Client(base_url=stack.api_url) as bare:
            headers = {
                "Authorization": f"Bearer {access}",
                "X-CSRF-Token": csrf,
                "Cookie": f"csrf_token={csrf}",
            }
            assert bare.get(current, headers=headers).status_code == 200
            dify_error(bare.get(current), 401, "unauthorized")


def test_before_1_9_2_tokens_come_in_the_body_and_bearer_needs_no_csrf(tmp_path: Path) -> None:
    with running_stack(tmp_path, version="1.9.0") as stack:
        do_setup(stack)
        response = stack.client.post(
            f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "remember_me": True}
        )
        assert response.status_code == 200
        data = response.json()["data"]
        assert response.json()["result"] == "success" and data["access_token"] and data["refresh_token"]
        assert not response.headers.get_list("set-cookie")
        current = f"{CONSOLE}/workspaces/current"
        assert (
            stack.client.get(current, headers={"Authorization": f"Bearer {data['access_token']}"}).status_code
            == 200
        )
        dify_error(stack.client.get(current), 401, "unauthorized")
        refreshed = stack.client.post(
            f"{CONSOLE}/refresh-token", json={"refresh_token": data["refresh_token"]}
        )
        assert refreshed.status_code == 200 and refreshed.json()["data"]["access_token"]
        assert (
            stack.client.post(f"{CONSOLE}/refresh-token", json={"refresh_token": "nope"}).status_code == 401
        )


def test_refresh_and_logout_with_cookies(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        admin(stack)
        refreshed = stack.client.post(f"{CONSOLE}/refresh-token")
        assert refreshed.status_code == 200
        assert refreshed.json() == {"result": "success"}
        assert "csrf_token" in refreshed.cookies
        assert stack.client.post(f"{CONSOLE}/logout").json() == {"result": "success"}
        with httpx.Client(base_url=stack.api_url) as anonymous:
            failed = anonymous.post(f"{CONSOLE}/refresh-token")
            assert failed.status_code == 401
            assert failed.json()["result"] == "fail"


def test_five_failed_logins_lock_the_account(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        do_setup(stack)
        wrong = login_password(stack, "WrongPassw0rd")
        for _ in range(5):
            response = stack.client.post(f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": wrong})
            assert dify_error(response, 401, "authentication_failed") == "Invalid email or password."
        locked = stack.client.post(
            f"{CONSOLE}/login", json={"email": ADMIN_EMAIL, "password": login_password(stack)}
        )
        dify_error(locked, 429, "email_code_login_limit")


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


def tampered(package: bytes) -> bytes:
    """A repackaged plugin: content changed, the original signature kept."""
    source = zipfile.ZipFile(io.BytesIO(package))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == difypkg.MANIFEST_FILE:
                content += b"# repackaged\n"
            target.writestr(info, content)
        target.comment = source.comment
    return buffer.getvalue()


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


# ---- model credentials ------------------------------------------------------------------------


@contextmanager
def xinference_stack(
    tmp_path: Path, server: ModelServer, **stack_options: Any
) -> Iterator[tuple[Stack, Console]]:
    """A logged-in 1.x stack with both official plugins installed; ``server`` is reset."""
    with running_stack(tmp_path, **stack_options) as stack:
        console = admin(stack)
        install_from_marketplace(console, "langgenius/xinference", "langgenius/localai")
        server.calls.clear()
        yield stack, console


def test_credential_schema_rules(tmp_path: Path, server: ModelServer) -> None:
    with xinference_stack(tmp_path, server) as (_, console):
        base = xinference_credentials(server.url)
        cases = [
            ({k: v for k, v in base.items() if k != "invoke_timeout"}, "Variable invoke_timeout is required"),
            ({**base, "max_retries": ""}, "Variable max_retries is required"),
            ({**base, "invoke_timeout": 60}, "Variable invoke_timeout should be string"),
        ]
        for credentials, message in cases:
            response = create_credential(
                console, XINFERENCE, {"model": "qwen", "model_type": "llm", "credentials": credentials}
            )
            assert dify_error(response, 400, "invalid_param") == message
        assert server.calls == []  # rejected before the plugin was asked
        localai = create_credential(
            console,
            LOCALAI,
            {
                "model": "m",
                "model_type": "llm",
                "credentials": {"server_url": server.url, "completion_type": "chat"},
            },
        )
        assert dify_error(localai, 400, "invalid_param") == "Variable completion_type is not in options"
        assert read_credentials(console, XINFERENCE, "qwen", "llm")["available_credentials"] == []


def test_xinference_llm_credentials_are_validated_over_the_network_and_merged(
    tmp_path: Path, server: ModelServer
) -> None:
    with xinference_stack(tmp_path, server) as (stack, console):
        credentials = xinference_credentials(server.url, unknown_field="dropped", api_key="")
        created = create_credential(
            console,
            XINFERENCE,
            {"model": "qwen2.5", "model_type": "llm", "name": "xinference-qwen", "credentials": credentials},
        )
        assert created.status_code == 201, created.text
        assert created.json() == {"result": "success"}
        assert server.paths() == ["GET /v1/models/qwen"]  # llm validation: describe only, no chat call
        assert server.calls[0]["authorization"] is None  # no api_key: no Authorization header

        stored = read_credentials(console, XINFERENCE, "qwen2.5", "llm")
        assert stored["current_credential_name"] == "xinference-qwen"
        assert [item["credential_name"] for item in stored["available_credentials"]] == ["xinference-qwen"]
        assert stored["current_credential_id"] == stored["available_credentials"][0]["credential_id"]
        assert stored["credentials"] == {
            "server_url": server.url,
            "model_uid": "qwen",
            "invoke_timeout": "60",
            "max_retries": "3",
            "completion_type": "chat",
            "support_function_call": True,
            "context_length": 32768,
        }
        models = console.get(f"/workspaces/current/model-providers/{XINFERENCE}/models").json()["data"]
        assert [(m["model"], m["status"], m["fetch_from"]) for m in models] == [
            ("qwen2.5", "active", "customizable-model")
        ]
        assert models[0]["model_properties"] == {"mode": "chat", "context_size": 32768}
        by_type = console.get("/workspaces/current/models/model-types/llm").json()["data"]
        assert [(p["provider"], [m["model"] for m in p["models"]]) for p in by_type] == [
            (XINFERENCE, ["qwen2.5"])
        ]

        duplicate = create_credential(
            console,
            XINFERENCE,
            {"model": "qwen2.5", "model_type": "llm", "name": "xinference-qwen", "credentials": credentials},
        )
        assert dify_error(duplicate, 400, "invalid_param") == (
            "Model credential with name 'xinference-qwen' already exists for qwen2.5."
        )
        unnamed = create_credential(
            console, XINFERENCE, {"model": "qwen2.5", "model_type": "llm", "credentials": credentials}
        )
        assert unnamed.status_code == 201
        again = read_credentials(console, XINFERENCE, "qwen2.5", "llm")
        names = [item["credential_name"] for item in again["available_credentials"]]
        assert names == ["xinference-qwen", "API KEY 1"]
        assert again["current_credential_name"] == "xinference-qwen"  # adding does not switch

        # the daemon, not the api, reached the model server; by the address given in server_url
        journal = httpx.get(f"{server.url}/_fake/requests").json()
        assert {entry["host"] for entry in journal} == {server.url.removeprefix("http://")}
        daemon_journal = httpx.get(f"{stack.daemon_url}/_fake/requests").json()
        assert any(
            entry["path"].endswith("/dispatch/model/validate_model_credentials") for entry in daemon_journal
        )


def test_plugin_rejections_become_invalid_param_with_the_plugin_text(
    tmp_path: Path, server: ModelServer
) -> None:
    with xinference_stack(tmp_path, server) as (_, console):
        dead_url = f"http://127.0.0.1:{free_port()}"
        refused = create_credential(
            console,
            XINFERENCE,
            {"model": "qwen", "model_type": "llm", "credentials": xinference_credentials(dead_url)},
        )
        message = dify_error(refused, 400, "invalid_param")
        assert message.startswith(
            "Xinference credentials validate failed: get xinference model extra parameter failed, "
            f"url: {dead_url}/v1/models/qwen, error: "
        )
        assert "Connection refused" in message

        unknown = create_credential(
            console,
            XINFERENCE,
            {
                "model": "ghost",
                "model_type": "llm",
                "credentials": xinference_credentials(server.url, "ghost"),
            },
        )
        message = dify_error(unknown, 400, "invalid_param")
        assert message.startswith(
            "Xinference credentials validate failed: get xinference model extra parameter failed, "
            "status code: 400"
        )
        assert "Model not found in the model list, uid: ghost" in message

        slash = create_credential(
            console,
            XINFERENCE,
            {
                "model": "q",
                "model_type": "llm",
                "credentials": xinference_credentials(server.url, "org/qwen"),
            },
        )
        assert dify_error(slash, 400, "invalid_param") == "model_uid should not contain /, ?, or #"
        assert "GET /v1/models/org/qwen" not in server.paths()

        dry_run = console.post(
            f"/workspaces/current/model-providers/{XINFERENCE}/models/credentials/validate",
            json={
                "model": "ghost",
                "model_type": "llm",
                "credentials": xinference_credentials(server.url, "ghost"),
            },
        )
        assert dry_run.status_code == 200
        assert dry_run.json()["result"] == "error" and "uid: ghost" in dry_run.json()["error"]
        ok = console.post(
            f"/workspaces/current/model-providers/{XINFERENCE}/models/credentials/validate",
            json={"model": "qwen", "model_type": "llm", "credentials": xinference_credentials(server.url)},
        )
        assert ok.json() == {"result": "success"}
        for model in ("qwen", "ghost", "q"):
            assert read_credentials(console, XINFERENCE, model, "llm")["available_credentials"] == []


def test_secret_fields_are_obfuscated_and_hidden_value_keeps_them(
    tmp_path: Path, server: ModelServer
) -> None:
    # An embedding model: the real plugin asks the server on every validation (an LLM's describe
    # is cached for 300 s per UID), so the key each validation used shows in the server's journal.
    with xinference_stack(tmp_path, server) as (_, console):
        api_key = "sk-0123456789abcdef"
        created = create_credential(
            console,
            XINFERENCE,
            {
                "model": "bge",
                "model_type": "text-embedding",
                "credentials": xinference_credentials(server.url, "bge", api_key=api_key),
            },
        )
        assert created.status_code == 201, created.text
        assert server.calls[-1]["authorization"] == f"Bearer {api_key}"
        stored = read_credentials(console, XINFERENCE, "bge", "text-embedding")
        assert stored["credentials"]["api_key"] == "sk-012************ef"
        credential_id = stored["current_credential_id"]

        updated = console.put(
            f"/workspaces/current/model-providers/{XINFERENCE}/models/credentials",
            json={
                "model": "bge",
                "model_type": "text-embedding",
                "credential_id": credential_id,
                "name": "renamed",
                "credentials": xinference_credentials(
                    server.url, "bge", api_key="[__HIDDEN__]", invoke_timeout="120"
                ),
            },
        )
        assert updated.status_code == 200, updated.text
        assert server.calls[-1]["authorization"] == f"Bearer {api_key}"  # the stored key was used
        after = read_credentials(console, XINFERENCE, "bge", "text-embedding")
        assert after["current_credential_name"] == "renamed"
        assert after["credentials"]["api_key"] == "sk-012************ef"
        assert after["credentials"]["invoke_timeout"] == "120"


def test_credential_lifecycle_delete_and_switch(tmp_path: Path, server: ModelServer) -> None:
    with xinference_stack(tmp_path, server) as (_, console):
        path = f"/workspaces/current/model-providers/{XINFERENCE}/models/credentials"
        for name in ("one", "two"):
            body = {
                "model": "qwen",
                "model_type": "llm",
                "name": name,
                "credentials": xinference_credentials(server.url),
            }
            assert create_credential(console, XINFERENCE, body).status_code == 201
        ids = {
            item["credential_name"]: item["credential_id"]
            for item in read_credentials(console, XINFERENCE, "qwen", "llm")["available_credentials"]
        }
        same = console.post(
            f"{path}/switch", json={"model": "qwen", "model_type": "llm", "credential_id": ids["one"]}
        )
        assert dify_error(same, 400, "invalid_param") == "Can't add same credential"
        switched = console.post(
            f"{path}/switch", json={"model": "qwen", "model_type": "llm", "credential_id": ids["two"]}
        )
        assert switched.json() == {"result": "success"}
        assert read_credentials(console, XINFERENCE, "qwen", "llm")["current_credential_name"] == "two"

        deleted = console.request(
            "DELETE", path, json={"model": "qwen", "model_type": "llm", "credential_id": ids["two"]}
        )
        assert deleted.status_code == 204
        after = read_credentials(console, XINFERENCE, "qwen", "llm")
        assert after["current_credential_id"] is None and after["credentials"] == {}
        assert [item["credential_name"] for item in after["available_credentials"]] == ["one"]
        deleted = console.request(
            "DELETE", path, json={"model": "qwen", "model_type": "llm", "credential_id": ids["one"]}
        )
        assert deleted.status_code == 204
        assert console.get(f"/workspaces/current/model-providers/{XINFERENCE}/models").json() == {"data": []}


def test_localai_validation_calls_and_show_on_fields(tmp_path: Path, server: ModelServer) -> None:
    with running_stack(tmp_path) as stack:
        console = admin(stack)
        install_from_marketplace(console, "langgenius/localai")
        llm = create_credential(
            console,
            LOCALAI,
            {
                "model": "llama",
                "model_type": "llm",
                "credentials": {"server_url": server.url, "context_size": "8192"},
            },
        )
        assert llm.status_code == 201, llm.text
        chat = server.calls[-1]
        assert (chat["method"], chat["path"], chat["authorization"]) == (
            "POST",
            "/v1/chat/completions",
            "Bearer 1",
        )
        assert chat["body"]["model"] == "llama" and chat["body"]["max_tokens"] == 10
        assert (
            chat["body"]["messages"] == [{"role": "user", "content": "ping"}]
            and chat["body"]["stream"] is False
        )
        stored = read_credentials(console, LOCALAI, "llama", "llm")["credentials"]
        assert stored["completion_type"] == "chat_completion"  # the select default was applied
        assert stored["context_size"] == "8192"

        embedding = create_credential(
            console,
            LOCALAI,
            {
                "model": "text-embedding-ada-002",
                "model_type": "text-embedding",
                "credentials": {
                    "server_url": server.url,
                    "completion_type": "completion",
                    "context_size": "1",
                },
            },
        )
        assert embedding.status_code == 201, embedding.text
        call = server.calls[-1]
        assert (call["method"], call["path"], call["authorization"]) == ("POST", "/embeddings", "Bearer 123")
        assert call["body"] == {"model": "text-embedding-ada-002", "input": "ping"}
        stored = read_credentials(console, LOCALAI, "text-embedding-ada-002", "text-embedding")["credentials"]
        assert stored == {"server_url": server.url}  # show_on fields dropped for non-llm types

        unknown = create_credential(
            console,
            LOCALAI,
            {"model": "nope", "model_type": "llm", "credentials": {"server_url": server.url}},
        )
        message = dify_error(unknown, 400, "invalid_param")
        assert message.startswith("Invalid credentials Error code: 404")
        assert 'model "nope" not found' in message


def test_xinference_embedding_validation_sequence(tmp_path: Path, server: ModelServer) -> None:
    with xinference_stack(tmp_path, server) as (_, console):
        response = create_credential(
            console,
            XINFERENCE,
            {
                "model": "bge-m3",
                "model_type": "text-embedding",
                "credentials": xinference_credentials(server.url, "bge"),
            },
        )
        assert response.status_code == 201, response.text
        assert server.paths() == [
            "GET /v1/models/bge",
            "GET /v1/cluster/auth",
            "GET /v1/models/bge",
            "POST /v1/embeddings",
        ]
        assert server.calls[-1]["body"] == {"model": "bge", "input": ["ping"]}
        assert (
            read_credentials(console, XINFERENCE, "bge-m3", "text-embedding")["credentials"]["max_tokens"]
            == 8192
        )
        wrong_type = create_credential(
            console,
            XINFERENCE,
            {
                "model": "qwen-as-embedding",
                "model_type": "text-embedding",
                "credentials": xinference_credentials(server.url),
            },
        )
        assert "not a text embedding model" in dify_error(wrong_type, 400, "invalid_param")


def test_unknown_provider_is_rejected_and_short_ids_normalise(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        console = admin(stack)
        missing = create_credential(
            console,
            XINFERENCE,
            {"model": "qwen", "model_type": "llm", "credentials": xinference_credentials("http://x")},
        )
        assert dify_error(missing, 400, "invalid_param") == f"Provider {XINFERENCE} does not exist."
        install_from_marketplace(console, "langgenius/xinference")
        short = console.get(
            "/workspaces/current/model-providers/xinference/models/credentials",
            params={"model": "q", "model_type": "llm"},
        )
        assert short.status_code == 200
        assert short.json()["available_credentials"] == []


def test_old_post_models_is_a_silent_no_op_from_1_8(tmp_path: Path, server: ModelServer) -> None:
    with xinference_stack(tmp_path, server) as (_, console):
        old_style = console.post(
            f"/workspaces/current/model-providers/{XINFERENCE}/models",
            json={"model": "qwen", "model_type": "llm", "credentials": xinference_credentials(server.url)},
        )
        assert old_style.status_code == 200
        assert old_style.json() == {"result": "success"}
        assert server.calls == []
        assert console.get(f"/workspaces/current/model-providers/{XINFERENCE}/models").json() == {"data": []}
        assert read_credentials(console, XINFERENCE, "qwen", "llm")["available_credentials"] == []


def test_before_1_8_post_models_saves_the_credentials(tmp_path: Path, server: ModelServer) -> None:
    with xinference_stack(tmp_path, server, version="1.7.0") as (_, console):
        saved = console.post(
            f"/workspaces/current/model-providers/{XINFERENCE}/models",
            json={"model": "qwen", "model_type": "llm", "credentials": xinference_credentials(server.url)},
        )
        assert saved.status_code == 200 and saved.json() == {"result": "success"}
        assert server.paths() == ["GET /v1/models/qwen"]
        stored = read_credentials(console, XINFERENCE, "qwen", "llm")
        assert set(stored) == {"credentials", "load_balancing"}
        assert stored["credentials"]["completion_type"] == "chat"
        models = console.get(f"/workspaces/current/model-providers/{XINFERENCE}/models").json()["data"]
        assert [(m["model"], m["status"]) for m in models] == [("qwen", "active")]
        new_api = create_credential(
            console, XINFERENCE, {"model": "q2", "model_type": "llm", "credentials": {}}
        )
        assert new_api.status_code == 405
        removed = console.request(
            "DELETE",
            f"/workspaces/current/model-providers/{XINFERENCE}/models",
            json={"model": "qwen", "model_type": "llm"},
        )
        assert removed.status_code == 204
        assert read_credentials(console, XINFERENCE, "qwen", "llm")["credentials"] == {}


# ---- default models ---------------------------------------------------------------------------


def test_default_model_set_and_read_back(tmp_path: Path, server: ModelServer) -> None:
    with xinference_stack(tmp_path, server) as (_, console):
        for model, uid in (("qwen-a", "qwen"), ("qwen-b", "qwen")):
            body = {
                "model": model,
                "model_type": "llm",
                "credentials": xinference_credentials(server.url, uid),
            }
            assert create_credential(console, XINFERENCE, body).status_code == 201
        setting = {"model_type": "llm", "provider": XINFERENCE, "model": "qwen-b"}
        response = console.post("/workspaces/current/default-model", json={"model_settings": [setting]})
        assert response.status_code == 200 and response.json() == {"result": "success"}
        data = console.get("/workspaces/current/default-model", params={"model_type": "llm"}).json()["data"]
        assert data["model"] == "qwen-b" and data["model_type"] == "llm"
        assert data["provider"]["provider"] == XINFERENCE
        assert "llm" in data["provider"]["supported_model_types"]

        unknown = console.post(
            "/workspaces/current/default-model",
            json={"model_settings": [{"model_type": "llm", "provider": XINFERENCE, "model": "nope"}]},
        )
        assert dify_error(unknown, 400, "invalid_param") == "Model nope does not exist."
        no_provider = console.post(
            "/workspaces/current/default-model",
            json={
                "model_settings": [
                    {"model_type": "llm", "provider": "langgenius/ollama/ollama", "model": "x"}
                ]
            },
        )
        assert (
            dify_error(no_provider, 400, "invalid_param")
            == "Provider langgenius/ollama/ollama does not exist."
        )
        skipped = console.post(
            "/workspaces/current/default-model",
            json={"model_settings": [{"model_type": "llm", "model": "x"}]},
        )
        assert skipped.status_code == 200
        assert (
            console.get("/workspaces/current/default-model", params={"model_type": "llm"}).json()["data"][
                "model"
            ]
            == "qwen-b"
        )
        assert console.get("/workspaces/current/default-model", params={"model_type": "rerank"}).json() == {
            "data": None
        }

        disabled = console.request(
            "PATCH",
            f"/workspaces/current/model-providers/{XINFERENCE}/models/disable",
            json={"model": "qwen-a", "model_type": "llm"},
        )
        assert disabled.json() == {"result": "success"}
        inactive = console.post(
            "/workspaces/current/default-model",
            json={"model_settings": [{"model_type": "llm", "provider": XINFERENCE, "model": "qwen-a"}]},
        )
        assert dify_error(inactive, 400, "invalid_param") == "Model qwen-a does not exist."


def test_default_model_errors_are_only_logged_before_1_9(tmp_path: Path, server: ModelServer) -> None:
    with xinference_stack(tmp_path, server, version="1.8.1") as (_, console):
        response = console.post(
            "/workspaces/current/default-model",
            json={"model_settings": [{"model_type": "llm", "provider": XINFERENCE, "model": "nope"}]},
        )
        assert response.status_code == 200 and response.json() == {"result": "success"}
        assert console.get("/workspaces/current/default-model", params={"model_type": "llm"}).json() == {
            "data": None
        }


# ---- persistence ------------------------------------------------------------------------------


def test_state_survives_an_api_restart_with_the_same_state_dir(tmp_path: Path, server: ModelServer) -> None:
    state_dir = tmp_path / "api-volume"
    daemon_root = tmp_path / "daemon-volume"
    daemon_env = {"PLUGIN_STORAGE_LOCAL_ROOT": str(daemon_root)}
    with running_stack(tmp_path, state_dir=state_dir, daemon_env=daemon_env) as stack:
        console = admin(stack)
        install_from_marketplace(console, "langgenius/xinference")
        body = {
            "model": "qwen",
            "model_type": "llm",
            "name": "kept",
            "credentials": xinference_credentials(server.url),
        }
        assert create_credential(console, XINFERENCE, body).status_code == 201
        cookies = dict(stack.client.cookies)
    with running_stack(tmp_path, state_dir=state_dir, daemon_env=daemon_env) as stack:
        assert stack.client.get(f"{CONSOLE}/setup").json()["step"] == "finished"
        dify_error(
            stack.client.post(
                f"{CONSOLE}/setup", json={"email": "a@b.co", "name": "a", "password": ADMIN_PASSWORD}
            ),
            403,
            "already_setup",
        )
        # the same SECRET_KEY still accepts the session issued before the restart
        with httpx.Client(base_url=stack.api_url, cookies=cookies) as old_client:
            old_session = Console(old_client, {"X-CSRF-Token": cookies["csrf_token"]})
            assert old_session.get("/workspaces/current").status_code == 200
        console = login(stack)
        assert read_credentials(console, XINFERENCE, "qwen", "llm")["current_credential_name"] == "kept"
        assert console.get("/workspaces/current/plugin/list").json()["total"] == 1


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
