"""Converge a stack's models: one concurrent task graph over Xinference, LocalAI and Dify.

    xinference ready --> model A launch/verify --\\
                     --> model B launch/verify ---+--> register A, B --\\
    localai ready    --> model C install/verify --+--> register C ------+--> default models
    dify ready --> admin --> plugins ------------/

Waiting for Dify overlaps with deploying models; launches run in parallel up to the server's
limit. A failed step skips only what depends on it, and a re-run repeats only what is missing.
Each part decides with its one diff; ``plan`` prints those diffs without applying them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from difystack.clients.dify import DifyConsole
from difystack.clients.http import HttpError
from difystack.clients.localai import LocalAIClient
from difystack.clients.xinference import XinferenceClient
from difystack.endpoints import Endpoints
from difystack.errors import DifystackError
from difystack.reconcile.context import ConvergeContext, RunOptions
from difystack.reconcile.desired import LocalAIDeployment, XinferenceDeployment, desired_state
from difystack.reconcile.dify_part import ADMIN_STEP, DEFAULTS_STEP, PLUGINS_STEP, DifyPart, registration_step
from difystack.reconcile.localai_part import LocalAIPart
from difystack.reconcile.localai_part import step_name as localai_step
from difystack.reconcile.report import Action, StepFailed
from difystack.reconcile.xinference_accounts import XINFERENCE_AUTH
from difystack.reconcile.xinference_part import XinferencePart
from difystack.reconcile.xinference_part import step_name as xinference_step
from difystack.registration import Registration
from difystack.taskgraph import DependencyFailed, TaskGraph

if TYPE_CHECKING:
    from difystack.stack import Stack

XINFERENCE_READY = "xinference ready"
LOCALAI_READY = "localai ready"
DIFY_READY = "dify ready"


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


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    unreachable: list[str]  # services not answering: their part of the plan is that of a fresh server


class Part(Protocol):
    def observe(self) -> Any: ...

    def fresh(self) -> Any: ...

    def diff_all(self, view: Any) -> list[Action]: ...


class Converger:
    """Builds the parts of a stack and runs their steps as one task graph (or plans them)."""

    def __init__(self, context: ConvergeContext) -> None:
        self.context = context
        endpoints = context.endpoints
        self.desired = desired_state(
            context.config,
            endpoints.xinference.from_dify if endpoints.xinference else None,
            endpoints.localai.from_dify if endpoints.localai else None,
            context.config_dir,
        )
        self.xinference, self.localai, self.dify = self._parts(endpoints)
        self.verified: dict[str, str] = {}
        self._verified_lock = threading.Lock()

    @classmethod
    def for_stack(
        cls, stack: Stack, endpoints: Endpoints | None = None, options: RunOptions | None = None
    ) -> Converger:
        return cls(ConvergeContext.for_stack(stack, endpoints, options))

    def _parts(
        self, endpoints: Endpoints
    ) -> tuple[XinferencePart | None, LocalAIPart | None, DifyPart | None]:
        journal = self.context.options.journal
        desired = self.desired
        xinference = localai = dify = None
        if endpoints.xinference and desired.xinference:
            client = XinferenceClient(endpoints.xinference.from_host, journal=journal)
            xinference = XinferencePart(self.context, client, desired.xinference)
        if endpoints.localai and desired.localai:
            localai_client = LocalAIClient(endpoints.localai.from_host, journal=journal)
            localai = LocalAIPart(self.context, localai_client, desired.localai)
        if endpoints.dify and desired.registrations:
            console = DifyConsole(endpoints.dify, journal=journal)
            complete = xinference.accounts.with_api_key if xinference else _unchanged
            dify = DifyPart(self.context, console, desired, complete)
        return xinference, localai, dify

    @property
    def parts(self) -> list[Part]:
        return [part for part in (self.xinference, self.localai, self.dify) if part is not None]

    # -- planning -------------------------------------------------------------------------------

    def plan(self) -> Plan:
        """What a run would do now; reads only (logging in is a read's first step)."""
        actions: list[Action] = []
        unreachable: list[str] = []
        for part in self.parts:
            try:
                actions += part.diff_all(part.observe())
            except HttpError as exc:
                if exc.status is not None:
                    raise
                unreachable.append(exc.service)
                actions += part.diff_all(part.fresh())
        return Plan(actions, unreachable)

    # -- running --------------------------------------------------------------------------------

    def graph(self) -> TaskGraph:
        graph = TaskGraph(
            limits={"xinference-launch": self.context.config.xinference.max_concurrent_launches},
            on_interrupt=self._interrupted,
        )
        model_tasks: dict[str, str] = {}
        # Steps that check what the user gave: nothing changes anywhere until they pass.
        input_checks: list[str] = []
        if self.xinference:
            self._add_xinference(graph, self.xinference, model_tasks, input_checks)
        if self.localai:
            ready = graph.add(LOCALAI_READY, self._gate(LOCALAI_READY))
            for deployment in self.desired.localai:
                name, key = localai_step(deployment), f"localai/{deployment.name}"
                deploy = partial(self.localai.deploy, deployment)
                graph.add(name, self._deploy(key, deploy), after=[ready, *input_checks])
                model_tasks[key] = name
        if self.dify:
            self._add_dify(graph, self.dify, model_tasks, input_checks)
        return graph

    def _add_xinference(
        self, graph: TaskGraph, part: XinferencePart, model_tasks: dict[str, str], input_checks: list[str]
    ) -> None:
        first = graph.add(XINFERENCE_READY, self._gate(XINFERENCE_READY))
        if part.accounts.bootstraps:
            first = graph.add(XINFERENCE_AUTH, part.accounts.ensure, after=[first])
            if part.accounts.external:  # its login comes from the user
                input_checks.append(first)
        for deployment in self.desired.xinference:
            name, key = xinference_step(deployment), f"xinference/{deployment.uid}"
            deploy = partial(part.deploy, deployment)
            graph.add(name, self._deploy(key, deploy), after=[first], group="xinference-launch")
            model_tasks[key] = name

    def _add_dify(
        self, graph: TaskGraph, part: DifyPart, model_tasks: dict[str, str], input_checks: list[str]
    ) -> None:
        ready = graph.add(DIFY_READY, self._gate(DIFY_READY))
        admin = graph.add(ADMIN_STEP, part.ensure_admin, after=[ready, *input_checks])
        plugins = graph.add(PLUGINS_STEP, part.ensure_plugins, after=[admin])
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
            graph.add(DEFAULTS_STEP, part.ensure_defaults, after=registrations or [plugins])

    def run(self) -> ConvergeResult:
        results = self.graph().run()
        failures = []
        for step, exc in results.items():
            if exc is None or isinstance(exc, DependencyFailed):
                continue
            failures.append(_failure(step, exc))
            self.context.report(step, "failed", failures[-1].message)
        for step, exc in results.items():
            if isinstance(exc, DependencyFailed):
                self.context.report(step, "cancelled", str(exc))
        return ConvergeResult(list(self.context.log.done), failures, dict(self.verified))

    def save_state(self) -> None:
        """Keep what this run learnt for the next one (call it after ``run``, also after a failure)."""
        if self.dify is not None:
            self.dify.save_fingerprints()

    def _interrupted(self) -> None:
        self.context.cancel.set()
        for gate in self.context.options.gates.values():
            gate.fail("interrupted")
        if self.context.options.on_interrupt is not None:
            self.context.options.on_interrupt()

    # -- tasks ----------------------------------------------------------------------------------

    def _gate(self, name: str) -> Callable[[], None]:
        def task() -> None:
            gate = self.context.options.gates.get(name)
            if gate is not None:
                gate.wait()

        return task

    def _deploy(self, key: str, deploy: Callable[[], str | None]) -> Callable[[], None]:
        """A model step; what proved a newly deployed model answers is kept for its registration."""

        def task() -> None:
            verified = deploy()
            if verified is not None:
                self._remember(key, verified)

        return task

    def _register(self, registration: Registration) -> Callable[[], None]:
        def task() -> None:
            assert self.dify is not None
            self.dify.register(registration, lambda: self._verify(registration))

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
            detail = self.localai.verify(deployment)
        else:
            detail = "not deployed by difystack"
        self._remember(key, detail)
        return detail

    def _remember(self, key: str, detail: str) -> None:
        with self._verified_lock:
            self.verified[key] = detail


def _unchanged(registration: Registration) -> Registration:
    return registration


def _failure(step: str, exc: BaseException) -> Failure:
    if isinstance(exc, StepFailed):
        return Failure(exc.step, exc.reason, exc.hint)
    if isinstance(exc, DifystackError):
        return Failure(step, str(exc), exc.hint)
    return Failure(
        step, f"{exc.__class__.__name__}: {exc}", "this looks like a difystack bug; please report it"
    )
