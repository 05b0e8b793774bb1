"""`difystack verify` on the compose stack: the real Xinference image, the LocalAI and Dify fakes,
the plugin-daemon stand-in running Dify's real plugins.

Every registered model answers through a throwaway Dify app or knowledge base; a model stopped on
its server after registration fails its row at the model server hop with the plugin's message,
and nothing throwaway is left in Dify either way.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from difystack.clients.dify_apps import DifyApps
from difystack.verify import THROWAWAY_PREFIX
from tests.docker.conftest import StackUnderTest
from tests.docker.fakes_access import dify_console, published_journal
from tests.docker.test_real_xinference import CHAT, EMBEDDING, xinference_api

pytestmark = pytest.mark.docker


def verify_rows(stack: StackUnderTest) -> tuple[int, dict[str, dict[str, Any]], str]:
    result = stack.cli("verify", "--json", timeout=1200)
    rows = {row["model"]: row for row in json.loads(result.stdout or "[]")}
    return result.returncode, rows, result.stdout + result.stderr


def assert_nothing_throwaway_left(stack: StackUnderTest) -> None:
    console = dify_console(stack)
    apps = DifyApps(console)
    try:
        assert apps.apps_named(THROWAWAY_PREFIX) == []
        key = apps.create_dataset_key()
        try:
            assert apps.datasets_named(key.token, THROWAWAY_PREFIX) == []
        finally:
            apps.delete_dataset_key(key)
    finally:
        apps.close()


def test_verify_passes_every_model_through_dify_and_names_the_hop_of_a_stopped_model(
    make_stack: Any, real_xinference: dict[str, Any]
) -> None:
    stack: StackUnderTest = make_stack(
        images=real_xinference["images"],
        xinference={"models": real_xinference["xinference"]["models"]},
    )
    localai_port = stack.config["localai"]["port"]
    up = stack.cli("up", "--verify", "--timeout", "900", timeout=1800)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "verify: stack" in up.stdout, up.stdout

    published_journal(localai_port, clear=True)
    code, rows, output = verify_rows(stack)
    assert code == 0, output
    expected = {f"xinference/{CHAT} (llm)", f"xinference/{EMBEDDING} (text-embedding)"}
    assert expected <= set(rows) and len(rows) == 4, rows
    assert all(row["ok"] for row in rows.values()), rows
    assert rows[f"xinference/{CHAT} (llm)"]["tokens"] > 0
    # The LocalAI fake saw the plugin daemon's calls arrive by the compose service name.
    journal = published_journal(localai_port)
    by_name = [e for e in journal if e["host"].split(":")[0] == "localai"]
    assert any(e["path"] == "/v1/chat/completions" for e in by_name), journal
    # The real LocalAI plugin embeds at `<server_url>/embeddings` (LocalAI serves it beside /v1/...).
    assert any(e["path"] == "/embeddings" for e in by_name), journal
    assert_nothing_throwaway_left(stack)

    with xinference_api(stack) as api:
        assert api.delete(f"/v1/models/{CHAT}").status_code == 200
    code, rows, output = verify_rows(stack)
    assert code != 0, output
    failed = rows[f"xinference/{CHAT} (llm)"]
    assert not failed["ok"] and failed["hop"] == "model server", failed
    assert CHAT in failed["detail"], failed
    assert all(row["ok"] for key, row in rows.items() if key != f"xinference/{CHAT} (llm)"), rows
    assert_nothing_throwaway_left(stack)
