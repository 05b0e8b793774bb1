"""The runtime a stack's ``deploy.engine`` selects: Docker Compose or Docker Swarm."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from difystack.lifecycle import Lifecycle
from difystack.stack import Stack


def lifecycle_for(stack: Stack, out: Console, err: Console) -> Lifecycle:
    if stack.config.deploy.engine == "swarm":
        from difystack.swarm.lifecycle import SwarmLifecycle

        return SwarmLifecycle(stack, out, err)
    return Lifecycle(stack, out, err)


def project_for(stack: Stack) -> Any:
    """The rendered project's runtime: a ComposeProject or a SwarmProject (same interface)."""
    if stack.config.deploy.engine == "swarm":
        from difystack.swarm.runtime import SwarmProject

        return SwarmProject(stack.paths.project, stack.name)
    from difystack.compose_runtime import ComposeProject

    return ComposeProject(stack.paths.project, stack.name)
