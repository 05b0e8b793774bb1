"""Planned actions, progress reporting and the errors of the converge steps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from difystack.errors import DifystackError


@dataclass(frozen=True)
class Action:
    part: str  # xinference | localai | dify
    kind: str  # launch, relaunch, register-custom, apply, create-admin, install-plugins, ...
    target: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.part:<10} {self.kind:<18} {self.target}" + (
            f"  ({self.detail})" if self.detail else ""
        )


class StepFailed(DifystackError):
    """A converge step failed; ``step`` names the model or step for the final report."""

    def __init__(self, step: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{step}: {message}", hint)
        self.step = step
        self.reason = message


class Reporter(Protocol):
    def __call__(self, name: str, state: str, detail: str) -> None: ...


def silent(name: str, state: str, detail: str) -> None:
    """A Reporter that shows nothing."""


@dataclass
class ActionLog:
    """What a converge run did, for the summary (and for tests)."""

    done: list[Action] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, action: Action) -> None:
        with self._lock:
            self.done.append(action)


def follow(
    step: str,
    poll: Callable[[], tuple[bool, str, Any]],
    report: Reporter,
    *,
    timeout: float,
    stall_timeout: float,
    interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    cancel: threading.Event | None = None,
) -> None:
    """Poll until done; ``poll`` returns (done, detail, progress marker). Stall-aware.

    The stall clock restarts whenever the progress marker changes (a download percentage, a
    job phase...), so a slow but moving download is never cut off by ``stall_timeout``.
    """
    started = last_change = clock()
    last_marker: Any = object()
    while True:
        done, detail, marker = poll()
        now = clock()
        if marker != last_marker:
            last_marker = marker
            last_change = now
            report(step, "waiting", detail)
        if done:
            return
        if now - last_change >= stall_timeout:
            raise StepFailed(step, f"no progress for {stall_timeout:.0f}s ({detail})")
        if now - started >= timeout:
            raise StepFailed(step, f"not done after {timeout:.0f}s ({detail})")
        if cancel is not None and cancel.wait(interval):
            raise StepFailed(step, "interrupted")
        if cancel is None:
            time.sleep(interval)
