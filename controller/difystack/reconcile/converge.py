"""Converge a stack's models: one concurrent task graph over Xinference, LocalAI and Dify.

    xinference ready --> model A launch/verify --\\
                     --> model B launch/verify ---+--> register A, B --\\
    localai ready    --> model C install/verify --+--> register C ------+--> default models
    dify ready --> admin --> plugins ------------/

Waiting for Dify overlaps with deploying models; launches run in parallel up to the server's
limit. A failed step skips only what depends on it, and a re-run repeats only what is missing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from difystack.clients.dify import DifyConsole
from difystack.clients.http import CallJournal, HttpError
from difystack.clients.localai import LocalAIClient
from difystack.clients.xinference import XinferenceClient
from difystack.config_model import StackConfig
from difystack.errors import DifystackError
from difystack.reconcile.desired import DesiredState, LocalAIDeployment, Registration, XinferenceDeployment
from difystack.reconcile.dify_part import (
    ADMIN_STEP,
    DEFAULTS_STEP,
    PLUGINS_STEP,
    AdminCredentials,
    DifyPart,
    SessionStore,
    registration_step,
)
from difystack.reconcile.localai_part import LocalAIPart
from difystack.reconcile.localai_part import step_name as localai_step
from difystack.reconcile.report import Action, ActionLog, Reporter, StepFailed, silent
from difystack.reconcile.xinference_part import XinferencePart
from difystack.reconcile.xinference_part import step_name as xinference_step
from difystack.taskgraph import DependencyFailed, TaskGraph
from difystack.xinference_login import PASSWORD_SECRET, SETUP_TOKEN_SECRET, TOKEN_SECRET, USERNAME_SECRET

XINFERENCE_READY = "xinference ready"
LOCALAI_READY = "localai ready"
DIFY_READY = "dify ready"
XINFERENCE_AUTH = "xinference auth"
MISSING_XINFERENCE_LOGIN = (
    "Xinference has accounts on: give its admin login with --xinference-username/--xinference-password "
    "(DIFYSTACK_XINFERENCE_USERNAME/DIFYSTACK_XINFERENCE_PASSWORD), a token with --xinference-token "
    "(DIFYSTACK_XINFERENCE_TOKEN) or an API key with --xinference-api-key (DIFYSTACK_XINFERENCE_API_KEY)"
)
MISSING_XINFERENCE_SETUP_TOKEN = (
    "Xinference has accounts on but no admin yet: give the setup token its log printed with "
    "--xinference-setup-token (DIFYSTACK_XINFERENCE_SETUP_TOKEN)"
)
SETUP_TOKEN = re.compile(r"Setup token:\s*(\S+)")


class Gate:
    """Opens when a server is ready; fails (with a reason) when it never will be."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._event = threading.Event()
        self.error: str | None = None

    def open(self) -> None:
        self._event.set()

    def fail(self, reason: str) -> None:
        if not self._event.is_set():
            self.error = reason
            self._event.set()

    def wait(self) -> None:
        self._event.wait()
        if self.error is not None:
            raise StepFailed(self.name, self.error)

    @classmethod
    def opened(cls, name: str) -> Gate:
        gate = cls(name)
        gate.open()
        return gate


@dataclass(frozen=True)
class ServerUrls:
    """Where difystack reaches each server (None: the part is not used)."""

    dify: str | None
    xinference: str | None
    localai: str | None


@dataclass
class Failure:
    step: str
    message: str
    hint: str | None = None


@dataclass
class ConvergeResult:
    actions: list[Action]
    failures: list[Failure]
    verified: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class Secrets:
    """The secrets converge reads and (for Xinference keys) writes back."""

    values: dict[str, str]
    save: Callable[[str, str], None] = lambda name, value: None


class Converger:
    def __init__(
        self,
        config: StackConfig,
        desired: DesiredState,
        urls: ServerUrls,
        secrets: Secrets,
        config_dir: Path,
        *,
        sessions: SessionStore | None = None,
        fingerprints: dict[str, str] | None = None,
        gates: dict[str, Gate] | None = None,
        report: Reporter = silent,
        journal: CallJournal | None = None,
        xinference_logs: Callable[[], str] | None = None,
        timeout: float = 3600.0,
        stall_timeout: float = 600.0,
        on_interrupt: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.on_interrupt = on_interrupt
        self.cancel = threading.Event()
        self.desired = desired
        self.urls = urls
        self.secrets = secrets
        self.gates = gates or {}
        self.report = report
        self.journal = journal
        self.log = ActionLog()
        self.xinference_logs = xinference_logs
        self.verified: dict[str, str] = {}
        self._verified_lock = threading.Lock()
        self.xinference = self.localai = None
        self.dify = None
        if urls.xinference and desired.xinference:
            client = XinferenceClient(urls.xinference, journal=journal)
            self.xinference = XinferencePart(
                client, desired.xinference, report, self.log, timeout, stall_timeout
            )
        if urls.localai and desired.localai:
            client_l = LocalAIClient(urls.localai, journal=journal)
            self.localai = LocalAIPart(client_l, desired.localai, report, self.log, timeout, stall_timeout)
            self.localai.cancel = self.cancel
        if urls.dify and desired.registrations:
            admin = AdminCredentials(
                config.dify.admin,
                secrets.values["admin_password"],
                secrets.values["init_password"] if config.dify.protect_setup else None,
            )
            console = DifyConsole(urls.dify, journal=journal)
            self.dify = DifyPart(
                console,
                desired,
                admin,
                config.dify.plugins,
                config_dir,
                sessions,
                fingerprints,
                report,
                self.log,
            )

    # -- planning -------------------------------------------------------------------------------

    def plan(self) -> list[Action]:
        """What a converge run would do now (reads only)."""
        actions: list[Action] = []
        if self.xinference:
            account = self.open_xinference_for_reading()
            actions += account
            if lacks_xinference_admin(account):
                actions += self.xinference.plan_unreadable()
            else:
                actions += self.xinference.plan()
        if self.localai:
            actions += self.localai.plan()
        if self.dify:
            console = self.dify.console
            if console.setup_state() != "finished":
                actions.append(Action("dify", "create-admin", self.config.dify.admin.email))
                actions += [
                    Action("dify", "install-plugins", p, self.config.dify.plugins.source)
                    for p in self.desired.plugins
                ]
                actions += [Action("dify", "create-credential", r.key) for r in self.desired.registrations]
                if self.desired.default_models:
                    actions.append(Action("dify", "set-default-models", ""))
                return actions
            self.dify.ensure_admin()
            actions += [
                Action("dify", "install-plugins", p, self.config.dify.plugins.source)
                for p in self.dify.missing_plugins()
            ]
            for registration in self.desired.registrations:
                actions += self._plan_registration(registration)
            if self.desired.default_models and self.dify.wrong_defaults():
                actions.append(Action("dify", "set-default-models", ""))
        return actions

    def _plan_registration(self, registration: Registration) -> list[Action]:
        assert self.dify is not None
        try:
            return self.dify.plan_registration(self._with_secrets(registration))
        except HttpError as exc:
            if exc.status in (400, 404):  # provider not installed yet: everything is to create
                return [Action("dify", "create-credential", registration.key)]
            raise

    # -- running --------------------------------------------------------------------------------

    def graph(self) -> TaskGraph:
        graph = TaskGraph(
            limits={"xinference-launch": self.config.xinference.max_concurrent_launches},
            on_interrupt=self._interrupted,
        )
        model_tasks: dict[str, str] = {}
        # Steps that check what the user gave: nothing changes anywhere until they pass.
        input_checks: list[str] = []
        if self.xinference:
            ready = graph.add(XINFERENCE_READY, self._gate_then(XINFERENCE_READY, lambda: None))
            first = ready
            if self._bootstraps_xinference_accounts():
                first = graph.add(XINFERENCE_AUTH, self._xinference_auth, after=[ready])
                if self._external_xinference:  # its login comes from the user
                    input_checks.append(first)
            for deployment in self.desired.xinference:
                name = xinference_step(deployment)
                graph.add(name, self._deploy_xinference(deployment), after=[first], group="xinference-launch")
                model_tasks[f"xinference/{deployment.uid}"] = name
        if self.localai:
            ready = graph.add(LOCALAI_READY, self._gate_then(LOCALAI_READY, lambda: None))
            for deployment_l in self.desired.localai:
                name = localai_step(deployment_l)
                graph.add(name, self._deploy_localai(deployment_l), after=[ready, *input_checks])
                model_tasks[f"localai/{deployment_l.name}"] = name
        if self.dify:
            ready = graph.add(DIFY_READY, self._gate_then(DIFY_READY, lambda: None))
            admin = graph.add(ADMIN_STEP, self.dify.ensure_admin, after=[ready, *input_checks])
            plugins = graph.add(PLUGINS_STEP, self.dify.ensure_plugins, after=[admin])
            registrations = []
            for registration in self.desired.registrations:
                after = [plugins]
                model_task = model_tasks.get(f"{registration.provider}/{registration.server_id}")
                if model_task:
                    after.append(model_task)
                registrations.append(
                    graph.add(registration_step(registration), self._register(registration), after=after)
                )
            if self.desired.default_models:
                graph.add(DEFAULTS_STEP, self.dify.ensure_defaults, after=registrations or [plugins])
        return graph

    def run(self) -> ConvergeResult:
        results = self.graph().run()
        failures = []
        for step, exc in results.items():
            if exc is None or isinstance(exc, DependencyFailed):
                continue
            failures.append(_failure(step, exc))
            self.report(step, "failed", failures[-1].message)
        for step, exc in results.items():
            if isinstance(exc, DependencyFailed):
                self.report(step, "cancelled", str(exc))
        return ConvergeResult(list(self.log.done), failures, dict(self.verified))

    def _interrupted(self) -> None:
        self.cancel.set()
        for gate in self.gates.values():
            gate.fail("interrupted")
        if self.on_interrupt is not None:
            self.on_interrupt()

    # -- tasks ----------------------------------------------------------------------------------

    def _gate_then(self, name: str, then: Callable[[], Any]) -> Callable[[], None]:
        def task() -> None:
            gate = self.gates.get(name)
            if gate is not None:
                gate.wait()
            then()

        return task

    def _deploy_xinference(self, deployment: Any) -> Callable[[], None]:
        def task() -> None:
            assert self.xinference is not None
            outcome = self.xinference.converge(deployment)
            if outcome.launched:
                detail = self.xinference.verify(deployment, outcome.description)
                self._remember(f"xinference/{deployment.uid}", detail)
                self.report(xinference_step(deployment), "ready", f"running, {detail}")

        return task

    def _deploy_localai(self, deployment: Any) -> Callable[[], None]:
        def task() -> None:
            assert self.localai is not None
            if self.localai.converge(deployment):
                detail = self.localai.verify(deployment, self._completion_type(deployment.name))
                self._remember(f"localai/{deployment.name}", detail)
                self.report(localai_step(deployment), "ready", f"installed, {detail}")

        return task

    def _register(self, registration: Registration) -> Callable[[], None]:
        def task() -> None:
            assert self.dify is not None
            self.dify.register(self._with_secrets(registration), lambda: self._verify(registration))

        return task

    def _verify(self, registration: Registration) -> str:
        key = f"{registration.provider}/{registration.server_id}"
        with self._verified_lock:
            if key in self.verified:
                return self.verified[key]
        deployment = self.desired.deployment_of(registration)
        if isinstance(deployment, XinferenceDeployment) and self.xinference:
            detail = self.xinference.verify(deployment)
        elif isinstance(deployment, LocalAIDeployment) and self.localai:
            detail = self.localai.verify(
                deployment, registration.credentials.get("completion_type", "chat_completion")
            )
        else:
            detail = "not deployed by difystack"
        self._remember(key, detail)
        return detail

    def _remember(self, key: str, detail: str) -> None:
        with self._verified_lock:
            self.verified[key] = detail

    def _completion_type(self, name: str) -> str:
        for model in self.config.localai.models:
            if model.name == name:
                return model.completion_type
        return "chat_completion"

    def _with_secrets(self, registration: Registration) -> Registration:
        key = self.secrets.values.get("xinference_api_key")
        uses_accounts = self.config.xinference.auth or self.config.xinference.external is not None
        if registration.provider == "xinference" and uses_accounts and key:
            return replace(registration, credentials={**registration.credentials, "api_key": key})
        return registration

    def _bootstraps_xinference_accounts(self) -> bool:
        """The stack's own Xinference when asked for accounts; an external one always (whether
        its accounts are on is asked of the server)."""
        return self.config.xinference.auth or self.config.xinference.external is not None

    @property
    def _external_xinference(self) -> bool:
        return self.config.xinference.external is not None

    def open_xinference_for_reading(self) -> list[Action]:
        """For reads (plan, models): log in as difystack's Xinference admin when accounts are on.

        Returns the account steps `up` still has to take; with ``create-admin`` among them the
        server's models cannot be read yet.
        """
        assert self.xinference is not None
        client = self.xinference.client
        if not self._bootstraps_xinference_accounts() or not client.auth_enabled():
            return []
        if client.setup_status().get("needs_setup"):
            return [
                Action("xinference", "create-admin", "admin"),
                Action("xinference", "create-api-key", "for Dify"),
            ]
        self._login_xinference_admin()
        if not self.secrets.values.get("xinference_api_key"):
            return [Action("xinference", "create-api-key", "for Dify")]
        return []

    def _login_xinference_admin(self) -> str:
        """Authorise every later call with the admin's token (given, or from logging in)."""
        assert self.xinference is not None
        client = self.xinference.client
        values = self.secrets.values
        admin_token = values.get(TOKEN_SECRET)
        if not admin_token:
            if self._external_xinference and not values.get(USERNAME_SECRET):
                if values.get("xinference_api_key"):
                    admin_token = values["xinference_api_key"]
                else:
                    raise StepFailed(XINFERENCE_AUTH, MISSING_XINFERENCE_LOGIN)
            else:
                username = values.get(USERNAME_SECRET) or "admin"
                admin_token = client.login(username, values[PASSWORD_SECRET])
        client.http.headers["Authorization"] = f"Bearer {admin_token}"
        return admin_token

    def _xinference_auth(self) -> None:
        """Xinference >= 3 with accounts on: create the admin once, then an API key for Dify."""
        assert self.xinference is not None
        client = self.xinference.client
        if not client.auth_enabled():
            return
        status = client.setup_status()
        if status.get("needs_setup"):
            token = self._setup_token()
            username = self.secrets.values.get(USERNAME_SECRET) or "admin"
            client.setup_admin(token, username, self.secrets.values[PASSWORD_SECRET])
            self.secrets.values[USERNAME_SECRET] = username
            self.secrets.save(USERNAME_SECRET, username)
            self.log.add(Action("xinference", "create-admin", "admin"))
        admin_token = self._login_xinference_admin()
        if not self.secrets.values.get("xinference_api_key"):
            key = client.create_api_key(admin_token, f"difystack-{self.config.name}")
            self.secrets.values["xinference_api_key"] = key
            self.secrets.save("xinference_api_key", key)
            self.log.add(Action("xinference", "create-api-key", "for Dify"))
        self.report(XINFERENCE_AUTH, "ready", "admin session and API key")

    def _setup_token(self) -> str:
        if self._external_xinference:
            given = self.secrets.values.get(SETUP_TOKEN_SECRET)
            if not given:
                raise StepFailed(XINFERENCE_AUTH, MISSING_XINFERENCE_SETUP_TOKEN)
            return given
        logs = self.xinference_logs() if self.xinference_logs else ""
        found = SETUP_TOKEN.findall(logs)
        if not found:
            raise StepFailed(
                XINFERENCE_AUTH,
                "Xinference needs its one-time setup token, which was not found in its log",
                hint="see `difystack logs xinference`, or set xinference.auth: false",
            )
        return str(found[-1])


def lacks_xinference_admin(account: list[Action]) -> bool:
    """Whether the account steps still to take (see ``open_xinference_for_reading``) include the
    admin itself: until it exists nothing on the server can be read."""
    return any(action.kind == "create-admin" for action in account)


def _failure(step: str, exc: BaseException) -> Failure:
    if isinstance(exc, StepFailed):
        return Failure(exc.step, exc.reason, exc.hint)
    if isinstance(exc, DifystackError):
        return Failure(step, str(exc), exc.hint)
    return Failure(
        step, f"{exc.__class__.__name__}: {exc}", "this looks like a difystack bug; please report it"
    )
