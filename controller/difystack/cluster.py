"""The main stack's side of workers on other machines: what the supervisor publishes and
resolves, waiting for each external worker to join, and the command that joins it.

A worker started by ``difystack worker up`` on another machine registers with the supervisor
as ``<name>:<worker port>``; the supervisor's container resolves ``<name>`` to the address the
stack file declares for it, and reaches the worker's published ports there.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any

from difystack.cluster_config import ExternalWorker, WorkerConfig
from difystack.config_model import StackConfig

ROW_PREFIX = "external worker "


def supervisor_join_ports(config: StackConfig) -> list[dict[str, Any]]:
    """The supervisor's ports published on ``xinference.join_address`` (none without it)."""
    xinference = config.xinference
    address = xinference.join_address
    if address is None or xinference.topology != "distributed":
        return []
    ports = [
        {"target": xinference.supervisor_port, "published": xinference.supervisor_port, "host_ip": address}
    ]
    # The API port is published on 127.0.0.1 (or bind_address when exposed) already; a second
    # binding on the same address or next to a wildcard one would clash.
    api_host = config.bind_address if xinference.expose else "127.0.0.1"
    if api_host not in (address, "0.0.0.0", "::"):
        ports.insert(0, {"target": 9997, "published": xinference.port, "host_ip": address})
    return ports


def supervisor_extra_hosts(config: StackConfig) -> list[str]:
    """``name:address`` for every external worker: how the supervisor reaches it by name."""
    return [f"{worker.name}:{worker.address}" for worker in config.xinference.external_workers]


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def join_command(config: StackConfig, worker: ExternalWorker) -> str:
    """The command to run on the worker's machine so that it joins this stack's supervisor."""
    xinference = config.xinference
    defaults = WorkerConfig.model_fields
    args = [
        "difystack",
        "worker",
        "up",
        "--supervisor",
        _host_port(xinference.join_address or "<this machine>", xinference.port),
        "--name",
        worker.name,
        "--address",
        worker.address,
    ]
    if not worker.gpu:
        args.append("--cpu")
    if "xinference" in config.images:
        args += ["--image", config.images["xinference"]]
    elif xinference.version != defaults["version"].default:
        args += ["--version", xinference.version]
    return shlex.join(args)


def row_name(worker: ExternalWorker) -> str:
    return f"{ROW_PREFIX}{worker.name}"


def external_rows(config: StackConfig) -> list[str]:
    if config.xinference.external is not None or not config.xinference.enabled:
        return []
    return [row_name(worker) for worker in config.xinference.external_workers]


def join_hints(config: StackConfig, failed_rows: Iterable[str]) -> str | None:
    """For the external workers among ``failed_rows``: where to run which command."""
    by_row = {row_name(worker): worker for worker in config.xinference.external_workers}
    hints = [
        f"on {worker.name} ({worker.address}) run: {join_command(config, worker)}"
        for worker in (by_row.get(row) for row in failed_rows)
        if worker is not None
    ]
    if not hints:
        return None
    return (
        "; ".join(hints) + ", then `difystack up` again (if the worker runs there already, the supervisor "
        "cannot reach it back: its ports, which `difystack worker status` shows there, must be open to "
        "this machine)"
    )


def cluster_warnings(config: StackConfig) -> list[str]:
    xinference = config.xinference
    if not xinference.enabled or xinference.external is not None or xinference.join_address is None:
        return []
    return [
        f"Xinference's supervisor port {xinference.supervisor_port} is published on "
        f"{xinference.join_address} for workers on other machines; it has no authentication, so keep "
        "that network trusted (or firewall the port to the worker machines)"
    ]
