"""The rendered Compose project driven through python-on-whales, on an explicit project name."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from python_on_whales import ClientNotFoundError, DockerClient
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run

from difystack.errors import DifystackError, EngineError
from difystack.render import COMPOSE_FILE, ENV_FILE


@dataclass(frozen=True)
class ServiceState:
    service: str
    container: str
    state: str  # created | running | restarting | exited | paused | dead | missing
    health: str | None  # healthy | unhealthy | starting | None (no healthcheck)
    exit_code: int | None
    restarts: int
    ports: list[str]

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in (None, "healthy")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def docker_error_text(exc: Exception) -> str:
    text = str(getattr(exc, "stderr", "") or "").strip() or str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else exc.__class__.__name__


def engine_error(exc: Exception) -> EngineError:
    if isinstance(exc, ClientNotFoundError) or shutil.which("docker") is None:
        return EngineError(
            "the docker command is not installed",
            hint="install Docker Desktop or Docker Engine with the Compose v2 plugin",
        )
    return EngineError(
        f"cannot reach the Docker engine: {docker_error_text(exc)}",
        hint="start Docker (Docker Desktop, or `sudo systemctl start docker`) and check DOCKER_HOST",
    )


def _service_state(item: dict[str, Any]) -> ServiceState:
    state = item.get("State") or {}
    labels = (item.get("Config") or {}).get("Labels") or {}
    health = (state.get("Health") or {}).get("Status")
    ports = []
    for target, bindings in ((item.get("NetworkSettings") or {}).get("Ports") or {}).items():
        for binding in bindings or []:
            ports.append(f"{binding.get('HostIp', '')}:{binding.get('HostPort', '')}->{target}")
    return ServiceState(
        service=labels.get("com.docker.compose.service", str(item.get("Name", "")).lstrip("/")),
        container=str(item.get("Name", "")).lstrip("/"),
        state=str(state.get("Status", "unknown")),
        health=str(health) if health else None,
        exit_code=state.get("ExitCode"),
        restarts=int(item.get("RestartCount") or 0),
        ports=sorted(ports),
    )


def project_fingerprint(project_dir: Path) -> str:
    """A hash of every file of a rendered project."""
    digest = hashlib.sha256()
    for path in sorted(p for p in project_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(project_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class ComposeProject:
    def __init__(self, project_dir: Path, name: str, docker: DockerClient | None = None) -> None:
        self.project_dir = project_dir
        self.name = name
        compose_file = project_dir / COMPOSE_FILE
        env_file = project_dir / ENV_FILE
        self.docker = docker or DockerClient(
            compose_files=[compose_file],
            compose_project_name=name,
            compose_project_directory=project_dir,
            compose_env_files=[env_file] if env_file.exists() else [],
        )

    @property
    def rendered(self) -> bool:
        return (self.project_dir / COMPOSE_FILE).exists()

    def require_rendered(self) -> None:
        if not self.rendered:
            raise DifystackError(
                f"stack {self.name!r} has no rendered project in {self.project_dir}",
                hint="run `difystack up` first",
            )

    def services(self) -> list[str]:
        config = self.docker.compose.config(return_json=True)
        return sorted(config.get("services", {}))

    def up(self, *, force_recreate: bool = False) -> None:
        try:
            self.docker.compose.up(
                detach=True, remove_orphans=True, quiet=True, force_recreate=force_recreate
            )
        except DockerException as exc:
            raise DifystackError(f"docker compose up failed: {docker_error_text(exc)}") from None

    def states(self) -> list[ServiceState]:
        """Every container of the project, from one `compose ps` and one batched `inspect`."""
        try:
            ids = [
                line
                for line in self._run(["compose", *self._compose_args(), "ps", "-a", "-q"]).split()
                if line
            ]
            if not ids:
                return []
            inspected = json.loads(self._run(["container", "inspect", *ids]))
        except DockerException as exc:
            raise engine_error(exc) from None
        return sorted((_service_state(item) for item in inspected), key=lambda s: s.service)

    def service_kinds(self) -> dict[str, bool]:
        """Service name -> whether it is a one-shot job (restart: "no"), from the rendered file."""
        data = yaml.safe_load((self.project_dir / COMPOSE_FILE).read_text(encoding="utf-8")) or {}
        return {
            name: str((service or {}).get("restart", "")) == "no"
            for name, service in (data.get("services") or {}).items()
        }

    def fingerprint(self) -> str:
        """A hash of every rendered file: equal fingerprints mean `compose up` has nothing to do."""
        return project_fingerprint(self.project_dir)

    def _compose_args(self) -> list[str]:
        args = [
            "--project-directory",
            str(self.project_dir),
            "-p",
            self.name,
            "-f",
            str(self.project_dir / COMPOSE_FILE),
        ]
        env_file = self.project_dir / ENV_FILE
        if env_file.exists():
            args += ["--env-file", str(env_file)]
        return args

    def _run(self, args: list[str]) -> str:
        return str(run([*self.docker.client_config.docker_cmd, *args]))

    def logs(self, service: str | None = None, tail: int | None = 200) -> str:
        try:
            return str(
                self.docker.compose.logs(
                    services=[service] if service else [],
                    tail=str(tail) if tail is not None else None,
                    no_log_prefix=service is not None,
                )
            )
        except DockerException as exc:
            return f"(could not read logs: {docker_error_text(exc)})"

    def stream_logs(self, service: str | None, follow: bool, tail: int | None) -> Iterator[str]:
        stream = self.docker.compose.logs(
            services=[service] if service else [],
            follow=follow,
            stream=True,
            tail=str(tail) if tail is not None else None,
        )
        for _source, chunk in stream:
            yield chunk.decode("utf-8", errors="replace")

    def down(self, volumes: bool = False) -> None:
        try:
            self.docker.compose.down(remove_orphans=True, volumes=volumes, quiet=True)
        except DockerException as exc:
            raise DifystackError(f"docker compose down failed: {docker_error_text(exc)}") from None

    def volumes(self) -> list[str]:
        try:
            found = self.docker.volume.list(filters={"label": f"com.docker.compose.project={self.name}"})
        except DockerException as exc:
            raise engine_error(exc) from None
        return sorted(volume.name for volume in found)
