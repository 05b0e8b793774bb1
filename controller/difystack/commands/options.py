"""Options shared by the commands that work on a stack."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from difystack.stack import Stack
from difystack.xinference_login import XinferenceLogin

F = TypeVar("F", bound=Callable[..., Any])


def stack_options(func: F) -> F:
    """--config and --set, shared by every command that works on a stack."""
    func = click.option(
        "--set",
        "assignments",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one setting (dotted path, YAML value), e.g. --set dify.port=8081.",
    )(func)
    func = click.option(
        "-c",
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Stack file (default: $DIFYSTACK_CONFIG, ./difystack.yaml, or the built-in stack).",
    )(func)
    return func


def engine_option(func: F) -> F:
    """--engine, for the commands that start, inspect or remove a stack."""
    return click.option(
        "--engine",
        type=click.Choice(["compose", "swarm"]),
        default=None,
        help="compose (this Docker engine) or swarm (`docker stack deploy`); default: deploy.engine.",
    )(func)


def load_stack(config_file: Path | None, assignments: tuple[str, ...], engine: str | None = None) -> Stack:
    if engine:  # the last layer, above --set
        assignments = (*assignments, f"deploy.engine={engine}")
    stack = Stack.load(config_file, assignments)
    xinference = stack.config.xinference
    if xinference.enabled and xinference.external is not None:
        # An Xinference started elsewhere: its admin login may come from DIFYSTACK_XINFERENCE_*.
        login = XinferenceLogin.from_environment()
        if login.secrets():
            stack.paths.ensure_root()
            login.store(stack.secrets_store)
    return stack
