"""What the contract tests of the fake Dify api and plugin daemon share: a journaled
model-server stand-in (Xinference + LocalAI paths), the api + daemon running over real sockets,
a console session with the version's login scheme, and the calls the tests repeat."""

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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from difystack.fakes import difypkg
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.journal import JournalMiddleware, RequestJournal
from difystack.fakes.dify_api import create_app as create_api
from difystack.fakes.dify_plugin_daemon import create_app as create_daemon
from tests.conftest import serve_app
from tests.fakes.real_plugins import (
    real_plugins_env,
)

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
        app = Starlette(
            routes=[
                *journal.routes(),
                Route("/v1/cluster/auth", self.cluster_auth, methods=["GET"]),
                Route("/v1/models/{uid}", self.describe, methods=["GET"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )
        app.add_middleware(JournalMiddleware, journal=journal)
        return app

    async def record(self, request: Request) -> Any:
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

    async def describe(self, request: Request) -> Response:
        await self.record(request)
        uid = request.path_params["uid"]
        if uid not in self.xinference:
            return JSONResponse({"detail": f"Model not found in the model list, uid: {uid}"}, 400)
        return JSONResponse({**self.xinference[uid], "address": "0.0.0.0:41231", "replica": 1})

    async def cluster_auth(self, request: Request) -> Response:
        await self.record(request)
        return JSONResponse({"detail": "Not Found"}, 404)

    async def embeddings(self, request: Request) -> Response:
        body = await self.record(request)
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

    async def chat(self, request: Request) -> Response:
        body = await self.record(request)
        if body.get("model") not in self.localai:
            message = f'model "{body.get("model")}" not found. To see available models, call GET /v1/models'
            error = {"code": 404, "message": message, "type": "invalid_request_error"}
            return JSONResponse({"error": error}, 404)
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "pong"}}
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

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


def create_llm_credential(
    console: Console, provider: str, model: str, credentials: dict[str, Any], **fields: Any
) -> httpx.Response:
    return create_credential(
        console, provider, {"model": model, "model_type": "llm", "credentials": credentials, **fields}
    )


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
