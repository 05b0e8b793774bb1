"""Checks made before anything starts: engine, Compose v2, free host ports, disk space."""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from difystack.cluster import cluster_warnings
from difystack.compose_runtime import ServiceState, engine_error
from difystack.config_model import StackConfig
from difystack.errors import DifystackError, EngineError
from difystack.gpu import CudaVersion, check_gpu_driver

MIN_COMPOSE = (2, 20, 0)
LOW_DISK_BYTES = 20 * 1024**3
CRITICAL_DISK_BYTES = 2 * 1024**3

PortProbe = Callable[[str, int], bool]


@dataclass(frozen=True)
class PreflightReport:
    engine_version: str
    compose_version: str
    warnings: list[str]


def port_is_free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def suggest_free_port(address: str, start: int, taken: set[int], probe: PortProbe) -> int | None:
    for candidate in range(max(start + 1, 1024), min(start + 200, 65535)):
        if candidate not in taken and probe(address, candidate):
            return candidate
    return None


@dataclass(frozen=True)
class EngineFacts:
    version: str
    compose: str
    root_dir: str | None
    architecture: str
    runtimes: frozenset[str]


def hardware_warnings(config: StackConfig, gpu: bool, facts: EngineFacts) -> list[str]:
    warnings = []
    local_xinference = config.xinference.enabled and config.xinference.external is None
    if local_xinference and facts.architecture in ("aarch64", "arm64") and not gpu:
        warnings.append(
            "Xinference publishes no arm64 CPU image: it will run emulated and slowly. On a Mac, run "
            "Xinference natively and declare it with xinference.external.url"
        )
    if gpu and "nvidia" not in facts.runtimes:
        warnings.append(
            "the stack asks for NVIDIA GPUs but the Docker engine lists no nvidia runtime; install the "
            "NVIDIA Container Toolkit (or CDI) or set gpu: none"
        )
    return warnings


def check_engine(docker: DockerClient) -> EngineFacts:
    """What the engine is and offers; raises EngineError when it is unusable."""
    with ThreadPoolExecutor(max_workers=2) as pool:  # two independent CLI round trips
        info_call = pool.submit(docker.system.info)
        compose_call = pool.submit(docker.compose.version)
    try:
        info = info_call.result()
    except DockerException as exc:
        raise engine_error(exc) from None
    except Exception as exc:  # the docker CLI itself missing
        raise engine_error(exc) from None
    try:
        compose = str(compose_call.result()).strip()
    except DockerException:
        raise EngineError(
            "Docker Compose v2 (`docker compose`) is not available",
            hint="install the Compose plugin: https://docs.docker.com/compose/install/linux/",
        ) from None
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", compose)
    if not match or tuple(int(x) for x in match.groups()) < MIN_COMPOSE:
        raise EngineError(
            f"Docker Compose {compose!r} is too old; "
            f"difystack needs v{'.'.join(map(str, MIN_COMPOSE))} or newer",
            hint="update Docker Desktop or the docker-compose-plugin package",
        )
    root = info.docker_root_dir
    return EngineFacts(
        version=str(info.server_version),
        compose=match.group(0),
        root_dir=str(root) if root else None,
        architecture=str(info.architecture or ""),
        runtimes=frozenset(info.runtimes or {}),
    )


def check_ports(
    config: StackConfig,
    own_ports: set[int],
    probe: PortProbe = port_is_free,
    holder: Callable[[int], str | None] = lambda port: None,
) -> None:
    """Refuse before anything starts when a host port is taken by something else."""
    problems = []
    published = config.published_ports()
    for field_path, port in published.items():
        if port in own_ports or probe(config.bind_address, port):
            continue
        who = holder(port)
        used_by = f" (used by {who})" if who else ""
        suggestion = suggest_free_port(config.bind_address, port, set(published.values()), probe)
        fix = f"--set {field_path}={suggestion}" if suggestion else f"--set {field_path}=<free port>"
        problems.append(
            f"{field_path}: port {port} on {config.bind_address} is already in use{used_by}; "
            f"free it or run again with {fix}"
        )
    if problems:
        raise DifystackError(
            "host ports are taken: " + "; ".join(problems),
            hint="or set the ports in difystack.yaml, e.g. `dify:\\n  port: 8081`",
        )


def check_disk(root_dir: str | None) -> list[str]:
    if not root_dir or not os.path.isdir(root_dir):
        return []  # e.g. Docker Desktop: the engine's disk is inside its VM
    free = shutil.disk_usage(root_dir).free
    gib = free / 1024**3
    if free < CRITICAL_DISK_BYTES:
        raise DifystackError(
            f"only {gib:.1f} GiB free under {root_dir}; images and models need far more",
            hint="free disk space (docker system prune) and run again",
        )
    if free < LOW_DISK_BYTES:
        return [
            f"{gib:.1f} GiB free under {root_dir}; Dify, Xinference and LocalAI images plus models "
            "usually need 20 GiB or more"
        ]
    return []


def container_on_port(docker: DockerClient) -> Callable[[int], str | None]:
    def holder(port: int) -> str | None:
        try:
            found = docker.container.list(filters={"publish": str(port)})
        except DockerException:
            return None
        return f"container {found[0].name}" if found else None

    return holder


def run_preflight(
    config: StackConfig,
    docker: DockerClient,
    own_ports: set[int],
    gpu: bool,
    probe: PortProbe = port_is_free,
    cuda_driver: CudaVersion | None = None,
) -> PreflightReport:
    check_gpu_driver(config, gpu, cuda_driver)
    facts = check_engine(docker)
    check_ports(config, own_ports, probe, container_on_port(docker))
    warnings = check_disk(facts.root_dir) + hardware_warnings(config, gpu, facts) + cluster_warnings(config)
    return PreflightReport(facts.version, facts.compose, warnings)


def published_ports_of(states: Iterable[ServiceState]) -> set[int]:
    """Host ports already published by this stack's own containers (a re-run may reuse them)."""
    ports: set[int] = set()
    for state in states:
        for mapping in state.ports:
            host_part = mapping.split("->", 1)[0]
            port_text = host_part.rsplit(":", 1)[-1]
            if port_text.isdigit():
                ports.add(int(port_text))
    return ports
