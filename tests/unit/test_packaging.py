"""`pip install .` in a fresh venv gives a `difystack` that renders from any directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, user_env


def test_installed_wheel_finds_its_templates(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    env = user_env(DIFYSTACK_HOME=tmp_path / "home")
    env.pop("PYTHONPATH", None)  # the installed wheel, not this checkout
    result = subprocess.run(
        [str(venv / "bin" / "difystack"), "render", "--out", "project"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "project" / "docker-compose.yml").read_text().startswith("# Rendered by difystack")
    assert (elsewhere / "project" / "nginx" / "default.conf").exists()

    where = subprocess.run(
        [str(python), "-c", "from difystack.paths import templates_dir; print(templates_dir())"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"templates came from {where}, not from the installed wheel"
