"""The worker-only compose project `difystack worker` runs on another machine.

Its state lives in ``<DIFYSTACK_HOME>/worker.<name>/`` (a dot no stack name can contain):
``worker.yaml`` holds the settings it was started with, so ``down``/``status``/``logs`` need only
the name, and ``project/`` the rendered compose project. No secrets: the worker holds none.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from difystack import __version__
from difystack.cluster_config import WorkerConfig
from difystack.errors import ConfigError, DifystackError
from difystack.paths import difystack_home
from difystack.render import COMPOSE_FILE, RenderedFile, Renderer

SETTINGS_FILE = "worker.yaml"
# The option of `difystack worker` that sets each field, for error messages.
OPTION_OF_FIELD = {
    "name": "--name",
    "supervisor": "--supervisor",
    "address": "--address",
    "gpu": "--cpu",
    "image": "--image",
    "version": "--version",
    "worker_port": "--worker-port",
    "model_ports": "--model-ports",
}


@dataclass(frozen=True)
class WorkerPaths:
    root: Path

    @classmethod
    def for_worker(cls, name: str, env: Mapping[str, str] | None = None) -> WorkerPaths:
        return cls(difystack_home(env) / f"worker.{name}")

    @property
    def settings(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def project(self) -> Path:
        return self.root / "project"


def worker_config(values: Mapping[str, Any]) -> WorkerConfig:
    """Validate the settings; an error names the option (or the settings file's field)."""
    try:
        return WorkerConfig.model_validate(dict(values))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                field = str(error["loc"][0])
            else:  # a check across fields names its field first
                field, _, message = message.partition(": ")
            problems.append(f"{OPTION_OF_FIELD.get(field, field)}: {message}")
        raise ConfigError("; ".join(problems)) from None


def load_settings(paths: WorkerPaths) -> WorkerConfig:
    if not paths.settings.is_file():
        raise DifystackError(
            f"no worker named {paths.root.name.removeprefix('worker.')} on this machine ({paths.settings})",
            hint="start it with `difystack worker up --supervisor HOST:PORT --name NAME`",
        )
    data = yaml.safe_load(paths.settings.read_text(encoding="utf-8")) or {}
    return worker_config(data)


def save_settings(paths: WorkerPaths, worker: WorkerConfig) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    header = "# The settings `difystack worker up` last started this worker with.\n"
    text = yaml.safe_dump(worker.as_settings(), sort_keys=False)
    paths.settings.write_text(header + text, encoding="utf-8")


def supervisor_ip(worker: WorkerConfig) -> str:
    """The supervisor machine's IP (compose's extra_hosts needs one): as given, or looked up."""
    host = worker.supervisor_host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except (OSError, IndexError):
        raise DifystackError(
            f"--supervisor: cannot resolve {host!r} on this machine", hint="give the supervisor's IP address"
        ) from None


def healthcheck_script(worker: WorkerConfig, supervisor: str) -> str:
    """Python run in the container: listening on the worker port and listed by the supervisor."""
    port_hex = f"{worker.worker_port:04X}"
    return (
        "import json, os, sys, urllib.request; "
        f"listening = any(row.split()[1].endswith(':{port_hex}') and row.split()[3] == '0A' "
        "for table in ('/proc/net/tcp', '/proc/net/tcp6') if os.path.exists(table) "
        "for row in open(table).readlines()[1:]); "
        f"workers = json.load(urllib.request.urlopen('{supervisor}/status', timeout=4))['workers']; "
        f"sys.exit(0 if listening and '{worker.name}:{worker.worker_port}' in workers else 1)"
    )


def render_worker(
    worker: WorkerConfig, supervisor_address: str, renderer: Renderer | None = None
) -> list[RenderedFile]:
    """The worker's compose project; ``supervisor_address`` is the supervisor machine's IP."""
    scheme, _, rest = worker.supervisor.partition("://")
    port = rest.rsplit(":", 1)[1]
    host = f"[{supervisor_address}]" if ":" in supervisor_address else supervisor_address
    supervisor = f"{scheme}://{host}:{port}"
    command = [
        "xinference-worker",
        "-e",
        supervisor,
        "-H",
        worker.name,
        "--worker-port",
        str(worker.worker_port),
        "--metrics-exporter-port",
        str(worker.metrics_port),
    ]
    context = {
        "difystack_version": __version__,
        "worker": worker,
        "image": worker.resolved_image(),
        "command": command,
        "supervisor_ip": supervisor_address,
        "published_host": f"[{worker.address}]" if ":" in worker.address else worker.address,
        "healthcheck": healthcheck_script(worker, supervisor),
        "labels": {**worker.labels, "io.difystack.worker": worker.name, "io.difystack.managed": "true"},
    }
    renderer = renderer or Renderer()
    return [RenderedFile(COMPOSE_FILE, renderer.render("worker/docker-compose.yml.j2", context))]
