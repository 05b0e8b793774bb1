"""Model and gallery routes: the configured models, the gallery index, and the install /
delete jobs (``POST /models/apply``, ``POST /models/delete/{name}``, ``GET /models/jobs``)."""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.common.http import json_object
from difystack.fakes.localai.catalogue import GALLERY_ENTRIES, entry_backend
from difystack.fakes.localai.errors import BAD_JSON_BODY, LocalAIError
from difystack.fakes.localai.installer import GalleryOp
from difystack.fakes.localai.state import LocalAIState


def base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}/"


class GalleryHandlers:
    def __init__(self, state: LocalAIState) -> None:
        self.state = state

    async def list_models(self, request: Request) -> Response:
        pattern = request.query_params.get("filter", "")
        try:
            matcher = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise LocalAIError(500, f"error parsing regexp: {exc}") from exc
        names = [name for name in self.state.configs if matcher is None or matcher.search(name)]
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model"} for name in names]})

    async def available_models(self, _: Request) -> Response:
        if not self.state.settings.galleries:
            return JSONResponse([])
        gallery = self.state.settings.galleries[0]
        listing = [
            {
                "url": entry["url"],
                "name": entry["name"],
                "description": entry["description"],
                "license": entry["license"],
                "urls": entry["urls"],
                "icon": entry["icon"],
                "tags": entry["tags"],
                "files": entry["files"],
                "gallery": {"name": gallery.get("name", ""), "url": gallery.get("url", "")},
                "installed": (self.state.settings.models_path / f"{entry['name']}.yaml").exists(),
                "backend": entry_backend(entry),
            }
            for entry in GALLERY_ENTRIES
        ]
        return JSONResponse(listing)

    async def galleries(self, _: Request) -> Response:
        return JSONResponse(list(self.state.settings.galleries))

    async def apply(self, request: Request) -> Response:
        body = await json_object(request)
        if body is None:
            raise LocalAIError(400, BAD_JSON_BODY)
        op = GalleryOp(id=str(uuid.uuid1()), request=body, element_name=str(body.get("id") or ""))
        self.state.enqueue(op)
        return self._job_accepted(request, op)

    async def delete(self, request: Request) -> Response:
        name = request.path_params["name"]
        op = GalleryOp(id=str(uuid.uuid1()), request={}, element_name=name, deletion=True)
        self.state.enqueue(op)
        return self._job_accepted(request, op)

    def _job_accepted(self, request: Request, op: GalleryOp) -> Response:
        return JSONResponse({"uuid": op.id, "status": f"{base_url(request)}models/jobs/{op.id}"})

    async def job_status(self, request: Request) -> Response:
        status = self.state.jobs.get(request.path_params["uuid"])
        if status is None:
            raise LocalAIError(500, "could not find any status for ID")
        return JSONResponse(status.as_json())

    async def all_jobs(self, _: Request) -> Response:
        return JSONResponse({job_id: status.as_json() for job_id, status in self.state.jobs.items()})

    async def reload(self, _: Request) -> Response:
        self.state.reload_configs()
        return JSONResponse({"success": True, "message": "Model configurations reloaded successfully"})
