"""What the parts share: the run's context, the run's snapshot of a server, and how actions apply.

Every part decides with one diff (desired vs. what it observes) that yields ``Action``s; ``plan``
prints them, ``up`` hands each to the executor of its kind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from difystack.clients.results import Embeddings
from difystack.reconcile.context import ConvergeContext
from difystack.reconcile.report import Action, StepFailed

ClientT = TypeVar("ClientT")
DeploymentT = TypeVar("DeploymentT")
SnapshotT = TypeVar("SnapshotT")
ItemT = TypeVar("ItemT")

Executors = Mapping[str, Callable[[ItemT, Action], None]]


def apply_actions(executors: Executors[ItemT], item: ItemT, actions: Iterable[Action]) -> None:
    """Hand each action of ``item`` to the executor of its kind, in order."""
    for action in actions:
        executors[action.kind](item, action)


class ServerPart(Generic[ClientT, DeploymentT, SnapshotT]):
    def __init__(self, context: ConvergeContext, client: ClientT, deployments: list[DeploymentT]) -> None:
        self.context = context
        self.client = client
        self.deployments = deployments
        self._snapshot_lock = threading.Lock()
        self._snapshot: SnapshotT | None = None

    def snapshot(self, fetch: Callable[[], SnapshotT]) -> SnapshotT:
        """What the server holds, fetched once per run and shared by every model task."""
        with self._snapshot_lock:
            if self._snapshot is None:
                self._snapshot = fetch()
            return self._snapshot


def embedding_size_verified(step: str, result: Embeddings, expected: int | None, hint: str) -> str:
    """The verification line of an embedding model; a size other than ``expected`` fails the step."""
    size = len(result.vectors[0]) if result.vectors else 0
    if expected and size != expected:
        raise StepFailed(step, f"embeddings have {size} dimensions, expected {expected}", hint=hint)
    return f"{size}-dimensional embeddings"
