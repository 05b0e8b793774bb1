"""What every part of a converge run shares: the stack, where its servers are, its secrets, and how
this run reports, records and waits - one object, handed to each part."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from difystack.clients.http import CallJournal
from difystack.config_model import StackConfig
from difystack.endpoints import Endpoints, stack_endpoints
from difystack.paths import StackPaths
from difystack.reconcile.report import ActionLog, Reporter, StepFailed, silent
from difystack.waits import WaitStatus, WaitStrategy, WaitTarget, wait_for

if TYPE_CHECKING:
    from difystack.stack import Stack

POLL_INTERVAL = 0.5


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


@dataclass
class Secrets:
    """The stack's secrets as converge reads them; ``put`` also keeps a new one (an Xinference key)."""

    values: dict[str, str]
    save: Callable[[str, str], None] = lambda name, value: None

    def get(self, name: str) -> str | None:
        return self.values.get(name) or None

    def put(self, name: str, value: str) -> None:
        self.values[name] = value
        self.save(name, value)


@dataclass(frozen=True)
class RunOptions:
    """How one run shows progress, records its calls, waits and stops."""

    report: Reporter = silent
    journal: CallJournal | None = None
    gates: Mapping[str, Gate] = field(default_factory=dict)
    xinference_logs: Callable[[], str] | None = None  # where a new Xinference printed its setup token
    timeout: float = 3600.0
    stall_timeout: float = 600.0
    on_interrupt: Callable[[], None] | None = None


@dataclass
class ConvergeContext:
    config: StackConfig
    endpoints: Endpoints
    secrets: Secrets
    paths: StackPaths
    config_dir: Path  # relative paths of the stack file (plugin packages, model weights) start here
    options: RunOptions = field(default_factory=RunOptions)
    log: ActionLog = field(default_factory=ActionLog)
    cancel: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def for_stack(
        cls, stack: Stack, endpoints: Endpoints | None = None, options: RunOptions | None = None
    ) -> ConvergeContext:
        store = stack.secrets_store
        return cls(
            stack.config,
            endpoints or stack_endpoints(stack.config),
            Secrets(store.ensure(), store.set),
            stack.paths,
            stack.config_dir,
            options or RunOptions(),
        )

    def report(self, name: str, state: str, detail: str) -> None:
        self.options.report(name, state, detail)

    def follow(
        self,
        step: str,
        strategy: WaitStrategy,
        *,
        timeout: float | None = None,
        stall_timeout: float | None = None,
        hint: str | None = None,
    ) -> None:
        """Wait (through the waits runner) until ``strategy`` is ready, showing its progress as
        ``step``. The stall clock restarts whenever the probe's detail or marker changes, so a slow
        but moving download is never cut off. Raises StepFailed when it never gets there."""
        timeout = timeout or self.options.timeout
        target = WaitTarget(
            step, strategy, timeout, stall_timeout or self.options.stall_timeout, POLL_INTERVAL
        )

        def shown(status: WaitStatus) -> None:
            if status.state == "waiting":
                self.report(step, "waiting", status.detail)

        status = wait_for(target, shown, self.cancel)
        if status.ok:
            return
        if status.state == "cancelled":
            raise StepFailed(step, "interrupted")
        raise StepFailed(step, f"{status.state}: {status.detail}", hint)
