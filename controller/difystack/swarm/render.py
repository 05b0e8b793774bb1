"""Render a stack for Docker Swarm: the compose templates, transformed (see ``transform``).

The project holds ``docker-stack.yml`` and the config files it turns into Swarm configs, but
no ``.env``: the secrets go to the swarm as Swarm secrets, straight from the stack's
secrets file, and are never written into the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from difystack import __version__
from difystack.config_model import StackConfig
from difystack.render import COMPOSE_FILE, ENV_FILE, RenderedFile, render_project
from difystack.swarm.processes import Process, official_processes
from difystack.swarm.transform import StackTransform, SwarmSecret

STACK_FILE = "docker-stack.yml"
# Compose-only outputs: the compose file and its .env (with .gitignore hiding that .env).
_COMPOSE_ONLY = frozenset({COMPOSE_FILE, ENV_FILE, ".gitignore"})


class _StackDumper(yaml.SafeDumper):
    """Block style for multi-line strings, no anchors: a stack file people can read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_StackDumper.add_representer(str, _represent_str)


def dump_stack(model: Mapping[str, Any]) -> str:
    return yaml.dump(dict(model), Dumper=_StackDumper, sort_keys=False, width=4096, allow_unicode=True)


def parse_env_file(text: str) -> dict[str, str]:
    """The KEY=VALUE lines of a rendered .env file."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _header(config: StackConfig) -> str:
    return (
        f"# Rendered by difystack {__version__} from templates/compose/ for Docker Swarm "
        "(deploy.engine: swarm).\n"
        f'# Stack "{config.name}": `difystack up` deploys it stage by stage (x-difystack.stages) after\n'
        "# creating its Swarm secrets; nothing secret is written below.\n"
    )


def render_swarm_project(
    config: StackConfig,
    secrets: Mapping[str, str],
    *,
    gpu: bool,
    config_dir: Path,
    cuda_flavour: str = "cuda-12",
    processes: Mapping[str, Process] | None = None,
) -> tuple[list[RenderedFile], list[SwarmSecret]]:
    """The project's files and the Swarm secrets its stack file names."""
    compose_files = render_project(config, secrets, gpu=gpu, config_dir=config_dir, cuda_flavour=cuda_flavour)
    by_path = {rendered.path: rendered.content for rendered in compose_files}
    transform = StackTransform(
        config,
        parse_env_file(by_path[ENV_FILE]),
        by_path,
        official_processes() if processes is None else processes,
        gpu,
    )
    stack = transform.run(yaml.safe_load(by_path[COMPOSE_FILE]))
    files = [RenderedFile(STACK_FILE, _header(config) + dump_stack(stack.model))]
    files += [rendered for rendered in compose_files if rendered.path not in _COMPOSE_ONLY]
    return files, stack.secrets


def render_for_engine(
    config: StackConfig,
    secrets: Mapping[str, str],
    *,
    gpu: bool,
    config_dir: Path,
    cuda_flavour: str = "cuda-12",
    processes: Mapping[str, Process] | None = None,
) -> list[RenderedFile]:
    """The project files for the stack's ``deploy.engine``."""
    if config.deploy.engine == "swarm":
        files, _ = render_swarm_project(
            config, secrets, gpu=gpu, config_dir=config_dir, cuda_flavour=cuda_flavour, processes=processes
        )
        return files
    return render_project(config, secrets, gpu=gpu, config_dir=config_dir, cuda_flavour=cuda_flavour)
