"""`difystack worker up|status|down`: one Xinference worker on this machine, joined to a
supervisor on another one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from difystack.cluster_config import WorkerConfig
from difystack.compose_runtime import ComposeProject, ServiceState
from difystack.errors import DifystackError
from difystack.preflight import check_engine, port_is_free, published_ports_of
from difystack.progress import WaitView
from difystack.render import write_project
from difystack.waits import CachedStates, ContainerWait, HttpWait, WaitGroup, WaitStatus, WaitTarget
from difystack.worker_join import WorkerJoinWait, listed_hosts
from difystack.worker_project import WorkerPaths, render_worker, save_settings, supervisor_ip

SERVICE = "xinference-worker"
LOG_LINES_ON_FAILURE = 25


@dataclass(frozen=True)
class WorkerStatus:
    container: ServiceState | None
    joined_as: str | None  # the address the supervisor lists it under (None: not listed)
    supervisor_error: str | None  # why the supervisor could not be asked (None: it answered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "container": self.container.as_dict() if self.container else None,
            "joined_as": self.joined_as,
            "supervisor_error": self.supervisor_error,
        }


def _supervisor_answer(response: httpx.Response) -> tuple[bool, str]:
    """``GET /v1/address`` (public even with accounts on) names what the worker will connect to."""
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}"
    try:
        return True, f"answers; its own address is {response.json()}"
    except ValueError:
        return False, "not an Xinference answer"


class WorkerLifecycle:
    def __init__(self, paths: WorkerPaths, worker: WorkerConfig, out: Console, err: Console) -> None:
        self.paths = paths
        self.worker = worker
        self.out = out
        self.err = err
        self.project = ComposeProject(paths.project, worker.project_name)

    def render(self) -> None:
        files = render_worker(self.worker, supervisor_ip(self.worker))
        save_settings(self.paths, self.worker)
        write_project(files, self.paths.project)
        self.project = ComposeProject(self.paths.project, self.worker.project_name)

    def up(self, timeout: float) -> WorkerStatus:
        worker = self.worker
        self.out.print(
            f"[bold]Worker {escape(worker.name)}[/]: joins the supervisor at {escape(worker.supervisor)}"
        )
        self.render()
        facts = check_engine(self.project.docker)
        if worker.gpu and "nvidia" not in facts.runtimes:
            self.err.print(
                "[yellow]Warning:[/] a GPU worker, but the Docker engine lists no nvidia runtime; install "
                "the NVIDIA Container Toolkit or run with --cpu"
            )
        self._check_ports()
        # The worker process asks the supervisor for its address once, at start: wait for it first.
        answer = HttpWait(f"{worker.supervisor}/v1/address", _supervisor_answer)
        supervisor = WaitTarget(f"supervisor {worker.supervisor}", answer, timeout, timeout)
        failed = self._wait("Waiting for the supervisor", [supervisor])
        if failed:
            raise DifystackError(
                f"--supervisor: no Xinference answers at {worker.supervisor} ({failed[0].detail})",
                hint="is the main stack up with xinference.join_address set, and is its Xinference port "
                "open to this machine?",
            )
        self.out.print(f"  docker compose up -d in {escape(str(self.paths.project))}")
        self.project.up()
        states = CachedStates(self.project.states)
        join = WorkerJoinWait(worker.supervisor, worker.name, timeout)
        failed = self._wait(
            f"Waiting for worker {worker.name} to join",
            [
                WaitTarget(SERVICE, ContainerWait(SERVICE, states), timeout, timeout),
                WaitTarget(f"joined {worker.supervisor}", join, timeout, timeout),
            ],
        )
        if failed:
            self._report_not_joined()
        return self.status()

    def _check_ports(self) -> None:
        own = published_ports_of(self._states())
        low, high = self.worker.model_port_range
        taken = [
            port
            for port in [self.worker.worker_port, *range(low, high + 1)]
            if port not in own and not port_is_free(self.worker.address, port)
        ]
        if taken:
            raise DifystackError(
                f"ports taken on {self.worker.address}: {', '.join(map(str, taken))}",
                hint="free them, or choose others with --worker-port / --model-ports",
            )

    def _wait(self, title: str, targets: list[WaitTarget]) -> list[WaitStatus]:
        """Wait for every target in one live view; returns those that did not become ready."""
        view = WaitView(self.out, title)
        with view.live():
            results = WaitGroup(targets, on_update=view.update).run()
        failed = [status for status in results.values() if not status.ok and status.state != "cancelled"]
        for status in failed:
            self.err.print(f"\n[bold red]{escape(status.name)}[/] is not ready: {escape(status.detail)}")
        return failed

    def _report_not_joined(self) -> None:
        logs = self.project.logs(SERVICE, tail=LOG_LINES_ON_FAILURE).rstrip()
        self.err.print(f"  last {LOG_LINES_ON_FAILURE} log lines of {SERVICE}:")
        for line in logs.splitlines()[-LOG_LINES_ON_FAILURE:] or ["(no output)"]:
            self.err.print(f"    {escape(line)}", soft_wrap=True)
        raise DifystackError(
            f"worker {self.worker.name} did not join the supervisor at {self.worker.supervisor}",
            hint=f"the supervisor connects back to {self.worker.address} on ports {self.ports_text()}: they "
            "must be open to it, and --address must be this machine's address as the supervisor sees it; "
            "then run the same command again",
        )

    def ports_text(self) -> str:
        return f"{self.worker.worker_port} and {self.worker.model_ports}"

    def _states(self) -> list[ServiceState]:
        if not self.project.rendered:
            return []
        try:
            return self.project.states()
        except DifystackError:
            return []

    def status(self) -> WorkerStatus:
        container = next((s for s in self._states() if s.service == SERVICE), None)
        try:
            response = httpx.get(f"{self.worker.supervisor}/status", timeout=5.0)
            listed = listed_hosts(response.json()) if response.status_code == 200 else {}
            error = None if response.status_code == 200 else f"HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            listed, error = {}, exc.__class__.__name__
        return WorkerStatus(container, listed.get(self.worker.name), error)

    def down(self, volumes: bool) -> list[str]:
        if not self.project.rendered:
            raise DifystackError(f"worker {self.worker.name} has no project in {self.paths.project}")
        doomed = self.project.volumes() if volumes else []
        self.project.down(volumes=volumes)
        return doomed
