"""Bringing a stack to life and back: up (render, preflight, start, wait), status, down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

from difystack.clients.http import CallJournal
from difystack.cluster import external_rows, join_hints
from difystack.compose_runtime import ComposeProject, ServiceState
from difystack.config_model import StackConfig
from difystack.endpoints import stack_endpoints
from difystack.errors import DifystackError, Interrupted
from difystack.preflight import published_ports_of, run_preflight
from difystack.progress import PhaseTimer, WaitView
from difystack.readiness import (
    DIFY_ENDPOINT,
    LOCALAI_ENDPOINT,
    XINFERENCE_ENDPOINT,
    Timeouts,
    container_targets,
    endpoint_targets,
    expected_workers,
)
from difystack.reconcile.context import Gate, RunOptions
from difystack.reconcile.converge import (
    DIFY_READY,
    LOCALAI_READY,
    XINFERENCE_READY,
    Converger,
    ConvergeResult,
)
from difystack.stack import Stack
from difystack.waits import CachedStates, WaitGroup, WaitStatus

# Which waits must be ready before each converge branch may start.
GATE_REQUIREMENTS = {
    XINFERENCE_READY: {XINFERENCE_ENDPOINT},
    LOCALAI_READY: {LOCALAI_ENDPOINT},
    DIFY_READY: {DIFY_ENDPOINT, "api", "plugin_daemon"},
}


def gate_requirements(config: StackConfig) -> dict[str, set[str]]:
    """GATE_REQUIREMENTS for this stack: a distributed Xinference also needs every worker's
    container healthy (a restarted worker has rejoined the supervisor before models deploy) and
    every external worker joined."""
    requirements = {name: set(needed) for name, needed in GATE_REQUIREMENTS.items()}
    requirements[XINFERENCE_READY] |= set(expected_workers(config)) | set(external_rows(config))
    return requirements


LOG_LINES_ON_FAILURE = 25
HINTS = {
    "xinference": "its first start can take minutes; `difystack logs xinference` shows what it is doing",
    "localai": "LocalAI downloads the models declared in YAML before it opens its port; "
    "see `difystack logs localai`",
    "api": "Dify's api runs database migrations on first start; see `difystack logs api`",
    "plugin_daemon": "see `difystack logs plugin_daemon`",
}


@dataclass
class UpResult:
    project: ComposeProject
    timer: PhaseTimer
    statuses: dict[str, WaitStatus]
    converge: ConvergeResult | None = None
    journal: CallJournal = field(default_factory=CallJournal)


class GateKeeper:
    """Opens a converge gate once every wait it depends on is ready; fails it otherwise."""

    def __init__(
        self, gates: dict[str, Gate], known: set[str], requirements: dict[str, set[str]] | None = None
    ) -> None:
        self.gates = gates
        requirements = requirements or GATE_REQUIREMENTS
        self.needs = {name: requirements[name] & known for name in gates}
        self.ready: set[str] = set()
        self._lock = threading.Lock()
        for name, needed in self.needs.items():
            if not needed:
                gates[name].open()

    def observe(self, status: WaitStatus) -> None:
        with self._lock:
            for name, needed in self.needs.items():
                if status.name not in needed:
                    continue
                if status.state == "ready":
                    self.ready.add(status.name)
                    if needed <= self.ready:
                        self.gates[name].open()
                elif status.done:
                    self.gates[name].fail(f"{status.name} is not ready ({status.state}: {status.detail})")

    def fail_all(self, reason: str) -> None:
        for gate in self.gates.values():
            gate.fail(reason)


class StepRows:
    """Shows converge steps as rows of the same live view as the waits."""

    def __init__(self, view: WaitView) -> None:
        self.view = view
        self.rows: dict[str, WaitStatus] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, state: str, detail: str) -> None:
        with self._lock:
            status = self.rows.setdefault(name, WaitStatus(name))
            status.state = state
            status.detail = detail
            status.finished = None if state == "waiting" else time.monotonic()
        self.view.update(status)


class Lifecycle:
    def __init__(self, stack: Stack, out: Console, err: Console) -> None:
        self.stack = stack
        self.out = out
        self.err = err
        self.project = ComposeProject(stack.paths.project, stack.name)

    # -- up -------------------------------------------------------------------------------------

    def up(self, timeouts: Timeouts, *, force_recreate: bool = False) -> UpResult:
        timer = PhaseTimer()
        with timer.phase("render"):
            self.stack.render()
            self.project = ComposeProject(self.stack.paths.project, self.stack.name)
        self.out.print(
            f"[bold]Stack {escape(self.stack.name)}[/]: project in {escape(str(self.project.project_dir))}"
        )
        with timer.phase("preflight"):
            current = self._states_if_any()
            report = run_preflight(
                self.stack.config,
                self.project.docker,
                published_ports_of(current),
                self.stack.gpu,
                cuda_driver=self.stack.cuda_driver,
            )
            self.out.print(f"  Docker engine {report.engine_version}, Compose {report.compose_version}")
            for warning in report.warnings:
                self.err.print(f"[yellow]Warning:[/] {escape(warning)}")
        with timer.phase("start"):
            fingerprint = self.project.fingerprint()
            seed: list[ServiceState] | None = None
            if not force_recreate and self._unchanged_and_running(fingerprint, current):
                self.out.print("  containers are up to date (nothing changed since the last `up`)")
                seed = current
            else:
                recreate = " --force-recreate" if force_recreate else ""
                self.out.print(
                    f"  docker compose up -d{recreate} (pulls missing images; this can take a while)"
                )
                self.project.up(force_recreate=force_recreate)
        with timer.phase("ready + models"):
            statuses, result, journal = self.wait_and_converge(timeouts, seed)
        self._remember_started(fingerprint)
        return UpResult(self.project, timer, statuses, result, journal)

    def _unchanged_and_running(self, fingerprint: str, states: list[ServiceState]) -> bool:
        if self.stack.paths.state_file.read().get("project_fingerprint") != fingerprint:
            return False
        by_service = {state.service: state for state in states}
        for service, one_shot in self.project.service_kinds().items():
            state = by_service.get(service)
            if state is None:
                return False
            if one_shot and (state.state, state.exit_code) != ("exited", 0):
                return False
            if not one_shot and state.state != "running":
                return False
        return True

    def _remember_started(self, fingerprint: str) -> None:
        self.stack.paths.state_file.update(project_fingerprint=fingerprint)

    def wait_and_converge(
        self, timeouts: Timeouts, seed: list[ServiceState] | None = None
    ) -> tuple[dict[str, WaitStatus], ConvergeResult, CallJournal]:
        """Wait for every service and converge the models at once, in one live view.

        Each converge branch starts as soon as its server is ready (Xinference models deploy
        while Dify is still migrating its database).
        """
        states = CachedStates(self.project.states, seed=seed)
        services = self.project.service_kinds()
        targets = container_targets(services, states, timeouts) + endpoint_targets(
            self.stack.config, timeouts
        )
        view = WaitView(self.out, "Waiting for services and converging models")
        gates = {name: Gate(name) for name in GATE_REQUIREMENTS}
        keeper = GateKeeper(gates, {t.name for t in targets}, gate_requirements(self.stack.config))

        def on_wait_update(status: WaitStatus) -> None:
            view.update(status)
            keeper.observe(status)

        group = WaitGroup(targets, on_update=on_wait_update)

        def stop_waiting() -> None:
            group.cancel()
            keeper.fail_all("interrupted")

        journal = CallJournal()
        converger = self._converger(view, journal, gates, timeouts, stop_waiting)
        wait_results: dict[str, WaitStatus] = {}
        wait_error: list[BaseException] = []

        def wait_all() -> None:
            try:
                wait_results.update(group.run())
            except BaseException as exc:  # surfaced after the converge has stopped
                wait_error.append(exc)
            finally:
                keeper.fail_all("the wait for the services stopped")

        waiter = threading.Thread(target=wait_all, name="waits", daemon=True)
        try:
            with view.live():
                waiter.start()
                result = converger.run()
                waiter.join()
        except KeyboardInterrupt:
            group.cancel()
            raise Interrupted(
                "interrupted; the containers keep running and nothing done so far is lost",
                hint="run `difystack up` again to continue, or `difystack down` to stop",
            ) from None
        finally:
            converger.save_state()
        if wait_error:
            raise wait_error[0]
        self._raise_for_failures(wait_results, states, result)
        return wait_results, result, journal

    def _converger(
        self,
        view: WaitView,
        journal: CallJournal,
        gates: dict[str, Gate],
        timeouts: Timeouts,
        on_interrupt: Callable[[], None],
    ) -> Converger:
        options = RunOptions(
            report=StepRows(view),
            journal=journal,
            gates=gates,
            xinference_logs=lambda: self.project.logs("xinference", tail=2000),
            timeout=timeouts.total,
            stall_timeout=timeouts.stall,
            on_interrupt=on_interrupt,
        )
        return Converger.for_stack(self.stack, stack_endpoints(self.stack.config), options)

    def _raise_for_failures(
        self, waits: dict[str, WaitStatus], states: CachedStates, result: ConvergeResult
    ) -> None:
        failed = [s for s in waits.values() if not s.ok and s.state != "cancelled"]
        if failed:
            self._report_failure(failed, states())
        if not result.ok:
            self._report_converge_failures(result)

    def _report_converge_failures(self, result: ConvergeResult) -> None:
        for failure in result.failures:
            self.err.print(
                f"\n[bold red]{escape(failure.step)}[/] failed: {escape(failure.message)}", soft_wrap=True
            )
            if failure.hint:
                self.err.print(f"  hint: {escape(failure.hint)}", soft_wrap=True)
        steps = ", ".join(f.step for f in result.failures)
        raise DifystackError(
            f"could not converge: {steps}",
            hint="fix the cause and run `difystack up` again; finished steps are not redone",
        )

    def _states_if_any(self) -> list[ServiceState]:
        try:
            return self.project.states()
        except DifystackError:
            return []

    def _report_failure(self, failed: list[WaitStatus], states: dict[str, ServiceState]) -> None:
        for status in failed:
            self.err.print(f"\n[bold red]{escape(status.name)}[/] is not ready: {escape(status.detail)}")
            state = states.get(status.name)
            if state is not None:
                health = state.health or "no healthcheck"
                self.err.print(
                    f"  container {escape(state.container)}: {state.state}, {health}, "
                    f"exit code {state.exit_code}, restarts {state.restarts}"
                )
                logs = self.project.logs(status.name, tail=LOG_LINES_ON_FAILURE).rstrip()
                self.err.print(f"  last {LOG_LINES_ON_FAILURE} log lines:")
                for line in logs.splitlines()[-LOG_LINES_ON_FAILURE:] or ["(no output)"]:
                    self.err.print(f"    {escape(line)}", soft_wrap=True)
            hint = HINTS.get(status.name.split()[0])
            if hint:
                self.err.print(f"  hint: {escape(hint)}")
        names = ", ".join(s.name for s in failed)
        raise DifystackError(
            f"not ready: {names}",
            hint=join_hints(self.stack.config, [s.name for s in failed])
            or "fix the cause and run `difystack up` again; running services are kept",
        )

    # -- reporting ------------------------------------------------------------------------------

    def print_summary(self, result: UpResult) -> None:
        endpoints = stack_endpoints(self.stack.config)
        self.out.print("\n[bold green]Stack is up.[/]")
        if endpoints.dify:
            self.out.print(f"  Dify        {endpoints.dify}")
            self.out.print(
                f"  admin       {escape(self.stack.config.dify.admin.email)} (password: "
                f"`difystack secrets show admin_password`, stored in {escape(str(self.stack.paths.secrets))})"
            )
        for label, server in (("Xinference", endpoints.xinference), ("LocalAI", endpoints.localai)):
            if server:
                self.out.print(f"  {label:<11} {server.from_host}  (Dify uses {server.from_dify})")
        if result.converge is not None:
            done = result.converge.actions
            if done:
                self.out.print(f"  changes     {len(done)}:")
                for action in done:
                    self.out.print(f"              {escape(str(action))}")
            else:
                self.out.print("  changes     none (everything was already in place)")
        self.out.print(f"  timings     {result.timer.summary()}")

    def status(self) -> dict[str, Any]:
        self.project.require_rendered()
        states = self.project.states()
        one_shot = self.project.service_kinds()
        endpoints = stack_endpoints(self.stack.config)

        def ready(state: ServiceState) -> bool:
            if one_shot.get(state.service):
                return state.state == "exited" and state.exit_code == 0
            return state.ready

        return {
            "stack": self.stack.name,
            "project_dir": str(self.project.project_dir),
            "services": [
                s.as_dict() | {"one_shot": one_shot.get(s.service, False), "ready": ready(s)} for s in states
            ],
            "endpoints": {
                "dify": endpoints.dify,
                "xinference": endpoints.xinference.from_host if endpoints.xinference else None,
                "localai": endpoints.localai.from_host if endpoints.localai else None,
            },
        }

    def down(self, volumes: bool) -> list[str]:
        self.project.require_rendered()
        doomed = self.project.volumes() if volumes else []
        self.project.down(volumes=volumes)
        return doomed
