"""LocalAI: install every declared model that the server does not list yet, and prove it answers."""

from __future__ import annotations

from typing import Any

from difystack.clients.http import HttpError
from difystack.clients.localai import LocalAIClient
from difystack.reconcile.desired import LocalAIDeployment
from difystack.reconcile.report import Action, StepFailed
from difystack.reconcile.server_part import ServerPart, embedding_size_verified


def step_name(deployment: LocalAIDeployment) -> str:
    return f"localai model {deployment.name}"


def _source(deployment: LocalAIDeployment) -> str:
    body = deployment.apply_body or {}
    if "id" in body:
        return f"gallery {body['id']}"
    if "url" in body:
        return f"config {body['url']}"
    return "inline YAML"


class LocalAIPart(ServerPart[LocalAIClient, LocalAIDeployment, set[str]]):
    def listed(self) -> set[str]:
        return self.snapshot(lambda: set(self.client.models()))

    def plan(self) -> list[Action]:
        actions = []
        for deployment in self.deployments:
            if deployment.name in self.listed():
                continue
            if deployment.apply_body is None:
                actions.append(
                    Action("localai", "error", deployment.name, "rendered YAML not loaded by the server")
                )
            else:
                actions.append(Action("localai", "apply", deployment.name, _source(deployment)))
        return actions

    def converge(self, deployment: LocalAIDeployment) -> bool:
        """Make the model listed; returns True when it was installed in this run."""
        step = step_name(deployment)
        if deployment.name in self.listed():
            self.report(step, "ready", "installed")
            return False
        if deployment.apply_body is None:
            raise StepFailed(
                step,
                "LocalAI did not load the model YAML difystack rendered for it",
                hint="see `difystack logs localai` for the reason (backend, model file)",
            )
        self.report(step, "waiting", f"installing from {_source(deployment)}")
        try:
            job = self.client.apply(deployment.apply_body)
        except HttpError as exc:
            raise StepFailed(step, f"install refused: {exc.server_message}") from None
        self.log.add(Action("localai", "apply", deployment.name, _source(deployment)))

        def poll() -> tuple[bool, str, Any]:
            status = self.client.job(job)
            if status.failed:
                raise StepFailed(
                    step,
                    f"install failed: {status.error or status.message}",
                    hint=f"check {deployment.field} (gallery id / URL) and `difystack logs localai`",
                )
            if status.processed:
                return True, "installed", "done"
            detail = status.message or "queued"
            if status.progress:
                detail = f"{detail} {status.progress:.0f}%"
            return False, detail, (status.message, round(status.progress or 0.0))

        self.follow(step, poll)
        if deployment.name not in self.client.models():
            raise StepFailed(step, "the install job completed but the model is not listed by GET /v1/models")
        self.listed().add(deployment.name)
        self.report(step, "ready", "installed")
        return True

    def verify(self, deployment: LocalAIDeployment, completion_type: str = "chat_completion") -> str:
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
                    deployment.name, "Say OK.", max_tokens=8, completion_type=completion_type
                )
                return f"answered ({completion.total_tokens} tokens)"
        except HttpError as exc:
            raise StepFailed(step, f"verification call failed: {exc.server_message}") from None
        return "listed"
