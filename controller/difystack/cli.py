"""The ``difystack`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from difystack import __version__, console
from difystack.errors import DifystackError
from difystack.stack import Stack

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


def load_stack(config_file: Path | None, assignments: tuple[str, ...]) -> Stack:
    return Stack.load(config_file, assignments)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="difystack")
def cli() -> None:
    """Dify + Xinference + LocalAI on one Compose network, models deployed and registered in Dify."""


@cli.command()
@stack_options
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the compose project to (default: the stack's state directory).",
)
@click.option(
    "--placeholder-secrets",
    is_flag=True,
    help="Write placeholders instead of the stack's secrets (for review or documentation).",
)
def render(
    config_file: Path | None, assignments: tuple[str, ...], out_dir: Path | None, placeholder_secrets: bool
) -> None:
    """Write a self-contained compose project that `docker compose up -d` can run."""
    stack = load_stack(config_file, assignments)
    project = stack.render(out_dir, placeholder_secrets=placeholder_secrets)
    console.out.print(f"Rendered stack [bold]{escape(stack.name)}[/] into {escape(str(project))}")
    if not placeholder_secrets:
        console.out.print(f"Secrets: {escape(str(stack.paths.secrets))} (mode 0600, never printed)")
    console.out.print(f"Run it with: docker compose --project-directory {escape(str(project))} up -d")


@cli.group()
def secrets() -> None:
    """The stack's generated secrets (admin password, keys)."""


@secrets.command("path")
@stack_options
def secrets_path(config_file: Path | None, assignments: tuple[str, ...]) -> None:
    """Print where the secrets file is, without revealing any value."""
    console.out.print(str(load_stack(config_file, assignments).paths.secrets))


@secrets.command("show")
@stack_options
@click.argument("names", nargs=-1)
def secrets_show(config_file: Path | None, assignments: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Reveal secrets (all, or the NAMES given). The only command that prints them."""
    values = load_stack(config_file, assignments).secrets()
    unknown = [n for n in names if n not in values]
    if unknown:
        raise DifystackError(f"no secret named {', '.join(unknown)}; known: {', '.join(sorted(values))}")
    for name in names or sorted(values):
        click.echo(f"{name}={values[name]}")


@cli.command("config")
@stack_options
def show_config(config_file: Path | None, assignments: tuple[str, ...]) -> None:
    """Print the merged configuration (defaults < file < environment < --set)."""
    import yaml

    stack = load_stack(config_file, assignments)
    source = str(stack.stack_file) if stack.stack_file else "built-in defaults"
    click.echo(f"# stack file: {source}")
    click.echo(yaml.safe_dump(stack.config.model_dump(mode="json", by_alias=True), sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="difystack", standalone_mode=False)
    except DifystackError as exc:
        console.error(escape(str(exc)), escape(exc.hint) if exc.hint else None)
        return exc.exit_code
    except click.exceptions.Abort:
        console.err.print("Aborted.")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        console.err.print("Interrupted.")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
