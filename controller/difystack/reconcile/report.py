"""Planned actions, progress reporting and the errors of the converge steps."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Protocol

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
