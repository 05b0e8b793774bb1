"""Catalogue and registration routes: ``/v1/model_registrations`` and ``/v1/engines``."""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.common.http import json_body
from difystack.fakes.xinference.catalogue import EMPTY_TYPES, LLM, SUPPORTED_TYPES
from difystack.fakes.xinference.engines import engine_params
from difystack.fakes.xinference.errors import RegistrationError, missing_field, wrong_type
from difystack.fakes.xinference.registry import parse_custom_spec
from difystack.fakes.xinference.state import XinferenceState


class RegistrationHandlers:
    def __init__(self, state: XinferenceState) -> None:
        self.state = state

    def _require_known_type(self, model_type: str, *, allow_empty: bool) -> None:
        if model_type in SUPPORTED_TYPES or (allow_empty and model_type in EMPTY_TYPES):
            return
        raise self.state.actor_error(400, f"Unsupported model type: {model_type}")

    async def list_registrations(self, request: Request) -> Response:
        model_type = request.path_params["model_type"]
        self._require_known_type(model_type, allow_empty=True)
        if model_type in EMPTY_TYPES:
            return JSONResponse([])
        detailed = request.query_params.get("detailed", "false").lower() in ("true", "1")
        if not detailed:
            return JSONResponse(
                [
                    {"model_name": name, "is_builtin": builtin}
                    for name, builtin in self.state.registry.names(model_type)
                ]
            )
        rows = []
        for name, _builtin in self.state.registry.names(model_type):
            found = self.state.registry.find(model_type, name)
            assert found is not None
            rows.append(self._detailed_registration(model_type, *found))
        return JSONResponse(rows)

    def _detailed_registration(
        self, model_type: str, family: dict[str, Any], builtin: bool
    ) -> dict[str, Any]:
        instances = [
            inst
            for inst in self.state.active().values()
            if inst.request.model_type == model_type and inst.request.model_name == family["model_name"]
        ]
        return {
            **copy.deepcopy(family),
            "is_builtin": builtin,
            "model_specs": [{**spec, "cache_status": False} for spec in family["model_specs"]],
            "download_hubs": sorted({spec["model_hub"] for spec in family["model_specs"]}),
            "model_version_count": len(family["model_specs"]),
            "model_instance_count": len(instances),
        }

    async def get_registration(self, request: Request) -> Response:
        model_type, name = request.path_params["model_type"], request.path_params["model_name"]
        self._require_known_type(model_type, allow_empty=True)
        found = self.state.registry.find(model_type, name)
        if found is None:
            raise self.state.actor_error(400, f"Model {name} not found")
        family, builtin = found
        return JSONResponse({**copy.deepcopy(family), "is_builtin": builtin})

    async def register_model(self, request: Request) -> Response:
        model_type = request.path_params["model_type"]
        body = await json_body(request)
        if not isinstance(body, dict) or "model" not in body:
            raise missing_field("body", "model", body)
        if not isinstance(body["model"], str):
            raise wrong_type("body", "model", "string", body["model"])
        self._require_known_type(model_type, allow_empty=False)
        try:
            family = parse_custom_spec(model_type, body["model"])
            self.state.registry.register(model_type, family, bool(body.get("persist", False)))
        except RegistrationError as exc:
            raise self.state.actor_error(exc.status, exc.message) from exc
        return JSONResponse(None)

    async def unregister_model(self, request: Request) -> Response:
        model_type, name = request.path_params["model_type"], request.path_params["model_name"]
        self._require_known_type(model_type, allow_empty=False)
        self.state.registry.unregister(model_type, name)
        return JSONResponse(None)

    async def llm_engines(self, request: Request) -> Response:
        return self._engines(LLM, request.path_params["model_name"])

    async def typed_engines(self, request: Request) -> Response:
        model_type = request.path_params["model_type"]
        self._require_known_type(model_type, allow_empty=True)
        return self._engines(model_type, request.path_params["model_name"])

    def _engines(self, model_type: str, name: str) -> Response:
        found = self.state.registry.find(model_type, name) if model_type in SUPPORTED_TYPES else None
        return JSONResponse(engine_params(model_type, found[0]) if found else None)
