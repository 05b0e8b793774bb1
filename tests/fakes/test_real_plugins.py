"""The fake plugin daemon running Dify's real official plugins (unmodified) over stdio."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.dify_plugin_daemon import create_app as create_daemon
from difystack.fakes.localai import create_app as create_localai
from difystack.fakes.xinference import create_app as create_xinference
from tests.conftest import serve_app
from tests.fakes.localai_support import install as install_localai_model
from tests.fakes.real_plugins import finished_daemon_task, package, plugin_envs_root, tiktoken_cache
from tests.fakes.xinference_support import QWEN_GGUF, fake_env, launch

KEY = "real-plugin-test-key"
KEYED = {"X-Api-Key": KEY}


@pytest.fixture(scope="module")
def envs_root() -> Path:
    return plugin_envs_root()


def daemon_env(tmp_path: Path, envs_root: Path) -> dict[str, str]:
    return {
        "SERVER_KEY": KEY,
        "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path / "daemon"),
        "FORCE_VERIFYING_SIGNATURE": "false",
        "DIFYSTACK_FAKE_PLUGIN_ENVS": str(envs_root),
    }


def install(client: httpx.Client, difypkg: Path) -> str:
    uploaded = client.post(
        "/plugin/t1/management/install/upload/package",
        headers=KEYED,
        files={"dify_pkg": ("p.difypkg", difypkg.read_bytes())},
    ).json()
    assert uploaded["code"] == 0, uploaded
    identifier = uploaded["data"]["unique_identifier"]
    started = client.post(
        "/plugin/t1/management/install/identifiers",
        headers=KEYED,
        json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
    ).json()["data"]
    task = finished_daemon_task(client, started["task_id"], KEYED)
    assert task["status"] == "success", task
    return identifier


@contextmanager
def xinference_and_daemon(
    tmp_path: Path, envs_root: Path
) -> Iterator[tuple[str, httpx.Client, httpx.Client]]:
    """The Xinference fake (its URL and a client) and the daemon stand-in (a client), served."""
    xinference_app = create_xinference(Behaviour(), fake_env(tmp_path / "xinference"))
    with (
        serve_app(xinference_app) as xinference_url,
        httpx.Client(base_url=xinference_url, timeout=30) as xinference,
        serve_app(create_daemon(Behaviour(), daemon_env(tmp_path, envs_root))) as daemon_url,
        httpx.Client(base_url=daemon_url, timeout=30) as client,
    ):
        yield xinference_url, xinference, client


def dispatch(
    client: httpx.Client,
    plugin_id: str,
    data: dict[str, Any],
    route: str = "model/validate_model_credentials",
) -> list[dict[str, Any]]:
    response = client.post(
        f"/plugin/t1/dispatch/{route}",
        headers={**KEYED, "X-Plugin-ID": plugin_id},
        json={"user_id": "u1", "data": data},
        timeout=120,
    )
    assert response.status_code == 200
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


def test_real_xinference_plugin_validates_and_enriches_and_rejects(tmp_path: Path, envs_root: Path) -> None:
    with xinference_and_daemon(tmp_path, envs_root) as (xinference_url, xinference, client):
        assert launch(xinference, {**QWEN_GGUF, "model_uid": "qwen"}).status_code == 200
        install(client, package("xinference"))
        accepted = dispatch(
            client,
            "langgenius/xinference",
            {
                "provider": "xinference",
                "model_type": "llm",
                "model": "qwen2.5-instruct",
                "credentials": {"server_url": xinference_url, "model_uid": "qwen"},
            },
        )
        assert accepted[0]["code"] == 0, accepted
        credentials = accepted[0]["data"]["credentials"]
        # What the real plugin adds after describing the model on the server.
        assert credentials["completion_type"] == "chat"
        assert isinstance(credentials["context_length"], int)
        journal = xinference.get("/_fake/requests").json()
        described = [entry for entry in journal if "/v1/models/qwen" in str(entry)]
        assert described, "the plugin never asked the model server"

        rejected = dispatch(
            client,
            "langgenius/xinference",
            {
                "provider": "xinference",
                "model_type": "llm",
                "model": "qwen2.5-instruct",
                "credentials": {"server_url": xinference_url, "model_uid": "no-such-uid"},
            },
        )
        assert rejected[0]["code"] == -500
        outer = json.loads(rejected[0]["message"])
        inner = json.loads(outer["message"])
        assert outer["error_type"] == "PluginInvokeError"
        assert inner["error_type"] == "CredentialsValidateFailedError"
        assert "no-such-uid" in inner["message"]


def test_real_localai_plugin_counts_tokens_offline_and_adds_the_trailing_slash(
    tmp_path: Path, envs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in the official daemon image: the plugins inherit a preloaded tiktoken cache.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache()))
    localai_app = create_localai(Behaviour(), {"MODELS_PATH": str(tmp_path / "models")})
    with (
        serve_app(localai_app) as localai_url,
        httpx.Client(base_url=localai_url, timeout=30) as localai,
        serve_app(create_daemon(Behaviour(), daemon_env(tmp_path, envs_root))) as daemon_url,
        httpx.Client(base_url=daemon_url, timeout=30) as client,
    ):
        install_localai_model(localai, {"id": "localai@qwen3-0.6b"})
        install(client, package("localai"))
        credentials = {
            "server_url": localai_url,
            "completion_type": "chat_completion",
            "context_size": "2048",
        }
        data = {"provider": "localai", "model_type": "llm", "model": "qwen3-0.6b", "credentials": credentials}
        accepted = dispatch(client, "langgenius/localai", data)
        assert accepted[0]["code"] == 0, accepted
        assert accepted[0]["data"]["credentials"]["server_url"] == localai_url + "/"
        chats = [entry for entry in localai.get("/_fake/requests").json() if "chat/completions" in str(entry)]
        assert chats, "the plugin never called the model server"

        wrong = {**data, "model": "no-such-model"}
        rejected = dispatch(client, "langgenius/localai", wrong)
        assert rejected[0]["code"] == -500
        inner = json.loads(json.loads(rejected[0]["message"])["message"])
        assert inner["error_type"] == "CredentialsValidateFailedError"
        assert "no-such-model" in inner["message"], inner


def test_real_xinference_plugin_answers_a_chat_and_embeds_through_the_daemon(
    tmp_path: Path, envs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's invoke routes (what an app's message and a knowledge base call) reach the server."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tiktoken_cache()))  # the plugin counts tokens
    with xinference_and_daemon(tmp_path, envs_root) as (xinference_url, xinference, client):
        assert launch(xinference, {**QWEN_GGUF, "model_uid": "qwen"}).status_code == 200
        embedding = {"model_name": "bge-small-en-v1.5", "model_type": "embedding", "model_uid": "bge"}
        assert launch(xinference, embedding).status_code == 200
        install(client, package("xinference"))

        chat = {
            "provider": "xinference",
            "model_type": "llm",
            "model": "qwen2.5-instruct",
            "credentials": {"server_url": xinference_url, "model_uid": "qwen"},
            "prompt_messages": [{"role": "user", "content": "Say hello."}],
            "model_parameters": {"max_tokens": 16},
            "stop": [],
            "tools": [],
            "stream": False,
        }
        answered = dispatch(client, "langgenius/xinference", chat, route="llm/invoke")
        assert all(chunk["code"] == 0 for chunk in answered), answered
        text = "".join(chunk["data"]["delta"]["message"]["content"] or "" for chunk in answered)
        assert text.strip(), answered
        assert answered[-1]["data"]["delta"]["usage"]["total_tokens"] > 0

        texts = {
            "provider": "xinference",
            "model_type": "text-embedding",
            "model": "bge-small-en-v1.5",
            "credentials": {"server_url": xinference_url, "model_uid": "bge"},
            "texts": ["difystack renders compose stacks", "hello"],
            "input_type": "document",
        }
        embedded = dispatch(client, "langgenius/xinference", texts, route="text_embedding/invoke")
        assert embedded[0]["code"] == 0, embedded
        vectors = embedded[0]["data"]["embeddings"]
        assert len(vectors) == 2 and len(vectors[0]) == 384

        journal = [str(entry) for entry in xinference.get("/_fake/requests").json()]
        assert any("/v1/chat/completions" in entry for entry in journal), "no chat reached the server"
        assert any("/v1/embeddings" in entry for entry in journal), "no embedding reached the server"

        stopped = xinference.delete("/v1/models/qwen")
        assert stopped.status_code == 200, stopped.text
        refused = dispatch(client, "langgenius/xinference", chat, route="llm/invoke")
        assert refused[-1]["code"] == -500, refused
        assert "qwen" in refused[-1]["message"], refused
