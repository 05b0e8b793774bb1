"""Turn the rendered compose model into a Swarm stack model for `docker stack deploy`.

What Compose does and a swarm does not is made explicit here, never dropped:

* ``depends_on`` conditions become deployment stages (``x-difystack``): difystack deploys
  stage by stage and waits for exactly the conditions the next stage depends on;
* one-shot services (``restart: "no"``) become Swarm jobs (``replicated-job``), waited on until
  they complete; ``restart`` becomes ``deploy.restart_policy``;
* the ``.env`` file becomes Swarm secrets with versioned names (a changed value rolls the
  services that use it), loaded into the environment by a wrapper (see ``processes``);
* config files bind-mounted from the project become Swarm configs named after their content;
* ``host_ip`` on published ports is dropped: the routing mesh publishes on every node;
* GPU device reservations become placement on nodes labelled ``difystack.gpu=true``, and
  ``shm_size`` a tmpfs on /dev/shm. Dify and its database are pinned to the manager labelled
  ``difystack.dify=true`` (their volumes live on that node).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from difystack.config_model import OVERRIDABLE_SERVICES, StackConfig
from difystack.errors import DifystackError
from difystack.swarm.processes import Process

DIFY_NODE_LABEL = "difystack.dify"
GPU_NODE_LABEL = "difystack.gpu"
DIFY_PLACEMENT = ["node.role == manager", f"node.labels.{DIFY_NODE_LABEL} == true"]
GPU_PLACEMENT = [f"node.labels.{GPU_NODE_LABEL} == true"]
DIFY_SERVICES = frozenset(OVERRIDABLE_SERVICES) - {"xinference", "localai"}
EXTENSION = "x-difystack"
WRAPPER_NAME = "difystack-secrets"
# Names the environment variables a service's secrets become: "VARIABLE=secret_file ...".
SECRET_ENV = "SWARM_SECRETS_AS_ENV"

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
# Exports each variable SWARM_SECRETS_AS_ENV names with the content of its file in /run/secrets.
LOAD_SECRETS = (
    f'for pair in ${SECRET_ENV}; do export "${{pair%%=*}}=$(cat "/run/secrets/${{pair#*=}}")"; done; '
)


def escape(text: str) -> str:
    """Protect ``$`` from the variable substitution `docker stack deploy` applies."""
    return text.replace("$", "$$")


@dataclass(frozen=True)
class SwarmSecret:
    key: str  # the stack file's key, e.g. db_password
    name: str  # the versioned Swarm name, e.g. mystack_db_password_1a2b3c4d
    content: str


@dataclass
class SwarmStack:
    model: dict[str, Any]
    secrets: list[SwarmSecret] = field(default_factory=list)


def _substitute(template: str, values: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        return values.get(match.group(1)) or (match.group(2) or "")

    return _REF.sub(value, template)


def _size_in_bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.strip().lower())
    if not match:
        raise DifystackError(f"xinference.shm_size: {size!r} is not a size like 8gb")
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def worker_listening(command: list[str]) -> list[str]:
    """A worker's healthcheck on a swarm: it listens on its port.

    Swarm adds a task to its service's DNS name only once the task is healthy, so a worker
    cannot wait there for the supervisor to list it: the supervisor reaches the worker by that
    name. That the supervisor lists every worker is what difystack's own wait checks.
    """
    port = int(command[command.index("--worker-port") + 1])
    code = (
        "import os, sys; tables = [t for t in ('/proc/net/tcp', '/proc/net/tcp6') if os.path.exists(t)]; "
        "rows = [r.split() for t in tables for r in open(t).readlines()[1:]]; "
        f"sys.exit(0 if any(r[1].endswith(':{port:04X}') and r[3] == '0A' for r in rows) else 1)"
    )
    return ["CMD", "python3", "-c", code]


def placement(name: str, *, published: bool, gpu: bool, config: StackConfig) -> list[str]:
    """Where a service may run: Dify on its manager, GPU model servers on GPU nodes.

    Without virtual IPs (dnsrr) a port is published only on the node that runs the task, so a
    model server that publishes one runs on the manager difystack reaches it from; GPU work then
    goes to Xinference workers (``topology: distributed``), which publish nothing.
    """
    if name in DIFY_SERVICES or (published and config.deploy.endpoint_mode == "dnsrr"):
        return list(DIFY_PLACEMENT)
    return list(GPU_PLACEMENT) if gpu else []


def deployment_stages(depends: Mapping[str, Mapping[str, str]], services: list[str]) -> list[list[str]]:
    """Services grouped so that each one's dependencies are all in earlier groups."""
    level: dict[str, int] = {}

    def level_of(service: str) -> int:
        if service not in level:
            needed = [d for d in depends.get(service, {}) if d in services]
            level[service] = 1 + max((level_of(d) for d in needed), default=-1)
        return level[service]

    stages: list[list[str]] = []
    for service in services:
        index = level_of(service)
        stages.extend([] for _ in range(index + 1 - len(stages)))
        stages[index].append(service)
    return [sorted(stage) for stage in stages]


class StackTransform:
    """One compose model -> one stack model; collects the secrets and configs it needs."""

    def __init__(
        self,
        config: StackConfig,
        values: Mapping[str, str],
        files: Mapping[str, str],
        processes: Mapping[str, Process],
        gpu: bool,
    ) -> None:
        self.config = config
        self.values = values
        self.files = files
        self.processes = processes
        self.gpu = gpu
        self.secrets: dict[str, SwarmSecret] = {}
        self.configs: dict[str, dict[str, str]] = {}
        self.depends: dict[str, dict[str, str]] = {}

    def run(self, compose: Mapping[str, Any]) -> SwarmStack:
        services = {
            name: self._service(name, copy.deepcopy(service))
            for name, service in (compose.get("services") or {}).items()
        }
        waits = {name: deps for name, deps in self.depends.items() if deps}
        model: dict[str, Any] = {
            EXTENSION: {"stages": deployment_stages(self.depends, list(services)), "waits": waits},
            "services": services,
            "networks": {
                name: {"driver": "overlay", **(network or {})}
                for name, network in (compose.get("networks") or {}).items()
            },
            "volumes": copy.deepcopy(compose.get("volumes") or {}),
        }
        if self.secrets:
            model["secrets"] = {s.key: {"external": True, "name": s.name} for s in self.secrets.values()}
        if self.configs:
            model["configs"] = self.configs
        return SwarmStack(model, sorted(self.secrets.values(), key=lambda s: s.key))

    def _service(self, name: str, service: dict[str, Any]) -> dict[str, Any]:
        one_shot = str(service.pop("restart", "")) == "no"
        self.depends[name] = self._depends_on(service.pop("depends_on", None))
        gpu_devices = self._drop_device_reservations(service)
        if "ports" in service:
            service["ports"] = [self._port(port) for port in service["ports"]]
        self._mounts(service)
        self._shm_as_tmpfs(service)
        if gpu_devices:
            environment = service.setdefault("environment", {})
            environment.setdefault("NVIDIA_VISIBLE_DEVICES", "all")
            environment.setdefault("NVIDIA_DRIVER_CAPABILITIES", "compute,utility")
        self._load_secrets(name, service)
        if self._distributed_xinference(name):
            # Each Xinference process binds to its own name (-H) and tells the others that name.
            # A swarm task has more than one interface (its networks, the gateway bridge that
            # published ports arrive on), so the name means "all of them" inside its own container.
            service.setdefault("extra_hosts", []).append(f"{name}:0.0.0.0")
            if name != "xinference":
                service["healthcheck"]["test"] = worker_listening(service.get("command") or [])
        service["deploy"] = self._deploy(name, service, one_shot=one_shot, gpu=gpu_devices)
        return {key: value for key, value in service.items() if value not in ({}, [])}

    @staticmethod
    def _depends_on(depends_on: Any) -> dict[str, str]:
        if not depends_on:
            return {}
        if isinstance(depends_on, list):
            return {str(name): "service_started" for name in depends_on}
        return {
            str(name): str((spec or {}).get("condition", "service_started"))
            for name, spec in depends_on.items()
        }

    def _drop_device_reservations(self, service: dict[str, Any]) -> bool:
        reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        devices = reservations.pop("devices", None)
        return bool(devices)

    def _port(self, port: Any) -> dict[str, Any]:
        if not isinstance(port, dict):
            raise DifystackError(f"port {port!r}: difystack's templates publish ports in the long syntax")
        return {
            "target": int(port["target"]),
            "published": int(port["published"]),
            "protocol": port.get("protocol", "tcp"),
            # The routing mesh needs virtual IPs; without them a port is published where the task runs.
            "mode": "ingress" if self.config.deploy.endpoint_mode == "vip" else "host",
        }

    def _mounts(self, service: dict[str, Any]) -> None:
        """Project files become Swarm configs (a node has no copy of the project directory)."""
        volumes, configs = [], []
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                source, _, rest = volume.partition(":")
                target = rest.split(":", 1)[0]
            else:
                source, target = str(volume.get("source", "")), str(volume.get("target", ""))
            if source.startswith("./"):
                configs.append({"source": self._config(source[2:]), "target": target})
            else:
                volumes.append(volume)
        if "volumes" in service:
            service["volumes"] = volumes
        if configs:
            service["configs"] = configs

    def _config(self, path: str) -> str:
        content = self.files.get(path)
        if content is None:
            raise DifystackError(f"swarm: the project file {path} is mounted but was not rendered")
        key = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")[:26]
        digest = hashlib.sha256(content.encode()).hexdigest()[:8]
        self.configs[key] = {"file": f"./{path}", "name": f"{self.config.name}_{key}_{digest}"}
        return key

    def _shm_as_tmpfs(self, service: dict[str, Any]) -> None:
        size = service.pop("shm_size", None)
        if size is not None:
            tmpfs = {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": _size_in_bytes(str(size))}}
            service.setdefault("volumes", []).append(tmpfs)

    def _distributed_xinference(self, name: str) -> bool:
        topology = self.config.xinference.topology
        return topology == "distributed" and (name == "xinference" or name.startswith("xinference-worker-"))

    def _deploy(self, name: str, service: dict[str, Any], *, one_shot: bool, gpu: bool) -> dict[str, Any]:
        deploy: dict[str, Any] = {
            "mode": "replicated-job" if one_shot else "replicated",
            "endpoint_mode": self.config.deploy.endpoint_mode,
            "replicas": 1,
            "restart_policy": {"condition": "none"} if one_shot else {"condition": "any", "delay": "5s"},
        }
        constraints = placement(name, published="ports" in service, gpu=gpu, config=self.config)
        if constraints:
            deploy["placement"] = {"constraints": list(constraints)}
        if service.get("labels"):
            deploy["labels"] = dict(service["labels"])
        return deploy

    # -- secrets ---------------------------------------------------------------------------------

    def _secret(self, key: str, content: str) -> str:
        salt = self.values.get("DIFY_SECRET_KEY", "")
        digest = hmac.new(salt.encode(), f"{key}\0{content}".encode(), hashlib.sha256).hexdigest()[:8]
        known = self.secrets.get(key)
        if known is not None and known.content != content:
            raise DifystackError(f"swarm: secret {key} would hold two different values")
        self.secrets[key] = SwarmSecret(key, f"{self.config.name}_{key}_{digest}", content)
        return key

    def _load_secrets(self, name: str, service: dict[str, Any]) -> None:
        env_mounts = self._environment_secrets(service)
        command_mounts, shell_line = self._command_secrets(name, service)
        mounts = env_mounts | command_mounts
        if not mounts:
            return
        # Each secret is mounted once, under its own name: Swarm orders a service's secrets by
        # name, so one secret mounted twice would come back in a random order and roll the service.
        service["secrets"] = [{"source": key, "target": key} for key in sorted(set(mounts.values()))]
        pairs = " ".join(f"{variable}={key}" for variable, key in sorted(mounts.items()))
        service.setdefault("environment", {})[SECRET_ENV] = pairs
        command = service.pop("command", None)
        service["entrypoint"] = ["/bin/sh", "-c", escape(LOAD_SECRETS + 'exec "$@"'), WRAPPER_NAME]
        service["command"] = ["/bin/sh", "-c", shell_line] if shell_line else self._argv(name, command)
        healthcheck = service.get("healthcheck") or {}
        test = healthcheck.get("test")
        if isinstance(test, list) and test and test[0] == "CMD-SHELL":
            # A healthcheck runs beside the wrapper, not below it: it loads the secrets itself.
            healthcheck["test"] = ["CMD-SHELL", escape(LOAD_SECRETS) + test[1]]

    def _argv(self, name: str, command: Any) -> list[str]:
        """The image's own process with the service's command, as the wrapper's arguments."""
        process = self.processes.get(name)
        if process is None:
            raise DifystackError(f"swarm: no known entrypoint for service {name}")
        entrypoint = [escape(arg) for arg in process.entrypoint]
        if command is None:
            return entrypoint + [escape(arg) for arg in process.command]
        if isinstance(command, str):
            return entrypoint + shlex.split(command)
        return entrypoint + [str(arg) for arg in command]

    def _environment_secrets(self, service: dict[str, Any]) -> dict[str, str]:
        """Environment entries that name a variable of the .env file -> secret mounts."""
        environment = service.get("environment") or {}
        mounts: dict[str, str] = {}
        for variable, raw in list(environment.items()):
            template = "" if raw is None else str(raw)
            refs = _REF.findall(template)
            if not refs:
                continue
            content = _substitute(template, self.values)
            if not content:
                environment[variable] = ""  # Swarm secrets cannot be empty
                continue
            whole = _REF.fullmatch(template)
            key = (whole.group(1) if whole else variable).lower()
            mounts[variable] = self._secret(key, content)
            del environment[variable]
        return mounts

    def _command_secrets(self, name: str, service: dict[str, Any]) -> tuple[dict[str, str], str | None]:
        """A command that names .env variables runs as a shell line with them exported."""
        command = service.get("command")
        if command is None:
            return {}, None
        if isinstance(command, list):
            if any(_REF.search(str(arg)) for arg in command):
                raise DifystackError(f"swarm: service {name} names a secret in a list command")
            return {}, None
        refs = sorted({match.group(1) for match in _REF.finditer(command)})
        if not refs:
            return {}, None
        mounts = {ref: self._secret(ref.lower(), self.values.get(ref, "")) for ref in refs}
        process = self.processes.get(name)
        words = ["exec", *(shlex.quote(arg) for arg in (process.entrypoint if process else ()))]
        body = _REF.sub(lambda match: f'"$${match.group(1)}"', " ".join(command.split()))
        return mounts, escape(" ".join(words)) + " " + body
