"""The converge logic against the four fakes served in-process (no Docker needed).

The docker tier proves the same on the real compose network; this tier gives fast feedback.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from difystack.clients.results import Completion
from difystack.config_loader import load_config
from difystack.endpoints import Endpoints, ServerEndpoint, stack_endpoints
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.xinference import create_app as create_xinference
from difystack.paths import StackPaths
from difystack.reconcile.context import ConvergeContext, RunOptions, Secrets
from difystack.reconcile.converge import Converger, ConvergeResult, Plan
from difystack.reconcile.desired import desired_state
from difystack.reconcile.inventory import inventory
from difystack.reconcile.report import StepFailed
from difystack.reconcile.xinference_part import XinferencePart
from tests.conftest import Servers, converge, converger_on, serve_app, stack_at


def kinds(result: ConvergeResult) -> list[tuple[str, str]]:
    return sorted((a.kind, a.target) for a in result.actions)


def test_first_run_does_everything_and_second_run_changes_nothing(servers: Servers, tmp_path: Path) -> None:
    first, _ = converge(servers, tmp_path)
    assert first.ok, first.failures
    assert kinds(first) == sorted(
        [
            ("launch", "qwen2.5-instruct-0.5b"),
            ("launch", "bge-small-en-v1.5"),
            ("apply", "qwen3-0.6b"),
            ("apply", "granite-embedding-107m"),
            ("create-admin", "admin@example.com"),
            ("install-plugins", "langgenius/localai, langgenius/xinference"),
            ("create-credential", "xinference/qwen2.5-instruct-0.5b (llm)"),
            ("create-credential", "xinference/bge-small-en-v1.5 (text-embedding)"),
            ("create-credential", "localai/qwen3-0.6b (llm)"),
            ("create-credential", "localai/granite-embedding-107m (text-embedding)"),
            (
                "set-default-models",
                "llm=xinference/qwen2.5-instruct-0.5b, text-embedding=xinference/bge-small-en-v1.5",
            ),
        ]
    )
    assert first.verified["xinference/bge-small-en-v1.5"] == "384-dimensional embeddings"

    second, journal = converge(servers, tmp_path)
    assert second.ok and second.actions == []
    assert journal.mutating == []  # the saved session spares even the login
    # plan and models read the same diff: nothing to do, everything in place.
    assert converger_on(servers, tmp_path).plan() == Plan([], [])
    rows = {(row.id, row.server_state, row.dify_state) for row in inventory(converger_on(servers, tmp_path))}
    assert rows == {
        ("qwen2.5-instruct-0.5b", "running", "registered"),
        ("bge-small-en-v1.5", "running", "registered"),
        ("qwen3-0.6b", "installed", "registered"),
        ("granite-embedding-107m", "installed", "registered"),
    }


def test_changed_credentials_are_updated_in_place(servers: Servers, tmp_path: Path) -> None:
    assert converge(servers, tmp_path)[0].ok
    change = ["xinference.models.0.invoke_timeout=120"]
    # plan, models and up decide with the same diff.
    planned = converger_on(servers, tmp_path, change).plan()
    assert [(a.kind, a.target) for a in planned.actions] == [
        ("update-credential", "xinference/qwen2.5-instruct-0.5b (llm)")
    ]
    rows = {row.id: row.dify_state for row in inventory(converger_on(servers, tmp_path, change))}
    assert rows["qwen2.5-instruct-0.5b"] == "differs" and rows["bge-small-en-v1.5"] == "registered"
    changed, _ = converge(servers, tmp_path, change)
    assert changed.ok, changed.failures
    assert kinds(changed) == [("update-credential", "xinference/qwen2.5-instruct-0.5b (llm)")]


def test_wrong_embedding_size_is_refused_before_registration(servers: Servers, tmp_path: Path) -> None:
    result, _ = converge(servers, tmp_path, ["localai.models.1.dimensions=768"])
    failures = {f.step: f.message for f in result.failures}
    assert failures["localai model granite-embedding-107m"] == "embeddings have 384 dimensions, expected 768"
    assert ("create-credential", "localai/granite-embedding-107m (text-embedding)") not in kinds(result)
    assert ("create-credential", "localai/qwen3-0.6b (llm)") in kinds(result)  # independent steps went on


def test_desired_credentials_are_the_exact_plugin_fields_as_strings(tmp_path: Path) -> None:
    config = load_config(env={})
    desired = desired_state(config, "http://xinference:9997", "http://localai:8080", tmp_path)
    by_key = {r.key: r.credentials for r in desired.registrations}
    assert by_key["xinference/qwen2.5-instruct-0.5b (llm)"] == {
        "server_url": "http://xinference:9997",
        "model_uid": "qwen2.5-instruct-0.5b",
        "invoke_timeout": "60",
        "max_retries": "3",
    }
    assert by_key["localai/qwen3-0.6b (llm)"] == {
        "server_url": "http://localai:8080",
        "completion_type": "chat_completion",
        "context_size": "4096",
    }
    assert by_key["localai/granite-embedding-107m (text-embedding)"] == {"server_url": "http://localai:8080"}
    assert desired.plugins == ["langgenius/localai", "langgenius/xinference"]


def test_a_model_pinned_to_a_worker_launches_with_that_workers_host(tmp_path: Path) -> None:
    config = load_config(
        env={},
        assignments=[
            "xinference.topology=distributed",
            "xinference.workers=2",
            "xinference.models.1.worker=2",
        ],
    )
    first, second = desired_state(config, "http://xinference:9997", None, tmp_path).xinference
    assert "worker_ip" not in first.launch and first.worker is None
    # The supervisor matches worker_ip against the host part of each worker's address.
    assert second.launch["worker_ip"] == second.worker == "xinference-worker-2"


def test_models_shows_the_worker_each_running_model_is_on(servers: Servers, tmp_path: Path) -> None:
    assert converge(servers, tmp_path)[0].ok
    config = load_config(env={}, assignments=[f"xinference.external.url={servers.xinference}"])
    endpoints = Endpoints(
        servers.dify, ServerEndpoint(servers.xinference, servers.xinference, external=True), None
    )
    converger = Converger.for_stack(stack_at(config, tmp_path), endpoints)
    workers = {row.id: row.worker for row in inventory(converger) if row.server == "xinference"}
    status = httpx.get(f"{servers.xinference}/status").json()["workers"]
    assert len(workers) == 2 and set(workers.values()) == set(status)  # the fake's one worker


@pytest.mark.parametrize("servers", [["worker-restart-once:bge-small-en-v1.5"]], indirect=True)
def test_a_model_its_worker_no_longer_holds_is_relaunched_and_nothing_else(
    servers: Servers, tmp_path: Path
) -> None:
    first, _ = converge(servers, tmp_path)
    assert first.ok, first.failures
    # The worker restarted: the supervisor still lists the model, the worker does not hold it.
    listed = {item["id"] for item in httpx.get(f"{servers.xinference}/v1/models").json()["data"]}
    assert "bge-small-en-v1.5" in listed
    worker = httpx.get(f"{servers.xinference}/v1/workers").json()[0]
    assert not any(uid.startswith("bge-small-en-v1.5-rep") for uid in worker["models"])

    second, _ = converge(servers, tmp_path)
    assert second.ok, second.failures
    assert kinds(second) == [("launch", "bge-small-en-v1.5"), ("terminate", "bge-small-en-v1.5")]
    third, journal = converge(servers, tmp_path)
    assert third.ok and third.actions == [] and journal.mutating == []


def test_custom_model_is_registered_from_its_weights_then_launched(servers: Servers, tmp_path: Path) -> None:
    weights = tmp_path / "weights" / "minilm"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    custom = (
        "xinference.models=[{uid: minilm, type: embedding, name: my-minilm, "
        f"custom: {{server_path: '{weights}', dimensions: 384, max_tokens: 256}}}}]"
    )
    result, _ = converge(servers, tmp_path, [custom, "localai.enabled=false"])
    assert result.ok, result.failures
    assert ("register-custom", "my-minilm") in kinds(result)
    assert ("launch", "minilm") in kinds(result)
    assert result.verified["xinference/minilm"] == "384-dimensional embeddings"
    again, journal = converge(servers, tmp_path, [custom, "localai.enabled=false"])
    assert again.ok and again.actions == [] and journal.mutating == []


def test_plan_and_models_read_an_xinference_with_accounts_through_difystacks_admin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printed: list[str] = []

    def server_log() -> str:  # the fake prints its setup token like the real server does
        printed.append(capsys.readouterr().out)
        return "".join(printed)

    env = {"XINFERENCE_HOME": str(tmp_path / "xh"), "XINFERENCE_AUTH_ADVANCED": "1"}
    with serve_app(create_xinference(Behaviour(launch_latency=0.1), env)) as url:
        config = load_config(
            env={}, assignments=["xinference.auth=true", "localai.enabled=false", "dify.enabled=false"]
        )
        endpoints = Endpoints("http://127.0.0.1:9", ServerEndpoint(url, url, external=False), None)

        def converger() -> Converger:
            options = RunOptions(xinference_logs=server_log)
            return Converger.for_stack(stack_at(config, tmp_path), endpoints, options)

        before = sorted((a.kind, a.target) for a in converger().plan().actions)
        assert before == [
            ("create-admin", "admin"),
            ("create-api-key", "for Dify"),
            ("launch", "bge-small-en-v1.5"),
            ("launch", "qwen2.5-instruct-0.5b"),
        ]
        assert {row.server_state for row in inventory(converger())} == {"missing"}
        result = converger().run()
        assert result.ok, result.failures
        assert converger().plan().actions == []
        assert {row.server_state for row in inventory(converger())} == {"running"}


class _ChatWithoutUsage:
    def chat(self, uid: str, prompt: str, max_tokens: int = 8) -> Completion:
        return Completion(text="OK", total_tokens=0)


def test_a_chat_answer_without_token_usage_fails_verification(tmp_path: Path) -> None:
    config = load_config(env={}, assignments=["localai.enabled=false"])
    llm = next(
        d for d in desired_state(config, "http://x", None, tmp_path).xinference if d.model_type == "LLM"
    )
    context = ConvergeContext(config, stack_endpoints(config), Secrets({}), StackPaths(tmp_path), tmp_path)
    part = XinferencePart(context, _ChatWithoutUsage(), [llm])  # type: ignore[arg-type]
    with pytest.raises(StepFailed) as failed:
        part.verify(llm)
    assert failed.value.reason == "the chat completion carries no token usage"
    assert "xinference.models[0]" in (failed.value.hint or "")
