"""Contract of the fake Dify api's apps and knowledge bases (what ``difystack verify`` drives).

A stack converged in-process (the fake api, the daemon stand-in running Dify's real Xinference
plugin, the Xinference fake): a chat app imported from its DSL answers through the model server,
a knowledge base indexes a document and retrieves it, and the failures answer Dify's shapes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from difystack.secrets_store import SecretsStore
from tests.conftest import Servers, converge

CONSOLE = "/console/api"
CHAT_DSL = """\
version: 0.6.0
kind: app
app:
  mode: chat
  name: difystack-verify-chat
model_config:
  model:
    provider: langgenius/xinference/xinference
    name: qwen2.5-instruct-0.5b
    mode: chat
    completion_params: {max_tokens: 16}
  pre_prompt: You answer in one short sentence.
"""


@pytest.fixture
def dify(servers: Servers, tmp_path: Path) -> Iterator[httpx.Client]:
    """A console session on a converged stack (models registered by difystack itself)."""
    result, _ = converge(servers, tmp_path, ["localai.enabled=false"])
    assert result.ok, result.failures
    password = SecretsStore(tmp_path / "state" / "secrets.yaml").read()["admin_password"]
    with httpx.Client(base_url=servers.dify, timeout=120) as client:
        login = client.post(
            f"{CONSOLE}/login",
            json={"email": "admin@example.com", "password": base64.b64encode(password.encode()).decode()},
        )
        assert login.status_code == 200, login.text
        client.headers["X-CSRF-Token"] = client.cookies["csrf_token"]
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_dataset(dify: httpx.Client, token: str, name: str, provider: str) -> httpx.Response:
    """A high-quality knowledge base embedded with the Xinference fake's bge-small-en-v1.5."""
    body = {
        "name": name,
        "indexing_technique": "high_quality",
        "embedding_model": "bge-small-en-v1.5",
        "embedding_model_provider": provider,
    }
    return dify.post("/v1/datasets", headers=bearer(token), json=body)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["status"] == status, body
    return str(body["message"])


def import_chat(dify: httpx.Client, dsl: str = CHAT_DSL) -> httpx.Response:
    return dify.post(f"{CONSOLE}/apps/imports", json={"mode": "yaml-content", "yaml_content": dsl})


def app_key(dify: httpx.Client, app_id: str) -> str:
    created = dify.post(f"{CONSOLE}/apps/{app_id}/api-keys")
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["type"] == "app" and key["token"].startswith("app-") and key["last_used_at"] is None
    return str(key["token"])


def chat(dify: httpx.Client, token: str, query: str = "Say hello.") -> httpx.Response:
    body = {"inputs": {}, "query": query, "response_mode": "blocking", "user": "difystack-verify"}
    return dify.post("/v1/chat-messages", json=body, headers=bearer(token))


def journal_count(servers: Servers, path: str) -> int:
    """How many calls of ``path`` the Xinference fake has answered."""
    entries = httpx.get(f"{servers.xinference}/_fake/requests").json()
    return sum(1 for entry in entries if entry["path"] == path and entry["status"] == 200)


def indexed(dify: httpx.Client, token: str, dataset_id: str, batch: str) -> dict[str, Any]:
    path = f"/v1/datasets/{dataset_id}/documents/{batch}/indexing-status"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = dify.get(path, headers=bearer(token))
        assert status.status_code == 200, status.text
        (document,) = status.json()["data"]
        if document["indexing_status"] in {"completed", "error"}:
            return dict(document)
        time.sleep(0.1)
    raise AssertionError(f"document of batch {batch} was not indexed")


def test_imported_chat_app_answers_through_the_model_server_and_is_deleted_with_its_keys(
    dify: httpx.Client, servers: Servers
) -> None:
    imported = import_chat(dify)
    assert imported.status_code == 200, imported.text
    result = imported.json()
    assert result["status"] == "completed" and result["app_mode"] == "chat" and result["error"] == ""
    assert result["imported_dsl_version"] == "0.6.0" == result["current_dsl_version"]
    token = app_key(dify, result["app_id"])

    before = journal_count(servers, "/v1/chat/completions")
    answered = chat(dify, token)
    assert answered.status_code == 200, answered.text
    message = answered.json()
    assert message["event"] == "message" and message["mode"] == "chat" and message["answer"].strip()
    usage = message["metadata"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert journal_count(servers, "/v1/chat/completions") == before + 1  # the model server answered

    listed = dify.get(f"{CONSOLE}/apps", params={"name": "difystack-verify", "limit": 100}).json()
    assert [app["id"] for app in listed["data"]] == [result["app_id"]] and listed["total"] == 1
    assert dify.delete(f"{CONSOLE}/apps/{result['app_id']}").status_code == 204
    assert dify.get(f"{CONSOLE}/apps").json()["data"] == []
    message_text = error_of(chat(dify, token), 401, "unauthorized")
    assert message_text == "Access token is invalid"
    error_of(dify.delete(f"{CONSOLE}/apps/{result['app_id']}"), 404, "app_not_found")


def test_a_stopped_model_is_a_completion_request_error_naming_it(
    dify: httpx.Client, servers: Servers
) -> None:
    token = app_key(dify, import_chat(dify).json()["app_id"])
    assert httpx.delete(f"{servers.xinference}/v1/models/qwen2.5-instruct-0.5b").status_code == 200
    message = error_of(chat(dify, token), 400, "completion_request_error")
    assert "qwen2.5-instruct-0.5b" in message


def test_an_unregistered_model_is_provider_not_initialize(dify: httpx.Client) -> None:
    imported = import_chat(dify, CHAT_DSL.replace("qwen2.5-instruct-0.5b", "not-registered"))
    token = app_key(dify, imported.json()["app_id"])
    assert "not-registered" in error_of(chat(dify, token), 400, "provider_not_initialize")


def test_missing_or_wrong_tokens_are_refused_with_difys_401(dify: httpx.Client) -> None:
    token = app_key(dify, import_chat(dify).json()["app_id"])
    body = {"inputs": {}, "query": "hi", "user": "u"}
    missing = dify.post("/v1/chat-messages", json=body)
    assert "start with 'Bearer'" in error_of(missing, 401, "unauthorized")
    basic = dify.post("/v1/chat-messages", json=body, headers={"Authorization": f"Basic {token}"})
    assert error_of(basic, 401, "unauthorized") == "Authorization scheme must be 'Bearer'"
    wrong = dify.post("/v1/chat-messages", json=body, headers=bearer("app-wrong"))
    assert error_of(wrong, 401, "unauthorized") == "Access token is invalid"
    # an app key is no dataset key
    datasets = dify.get("/v1/datasets", headers=bearer(token))
    assert error_of(datasets, 401, "unauthorized") == "Access token is invalid"


@pytest.mark.parametrize(
    ("dsl", "error"),
    [
        ("app: [unclosed", "Invalid YAML format"),
        ("- a list", "content must be a mapping"),
        ("version: 0.6.0\nkind: app\n", "Missing app data"),
        ("app: {mode: chat, name: x}\nversion: 0.6.0\n", "Missing model_config"),
        ("app: {mode: nonsense, name: x}\n", "Invalid app mode"),
    ],
)
def test_a_bad_dsl_fails_the_import_and_creates_nothing(dify: httpx.Client, dsl: str, error: str) -> None:
    failed = import_chat(dify, dsl)
    assert failed.status_code == 400, failed.text
    result = failed.json()
    assert result["status"] == "failed" and result["app_id"] is None and error in result["error"]
    assert dify.get(f"{CONSOLE}/apps").json()["total"] == 0


def test_a_knowledge_base_indexes_a_document_and_retrieves_it_then_is_deleted(
    dify: httpx.Client, servers: Servers
) -> None:
    created = dify.post(f"{CONSOLE}/datasets/api-keys")
    assert created.status_code == 200, created.text
    key = created.json()
    assert key["type"] == "dataset" and key["token"].startswith("dataset-")
    token = key["token"]
    dataset = create_dataset(dify, token, "difystack-verify-kb", "langgenius/xinference/xinference")
    assert dataset.status_code == 200, dataset.text
    dataset_id = dataset.json()["id"]
    text = "Difystack renders compose stacks.\n\nThe octopus has three hearts and blue blood."
    document = dify.post(
        f"/v1/datasets/{dataset_id}/document/create-by-text",
        headers=bearer(token),
        json={
            "name": "facts.txt",
            "text": text,
            "indexing_technique": "high_quality",
            "process_rule": {"mode": "automatic"},
        },
    )
    assert document.status_code == 200, document.text
    assert document.json()["document"]["name"] == "facts.txt"
    status = indexed(dify, token, dataset_id, document.json()["batch"])
    assert status["indexing_status"] == "completed", status
    assert status["completed_segments"] == status["total_segments"] == 2

    embedded = journal_count(servers, "/v1/embeddings")
    found = dify.post(
        f"/v1/datasets/{dataset_id}/retrieve", headers=bearer(token), json={"query": "How many hearts?"}
    )
    assert found.status_code == 200, found.text
    records = found.json()["records"]
    assert found.json()["query"] == {"content": "How many hearts?"} and len(records) == 2
    assert records[0]["score"] >= records[1]["score"]
    assert records[0]["segment"]["document"]["name"] == "facts.txt"
    assert "octopus" in records[0]["segment"]["content"]  # the nearest segment comes first
    assert journal_count(servers, "/v1/embeddings") == embedded + 1  # the query was embedded

    listed = dify.get("/v1/datasets", headers=bearer(token)).json()
    assert [d["id"] for d in listed["data"]] == [dataset_id]
    assert dify.delete(f"/v1/datasets/{dataset_id}", headers=bearer(token)).status_code == 204
    assert dify.get("/v1/datasets", headers=bearer(token)).json()["total"] == 0
    error_of(dify.delete(f"/v1/datasets/{dataset_id}", headers=bearer(token)), 404, "not_found")
    assert dify.delete(f"{CONSOLE}/datasets/api-keys/{key['id']}").status_code == 204
    assert dify.get(f"{CONSOLE}/datasets/api-keys").json()["data"] == []
    error_of(dify.get("/v1/datasets", headers=bearer(token)), 401, "unauthorized")


def test_a_document_whose_embedding_fails_ends_in_error_with_the_plugins_message(
    dify: httpx.Client, servers: Servers
) -> None:
    token = dify.post(f"{CONSOLE}/datasets/api-keys").json()["token"]
    dataset_id = create_dataset(dify, token, "kb", "xinference").json()["id"]
    assert httpx.delete(f"{servers.xinference}/v1/models/bge-small-en-v1.5").status_code == 200
    document = dify.post(
        f"/v1/datasets/{dataset_id}/document/create-by-text",
        headers=bearer(token),
        json={"name": "a", "text": "some text", "indexing_technique": "high_quality"},
    ).json()
    status = indexed(dify, token, dataset_id, document["batch"])
    assert status["indexing_status"] == "error" and "bge-small-en-v1.5" in status["error"], status
