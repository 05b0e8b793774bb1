"""`difystack worker`: the worker-only compose project for another machine (no Docker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from difystack.errors import ConfigError
from difystack.render import write_project
from difystack.worker_project import render_worker, worker_config
from tests.unit.test_cli_render import run_cli
from tests.unit.test_render import compose_config

JOIN = ["--supervisor", "192.168.1.10:9997", "--name", "gpu-box", "--address", "192.168.1.20"]


def rendered(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    worker = worker_config(
        {"name": "gpu-box", "supervisor": "192.168.1.10", "address": "192.168.1.20", **settings}
    )
    out = tmp_path / "project"
    write_project(render_worker(worker, "192.168.1.10"), out)
    return compose_config(out)


def test_the_worker_registers_by_name_and_publishes_exactly_what_the_supervisor_dials(tmp_path: Path) -> None:
    parsed = rendered(tmp_path)
    assert parsed["name"] == "difystack-worker-gpu-box"
    service = parsed["services"]["xinference-worker"]
    assert service["command"] == [
        "xinference-worker",
        "-e",
        "http://192.168.1.10:9997",
        "-H",
        "gpu-box",
        "--worker-port",
        "30001",
        "--metrics-exporter-port",  # else it would take one of the model ports
        "30002",
    ]
    published = sorted((p["host_ip"], p["published"], p["target"]) for p in service["ports"])
    model_ports = [("192.168.1.20", str(port), port) for port in range(30100, 30132)]
    assert published == sorted([("192.168.1.20", "30001", 30001), *model_ports])
    # The model processes listen on kernel-chosen ports: the kernel may only choose published ones.
    assert service["sysctls"] == {"net.ipv4.ip_local_port_range": "30100 30131"}
    # The supervisor's internal address (xinference:<port>) leads to its machine; the worker's
    # own name means every interface inside its container.
    assert sorted(service["extra_hosts"]) == ["gpu-box=0.0.0.0", "xinference=192.168.1.10"]
    assert "gpu-box:30001" in service["healthcheck"]["test"][-1]
    assert service["labels"]["io.difystack.worker"] == "gpu-box"


def test_gpu_by_default_cpu_on_request(tmp_path: Path) -> None:
    gpu = rendered(tmp_path / "gpu")["services"]["xinference-worker"]
    assert gpu["image"] == "xprobe/xinference:v4.1.0"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    cpu = rendered(tmp_path / "cpu", gpu=False, version="v4.0.2")["services"]["xinference-worker"]
    assert cpu["image"] == "xprobe/xinference:v4.0.2-cpu"
    assert "deploy" not in cpu
    mirrored = rendered(tmp_path / "image", image="mirror/xinference:4.1.0")["services"]["xinference-worker"]
    assert mirrored["image"] == "mirror/xinference:4.1.0"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"supervisor": "192.168.1.10:port"}, "--supervisor: '192.168.1.10:port' has no valid port"),
        ({"supervisor": "http://192.168.1.10:9997/v1"}, "--supervisor: 'http://192.168.1.10:9997/v1': give"),
        ({"name": "GPU box"}, "--name: 'GPU box' is not a worker name"),
        ({"address": "0.0.0.0"}, "--address: '0.0.0.0' cannot be reached from another machine"),
        ({"model_ports": "30100-30101"}, "--model-ports: '30100-30101': give at least 4 ports"),
        ({"model_ports": "9-30101"}, "--model-ports: '9-30101': give FIRST-LAST with 1024"),
        ({"worker_port": 30105}, "--worker-port: 30105 and the metrics port after it must lie outside"),
        ({"worker_port": 30099}, "--worker-port: 30099 and the metrics port after it must lie outside"),
    ],
)
def test_bad_settings_name_the_option(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        worker_config({"name": "gpu-box", "supervisor": "10.0.0.1", "address": "10.0.0.2", **settings})
    assert message in str(caught.value)


def test_ipv6_addresses_are_bracketed_where_compose_needs_it(tmp_path: Path) -> None:
    worker = worker_config({"name": "gpu-box", "supervisor": "[fd00::1]:9997", "address": "fd00::2"})
    assert worker.supervisor == "http://[fd00::1]:9997"
    text = render_worker(worker, "fd00::1")[0].content
    assert '"[fd00::2]:30100-30131:30100-30131"' in text and '"http://[fd00::1]:9997"' in text


def test_render_writes_the_project_and_remembers_the_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = run_cli(
        "worker", "render", *JOIN, "--cpu", "--model-ports", "31000-31007", home=home, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    state = home / "worker.gpu-box"
    assert "31000-31007" in first.stdout and str(state / "project") in first.stdout
    saved = yaml.safe_load((state / "worker.yaml").read_text())
    assert saved["gpu"] is False and saved["model_ports"] == "31000-31007"
    # Later commands need no more than the name (or nothing, with one worker on the machine).
    again = run_cli("worker", "render", "--worker-port", "31010", home=home, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    compose = yaml.safe_load((state / "project" / "docker-compose.yml").read_text())
    service = compose["services"]["xinference-worker"]
    assert service["command"][-3:] == ["31010", "--metrics-exporter-port", "31011"]
    assert "deploy" not in service
    elsewhere = run_cli(
        "worker", "render", "--name", "gpu-box", "--out", str(tmp_path / "x"), home=home, cwd=tmp_path
    )
    assert elsewhere.returncode == 0 and (tmp_path / "x" / "docker-compose.yml").is_file()


def test_cli_errors_name_the_option_and_write_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = run_cli("worker", "render", *JOIN, "--model-ports", "1-2", home=home, cwd=tmp_path)
    assert bad.returncode == 2 and "--model-ports: '1-2'" in bad.stderr
    escaping = run_cli("worker", "render", *JOIN[:2], "--name", "../evil", home=home, cwd=tmp_path)
    assert escaping.returncode == 2 and "--name: '../evil' is not a worker name" in escaping.stderr
    first_time = run_cli("worker", "up", "--name", "gpu-box", home=home, cwd=tmp_path)
    assert first_time.returncode == 1 and "--supervisor: needed the first time" in first_time.stderr
    unknown = run_cli("worker", "status", home=home, cwd=tmp_path)
    assert unknown.returncode == 1 and "--name: which worker? (none on this machine)" in unknown.stderr
    assert not home.exists() or not list(home.iterdir())
