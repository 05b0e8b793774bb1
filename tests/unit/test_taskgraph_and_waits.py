"""The concurrency pieces: task graph ordering/limits/failure propagation and wait strategies."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from difystack.compose_runtime import ServiceState
from difystack.config_loader import load_config
from difystack.endpoints import stack_endpoints
from difystack.lifecycle import gate_requirements
from difystack.paths import StackPaths
from difystack.readiness import expected_workers, xinference_status
from difystack.reconcile.context import ConvergeContext, Secrets
from difystack.reconcile.converge import XINFERENCE_READY
from difystack.reconcile.report import StepFailed
from difystack.taskgraph import DependencyFailed, TaskGraph
from difystack.waits import ContainerWait, Probe, WaitGroup, WaitStrategy, WaitTarget, wait_for


def test_tasks_run_after_their_dependencies() -> None:
    order: list[str] = []
    lock = threading.Lock()

    def record(name: str) -> None:
        with lock:
            order.append(name)

    graph = TaskGraph()
    graph.add("register", lambda: record("register"), after=["deploy", "plugins"])
    graph.add("deploy", lambda: record("deploy"))
    graph.add("plugins", lambda: record("plugins"))
    results = graph.run()
    assert all(exc is None for exc in results.values())
    assert order.index("register") > order.index("deploy")
    assert order.index("register") > order.index("plugins")


def test_failure_skips_dependants_only() -> None:
    graph = TaskGraph()

    def boom() -> None:
        raise RuntimeError("launch failed")

    graph.add("localai", boom)
    graph.add("register-localai", lambda: None, after=["localai"])
    graph.add("xinference", lambda: "ok")
    graph.add("register-xinference", lambda: None, after=["xinference"])
    results = graph.run()
    assert isinstance(results["localai"], RuntimeError)
    assert isinstance(results["register-localai"], DependencyFailed)
    assert results["register-localai"].dependency == "localai"
    assert results["xinference"] is None and results["register-xinference"] is None


def test_group_limit_caps_concurrency() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(0.05)
        with lock:
            running -= 1

    graph = TaskGraph(limits={"launch": 2})
    for index in range(6):
        graph.add(f"m{index}", work, group="launch")
    graph.run()
    assert peak == 2


def test_cycles_and_unknown_dependencies_are_refused() -> None:
    graph = TaskGraph()
    graph.add("a", lambda: None, after=["b"])
    graph.add("b", lambda: None, after=["a"])
    with pytest.raises(ValueError, match="cycle"):
        graph.run()
    other = TaskGraph()
    other.add("a", lambda: None, after=["nope"])
    with pytest.raises(ValueError, match="unknown"):
        other.run()


def state(**kwargs: object) -> ServiceState:
    values: dict[str, object] = {
        "service": "api",
        "container": "c",
        "state": "running",
        "health": "healthy",
        "exit_code": 0,
        "restarts": 0,
        "ports": [],
    }
    values.update(kwargs)
    return ServiceState(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "one_shot", "ready", "failed"),
    [
        ({}, False, True, False),
        ({"health": "starting"}, False, False, False),
        ({"health": "unhealthy"}, False, False, True),
        ({"state": "exited", "exit_code": 1, "health": None}, False, False, True),
        ({"state": "restarting", "restarts": 5, "health": None}, False, False, True),
        ({"state": "exited", "exit_code": 0, "health": None}, True, True, False),
        ({"state": "exited", "exit_code": 2, "health": None}, True, False, True),
        ({"state": "running", "health": None}, True, False, False),
    ],
)
def test_container_wait_classifies_states(
    kwargs: dict[str, object], one_shot: bool, ready: bool, failed: bool
) -> None:
    probe = ContainerWait("api", lambda: {"api": state(**kwargs)}, one_shot=one_shot).probe()
    assert (probe.ready, probe.failed) == (ready, failed)


class Scripted(WaitStrategy):
    def __init__(self, probes: list[Probe]) -> None:
        self.probes = probes

    def probe(self) -> Probe:
        return self.probes.pop(0) if len(self.probes) > 1 else self.probes[0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_stall_detection_gives_up_when_nothing_changes() -> None:
    target = WaitTarget(
        "xinference", Scripted([Probe(False, "loading")]), timeout=1000, stall_timeout=5, poll_interval=0
    )
    statuses = WaitGroup([target], clock=FakeClock()).run()
    assert statuses["xinference"].state == "stalled"
    assert "unchanged for 5s" in statuses["xinference"].detail


def test_progress_resets_the_stall_clock_but_not_the_total_timeout() -> None:
    probes = [Probe(False, f"{pct}%") for pct in range(100)]
    target = WaitTarget("download", Scripted(probes), timeout=30, stall_timeout=5, poll_interval=0)
    statuses = WaitGroup([target], clock=FakeClock()).run()
    assert statuses["download"].state == "timeout"


def test_a_moving_progress_marker_keeps_one_wait_from_stalling() -> None:
    moving = [Probe(False, "downloading", marker=fraction) for fraction in range(100)]
    target = WaitTarget("download", Scripted(moving), timeout=30, stall_timeout=5, poll_interval=0)
    assert wait_for(target, clock=FakeClock()).state == "timeout"
    still = WaitTarget(
        "download",
        Scripted([Probe(False, "downloading", marker=1)]),
        timeout=30,
        stall_timeout=5,
        poll_interval=0,
    )
    assert wait_for(still, clock=FakeClock()).state == "stalled"


class Refusing(WaitStrategy):
    def probe(self) -> Probe:
        raise StepFailed("xinference model m", "launch failed: out of memory", hint="see its log")


def test_one_wait_raises_what_its_probe_raised_unchanged() -> None:
    with pytest.raises(StepFailed) as failed:
        wait_for(WaitTarget("launch", Refusing(), poll_interval=0))
    assert (failed.value.reason, failed.value.hint) == ("launch failed: out of memory", "see its log")


def converge_context(tmp_path: Path) -> ConvergeContext:
    config = load_config(env={})
    return ConvergeContext(config, stack_endpoints(config), Secrets({}), StackPaths(tmp_path), tmp_path)


def test_a_converge_step_that_stops_moving_fails_with_its_last_detail_and_hint(tmp_path: Path) -> None:
    context = converge_context(tmp_path)
    with pytest.raises(StepFailed) as stalled:
        context.follow("localai model m", Scripted([Probe(False, "queued")]), stall_timeout=0.1, hint="h")
    assert stalled.value.step == "localai model m" and stalled.value.hint == "h"
    assert stalled.value.reason == "stalled: queued (unchanged for 0s)"
    context.cancel.set()  # Ctrl-C
    with pytest.raises(StepFailed) as interrupted:
        context.follow("localai model m", Scripted([Probe(False, "queued")]))
    assert interrupted.value.reason == "interrupted"


def test_one_failure_cancels_the_others() -> None:
    failing = WaitTarget("api", Scripted([Probe(False, "exited (code 1)", failed=True)]), poll_interval=0)
    waiting = WaitTarget("web", Scripted([Probe(False, "starting")]), poll_interval=0.01)
    statuses = WaitGroup([failing, waiting]).run()
    assert statuses["api"].state == "failed"
    assert statuses["web"].state == "cancelled"


def test_http_wait_names_a_port_that_accepts_but_does_not_answer_yet() -> None:
    import socket

    from difystack.waits import HttpWait

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def close_each_connection() -> None:
            connection, _ = listener.accept()
            connection.close()

        closer = threading.Thread(target=close_each_connection)
        closer.start()
        probe = HttpWait(f"http://127.0.0.1:{port}/status", timeout=5).probe()
        closer.join()
    assert probe == Probe(False, "not answering yet (connection closed)")


def test_distributed_xinference_is_ready_only_when_every_worker_joined() -> None:
    config = load_config(env={}, assignments=["xinference.topology=distributed", "xinference.workers=2"])
    accept = xinference_status(expected_workers(config))

    def status(*addresses: str) -> httpx.Response:
        return httpx.Response(200, json={"uptime": 3, "workers": {a: {} for a in addresses}})

    assert accept(status()) == (False, "up, no worker registered yet")
    assert accept(status("xinference-worker-1:30001")) == (
        False,
        "1/2 workers joined; waiting for xinference-worker-2",
    )
    assert accept(status("xinference-worker-2:30002", "xinference-worker-1:30001")) == (
        True,
        "2 workers joined",
    )
    # A single-node Xinference is ready with its one (local) worker.
    assert expected_workers(load_config(env={})) == []


def test_xinference_models_wait_for_every_worker_container_of_a_distributed_stack() -> None:
    config = load_config(env={}, assignments=["xinference.topology=distributed", "xinference.workers=2"])
    requirements = gate_requirements(config)
    assert requirements[XINFERENCE_READY] == {
        "xinference /status",
        "xinference-worker-1",
        "xinference-worker-2",
    }
    assert gate_requirements(load_config(env={}))[XINFERENCE_READY] == {"xinference /status"}
