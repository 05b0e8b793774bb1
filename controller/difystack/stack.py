"""One stack as the CLI sees it: its configuration, state directory, secrets and project."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difystack import settings
from difystack.config_loader import DEFAULT_STACK_FILE, load_config
from difystack.config_model import StackConfig
from difystack.gpu import CudaVersion, driver_cuda_version, localai_cuda_flavour, nvidia_gpu_present, use_gpu
from difystack.paths import StackPaths
from difystack.render import write_project
from difystack.secrets_store import PLACEHOLDERS, SecretsStore
from difystack.swarm.processes import Process
from difystack.swarm.render import render_for_engine

CONFIG_ENV = settings.CONFIG.name


def find_stack_file(explicit: Path | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """--config, else $DIFYSTACK_CONFIG, else ./difystack.yaml if present, else none."""
    if explicit is not None:
        return explicit
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    candidate = cwd / DEFAULT_STACK_FILE
    return candidate if candidate.exists() else None


@dataclass
class Stack:
    config: StackConfig
    stack_file: Path | None
    paths: StackPaths
    config_dir: Path
    detect_gpu: Callable[[], bool] = field(default=nvidia_gpu_present)
    detect_cuda: Callable[[], CudaVersion | None] = field(default=driver_cuda_version)

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        assignments: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Stack:
        env = dict(os.environ if env is None else env)
        cwd = cwd or Path.cwd()
        stack_file = find_stack_file(config_file, env, cwd)
        config = load_config(stack_file, env, assignments, overrides)
        config_dir = stack_file.resolve().parent if stack_file else cwd
        return cls(config, stack_file, StackPaths.for_stack(config.name, env), config_dir)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def gpu(self) -> bool:
        return use_gpu(self.config, self.detect_gpu)

    @property
    def cuda_driver(self) -> CudaVersion | None:
        """The CUDA version the NVIDIA driver supports (None without a GPU stack or a driver)."""
        return self.detect_cuda() if self.gpu else None

    @property
    def secrets_store(self) -> SecretsStore:
        return SecretsStore(self.paths.secrets)

    def secrets(self) -> dict[str, str]:
        self.paths.ensure_root()
        return self.secrets_store.ensure()

    def render(
        self,
        out_dir: Path | None = None,
        *,
        placeholder_secrets: bool = False,
        processes: Mapping[str, Process] | None = None,
    ) -> Path:
        """Validate, render and write the project for the stack's engine; returns its directory.

        Everything is rendered in memory first: invalid input leaves no file behind, not
        even a freshly generated secrets file.
        """
        out_dir = out_dir or self.paths.project
        secrets = dict(PLACEHOLDERS) if placeholder_secrets else self.secrets_store.completed()
        files = render_for_engine(
            self.config,
            secrets,
            gpu=self.gpu,
            config_dir=self.config_dir,
            cuda_flavour=localai_cuda_flavour(self.cuda_driver),
            processes=processes,
        )
        if not placeholder_secrets:
            self.paths.ensure_root()
            self.secrets_store.save(secrets)
        write_project(files, out_dir)
        return out_dir
