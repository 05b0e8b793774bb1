"""Checks made before a stack goes to a swarm: a manager, node labels, free ports.

Nothing is changed until every check has passed: on a one-node swarm difystack then labels
the node itself; on a larger swarm it names the exact `docker node update` to run.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.components.node.models import NodeInspectResult
from python_on_whales.exceptions import DockerException

from difystack.compose_runtime import docker_error_text, engine_error
from difystack.config_model import StackConfig
from difystack.errors import DifystackError, EngineError
from difystack.preflight import PortProbe, check_disk, check_ports, container_on_port, port_is_free
from difystack.swarm.inspect import inspect_all
from difystack.swarm.transform import DIFY_NODE_LABEL, GPU_NODE_LABEL

# Swarm jobs (one-shot services) need Docker Engine 20.10 (API 1.41).
MIN_ENGINE = (20, 10)


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    role: str
    labels: dict[str, str]

    def has(self, label: str) -> bool:
        return self.labels.get(label) == "true"


@dataclass
class SwarmReport:
    engine_version: str
    this_node: SwarmNode
    nodes: list[SwarmNode]
    labels_to_add: dict[str, dict[str, str]] = field(default_factory=dict)  # node id -> labels
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ManagerFacts:
    engine_version: str
    node_id: str
    root_dir: str | None
    default_runtime: str | None
    kernel: str


def check_manager(docker: DockerClient) -> ManagerFacts:
    """What a swarm manager engine is; raises EngineError for anything else."""
    try:
        info = docker.system.info()
    except Exception as exc:  # DockerException, or the docker CLI itself missing
        raise engine_error(exc) from None
    swarm = info.swarm
    state = (swarm.local_node_state if swarm else None) or "inactive"
    if state != "active":
        raise EngineError(
            f"this Docker engine is not a swarm manager (swarm: {state}); nothing was changed",
            hint="run `docker swarm init` to make it a one-node swarm, run difystack on a manager of your "
            "swarm, or use --engine compose",
        )
    if not (swarm and swarm.control_available):
        raise EngineError(
            "this Docker engine is a swarm worker, not a manager; nothing was changed",
            hint="run difystack on a manager node (`docker node ls` on a manager lists them)",
        )
    version = str(info.server_version or "")
    match = re.match(r"(\d+)\.(\d+)", version)
    if match and tuple(int(part) for part in match.groups()) < MIN_ENGINE:
        raise EngineError(
            f"Docker Engine {version} is too old for difystack's swarm target (one-shot jobs need 20.10)",
            hint="update Docker Engine on the swarm's nodes",
        )
    return ManagerFacts(
        engine_version=version,
        node_id=str(swarm.node_id),
        root_dir=str(info.docker_root_dir) if info.docker_root_dir else None,
        default_runtime=info.default_runtime,
        kernel=str(info.kernel_version or ""),
    )


def kernel_lacks_ipvs(kernel: str, proc: Path = Path("/proc"), modules: Path = Path("/lib/modules")) -> bool:
    """True when the engine runs on this machine's kernel and that kernel has no IPVS.

    Swarm's virtual IPs and routing mesh are IPVS; dockerd loads the module when the swarm
    creates its ingress network. An engine on another kernel (a VM, a remote host) is not judged.
    """
    if kernel != platform.release() or (proc / "sys/net/ipv4/vs").exists():
        return False
    release = modules / kernel
    builtin = release / "modules.builtin"
    if (release / "kernel/net/netfilter/ipvs").is_dir():
        return False
    return not (
        builtin.is_file() and "ipvs/ip_vs.ko" in builtin.read_text(encoding="utf-8", errors="replace")
    )


def check_endpoint_mode(config: StackConfig, facts: ManagerFacts) -> None:
    if config.deploy.endpoint_mode == "vip" and kernel_lacks_ipvs(facts.kernel):
        raise DifystackError(
            f"this machine's kernel ({facts.kernel}) has no IPVS, so the swarm's virtual IPs and routing "
            "mesh cannot work here; nothing was changed",
            hint="load it (`modprobe ip_vs`), or publish without them: --set deploy.endpoint_mode=dnsrr",
        )


def swarm_nodes(docker: DockerClient) -> list[SwarmNode]:
    try:
        ids = [str(node) for node in docker.node.list()]
        inspected = inspect_all(docker, ids, NodeInspectResult)
    except DockerException as exc:
        raise engine_error(exc) from None
    return [
        SwarmNode(
            id=str(node.id),
            hostname=str(node.description.hostname if node.description else node.id),
            role=str(node.spec.role if node.spec else ""),
            labels=dict((node.spec.labels if node.spec else None) or {}),
        )
        for node in inspected
    ]


def local_model_servers(config: StackConfig) -> list[str]:
    return [
        name
        for name in ("xinference", "localai")
        if getattr(config, name).enabled and not getattr(config, name).external
    ]


def needs_gpu_nodes(config: StackConfig, gpu: bool) -> bool:
    return gpu and bool(local_model_servers(config))


def published_on_manager(config: StackConfig) -> bool:
    """Without virtual IPs the model servers run where their ports are reached: the Dify manager."""
    return config.deploy.endpoint_mode == "dnsrr" and bool(local_model_servers(config))


def gpu_work_on_manager(config: StackConfig) -> bool:
    """dnsrr: only Xinference workers (distributed) can run on other (GPU) nodes."""
    distributed = "xinference" in local_model_servers(config) and config.xinference.topology == "distributed"
    return published_on_manager(config) and not distributed


def plan_labels(
    config: StackConfig, gpu: bool, nodes: list[SwarmNode], this: SwarmNode
) -> dict[str, dict[str, str]]:
    """The labels difystack adds itself (one-node swarm); raises with the command otherwise."""
    wanted = [DIFY_NODE_LABEL] if config.dify.enabled or published_on_manager(config) else []
    if needs_gpu_nodes(config, gpu) and not gpu_work_on_manager(config):
        wanted.append(GPU_NODE_LABEL)
    if len(nodes) == 1:
        missing = {label: "true" for label in wanted if not this.has(label)}
        return {this.id: missing} if missing else {}
    if DIFY_NODE_LABEL in wanted:
        pinned = [n for n in nodes if n.has(DIFY_NODE_LABEL) and n.role == "manager"]
        if not pinned:
            raise DifystackError(
                f"no manager of this {len(nodes)}-node swarm is labelled {DIFY_NODE_LABEL}=true: Dify and "
                "its database are pinned to one manager (their volumes live there); nothing was changed",
                hint=f"docker node update --label-add {DIFY_NODE_LABEL}=true {this.hostname}",
            )
        if len(pinned) > 1:
            names = ", ".join(n.hostname for n in pinned)
            raise DifystackError(
                f"{len(pinned)} managers are labelled {DIFY_NODE_LABEL}=true ({names}); Dify's volumes need "
                "exactly one; nothing was changed",
                hint=f"docker node update --label-rm {DIFY_NODE_LABEL} {pinned[-1].hostname}",
            )
    if GPU_NODE_LABEL in wanted and not any(n.has(GPU_NODE_LABEL) for n in nodes):
        raise DifystackError(
            f"the stack runs its model servers on GPUs but no node is labelled {GPU_NODE_LABEL}=true; "
            "nothing was changed",
            hint=f"docker node update --label-add {GPU_NODE_LABEL}=true <node with NVIDIA GPUs> "
            f"(nodes: {', '.join(n.hostname for n in nodes)})",
        )
    return {}


def exposure_warning(config: StackConfig) -> str | None:
    """A swarm publishes on every interface: a loopback bind_address cannot hold."""
    published = config.published_ports()
    if not published or config.bind_address in ("0.0.0.0", "::"):
        return None
    ports = ", ".join(f"{path.split('.')[0]} {port}" for path, port in published.items())
    where = "of every node (routing mesh)" if config.deploy.endpoint_mode == "vip" else "of its node"
    auth = "" if config.xinference.auth or not config.xinference.enabled else " or set xinference.auth: true"
    return (
        f"the swarm publishes ports on every interface {where}, so bind_address {config.bind_address} "
        f"cannot hold: {ports} are reachable from your network; restrict them with a firewall (the "
        f"DOCKER-USER chain){auth}"
    )


def check_no_compose_twin(docker: DockerClient, config: StackConfig) -> None:
    """The same stack running under Compose would share its volumes and ports."""
    try:
        running = docker.container.list(filters=[("label", f"com.docker.compose.project={config.name}")])
    except DockerException as exc:
        raise DifystackError(f"cannot list containers: {docker_error_text(exc)}") from None
    if running:
        raise DifystackError(
            f"stack {config.name!r} also runs under Docker Compose on this engine "
            f"({len(running)} containers); nothing was changed",
            hint="stop it first with `difystack down --engine compose` (its volumes are kept and reused)",
        )


def run_swarm_preflight(
    config: StackConfig,
    docker: DockerClient,
    own_ports: set[int],
    gpu: bool,
    probe: PortProbe = port_is_free,
) -> SwarmReport:
    facts = check_manager(docker)
    check_endpoint_mode(config, facts)
    nodes = swarm_nodes(docker)
    this = next((node for node in nodes if node.id == facts.node_id), nodes[0])
    labels = plan_labels(config, gpu, nodes, this)
    check_no_compose_twin(docker, config)
    mesh = config.model_copy(update={"bind_address": "0.0.0.0"})
    check_ports(mesh, own_ports, probe, container_on_port(docker))
    warnings = check_disk(facts.root_dir)
    if (exposure := exposure_warning(config)) is not None:
        warnings.append(exposure)
    if needs_gpu_nodes(config, gpu) and this.has(GPU_NODE_LABEL) and facts.default_runtime != "nvidia":
        warnings.append(
            "Swarm services cannot reserve GPUs as Compose does: make nvidia dockerd's default-runtime "
            "(/etc/docker/daemon.json) on every node labelled difystack.gpu=true"
        )
    if needs_gpu_nodes(config, gpu) and published_on_manager(config) and len(nodes) > 1:
        warnings.append(
            "with deploy.endpoint_mode dnsrr, Xinference (its supervisor) and LocalAI run on the manager "
            f"labelled {DIFY_NODE_LABEL}=true, where their ports are published; only Xinference workers "
            f"(xinference.topology: distributed) go to the nodes labelled {GPU_NODE_LABEL}=true"
        )
    return SwarmReport(facts.engine_version, this, nodes, labels, warnings)


def apply_labels(docker: DockerClient, report: SwarmReport) -> list[str]:
    """Add the planned node labels; returns one line per node labelled."""
    done = []
    for node_id, labels in report.labels_to_add.items():
        try:
            docker.node.update(node_id, labels_add=labels)
        except DockerException as exc:
            raise DifystackError(f"cannot label node {node_id[:12]}: {docker_error_text(exc)}") from None
        hostname = next((n.hostname for n in report.nodes if n.id == node_id), node_id[:12])
        done.append(f"labelled node {hostname} " + " ".join(f"{k}={v}" for k, v in labels.items()))
    return done
