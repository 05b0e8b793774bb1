"""The pytest plugin, exercised by real inner pytest runs against real stacks of stand-ins."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from difystack.pytest_plugin import remove_project
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.docker

# pytester points HOME at a temporary directory; the docker CLI must still find its plugins.
DOCKER_CONFIG = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
README_EXAMPLE = re.compile(
    r"<!-- example-test: start -->\n```python\n(.*?)```\n<!-- example-test: end -->", re.S
)


def project_containers(project: str) -> list[str]:
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def write_suite(
    pytester: pytest.Pytester, standin_images: dict[str, str], ini: str = "", **tests: str
) -> None:
    (pytester.path / "difystack.yaml").write_text(
        yaml.safe_dump({"gpu": "none", "images": standin_images}), encoding="utf-8"
    )
    pytester.makeini(f"[pytest]\ndifystack_config = difystack.yaml\n{ini}")
    pytester.makepyfile(**tests)


def inner_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFYSTACK_HOME", str(pytester.path / "difystack-home"))
    monkeypatch.setenv("DOCKER_CONFIG", DOCKER_CONFIG)


def stack_name(output: str) -> str:
    found = re.findall(r"stack (pytest[0-9a-f]{8})", output)
    assert found, output
    return found[0]


def test_readme_example_passes_and_a_failure_gets_the_stack_report(
    pytester, monkeypatch, standin_images
) -> None:
    inner_env(pytester, monkeypatch)
    example = README_EXAMPLE.search((REPO_ROOT / "README.md").read_text()).group(1)
    write_suite(
        pytester,
        standin_images,
        test_dify_models=example,
        test_failing="def test_fails(difystack_stack):\n    assert difystack_stack.admin_email == 'nobody'\n",
    )
    basetemp = pytester.path / "bt"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--basetemp={basetemp}", timeout=900)
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "difystack stack" in output
    assert re.search(r"nginx\s+running\s+healthy", output)
    assert "--- last 40 log lines of api ---" in output
    secrets = yaml.safe_load(next(basetemp.glob("difystack-home/*/secrets.yaml")).read_text())
    leaked = [name for name, value in secrets.items() if value in output]
    assert leaked == []
    assert project_containers(stack_name(output)) == []  # removed at the end of the run


def test_xdist_workers_share_one_stack_and_pytest_docker_fixtures_point_at_it(
    pytester, monkeypatch, standin_images
) -> None:
    inner_env(pytester, monkeypatch)
    record = pytester.path / "names"
    record.mkdir()
    body = (
        "import os\n"
        "def check(stack, n):\n"
        f"    (open(os.path.join({str(record)!r}, str(n)), 'w')).write(stack.name)\n"
        + "".join(f"def test_{n}(difystack_stack):\n    check(difystack_stack, {n})\n" for n in range(4))
        + "def test_pytest_docker(difystack_stack, docker_services, docker_compose_project_name):\n"
        "    assert docker_compose_project_name == difystack_stack.name\n"
        "    assert docker_services.port_for('nginx', 80) == difystack_stack.config.dify.port\n"
    )
    write_suite(pytester, standin_images, ini="difystack_pytest_docker = true\n", test_shared=body)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", timeout=900)
    result.assert_outcomes(passed=5)
    names = {path.read_text() for path in record.iterdir()}
    assert len(names) == 1, names
    assert project_containers(names.pop()) == []


def test_kept_stack_survives_and_leftovers_of_a_killed_run_are_removed(
    pytester, monkeypatch, standin_images
) -> None:
    inner_env(pytester, monkeypatch)
    marker = pytester.path / "stack-name"
    write_suite(
        pytester,
        standin_images,
        test_kept=(
            "def test_fails(difystack_stack):\n"
            f"    open({str(marker)!r}, 'w').write(difystack_stack.name)\n"
            "    assert False\n"
        ),
    )
    kept = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--difystack-keep-on-failure", timeout=900)
    kept.assert_outcomes(failed=1)
    kept_name = marker.read_text()
    assert "keeping stack" in kept.stdout.str()
    assert project_containers(kept_name)

    # A run killed while its stack is up (e.g. a cancelled CI job) leaves the stack behind ...
    killed_marker = pytester.path / "killed-name"
    (pytester.path / "test_kept.py").unlink()
    pytester.makepyfile(
        test_slow=(
            "import time\n"
            "def test_slow(difystack_stack):\n"
            f"    open({str(killed_marker)!r}, 'w').write(difystack_stack.name)\n"
            "    time.sleep(600)\n"
        )
    )
    env = {
        **os.environ,
        "DIFYSTACK_HOME": str(pytester.path / "difystack-home"),
        "DOCKER_CONFIG": DOCKER_CONFIG,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_slow.py"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 600
    while not killed_marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    leftover = killed_marker.read_text()
    assert project_containers(leftover)

    # ... and the next run removes it when it starts its own stack, but not the kept one.
    (pytester.path / "test_slow.py").unlink()
    pytester.makepyfile(test_ok="def test_ok(difystack_stack):\n    assert difystack_stack.models\n")
    fresh = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=900)
    fresh.assert_outcomes(passed=1)
    assert project_containers(leftover) == []
    assert project_containers(kept_name)
    remove_project(kept_name)
    networks = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={kept_name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert networks.stdout.split() == []  # nothing of the kept stack stays to exhaust address pools
    registry = pytester.path / "difystack-home" / "pytest-kept-stacks.json"
    assert kept_name in json.loads(registry.read_text())
