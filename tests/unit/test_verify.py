"""`difystack verify`'s logic: the rows, the failing hop, and that nothing throwaway is left.

The Dify side is a recording double of DifyApps here (like a fake runner for CLI tests); the
contract tier runs the same verifier against the fake Dify api and the real plugins.
"""

from __future__ import annotations

from typing import Any

import pytest

from difystack.clients.dify_apps import ChatAnswer, DatasetKey
from difystack.clients.http import HttpError
from difystack.registration import Registration
from difystack.verify import THROWAWAY_PREFIX, Verifier, failing_hop


def registration(model: str, model_type: str) -> Registration:
    return Registration("xinference", model, model_type, {}, model, "xinference.models[0]")


def dify_error(message: str, status: int | None = 400) -> HttpError:
    return HttpError("Dify api", "POST", "http://dify/v1/chat-messages", status, message)


class RecordingApps:
    """Keeps the apps, keys and datasets alive at any moment; answers or fails as told."""

    def __init__(self, chat: ChatAnswer | BaseException, indexing: str = "completed") -> None:
        self.chat_result = chat
        self.indexing = indexing
        self.apps: dict[str, str] = {"old": f"{THROWAWAY_PREFIX}0000-xinference-old"}
        self.keys: set[str] = set()
        self.datasets: dict[str, str] = {"d0": f"{THROWAWAY_PREFIX}0000-xinference-old"}
        self.console = self
        self.texts: list[str] = []

    def provider_id(self, short: str) -> str:
        return f"langgenius/{short}/{short}"

    def apps_named(self, prefix: str) -> list[str]:
        return [app_id for app_id, name in self.apps.items() if name.startswith(prefix)]

    def import_chat_app(self, name: str, provider: str, model: str) -> str:
        app_id = f"app-{len(self.apps)}"
        self.apps[app_id] = name
        return app_id

    def create_app_key(self, app_id: str) -> str:
        return f"token-{app_id}"

    def delete_app(self, app_id: str) -> None:
        del self.apps[app_id]

    def chat(self, token: str, query: str) -> ChatAnswer:
        if isinstance(self.chat_result, BaseException):
            raise self.chat_result
        return self.chat_result

    def create_dataset_key(self) -> DatasetKey:
        key = DatasetKey(f"k{len(self.keys)}", "dataset-token")
        self.keys.add(key.id)
        return key

    def delete_dataset_key(self, key: DatasetKey) -> None:
        self.keys.remove(key.id)

    def datasets_named(self, token: str, prefix: str) -> list[str]:
        return [dataset_id for dataset_id, name in self.datasets.items() if name.startswith(prefix)]

    def create_dataset(self, token: str, name: str, provider: str, model: str) -> str:
        self.datasets["d1"] = name
        return "d1"

    def add_text(self, token: str, dataset_id: str, name: str, text: str) -> str:
        self.texts.append(text)
        return "batch-1"

    def indexing_status(self, token: str, dataset_id: str, batch: str) -> dict[str, Any]:
        return {"indexing_status": self.indexing, "error": "[xinference] connection refused"}

    def retrieve(self, token: str, dataset_id: str, query: str) -> list[dict[str, Any]]:
        return [{"segment": {"content": text}, "score": 0.9} for text in self.texts]

    def delete_dataset(self, token: str, dataset_id: str) -> None:
        del self.datasets[dataset_id]


def run(apps: RecordingApps, *registrations: Registration) -> list[Any]:
    return Verifier(apps, indexing_timeout=5).run(list(registrations))  # type: ignore[arg-type]


def test_every_model_gets_a_row_and_nothing_throwaway_is_left() -> None:
    apps = RecordingApps(ChatAnswer(" Hello. ", {"total_tokens": 12}))
    rows = run(
        apps, registration("qwen", "llm"), registration("bge", "text-embedding"), registration("r", "rerank")
    )
    assert [(r.model, r.ok, r.path.split(" ")[0]) for r in rows] == [
        ("xinference/qwen (llm)", True, "chat"),
        ("xinference/bge (text-embedding)", True, "knowledge"),
        ("xinference/r (rerank)", True, "-"),
    ]
    assert rows[0].detail == "Hello." and rows[0].tokens == 12
    assert "not checked" in rows[2].detail
    # The leftover of an interrupted run went too.
    assert apps.apps == {} and apps.keys == set() and apps.datasets == {}


def test_a_refused_chat_is_a_failed_row_naming_the_hop_and_the_app_is_deleted() -> None:
    refused = dify_error("[xinference] Error: Model not found in the model list, uid: qwen")
    apps = RecordingApps(refused)
    (row,) = run(apps, registration("qwen", "llm"))
    assert not row.ok and row.hop == "model server" and "uid: qwen" in row.detail
    assert apps.apps == {}


def test_a_failed_indexing_is_a_failed_row_and_the_dataset_and_its_key_are_deleted() -> None:
    apps = RecordingApps(ChatAnswer("hi", {}), indexing="error")
    (row,) = run(apps, registration("bge", "text-embedding"))
    assert not row.ok and "connection refused" in row.detail and row.hop == "model server"
    assert apps.datasets == {} and apps.keys == set()


def test_ctrl_c_during_a_chat_still_deletes_the_app() -> None:
    apps = RecordingApps(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run(apps, registration("qwen", "llm"))
    assert apps.apps == {}


def test_an_empty_answer_fails_the_row() -> None:
    (row,) = run(RecordingApps(ChatAnswer("  ", {})), registration("qwen", "llm"))
    assert not row.ok and "empty" in row.detail


@pytest.mark.parametrize(
    ("error", "hop"),
    [
        (dify_error("cannot connect", status=None), "Dify api"),
        (dify_error('{"error_type": "PluginDaemonInternalServerError", "message": "boom"}'), "plugin daemon"),
        (dify_error("[xinference] InvokeConnectionError: refused"), "model server"),
        (dify_error("[models] KeyError: 'choices'"), "plugin"),
        (dify_error("Invalid Authorization header", status=401), "Dify api"),
    ],
)
def test_the_failing_hop_is_read_off_difys_answer(error: HttpError, hop: str) -> None:
    assert failing_hop(error) == hop
