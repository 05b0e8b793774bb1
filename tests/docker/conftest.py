"""The docker tier: the real rendered stack on a real engine, with stand-in images.

Needs a Docker engine, the Compose v2 plugin and the offline base image
(`scripts/provision-docker` provides all three). Without them the tier is skipped on a
developer machine, but under CI=true it FAILS: a skipped docker tier would hide a broken stack.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from difystack import settings
from difystack.pytest_plugin import remove_project
from tests.conftest import free_port, user_env

BASE_IMAGE = os.environ.get("DIFYSTACK_STANDIN_BASE", "difystack/offline-base:bookworm")
PLUGIN_BASE_IMAGE = settings.STANDIN_PLUGIN_BASE.read() or "difystack/offline-base-plugins:trixie"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"docker tier cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"docker tier needs {reason} (run scripts/provision-docker)")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if _run("docker", "info").returncode != 0:
        _unavailable("a running Docker engine")
    if _run("docker", "compose", "version").returncode != 0:
        _unavailable("the Docker Compose v2 plugin")
    for base in (BASE_IMAGE, PLUGIN_BASE_IMAGE):
        if _run("docker", "image", "inspect", base).returncode != 0:
            _unavailable(f"the base image {base}")


@pytest.fixture(scope="session")
def standin_images(docker_engine: None) -> dict[str, str]:
    from difystack.standins import StandinBuilder
    from tests.fakes.real_plugins import packages_dir

    # The plugin daemon runs Dify's real plugins; the api's simulated marketplace serves them.
    return StandinBuilder().build(
        BASE_IMAGE, infra=True, plugin_packages=packages_dir(), plugin_base=PLUGIN_BASE_IMAGE
    )


HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="session")
def real_xinference(standin_images: dict[str, str]) -> dict[str, Any]:
    """The stack-file sections for the real image (built once; reused while its inputs hold)."""
    from difystack.xinference_image import XinferenceImageBuilder, stack_snippet

    # The host CA bundle lets the build's pip through a TLS-intercepting network (as here).
    ca_bundle = HOST_CA_BUNDLE if HOST_CA_BUNDLE.is_file() else None
    image = XinferenceImageBuilder().build(BASE_IMAGE, ca_bundle=ca_bundle)
    return stack_snippet(image)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class StackUnderTest:
    """One uniquely named stack of stand-ins with free ports, driven through the real CLI."""

    name: str
    root: Path
    config: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def stack_file(self) -> Path:
        return self.root / "difystack.yaml"

    def write(self) -> None:
        self.stack_file.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")

    def cli(
        self, *args: str, timeout: float = 600, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        self.write()
        env = user_env(DIFYSTACK_HOME=self.root / "home", COLUMNS="200", **self.env, **(extra_env or {}))
        return subprocess.run(
            [sys.executable, "-m", "difystack", *args, "-c", str(self.stack_file)],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=env,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        self.write()
        env = user_env(DIFYSTACK_HOME=self.root / "home", COLUMNS="200", **self.env)
        return subprocess.Popen(
            [sys.executable, "-m", "difystack", *args, "-c", str(self.stack_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.root,
            env=env,
            # Ctrl-C reaches it as from a terminal, even when this run was started in the background
            # (a non-interactive shell starts background jobs with SIGINT ignored, and that is inherited).
            preexec_fn=_default_sigint,
        )

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        project = self.root / "home" / self.name / "project"
        return _run("docker", "compose", "--project-directory", str(project), "-p", self.name, *args)

    def volumes(self) -> list[str]:
        listed = _run(
            "docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.name}"
        )
        return sorted(listed.stdout.split())

    def containers(self) -> list[str]:
        listed = _run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}")
        return listed.stdout.split()


@pytest.fixture
def make_stack(standin_images: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    created: list[StackUnderTest] = []

    def factory(**overrides: Any) -> StackUnderTest:
        name = f"dst{secrets.token_hex(3)}"
        config: dict[str, Any] = {
            "name": name,
            "gpu": "none",
            "images": dict(standin_images),
            "dify": {"port": free_port()},
            "xinference": {"port": free_port()},
            "localai": {"port": free_port()},
        }
        for key, value in overrides.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
        root = tmp_path / name
        root.mkdir()
        stack = StackUnderTest(name, root, config)
        created.append(stack)
        return stack

    yield factory
    for stack in created:
        remove_project(stack.name)
