"""LocalAI: install every declared model that the server does not list yet, and prove it answers."""

from __future__ import annotations

import threading
from typing import Any

from difystack.clients.http import HttpError
from difystack.clients.localai import LocalAIClient
from difystack.reconcile.desired import LocalAIDeployment
from difystack.reconcile.report import Action, ActionLog, Reporter, StepFailed, follow, silent


def step_name(deployment: LocalAIDeployment) -> str:
    return f"localai model {deployment.name}"


def _source(deployment: LocalAIDeployment) -> str:
    body = deployment.apply_body or {}
    if "id" in body:
        return f"gallery {body['id']}"
    if "url" in body:
        return f"config {body['url']}"
    return "inline YAML"


class LocalAIPart:
    def __init__(
        self,
        client: LocalAIClient,
        deployments: list[LocalAIDeployment],
        report: Reporter = silent,
        log: ActionLog | None = None,
        timeout: float = 3600.0,
        stall_timeout: float = 600.0,
    ) -> None:
        self.client = client
        self.deployments = deployments
        self.report = report
        self.log = log or ActionLog()
        self.timeout = timeout
        self.stall_timeout = stall_timeout
        self._snapshot_lock = threading.Lock()
        self.cancel = threading.Event()
        self._listed: set[str] | None = None

    def listed(self) -> set[str]:
        with self._snapshot_lock:
            if self._listed is None:
                self._listed = set(self.client.models())
            return self._listed

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

        follow(
            step,
            poll,
            self.report,
            timeout=self.timeout,
            stall_timeout=self.stall_timeout,
            cancel=self.cancel,
        )
        if deployment.name not in self.client.models():
            raise StepFailed(step, "the install job completed but the model is not listed by GET /v1/models")
        self.listed().add(deployment.name)
        self.report(step, "ready", "installed")
        return True

    def verify(self, deployment: LocalAIDeployment, completion_type: str = "chat_completion") -> str:
        step = step_name(deployment)
        try:
            if deployment.kind == "embedding":
                result = self.client.embed(deployment.name, ["difystack verification"])
                size = len(result.vectors[0]) if result.vectors else 0
                if deployment.expected_dimensions and size != deployment.expected_dimensions:
                    raise StepFailed(
                        step,
                        f"embeddings have {size} dimensions, expected {deployment.expected_dimensions}",
                        hint=f"the gallery may serve another model than expected; see {deployment.field}",
                    )
                return f"{size}-dimensional embeddings"
            if deployment.kind == "llm":
                completion = self.client.chat(
                    deployment.name, "Say OK.", max_tokens=8, completion_type=completion_type
                )
                return f"answered ({completion.total_tokens} tokens)"
        except HttpError as exc:
            raise StepFailed(step, f"verification call failed: {exc.server_message}") from None
        return "listed"
