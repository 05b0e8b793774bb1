"""Xinference: make every declared model run under its UID, launching only what is missing.

A restarted Xinference forgets its running models (it keeps persisted registrations), so a
re-run relaunches exactly those. A model running under the right UID with the right
name/engine/format/size/quantization is left alone; a different model under that UID is
terminated and relaunched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from difystack.clients.http import HttpError
from difystack.clients.xinference import ModelLoading, XinferenceClient, check_launchable
from difystack.reconcile.desired import XinferenceDeployment
from difystack.reconcile.report import Action, StepFailed
from difystack.reconcile.server_part import ServerPart, embedding_size_verified

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


class XinferencePart(ServerPart[XinferenceClient, XinferenceDeployment, Holdings]):
    def _holdings(self) -> Holdings:
        return Holdings(self.client.running_models(), self.client.models_held_by_workers())

    def running(self) -> dict[str, dict[str, Any]]:
        """GET /v1/models once per run; every model task reads the same snapshot."""
        return self.snapshot(self._holdings).running

    def lost(self, uid: str) -> bool:
        """Listed by the supervisor, held by no worker: its worker restarted and forgot it."""
        held = self.snapshot(self._holdings).held
        if held is None or uid in held or uid not in self.running():
            return False
        return not self.launch_in_progress(uid)

    # -- plan -----------------------------------------------------------------------------------

    def plan(self) -> list[Action]:
        actions = []
        for deployment in self.deployments:
            actions += self.plan_one(deployment)
        return actions

    def plan_unreadable(self) -> list[Action]:
        """The plan for a server whose contents cannot be read yet (no account to read them)."""
        actions = []
        for deployment in self.deployments:
            if deployment.custom_spec is not None:
                actions.append(
                    Action("xinference", "register-custom", deployment.name, _model_uri(deployment))
                )
            actions.append(Action("xinference", "launch", deployment.uid, _describe_launch(deployment)))
        return actions

    def plan_one(self, deployment: XinferenceDeployment) -> list[Action]:
        target = deployment.uid
        item = self.running().get(deployment.uid)
        if item is not None:
            if self.lost(deployment.uid):
                return [Action("xinference", "relaunch", target, self._lost_reason(deployment.uid))]
            if deployment.matches(item):
                return []
            return [Action("xinference", "relaunch", target, f"{item.get('model_name')} runs under this UID")]
        if self.launch_in_progress(deployment.uid):
            return [Action("xinference", "wait", target, "a launch is already in progress")]
        actions = []
        if deployment.custom_spec is not None:
            if self.client.registration(deployment.model_type, deployment.name) is None:
                actions.append(
                    Action("xinference", "register-custom", deployment.name, _model_uri(deployment))
                )
        else:
            problem = self._launch_problem(deployment)
            if problem:
                return [Action("xinference", "error", target, problem)]
        actions.append(Action("xinference", "launch", target, _describe_launch(deployment)))
        return actions

    # -- apply ----------------------------------------------------------------------------------

    def converge(self, deployment: XinferenceDeployment) -> ModelOutcome:
        step = step_name(deployment)
        item = self.running().get(deployment.uid)
        if item is not None and self.lost(deployment.uid):
            self.report(step, "waiting", self._lost_reason(deployment.uid))
            self.client.terminate(deployment.uid)
            self.log.add(Action("xinference", "terminate", deployment.uid, "held by no worker"))
        elif item is not None and deployment.matches(item):
            self.report(step, "ready", "already running")
            return ModelOutcome(False, item)
        elif item is not None:
            self.report(step, "waiting", f"replacing {item.get('model_name')} running under this UID")
            self.client.terminate(deployment.uid)
            self.log.add(Action("xinference", "terminate", deployment.uid, str(item.get("model_name"))))
        if not self.launch_in_progress(deployment.uid):
            self._prepare_and_launch(deployment, step)
        self._follow_launch(deployment, step)
        description = self._describe(deployment, step)
        self.report(step, "ready", "running")
        return ModelOutcome(True, description)

    def _prepare_and_launch(self, deployment: XinferenceDeployment, step: str) -> None:
        if deployment.custom_spec is not None:
            if self.client.registration(deployment.model_type, deployment.name) is None:
                self.report(step, "waiting", "registering custom model")
                try:
                    self.client.register(deployment.model_type, deployment.custom_spec, persist=True)
                except HttpError as exc:
                    raise StepFailed(
                        step, f"registering {deployment.name} failed: {exc.server_message}"
                    ) from None
                self.log.add(Action("xinference", "register-custom", deployment.name))
        else:
            problem = self._launch_problem(deployment)
            if problem:
                raise StepFailed(step, problem, hint=f"fix {deployment.field} in the stack file")
        self.report(step, "waiting", f"launching {_describe_launch(deployment)}")
        try:
            self.client.launch(deployment.launch, wait_ready=False)
        except HttpError as exc:
            raise StepFailed(step, f"launch refused: {exc.server_message}") from None
        self.log.add(Action("xinference", "launch", deployment.uid, _describe_launch(deployment)))

    def _launch_problem(self, deployment: XinferenceDeployment) -> str | None:
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

    def launch_in_progress(self, uid: str) -> bool:
        try:
            instances = self.client.instances(uid)
        except HttpError:
            return False
        return any(str(i.get("status", "")).upper() in LAUNCHING_STATES for i in instances)

    def workers_of(self, uid: str) -> list[str]:
        """The worker addresses (host:port) the uid's replicas run on, from its instance rows."""
        addresses: list[str] = []
        for instance in self.client.instances(uid):
            for replica in instance.get("replica_statuses") or []:
                address = replica.get("worker_address") if isinstance(replica, dict) else None
                if address and address not in addresses:
                    addresses.append(str(address))
        return addresses

    def _lost_reason(self, uid: str) -> str:
        workers = ", ".join(self.workers_of(uid)) or "its worker"
        return f"listed as running, but {workers} no longer holds it (the worker restarted)"

    def _follow_launch(self, deployment: XinferenceDeployment, step: str) -> None:
        uid = deployment.uid

        def poll() -> tuple[bool, str, Any]:
            instances = self.client.instances(uid)
            status = str(instances[0].get("status", "")).upper() if instances else "GONE"
            if status == "READY":
                return True, "ready", status
            if status in ("ERROR", "GONE", "TERMINATED"):
                raise StepFailed(
                    step,
                    f"launch failed: {self._launch_error(uid) or status}",
                    hint=f"see `difystack logs xinference`; the model is {deployment.field}",
                )
            try:
                progress = self.client.progress(uid)
            except HttpError:
                progress = {}
            fraction = float(progress.get("progress") or 0.0)
            stage = progress.get("stage") or status.lower()
            return False, f"{stage} {fraction:.0%}", (status, stage, round(fraction, 3))

        self.follow(step, poll)

    def _launch_error(self, uid: str) -> str | None:
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
