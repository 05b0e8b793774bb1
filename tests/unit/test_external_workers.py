"""Workers on other machines, the main stack's side: config, rendering, join waits and commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from difystack.cluster import join_command, join_hints, row_name
from difystack.config_loader import load_config
from difystack.errors import ConfigError
from difystack.lifecycle import gate_requirements
from difystack.readiness import Timeouts, endpoint_targets
from difystack.reconcile.converge import XINFERENCE_READY
from difystack.reconcile.desired import desired_state
from difystack.worker_join import WorkerJoinWait
from tests.conftest import serve_app
from tests.unit.test_render import compose_config, render_to

CLUSTER = [
    "localai.enabled=false",
    "xinference.topology=distributed",
    "xinference.workers=1",
    "xinference.join_address=192.168.1.10",
    "xinference.external_workers=[{name: gpu-box, address: 192.168.1.20}]",
]


def cluster(*more: str) -> Any:
    return load_config(env={}, assignments=[*CLUSTER, *more])


DISTRIBUTED = CLUSTER[:4]  # a join address, no external worker yet


@pytest.mark.parametrize(
    ("assignments", "field", "words"),
    [
        (
            ["xinference.external_workers=[{name: gpu-box, address: 192.168.1.20}]"],
            "xinference.external_workers",
            "need `topology: distributed`",
        ),
        (
            ["xinference.topology=distributed", "xinference.external_workers=[{name: b, address: 10.0.0.2}]"],
            "xinference.join_address",
            "published there",
        ),
        (
            [*DISTRIBUTED, "xinference.external_workers=[{name: GPU_1, address: 10.0.0.2}]"],
            "xinference.external_workers[0].name",
            "not a worker name",
        ),
        (
            [*DISTRIBUTED, "xinference.external_workers=[{name: xinference-worker-1, address: 10.0.0.2}]"],
            "xinference.external_workers[0].name",
            "uses itself",
        ),
        (
            [*DISTRIBUTED, "xinference.external_workers=[{name: b, address: gpu.lan}]"],
            "xinference.external_workers[0].address",
            "not an IP address",
        ),
        (
            [*DISTRIBUTED, "xinference.external_workers=[{name: b, address: 127.0.0.1}]"],
            "xinference.external_workers[0].address",
            "cannot be reached",
        ),
        (
            [
                *DISTRIBUTED,
                "xinference.external_workers=[{name: b, address: 10.0.0.2}, {name: b, address: 10.0.0.3}]",
            ],
            "xinference.external_workers[1].name",
            "declared twice",
        ),
        ([*CLUSTER, "xinference.join_address=0.0.0.0"], "xinference.join_address", "cannot be reached"),
        (
            [*CLUSTER, "xinference.models.0.worker=gpu-2"],
            "xinference.models[0].worker",
            "'gpu-2' is no external",
        ),
        ([*CLUSTER, "xinference.models.0.worker=2"], "xinference.models[0].worker", "names no worker"),
        ([*CLUSTER, "xinference.auth=false"], "xinference.auth", "join_address publishes Xinference"),
        (
            [*CLUSTER, "xinference.supervisor_port=8080", "dify.port=8080"],
            "xinference.supervisor_port",
            "also published",
        ),
    ],
)
def test_bad_cluster_settings_name_the_field(assignments: list[str], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, assignments=assignments)
    message = str(caught.value)
    assert f"{field}: " in message and words in message, message


def test_weights_mounted_from_this_machine_cannot_go_to_an_external_worker(tmp_path: Path) -> None:
    stack_file = tmp_path / "s.yaml"
    stack_file.write_text(
        "xinference:\n  models:\n    - {uid: m, type: embedding, name: m, worker: gpu-box,\n"
        "       custom: {path: ./weights, dimensions: 8}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(stack_file, env={}, assignments=CLUSTER)
    assert "xinference.models[0].worker: custom.path mounts weights from this machine" in str(caught.value)


def test_join_address_turns_xinferences_accounts_on_like_expose() -> None:
    assert cluster().xinference.auth is True
    assert load_config(env={}, assignments=CLUSTER[:2]).xinference.auth is False


def test_the_supervisor_publishes_its_two_ports_on_the_join_address_and_resolves_the_workers(
    tmp_path: Path,
) -> None:
    _, parsed = render_to(tmp_path, [*CLUSTER, "xinference.supervisor_port=19999"])
    supervisor = parsed["services"]["xinference"]
    published = sorted((p["host_ip"], p["published"], p["target"]) for p in supervisor["ports"])
    assert published == [
        ("127.0.0.1", "9997", 9997),
        ("192.168.1.10", "19999", 19999),
        ("192.168.1.10", "9997", 9997),
    ]
    assert supervisor["command"][-2:] == ["--supervisor-port", "19999"]
    assert supervisor["extra_hosts"] == ["gpu-box=192.168.1.20"]
    local = parsed["services"]["xinference-worker-1"]
    assert "ports" not in local and "extra_hosts" not in local


def test_without_a_join_address_nothing_is_published_beyond_localhost(tmp_path: Path) -> None:
    _, parsed = render_to(tmp_path, ["xinference.topology=distributed", "xinference.workers=2"])
    ports = parsed["services"]["xinference"]["ports"]
    assert [(p["host_ip"], p["target"]) for p in ports] == [("127.0.0.1", 9997)]


def test_an_exposed_api_on_all_addresses_is_not_published_twice(tmp_path: Path) -> None:
    out, parsed = render_to(tmp_path, [*CLUSTER, "bind_address=0.0.0.0", "xinference.expose=true"])
    ports = parsed["services"]["xinference"]["ports"]
    assert sorted((p["host_ip"], p["target"]) for p in ports) == [("0.0.0.0", 9997), ("192.168.1.10", 9999)]
    compose_config(out)


def test_a_model_pinned_to_an_external_worker_launches_on_its_name() -> None:
    config = cluster(
        "xinference.models.0.worker=gpu-box",
        "xinference.models.1.worker=1",
    )
    desired = desired_state(config, "http://xinference:9997", None, Path("."))
    placed = {d.uid: (d.worker, d.launch.get("worker_ip")) for d in desired.xinference}
    assert placed == {
        "qwen2.5-instruct-0.5b": ("gpu-box", "gpu-box"),
        "bge-small-en-v1.5": ("xinference-worker-1", "xinference-worker-1"),
    }


def test_the_join_command_carries_what_the_worker_needs() -> None:
    config = cluster()
    worker = config.xinference.external_workers[0]
    assert join_command(config, worker) == (
        "difystack worker up --supervisor 192.168.1.10:9997 --name gpu-box --address 192.168.1.20"
    )
    config = load_config(
        env={},
        assignments=[
            *CLUSTER[:4],
            "xinference.external_workers=[{name: gpu-box, address: 192.168.1.20, gpu: false}]",
            "xinference.port=19997",
            "images={xinference: 'local/xinference:4.1.0 cpu'}",
        ],
    )
    assert join_command(config, config.xinference.external_workers[0]) == (
        "difystack worker up --supervisor 192.168.1.10:19997 --name gpu-box --address 192.168.1.20 "
        "--cpu --image 'local/xinference:4.1.0 cpu'"
    )
    config = cluster("xinference.version=v4.0.2")
    assert join_command(config, config.xinference.external_workers[0]).endswith(" --version v4.0.2")
    hint = join_hints(config, ["xinference /status", row_name(config.xinference.external_workers[0])])
    assert hint is not None and hint.startswith("on gpu-box (192.168.1.20) run: difystack worker up ")
    assert join_hints(config, ["xinference /status"]) is None


def test_up_waits_for_each_external_worker_in_a_named_row_before_models_deploy() -> None:
    config = cluster()
    names = [target.name for target in endpoint_targets(config, Timeouts())]
    assert "external worker gpu-box" in names
    assert gate_requirements(config)[XINFERENCE_READY] == {
        "xinference /status",
        "xinference-worker-1",
        "external worker gpu-box",
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_join_wait_counts_from_the_supervisors_first_answer() -> None:
    listed: dict[str, Any] = {}

    async def status(request: Request) -> JSONResponse:
        return JSONResponse({"uptime": 1, "workers": listed})

    clock = Clock()
    with serve_app(Starlette(routes=[Route("/status", status)])) as url:
        unreachable = WorkerJoinWait("http://127.0.0.1:9", "gpu-box", 30, clock)
        assert unreachable.probe().detail == "waiting for the supervisor"
        wait = WorkerJoinWait(url, "gpu-box", 30, clock)
        listed["xinference-worker-1:30001"] = {}
        first = wait.probe()
        assert (first.ready, first.failed) == (False, False)
        clock.now += 29
        assert not wait.probe().failed
        clock.now += 1
        gave_up = wait.probe()
        assert gave_up.failed and gave_up.detail == "has not joined 30s after the supervisor answered"
        listed["gpu-box:30001"] = {}
        joined = WorkerJoinWait(url, "gpu-box", 30, clock).probe()
        assert joined.ready and joined.detail == "joined as gpu-box:30001"
