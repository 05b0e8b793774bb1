"""Where difystack keeps things: the per-stack state directory and the packaged templates."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import platformdirs

from difystack import settings

HOME_ENV = settings.HOME.name


def difystack_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    configured = env.get(HOME_ENV)
    return Path(configured).expanduser() if configured else platformdirs.user_data_path("difystack")


@dataclass(frozen=True)
class StackPaths:
    """The state directory of one stack: ``<DIFYSTACK_HOME>/<stack name>/``."""

    root: Path

    @classmethod
    def for_stack(cls, name: str, env: Mapping[str, str] | None = None) -> StackPaths:
        return cls(difystack_home(env) / name)

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.yaml"

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    def ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)


def templates_dir() -> Path:
    """The Jinja templates: inside the installed wheel, or ``templates/`` of a source checkout."""
    packaged = Path(str(resources.files("difystack").joinpath("templates")))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("difystack's templates are missing from this installation")
