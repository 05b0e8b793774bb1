"""Waiting for Xinference workers to join a supervisor, as the supervisor's ``/status`` lists them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from difystack.cluster import external_rows, row_name
from difystack.config_model import StackConfig
from difystack.waits import Probe, WaitStrategy, WaitTarget


def listed_hosts(status: Any) -> dict[str, str]:
    """Host part -> worker address, for every worker a supervisor's ``/status`` lists."""
    workers = status.get("workers") if isinstance(status, dict) else None
    return {str(address).rsplit(":", 1)[0]: str(address) for address in workers or {}}


class WorkerJoinWait(WaitStrategy):
    """Ready once the supervisor lists a worker of this name; failed when it has not joined
    ``join_timeout`` seconds after the supervisor first answered."""

    def __init__(
        self,
        supervisor_url: str,
        name: str,
        join_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.status_url = f"{supervisor_url}/status"
        self.name = name
        self.join_timeout = join_timeout
        self.clock = clock
        self.supervisor_up_since: float | None = None

    def probe(self) -> Probe:
        try:
            response = httpx.get(self.status_url, timeout=5.0)
            listed = listed_hosts(response.json()) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            listed = None
        if listed is None:
            return Probe(False, "waiting for the supervisor")
        if self.name in listed:
            return Probe(True, f"joined as {listed[self.name]}")
        now = self.clock()
        if self.supervisor_up_since is None:
            self.supervisor_up_since = now
        waited = now - self.supervisor_up_since
        if waited >= self.join_timeout:
            return Probe(False, f"has not joined {waited:.0f}s after the supervisor answered", failed=True)
        return Probe(
            False, f"not joined yet (gives up {self.join_timeout:.0f}s after the supervisor answered)"
        )


def external_worker_targets(
    config: StackConfig, supervisor_url: str, total: float, poll: float
) -> list[WaitTarget]:
    """One wait row per external worker; each bounds itself with its join_timeout (so no stall limit)."""
    if not external_rows(config):
        return []
    return [
        WaitTarget(
            row_name(worker),
            WorkerJoinWait(supervisor_url, worker.name, worker.join_timeout),
            total,
            total,
            poll,
        )
        for worker in config.xinference.external_workers
    ]
