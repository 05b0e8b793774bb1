"""The plugin-daemon stand-in that runs Dify's real plugins (``standins build --plugin-packages``).

The plugins need Python >= 3.12 (their requires-python), so this image starts FROM its own base
(default ``python:3.12-slim``, like the official daemon image; offline:
``difystack/offline-base-plugins:trixie`` from ``scripts/provision-docker``). Every wheel is
downloaded on the host (where pip already trusts the network's CA) and installed offline in the
build: difystack's fakes, and each package's locked requirements; tiktoken's gpt2 files are
preloaded into ``/app/.tiktoken`` like the official image (see
:mod:`difystack.fakes.tiktoken_cache`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from difystack.errors import DifystackError
from difystack.fakes.plugin_process import locked_requirements, unpack
from difystack.fakes.tiktoken_cache import ensure_gpt2
from difystack.paths import templates_dir
from difystack.render import Renderer
from difystack.standins import (
    StandinBuilder,
    _tree_digest,
    content_hash,
    download_wheels,
    fakes_requirements,
    pip_download_command,
    standin_image,
)

DEFAULT_PLUGIN_BASE = "python:3.12-slim"
ROLE = "dify-plugin-daemon"


def package_files(packages: Path) -> list[Path]:
    found = sorted(packages.glob("*.difypkg"))
    if not found:
        raise DifystackError(f"--plugin-packages {packages}: no .difypkg files there")
    return found


def package_digests(files: list[Path]) -> list[str]:
    """``name:sha256`` of each package, for the stand-in images' content hashes."""
    return [f"{file.name}:{hashlib.sha256(file.read_bytes()).hexdigest()}" for file in files]


def build_plugin_daemon(builder: StandinBuilder, packages: Path, base_image: str, force: bool = False) -> str:
    """Build (or reuse) the plugin-daemon stand-in with these packages; returns its image."""
    files = package_files(packages)
    base_id = builder.base_image_id(base_image)
    python_tag, machine = builder.probe_base(base_image)
    if tuple(int(part) for part in python_tag.split(".")) < (3, 12):
        raise DifystackError(
            f"plugin base image {base_image} has Python {python_tag}; the plugins need >= 3.12"
        )
    image = standin_image(ROLE)
    with tempfile.TemporaryDirectory(prefix="difystack-plugin-standin-") as tmp:
        context = Path(tmp)
        requirements = fakes_requirements()
        locks: list[list[str]] = []
        (context / "packages").mkdir()
        for file in files:
            shutil.copy(file, context / "packages" / file.name)
            locks.append(locked_requirements(unpack(file, context / "unpacked" / file.stem)))
        plugin_requirements = {requirement for lock in locks for requirement in lock}
        shutil.rmtree(context / "unpacked")
        package = Path(__file__).resolve().parent
        shutil.copytree(package, context / "difystack", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        template = "standins/plugin-daemon.Dockerfile.j2"
        dockerfile = Renderer(templates_dir()).render(template, {"base_image": base_image})
        digest = content_hash(
            base_id,
            python_tag,
            machine,
            "\n".join(requirements),
            "\n".join(sorted(plugin_requirements)),
            dockerfile,
            _tree_digest(package),
            *package_digests(files),
        )
        if not force and builder.has_hash(image, digest):
            builder.progress(f"{image} is up to date")
            return image
        builder.progress(f"downloading wheels for Python {python_tag} on {machine} (fakes and plugins)")
        download_wheels(requirements, context / "wheels", python_tag, machine)
        plugin_wheels = context / "plugin-wheels"
        plugin_wheels.mkdir()
        for lock in locks:  # one lock at a time: two plugins may pin different versions
            download_locked(lock, plugin_wheels, python_tag, machine)
        ensure_gpt2(context / "tiktoken")
        (context / "Dockerfile").write_text(dockerfile, encoding="utf-8")
        builder.docker_build(context, image, digest)
    return image


def download_locked(lock: list[str], dest: Path, python_tag: str, machine: str) -> None:
    """Download exactly the locked wheels (no resolution, no constraints of the host's pip)."""
    command = [*pip_download_command(dest, python_tag, machine), "--no-deps", *lock]
    env = {**os.environ, "PIP_CONSTRAINT": ""}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise DifystackError(f"downloading the plugins' wheels failed: {result.stderr.strip()[-800:]}")
