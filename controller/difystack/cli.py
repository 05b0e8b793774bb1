"""The ``difystack`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from difystack import __version__, console
from difystack.commands.options import engine_option, load_stack, stack_options
from difystack.errors import DifystackError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="difystack")
def cli() -> None:
    """Dify + Xinference + LocalAI on one Compose network, models deployed and registered in Dify."""


@cli.command()
@stack_options
@engine_option
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
    config_file: Path | None,
    assignments: tuple[str, ...],
    engine: str | None,
    out_dir: Path | None,
    placeholder_secrets: bool,
) -> None:
    """Write a self-contained project: a compose project, or a stack file for a swarm."""
    stack = load_stack(config_file, assignments, engine)
    swarm = stack.config.deploy.engine == "swarm"
    processes = None
    if swarm:
        from difystack.swarm.lifecycle import stack_processes

        processes = stack_processes(stack)
    project = stack.render(out_dir, placeholder_secrets=placeholder_secrets, processes=processes)
    console.out.print(f"Rendered stack [bold]{escape(stack.name)}[/] into {escape(str(project))}")
    if not placeholder_secrets:
        console.out.print(f"Secrets: {escape(str(stack.paths.secrets))} (mode 0600, never printed)")
    if swarm:
        console.out.print("Deploy it with: difystack up --engine swarm (creates its Swarm secrets first)")
    else:
        console.out.print(f"Run it with: docker compose --project-directory {escape(str(project))} up -d")


@cli.command()
@stack_options
@engine_option
@click.option(
    "--timeout",
    type=float,
    default=1800.0,
    show_default=True,
    help="Give up on a service after this many seconds.",
)
@click.option(
    "--stall-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Give up on a service whose state has not changed for this many seconds.",
)
@click.option(
    "--force-recreate",
    is_flag=True,
    help="Recreate every container even if nothing changed (volumes and models are kept).",
)
@click.option(
    "--verify", "then_verify", is_flag=True, help="Then run `difystack verify`: every model through Dify."
)
def up(
    config_file: Path | None,
    assignments: tuple[str, ...],
    engine: str | None,
    timeout: float,
    stall_timeout: float,
    force_recreate: bool,
    then_verify: bool,
) -> None:
    """Render, start and wait for the whole stack (re-running converges, nothing is lost)."""
    from difystack.engines import lifecycle_for
    from difystack.readiness import Timeouts

    stack = load_stack(config_file, assignments, engine)
    lifecycle = lifecycle_for(stack, console.out, console.err)
    result = lifecycle.up(
        Timeouts(total=timeout, stall=min(stall_timeout, timeout)), force_recreate=force_recreate
    )
    lifecycle.print_summary(result)
    if then_verify:
        from difystack.commands.verify import print_rows, raise_for_failures, verify_stack
        from difystack.endpoints import stack_endpoints

        rows = verify_stack(stack, stack_endpoints(stack.config))
        print_rows(rows, f"verify: stack {stack.name}")
        raise_for_failures(rows)


@cli.command()
@stack_options
@engine_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_file: Path | None, assignments: tuple[str, ...], engine: str | None, as_json: bool) -> None:
    """Show every service's container (or swarm task) state and health."""
    import json

    from rich.table import Table

    from difystack.engines import lifecycle_for

    report = lifecycle_for(load_stack(config_file, assignments, engine), console.out, console.err).status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    on_swarm = " (swarm)" if report.get("engine") == "swarm" else ""
    table = Table(title=f"stack {report['stack']}{on_swarm}", title_justify="left")
    for column in ("service", "state", "health", "ports"):
        table.add_column(column)
    for service in report["services"]:
        style = "green" if service["ready"] else "red"
        table.add_row(
            service["service"],
            f"[{style}]{service['state']}[/]",
            service["health"] or "-",
            ", ".join(service["ports"]) or "-",
        )
    console.out.print(table)
    if not report["services"]:
        console.out.print("no containers (run `difystack up`)")


@cli.command()
@stack_options
@engine_option
@click.argument("service", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@click.option("--tail", type=int, default=None, help="Only the last N lines of each service.")
def logs(
    config_file: Path | None,
    assignments: tuple[str, ...],
    engine: str | None,
    service: str | None,
    follow: bool,
    tail: int | None,
) -> None:
    """Show the logs of one service, or of all of them."""
    from difystack.engines import project_for

    project = project_for(load_stack(config_file, assignments, engine))
    project.require_rendered()
    if service is not None and service not in project.services():
        raise DifystackError(f"no service named {service!r}; known: {', '.join(project.services())}")
    for chunk in project.stream_logs(service, follow=follow, tail=tail):
        click.echo(chunk, nl=False)


@cli.command()
@stack_options
@engine_option
@click.option(
    "-v", "--volumes", is_flag=True, help="Also delete the data volumes (Dify database, models...)."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deleting volumes.")
def down(
    config_file: Path | None, assignments: tuple[str, ...], engine: str | None, volumes: bool, yes: bool
) -> None:
    """Stop and remove the containers (or the swarm stack); data volumes are kept unless --volumes."""
    from difystack.engines import lifecycle_for

    stack = load_stack(config_file, assignments, engine)
    lifecycle = lifecycle_for(stack, console.out, console.err)
    if volumes and not yes:
        lifecycle.project.require_rendered()
        doomed = lifecycle.project.volumes()
        listing = ", ".join(doomed) or "none"
        if not sys.stdin.isatty():
            raise DifystackError(
                f"--volumes deletes data ({listing}) and needs confirmation", hint="add --yes to confirm"
            )
        click.confirm(f"Delete the volumes of stack {stack.name} ({listing})? This destroys data", abort=True)
    removed = lifecycle.down(volumes=volumes)
    console.out.print(f"Stack {escape(stack.name)} is down.")
    if volumes:
        console.out.print(f"Deleted volumes: {escape(', '.join(removed) or 'none')}")
    else:
        console.out.print("Volumes kept (Dify database, models); `difystack up` brings everything back.")


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


@secrets.command("set")
@stack_options
@click.argument("name")
def secrets_set(config_file: Path | None, assignments: tuple[str, ...], name: str) -> None:
    """Replace one secret with a value read from stdin (e.g. the admin password you changed in Dify)."""
    stack = load_stack(config_file, assignments)
    values = stack.secrets()
    if name not in values:
        raise DifystackError(f"no secret named {name}; known: {', '.join(sorted(values))}")
    if sys.stdin.isatty():
        value = click.prompt(f"New value for {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.readline().rstrip("\n")
    if not value:
        raise DifystackError(f"empty value for {name}; nothing changed")
    stack.secrets_store.set(name, value)
    console.out.print(f"{escape(name)} updated in {escape(str(stack.paths.secrets))}")


@cli.command("config")
@stack_options
def show_config(config_file: Path | None, assignments: tuple[str, ...]) -> None:
    """Print the merged configuration (defaults < file < environment < --set)."""
    import yaml

    stack = load_stack(config_file, assignments)
    source = str(stack.stack_file) if stack.stack_file else "built-in defaults"
    click.echo(f"# stack file: {source}")
    click.echo(yaml.safe_dump(stack.config.model_dump(mode="json", by_alias=True), sort_keys=False))


base_image_option = click.option(
    "--base-image",
    default=None,
    metavar="IMAGE",
    help="Image with python3 to build FROM (default: python:3.11-slim, or $DIFYSTACK_STANDIN_BASE).",
)


@cli.group()
def standins() -> None:
    """Locally built images that stand in for images that cannot be pulled (tests, CI, offline)."""


@standins.command("build")
@base_image_option
@click.option(
    "--infra",
    is_flag=True,
    help="Also build PostgreSQL/Redis/nginx/squid/busybox stand-ins (needs the offline base image).",
)
@click.option(
    "--plugin-packages",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="A directory of .difypkg files: the plugin-daemon stand-in runs them unmodified and the api"
    " stand-in's marketplace serves them (or $DIFYSTACK_PLUGIN_PACKAGES; needed for those two).",
)
@click.option(
    "--plugin-base",
    default=None,
    metavar="IMAGE",
    help="Image with Python >= 3.12 for that stand-in (default python:3.12-slim,"
    " or $DIFYSTACK_STANDIN_PLUGIN_BASE).",
)
@click.option("--force", is_flag=True, help="Rebuild even when the images are up to date.")
def standins_build(
    base_image: str | None, infra: bool, plugin_packages: Path | None, plugin_base: str | None, force: bool
) -> None:
    """Build the stand-in images and print the `images:` section that uses them."""
    import yaml

    from difystack import settings
    from difystack.standins import StandinBuilder, describe

    packages = plugin_packages or (Path(p) if (p := settings.PLUGIN_PACKAGES.read()) else None)
    builder = StandinBuilder(progress=_print_build_step)
    overrides = builder.build(
        _standin_base(base_image),
        infra=infra,
        force=force,
        plugin_packages=packages,
        plugin_base=plugin_base or settings.STANDIN_PLUGIN_BASE.read(),
    )
    click.echo(yaml.safe_dump(describe(overrides), sort_keys=False), nl=False)


@standins.command("xinference")
@base_image_option
@click.option(
    "--version", "version", default=None, metavar="X.Y.Z", help="Xinference release (default 4.1.0)."
)
@click.option(
    "--ca-bundle",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="PEM certificates the build's pip trusts (for networks that intercept TLS).",
)
@click.option("--force", is_flag=True, help="Rebuild even when the image is up to date.")
def standins_xinference(
    base_image: str | None, version: str | None, ca_bundle: Path | None, force: bool
) -> None:
    """Build a REAL Xinference image (CPU, two small models baked in) and print the stack-file
    sections that run it and deploy those models."""
    import yaml

    from difystack.xinference_image import DEFAULT_VERSION, XinferenceImageBuilder, stack_snippet

    builder = XinferenceImageBuilder(progress=_print_build_step)
    image = builder.build(
        _standin_base(base_image), version or DEFAULT_VERSION, ca_bundle=ca_bundle, force=force
    )
    click.echo(yaml.safe_dump(stack_snippet(image), sort_keys=False), nl=False)


def _print_build_step(message: str) -> None:
    console.err.print(f"  {escape(message)}")


def _standin_base(base_image: str | None) -> str:
    from difystack import settings
    from difystack.standins import DEFAULT_BASE_IMAGE

    return base_image or settings.STANDIN_BASE.read() or DEFAULT_BASE_IMAGE


def _add_model_commands() -> None:
    from difystack.commands.models import models, plan, register
    from difystack.commands.verify import verify
    from difystack.commands.worker import worker

    for command in (plan, models, register, verify, worker):
        cli.add_command(command)


_add_model_commands()


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
        console.error("interrupted; nothing is lost", "run the same command again to continue")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
