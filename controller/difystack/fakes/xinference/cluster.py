"""Readiness and cluster routes: ``/status`` lists no worker until the fake is ready."""

from __future__ import annotations

import os
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.xinference.catalogue import FULL_REVISION_ID, VERSION
from difystack.fakes.xinference.state import XinferenceState

HEALTH_CHECK_FAILURE_THRESHOLD = 5


class ClusterHandlers:
    def __init__(self, state: XinferenceState) -> None:
        self.state = state

    def worker_status(self) -> dict[str, Any]:
        if not self.state.workers_ready():
            return {}
        loaded = len(self.state.ready_models())
        return {
            self.state.worker_address: {
                "update_time": time.time(),
                "failure_remaining_count": HEALTH_CHECK_FAILURE_THRESHOLD,
                "status": {
                    "cpu": {
                        "usage": 0.03,
                        "total": os.cpu_count() or 1,
                        "memory_used": 1_195_626_496 + loaded * 700_000_000,
                        "memory_available": 24_080_883_712 - loaded * 700_000_000,
                        "memory_total": 25_276_510_208,
                    }
                },
            }
        }

    async def status(self, _: Request) -> Response:
        return JSONResponse({"uptime": int(self.state.readiness.uptime()), "workers": self.worker_status()})

    async def cluster_auth(self, _: Request) -> Response:
        return JSONResponse({"auth": self.state.auth_enabled})

    async def address(self, _: Request) -> Response:
        return JSONResponse(self.state.supervisor_address)

    async def cluster_version(self, _: Request) -> Response:
        return JSONResponse({"version": VERSION, "full-revisionid": FULL_REVISION_ID})

    async def cluster_info(self, _: Request) -> Response:
        nodes = [("Supervisor", self.state.supervisor_address)]
        if self.state.workers_ready():
            nodes.append(("Worker", self.state.worker_address))
        return JSONResponse(
            [
                {"node_type": node_type, "ip_address": address, "gpu_count": 0, "gpu_vram_total": 0}
                for node_type, address in nodes
            ]
        )

    async def cluster_devices(self, _: Request) -> Response:
        return JSONResponse(0)

    async def workers_info(self, _: Request) -> Response:
        # Each worker answers with the models it holds, keyed by replica uid.
        held = {
            f"{instance.uid}-rep{replica}": {"model_name": instance.request.model_name}
            for instance in self.state.ready_models()
            if instance.held_by_worker
            for replica in range(instance.request.replica)
        }
        workers = (
            [{"work-ip": self.state.worker_address, "models": held}] if self.state.workers_ready() else []
        )
        return JSONResponse(workers)
