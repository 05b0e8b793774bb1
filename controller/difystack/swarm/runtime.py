"""A rendered stack on a swarm, driven through python-on-whales: deploy, states, logs, removal."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Collection, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from python_on_whales import DockerClient
from python_on_whales.components.node.models import NodeInspectResult
from python_on_whales.components.service.models import ServiceInspectResult
from python_on_whales.components.task.models import TaskInspectResult
from python_on_whales.exceptions import DockerException

from difystack.compose_runtime import ServiceState, docker_error_text, engine_error, project_fingerprint
from difystack.errors import DifystackError, EngineError
from difystack.swarm.inspect import inspect_all
from difystack.swarm.render import STACK_FILE, dump_stack
from difystack.swarm.transform import EXTENSION

STACK_LABEL = "com.docker.stack.namespace"
STAGE_FILE = ".difystack-stage.yml"
PENDING = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready"})
FAILED = frozenset({"failed", "rejected"})
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


def _when(task: TaskInspectResult) -> datetime:
    created = task.created_at or _EPOCH
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def task_state(
    service: str,
    tasks: list[TaskInspectResult],
    *,
    healthcheck: bool,
    ports: list[str],
    nodes: dict[str, str],
) -> ServiceState:
    """One service's state as a container-like ServiceState, from its tasks.

    A job's task that completed is "exited" with code 0; a running task with a healthcheck is
    healthy (Swarm reports "starting" until the healthcheck passes). Failed tasks count as
    restarts while the service is not running again.
    """
    ordered = sorted(tasks, key=_when, reverse=True)
    live = [task for task in ordered if task.desired_state != "shutdown"]
    current = (live or ordered)[0]
    status = current.status
    state = (status.state if status else None) or "unknown"
    error = (status.err if status else None) or ""
    exit_code = status.container_status.exit_code if status and status.container_status else None
    failures = 0
    for task in ordered:
        task_status = task.status.state if task.status else None
        if task_status in ("running", "complete", "shutdown"):
            break
        failures += task_status in FAILED
    health: str | None = None
    if state == "running":
        health, failures = ("healthy" if healthcheck else None), 0
    elif state == "starting":
        state, health = ("running", "starting") if healthcheck else ("starting", None)
    elif state == "complete":
        state, exit_code = "exited", 0
    elif state in FAILED:
        state = "exited" if current.desired_state == "complete" else "restarting"
        exit_code = exit_code if exit_code is not None else 1
    elif state in PENDING and error:
        state = f"{state}: {error}"
    node = nodes.get(current.node_id or "", "")
    return ServiceState(
        service=service,
        container=f"{current.name or service}.{current.slot or 1}" + (f" on {node}" if node else ""),
        state=state,
        health=health,
        exit_code=exit_code,
        restarts=failures,
        ports=ports,
    )


def not_a_manager(exc: Exception) -> EngineError | None:
    """An engine that is not (or no longer) a swarm manager, named as such."""
    text = docker_error_text(exc)
    if "not a swarm manager" not in text and "not part of a swarm" not in text:
        return None
    return EngineError(
        f"this Docker engine is not a swarm manager ({text})",
        hint="run difystack on a manager of the swarm the stack was deployed to, or `docker swarm init`",
    )


def _ports(service: ServiceInspectResult) -> list[str]:
    endpoint = service.endpoint
    published = (
        endpoint.ports or (endpoint.spec.ports if endpoint.spec else None) if endpoint else None
    ) or []
    return sorted(f"*:{p.published_port}->{p.target_port}/{p.protocol or 'tcp'}" for p in published)


def _while_updating(state: ServiceState, service: ServiceInspectResult) -> ServiceState:
    """A service the swarm is still rolling is not ready, whatever its old task says."""
    update = service.update_status
    if update is None or update.state not in ("updating", "rollback_started", "paused", "rollback_paused"):
        return state
    detail = f"update {update.state}" + (f": {update.message}" if update.message else "")
    return dataclasses.replace(state, state=detail, health=None)


class SwarmProject:
    def __init__(self, project_dir: Path, name: str, docker: DockerClient | None = None) -> None:
        self.project_dir = project_dir
        self.name = name
        self.docker = docker or DockerClient()
        self._node_names: dict[str, str] = {}

    @property
    def stack_file(self) -> Path:
        return self.project_dir / STACK_FILE

    @property
    def rendered(self) -> bool:
        return self.stack_file.exists()

    def require_rendered(self) -> None:
        if not self.rendered:
            raise DifystackError(
                f"stack {self.name!r} has no rendered swarm project in {self.project_dir}",
                hint="run `difystack up --engine swarm` first",
            )

    def model(self) -> dict[str, Any]:
        if not self.rendered:
            return {}
        return yaml.safe_load(self.stack_file.read_text(encoding="utf-8")) or {}

    def services(self) -> list[str]:
        return sorted(self.model().get("services") or {})

    def service_kinds(self) -> dict[str, bool]:
        """Service name -> whether it is a one-shot job, from the rendered stack file."""
        return {
            name: str((service.get("deploy") or {}).get("mode", "")).endswith("-job")
            for name, service in (self.model().get("services") or {}).items()
        }

    def stages(self) -> list[list[str]]:
        return list(self.model().get(EXTENSION, {}).get("stages") or [])

    def waits(self) -> dict[str, dict[str, str]]:
        return dict(self.model().get(EXTENSION, {}).get("waits") or {})

    def fingerprint(self) -> str:
        return project_fingerprint(self.project_dir)

    # -- deploy ----------------------------------------------------------------------------------

    def deploy(self, services: Collection[str], resolve_image: str) -> None:
        """`docker stack deploy` of ``services`` (one stage) with the stack's networks, secrets, configs.

        Services of other stages are left as they are: a stage never updates (or re-runs, for a
        job) what an earlier stage deployed.
        """
        model = self.model()
        model["services"] = {k: v for k, v in model["services"].items() if k in services}
        model.pop(EXTENSION, None)
        stage = self.project_dir / STAGE_FILE
        stage.write_text(dump_stack(model), encoding="utf-8")
        try:
            self.docker.stack.deploy(self.name, [stage], resolve_image=resolve_image)
        except DockerException as exc:
            raise DifystackError(f"docker stack deploy failed: {docker_error_text(exc)}") from None
        finally:
            stage.unlink(missing_ok=True)

    def prune(self) -> list[str]:
        """Remove the stack's services its stack file no longer has (`docker stack deploy --prune`)."""
        wanted = {f"{self.name}_{service}" for service in self.services()}
        try:
            stale = [str(s.spec.name) for s in self._services() if s.spec and s.spec.name not in wanted]
            if stale:
                self.docker.service.remove(stale)
        except DockerException as exc:
            raise DifystackError(f"removing services failed: {docker_error_text(exc)}") from None
        return [name.removeprefix(f"{self.name}_") for name in stale]

    def force_update(self) -> None:
        """Replace every task even if nothing changed (the swarm's --force-recreate)."""
        for service in self._services():
            try:
                self.docker.service.update(str(service.id), force=True, detach=True)
            except DockerException as exc:
                raise DifystackError(
                    f"docker service update --force failed: {docker_error_text(exc)}"
                ) from None

    # -- states ----------------------------------------------------------------------------------

    def _services(self) -> list[ServiceInspectResult]:
        found = self.docker.service.list(filters=[("label", f"{STACK_LABEL}={self.name}")])
        return inspect_all(self.docker, [str(service) for service in found], ServiceInspectResult)

    def _nodes(self, ids: set[str]) -> dict[str, str]:
        missing = sorted(ids - set(self._node_names))
        for node in inspect_all(self.docker, missing, NodeInspectResult):
            hostname = node.description.hostname if node.description else None
            self._node_names[str(node.id)] = hostname or str(node.id)[:12]
        return self._node_names

    def states(self) -> list[ServiceState]:
        """Every service of the stack, from one service listing and one batched task inspect."""
        try:
            services = self._services()
            if not services:
                return []
            task_ids = [str(task) for task in self.docker.service.ps([str(s.id) for s in services])]
            tasks = inspect_all(self.docker, task_ids, TaskInspectResult)
            nodes = self._nodes({task.node_id for task in tasks if task.node_id})
        except DockerException as exc:
            raise not_a_manager(exc) or engine_error(exc) from None
        checked = {
            name
            for name, service in (self.model().get("services") or {}).items()
            if service.get("healthcheck")
        }
        states = []
        for service in services:
            full_name = str(service.spec.name if service.spec else service.id)
            name = full_name.removeprefix(f"{self.name}_")
            own = [task for task in tasks if task.service_id == service.id]
            if own:
                state = task_state(name, own, healthcheck=name in checked, ports=_ports(service), nodes=nodes)
                states.append(_while_updating(state, service))
        return sorted(states, key=lambda s: s.service)

    # -- logs ------------------------------------------------------------------------------------

    def logs(self, service: str | None = None, tail: int | None = 200) -> str:
        names = [service] if service else self.services()
        chunks = []
        for name in names:
            try:
                text = self.docker.service.logs(f"{self.name}_{name}", tail=tail, raw=service is not None)
            except DockerException as exc:
                text = f"(could not read logs: {docker_error_text(exc)})\n"
            chunks.append(str(text))
        return "".join(chunks)

    def stream_logs(self, service: str | None, follow: bool, tail: int | None) -> Iterator[str]:
        names = [service] if service else self.services()
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(name: str) -> None:
            try:
                stream = self.docker.service.logs(
                    f"{self.name}_{name}", tail=tail, follow=follow, stream=True, raw=service is not None
                )
                for _source, chunk in stream:
                    lines.put(chunk.decode("utf-8", errors="replace"))
            except DockerException as exc:
                lines.put(f"{name}: could not read logs: {docker_error_text(exc)}\n")
            finally:
                lines.put(None)

        for name in names:
            threading.Thread(target=pump, args=(name,), name=f"logs-{name}", daemon=True).start()
        running = len(names)
        while running:
            chunk = lines.get()
            if chunk is None:
                running -= 1
            else:
                yield chunk

    # -- removal ---------------------------------------------------------------------------------

    def down(self, volumes: bool = False, timeout: float = 180.0) -> None:
        """Remove the stack and wait until its containers and networks are gone."""
        try:
            if self.docker.service.list(filters=[("label", f"{STACK_LABEL}={self.name}")]):
                self.docker.stack.remove(self.name)
            self._wait_until_removed(timeout)
            if volumes:
                doomed = self.volumes()
                if doomed:
                    self.docker.volume.remove(doomed)
        except DockerException as exc:
            failure = DifystackError(f"removing stack {self.name} failed: {docker_error_text(exc)}")
            raise not_a_manager(exc) or failure from None

    def _wait_until_removed(self, timeout: float) -> None:
        label = ("label", f"{STACK_LABEL}={self.name}")
        deadline = time.monotonic() + timeout
        while True:
            containers = self.docker.container.list(all=True, filters=[label])
            if containers and not self.docker.service.list(filters=[label]):
                # The containers a job's completed tasks leave behind outlive the removed stack.
                finished = [c for c in containers if c.state.status in ("exited", "dead", "created")]
                if finished:
                    self.docker.container.remove(finished, force=True)
                    continue
            networks = self.docker.network.list(filters=[label])
            if not containers and not networks:
                return
            if time.monotonic() > deadline:
                left = [c.name for c in containers] + [n.name for n in networks]
                raise DifystackError(
                    f"stack {self.name} is still being removed after {timeout:.0f}s: {', '.join(left)}",
                    hint="run `difystack down` again in a moment",
                )
            time.sleep(1.0)

    def volumes(self) -> list[str]:
        """The stack's volumes on this node (a volume lives on the node its service ran on)."""
        try:
            found = self.docker.volume.list(filters=[("label", f"io.difystack.stack={self.name}")])
        except DockerException as exc:
            raise engine_error(exc) from None
        return sorted(volume.name for volume in found)
