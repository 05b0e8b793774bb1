"""Configuration of an Xinference cluster that spans machines.

Two sides: the main stack declares the workers it expects from other machines
(``xinference.external_workers``), and ``difystack worker`` runs one such worker from a
``WorkerConfig``. A worker is known to the supervisor as ``<name>:<worker port>``: the name is
the host part of its Xinference address, what models are pinned to, and what the supervisor's
container resolves to the worker machine's address.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from difystack.config_model import XinferenceConfig, XinferenceModel

WORKER_NAME_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Names the supervisor's side already uses for its own containers.
RESERVED_NAMES = re.compile(r"xinference(-worker-\d+)?|localhost")
DEFAULT_XINFERENCE_PORT = 9997
DEFAULT_WORKER_PORT = 30001
DEFAULT_MODEL_PORTS = "30100-30131"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def check_worker_name(name: str) -> str:
    if not WORKER_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a worker name: use lowercase letters, digits and '-' (a host name label, "
            "at most 63 characters)"
        )
    if RESERVED_NAMES.fullmatch(name):
        raise ValueError(f"{name!r} is a name the stack uses itself; choose another worker name")
    return name


def check_host_address(value: str, what: str) -> str:
    """An IPv4/IPv6 address other machines can reach (not a wildcard, not loopback)."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address ({what})") from None
    if address.is_unspecified or address.is_loopback:
        raise ValueError(f"{value!r} cannot be reached from another machine; give {what}")
    return value


class ExternalWorker(_Strict):
    """A worker the main stack expects to join from another machine (`difystack worker up`)."""

    name: str = Field(description="The worker's name: its host name in the cluster; `worker:` pins to it.")
    address: str = Field(description="The worker machine's IP address, as the supervisor reaches it.")
    gpu: bool = Field(default=True, description="The worker runs Xinference's GPU image (false: CPU).")
    join_timeout: float = Field(
        default=600.0, gt=0, description="Seconds `up` waits for it once the supervisor answers."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_worker_name(name)

    @field_validator("address")
    @classmethod
    def _address(cls, address: str) -> str:
        return check_host_address(address, "the worker machine's address on the network")


def check_cluster(xinference: XinferenceConfig) -> None:
    """The main stack's side: external workers need a distributed topology and a join address."""
    if (xinference.external_workers or xinference.join_address) and xinference.topology != "distributed":
        field = "external_workers" if xinference.external_workers else "join_address"
        raise ValueError(f"{field}: workers on other machines need `topology: distributed`")
    if xinference.external_workers and xinference.join_address is None:
        raise ValueError(
            "join_address: external workers join the supervisor at this machine's address; give it "
            f"(e.g. 192.168.1.10): Xinference's port {xinference.port} and the supervisor port "
            f"{xinference.supervisor_port} are published there"
        )
    names = [worker.name for worker in xinference.external_workers]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValueError(f"external_workers[{index}].name: {name!r} is declared twice")


def check_placement(xinference: XinferenceConfig, index: int, model: XinferenceModel) -> None:
    """``models[i].worker``: a local worker's number or a declared external worker's name."""
    where = f"models[{index}].worker"
    if isinstance(model.worker, int) and not 1 <= model.worker <= xinference.workers:
        raise ValueError(
            f"{where}: {model.worker} names no worker; this stack has "
            f"{xinference.workers} (xinference-worker-1..{xinference.workers})"
        )
    external = [worker.name for worker in xinference.external_workers]
    if isinstance(model.worker, str) and model.worker not in external:
        known = ", ".join(external) or "none declared"
        raise ValueError(
            f"{where}: {model.worker!r} is no external worker (xinference.external_workers: {known}); "
            "a number N places it on xinference-worker-N"
        )
    if isinstance(model.worker, str) and model.custom is not None and model.custom.path is not None:
        raise ValueError(
            f"{where}: custom.path mounts weights from this machine, which {model.worker!r} does not "
            "have; put the weights on that machine and give custom.server_path"
        )


def parse_port_range(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,5})-(\d{1,5})", value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a port range like {DEFAULT_MODEL_PORTS}")
    low, high = int(match[1]), int(match[2])
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"{value!r}: give FIRST-LAST with 1024 <= FIRST <= LAST <= 65535")
    if high - low + 1 < 4:
        raise ValueError(
            f"{value!r}: give at least 4 ports (one per model, and some for outgoing connections)"
        )
    return low, high


def supervisor_url(value: str) -> str:
    """``host``, ``host:port`` or ``http://host:port`` -> ``http://host:port``."""
    text = value.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} has no valid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
        raise ValueError(f"{value!r}: give the supervisor as HOST[:PORT], e.g. 192.168.1.10:9997")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or DEFAULT_XINFERENCE_PORT}"


class WorkerConfig(_Strict):
    """One Xinference worker for another machine (`difystack worker render|up`)."""

    name: str = Field(description="The worker's name as the main stack declares it.")
    supervisor: str = Field(description="Where the supervisor's Xinference API answers (HOST[:PORT]).")
    address: str = Field(description="This machine's IP address; the supervisor connects back to it.")
    gpu: bool = True
    image: str | None = Field(default=None, description="Xinference image (default: the release's).")
    version: str = "v4.1.0"
    worker_port: int = Field(default=DEFAULT_WORKER_PORT, ge=1024, le=65535)
    model_ports: str = Field(
        default=DEFAULT_MODEL_PORTS, description="Ports the worker's model processes listen on."
    )
    shm_size: str = "8gb"
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_worker_name(name)

    @field_validator("supervisor")
    @classmethod
    def _supervisor(cls, value: str) -> str:
        return supervisor_url(value)

    @field_validator("address")
    @classmethod
    def _address(cls, address: str) -> str:
        return check_host_address(address, "this machine's address on the network the supervisor is on")

    @field_validator("model_ports")
    @classmethod
    def _ports(cls, value: str) -> str:
        low, high = parse_port_range(value)
        return f"{low}-{high}"

    @model_validator(mode="after")
    def _no_overlap(self) -> WorkerConfig:
        low, high = self.model_port_range
        if low <= self.worker_port <= high or low <= self.metrics_port <= high or self.metrics_port > 65535:
            raise ValueError(
                f"worker_port: {self.worker_port} and the metrics port after it must lie outside "
                f"model_ports {self.model_ports}; the model processes would compete for them"
            )
        return self

    @property
    def metrics_port(self) -> int:
        """The worker's Prometheus exporter (in the container only; left to chance, Xinference
        would take it from the model ports)."""
        return self.worker_port + 1

    @property
    def model_port_range(self) -> tuple[int, int]:
        return parse_port_range(self.model_ports)

    @property
    def supervisor_host(self) -> str:
        return str(urlsplit(self.supervisor).hostname)

    @property
    def project_name(self) -> str:
        return f"difystack-worker-{self.name}"

    def resolved_image(self) -> str:
        if self.image:
            return self.image
        return f"xprobe/xinference:{self.version if self.gpu else f'{self.version}-cpu'}"

    def as_settings(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
