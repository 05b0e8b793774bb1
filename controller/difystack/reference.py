"""The reference stacks committed under ``compose/``: rendered with placeholder secrets.

Each ``compose/<name>/difystack.yaml`` is the input (``worker.yaml`` for the project of
`difystack worker`); every other file in that directory is the exact output of the templates,
so a reader can see what difystack runs without running anything.
``scripts/update-reference-stacks`` rewrites them; a test fails when they drift.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from difystack.config_loader import load_config
from difystack.render import MANIFEST, RenderedFile
from difystack.secrets_store import PLACEHOLDERS
from difystack.swarm.render import render_for_engine
from difystack.worker_project import SETTINGS_FILE, render_worker, supervisor_ip, worker_config

INPUT_FILE = "difystack.yaml"
INPUT_FILES = (INPUT_FILE, SETTINGS_FILE)


def reference_root(repo_root: Path) -> Path:
    return repo_root / "compose"


def reference_dirs(repo_root: Path) -> list[Path]:
    root = reference_root(repo_root)
    return sorted(p.parent for name in INPUT_FILES for p in root.glob(f"*/{name}"))


def render_reference(directory: Path) -> list[RenderedFile]:
    if (directory / SETTINGS_FILE).is_file():
        worker = worker_config(yaml.safe_load((directory / SETTINGS_FILE).read_text(encoding="utf-8")))
        return render_worker(worker, supervisor_ip(worker))
    # No environment layer and no GPU detection: the output must not depend on the machine.
    config = load_config(directory / INPUT_FILE, env={})
    gpu = config.gpu == "nvidia"
    return render_for_engine(config, PLACEHOLDERS, gpu=gpu, config_dir=directory)


def committed_files(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): path.read_text(encoding="utf-8")
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name not in (*INPUT_FILES, MANIFEST)
    }
