"""`difystack verify`: every registered model answers through a Dify app."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from difystack import console
from difystack.commands.options import load_stack, stack_options
from difystack.endpoints import Endpoints, stack_endpoints
from difystack.errors import DifystackError
from difystack.reconcile.converge import Converger
from difystack.stack import Stack
from difystack.verify import Verifier, VerifyRow


def verify_stack(
    stack: Stack, endpoints: Endpoints, on_row: Callable[[VerifyRow], None] | None = None
) -> list[VerifyRow]:
    """Log in to the stack's Dify and verify every model the stack registers there."""
    from difystack.clients.dify_apps import DifyApps

    converger = Converger.for_stack(stack, endpoints)
    if converger.dify is None:
        raise DifystackError("verify: Dify is disabled in this stack (dify.enabled: false)")
    dify = converger.dify
    if dify.console.setup_state() != "finished":
        raise DifystackError(
            f"verify: Dify at {endpoints.dify} is not set up yet",
            hint="run `difystack up` (or `difystack register`) first",
        )
    dify.log_in()
    apps = DifyApps(dify.console)
    try:
        verifier = Verifier(apps, on_row=on_row or (lambda row: None))
        return verifier.run(converger.desired.registrations)
    finally:
        apps.close()


def print_rows(rows: list[VerifyRow], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("model", "server", "path checked", "result", "latency", "tokens"):
        table.add_column(column)
    for row in rows:
        result = "[green]ok[/]" if row.ok else f"[red]failed at {escape(row.hop or '?')}[/]"
        tokens = str(row.tokens) if row.tokens is not None else "-"
        table.add_row(escape(row.model), row.server, escape(row.path), result, f"{row.latency:.2f}s", tokens)
    console.out.print(table)
    for row in rows:
        if not row.ok:
            hop = escape(row.hop or "?")
            console.err.print(
                f"[bold red]{escape(row.model)}[/] failed at the {hop}: {escape(row.detail)}", soft_wrap=True
            )


def raise_for_failures(rows: list[VerifyRow]) -> None:
    failed = [row for row in rows if not row.ok]
    if failed:
        names = ", ".join(f"{row.model} ({row.hop})" for row in failed)
        raise DifystackError(
            f"verify: {len(failed)} of {len(rows)} model(s) failed through Dify: {names}",
            hint="the failing hop is named; `difystack logs <service>` shows its side",
        )


@click.command()
@stack_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--dify-url", help="Verify the Dify at this URL (servers started elsewhere, as `register`).")
def verify(
    config_file: Path | None, assignments: tuple[str, ...], as_json: bool, dify_url: str | None
) -> None:
    """Prove every registered model works through Dify: a chat app answers, a knowledge base retrieves.

    Throwaway apps and knowledge bases are made and deleted again (also after a failure).
    """
    stack = load_stack(config_file, assignments)
    endpoints = stack_endpoints(stack.config)
    if dify_url:
        endpoints = Endpoints(dify_url.rstrip("/"), endpoints.xinference, endpoints.localai)
    rows = verify_stack(stack, endpoints)
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print_rows(rows, f"verify: stack {stack.name}, through {endpoints.dify}")
    raise_for_failures(rows)
