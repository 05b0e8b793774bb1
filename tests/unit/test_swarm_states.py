"""Readiness from swarm tasks, and the node labels difystack plans: pure functions, no engine."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytest
from python_on_whales.components.task.models import TaskInspectResult

from difystack.compose_runtime import ServiceState
from difystack.config_loader import load_config
from difystack.errors import DifystackError
from difystack.swarm.preflight import SwarmNode, exposure_warning, kernel_lacks_ipvs, plan_labels
from difystack.swarm.runtime import task_state
from difystack.waits import ContainerWait


def task(
    minute: int, state: str, desired: str = "running", err: str = "", exit_code: int | None = None
) -> TaskInspectResult:
    status: dict[str, Any] = {"State": state, "Err": err}
    if exit_code is not None:
        status["ContainerStatus"] = {"ExitCode": exit_code}
    return TaskInspectResult.model_validate(
        {
            "ID": f"t{minute}",
            "CreatedAt": f"2026-01-01T10:{minute:02d}:00Z",
            "Name": "s_api",
            "Slot": 1,
            "NodeID": "n1",
            "DesiredState": desired,
            "Status": status,
        }
    )


def state_of(tasks: list[TaskInspectResult], healthcheck: bool = True, service: str = "api") -> ServiceState:
    return task_state(service, tasks, healthcheck=healthcheck, ports=[], nodes={"n1": "manager-1"})


def test_a_running_task_with_a_healthcheck_is_healthy_and_ready() -> None:
    state = state_of([task(1, "running")])
    assert (state.state, state.health, state.ready) == ("running", "healthy", True)
    assert state.container == "s_api.1 on manager-1"
    assert ContainerWait("api", lambda: {"api": state}).probe().ready


def test_a_starting_task_waits_for_its_healthcheck() -> None:
    state = state_of([task(1, "starting")])
    assert (state.state, state.health, state.ready) == ("running", "starting", False)
    assert not state_of([task(1, "starting")], healthcheck=False).ready


def test_a_completed_job_is_an_exited_one_shot_and_a_failed_job_fails_the_wait() -> None:
    done = state_of([task(1, "complete", desired="complete")], service="init")
    assert (done.state, done.exit_code) == ("exited", 0)
    assert ContainerWait("init", lambda: {"init": done}, one_shot=True).probe().ready
    failed = state_of([task(1, "failed", desired="complete", exit_code=2)], service="init")
    probe = ContainerWait("init", lambda: {"init": failed}, one_shot=True).probe()
    assert (failed.state, failed.exit_code, probe.failed) == ("exited", 2, True)


def test_a_pending_task_says_why_the_swarm_cannot_place_it() -> None:
    err = "no suitable node (scheduling constraints not satisfied on 1 node)"
    state = state_of([task(1, "pending", err=err)])
    assert state.state == f"pending: {err}"
    assert ContainerWait("api", lambda: {"api": state}).probe().detail == state.state


def test_failures_count_as_restarts_until_a_task_runs_again() -> None:
    crashing = [
        task(1, "failed", desired="shutdown", exit_code=1),
        task(2, "failed", desired="shutdown", exit_code=1),
        task(3, "failed", desired="shutdown", exit_code=1),
        task(4, "failed", exit_code=1),
    ]
    state = state_of(crashing)
    assert (state.state, state.restarts) == ("restarting", 4)
    assert ContainerWait("api", lambda: {"api": state}).probe().failed
    recovered = state_of([*crashing[:3], task(4, "running")])
    assert (recovered.restarts, recovered.ready) == (0, True)


def test_an_updated_service_is_judged_by_its_newest_task() -> None:
    state = state_of([task(1, "shutdown", desired="shutdown"), task(2, "preparing")])
    assert (state.state, state.restarts, state.ready) == ("preparing", 0, False)


# -- node labels ------------------------------------------------------------------------------------

MANAGER = SwarmNode("n1", "manager-1", "manager", {})


def test_a_one_node_swarm_is_labelled_by_difystack() -> None:
    config = load_config(env={}, assignments=["deploy.engine=swarm"])
    assert plan_labels(config, False, [MANAGER], MANAGER) == {"n1": {"difystack.dify": "true"}}
    assert plan_labels(config, True, [MANAGER], MANAGER) == {
        "n1": {"difystack.dify": "true", "difystack.gpu": "true"}
    }
    labelled = SwarmNode("n1", "manager-1", "manager", {"difystack.dify": "true"})
    assert plan_labels(config, False, [labelled], labelled) == {}


def test_a_larger_swarm_is_never_labelled_by_difystack() -> None:
    config = load_config(env={}, assignments=["deploy.engine=swarm"])
    worker = SwarmNode("n2", "box", "worker", {"difystack.dify": "true"})
    with pytest.raises(DifystackError) as missing:
        plan_labels(config, False, [MANAGER, worker], MANAGER)  # a worker label does not count
    assert missing.value.hint == "docker node update --label-add difystack.dify=true manager-1"
    pinned = SwarmNode("n1", "manager-1", "manager", {"difystack.dify": "true"})
    assert plan_labels(config, False, [pinned, worker], pinned) == {}
    # A GPU stack whose model servers all run elsewhere needs no GPU node.
    external = load_config(
        env={},
        assignments=[
            "deploy.engine=swarm",
            "xinference.external.url=http://10.0.0.5:9997",
            "localai.external.url=http://10.0.0.6:8080",
        ],
    )
    assert plan_labels(external, True, [pinned, worker], pinned) == {}
    with pytest.raises(DifystackError) as no_gpu:
        plan_labels(config, True, [pinned, worker], pinned)
    assert "no node is labelled difystack.gpu=true" in str(no_gpu.value)


def test_the_routing_mesh_exposure_is_named_with_its_ports() -> None:
    config = load_config(env={}, assignments=["deploy.engine=swarm", "dify.port=8080", "localai.port=8081"])
    warning = exposure_warning(config)
    assert warning is not None
    assert "dify 8080, xinference 9997, localai 8081" in warning and "xinference.auth" in warning
    assert exposure_warning(load_config(env={}, assignments=["bind_address=0.0.0.0"])) is None


def test_without_virtual_ips_the_model_servers_need_the_dify_label_too() -> None:
    plain = [
        "deploy.engine=swarm",
        "deploy.endpoint_mode=dnsrr",
        "dify.enabled=false",
        "localai.enabled=false",
    ]
    config = load_config(env={}, assignments=plain)
    assert plan_labels(config, False, [MANAGER], MANAGER) == {"n1": {"difystack.dify": "true"}}
    # A GPU stack that is not distributed runs its GPU work on that manager: no GPU label needed.
    assert plan_labels(config, True, [MANAGER], MANAGER) == {"n1": {"difystack.dify": "true"}}
    distributed = load_config(env={}, assignments=[*plain, "xinference.topology=distributed"])
    assert plan_labels(distributed, True, [MANAGER], MANAGER)["n1"] == {
        "difystack.dify": "true",
        "difystack.gpu": "true",
    }


def test_ipvs_is_judged_only_on_this_machines_kernel(tmp_path: Path) -> None:
    release = platform.release()
    proc, modules = tmp_path / "proc", tmp_path / "modules"
    assert kernel_lacks_ipvs(release, proc, modules)
    assert not kernel_lacks_ipvs("another-kernel", proc, modules)  # the engine runs elsewhere
    (modules / release).mkdir(parents=True)
    (modules / release / "modules.builtin").write_text("kernel/net/netfilter/ipvs/ip_vs.ko\n")
    assert not kernel_lacks_ipvs(release, proc, modules)
    (proc / "sys/net/ipv4/vs").mkdir(parents=True)
    assert not kernel_lacks_ipvs(release, proc, tmp_path / "none")
