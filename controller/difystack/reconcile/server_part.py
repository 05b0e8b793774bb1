"""What the Xinference and LocalAI parts share: settings, the run's snapshot, cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from difystack.clients.results import Embeddings
from difystack.reconcile.report import ActionLog, Reporter, StepFailed, follow, silent

ClientT = TypeVar("ClientT")
DeploymentT = TypeVar("DeploymentT")
SnapshotT = TypeVar("SnapshotT")


class ServerPart(Generic[ClientT, DeploymentT, SnapshotT]):
    def __init__(
        self,
        client: ClientT,
        deployments: list[DeploymentT],
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
        self.cancel = threading.Event()
        self._snapshot_lock = threading.Lock()
        self._snapshot: SnapshotT | None = None

    def snapshot(self, fetch: Callable[[], SnapshotT]) -> SnapshotT:
        """What the server holds, fetched once per run and shared by every model task."""
        with self._snapshot_lock:
            if self._snapshot is None:
                self._snapshot = fetch()
            return self._snapshot

    def follow(self, step: str, poll: Callable[[], tuple[bool, str, Any]]) -> None:
        follow(
            step,
            poll,
            self.report,
            timeout=self.timeout,
            stall_timeout=self.stall_timeout,
            cancel=self.cancel,
        )


def embedding_size_verified(step: str, result: Embeddings, expected: int | None, hint: str) -> str:
    """The verification line of an embedding model; a size other than ``expected`` fails the step."""
    size = len(result.vectors[0]) if result.vectors else 0
    if expected and size != expected:
        raise StepFailed(step, f"embeddings have {size} dimensions, expected {expected}", hint=hint)
    return f"{size}-dimensional embeddings"
