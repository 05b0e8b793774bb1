"""Every declared model with where it runs, its state there and its registration in Dify.

This is the seed documents' `xinference list` step, for the whole stack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from difystack.clients.http import HttpError
from difystack.reconcile.converge import Converger
from difystack.reconcile.localai_part import LocalAIPart
from difystack.reconcile.xinference_part import XinferencePart

UNREACHABLE = "unreachable"
NOT_DEPLOYED = "not deployed"


@dataclass
class ModelRow:
    server: str
    id: str  # Xinference UID or LocalAI model name
    type: str
    server_state: str  # running | lost | loading | missing | installed | unreachable
    dify_model: str | None
    dify_state: str  # registered | differs | missing | unreachable | not registered
    default_for: str | None
    worker: str | None = None  # Xinference worker address(es) the model runs on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def inventory(converger: Converger) -> list[ModelRow]:
    """Read-only, like ``plan``; the states come from the same views the diffs read."""
    registrations = {(r.provider, r.server_id): r for r in converger.desired.registrations}
    defaults = {
        (provider, model): model_type
        for model_type, (provider, model) in converger.desired.default_models.items()
    }
    dify_states = _dify_states(converger)

    def row(server: str, ident: str, kind: str, state: str) -> ModelRow:
        registration = registrations.get((server, ident))
        if registration is None:
            return ModelRow(server, ident, kind, state, None, "not registered", None)
        return ModelRow(
            server,
            ident,
            kind,
            state,
            registration.model,
            dify_states.get(registration.key, UNREACHABLE),
            defaults.get((registration.provider, registration.model)),
        )

    xinference_states = _xinference_states(converger.xinference)
    localai_states = _localai_states(converger.localai)
    rows = []
    for deployment in converger.desired.xinference:
        state = xinference_states.get(deployment.uid, NOT_DEPLOYED)
        rows.append(row("xinference", deployment.uid, deployment.model_type, state))
        if converger.xinference is not None and state in ("running", "loading"):
            rows[-1].worker = _worker(converger.xinference, deployment.uid)
    for deployment_l in converger.desired.localai:
        state = localai_states.get(deployment_l.name, NOT_DEPLOYED)
        rows.append(row("localai", deployment_l.name, deployment_l.kind, state))
    return rows


def _xinference_states(part: XinferencePart | None) -> dict[str, str]:
    """Each model's state there; ``missing`` while the server has no admin yet."""
    if part is None:
        return {}
    try:
        view = part.observe()
    except HttpError:
        return {deployment.uid: UNREACHABLE for deployment in part.deployments}
    states = {}
    for deployment in part.deployments:
        uid = deployment.uid
        try:
            if view.running(uid) is not None:
                states[uid] = "lost" if view.lost(uid) else "running"
            else:
                states[uid] = "loading" if view.launching(uid) else "missing"
        except HttpError:
            states[uid] = UNREACHABLE
    return states


def _worker(part: XinferencePart, uid: str) -> str | None:
    try:
        return ", ".join(part.workers_of(uid)) or None
    except HttpError:
        return None


def _localai_states(part: LocalAIPart | None) -> dict[str, str]:
    if part is None:
        return {}
    try:
        listed = part.observe().listed()
    except HttpError:
        return {deployment.name: UNREACHABLE for deployment in part.deployments}
    return {d.name: "installed" if d.name in listed else "missing" for d in part.deployments}


def _dify_states(converger: Converger) -> dict[str, str]:
    part = converger.dify
    if part is None:
        return {}
    try:
        view = part.observe()
        return {r.key: part.dify_state(r, view) for r in converger.desired.registrations}
    except HttpError:
        return {}
