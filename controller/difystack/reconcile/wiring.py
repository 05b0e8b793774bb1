"""Build a Converger for a stack: desired state, secrets, saved session and fingerprints."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from difystack.clients.http import CallJournal
from difystack.config_model import StackConfig
from difystack.endpoints import Endpoints
from difystack.reconcile.converge import Converger, Gate, Secrets, ServerUrls
from difystack.reconcile.desired import desired_state
from difystack.reconcile.dify_part import SessionStore
from difystack.reconcile.report import Reporter, silent
from difystack.secrets_store import SecretsStore, write_private


class StateFile:
    """Small facts kept between runs (credential fingerprints), in ``state.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps(data, indent=2, sort_keys=True))


def build_converger(
    config: StackConfig,
    endpoints: Endpoints,
    secrets_store: SecretsStore,
    state_dir: Path,
    config_dir: Path,
    *,
    gates: dict[str, Gate] | None = None,
    report: Reporter = silent,
    journal: CallJournal | None = None,
    xinference_logs: Callable[[], str] | None = None,
    timeout: float = 3600.0,
    stall_timeout: float = 600.0,
    on_interrupt: Callable[[], None] | None = None,
) -> tuple[Converger, Callable[[], None]]:
    """The converger and a function that saves what it learnt (call it after ``run``)."""
    values = secrets_store.ensure()
    state = StateFile(state_dir / "state.json")
    fingerprints: dict[str, str] = dict(state.read().get("credential_fingerprints", {}))
    desired = desired_state(
        config,
        endpoints.xinference.from_dify if endpoints.xinference else None,
        endpoints.localai.from_dify if endpoints.localai else None,
        config_dir,
    )
    sessions = SessionStore(state_dir / "dify-session.json")
    converger = Converger(
        config,
        desired,
        ServerUrls(
            endpoints.dify,
            endpoints.xinference.from_host if endpoints.xinference else None,
            endpoints.localai.from_host if endpoints.localai else None,
        ),
        Secrets(values, secrets_store.set),
        config_dir,
        sessions=sessions,
        fingerprints=fingerprints,
        gates=gates,
        report=report,
        journal=journal,
        xinference_logs=xinference_logs,
        timeout=timeout,
        stall_timeout=stall_timeout,
        on_interrupt=on_interrupt,
    )

    def save() -> None:
        data = state.read()
        data["credential_fingerprints"] = fingerprints
        state.write(data)

    return converger, save
