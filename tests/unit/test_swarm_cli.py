"""`difystack up --engine swarm` against a fake docker runner: refusals change nothing.

The fake is a `docker` executable first on PATH that answers from a scenario and records
every call, so a test sees exactly what difystack asked the engine to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import user_env

FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
with open(os.environ["FAKE_DOCKER_SCENARIO"]) as scenario:
    rules = json.load(scenario)
for rule in rules:
    if args[: len(rule["argv"])] == rule["argv"]:
        sys.stdout.write(rule.get("stdout", ""))
        sys.stderr.write(rule.get("stderr", ""))
        sys.exit(rule.get("exit", 0))
sys.stderr.write("fake docker: no rule for " + " ".join(args) + "\\n")
sys.exit(99)
"""

NOT_A_MANAGER = {
    "argv": ["service", "list"],
    "exit": 1,
    "stderr": 'Error response from daemon: This node is not a swarm manager. Use "docker swarm init".\n',
}
NO_SERVICES = {"argv": ["service", "list"], "stdout": ""}
MUTATING = (["node", "update"], ["secret", "create"], ["stack", "deploy"], ["swarm", "init"])


def info(state: str, manager: bool = False) -> dict[str, Any]:
    swarm = {"LocalNodeState": state, "ControlAvailable": manager, "NodeID": "n1" if manager else ""}
    return {"argv": ["system", "info"], "stdout": json.dumps({"ServerVersion": "24.0.7", "Swarm": swarm})}


def node(node_id: str, hostname: str, role: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "ID": node_id,
        "Spec": {"Role": role, "Availability": "active", "Labels": labels},
        "Description": {"Hostname": hostname},
        "Status": {"State": "ready"},
    }


def nodes(*described: dict[str, Any]) -> list[dict[str, Any]]:
    ids = "".join(f"{n['ID']}\n" for n in described)
    return [
        {"argv": ["node", "list", "--quiet"], "stdout": ids},
        {"argv": ["inspect", "--type", "node"], "stdout": json.dumps(list(described))},
    ]


def run_up(
    tmp_path: Path, rules: list[dict[str, Any]], *extra: str
) -> tuple[subprocess.CompletedProcess[str], list]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(FAKE_DOCKER)
    fake.chmod(0o755)
    scenario, log = tmp_path / "scenario.json", tmp_path / "calls.jsonl"
    scenario.write_text(json.dumps(rules))
    env = user_env(
        PATH=f"{bin_dir}:{user_env()['PATH']}",
        DIFYSTACK_HOME=tmp_path / "home",
        FAKE_DOCKER_LOG=log,
        FAKE_DOCKER_SCENARIO=scenario,
        COLUMNS="200",
    )
    result = subprocess.run(
        [sys.executable, "-m", "difystack", "up", "--engine", "swarm", "--set", "gpu=none", *extra],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def assert_nothing_changed(tmp_path: Path, calls: list[list[str]]) -> None:
    assert not (tmp_path / "home" / "difystack").exists()  # no project, no secrets file
    for call in calls:
        assert not any(call[: len(prefix)] == prefix for prefix in MUTATING), call


def test_an_engine_outside_a_swarm_is_one_line_with_the_init_command(tmp_path: Path) -> None:
    result, calls = run_up(tmp_path, [NOT_A_MANAGER, info("inactive")])
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert (
        lines[0] == "Error: this Docker engine is not a swarm manager (swarm: inactive); nothing was changed"
    )
    assert "docker swarm init" in lines[1] and len(lines) == 2
    assert ["system", "info", "--format", "{{json .}}"] in calls
    assert_nothing_changed(tmp_path, calls)


def test_a_swarm_worker_is_told_to_run_difystack_on_a_manager(tmp_path: Path) -> None:
    result, calls = run_up(tmp_path, [NOT_A_MANAGER, info("active", manager=False)])
    assert result.returncode == 3
    assert "is a swarm worker, not a manager" in result.stderr and "Traceback" not in result.stderr
    assert_nothing_changed(tmp_path, calls)


def test_a_larger_swarm_without_the_dify_label_gets_the_exact_command(tmp_path: Path) -> None:
    rules = [
        NO_SERVICES,
        info("active", manager=True),
        *nodes(node("n1", "manager-1", "manager", {}), node("n2", "gpu-box", "worker", {})),
    ]
    result, calls = run_up(tmp_path, rules)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no manager of this 2-node swarm is labelled difystack.dify=true" in result.stderr
    assert "docker node update --label-add difystack.dify=true manager-1" in result.stderr
    assert_nothing_changed(tmp_path, calls)


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        (
            {"n1": {"difystack.dify": "true"}, "n2": {"difystack.dify": "true"}},
            "2 managers are labelled difystack.dify=true (manager-1, manager-2)",
        ),
        ({"n1": {"difystack.dify": "true"}, "n2": {}}, "no node is labelled difystack.gpu=true"),
    ],
)
def test_wrong_labels_on_a_larger_swarm_are_named(tmp_path: Path, labels: dict, words: str) -> None:
    rules = [
        NO_SERVICES,
        info("active", manager=True),
        *nodes(
            node("n1", "manager-1", "manager", labels["n1"]),
            node("n2", "manager-2", "manager", labels["n2"]),
        ),
    ]
    result, calls = run_up(tmp_path, rules, "--set", "gpu=nvidia")
    assert result.returncode == 1, result.stdout + result.stderr
    assert words in result.stderr
    assert "docker node update --label-" in result.stderr
    assert_nothing_changed(tmp_path, calls)
