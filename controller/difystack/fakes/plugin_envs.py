"""Build the environments of a directory of .difypkg packages (run inside the stand-in build).

``python -m difystack.fakes.plugin_envs PACKAGES ENVS [pip args...]`` unpacks each package and
builds its environment from the package's own uv.lock with ``python3`` of the image, as the
real daemon does at install time; the fake daemon later finds it by the lock's hash.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from difystack.fakes.plugin_process import build_env, unpack


def build_all(packages: Path, envs_root: Path, pip_args: list[str]) -> list[Path]:
    python = shutil.which("python3") or sys.executable
    built = []
    with tempfile.TemporaryDirectory(prefix="difystack-plugins-") as tmp:
        for package in sorted(packages.glob("*.difypkg")):
            plugin_dir = unpack(package, Path(tmp) / package.stem)
            built.append(build_env(plugin_dir, envs_root, python, pip_args))
            print(f"{package.name}: {built[-1]}", flush=True)
    return built


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m difystack.fakes.plugin_envs PACKAGES ENVS [pip args...]", file=sys.stderr)
        return 2
    build_all(Path(argv[0]), Path(argv[1]), argv[2:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
