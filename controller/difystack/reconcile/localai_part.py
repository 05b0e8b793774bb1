"""LocalAI: install every declared model that the server does not list yet, and prove it answers.

One diff (``diff``) decides for ``plan``, ``models`` and ``up`` alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from difystack.clients.http import HttpError
from difystack.clients.localai import JobWait, LocalAIClient, LocalAIJobFailed
from difystack.reconcile.desired import LocalAIDeployment
from difystack.reconcile.report import Action, StepFailed
from difystack.reconcile.server_part import Executors, ServerPart, apply_actions, embedding_size_verified

NOT_LOADED = "LocalAI did not load the model YAML difystack rendered for it"


def step_name(deployment: LocalAIDeployment) -> str:
    return f"localai model {deployment.name}"


def _source(deployment: LocalAIDeployment) -> str:
    body = deployment.apply_body or {}
    if "id" in body:
        return f"gallery {body['id']}"
    if "url" in body:
        return f"config {body['url']}"
    return "inline YAML"


@dataclass(frozen=True)
class LocalAIView:
    """The model names a LocalAI lists (``listed``, read once)."""

    listed: Callable[[], set[str]]


def diff(deployment: LocalAIDeployment, view: LocalAIView) -> list[Action]:
    if deployment.name in view.listed():
        return []
    if deployment.apply_body is None:
        return [Action("localai", "error", deployment.name, NOT_LOADED)]
    return [Action("localai", "apply", deployment.name, _source(deployment))]


class LocalAIPart(ServerPart[LocalAIClient, LocalAIDeployment, set[str]]):
    def listed(self) -> set[str]:
        return self.snapshot(lambda: set(self.client.models()))

    def observe(self) -> LocalAIView:
        return LocalAIView(self.listed)

    def fresh(self) -> LocalAIView:
        """A LocalAI when it starts lists exactly the models whose YAML difystack rendered."""
        rendered = {d.name for d in self.deployments if d.apply_body is None}
        return LocalAIView(lambda: rendered)

    def diff_all(self, view: LocalAIView) -> list[Action]:
        return [action for deployment in self.deployments for action in diff(deployment, view)]

    def deploy(self, deployment: LocalAIDeployment) -> str | None:
        """The model's step of ``up``; when it was installed now, what proved that it answers."""
        if not self.converge(deployment):
            return None
        verified = self.verify(deployment)
        self.context.report(step_name(deployment), "ready", f"installed, {verified}")
        return verified

    def converge(self, deployment: LocalAIDeployment) -> bool:
        """Make the model listed; returns True when it was installed in this run."""
        actions = diff(deployment, self.observe())
        if not actions:
            self.context.report(step_name(deployment), "ready", "installed")
            return False
        apply_actions(self.executors(), deployment, actions)
        return True

    def executors(self) -> Executors[LocalAIDeployment]:
        return {"error": self._refuse, "apply": self._apply}

    def _refuse(self, deployment: LocalAIDeployment, action: Action) -> None:
        raise StepFailed(
            step_name(deployment),
            action.detail,
            hint="see `difystack logs localai` for the reason (backend, model file)",
        )

    def _apply(self, deployment: LocalAIDeployment, action: Action) -> None:
        step = step_name(deployment)
        assert deployment.apply_body is not None
        self.context.report(step, "waiting", f"installing from {action.detail}")
        try:
            job = self.client.apply(deployment.apply_body)
        except HttpError as exc:
            raise StepFailed(step, f"install refused: {exc.server_message}") from None
        self.context.log.add(action)
        try:
            self.context.follow(step, JobWait(self.client, job, f"install of {deployment.name}"))
        except LocalAIJobFailed as exc:
            raise StepFailed(
                step,
                f"install failed: {exc.status.error or exc.status.message}",
                hint=f"check {deployment.field} (gallery id / URL) and `difystack logs localai`",
            ) from None
        if deployment.name not in self.client.models():
            raise StepFailed(step, "the install job completed but the model is not listed by GET /v1/models")
        self.listed().add(deployment.name)
        self.context.report(step, "ready", "installed")

    def verify(self, deployment: LocalAIDeployment) -> str:
        step = step_name(deployment)
        try:
            if deployment.kind == "embedding":
                return embedding_size_verified(
                    step,
                    self.client.embed(deployment.name, ["difystack verification"]),
                    deployment.expected_dimensions,
                    hint=f"the gallery may serve another model than expected; see {deployment.field}",
                )
            if deployment.kind == "llm":
                completion = self.client.chat(
                    deployment.name, "Say OK.", max_tokens=8, completion_type=deployment.completion_type
                )
                return f"answered ({completion.total_tokens} tokens)"
        except HttpError as exc:
            raise StepFailed(step, f"verification call failed: {exc.server_message}") from None
        return "listed"
