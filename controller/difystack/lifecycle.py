"""Bringing a stack to life and back: up (render, preflight, start, wait), status, down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from difystack.compose_runtime import ComposeProject, ServiceState
from difystack.endpoints import stack_endpoints
from difystack.errors import DifystackError, Interrupted
from difystack.preflight import published_ports_of, run_preflight
from difystack.progress import PhaseTimer, WaitView
from difystack.readiness import Timeouts, container_targets, endpoint_targets
from difystack.stack import Stack
from difystack.waits import CachedStates, WaitGroup, WaitStatus

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


class Lifecycle:
    def __init__(self, stack: Stack, out: Console, err: Console) -> None:
        self.stack = stack
        self.out = out
        self.err = err
        self.project = ComposeProject(stack.paths.project, stack.name)

    # -- up -------------------------------------------------------------------------------------

    def up(self, timeouts: Timeouts) -> UpResult:
        timer = PhaseTimer()
        with timer.phase("render"):
            self.stack.render()
            self.project = ComposeProject(self.stack.paths.project, self.stack.name)
        self.out.print(
            f"[bold]Stack {escape(self.stack.name)}[/]: project in {escape(str(self.project.project_dir))}"
        )
        with timer.phase("preflight"):
            own_ports = published_ports_of(self._states_if_any())
            report = run_preflight(self.stack.config, self.project.docker, own_ports)
            self.out.print(f"  Docker engine {report.engine_version}, Compose {report.compose_version}")
            for warning in report.warnings:
                self.err.print(f"[yellow]Warning:[/] {escape(warning)}")
        with timer.phase("start"):
            self.out.print("  docker compose up -d (pulls missing images; this can take a while)")
            self.project.up()
        with timer.phase("wait"):
            statuses = self.wait_ready(timeouts)
        return UpResult(self.project, timer, statuses)

    def wait_ready(self, timeouts: Timeouts) -> dict[str, WaitStatus]:
        states = CachedStates(self.project.states)
        services = self._services_with_kind()
        targets = container_targets(services, states, timeouts) + endpoint_targets(
            self.stack.config, timeouts
        )
        view = WaitView(self.out, "Waiting for every service and endpoint")
        group = WaitGroup(targets, on_update=view.update)
        try:
            with view.live():
                results = group.run()
        except KeyboardInterrupt:
            group.cancel()
            raise Interrupted(
                "interrupted while waiting; the containers keep running",
                hint="run `difystack up` again to continue, or `difystack down` to stop",
            ) from None
        failed = [s for s in results.values() if not s.ok and s.state != "cancelled"]
        if failed:
            self._report_failure(failed, states())
        return results

    def _services_with_kind(self) -> dict[str, bool]:
        config = self.project.docker.compose.config(return_json=True)
        return {
            name: str(service.get("restart", "")) == "no"
            for name, service in config.get("services", {}).items()
        }

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
            hint="fix the cause and run `difystack up` again; running services are kept",
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
        self.out.print(f"  timings     {result.timer.summary()}")

    def status(self) -> dict[str, Any]:
        self.project.require_rendered()
        states = self.project.states()
        one_shot = self._services_with_kind()
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
