"""Model lifecycle routes: launch (blocking or ``wait_ready=false``, at most
``XINFERENCE_MAX_CONCURRENT_LAUNCHES`` loading at once), list, describe, terminate, cancel,
instances, progress and events; and the injected launch failures of ``DIFYSTACK_FAKE_FAIL``."""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.common.http import json_object
from difystack.fakes.common.tokens import random_token
from difystack.fakes.xinference.catalogue import DEFAULT_ENGINE, LLM, SUPPORTED_TYPES
from difystack.fakes.xinference.engines import LaunchPlan, match_spec, unknown_model_message
from difystack.fakes.xinference.errors import ApiError, wrong_type
from difystack.fakes.xinference.state import (
    ACTIVE_STATUSES,
    LaunchRequest,
    ModelInstance,
    Status,
    XinferenceState,
    describe,
)

FALSE_QUERY_VALUES = frozenset({"0", "false", "no", "off", "f", "n"})  # FastAPI's bool parsing
STAGE_INFO = {"downloading": "Downloading model", "loading": "Loading model"}


class ModelHandlers:
    def __init__(self, state: XinferenceState) -> None:
        self.state = state

    def _launch_request(self, payload: dict[str, Any]) -> LaunchRequest:
        model_name = payload.get("model_name")
        model_type = payload.get("model_type") or LLM
        model_engine = payload.get("model_engine")
        if not model_name:
            raise ApiError(400, "Invalid input. Please specify the `model_name` field.")
        if not model_engine and model_type == LLM:
            raise ApiError(400, "Invalid input. Please specify the `model_engine` field.")
        for name in ("model_name", "model_type", "model_engine", "model_format", "quantization"):
            if payload.get(name) is not None and not isinstance(payload[name], str):
                raise wrong_type("body", name, "string", payload[name])
        replica = payload.get("replica", 1)
        if not isinstance(replica, int) or isinstance(replica, bool) or replica < 1:
            raise wrong_type("body", "replica", "integer", replica)
        gpu_idx = payload.get("gpu_idx")
        gpus = [gpu_idx] if isinstance(gpu_idx, int) else gpu_idx
        if gpus and len(gpus) % replica:
            raise ApiError(400, "Invalid input. Allocated gpu must be a multiple of replica.")
        model_uid = payload.get("model_uid")
        if model_uid is None:  # the name, or the name and a random suffix when it is taken
            taken = model_name in self.state.active()
            model_uid = f"{model_name}-{random_token(8)}" if taken else model_name
        if not isinstance(model_uid, str) or not self._valid_uid(model_uid):
            raise self.state.actor_error(
                400, "The model UID is invalid. Please specify the model UID by 0 < length <= 100."
            )
        request_limits = payload.get("request_limits")
        if isinstance(request_limits, int) and request_limits < 0:
            raise self.state.actor_error(
                400, "The `request_limits` parameter must be greater or equal than 0."
            )
        if model_uid in self.state.active():
            raise self.state.actor_error(400, f"Model is already in the model list, uid: {model_uid}")
        return LaunchRequest(
            model_uid=model_uid,
            model_name=str(model_name),
            model_type=str(model_type),
            model_engine=model_engine,
            model_format=payload.get("model_format"),
            model_size_in_billions=payload.get("model_size_in_billions"),
            quantization=payload.get("quantization"),
            replica=replica,
        )

    @staticmethod
    def _valid_uid(uid: str) -> bool:
        stripped = uid.strip()
        # "<uid>-rep<N>" names a replica internally, so Xinference refuses it as a uid.
        return 0 < len(stripped) <= 100 and re.search(r"-rep\d+$", stripped) is None

    async def launch_model(self, request: Request) -> Response:
        launch = self._launch_request(await json_object(request) or {})
        wait_ready = request.query_params.get("wait_ready", "true").lower() not in FALSE_QUERY_VALUES
        # Each model runs in its own sub-pool of the worker, on a port of its own.
        instance = ModelInstance(request=launch, address=f"0.0.0.0:{random.randint(20000, 65000)}")
        self.state.instances[launch.model_uid] = instance
        instance.log("INFO", f"Launch model {launch.model_name} as {launch.model_uid}")
        task = asyncio.get_running_loop().create_task(self._run_launch(instance))
        instance.task = task
        self.state.tasks.add(task)
        task.add_done_callback(lambda finished: self._launch_task_done(instance, finished))
        if wait_ready:
            await instance.done.wait()
            if instance.failure is not None:
                raise instance.failure
        return JSONResponse({"model_uid": launch.model_uid})

    def _plan(self, launch: LaunchRequest) -> LaunchPlan:
        if not self.state.workers_ready():
            raise self.state.actor_error(503, "No available worker found")
        if launch.model_type not in SUPPORTED_TYPES:
            raise self.state.actor_error(400, f"Unsupported model type: {launch.model_type}")
        found = self.state.registry.find(launch.model_type, launch.model_name)
        if found is None:
            available = [name for name, _ in self.state.registry.names(launch.model_type)]
            raise self.state.actor_error(
                400, unknown_model_message(launch.model_type, launch.model_name, available)
            )
        engine = launch.model_engine or DEFAULT_ENGINE.get(launch.model_type, "")
        try:
            return match_spec(
                launch.model_type,
                found[0],
                engine,
                launch.model_format,
                launch.model_size_in_billions,
                launch.quantization,
            )
        except ValueError as exc:
            raise self.state.actor_error(400, str(exc)) from exc

    async def _run_launch(self, instance: ModelInstance) -> None:
        launch = instance.request
        try:
            instance.plan = self._plan(launch)
            async with self.state.launch_slots():
                instance.status = Status.LOADING
                instance.loading_since = time.monotonic()
                await asyncio.sleep(self.state.behaviour.launch_latency)
            if self._launch_injected_to_fail(launch):
                raise self.state.actor_error(
                    500,
                    f"Failed to launch model {launch.model_uid}: RuntimeError: injected launch failure "
                    "(DIFYSTACK_FAKE_FAIL)",
                )
            instance.status = Status.READY
            instance.log("INFO", f"Model {launch.model_uid} is ready")
            instance.held_by_worker = not self._worker_restarts_after(launch)
        except ApiError as exc:
            self._launch_failed(instance, exc)

    def _launch_injected_to_fail(self, launch: LaunchRequest) -> bool:
        if any(self.state.behaviour.fails("launch", t) for t in (launch.model_name, launch.model_uid)):
            return True
        # A transient failure (a download hiccup, an OOM...): only the first attempt fails.
        for target in (launch.model_name, launch.model_uid):
            if self.state.behaviour.fails("launch-once", target) and target not in self.state.failed_once:
                self.state.failed_once.add(target)
                return True
        return False

    def _worker_restarts_after(self, launch: LaunchRequest) -> bool:
        for target in (launch.model_name, launch.model_uid):
            if (
                self.state.behaviour.fails("worker-restart-once", target)
                and target not in self.state.restarted_once
            ):
                self.state.restarted_once.add(target)
                return True
        return False

    def _launch_task_done(self, instance: ModelInstance, task: asyncio.Task[None]) -> None:
        # Runs even when the task was cancelled before its first step.
        self.state.tasks.discard(task)
        if not instance.finished:
            self._launch_failed(instance, ApiError(499, "Launch cancelled"))
        instance.done.set()

    def _launch_failed(self, instance: ModelInstance, error: ApiError) -> None:
        instance.failure = error
        instance.status = Status.ERROR
        instance.log("ERROR", str(error.detail))
        if instance.terminating:
            self.state.instances.pop(instance.uid, None)

    async def list_models(self, _: Request) -> Response:
        data = []
        for instance in self.state.ready_models():
            description = describe(instance)
            description.pop("n_worker")
            data.append(
                {"id": instance.uid, "object": "model", "created": 0, "owned_by": "xinference", **description}
            )
        return JSONResponse({"object": "list", "data": data})

    async def describe_model(self, request: Request) -> Response:
        instance = self.state.loaded(request.path_params["model_uid"], not_found_status=400)
        return JSONResponse(describe(instance))

    async def terminate_model(self, request: Request) -> Response:
        uid = request.path_params["model_uid"]
        instance = self.state.instances.get(uid)
        if instance is None or instance.status not in ACTIVE_STATUSES:
            raise self.state.actor_error(400, f"Model not found in the model list, uid: {uid}")
        if instance.status is Status.READY:
            self.state.instances.pop(uid)
        else:
            instance.terminating = True
            await self._cancel(instance)
        return JSONResponse(None)

    async def cancel_launch(self, request: Request) -> Response:
        uid = request.path_params["model_uid"]
        instance = self.state.instances.get(uid)
        if instance is None or instance.status not in ACTIVE_STATUSES:
            raise self.state.actor_error(400, f"Model {uid} has not been launched yet")
        if instance.status is not Status.READY:
            await self._cancel(instance)
        return JSONResponse(None)

    @staticmethod
    async def _cancel(instance: ModelInstance) -> None:
        if instance.task is not None and not instance.task.done():
            instance.task.cancel()
        await instance.done.wait()

    async def list_instances(self, request: Request) -> Response:
        name, uid = request.query_params.get("model_name"), request.query_params.get("model_uid")
        rows = []
        for instance in sorted(self.state.instances.values(), key=lambda inst: inst.uid):
            if (uid and instance.uid != uid) or (name and instance.request.model_name != name):
                continue
            rows.append(self._instance_info(instance))
        return JSONResponse(rows)

    def _instance_info(self, instance: ModelInstance) -> dict[str, Any]:
        abilities: list[str] = []
        if instance.plan is not None:
            abilities = describe(instance)["model_ability"]
        return {
            "model_name": instance.request.model_name,
            "model_uid": instance.uid,
            "model_version": None,
            "model_ability": abilities,
            "replica": instance.request.replica,
            "status": instance.status.value,
            "instance_created_ts": instance.created_ts,
            "n_worker": 1,
            "replica_statuses": [
                {
                    "replica_id": i,
                    "replica_model_uid": f"{instance.uid}-rep{i}",
                    "worker_address": self.state.worker_address,
                    "status": instance.status.value,
                    "model_state": "ready" if instance.status is Status.READY else "",
                    "created_ts": instance.created_ts,
                    "error_message": str(instance.failure.detail) if instance.failure else None,
                    "replica_uid": None,
                    "gpu_idx": None,
                }
                for i in range(instance.request.replica)
            ],
        }

    async def launch_progress(self, request: Request) -> Response:
        uid = request.path_params["model_uid"]
        instance = self.state.instances.get(uid)
        progress, stage = self._progress(instance)
        replica = {
            "replica_id": 0,
            "replica_model_uid": f"{uid}-rep0",
            "progress": progress,
            "stage": stage,
            "info": STAGE_INFO.get(stage, ""),
            "updated_at": float(instance.created_ts) if instance else time.time(),
            "download_files": [],
            "dependency_install_completed": None,
            "dependency_install_total": None,
            "dependency_install_plan": None,
            "dependency_install_status": "skipped",
        }
        return JSONResponse(
            {"progress": progress, "stage": stage, "download_files": [], "replicas": [replica]}
        )

    def _progress(self, instance: ModelInstance | None) -> tuple[float, str]:
        if instance is None or instance.status in (Status.CREATING, Status.ERROR):
            return 0.0, "pending"
        if instance.status is Status.READY:
            return 1.0, "loading"  # 4.1.0 keeps the last stage once the model is ready
        latency = self.state.behaviour.launch_latency or 1.0
        elapsed = time.monotonic() - (instance.loading_since or time.monotonic())
        fraction = round(min(0.99, elapsed / latency), 3)
        return fraction, "downloading" if fraction < 0.5 else "loading"

    async def model_events(self, request: Request) -> Response:
        instance = self.state.instances.get(request.path_params["model_uid"])
        return JSONResponse(instance.events if instance else [])
