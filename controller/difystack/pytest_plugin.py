"""pytest plugin: hand tests a running Dify with its models deployed and registered.

Off unless a test uses its fixtures. ``difystack_stack`` (session scope) brings a stack up
from a stack file, converges its models and yields a ``StackHandle``; the stack is removed at
the end of the run (unless reused or kept for debugging).

* one stack per run, shared by all xdist workers (file lock); a unique project name and free
  host ports per run, so parallel runs on one machine do not collide;
* on a failing test, the services' states and last log lines (secrets redacted) are attached
  to the report;
* stacks left by an interrupted run are removed when the next run starts one;
* ``difystack_pytest_docker = true`` (ini) points pytest-docker's ``docker_compose_file`` /
  ``docker_compose_project_name`` at the stack, so its ``docker_services`` works unchanged.

Options (command line, or the ini key in brackets): ``--difystack-config`` (difystack_config),
``--difystack-reuse`` (difystack_reuse): use/keep a stack under the stack file's own name and
ports, ``--difystack-keep-on-failure`` (difystack_keep_on_failure), ``--difystack-fake-models``
(difystack_fake_models): run Xinference and LocalAI as difystack's fakes (stand-in images).
"""

from __future__ import annotations

import io
import json
import os
import secrets as random
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from difystack import settings

# Everything else is imported when a test first asks for a stack: the plugin is loaded by every
# pytest run of an environment where difystack is installed and must cost nothing there.
if TYPE_CHECKING:
    from difystack.clients.dify import DifyConsole
    from difystack.compose_runtime import ComposeProject
    from difystack.config_model import StackConfig
    from difystack.stack import Stack
    from difystack.verify import VerifyRow

OWNER_LABEL = "io.difystack.owner"
OWNER_PID_LABEL = "io.difystack.owner-pid"
OWNER_HOST_LABEL = "io.difystack.owner-host"
STATE_FILE = "difystack-stack.json"
LOCK_FILE = "difystack-stack.lock"
REDACTED = "***"
STASH_KEY = pytest.StashKey["StackSession"]()


@dataclass(frozen=True)
class StackModel:
    """One model as a test sees it: where it runs and how Dify knows it."""

    provider: str  # xinference | localai
    provider_id: str  # Dify's provider id, e.g. langgenius/xinference/xinference
    name: str  # the model name in Dify
    model_type: str  # llm | text-embedding | rerank
    server_id: str  # Xinference UID or LocalAI model name
    server_url: str  # as this machine reaches the server
    server_url_for_dify: str  # as Dify's containers reach it (what its credentials hold)


@dataclass
class StackHandle:
    name: str
    config: StackConfig
    project: ComposeProject
    dify_url: str  # the console: {dify_url}/console/api, the app API: {dify_url}/v1
    admin_email: str
    admin_password: str
    models: dict[str, StackModel]
    _console: DifyConsole | None = field(default=None, repr=False)
    _stack: Stack | None = field(default=None, repr=False)

    @property
    def dify_app_url(self) -> str:
        return f"{self.dify_url}/v1"

    @property
    def console(self) -> DifyConsole:
        """A Dify console client, logged in as the admin."""
        if self._console is None:
            from difystack.clients.dify import DifyConsole

            console = DifyConsole(self.dify_url)
            console.login(self.admin_email, self.admin_password)
            self._console = console
        return self._console

    def verify(self) -> list[VerifyRow]:
        """`difystack verify` on this stack: one row per registered model, through a Dify app."""
        from difystack.commands.verify import verify_stack
        from difystack.endpoints import stack_endpoints

        if self._stack is None:
            raise RuntimeError(f"stack {self.name}: this handle was made without its stack")
        return verify_stack(self._stack, stack_endpoints(self._stack.config))

    def model(self, name: str) -> StackModel:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(
                f"no model {name!r} in stack {self.name}; known: {', '.join(self.models)}"
            ) from None

    def reachable(self, url_from_dify: str) -> str:
        """Translate a server URL stored in Dify (http://xinference:9997) to one this machine reaches."""
        wanted = url_from_dify.rstrip("/")
        for model in self.models.values():
            if model.server_url_for_dify.rstrip("/") == wanted:
                return model.server_url
        raise KeyError(f"{url_from_dify} is not a server of stack {self.name}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("difystack", "difystack: a running Dify with local models")
    group.addoption("--difystack-config", help="Stack file for the difystack_stack fixture.")
    group.addoption(
        "--difystack-reuse",
        action="store_true",
        default=None,
        help="Use (and keep) the stack under the stack file's own name and ports.",
    )
    group.addoption(
        "--difystack-keep-on-failure",
        action="store_true",
        default=None,
        help="Do not remove the stack when a test failed (inspect it with difystack status).",
    )
    group.addoption(
        "--difystack-fake-models",
        action="store_true",
        default=None,
        help="Run Xinference and LocalAI as difystack's fake servers (built locally).",
    )
    parser.addini("difystack_config", "Stack file for the difystack_stack fixture.", default="")
    parser.addini("difystack_reuse", "Reuse a running stack and keep it.", type="bool", default=False)
    parser.addini(
        "difystack_keep_on_failure", "Keep the stack when a test failed.", type="bool", default=False
    )
    parser.addini("difystack_fake_models", "Fake Xinference and LocalAI.", type="bool", default=False)
    parser.addini(
        "difystack_pytest_docker", "Point pytest-docker's fixtures at the stack.", type="bool", default=False
    )
    parser.addini("difystack_log_lines", "Log lines per service on a failing test.", default="40")
    parser.addini("difystack_timeout", "Seconds to wait for the stack.", default="1800")


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"--difystack-{name.replace('_', '-')}")
    return value if value is not None else config.getini(f"difystack_{name}")


def pytest_configure(config: pytest.Config) -> None:
    if config.getini("difystack_pytest_docker"):
        config.pluginmanager.register(PytestDockerBridge(), "difystack-pytest-docker")


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class StackSession:
    """Brings the run's stack up once (across xdist workers) and removes it at the end."""

    def __init__(self, config: pytest.Config, shared_dir: Path) -> None:
        self.config = config
        self.shared_dir = shared_dir
        self.state_file = shared_dir / STATE_FILE
        self.reuse = bool(_option(config, "reuse"))
        self.log = io.StringIO()
        self.handle: StackHandle | None = None
        self.stack: Stack | None = None

    # -- bringing up ----------------------------------------------------------------------------

    def acquire(self) -> StackHandle:
        from filelock import FileLock

        with FileLock(str(self.shared_dir / LOCK_FILE)):
            if self.state_file.exists():
                saved = json.loads(self.state_file.read_text(encoding="utf-8"))
                self.stack = self._load(saved["overrides"], Path(saved["home"]))
            else:
                remove_leftover_stacks()
                home = self.shared_dir / "difystack-home"
                overrides = self._overrides()
                self.stack = self._load(overrides, home)
                self._up(self.stack)
                self.state_file.write_text(
                    json.dumps({"home": str(home), "overrides": overrides}), encoding="utf-8"
                )
        self.handle = make_handle(self.stack)
        return self.handle

    def _config_file(self) -> Path | None:
        configured = _option(self.config, "config")
        if not configured:
            return None
        path = Path(configured)
        return path if path.is_absolute() else Path(str(self.config.rootpath)) / path

    def _load(self, overrides: dict[str, Any], home: Path) -> Stack:
        from difystack.stack import Stack

        env = {**os.environ, settings.HOME.name: str(home)}
        config_file = self._config_file()
        return Stack.load(
            config_file,
            (),
            env=env,
            cwd=config_file.parent if config_file else Path.cwd(),
            overrides=overrides,
        )

    def _overrides(self) -> dict[str, Any]:
        owner_pid = os.getppid() if _is_xdist_worker(self.config) else os.getpid()
        overrides: dict[str, Any] = {
            "labels": {
                OWNER_LABEL: "pytest",
                OWNER_PID_LABEL: str(owner_pid),
                OWNER_HOST_LABEL: socket.gethostname(),
            }
        }
        if self.reuse:
            overrides["labels"] = {OWNER_LABEL: "pytest-reuse"}
        else:
            from difystack.preflight import free_port

            overrides.update(
                name=f"pytest{random.token_hex(4)}",
                dify={"port": free_port()},
                xinference={"port": free_port()},
                localai={"port": free_port()},
            )
        if _option(self.config, "fake_models"):
            from difystack.standins import DEFAULT_BASE_IMAGE, StandinBuilder

            base = settings.STANDIN_BASE.read() or DEFAULT_BASE_IMAGE
            overrides["images"] = StandinBuilder().build(base, infra=False, only=("xinference", "localai"))
        return overrides

    def _up(self, stack: Stack) -> None:
        from rich.console import Console

        from difystack.errors import DifystackError
        from difystack.lifecycle import Lifecycle
        from difystack.readiness import Timeouts

        console = Console(file=self.log, width=160, force_terminal=False, highlight=False)
        lifecycle = Lifecycle(stack, console, console)
        try:
            lifecycle.up(Timeouts(total=float(self.config.getini("difystack_timeout"))))
        except DifystackError as exc:
            details = redact(self.log.getvalue(), stack)
            raise pytest.UsageError(
                f"difystack could not bring up stack {stack.name}: {exc}\n{details}"
            ) from None

    # -- tearing down ---------------------------------------------------------------------------

    def release(self, failed: bool) -> None:
        """At the end of the run (in the process that owns the stack)."""
        if self.stack is None or self.reuse:
            return
        if failed and _option(self.config, "keep_on_failure"):
            remember_kept(self.stack.name)
            home = self.stack.paths.root.parent
            self._say(
                f"difystack: keeping stack {self.stack.name} after failures; inspect with "
                f"`DIFYSTACK_HOME={home} difystack status --set name={self.stack.name}`; remove with "
                f"`docker compose -p {self.stack.name} down -v`"
            )
            return
        from difystack.compose_runtime import ComposeProject

        ComposeProject(self.stack.paths.project, self.stack.name).down(volumes=True)
        self.state_file.unlink(missing_ok=True)

    def _say(self, message: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(message)

    def failure_report(self) -> str:
        from difystack.compose_runtime import ComposeProject
        from difystack.errors import DifystackError

        if self.stack is None:
            return ""
        project = ComposeProject(self.stack.paths.project, self.stack.name)
        lines = [f"stack {self.stack.name} ({self.stack.paths.project})"]
        try:
            states = project.states()
        except DifystackError as exc:
            return f"{lines[0]}: {exc}"
        for state in states:
            lines.append(
                f"  {state.service:<18} {state.state:<10} {state.health or '-':<10} exit={state.exit_code}"
            )
        tail = int(self.config.getini("difystack_log_lines"))
        for state in states:
            lines.append(f"\n--- last {tail} log lines of {state.service} ---")
            lines.append(project.logs(state.service, tail=tail).rstrip() or "(no output)")
        return redact("\n".join(lines), self.stack)


def redact(text: str, stack: Stack) -> str:
    """Replace every secret of the stack (and the Xinference API key) in ``text``."""
    from difystack.errors import DifystackError

    try:
        values = stack.secrets_store.read()
    except DifystackError:
        return text
    for value in sorted(values.values(), key=len, reverse=True):
        if len(value) >= 6:
            text = text.replace(value, REDACTED)
    return text


def make_handle(stack: Stack) -> StackHandle:
    from difystack.compose_runtime import ComposeProject
    from difystack.endpoints import stack_endpoints
    from difystack.reconcile.desired import desired_state

    config = stack.config
    endpoints = stack_endpoints(config)
    desired = desired_state(
        config,
        endpoints.xinference.from_dify if endpoints.xinference else None,
        endpoints.localai.from_dify if endpoints.localai else None,
        stack.config_dir,
    )
    provider_ids = {"xinference": "langgenius/xinference/xinference", "localai": "langgenius/localai/localai"}
    models = {}
    for registration in desired.registrations:
        server = endpoints.xinference if registration.provider == "xinference" else endpoints.localai
        assert server is not None
        models[registration.model] = StackModel(
            registration.provider,
            provider_ids[registration.provider],
            registration.model,
            registration.model_type,
            registration.server_id,
            server.from_host,
            server.from_dify,
        )
    values = stack.secrets_store.read()
    return StackHandle(
        name=stack.name,
        config=config,
        project=ComposeProject(stack.paths.project, stack.name),
        dify_url=endpoints.dify or "",
        admin_email=config.dify.admin.email,
        admin_password=values.get("admin_password", ""),
        models=models,
        _stack=stack,
    )


def _kept_registry() -> Path:
    from difystack.paths import difystack_home

    return difystack_home() / "pytest-kept-stacks.json"


def remember_kept(name: str) -> None:
    """A stack kept on purpose (--difystack-keep-on-failure) is not a leftover."""
    registry = _kept_registry()
    kept = set(json.loads(registry.read_text())) if registry.exists() else set()
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text(json.dumps(sorted(kept | {name})), encoding="utf-8")


def remove_leftover_stacks() -> list[str]:
    """Remove stacks a pytest run of this machine created and could not remove (Ctrl-C, kill)."""
    registry = _kept_registry()
    kept = set(json.loads(registry.read_text())) if registry.exists() else set()
    listed = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label={OWNER_LABEL}=pytest",
            "--format",
            '{{.Label "com.docker.compose.project"}} {{.Label "'
            + OWNER_PID_LABEL
            + '"}} {{.Label "'
            + OWNER_HOST_LABEL
            + '"}}',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        return []
    here = socket.gethostname()
    removed = []
    for line in sorted(set(listed.stdout.splitlines())):
        parts = line.split()
        if len(parts) != 3:
            continue
        project, pid, host = parts
        if host != here or _alive(int(pid)) or project in removed or project in kept:
            continue
        remove_project(project)
        removed.append(project)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_project(project: str) -> None:
    """Every container, volume and network of a compose project (also when its files are gone)."""
    selector = f"label=com.docker.compose.project={project}"
    for kind, remove in (("container", ["rm", "-f"]), ("volume", ["rm", "-f"]), ("network", ["rm"])):
        listed = subprocess.run(
            ["docker", kind, "ls", "-aq" if kind == "container" else "-q", "--filter", selector],
            capture_output=True,
            text=True,
            check=False,
        )
        ids = listed.stdout.split()
        if ids:
            subprocess.run(["docker", kind, *remove, *ids], capture_output=True, check=False)


def _shared_dir(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    base = factory.getbasetemp()
    # xdist workers' base temp dirs live inside the controller's: share the parent.
    return base.parent if _is_xdist_worker(config) else base


@pytest.fixture(scope="session")
def difystack_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackHandle]:
    """A running stack with every declared model deployed and registered in Dify."""
    session = StackSession(request.config, _shared_dir(request.config, tmp_path_factory))
    request.config.stash[STASH_KEY] = session
    handle = session.acquire()
    yield handle
    if not _is_xdist_worker(request.config):
        session.release(failed=request.session.testsfailed > 0)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if (
        report.when != "call"
        or not report.failed
        or "difystack_stack" not in getattr(item, "fixturenames", ())
    ):
        return
    session = item.config.stash.get(STASH_KEY, None)
    if session is not None:
        report.sections.append(("difystack stack", session.failure_report()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under xdist the controller (not a worker) removes the stack once every worker is done."""
    config = session.config
    if _is_xdist_worker(config) or not config.pluginmanager.has_plugin("xdist"):
        return
    basetemp = getattr(config, "_tmp_path_factory", None)
    if basetemp is None:
        return
    state_file = basetemp.getbasetemp() / STATE_FILE
    if not state_file.exists():
        return
    stack_session = StackSession(config, state_file.parent)
    saved = json.loads(state_file.read_text(encoding="utf-8"))
    stack_session.stack = stack_session._load(saved["overrides"], Path(saved["home"]))
    stack_session.release(failed=session.testsfailed > 0)


class PytestDockerBridge:
    """pytest-docker fixtures pointed at the difystack stack (enabled by an ini key)."""

    @pytest.fixture(scope="session")
    def docker_compose_file(self, difystack_stack: StackHandle) -> str:
        return str(difystack_stack.project.project_dir / "docker-compose.yml")

    @pytest.fixture(scope="session")
    def docker_compose_project_name(self, difystack_stack: StackHandle) -> str:
        return difystack_stack.name

    @pytest.fixture(scope="session")
    def docker_setup(self) -> bool:
        return False  # difystack already brought the stack up

    @pytest.fixture(scope="session")
    def docker_cleanup(self) -> bool:
        return False  # difystack removes it at the end of the run
