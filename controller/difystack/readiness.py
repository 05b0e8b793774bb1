"""What "ready" means for each part of a stack, as wait targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from difystack.compose_runtime import ServiceState
from difystack.config_model import StackConfig, worker_host
from difystack.endpoints import stack_endpoints
from difystack.waits import ContainerWait, HttpWait, WaitTarget
from difystack.worker_join import external_worker_targets, listed_hosts

DIFY_ENDPOINT = "dify console"
XINFERENCE_ENDPOINT = "xinference /status"
LOCALAI_ENDPOINT = "localai /readyz"


@dataclass(frozen=True)
class Timeouts:
    total: float = 1800.0
    stall: float = 300.0
    poll: float = 1.0


def _dify_ping(response: httpx.Response) -> tuple[bool, str]:
    if response.status_code != 200:
        return False, f"HTTP {response.status_code} from nginx (api starting or migrating)"
    try:
        pong = response.json().get("result") == "pong"
    except ValueError:
        pong = False
    return pong, "pong" if pong else "unexpected answer to /console/api/ping"


def expected_workers(config: StackConfig) -> list[str]:
    """The worker hosts the supervisor must list before Xinference is ready (none: any worker)."""
    xinference = config.xinference
    if xinference.external is not None or xinference.topology != "distributed":
        return []
    return [worker_host(index) for index in range(1, xinference.workers + 1)]


def xinference_status(expected: list[str]) -> Callable[[httpx.Response], tuple[bool, str]]:
    """Accept ``/status`` once it lists a worker, or every expected worker (by host)."""

    def accept(response: httpx.Response) -> tuple[bool, str]:
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
        try:
            workers = response.json().get("workers") or {}
        except (ValueError, AttributeError):
            return False, "unexpected /status answer"
        if not workers:
            return False, "up, no worker registered yet"
        joined = listed_hosts({"workers": workers})
        missing = [host for host in expected if host not in joined]
        if missing:
            return False, f"{len(expected) - len(missing)}/{len(expected)} workers joined; waiting for " + (
                ", ".join(missing)
            )
        if expected:
            return True, f"{len(expected)} workers joined"
        return True, f"{len(workers)} worker(s)"

    return accept


def endpoint_targets(config: StackConfig, timeouts: Timeouts) -> list[WaitTarget]:
    endpoints = stack_endpoints(config)
    targets = []

    def target(name: str, url: str, accept: Callable[[httpx.Response], tuple[bool, str]] | None) -> None:
        targets.append(WaitTarget(name, HttpWait(url, accept), timeouts.total, timeouts.stall, timeouts.poll))

    if endpoints.dify:
        target(DIFY_ENDPOINT, f"{endpoints.dify}/console/api/ping", _dify_ping)
    if endpoints.xinference:
        target(
            XINFERENCE_ENDPOINT,
            f"{endpoints.xinference.from_host}/status",
            xinference_status(expected_workers(config)),
        )
        targets += external_worker_targets(
            config, endpoints.xinference.from_host, timeouts.total, timeouts.poll
        )
    if endpoints.localai:
        target(LOCALAI_ENDPOINT, f"{endpoints.localai.from_host}/readyz", None)
    return targets


def container_targets(
    services: dict[str, bool], states: Callable[[], dict[str, ServiceState]], timeouts: Timeouts
) -> list[WaitTarget]:
    """One target per compose service; ``services`` maps name -> is a one-shot job."""
    return [
        WaitTarget(
            name,
            ContainerWait(name, states, one_shot=one_shot),
            timeouts.total,
            timeouts.stall,
            timeouts.poll,
        )
        for name, one_shot in sorted(services.items())
    ]
