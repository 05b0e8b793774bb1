"""The state of one fake Xinference: its settings, the model registry, the accounts store and
the running model instances (``CREATING`` -> ``LOADING`` -> ``READY`` | ``ERROR``), with what
every handler reads from them."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from difystack.fakes.behaviour import Behaviour
from difystack.fakes.common.env import positive_int
from difystack.fakes.common.readiness import Readiness
from difystack.fakes.xinference.auth import AuthStore
from difystack.fakes.xinference.catalogue import EMBEDDING, LLM
from difystack.fakes.xinference.engines import LaunchPlan
from difystack.fakes.xinference.errors import ApiError
from difystack.fakes.xinference.registry import ModelRegistry

ENV_HOME = "XINFERENCE_HOME"
ENV_AUTH = "XINFERENCE_AUTH_ADVANCED"
ENV_MAX_CONCURRENT_LAUNCHES = "XINFERENCE_MAX_CONCURRENT_LAUNCHES"
ENV_TOKEN_MINUTES = "XINFERENCE_ACCESS_TOKEN_EXPIRE_MINUTES"
DEFAULT_MAX_CONCURRENT_LAUNCHES = 5
AUTH_OFF_VALUES = frozenset({"0", "false", "no"})
RETRY_AFTER_SECONDS = "30"


class Status(str, Enum):
    CREATING = "CREATING"
    LOADING = "LOADING"
    READY = "READY"
    ERROR = "ERROR"


ACTIVE_STATUSES = frozenset({Status.CREATING, Status.LOADING, Status.READY})


@dataclass
class LaunchRequest:
    model_uid: str
    model_name: str
    model_type: str
    model_engine: str | None
    model_format: str | None
    model_size_in_billions: Any
    quantization: str | None
    replica: int


@dataclass
class ModelInstance:
    request: LaunchRequest
    address: str
    created_ts: int = field(default_factory=lambda: int(time.time()))
    status: Status = Status.CREATING
    plan: LaunchPlan | None = None
    loading_since: float | None = None
    failure: ApiError | None = None
    terminating: bool = False
    # False once the worker "restarted": the supervisor still lists the model, the worker forgot it.
    held_by_worker: bool = True
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return self.request.model_uid

    @property
    def finished(self) -> bool:
        return self.status in (Status.READY, Status.ERROR)

    def log(self, event_type: str, content: str) -> None:
        self.events.append({"event_type": event_type, "event_ts": int(time.time()), "event_content": content})


def describe(instance: ModelInstance) -> dict[str, Any]:
    """``GET /v1/models/{uid}`` for a loaded model (field order as the real server)."""
    plan = instance.plan
    assert plan is not None
    model_type = instance.request.model_type
    fields = (
        _llm_fields if model_type == LLM else _embedding_fields if model_type == EMBEDDING else _rerank_fields
    )
    return {
        "model_type": model_type,
        "address": instance.address,
        "accelerators": [],
        "model_name": plan.family["model_name"],
        **fields(plan),
        "n_worker": 1,
        "replica": instance.request.replica,
    }


def _llm_fields(plan: LaunchPlan) -> dict[str, Any]:
    family, spec = plan.family, plan.spec
    return {
        "model_lang": family["model_lang"],
        "model_ability": family["model_ability"],
        "model_description": family.get("model_description"),
        "model_format": spec["model_format"],
        "model_size_in_billions": spec["model_size_in_billions"],
        "model_family": family.get("model_family") or family["model_name"],
        "quantization": spec["quantization"],
        "multimodal_projector": None,
        "model_hub": spec["model_hub"],
        "revision": spec.get("model_revision"),
        "context_length": family["context_length"],
        "strict_system_first": False,
        "model_engine": plan.engine,
    }


def _embedding_fields(plan: LaunchPlan) -> dict[str, Any]:
    family = plan.family
    return {
        "model_engine": plan.engine,
        "model_format": plan.spec["model_format"],
        "dimensions": family["dimensions"],
        "max_tokens": family["max_tokens"],
        "language": family["language"],
        "model_ability": ["embed"],
        **_source_fields(plan.spec),
    }


def _rerank_fields(plan: LaunchPlan) -> dict[str, Any]:
    family = plan.family
    return {
        "model_engine": plan.engine,
        "model_format": plan.spec["model_format"],
        "type": family.get("type", "normal"),
        "language": family["language"],
        "max_tokens": family.get("max_tokens"),
        "model_ability": ["rerank"],
        **_source_fields(plan.spec),
    }


def _source_fields(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model_hub": spec["model_hub"],
        "model_revision": spec.get("model_revision"),
        "quantization": spec["quantization"],
    }


class XinferenceState:
    """Everything one fake Xinference keeps, from the ``env`` given to ``create_app``."""

    def __init__(self, behaviour: Behaviour, env: Mapping[str, str]) -> None:
        self.behaviour = behaviour
        self.home = Path(env.get(ENV_HOME) or Path.home() / ".xinference").expanduser()
        self.max_concurrent_launches = positive_int(
            env, ENV_MAX_CONCURRENT_LAUNCHES, DEFAULT_MAX_CONCURRENT_LAUNCHES
        )
        self.token_minutes = positive_int(env, ENV_TOKEN_MINUTES, 30)
        self.auth_enabled = env.get(ENV_AUTH, "true").strip().lower() not in AUTH_OFF_VALUES
        self.registry = ModelRegistry(self.home / "model" / "v2")
        self.auth = AuthStore(self.home / "auth") if self.auth_enabled else None
        self.readiness = Readiness(behaviour)
        rng = random.Random()
        self.supervisor_address = f"0.0.0.0:{rng.randint(20000, 65000)}"
        self.worker_address = f"0.0.0.0:{rng.randint(20000, 65000)}"
        self.error_prefix = f"[address={self.supervisor_address}, pid={os.getpid()}] "
        self.instances: dict[str, ModelInstance] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.failed_once: set[str] = set()
        self.restarted_once: set[str] = set()
        self._launch_slots: asyncio.Semaphore | None = None
        if self.auth is not None and not self.auth.has_account():
            print_setup_banner(self.auth.setup_token())

    def actor_error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> ApiError:
        """An error raised inside an Xinference actor (carries the address/pid prefix)."""
        return ApiError(status, self.error_prefix + message, headers)

    @asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self.readiness.mark_started()
        try:
            yield
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def launch_slots(self) -> asyncio.Semaphore:
        if self._launch_slots is None:
            self._launch_slots = asyncio.Semaphore(self.max_concurrent_launches)
        return self._launch_slots

    def workers_ready(self) -> bool:
        return self.readiness.ready()

    def active(self) -> dict[str, ModelInstance]:
        return {uid: inst for uid, inst in self.instances.items() if inst.status in ACTIVE_STATUSES}

    def ready_models(self) -> list[ModelInstance]:
        return [inst for inst in self.instances.values() if inst.status == Status.READY]

    def loaded(self, uid: str, *, not_found_status: int) -> ModelInstance:
        """The READY instance ``uid``; 400/404 when unknown, 503 while it loads."""
        instance = self.instances.get(uid)
        if instance is None or instance.status not in ACTIVE_STATUSES:
            message = f"Model not found in the model list, uid: {uid}"
            if not_found_status == 404:
                message += f". Available model uids: {list(self.active())!r}"
            raise self.actor_error(not_found_status, message)
        if instance.status is not Status.READY:
            raise ApiError(
                503,
                f"Model is loading, please retry later: "
                f"Model {uid} is launching, not yet ready for inference",
                {"Retry-After": RETRY_AFTER_SECONDS},
            )
        return instance


def print_setup_banner(token: str) -> None:
    print("FIRST-RUN SETUP REQUIRED", flush=True)
    print(f"  Setup token: {token}", flush=True)
    print("  Create the initial admin account at POST /v1/admin/setup", flush=True)
