"""`difystack worker`: an Xinference worker on this machine for a stack's supervisor on another."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from difystack import console
from difystack.cluster_config import WorkerConfig, check_worker_name
from difystack.errors import ConfigError, DifystackError
from difystack.paths import difystack_home
from difystack.render import lan_address
from difystack.worker_project import WorkerPaths, load_settings, worker_config

F = TypeVar("F", bound=Callable[..., Any])


def name_option(func: F) -> F:
    return click.option(
        "--name",
        default=None,
        help="The worker's name, as the main stack's xinference.external_workers declares it "
        "(default: the only worker on this machine).",
    )(func)


def worker_options(func: F) -> F:
    """The settings of the worker's project; omitted ones come from the worker's last start."""
    options = [
        click.option(
            "--supervisor", help="The supervisor's Xinference API: HOST[:PORT] (port 9997 if omitted)."
        ),
        click.option(
            "--address",
            help="This machine's IP address, where the supervisor connects back to the worker "
            "(its ports are published there; default: the address of this machine's default route).",
        ),
        click.option(
            "--cpu", "cpu", flag_value=True, default=None, help="Run Xinference's CPU image (no GPU)."
        ),
        click.option(
            "--gpu", "cpu", flag_value=False, help="Run Xinference's NVIDIA GPU image (the default)."
        ),
        click.option("--image", help="Xinference image to run (default: xprobe/xinference:<version>[-cpu])."),
        click.option(
            "--version", "version", help="Xinference release (default v4.1.0; match the supervisor's)."
        ),
        click.option("--worker-port", type=int, help="The worker's own port (default 30001)."),
        click.option(
            "--model-ports", metavar="FIRST-LAST", help="Ports of the model processes (default 30100-30131)."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return name_option(func)


def _existing_workers() -> list[str]:
    home = difystack_home()
    if not home.is_dir():
        return []
    return sorted(
        p.name.removeprefix("worker.") for p in home.glob("worker.*") if (p / "worker.yaml").is_file()
    )


def _chosen_name(name: str | None) -> str:
    """The worker named (checked before it becomes a path), or the only one on this machine."""
    if name:
        try:
            return check_worker_name(name)
        except ValueError as exc:
            raise ConfigError(f"--name: {exc}") from None
    existing = _existing_workers()
    if len(existing) == 1:
        return existing[0]
    listing = ", ".join(existing) if existing else "none on this machine"
    raise DifystackError(f"--name: which worker? ({listing})")


def resolve_worker(name: str | None, **given: Any) -> tuple[WorkerPaths, WorkerConfig]:
    """The worker's settings: its last start's, overridden by the options given now."""
    settings: dict[str, Any] = {}
    if name or not given.get("supervisor"):
        chosen = _chosen_name(name)
        saved = WorkerPaths.for_worker(chosen).settings
        settings = load_settings(WorkerPaths.for_worker(chosen)).as_settings() if saved.is_file() else {}
        settings["name"] = chosen
    cpu = given.pop("cpu", None)
    if cpu is not None:
        settings["gpu"] = not cpu
    settings.update({key: value for key, value in given.items() if value is not None})
    if not settings.get("address"):
        settings["address"] = lan_address() or "(this machine's address: give --address)"
    missing = [
        flag for flag, key in (("--supervisor", "supervisor"), ("--name", "name")) if not settings.get(key)
    ]
    if missing:
        raise DifystackError(
            f"{' and '.join(missing)}: needed the first time a worker starts on this machine"
        )
    worker = worker_config(settings)
    return WorkerPaths.for_worker(worker.name), worker


def _lifecycle(paths: WorkerPaths, worker: WorkerConfig) -> Any:
    from difystack.worker_lifecycle import WorkerLifecycle

    return WorkerLifecycle(paths, worker, console.out, console.err)


@click.group()
def worker() -> None:
    """An Xinference worker on this machine that joins a stack's supervisor on another machine."""


@worker.command("render")
@worker_options
@click.option(
    "-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Write the project here."
)
def worker_render(name: str | None, out_dir: Path | None, **given: Any) -> None:
    """Write the worker's compose project (`docker compose up -d` runs it)."""
    from difystack.render import write_project
    from difystack.worker_project import render_worker, save_settings, supervisor_ip

    paths, chosen = resolve_worker(name, **given)
    files = render_worker(chosen, supervisor_ip(chosen))
    target = out_dir or paths.project
    if out_dir is None:
        save_settings(paths, chosen)
    write_project(files, target)
    console.out.print(f"Rendered worker [bold]{escape(chosen.name)}[/] into {escape(str(target))}")
    console.out.print(
        f"Published on {escape(chosen.address)}: {chosen.worker_port} (the worker) and {chosen.model_ports} "
        "(its models); the supervisor must reach them"
    )
    console.out.print(f"Run it with: docker compose --project-directory {escape(str(target))} up -d")


@worker.command("up")
@worker_options
@click.option(
    "--timeout", type=float, default=600.0, show_default=True, help="Give up joining after this long."
)
def worker_up(name: str | None, timeout: float, **given: Any) -> None:
    """Render, start, and wait until the supervisor lists this worker."""
    paths, chosen = resolve_worker(name, **given)
    lifecycle = _lifecycle(paths, chosen)
    status = lifecycle.up(timeout)
    console.out.print(
        f"\n[bold green]Worker {escape(chosen.name)} joined[/] as {escape(status.joined_as or '?')}."
    )
    console.out.print(f"  supervisor  {escape(chosen.supervisor)}")
    console.out.print(f"  image       {escape(chosen.resolved_image())}")
    console.out.print(f"  ports       {escape(lifecycle.ports_text())} on {escape(chosen.address)}")
    console.out.print("  stop it with `difystack worker down` (the downloaded models are kept)")


@worker.command("status")
@name_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def worker_status(name: str | None, as_json: bool) -> None:
    """The worker's container and whether the supervisor lists it."""
    paths = WorkerPaths.for_worker(_chosen_name(name))
    chosen = load_settings(paths)
    status = _lifecycle(paths, chosen).status()
    report = {"worker": chosen.name, "supervisor": chosen.supervisor, **status.as_dict()}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    container = status.container
    state = f"{container.state}, {container.health or 'no healthcheck'}" if container else "no container"
    console.out.print(f"worker {escape(chosen.name)}: {escape(state)}")
    if status.supervisor_error:
        console.out.print(
            f"  supervisor {escape(chosen.supervisor)}: not answering ({escape(status.supervisor_error)})"
        )
    elif status.joined_as:
        console.out.print(f"  joined {escape(chosen.supervisor)} as {escape(status.joined_as)}")
    else:
        console.out.print(f"  [red]not listed[/] by the supervisor at {escape(chosen.supervisor)}")
    console.out.print(f"  ports {escape(chosen.address)}: {chosen.worker_port}, {escape(chosen.model_ports)}")


@worker.command("logs")
@name_option
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
def worker_logs(name: str | None, follow: bool, tail: int | None) -> None:
    """The worker's log."""
    from difystack.worker_lifecycle import SERVICE

    paths = WorkerPaths.for_worker(_chosen_name(name))
    lifecycle = _lifecycle(paths, load_settings(paths))
    for chunk in lifecycle.project.stream_logs(SERVICE, follow=follow, tail=tail):
        click.echo(chunk, nl=False)


@worker.command("down")
@name_option
@click.option("-v", "--volumes", is_flag=True, help="Also delete the worker's volume (downloaded models).")
@click.option("-y", "--yes", is_flag=True, help="Do not ask before deleting the volume.")
def worker_down(name: str | None, volumes: bool, yes: bool) -> None:
    """Stop and remove the worker; the supervisor drops it from its list."""
    chosen_name = _chosen_name(name)
    paths = WorkerPaths.for_worker(chosen_name)
    lifecycle = _lifecycle(paths, load_settings(paths))
    if volumes and not yes:
        if not sys.stdin.isatty():
            raise DifystackError(
                "--volumes deletes the downloaded models and needs confirmation", hint="add --yes"
            )
        click.confirm(f"Delete the volume of worker {chosen_name} (downloaded models)?", abort=True)
    removed = lifecycle.down(volumes)
    console.out.print(f"Worker {escape(chosen_name)} is down.")
    if volumes:
        console.out.print(f"Deleted volumes: {escape(', '.join(removed) or 'none')}")
