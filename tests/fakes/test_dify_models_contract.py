"""Contract tests for the fake Dify 1.x api's model providers: credential schema rules, the
validation calls the official plugins make to the model servers, the credential lifecycle,
default models, the version boundaries (1.8, 1.9) and state surviving a restart.

Expectations come from the reference notes (/work/shared/reference/dify-console-api.md §5-§7
and xinference-localai-api.md PART C), not from the fakes' code. Each test runs the api, the
plugin daemon and a small model-server stand-in over real sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.fakes.dify_support import (
    ADMIN_PASSWORD,
    CONSOLE,
    LOCALAI,
    XINFERENCE,
    Console,
    ModelServer,
    Stack,
    admin,
    create_credential,
    create_llm_credential,
    dify_error,
    install_from_marketplace,
    login,
    read_credentials,
    running_stack,
    xinference_credentials,
)

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
            response = create_llm_credential(console, XINFERENCE, "qwen", credentials)
            assert dify_error(response, 400, "invalid_param") == message
        assert server.calls == []  # rejected before the plugin was asked
        localai = create_llm_credential(
            console, LOCALAI, "m", {"server_url": server.url, "completion_type": "chat"}
        )
        assert dify_error(localai, 400, "invalid_param") == "Variable completion_type is not in options"
        assert read_credentials(console, XINFERENCE, "qwen", "llm")["available_credentials"] == []


def test_xinference_llm_credentials_are_validated_over_the_network_and_merged(
    tmp_path: Path, server: ModelServer
) -> None:
    with xinference_stack(tmp_path, server) as (stack, console):
        credentials = xinference_credentials(server.url, unknown_field="dropped", api_key="")
        created = create_llm_credential(console, XINFERENCE, "qwen2.5", credentials, name="xinference-qwen")
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

        duplicate = create_llm_credential(console, XINFERENCE, "qwen2.5", credentials, name="xinference-qwen")
        assert dify_error(duplicate, 400, "invalid_param") == (
            "Model credential with name 'xinference-qwen' already exists for qwen2.5."
        )
        unnamed = create_llm_credential(console, XINFERENCE, "qwen2.5", credentials)
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
        refused = create_llm_credential(console, XINFERENCE, "qwen", xinference_credentials(dead_url))
        message = dify_error(refused, 400, "invalid_param")
        assert message.startswith(
            "Xinference credentials validate failed: get xinference model extra parameter failed, "
            f"url: {dead_url}/v1/models/qwen, error: "
        )
        assert "Connection refused" in message

        unknown = create_llm_credential(
            console, XINFERENCE, "ghost", xinference_credentials(server.url, "ghost")
        )
        message = dify_error(unknown, 400, "invalid_param")
        assert message.startswith(
            "Xinference credentials validate failed: get xinference model extra parameter failed, "
            "status code: 400"
        )
        assert "Model not found in the model list, uid: ghost" in message

        slash = create_llm_credential(
            console, XINFERENCE, "q", xinference_credentials(server.url, "org/qwen")
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
        llm = create_llm_credential(
            console, LOCALAI, "llama", {"server_url": server.url, "context_size": "8192"}
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

        unknown = create_llm_credential(console, LOCALAI, "nope", {"server_url": server.url})
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
        missing = create_llm_credential(console, XINFERENCE, "qwen", xinference_credentials("http://x"))
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
        new_api = create_llm_credential(console, XINFERENCE, "q2", {})
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
