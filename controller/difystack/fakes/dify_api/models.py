"""Model-provider routes of the fake Dify api: providers, model credentials (the CRUD API from
1.8 on; before it ``POST .../models`` saves the credential), model enable/disable, listings by
provider and by type, and the workspace's default models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from difystack.fakes.dify_api.config import ApiConfig
from difystack.fakes.dify_api.errors import invalid_param
from difystack.fakes.dify_api.providers import ModelProviders, ModelRef
from difystack.fakes.dify_api.schemas import (
    CredentialsValidateFailedError,
    credential_name,
    credentials_of_body,
    model_and_type,
    normalize_provider,
    parse_model_type,
    request_body,
    uuid_value,
)
from difystack.fakes.dify_api.state import ApiState, Principal, now_iso


class ModelHandlers:
    def __init__(self, config: ApiConfig, state: ApiState, providers: ModelProviders) -> None:
        self.config = config
        self.state = state
        self.providers = providers

    async def list_providers(self, request: Request, principal: Principal) -> Response:
        model_type = request.query_params.get("model_type")
        data = []
        for provider in (await self.providers.providers(principal)).values():
            declaration = provider.declaration
            if model_type and model_type not in declaration.get("supported_model_types", []):
                continue
            credentials = self.providers.credentials_of(provider.provider)
            data.append(
                {
                    **self.providers.simple_provider(principal, provider),
                    "description": declaration.get("description"),
                    "background": declaration.get("background"),
                    "help": declaration.get("help"),
                    "configurate_methods": declaration.get("configurate_methods", []),
                    "provider_credential_schema": declaration.get("provider_credential_schema"),
                    "model_credential_schema": declaration.get("model_credential_schema"),
                    "preferred_provider_type": "custom",
                    "custom_configuration": {
                        "status": "active"
                        if self.providers.records_of(provider.provider) or credentials
                        else "no-configure",
                        "current_credential_id": None,
                        "current_credential_name": None,
                        "available_credentials": [],
                        "custom_models": [
                            self.custom_model_summary(record)
                            for record in self.providers.records_of(provider.provider)
                        ],
                    },
                    "system_configuration": {
                        "enabled": False,
                        "current_quota_type": None,
                        "quota_configurations": [],
                    },
                }
            )
        return JSONResponse({"data": data})

    def custom_model_summary(self, record: Mapping[str, Any]) -> dict[str, Any]:
        credential = self.providers.credential_by_id(record.get("credential_id"))
        return {
            "model": record["model"],
            "model_type": record["model_type"],
            "credentials": None,
            "current_credential_id": record.get("credential_id"),
            "current_credential_name": credential["name"] if credential else None,
            "available_model_credentials": [
                {"credential_id": item["id"], "credential_name": item["name"]}
                for item in self.providers.credentials_of(
                    record["provider"], record["model"], record["model_type"]
                )
            ],
            "unadded_to_model_list": False,
        }

    async def get_credentials(self, request: Request, principal: Principal) -> Response:
        params = request.query_params
        if "model" not in params:
            raise invalid_param("model: Field required")
        model, model_type = params["model"], parse_model_type(params.get("model_type"))
        provider = await self.providers.require_provider(principal, request.path_params["provider"])
        current = self.providers.current_credential(provider, model, model_type, params.get("credential_id"))
        load_balancing = {"enabled": False, "configs": []}
        if not self.config.features.credentials_api:
            return JSONResponse(
                {"credentials": current["credentials"] if current else {}, "load_balancing": load_balancing}
            )
        available = [
            {"credential_id": item["id"], "credential_name": item["name"]}
            for item in self.providers.credentials_of(provider.provider, model, model_type)
        ]
        return JSONResponse(
            {
                "credentials": current["credentials"] if current else {},
                "current_credential_id": current["id"] if current else None,
                "current_credential_name": current["name"] if current else None,
                "load_balancing": load_balancing,
                "available_credentials": available,
            }
        )

    async def create_credential(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        name = credential_name(body)
        credentials = credentials_of_body(body)
        provider = await self.providers.require_provider(principal, request.path_params["provider"])
        if name and any(
            item["name"] == name
            for item in self.providers.credentials_of(provider.provider, model, model_type)
        ):
            raise invalid_param(f"Model credential with name '{name}' already exists for {model}.")
        name = name or self.providers.next_credential_name(provider.provider, model, model_type)
        ref = ModelRef(principal, provider, model_type, model)
        validated = await self.providers.validated_or_400(ref, credentials)
        credential = self.providers.store_credential(provider.provider, model, model_type, name, validated)
        if self.providers.model_record(provider.provider, model, model_type) is None:
            self.providers.add_model_record(provider.provider, model, model_type, credential["id"])
        self.state.save()
        return JSONResponse({"result": "success"}, status_code=201)

    async def update_credential(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        credential_id = uuid_value(body.get("credential_id"), "credential_id")
        name = credential_name(body)
        credentials = credentials_of_body(body)
        provider = await self.providers.require_provider(principal, request.path_params["provider"])
        siblings = self.providers.credentials_of(provider.provider, model, model_type)
        if name and any(item["name"] == name and item["id"] != credential_id for item in siblings):
            raise invalid_param(f"Model credential with name '{name}' already exists for {model}.")
        stored = self.providers.credential_by_id(credential_id)
        original = stored["credentials"] if stored else None
        ref = ModelRef(principal, provider, model_type, model)
        validated = await self.providers.validated_or_400(ref, credentials, original)
        credential = self.providers.credential_for(provider.provider, model, model_type, credential_id)
        credential.update(credentials=validated, updated_at=now_iso())
        if name:
            credential["name"] = name
        self.state.save()
        return JSONResponse({"result": "success"})

    async def _addressed_credential(
        self, request: Request, principal: Principal
    ) -> tuple[dict[str, Any], tuple[str, str, str]]:
        """The stored credential the body names, and its (provider, model, model type)."""
        body = await request_body(request)
        model, model_type = model_and_type(body)
        credential_id = uuid_value(body.get("credential_id"), "credential_id")
        provider = await self.providers.require_provider(principal, request.path_params["provider"])
        key = (provider.provider, model, model_type)
        return self.providers.credential_for(*key, credential_id), key

    async def delete_credential(self, request: Request, principal: Principal) -> Response:
        credential, key = await self._addressed_credential(request, principal)
        remaining = len(self.providers.credentials_of(*key))
        self.state.model_credentials.remove(credential)
        record = self.providers.model_record(*key)
        if record is not None and remaining <= 1:
            self.state.provider_models.remove(record)
        elif record is not None and record["credential_id"] == credential["id"]:
            record["credential_id"] = None
        self.state.save()
        return Response(status_code=204)

    async def switch_credential(self, request: Request, principal: Principal) -> Response:
        credential, key = await self._addressed_credential(request, principal)
        record = self.providers.model_record(*key)
        if record is None:
            self.providers.add_model_record(*key, credential["id"])
        elif record["credential_id"] == credential["id"]:
            raise invalid_param("Can't add same credential")
        else:
            record["credential_id"] = credential["id"]
        self.state.save()
        return JSONResponse({"result": "success"})

    async def validate_credentials(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        credentials = credentials_of_body(body)
        provider = await self.providers.require_provider(principal, request.path_params["provider"])
        try:
            await self.providers.validate(ModelRef(principal, provider, model_type, model), credentials)
        except CredentialsValidateFailedError as exc:
            return JSONResponse({"result": "error", "error": str(exc) or ""})
        return JSONResponse({"result": "success"})

    async def save_model(self, request: Request, principal: Principal) -> Response:
        """``POST .../models``: from 1.8 on it ignores ``credentials`` (a silent no-op)."""
        body = await request_body(request)
        model, model_type = model_and_type(body)
        if not self.config.features.credentials_api:
            return await self.save_legacy_model(request, principal, body, model, model_type)
        if body.get("config_from") == "custom-model":
            if not body.get("credential_id"):
                raise invalid_param("credential_id is required when configuring a custom-model")
            credential_id = uuid_value(body["credential_id"], "credential_id")
            provider = await self.providers.require_provider(principal, request.path_params["provider"])
            self.providers.credential_for(provider.provider, model, model_type, credential_id)
            record = self.providers.model_record(provider.provider, model, model_type)
            if record is None:
                raise invalid_param("The custom model record not found.")
            record["credential_id"] = credential_id
            self.state.save()
        return JSONResponse({"result": "success"})

    async def save_legacy_model(
        self, request: Request, principal: Principal, body: Mapping[str, Any], model: str, model_type: str
    ) -> Response:
        """< 1.8: one credential per model, saved (after validation) by ``POST .../models``."""
        load_balancing = body.get("load_balancing") or {}
        if load_balancing.get("enabled") or body.get("config_from") == "predefined-model":
            return JSONResponse({"result": "success"})
        provider = await self.providers.require_provider(principal, request.path_params["provider"])
        credentials = credentials_of_body(body)
        existing = self.providers.credentials_of(provider.provider, model, model_type)
        original = existing[0]["credentials"] if existing else None
        ref = ModelRef(principal, provider, model_type, model)
        validated = await self.providers.validated_or_400(ref, credentials, original)
        if existing:
            existing[0].update(credentials=validated, updated_at=now_iso())
        else:
            credential = self.providers.store_credential(
                provider.provider, model, model_type, "API KEY 1", validated
            )
            self.providers.add_model_record(provider.provider, model, model_type, credential["id"])
        self.state.save()
        return JSONResponse({"result": "success"})

    async def delete_model(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        provider = await self.providers.require_provider(principal, request.path_params["provider"])
        record = self.providers.model_record(provider.provider, model, model_type)
        if record is not None:
            self.state.provider_models.remove(record)
        if not self.config.features.credentials_api:
            for credential in self.providers.credentials_of(provider.provider, model, model_type):
                self.state.model_credentials.remove(credential)
        self.state.save()
        return Response(status_code=204)

    async def set_model_enabled(self, request: Request, principal: Principal, enabled: bool) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        provider = await self.providers.require_provider(principal, request.path_params["provider"])
        key = (provider.provider, model, model_type)
        for setting in self.state.model_settings:
            if (setting["provider"], setting["model"], setting["model_type"]) == key:
                setting["enabled"] = enabled
                break
        else:
            self.state.model_settings.append(
                {"provider": provider.provider, "model": model, "model_type": model_type, "enabled": enabled}
            )
        self.state.save()
        return JSONResponse({"result": "success"})

    async def enable_model(self, request: Request, principal: Principal) -> Response:
        return await self.set_model_enabled(request, principal, True)

    async def disable_model(self, request: Request, principal: Principal) -> Response:
        return await self.set_model_enabled(request, principal, False)

    async def list_models(self, request: Request, principal: Principal) -> Response:
        provider_id = normalize_provider(request.path_params["provider"])
        provider = (await self.providers.providers(principal)).get(provider_id)
        return JSONResponse(
            {"data": await self.providers.provider_models(principal, provider) if provider else []}
        )

    async def models_by_type(self, request: Request, principal: Principal) -> Response:
        model_type = parse_model_type(request.path_params["model_type"], accept_origin=True)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for model in await self.providers.active_models(principal, model_type):
            if not model["deprecated"]:
                grouped.setdefault(model["provider"]["provider"], []).append(model)
        data = []
        for models in grouped.values():
            provider = models[0]["provider"]
            data.append(
                {
                    "tenant_id": principal.tenant_id,
                    "provider": provider["provider"],
                    "label": provider["label"],
                    "icon_small": provider["icon_small"],
                    "icon_large": provider["icon_large"],
                    "status": "active",
                    "models": [
                        {
                            key: model[key]
                            for key in ("model", "label", "model_type", "features", "fetch_from")
                        }
                        | {
                            "model_properties": model["model_properties"],
                            "deprecated": model["deprecated"],
                            "status": model["status"],
                            "load_balancing_enabled": False,
                        }
                        for model in models
                    ],
                }
            )
        return JSONResponse({"data": data})

    # --- default models -----------------------------------------------------------------

    async def set_default_models(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        settings = body.get("model_settings")
        if not isinstance(settings, list):
            raise invalid_param("model_settings: Field required")
        for setting in settings:
            if not isinstance(setting, dict) or not isinstance(setting.get("model"), str):
                raise invalid_param("model_settings.model: Field required")
            model_type = parse_model_type(setting.get("model_type"))
            if setting.get("provider") is None:
                continue
            error = await self.default_model_error(
                principal, str(setting["provider"]), model_type, setting["model"]
            )
            if error and self.config.features.strict_default_model:
                raise invalid_param(error)
            if not error:  # old versions only log the error and still answer success
                self.state.default_models[model_type] = {
                    "provider": normalize_provider(str(setting["provider"])),
                    "model": setting["model"],
                }
        self.state.save()
        return JSONResponse({"result": "success"})

    async def default_model_error(
        self, principal: Principal, raw_provider: str, model_type: str, model: str
    ) -> str | None:
        provider_id = normalize_provider(raw_provider)
        if provider_id not in await self.providers.providers(principal):
            return f"Provider {raw_provider} does not exist."
        active = await self.providers.active_models(principal, model_type)
        if model not in [m["model"] for m in active if m["provider"]["provider"] == provider_id]:
            return f"Model {model} does not exist."
        return None

    async def get_default_model(self, request: Request, principal: Principal) -> Response:
        model_type = parse_model_type(request.query_params.get("model_type"))
        default = self.state.default_models.get(model_type)
        if default is None:
            # Like ProviderManager.get_default_model: adopt the first active model of that type.
            active = await self.providers.active_models(principal, model_type)
            if not active:
                return JSONResponse({"data": None})
            default = {"provider": active[0]["provider"]["provider"], "model": active[0]["model"]}
            self.state.default_models[model_type] = default
            self.state.save()
        provider = (await self.providers.providers(principal)).get(default["provider"])
        if provider is None:
            return JSONResponse({"data": None})
        return JSONResponse(
            {
                "data": {
                    "model": default["model"],
                    "model_type": model_type,
                    "provider": self.providers.simple_provider(principal, provider),
                }
            }
        )
