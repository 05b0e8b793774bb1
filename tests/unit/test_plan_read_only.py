"""`difystack plan` only reads: proven from the fakes' own request journals, on the stack where a
plan is most tempted to write - a Dify nobody has set up and an Xinference with its accounts on
but no admin yet."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from difystack.clients.http import MUTATING
from difystack.commands.models import plan_actions
from difystack.config_loader import load_config
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.journal import JOURNAL_PATH
from difystack.fakes.xinference import create_app as create_xinference
from difystack.reconcile.context import RunOptions
from difystack.reconcile.converge import Converger
from difystack.stack import Stack
from tests.conftest import Servers, serve_app, stack_at

# Logging in is how a read starts; neither creates nor changes anything.
LOGINS = {("POST", "/console/api/login"), ("POST", "/token")}


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture
def xinference_with_accounts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[str, str]]:
    """An Xinference whose accounts are on and which has no admin yet; (its URL, its setup token)."""
    env = {"XINFERENCE_HOME": str(tmp_path / "xh-accounts"), "XINFERENCE_AUTH_ADVANCED": "1"}
    with serve_app(create_xinference(Behaviour(launch_latency=0.1), env)) as url:
        printed = capsys.readouterr().out  # the fake prints its setup token like the real server
        yield url, printed


def writes(*urls: str) -> list[str]:
    """The mutating requests the fakes at ``urls`` received, logins apart."""
    found = []
    for url in urls:
        for entry in httpx.get(f"{url}{JOURNAL_PATH}", timeout=10).json():
            call = (entry["method"], entry["path"])
            if entry["method"] in MUTATING and call not in LOGINS:
                found.append(f"{entry['method']} {url}{entry['path']}")
    return found


def fresh_stack(servers: Servers, xinference: str, tmp_path: Path) -> Stack:
    """The built-in stack on the fakes' ports, as `plan` finds it: nothing rendered, nothing set up."""
    config = load_config(
        env={},
        assignments=[
            f"dify.port={port_of(servers.dify)}",
            f"xinference.port={port_of(xinference)}",
            "xinference.auth=true",
            f"localai.port={port_of(servers.localai)}",
        ],
    )
    stack = stack_at(config, tmp_path)
    stack.secrets_store.ensure()
    stack.secrets_store.set("init_password", "init-Passw0rd")  # the servers fixture's Dify
    return stack


def test_plan_lists_every_step_of_a_first_up_and_makes_no_mutating_call(
    servers: Servers, xinference_with_accounts: tuple[str, str], tmp_path: Path
) -> None:
    xinference, setup_log = xinference_with_accounts
    stack = fresh_stack(servers, xinference, tmp_path)

    actions = [(a.part, a.kind, a.target) for a in plan_actions(stack)]

    assert writes(servers.dify, xinference, servers.localai) == []
    assert actions == [
        ("compose", "render-and-start", stack.name),
        ("xinference", "create-admin", "admin"),
        ("xinference", "create-api-key", "for Dify"),
        ("xinference", "launch", "qwen2.5-instruct-0.5b"),
        ("xinference", "launch", "bge-small-en-v1.5"),
        ("localai", "apply", "qwen3-0.6b"),
        ("localai", "apply", "granite-embedding-107m"),
        ("dify", "create-admin", "admin@example.com"),
        ("dify", "install-plugins", "langgenius/localai, langgenius/xinference"),
        ("dify", "create-credential", "xinference/qwen2.5-instruct-0.5b (llm)"),
        ("dify", "create-credential", "xinference/bge-small-en-v1.5 (text-embedding)"),
        ("dify", "create-credential", "localai/qwen3-0.6b (llm)"),
        ("dify", "create-credential", "localai/granite-embedding-107m (text-embedding)"),
        (
            "dify",
            "set-default-models",
            "llm=xinference/qwen2.5-instruct-0.5b, text-embedding=xinference/bge-small-en-v1.5",
        ),
    ]

    # The check sees what the plan must not do: the admin steps `up` takes first.
    converger = Converger.for_stack(stack, options=RunOptions(xinference_logs=lambda: setup_log))
    assert converger.dify is not None and converger.xinference is not None
    converger.dify.ensure_admin()
    converger.xinference.accounts.ensure()
    assert writes(servers.dify, xinference) == [
        f"POST {servers.dify}/console/api/init",
        f"POST {servers.dify}/console/api/setup",
        f"POST {xinference}/v1/admin/setup",
        f"POST {xinference}/v1/admin/keys",
    ]
