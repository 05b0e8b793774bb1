"""The fake Xinference against the real one: the same calls, the same answers.

Every call below goes to a real Xinference 4.1.0 (the image of `difystack standins xinference`)
and to the fake served in-process; registrations and launches are exactly what difystack sends.
Status codes must be equal; JSON bodies must have the same structure (keys and value types),
and error texts must be equal once addresses, pids and the model paths (which differ between
the two) are put aside. A difference names the call.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from difystack.config_model import XinferenceModel
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.xinference import create_app as create_fake_xinference
from difystack.reconcile.desired import XinferenceDeployment, xinference_deployment
from difystack.xinference_image import CHAT, EMBEDDING, GGUF_FILE
from tests.conftest import free_port, serve_app

pytestmark = pytest.mark.docker

REAL_WEIGHTS = ("/models/all-minilm-l6-v2", "/models/gemma-3-270m")
Answer = tuple[str, str, int, Any]


@contextmanager
def real_server(image: str, auth: bool) -> Iterator[tuple[str, Callable[[], str]]]:
    """A real Xinference container; yields its URL and a reader of the setup token it prints."""
    port = free_port()
    started = subprocess.run(
        [
            *("docker", "run", "-d", "-p", f"127.0.0.1:{port}:9997"),
            *("-e", f"XINFERENCE_AUTH_ADVANCED={int(auth)}", "--label", "io.difystack.test=parity", image),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()

    def setup_token() -> str:
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True, check=False)
        found = re.findall(r"Setup token:\s*(\S+)", logs.stdout + logs.stderr)
        return found[-1] if found else ""

    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/status", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the real Xinference did not answer /status in 180 s"
            time.sleep(1)
        yield url, setup_token
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


@contextmanager
def fake_server(home: Path, auth: bool) -> Iterator[tuple[str, Callable[[], str]]]:
    env = {"XINFERENCE_HOME": str(home), "XINFERENCE_AUTH_ADVANCED": str(int(auth))}

    def setup_token() -> str:  # kept where the real server keeps it until an account exists
        with sqlite3.connect(home / "auth" / "auth.db") as db:
            row = db.execute("SELECT value FROM system_config WHERE key = 'setup_token'").fetchone()
        return str(row[0]) if row else ""

    with serve_app(create_fake_xinference(Behaviour(), env)) as url:
        yield url, setup_token


def fake_weights(root: Path) -> tuple[str, str]:
    embedding, chat = root / "minilm", root / "gemma"
    embedding.mkdir(parents=True)
    chat.mkdir()
    (embedding / "config.json").write_text("{}")
    (chat / GGUF_FILE).write_bytes(b"GGUF")
    return str(embedding), str(chat)


def deployments(weights: tuple[str, str]) -> tuple[XinferenceDeployment, XinferenceDeployment]:
    """What difystack sends for the image's two models (embedding, chat), weights at ``weights``."""
    made = []
    for model, path in zip((EMBEDDING, CHAT), weights, strict=True):
        entry = {**model.entry, "custom": {**model.entry["custom"], "server_path": path}}
        made.append(xinference_deployment(XinferenceModel.model_validate(entry), 0, Path("/")))
    return made[0], made[1]


E, C = EMBEDDING.entry["uid"], CHAT.entry["uid"]


def models_session(url: str, weights: tuple[str, str]) -> list[Answer]:
    """Register, launch, describe, infer, mix up and terminate, as difystack and Dify do."""
    answers: list[Answer] = []
    with httpx.Client(base_url=url, timeout=300) as client:

        def call(method: str, path: str, body: Any = None) -> None:
            response = client.request(method, path, json=body)
            answers.append((method, path, response.status_code, _json(response)))

        embedding, chat = deployments(weights)
        call("GET", "/v1/models/nope")
        call("POST", "/v1/model_registrations/embedding", _registration(embedding))
        call("POST", "/v1/model_registrations/LLM", _registration(chat))
        call("POST", "/v1/model_registrations/LLM", _registration(chat))
        call("GET", f"/v1/model_registrations/embedding/{E}")
        call("GET", f"/v1/model_registrations/LLM/{C}")
        call("GET", "/v1/model_registrations/LLM/ghost")
        call("GET", f"/v1/engines/LLM/{C}")
        call("POST", "/v1/models", embedding.launch)
        call("POST", "/v1/models", chat.launch)
        call("POST", "/v1/models", embedding.launch)
        call("GET", f"/v1/models/instances?model_uid={E}")
        call("GET", "/v1/models")
        call("GET", f"/v1/models/{E}")
        call("GET", f"/v1/models/{C}")
        call("GET", f"/v1/models/{C}/progress")
        call("GET", f"/v1/models/{C}/events")
        call("POST", "/v1/embeddings", {"model": E, "input": ["hello"]})
        ask = {"model": C, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 8}
        call("POST", "/v1/chat/completions", ask)
        call("POST", "/v1/chat/completions", {**ask, "model": E})
        call("POST", "/v1/embeddings", {"model": C, "input": ["hello"]})
        call("POST", "/v1/embeddings", {"model": "nope", "input": ["hello"]})
        call("GET", "/v1/cluster/auth")
        call("DELETE", f"/v1/models/{E}")
        call("GET", f"/v1/models/{E}")
    return answers


def accounts_session(url: str, setup_token: Callable[[], str]) -> list[Answer]:
    """The account bootstrap difystack performs, and what an API key may and may not do."""
    answers: list[Answer] = []
    with httpx.Client(base_url=url, timeout=60) as client:

        def call(method: str, path: str, body: Any = None, credential: str | None = None) -> Any:
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            response = client.request(method, path, json=body, headers=headers)
            answers.append((method, path, response.status_code, _json(response)))
            return _json(response)

        account = {"username": "admin", "password": "admin-pass-123"}
        call("GET", "/v1/models")
        call("GET", "/v1/cluster/auth")
        call("GET", "/v1/admin/setup/status")
        call("POST", "/v1/admin/setup", {**account, "setup_token": "wrong"})
        call("POST", "/v1/admin/setup", {**account, "setup_token": setup_token(), "password": "short"})
        call("POST", "/v1/admin/setup", {**account, "setup_token": setup_token()})
        call("POST", "/v1/admin/setup", {**account, "setup_token": "any", "username": "second"})
        call("GET", "/v1/admin/setup/status")
        call("POST", "/token", {**account, "password": "wrong-pass-123"})
        admin = call("POST", "/token", account)["access_token"]
        key = call("POST", "/v1/admin/keys", {"name": "parity"}, admin)["key"]
        call("GET", "/v1/admin/keys", None, admin)
        call("GET", "/v1/models", None, key)
        call("GET", "/v1/models/nope", None, key)
        call("GET", "/v1/model_registrations/embedding", None, key)
        call("GET", "/v1/cluster/version", None, key)
        call("POST", "/v1/models", {"model_uid": E, "model_name": E, "model_type": "embedding"}, key)
        call("GET", "/v1/cluster/version", None, admin)
        call("GET", "/v1/models", None, "xf-wrong")
        call("GET", "/v1/models", None, "not-a-token")
    return answers


def _registration(deployment: XinferenceDeployment) -> dict[str, Any]:
    return {"model": json.dumps(deployment.custom_spec), "persist": True}


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def structure(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: structure(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [structure(value[0])] if value else []
    return type(value).__name__


def error_text(value: Any, paths: tuple[str, ...]) -> str | None:
    if not (isinstance(value, dict) and isinstance(value.get("detail"), str)):
        return None
    text = re.sub(r"^\[address=[^\]]*\] ", "", value["detail"])
    for index, path in enumerate(paths):
        text = text.replace(path, f"<weights {index}>")
    return text


def differences(
    real: list[Answer], fake: list[Answer], real_paths: tuple[str, ...], fake_paths: tuple[str, ...]
) -> list[str]:
    found = []
    for (method, path, real_status, real_body), (_, _, fake_status, fake_body) in zip(
        real, fake, strict=True
    ):
        call = f"{method} {path}"
        if real_status != fake_status:
            found.append(f"{call}: status {real_status} (real) vs {fake_status} (fake)")
        elif real_status >= 400:
            real_text, fake_text = error_text(real_body, real_paths), error_text(fake_body, fake_paths)
            if real_text != fake_text:
                found.append(f"{call}: error {real_text!r} (real) vs {fake_text!r} (fake)")
        elif path != "/status" and structure(real_body) != structure(fake_body):
            found.append(
                f"{call}: body {json.dumps(real_body)[:300]} (real) vs {json.dumps(fake_body)[:300]} (fake)"
            )
    return found


@pytest.fixture(scope="module")
def real_image(real_xinference: dict[str, Any]) -> str:
    return str(real_xinference["images"]["xinference"])


def test_the_fake_answers_model_calls_like_the_real_xinference(real_image: str, tmp_path: Path) -> None:
    weights = fake_weights(tmp_path / "weights")
    with real_server(real_image, auth=False) as (url, _):
        real = models_session(url, REAL_WEIGHTS)
    with fake_server(tmp_path / "home", auth=False) as (url, _):
        fake = models_session(url, weights)
    assert differences(real, fake, REAL_WEIGHTS, weights) == []


def test_the_fake_answers_account_calls_like_the_real_xinference(real_image: str, tmp_path: Path) -> None:
    with real_server(real_image, auth=True) as (url, token):
        real = accounts_session(url, token)
    with fake_server(tmp_path / "home", auth=True) as (url, token):
        fake = accounts_session(url, token)
    assert differences(real, fake, (), ()) == []
