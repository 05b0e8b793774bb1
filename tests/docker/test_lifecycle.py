"""`difystack up/status/logs/down` on a real engine, the rendered stack running stand-ins."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from difystack.standins import with_env
from tests.docker.conftest import StackUnderTest

pytestmark = pytest.mark.docker


def assert_all_ready(stack: StackUnderTest) -> None:
    report = stack.status()
    services = {s["service"]: s for s in report["services"]}
    assert {
        "api",
        "worker",
        "worker_beat",
        "web",
        "plugin_daemon",
        "db_postgres",
        "redis",
        "sandbox",
        "ssrf_proxy",
        "nginx",
        "weaviate",
        "xinference",
        "localai",
        "init_permissions",
    } <= set(services)
    for name, service in services.items():
        if service["one_shot"]:
            assert (service["state"], service["exit_code"]) == ("exited", 0), name
        else:
            assert (service["state"], service["health"]) == ("running", "healthy"), name
        assert service["ready"], name


def psql(stack: StackUnderTest, sql: str) -> subprocess.CompletedProcess[str]:
    """Run SQL in the stack's Dify database; unaligned, tuples-only output."""
    return stack.compose("exec", "-T", "db_postgres", "psql", "-U", "postgres", "-d", "dify", "-tAc", sql)


def test_up_status_down_keeps_data_and_down_volumes_removes_it(make_stack) -> None:
    stack: StackUnderTest = make_stack()
    first = stack.cli("up", "--timeout", "300")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Stack is up." in first.stdout
    assert f"http://127.0.0.1:{stack.config['dify']['port']}" in first.stdout
    assert "secrets.yaml" in first.stdout and "timings" in first.stdout
    assert_all_ready(stack)

    # A row in Dify's database, to see whether the volume survives `down`.
    marker = psql(stack, "CREATE TABLE difystack_marker (id int); INSERT INTO difystack_marker VALUES (42);")
    assert marker.returncode == 0, marker.stderr
    db_volume = f"{stack.name}_db_data"

    down = stack.cli("down")
    assert down.returncode == 0, down.stderr
    assert stack.containers() == []
    assert db_volume in stack.volumes()

    again = stack.cli("up", "--timeout", "300")
    assert again.returncode == 0, again.stdout + again.stderr
    kept = psql(stack, "SELECT id FROM difystack_marker")
    assert kept.stdout.strip() == "42", kept.stderr

    logs = stack.cli("logs", "xinference", "--tail", "50")
    assert logs.returncode == 0 and "fake xinference" in logs.stdout

    refused = stack.cli("down", "--volumes")  # stdin is not a terminal: must not delete silently
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert db_volume in stack.volumes()

    destroyed = stack.cli("down", "--volumes", "--yes")
    assert destroyed.returncode == 0, destroyed.stderr
    assert db_volume in destroyed.stdout
    assert stack.volumes() == []
    assert stack.containers() == []


def test_service_that_never_becomes_healthy_is_named_with_its_logs(make_stack, standin_images) -> None:
    broken = with_env(
        standin_images["weaviate"], "weaviate-never-ready", {"DIFYSTACK_FAKE_FAIL": "never-ready"}
    )
    stack: StackUnderTest = make_stack(images={**standin_images, "weaviate": broken})
    result = stack.cli("up", "--timeout", "120", "--stall-timeout", "25", timeout=400)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "weaviate is not ready" in result.stderr
    assert "container " in result.stderr and "last 25 log lines" in result.stderr
    assert "fake stub: listening" in result.stderr  # the service's own log lines are shown
    assert result.stderr.strip().splitlines()[-2].startswith("Error: not ready: ")
    assert "Traceback" not in result.stderr


def test_taken_host_port_is_refused_before_anything_starts(make_stack) -> None:
    stack: StackUnderTest = make_stack()
    port = stack.config["dify"]["port"]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        result = stack.cli("up", "--timeout", "60")
    assert result.returncode == 1
    assert f"dify.port: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--set dify.port=" in result.stderr
    assert stack.containers() == []
    assert "Traceback" not in result.stderr


def test_engine_unreachable_is_one_clear_line(make_stack, tmp_path: Path) -> None:
    stack: StackUnderTest = make_stack()
    result = stack.cli("up", extra_env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: cannot reach the Docker engine")
    assert all(not line.startswith("  File ") for line in lines) and "Traceback" not in result.stderr
    assert len(lines) <= 2  # the error and its hint


def test_ctrl_c_during_up_stops_cleanly_and_next_up_continues(make_stack) -> None:
    stack: StackUnderTest = make_stack()
    process = stack.popen("up", "--timeout", "300")
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + 240
    for line in process.stdout:
        seen.append(line)
        if "Waiting for services" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    output = "".join(seen) + rest
    assert process.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output

    resumed = stack.cli("up", "--timeout", "300")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_all_ready(stack)
