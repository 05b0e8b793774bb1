"""`difystack up/status/down` on a swarm: the compose lifecycle with a swarm runtime.

Waiting for the services and converging the models are the same as with Compose (the
converge talks only HTTP, to the ports the routing mesh publishes); what differs is how the
stack starts: preflight on the swarm, node labels, Swarm secrets, and a deploy in stages
that waits for exactly the ``depends_on`` conditions Swarm itself would ignore.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from python_on_whales import DockerClient
from rich.console import Console
from rich.markup import escape

from difystack.compose_runtime import ServiceState
from difystack.gpu import localai_cuda_flavour
from difystack.images import resolve_images
from difystack.lifecycle import Lifecycle, UpResult
from difystack.preflight import published_ports_of
from difystack.progress import PhaseTimer, WaitView
from difystack.readiness import Timeouts
from difystack.stack import Stack
from difystack.swarm.preflight import SwarmReport, apply_labels, run_swarm_preflight
from difystack.swarm.processes import Process, resolve_processes
from difystack.swarm.render import render_swarm_project
from difystack.swarm.runtime import SwarmProject
from difystack.swarm.secrets import SwarmSecrets
from difystack.swarm.transform import SwarmSecret
from difystack.waits import CachedStates, ContainerWait, Probe, WaitGroup, WaitStrategy, WaitTarget

StatesFn = Callable[[], dict[str, ServiceState]]


class TaskStarted(WaitStrategy):
    """Compose's ``service_started``: the service has a task that started."""

    def __init__(self, service: str, states: StatesFn, max_restarts: int = 2) -> None:
        self.service = service
        self.states = states
        self.max_restarts = max_restarts

    def probe(self) -> Probe:
        state = self.states().get(self.service)
        if state is None:
            return Probe(False, "no task yet")
        if state.restarts > self.max_restarts:
            return Probe(False, f"{state.state}, restarted {state.restarts} times", failed=True)
        if state.state in ("running", "exited"):
            return Probe(True, "started")
        return Probe(False, state.state)


def dependency_wait(service: str, condition: str, states: StatesFn) -> WaitStrategy:
    if condition == "service_completed_successfully":
        return ContainerWait(service, states, one_shot=True)
    if condition == "service_healthy":
        return ContainerWait(service, states)
    return TaskStarted(service, states)


def stack_processes(stack: Stack, docker: DockerClient | None = None) -> dict[str, Process]:
    """What each image runs: the official table, overridden images read from this machine."""
    config = stack.config
    images = resolve_images(config, stack.gpu, localai_cuda_flavour(stack.cuda_driver))
    return resolve_processes(docker or DockerClient(), images, config.images)


class SwarmLifecycle(Lifecycle):
    def __init__(self, stack: Stack, out: Console, err: Console, docker: DockerClient | None = None) -> None:
        super().__init__(stack, out, err)
        self.docker = docker or DockerClient()
        self.project = SwarmProject(stack.paths.project, stack.name, self.docker)  # type: ignore[assignment]

    @property
    def swarm(self) -> SwarmProject:
        assert isinstance(self.project, SwarmProject)
        return self.project

    # -- up -------------------------------------------------------------------------------------

    def up(self, timeouts: Timeouts, *, force_recreate: bool = False) -> UpResult:
        timer = PhaseTimer()
        with timer.phase("preflight"):  # before anything is written: a refused run changes nothing
            current = self._states_if_any()
            report = run_swarm_preflight(
                self.stack.config, self.docker, published_ports_of(current), self.stack.gpu
            )
        with timer.phase("render"):
            secrets = self.render()
        self._print_preflight(report)
        with timer.phase("start"):
            fingerprint = self.swarm.fingerprint()
            seed: list[ServiceState] | None = None
            if not force_recreate and self._unchanged_and_running(fingerprint, current):
                self.out.print("  services are up to date (nothing changed since the last `up`)")
                seed = current
            else:
                self.deploy(secrets, timeouts, force_recreate=force_recreate)
        with timer.phase("ready + models"):
            statuses, result, journal = self.wait_and_converge(timeouts, seed)
        self._remember_started(fingerprint)
        return UpResult(self.project, timer, statuses, result, journal)  # type: ignore[arg-type]

    def processes(self) -> dict[str, Process]:
        return stack_processes(self.stack, self.docker)

    def render(self) -> list[SwarmSecret]:
        """Write the swarm project; returns the Swarm secrets its stack file names."""
        processes = self.processes()
        self.stack.render(processes=processes)
        _, secrets = render_swarm_project(
            self.stack.config,
            self.stack.secrets_store.completed(),
            gpu=self.stack.gpu,
            config_dir=self.stack.config_dir,
            cuda_flavour=localai_cuda_flavour(self.stack.cuda_driver),
            processes=processes,
        )
        return secrets

    def _print_preflight(self, report: SwarmReport) -> None:
        where = escape(str(self.swarm.project_dir))
        self.out.print(f"[bold]Stack {escape(self.stack.name)}[/]: swarm project in {where}")
        nodes = len(report.nodes)
        self.out.print(
            f"  Docker engine {report.engine_version}, swarm manager {escape(report.this_node.hostname)} "
            f"({nodes} node{'s' if nodes != 1 else ''})"
        )
        for line in apply_labels(self.docker, report):
            self.out.print(f"  {escape(line)} (a one-node swarm)")
        for warning in report.warnings:
            self.err.print(f"[yellow]Warning:[/] {escape(warning)}")

    def deploy(self, secrets: list[SwarmSecret], timeouts: Timeouts, *, force_recreate: bool = False) -> None:
        """Secrets first, then the stack stage by stage; old secret versions are removed last."""
        store = SwarmSecrets(self.docker, self.stack.name, self.stack.paths.root)
        created = store.create_missing(secrets)
        if created:
            self.out.print(f"  Swarm secrets created: {', '.join(created)} (values never printed)")
        stages = self.swarm.stages()
        waits = self.swarm.waits()
        resolve_image = self.stack.config.deploy.resolve_image
        for index, stage in enumerate(stages):
            if index:
                self._wait_for_dependencies(stage, waits, timeouts)
            self.out.print(f"  docker stack deploy, stage {index + 1}/{len(stages)}: {', '.join(stage)}")
            self.swarm.deploy(stage, resolve_image)
        removed = self.swarm.prune()
        if removed:
            self.out.print(f"  removed services no longer in the stack: {', '.join(removed)}")
        if force_recreate:
            self.swarm.force_update()
        store.prune({secret.name for secret in secrets})

    def _wait_for_dependencies(
        self, stage: list[str], waits: Mapping[str, Mapping[str, str]], timeouts: Timeouts
    ) -> None:
        """Wait for what the next stage depends on (Compose's depends_on conditions)."""
        needed: dict[str, str] = {}
        for service in stage:
            needed.update(waits.get(service, {}))
        if not needed:
            return
        states = CachedStates(self.swarm.states)
        targets = [
            WaitTarget(
                dependency,
                dependency_wait(dependency, condition, states),
                timeouts.total,
                timeouts.stall,
                timeouts.poll,
            )
            for dependency, condition in sorted(needed.items())
        ]
        conditions = ", ".join(
            f"{d} {c.removeprefix('service_').replace('_', ' ')}" for d, c in needed.items()
        )
        view = WaitView(self.out, f"Waiting before the next stage: {conditions}")
        with view.live():
            results = WaitGroup(targets, on_update=view.update).run()
        failed = [s for s in results.values() if not s.ok and s.state != "cancelled"]
        if failed:
            self._report_failure(failed, states())

    # -- status and down ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        report = super().status()
        report["engine"] = "swarm"
        return report

    def down(self, volumes: bool) -> list[str]:
        removed = super().down(volumes)
        SwarmSecrets(self.docker, self.stack.name, self.stack.paths.root).prune(set())
        return removed
