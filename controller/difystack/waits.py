"""Composable waits, run concurrently with stall-aware timeouts: difystack's one poll loop.

A ``WaitStrategy`` makes one attempt and returns a ``Probe``: ready or not, a short detail for
the progress view, and whether the target has failed for good (an exited container, say). The
runner polls every target in its own thread and gives up on a target when it fails, when its
observable state has not changed for ``stall_timeout`` seconds, or after ``timeout`` seconds.
Services' readiness, model launches, LocalAI jobs and plugin installs all wait through it
(``wait_for`` runs one target in the calling thread).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from difystack.compose_runtime import ServiceState


@dataclass(frozen=True)
class Probe:
    ready: bool
    detail: str
    failed: bool = False
    # A finer progress marker than ``detail`` (a download fraction): any change restarts the stall clock.
    marker: Any = None


class WaitStrategy(ABC):
    @abstractmethod
    def probe(self) -> Probe: ...


class HttpWait(WaitStrategy):
    """Ready when ``url`` answers and ``accept(response)`` returns (True, detail)."""

    def __init__(
        self,
        url: str,
        accept: Callable[[httpx.Response], tuple[bool, str]] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.accept = accept or (lambda r: (r.status_code == 200, f"HTTP {r.status_code}"))
        self.timeout = timeout

    def probe(self) -> Probe:
        try:
            response = httpx.get(self.url, timeout=self.timeout)
        except httpx.ConnectError:
            return Probe(False, "connection refused")
        except httpx.TimeoutException:
            return Probe(False, "no answer (timeout)")
        except (httpx.ReadError, httpx.RemoteProtocolError):
            # A published port accepts connections before the server behind it answers.
            return Probe(False, "not answering yet (connection closed)")
        except httpx.HTTPError as exc:
            return Probe(False, f"{exc.__class__.__name__}")
        ready, detail = self.accept(response)
        return Probe(ready, detail)


class ContainerWait(WaitStrategy):
    """Ready when the service's container is running and healthy (or has no healthcheck).

    One-shot services (``one_shot=True``) are ready once they exited 0. A long-running
    container that exits, keeps restarting or is reported unhealthy has failed.
    """

    def __init__(
        self,
        service: str,
        states: Callable[[], dict[str, ServiceState]],
        one_shot: bool = False,
        max_restarts: int = 2,
    ) -> None:
        self.service = service
        self.states = states
        self.one_shot = one_shot
        self.max_restarts = max_restarts

    def probe(self) -> Probe:
        state = self.states().get(self.service)
        if state is None:
            return Probe(False, "no container yet")
        if self.one_shot:
            if state.state == "exited":
                if state.exit_code == 0:
                    return Probe(True, "completed")
                return Probe(False, f"exited with code {state.exit_code}", failed=True)
            return Probe(False, state.state)
        if state.state == "exited" or state.state == "dead":
            return Probe(False, f"{state.state} (code {state.exit_code})", failed=True)
        if state.restarts > self.max_restarts:
            return Probe(False, f"{state.state}, restarted {state.restarts} times", failed=True)
        if state.health == "unhealthy":
            return Probe(False, "unhealthy", failed=True)
        if state.state == "running" and state.health in (None, "healthy"):
            return Probe(True, state.health or "running")
        detail = state.state if state.health is None else f"{state.state}, {state.health}"
        return Probe(False, detail)


class AllOf(WaitStrategy):
    """Ready when every part is; reports the first part that is not."""

    def __init__(self, *parts: WaitStrategy) -> None:
        self.parts = parts

    def probe(self) -> Probe:
        details = []
        for part in self.parts:
            result = part.probe()
            if result.failed or not result.ready:
                return result
            details.append(result.detail)
        return Probe(True, ", ".join(details))


@dataclass
class WaitTarget:
    name: str
    strategy: WaitStrategy
    timeout: float = 900.0
    stall_timeout: float = 300.0
    poll_interval: float = 1.0


@dataclass
class WaitStatus:
    name: str
    state: str = "waiting"  # waiting | ready | failed | stalled | timeout | cancelled
    detail: str = ""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    last_change: float = field(default_factory=time.monotonic)
    error: Exception | None = None  # what the probe raised, when it ended the wait

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def done(self) -> bool:
        return self.state != "waiting"

    @property
    def ok(self) -> bool:
        return self.state == "ready"


class WaitGroup:
    """Poll many targets concurrently; ``run`` returns every target's final status."""

    def __init__(
        self,
        targets: Sequence[WaitTarget],
        on_update: Callable[[WaitStatus], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
    ) -> None:
        self.targets = list(targets)
        self.on_update = on_update or (lambda status: None)
        self.clock = clock
        self.cancelled = cancel or threading.Event()
        self.statuses = {
            t.name: WaitStatus(t.name, started=clock(), last_change=clock()) for t in self.targets
        }
        self._lock = threading.Lock()

    def cancel(self) -> None:
        self.cancelled.set()

    def run(self, fail_fast: bool = True) -> dict[str, WaitStatus]:
        if not self.targets:
            return {}
        with ThreadPoolExecutor(max_workers=len(self.targets), thread_name_prefix="wait") as pool:
            futures = [pool.submit(self._wait_one, target, fail_fast) for target in self.targets]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self.cancel()
                raise
        return self.statuses

    def _wait_one(self, target: WaitTarget, fail_fast: bool) -> None:
        status = self.statuses[target.name]
        last_observed: tuple[Any, ...] | None = None
        while True:
            if self.cancelled.is_set():
                self._finish(status, "cancelled", status.detail)
                return
            try:
                probe = target.strategy.probe()
            except Exception as exc:  # a probe bug must not hang the whole wait
                status.error = exc
                probe = Probe(False, f"probe error: {exc}", failed=True)
            now = self.clock()
            observed = (probe.ready, probe.detail, probe.marker)
            if observed != last_observed:
                last_observed = observed
                status.last_change = now
                status.detail = probe.detail
                if not (probe.ready or probe.failed):
                    self.on_update(status)
            if probe.ready:
                self._finish(status, "ready", probe.detail)
                return
            if probe.failed:
                self._finish(status, "failed", probe.detail, fail_fast)
                return
            if now - status.last_change >= target.stall_timeout:
                self._finish(
                    status,
                    "stalled",
                    f"{probe.detail} (unchanged for {target.stall_timeout:.0f}s)",
                    fail_fast,
                )
                return
            if now - status.started >= target.timeout:
                self._finish(
                    status, "timeout", f"{probe.detail} (gave up after {target.timeout:.0f}s)", fail_fast
                )
                return
            self.cancelled.wait(target.poll_interval)

    def _finish(self, status: WaitStatus, state: str, detail: str, cancel_others: bool = False) -> None:
        with self._lock:
            status.state = state
            status.detail = detail
            status.finished = self.clock()
        self.on_update(status)
        if cancel_others:
            self.cancel()


def wait_for(
    target: WaitTarget,
    on_update: Callable[[WaitStatus], None] | None = None,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WaitStatus:
    """Wait for one target in this thread; its final status (``cancelled`` once ``cancel`` is set).

    An exception raised by the probe ends the wait and is raised again here, unchanged.
    """
    group = WaitGroup([target], on_update, clock, cancel)
    group._wait_one(target, fail_fast=False)
    status = group.statuses[target.name]
    if status.error is not None:
        raise status.error
    return status


class CachedStates:
    """One ``compose ps`` shared by all container waits, refreshed at most every ``ttl`` s."""

    def __init__(
        self,
        fetch: Callable[[], list[ServiceState]],
        ttl: float = 1.0,
        seed: list[ServiceState] | None = None,
    ) -> None:
        self.fetch = fetch
        self.ttl = ttl
        self._lock = threading.Lock()
        # A fresh snapshot taken just before (by the preflight) saves one round trip.
        self._at = time.monotonic() if seed else float("-inf")
        self._states: dict[str, ServiceState] = {s.service: s for s in seed or []}

    def __call__(self) -> dict[str, ServiceState]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                self._states = {s.service: s for s in self.fetch()}
                self._at = time.monotonic()
            return dict(self._states)
