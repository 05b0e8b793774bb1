"""Every declared model with where it runs, its state there and its registration in Dify.

This is the seed documents' `xinference list` step, for the whole stack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from difystack.clients.http import HttpError
from difystack.reconcile.converge import Converger, lacks_xinference_admin
from difystack.reconcile.desired import Registration
from difystack.reconcile.dify_part import same_credentials

UNREACHABLE = "unreachable"


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
    registrations = {(r.provider, r.server_id): r for r in converger.desired.registrations}
    defaults = {
        (provider, model): model_type
        for model_type, (provider, model) in converger.desired.default_models.items()
    }
    dify_states = _dify_states(converger)
    readable = _xinference_readable(converger)
    rows = []
    for deployment in converger.desired.xinference:
        registration = registrations.get(("xinference", deployment.uid))
        state = _xinference_state(converger, deployment.uid) if readable else "missing"
        row = _row(
            "xinference", deployment.uid, deployment.model_type, state, registration, dify_states, defaults
        )
        if state in ("running", "loading"):
            row.worker = _xinference_worker(converger, deployment.uid)
        rows.append(row)
    for deployment_l in converger.desired.localai:
        registration = registrations.get(("localai", deployment_l.name))
        rows.append(
            _row(
                "localai",
                deployment_l.name,
                deployment_l.kind,
                _localai_state(converger, deployment_l.name),
                registration,
                dify_states,
                defaults,
            )
        )
    return rows


def _row(
    server: str,
    ident: str,
    kind: str,
    state: str,
    registration: Registration | None,
    dify_states: dict[str, str],
    defaults: dict[tuple[str, str], str],
) -> ModelRow:
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


def _xinference_readable(converger: Converger) -> bool:
    """False while Xinference's accounts are on and no admin exists yet (nothing is deployed)."""
    if converger.xinference is None:
        return True
    try:
        account = converger.open_xinference_for_reading()
    except HttpError:
        return True  # reported per model as unreachable
    return not lacks_xinference_admin(account)


def _xinference_state(converger: Converger, uid: str) -> str:
    if converger.xinference is None:
        return "not deployed"
    try:
        if uid in converger.xinference.running():
            return "lost" if converger.xinference.lost(uid) else "running"
        return "loading" if converger.xinference.launch_in_progress(uid) else "missing"
    except HttpError:
        return UNREACHABLE


def _xinference_worker(converger: Converger, uid: str) -> str | None:
    if converger.xinference is None:
        return None
    try:
        return ", ".join(converger.xinference.workers_of(uid)) or None
    except HttpError:
        return None


def _localai_state(converger: Converger, name: str) -> str:
    if converger.localai is None:
        return "not deployed"
    try:
        return "installed" if name in converger.localai.listed() else "missing"
    except HttpError:
        return UNREACHABLE


def _dify_states(converger: Converger) -> dict[str, str]:
    part = converger.dify
    if part is None:
        return {}
    try:
        if part.console.setup_state() != "finished":
            return {r.key: "missing" for r in converger.desired.registrations}
        part.ensure_admin()
    except HttpError:
        return {}
    states = {}
    for registration in converger.desired.registrations:
        provider = part.console.provider_id(registration.provider)
        try:
            record = part.console.model_credentials(provider, registration.model, registration.model_type)
        except HttpError:
            states[registration.key] = "missing"  # the provider's plugin is not installed yet
            continue
        stored = (record or {}).get("credentials") or {}
        if not record:
            states[registration.key] = "missing"
        elif same_credentials(stored, registration.public_credentials()):
            states[registration.key] = "registered"
        else:
            states[registration.key] = "differs"
    return states
