"""Where the tests find Dify's real plugin packages and a Python that can run them."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from difystack import settings
from difystack.fakes import difypkg
from difystack.fakes.plugin_process import build_env, unpack
from difystack.fakes.tiktoken_cache import ensure_gpt2
from tests.conftest import REPO_ROOT

SHARED_PACKAGES = REPO_ROOT.parent / "shared" / "upstream" / "dify-official-plugins"
PLUGIN_PYTHONS = ("python3.12", "python3.13", "python3")


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI=true a missing input fails the run instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def packages_dir() -> Path:
    directory = Path(settings.PLUGIN_PACKAGES.read() or SHARED_PACKAGES)
    if not sorted(directory.glob("*.difypkg")):
        unavailable(f"no .difypkg files in {directory} (set {settings.PLUGIN_PACKAGES.name})")
    return directory


def package(name: str) -> Path:
    found = sorted(packages_dir().glob(f"langgenius-{name}-*.difypkg"))
    if not found:
        unavailable(f"no langgenius-{name} package in {packages_dir()}")
    return found[-1]


def plugin_python() -> str:
    """A CPython >= 3.12 (the plugins' requires-python)."""
    probe = "import sys; sys.exit(sys.version_info < (3, 12))"
    pyenv = sorted(Path.home().glob(".pyenv/versions/3.1[2-9]*/bin/python3"))
    for path in [*(shutil.which(name) for name in PLUGIN_PYTHONS), *map(str, pyenv)]:
        if path and subprocess.run([path, "-c", probe], check=False, capture_output=True).returncode == 0:
            return path
    unavailable("no Python >= 3.12 on PATH to run the real plugins")
    raise AssertionError("unreachable")


def plugin_envs_root() -> Path:
    """Environments built from each package's uv.lock, kept between runs."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "difystack" / "plugin-envs"
    python = plugin_python()
    for found in sorted(packages_dir().glob("*.difypkg")):
        plugin_dir = unpack(found, root / "unpacked" / found.stem)
        build_env(plugin_dir, root, python)
    return root


def tiktoken_cache() -> Path:
    """tiktoken's gpt2 files (see difystack.fakes.tiktoken_cache), kept between runs."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "difystack" / "tiktoken"
    return ensure_gpt2(root)


@functools.cache
def real_plugins_env() -> dict[str, str]:
    """What the in-process fake daemon and api need to run and serve Dify's real plugins:
    the prebuilt environments, tiktoken's files and the packages for the marketplace."""
    return {
        settings.FAKE_PLUGIN_ENVS.name: str(plugin_envs_root()),
        "TIKTOKEN_CACHE_DIR": str(tiktoken_cache()),
        settings.FAKE_MARKETPLACE_PACKAGES.name: str(packages_dir()),
    }


def marketplace_package(plugin_id: str) -> bytes:
    """The real package as the fake marketplace serves it (signed with the fake key)."""
    return difypkg.signed(package(plugin_id.split("/", 1)[1]).read_bytes())


def marketplace_identifier(plugin_id: str) -> str:
    return difypkg.unique_identifier(marketplace_package(plugin_id))


def finished_daemon_task(
    client: httpx.Client, task_id: str, headers: Mapping[str, str], tenant: str = "t1"
) -> dict[str, Any]:
    """The plugin daemon's install task once it has finished (it starts the real plugin)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        task = client.get(f"/plugin/{tenant}/management/install/tasks/{task_id}", headers=headers).json()
        if task["data"]["status"] in {"success", "failed"}:
            return dict(task["data"])
        time.sleep(0.05)
    raise AssertionError(f"install task {task_id} did not finish")
