"""`difystack plan`, `difystack models` and `difystack register`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from difystack import console, settings
from difystack.commands.options import load_stack, stack_options
from difystack.endpoints import Endpoints, ServerEndpoint
from difystack.errors import DifystackError
from difystack.progress import WaitView
from difystack.reconcile.context import RunOptions
from difystack.reconcile.converge import Converger, ConvergeResult
from difystack.reconcile.inventory import inventory
from difystack.reconcile.report import Action
from difystack.stack import Stack
from difystack.xinference_login import XinferenceLogin


def plan_actions(stack: Stack) -> list[Action]:
    """What `up` would do now: the parts' one diff, against fresh servers where none answers."""
    actions: list[Action] = []
    if not (stack.paths.project / "docker-compose.yml").exists():
        actions.append(Action("compose", "render-and-start", stack.name, "first `up` of this stack"))
    plan = Converger.for_stack(stack).plan()
    if plan.unreachable:
        services = ", ".join(plan.unreachable)
        verb = "is" if len(plan.unreachable) == 1 else "are"
        actions.append(Action("compose", "start", stack.name, f"{services} {verb} not reachable"))
    return actions + plan.actions


@click.command()
@stack_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan(config_file: Path | None, assignments: tuple[str, ...], as_json: bool) -> None:
    """Print what `difystack up` would change, without changing anything."""
    stack = load_stack(config_file, assignments)
    actions = plan_actions(stack)
    if as_json:
        click.echo(json.dumps([a.as_dict() for a in actions], indent=2))
        return
    if not actions:
        console.out.print(f"Stack {escape(stack.name)} is converged: `up` would change nothing.")
        return
    console.out.print(f"`difystack up` would, for stack {escape(stack.name)}:")
    for action in actions:
        console.out.print(f"  {escape(str(action))}")


@click.command()
@stack_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(config_file: Path | None, assignments: tuple[str, ...], as_json: bool) -> None:
    """List every model: server, UID, state there, and its registration in Dify."""
    stack = load_stack(config_file, assignments)
    rows = inventory(Converger.for_stack(stack))
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    table = Table(title=f"models of stack {stack.name}", title_justify="left")
    columns = ["server", "UID / name", "type", "state", "Dify model", "in Dify", "default"]
    distributed = any(row.worker for row in rows)
    if distributed:
        columns.insert(4, "worker")
    for column in columns:
        table.add_column(column)
    for row in rows:
        cells = [row.server, row.id, row.type, row.server_state]
        if distributed:
            cells.append(row.worker or "-")
        cells += [row.dify_model or "-", row.dify_state, row.default_for or ""]
        table.add_row(*cells)
    console.out.print(table)


def external(url: str | None, url_from_dify: str | None, what: str) -> ServerEndpoint | None:
    if url is None:
        return None
    from difystack.config_model import ExternalServer

    try:
        server = ExternalServer(url=url, url_from_dify=url_from_dify)
    except ValueError as exc:
        raise DifystackError(f"--{what}-url: {exc}") from None
    return ServerEndpoint(server.url, server.dify_url, external=True)


@click.command()
@click.option(
    "--dify-url", required=True, help="Dify's base URL as this machine reaches it (e.g. http://localhost)."
)
@click.option("--xinference-url", help="Xinference as this machine reaches it (e.g. http://127.0.0.1:9997).")
@click.option(
    "--xinference-url-from-dify", help="Xinference as Dify's containers reach it (derived when omitted)."
)
@click.option("--localai-url", help="LocalAI as this machine reaches it.")
@click.option("--localai-url-from-dify", help="LocalAI as Dify's containers reach it (derived when omitted).")
@click.option("--admin-email", help="Dify admin email (default: dify.admin.email of the stack file).")
@click.option(
    "--xinference-username",
    envvar=settings.XINFERENCE_USERNAME.name,
    help="Xinference admin account (when its accounts are on).",
)
@click.option(
    "--xinference-password", envvar=settings.XINFERENCE_PASSWORD.name, help="That account's password."
)
@click.option(
    "--xinference-token", envvar=settings.XINFERENCE_TOKEN.name, help="An Xinference admin access token."
)
@click.option(
    "--xinference-api-key",
    envvar=settings.XINFERENCE_API_KEY.name,
    help="An Xinference API key for Dify (made with the admin login when omitted).",
)
@click.option(
    "--xinference-setup-token",
    envvar=settings.XINFERENCE_SETUP_TOKEN.name,
    help="The one-time token a new Xinference printed: difystack creates its admin with it.",
)
@stack_options
def register(
    dify_url: str,
    xinference_url: str | None,
    xinference_url_from_dify: str | None,
    localai_url: str | None,
    localai_url_from_dify: str | None,
    admin_email: str | None,
    xinference_username: str | None,
    xinference_password: str | None,
    xinference_token: str | None,
    xinference_api_key: str | None,
    xinference_setup_token: str | None,
    config_file: Path | None,
    assignments: tuple[str, ...],
) -> None:
    """Deploy the declared models on servers started elsewhere and register them in that Dify.

    The admin password is read from $DIFYSTACK_DIFY_ADMIN_PASSWORD; when Dify is not set up
    yet, difystack creates the admin with a generated password kept in the stack's secrets.
    """
    extra = list(assignments)
    extra.append(
        f"xinference.external.url={xinference_url}" if xinference_url else "xinference.enabled=false"
    )
    extra.append(f"localai.external.url={localai_url}" if localai_url else "localai.enabled=false")
    if admin_email:
        extra.append(f"dify.admin.email={admin_email}")
    stack = Stack.load(config_file, extra)
    login = XinferenceLogin(
        xinference_username, xinference_password, xinference_token, xinference_api_key, xinference_setup_token
    )
    _store_given_logins(stack, login if xinference_url is not None else None)
    endpoints = Endpoints(
        dify=dify_url.rstrip("/"),
        xinference=external(xinference_url, xinference_url_from_dify, "xinference"),
        localai=external(localai_url, localai_url_from_dify, "localai"),
    )
    for label, server in (("Xinference", endpoints.xinference), ("LocalAI", endpoints.localai)):
        if server and "host.docker.internal" in server.from_dify:
            console.err.print(
                f"[yellow]Note:[/] Dify will reach {label} as {escape(server.from_dify)}; on Linux "
                "its plugin_daemon needs `extra_hosts: \\[host.docker.internal:host-gateway]` "
                "(built into Docker Desktop)."
            )
    view = WaitView(console.out, f"Registering models in {dify_url}")
    from difystack.lifecycle import StepRows

    converger = Converger.for_stack(stack, endpoints, RunOptions(report=StepRows(view)))
    with view.live():
        result = converger.run()
    converger.save_state()
    _report_registration(stack, result)


def _store_given_logins(stack: Stack, xinference: XinferenceLogin | None) -> None:
    """The Dify passwords from the environment and the Xinference login given, into the secrets."""
    for setting, name in (
        (settings.DIFY_ADMIN_PASSWORD, "admin_password"),
        (settings.DIFY_INIT_PASSWORD, "init_password"),
    ):
        value = setting.read()
        if value:
            stack.secrets()
            stack.secrets_store.set(name, value)
    if xinference is not None:
        stack.secrets()
        xinference.store(stack.secrets_store)


def _report_registration(stack: Stack, result: ConvergeResult) -> None:
    for failure in result.failures:
        console.err.print(
            f"\n[bold red]{escape(failure.step)}[/] failed: {escape(failure.message)}", soft_wrap=True
        )
        if failure.hint:
            console.err.print(f"  hint: {escape(failure.hint)}")
    if len(result.failures) == 1:
        (failure,) = result.failures
        raise DifystackError(
            f"could not register: {failure.step}: {failure.message}",
            hint=failure.hint or "fix the cause and run the same command again",
        )
    if result.failures:
        raise DifystackError(
            f"could not register: {', '.join(f.step for f in result.failures)}",
            hint="fix the cause and run the same command again; finished steps are not redone",
        )
    console.out.print(f"\n[bold green]Done.[/] {len(result.actions)} change(s).")
    for action in result.actions:
        console.out.print(f"  {escape(str(action))}")
    console.out.print(
        f"Admin password: `difystack secrets show admin_password` ({escape(str(stack.paths.secrets))})"
    )
