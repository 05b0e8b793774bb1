"""Where difystack keeps things: the per-stack state directory and the packaged templates."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs

from difystack import settings
from difystack.secrets_store import write_private

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

    @property
    def state_file(self) -> StateFile:
        return StateFile(self.state)

    @property
    def dify_session(self) -> Path:
        """The Dify console session kept between runs, so a re-run need not log in."""
        return self.root / "dify-session.json"

    def ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)


class StateFile:
    """Small facts kept between runs (the project's fingerprint, credential fingerprints), 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps(data, indent=2, sort_keys=True))

    def update(self, **values: Any) -> None:
        self.write({**self.read(), **values})


def templates_dir() -> Path:
    """The Jinja templates: inside the installed wheel, or ``templates/`` of a source checkout."""
    packaged = Path(str(resources.files("difystack").joinpath("templates")))
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("difystack's templates are missing from this installation")
