"""Xinference: make every declared model run under its UID, launching only what is missing.

A restarted Xinference forgets its running models (it keeps persisted registrations), so a
re-run relaunches exactly those. A model running under the right UID with the right
name/engine/format/size/quantization is left alone; a different model under that UID is
terminated and relaunched. One diff (``diff``) decides, for ``plan``, ``models`` and ``up`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from difystack.clients.http import HttpError
from difystack.clients.xinference import ModelLoading, XinferenceClient, check_launchable
from difystack.reconcile.context import ConvergeContext
from difystack.reconcile.desired import XinferenceDeployment
from difystack.reconcile.report import Action, StepFailed
from difystack.reconcile.server_part import Executors, ServerPart, apply_actions, embedding_size_verified
from difystack.reconcile.xinference_accounts import AccountsView, XinferenceAccounts
from difystack.waits import Probe, WaitStrategy

LAUNCHING_STATES = ("CREATING", "LOADING", "UPDATING")


@dataclass
class ModelOutcome:
    launched: bool
    description: dict[str, Any]


def step_name(deployment: XinferenceDeployment) -> str:
    return f"xinference model {deployment.uid}"


@dataclass(frozen=True)
class Holdings:
    """What the supervisor lists (``running``) and what its workers hold (None: cannot tell)."""

    running: dict[str, dict[str, Any]]
    held: set[str] | None


class XinferenceView(AccountsView, Protocol):
    """What the diff reads of an Xinference: the live server (the part itself) or a fresh one."""

    def running(self, uid: str) -> dict[str, Any] | None: ...

    def lost(self, uid: str) -> bool: ...

    def lost_reason(self, uid: str) -> str: ...

    def launching(self, uid: str) -> bool: ...

    def custom_registered(self, deployment: XinferenceDeployment) -> bool: ...

    def launch_problem(self, deployment: XinferenceDeployment) -> str | None: ...


@dataclass(frozen=True)
class FreshXinference:
    """An Xinference that runs nothing yet: one not started, or one whose accounts are on without
    an admin (nothing can have been deployed on it)."""

    accounts: bool

    def accounts_on(self) -> bool:
        return self.accounts

    def needs_admin(self) -> bool:
        return self.accounts

    def running(self, uid: str) -> dict[str, Any] | None:
        return None

    def lost(self, uid: str) -> bool:
        return False

    def lost_reason(self, uid: str) -> str:
        return ""

    def launching(self, uid: str) -> bool:
        return False

    def custom_registered(self, deployment: XinferenceDeployment) -> bool:
        return False

    def launch_problem(self, deployment: XinferenceDeployment) -> str | None:
        return None


def diff(deployment: XinferenceDeployment, view: XinferenceView) -> list[Action]:
    """What it takes to have ``deployment`` running under its UID."""
    target = deployment.uid
    item = view.running(target)
    if item is None:
        return diff_missing(deployment, view)
    if view.lost(target):
        return [Action("xinference", "relaunch", target, view.lost_reason(target))]
    if deployment.matches(item):
        return []
    return [Action("xinference", "relaunch", target, f"{item.get('model_name')} runs under this UID")]


def diff_missing(deployment: XinferenceDeployment, view: XinferenceView) -> list[Action]:
    """The actions for a UID that runs nothing (any more)."""
    target = deployment.uid
    if view.launching(target):
        return [Action("xinference", "wait", target, "a launch is already in progress")]
    actions = []
    if deployment.custom_spec is not None:
        if not view.custom_registered(deployment):
            actions.append(Action("xinference", "register-custom", deployment.name, _model_uri(deployment)))
    else:
        problem = view.launch_problem(deployment)
        if problem:
            return [Action("xinference", "error", target, problem)]
    actions.append(Action("xinference", "launch", target, _describe_launch(deployment)))
    return actions


class XinferencePart(ServerPart[XinferenceClient, XinferenceDeployment, Holdings]):
    """The live view of the server, its diff, and the executors of its actions."""

    def __init__(
        self, context: ConvergeContext, client: XinferenceClient, deployments: list[XinferenceDeployment]
    ) -> None:
        super().__init__(context, client, deployments)
        self.accounts = XinferenceAccounts(context, client)

    # -- the live view --------------------------------------------------------------------------

    def _holdings(self) -> Holdings:
        return Holdings(self.client.running_models(), self.client.models_held_by_workers())

    def running_models(self) -> dict[str, dict[str, Any]]:
        """GET /v1/models once per run; every model task reads the same snapshot."""
        return self.snapshot(self._holdings).running

    def running(self, uid: str) -> dict[str, Any] | None:
        return self.running_models().get(uid)

    def lost(self, uid: str) -> bool:
        """Listed by the supervisor, held by no worker: its worker restarted and forgot it."""
        held = self.snapshot(self._holdings).held
        if held is None or uid in held or uid not in self.running_models():
            return False
        return not self.launching(uid)

    def lost_reason(self, uid: str) -> str:
        workers = ", ".join(self.workers_of(uid)) or "its worker"
        return f"listed as running, but {workers} no longer holds it (the worker restarted)"

    def launching(self, uid: str) -> bool:
        try:
            instances = self.client.instances(uid)
        except HttpError:
            return False
        return any(str(i.get("status", "")).upper() in LAUNCHING_STATES for i in instances)

    def custom_registered(self, deployment: XinferenceDeployment) -> bool:
        return self.client.registration(deployment.model_type, deployment.name) is not None

    def launch_problem(self, deployment: XinferenceDeployment) -> str | None:
        launch = deployment.launch
        return check_launchable(
            self.client,
            deployment.model_type,
            deployment.name,
            launch.get("model_engine"),
            launch.get("model_format"),
            launch.get("model_size_in_billions"),
            launch.get("quantization"),
        )

    def accounts_on(self) -> bool:
        return self.accounts.accounts_on()

    def needs_admin(self) -> bool:
        return self.accounts.needs_admin()

    def workers_of(self, uid: str) -> list[str]:
        """The worker addresses (host:port) the uid's replicas run on, from its instance rows."""
        addresses: list[str] = []
        for instance in self.client.instances(uid):
            for replica in instance.get("replica_statuses") or []:
                address = replica.get("worker_address") if isinstance(replica, dict) else None
                if address and address not in addresses:
                    addresses.append(str(address))
        return addresses

    def observe(self) -> XinferenceView:
        """What ``plan`` and ``models`` read: the live server, logged in as difystack's admin when
        its accounts are on; a fresh server while it has no admin yet."""
        if self.accounts.accounts_on():
            if self.accounts.needs_admin():
                return FreshXinference(accounts=True)
            self.accounts.log_in()
        return self

    def fresh(self) -> XinferenceView:
        """The server as it will be when it starts (for a plan while it is not reachable)."""
        return FreshXinference(accounts=self.context.config.xinference.auth)

    def diff_all(self, view: XinferenceView) -> list[Action]:
        actions = self.accounts.diff(view)
        for deployment in self.deployments:
            actions += diff(deployment, view)
        return actions

    # -- apply ----------------------------------------------------------------------------------

    def deploy(self, deployment: XinferenceDeployment) -> str | None:
        """The model's step of ``up``; when it was launched now, what proved that it answers."""
        outcome = self.converge(deployment)
        if not outcome.launched:
            return None
        verified = self.verify(deployment, outcome.description)
        self.context.report(step_name(deployment), "ready", f"running, {verified}")
        return verified

    def converge(self, deployment: XinferenceDeployment) -> ModelOutcome:
        step = step_name(deployment)
        actions = diff(deployment, self)
        if not actions:
            self.context.report(step, "ready", "already running")
            return ModelOutcome(False, self.running(deployment.uid) or {})
        apply_actions(self.executors(), deployment, actions)
        self.context.follow(step, LaunchWait(self, deployment))
        description = self._describe(deployment, step)
        self.context.report(step, "ready", "running")
        return ModelOutcome(True, description)

    def executors(self) -> Executors[XinferenceDeployment]:
        return {
            "relaunch": self._relaunch,
            "wait": self._wait,
            "register-custom": self._register_custom,
            "error": self._refuse,
            "launch": self._launch,
        }

    def _relaunch(self, deployment: XinferenceDeployment, action: Action) -> None:
        self.context.report(step_name(deployment), "waiting", f"relaunching: {action.detail}")
        self.client.terminate(deployment.uid)
        self.context.log.add(Action("xinference", "terminate", deployment.uid, action.detail))
        apply_actions(self.executors(), deployment, diff_missing(deployment, self))

    def _wait(self, deployment: XinferenceDeployment, action: Action) -> None:
        self.context.report(step_name(deployment), "waiting", action.detail)

    def _register_custom(self, deployment: XinferenceDeployment, action: Action) -> None:
        step = step_name(deployment)
        self.context.report(step, "waiting", "registering custom model")
        assert deployment.custom_spec is not None
        try:
            self.client.register(deployment.model_type, deployment.custom_spec, persist=True)
        except HttpError as exc:
            raise StepFailed(step, f"registering {deployment.name} failed: {exc.server_message}") from None
        self.context.log.add(action)

    def _refuse(self, deployment: XinferenceDeployment, action: Action) -> None:
        raise StepFailed(
            step_name(deployment), action.detail, hint=f"fix {deployment.field} in the stack file"
        )

    def _launch(self, deployment: XinferenceDeployment, action: Action) -> None:
        step = step_name(deployment)
        self.context.report(step, "waiting", f"launching {action.detail}")
        try:
            self.client.launch(deployment.launch, wait_ready=False)
        except HttpError as exc:
            raise StepFailed(step, f"launch refused: {exc.server_message}") from None
        self.context.log.add(action)

    def launch_error(self, uid: str) -> str | None:
        try:
            events = self.client.request("GET", f"/v1/models/{uid}/events").json()
        except HttpError:
            return None
        errors = [e.get("event_content") for e in events if str(e.get("event_type")).upper() == "ERROR"]
        return str(errors[-1]) if errors else None

    def _describe(self, deployment: XinferenceDeployment, step: str) -> dict[str, Any]:
        try:
            description = self.client.describe(deployment.uid)
        except ModelLoading:
            description = None
        if description is None:
            raise StepFailed(step, "the server reports the model ready but cannot describe it")
        return description

    # -- verify ---------------------------------------------------------------------------------

    def verify(self, deployment: XinferenceDeployment, description: dict[str, Any] | None = None) -> str:
        """A real call proves the model answers; embeddings must have the expected size."""
        step = step_name(deployment)
        try:
            if deployment.model_type == "embedding":
                expected = deployment.expected_dimensions or (description or {}).get("dimensions")
                return embedding_size_verified(
                    step,
                    self.client.embed(deployment.uid, ["difystack verification"]),
                    int(expected) if expected else None,
                    hint=f"a different model answers under this UID; check {deployment.field}",
                )
            if deployment.model_type == "LLM":
                completion = self.client.chat(deployment.uid, "Say OK.", max_tokens=8)
                if completion.total_tokens <= 0:
                    raise StepFailed(
                        step,
                        "the chat completion carries no token usage",
                        hint="an Xinference LLM reports usage with every answer; check what runs under "
                        f"this UID ({deployment.field})",
                    )
                return f"answered ({completion.total_tokens} tokens)"
        except HttpError as exc:
            raise StepFailed(step, f"verification call failed: {exc.server_message}") from None
        return "described"


class LaunchWait(WaitStrategy):
    """A launch, for the waits runner: ready once the UID's instance is READY."""

    def __init__(self, part: XinferencePart, deployment: XinferenceDeployment) -> None:
        self.part = part
        self.deployment = deployment

    def probe(self) -> Probe:
        client = self.part.client
        uid = self.deployment.uid
        instances = client.instances(uid)
        status = str(instances[0].get("status", "")).upper() if instances else "GONE"
        if status == "READY":
            return Probe(True, "ready")
        if status in ("ERROR", "GONE", "TERMINATED"):
            raise StepFailed(
                step_name(self.deployment),
                f"launch failed: {self.part.launch_error(uid) or status}",
                hint=f"see `difystack logs xinference`; the model is {self.deployment.field}",
            )
        try:
            progress = client.progress(uid)
        except HttpError:
            progress = {}
        fraction = float(progress.get("progress") or 0.0)
        stage = progress.get("stage") or status.lower()
        return Probe(False, f"{stage} {fraction:.0%}", marker=(status, stage, round(fraction, 3)))


def _model_uri(deployment: XinferenceDeployment) -> str:
    assert deployment.custom_spec is not None
    return str(deployment.custom_spec["model_specs"][0]["model_uri"])


def _describe_launch(deployment: XinferenceDeployment) -> str:
    launch = deployment.launch
    parts = [str(launch["model_name"])]
    for key in ("model_engine", "model_format", "model_size_in_billions", "quantization"):
        if launch.get(key) is not None:
            parts.append(str(launch[key]))
    return " ".join(parts)
