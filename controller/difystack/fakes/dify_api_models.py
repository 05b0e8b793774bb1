"""Model providers, model credentials and default models of the fake Dify api (§5).

A provider exists only while its plugin is installed: declarations (and credential
schemas) come from the plugin daemon's ``/management/models``. Credentials go through Dify's
filter (``__model_type`` injected, schema variables only, required non-empty, strings only,
select options, ``show_on``, defaults for missing optional fields, empty values dropped) and
then the plugin's ``validate_model_credentials`` over the daemon; what the plugin returns is
merged into what is stored. Model schemas for listings come from the daemon's
``dispatch/model/schema``, as in the real api.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from difystack.fakes.dify_api_core import (
    ApiConfig,
    ApiState,
    PluginDaemonClient,
    PluginDaemonFailure,
    Principal,
    invalid_param,
    now_iso,
    obfuscated_token,
)
from difystack.fakes.dify_api_schemas import (
    API_KEY_NAME_PATTERN,
    HIDDEN_VALUE,
    CredentialsValidateFailedError,
    Provider,
    credential_name,
    credentials_of_body,
    model_and_type,
    normalize_provider,
    parse_model_type,
    request_body,
    uuid_value,
    validate_and_filter,
)

ConsoleHandler = Callable[[Request, Principal], Awaitable[Response]]


class ModelProviders:
    def __init__(self, config: ApiConfig, state: ApiState, daemon: PluginDaemonClient) -> None:
        self.config = config
        self.state = state
        self.daemon = daemon
        self._schema_cache: dict[str, dict[str, Any] | None] = {}

    # --- providers ----------------------------------------------------------------------

    async def providers(self, principal: Principal) -> dict[str, Provider]:
        path = f"/plugin/{principal.tenant_id}/management/models"
        entries = await self.daemon.call("GET", path, params={"page": 1, "page_size": 256})
        providers = {}
        for entry in entries or []:
            provider_id = f"{entry['plugin_id']}/{entry['provider']}"
            providers[provider_id] = Provider(provider_id, entry["plugin_id"], entry["declaration"])
        return providers

    async def require_provider(self, principal: Principal, raw: str) -> Provider:
        provider = (await self.providers(principal)).get(normalize_provider(raw))
        if provider is None:
            raise invalid_param(f"Provider {raw} does not exist.")
        return provider

    def icon(self, principal: Principal, declaration: Mapping[str, Any], key: str) -> dict[str, str] | None:
        icons = declaration.get(key)
        if not icons:
            return None
        base = f"{self.config.console_api_url}/console/api/workspaces/current/plugin/icon"
        return {
            lang: f"{base}?tenant_id={principal.tenant_id}&filename={name}" for lang, name in icons.items()
        }

    def simple_provider(self, principal: Principal, provider: Provider) -> dict[str, Any]:
        return {
            "tenant_id": principal.tenant_id,
            "provider": provider.provider,
            "label": provider.declaration.get("label"),
            "icon_small": self.icon(principal, provider.declaration, "icon_small"),
            "icon_large": self.icon(principal, provider.declaration, "icon_large"),
            "supported_model_types": provider.declaration.get("supported_model_types", []),
        }

    async def list_providers(self, request: Request, principal: Principal) -> Response:
        model_type = request.query_params.get("model_type")
        data = []
        for provider in (await self.providers(principal)).values():
            declaration = provider.declaration
            if model_type and model_type not in declaration.get("supported_model_types", []):
                continue
            credentials = self.credentials_of(provider.provider)
            data.append(
                {
                    **self.simple_provider(principal, provider),
                    "description": declaration.get("description"),
                    "background": declaration.get("background"),
                    "help": declaration.get("help"),
                    "configurate_methods": declaration.get("configurate_methods", []),
                    "provider_credential_schema": declaration.get("provider_credential_schema"),
                    "model_credential_schema": declaration.get("model_credential_schema"),
                    "preferred_provider_type": "custom",
                    "custom_configuration": {
                        "status": "active"
                        if self.records_of(provider.provider) or credentials
                        else "no-configure",
                        "current_credential_id": None,
                        "current_credential_name": None,
                        "available_credentials": [],
                        "custom_models": [
                            self.custom_model_summary(record) for record in self.records_of(provider.provider)
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
        credential = self.credential_by_id(record.get("credential_id"))
        return {
            "model": record["model"],
            "model_type": record["model_type"],
            "credentials": None,
            "current_credential_id": record.get("credential_id"),
            "current_credential_name": credential["name"] if credential else None,
            "available_model_credentials": [
                {"credential_id": item["id"], "credential_name": item["name"]}
                for item in self.credentials_of(record["provider"], record["model"], record["model_type"])
            ],
            "unadded_to_model_list": False,
        }

    # --- stored records -----------------------------------------------------------------

    def credentials_of(
        self, provider: str, model: str | None = None, model_type: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            item
            for item in self.state.model_credentials
            if item["provider"] == provider
            and (model is None or item["model"] == model)
            and (model_type is None or item["model_type"] == model_type)
        ]

    def credential_by_id(self, credential_id: str | None) -> dict[str, Any] | None:
        return next((item for item in self.state.model_credentials if item["id"] == credential_id), None)

    def records_of(self, provider: str) -> list[dict[str, Any]]:
        return [record for record in self.state.provider_models if record["provider"] == provider]

    def model_record(self, provider: str, model: str, model_type: str) -> dict[str, Any] | None:
        return next(
            (
                record
                for record in self.state.provider_models
                if (record["provider"], record["model"], record["model_type"])
                == (provider, model, model_type)
            ),
            None,
        )

    def model_enabled(self, provider: str, model: str, model_type: str) -> bool:
        for setting in self.state.model_settings:
            if (setting["provider"], setting["model"], setting["model_type"]) == (
                provider,
                model,
                model_type,
            ):
                return bool(setting["enabled"])
        return True

    def credential_for(
        self, provider: str, model: str, model_type: str, credential_id: str
    ) -> dict[str, Any]:
        credential = self.credential_by_id(credential_id)
        if credential is None or (credential["provider"], credential["model"], credential["model_type"]) != (
            provider,
            model,
            model_type,
        ):
            raise invalid_param("Credential record not found.")
        return credential

    def next_credential_name(self, provider: str, model: str, model_type: str) -> str:
        numbers = [
            int(match.group(1))
            for item in self.credentials_of(provider, model, model_type)
            if (match := API_KEY_NAME_PATTERN.match(item["name"].strip()))
        ]
        return f"API KEY {max(numbers, default=0) + 1}"

    def obfuscate(self, provider: Provider, credentials: Mapping[str, Any]) -> dict[str, Any]:
        secrets = provider.secret_variables
        return {
            key: obfuscated_token(value) if key in secrets else value for key, value in credentials.items()
        }

    # --- validation through the plugin daemon -------------------------------------------

    async def validate(
        self,
        principal: Principal,
        provider: Provider,
        model_type: str,
        model: str,
        credentials: Mapping[str, Any],
        original: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Filter by the schema, let the plugin validate, return what Dify stores."""
        given = dict(credentials)
        for key in provider.secret_variables:
            if given.get(key) == HIDDEN_VALUE and original and key in original:
                given[key] = original[key]
        filtered = validate_and_filter(provider.credential_schemas, model_type, given)
        payload = _dispatch_payload(principal, provider, model_type, model, filtered)
        path = f"/plugin/{principal.tenant_id}/dispatch/model/validate_model_credentials"
        try:
            result = await self.daemon.dispatch(path, provider.plugin_id, payload)
        except PluginDaemonFailure as failure:
            inner = failure.plugin_invoke_error()
            raise CredentialsValidateFailedError(inner[1] if inner else str(failure)) from failure
        if isinstance(result, dict) and isinstance(result.get("credentials"), dict):
            filtered.update(result["credentials"])
        return filtered

    async def model_schema(
        self,
        principal: Principal,
        provider: Provider,
        model_type: str,
        model: str,
        credentials: Mapping[str, Any],
    ) -> dict[str, Any] | None:
        key = json.dumps([provider.provider, model_type, model, credentials], sort_keys=True, default=str)
        if key not in self._schema_cache:
            payload = _dispatch_payload(principal, provider, model_type, model, credentials)
            path = f"/plugin/{principal.tenant_id}/dispatch/model/schema"
            try:
                result = await self.daemon.dispatch(path, provider.plugin_id, payload)
            except PluginDaemonFailure:
                return None  # "get custom model schema failed": the model is left out of listings
            self._schema_cache[key] = result.get("model_schema") if isinstance(result, dict) else None
        return self._schema_cache[key]

    # --- credentials (>= 1.8) -----------------------------------------------------------

    async def get_credentials(self, request: Request, principal: Principal) -> Response:
        params = request.query_params
        if "model" not in params:
            raise invalid_param("model: Field required")
        model, model_type = params["model"], parse_model_type(params.get("model_type"))
        provider = await self.require_provider(principal, request.path_params["provider"])
        current = self.current_credential(provider, model, model_type, params.get("credential_id"))
        load_balancing = {"enabled": False, "configs": []}
        if not self.config.features.credentials_api:
            return JSONResponse(
                {"credentials": current["credentials"] if current else {}, "load_balancing": load_balancing}
            )
        available = [
            {"credential_id": item["id"], "credential_name": item["name"]}
            for item in self.credentials_of(provider.provider, model, model_type)
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

    def current_credential(
        self, provider: Provider, model: str, model_type: str, credential_id: str | None
    ) -> dict[str, Any] | None:
        if credential_id:
            credential = self.credential_by_id(uuid_value(credential_id, "credential_id"))
            if (
                credential is None
                or credential["provider"] != provider.provider
                or credential["model"] != model
            ):
                raise invalid_param(f"Credential with id {credential_id} not found.")
        else:
            record = self.model_record(provider.provider, model, model_type)
            credential = self.credential_by_id(record.get("credential_id")) if record else None
        if credential is None:
            return None
        return {**credential, "credentials": self.obfuscate(provider, credential["credentials"])}

    async def create_credential(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        name = credential_name(body)
        credentials = credentials_of_body(body)
        provider = await self.require_provider(principal, request.path_params["provider"])
        if name and any(
            item["name"] == name for item in self.credentials_of(provider.provider, model, model_type)
        ):
            raise invalid_param(f"Model credential with name '{name}' already exists for {model}.")
        name = name or self.next_credential_name(provider.provider, model, model_type)
        validated = await self.validated_or_400(principal, provider, model_type, model, credentials)
        credential = self.store_credential(provider.provider, model, model_type, name, validated)
        if self.model_record(provider.provider, model, model_type) is None:
            self.add_model_record(provider.provider, model, model_type, credential["id"])
        self.state.save()
        return JSONResponse({"result": "success"}, status_code=201)

    async def validated_or_400(
        self,
        principal: Principal,
        provider: Provider,
        model_type: str,
        model: str,
        credentials: Mapping[str, Any],
        original: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            return await self.validate(principal, provider, model_type, model, credentials, original)
        except CredentialsValidateFailedError as exc:
            raise invalid_param(str(exc)) from exc

    def store_credential(
        self, provider: str, model: str, model_type: str, name: str, credentials: dict[str, Any]
    ) -> dict[str, Any]:
        credential = {
            "id": str(uuid.uuid4()),
            "provider": provider,
            "model": model,
            "model_type": model_type,
            "name": name,
            "credentials": credentials,
            "created_at": now_iso(),
            "updated_at": now_iso(),
        }
        self.state.model_credentials.append(credential)
        return credential

    def add_model_record(self, provider: str, model: str, model_type: str, credential_id: str | None) -> None:
        self.state.provider_models.append(
            {
                "id": str(uuid.uuid4()),
                "provider": provider,
                "model": model,
                "model_type": model_type,
                "credential_id": credential_id,
            }
        )

    async def update_credential(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        credential_id = uuid_value(body.get("credential_id"), "credential_id")
        name = credential_name(body)
        credentials = credentials_of_body(body)
        provider = await self.require_provider(principal, request.path_params["provider"])
        siblings = self.credentials_of(provider.provider, model, model_type)
        if name and any(item["name"] == name and item["id"] != credential_id for item in siblings):
            raise invalid_param(f"Model credential with name '{name}' already exists for {model}.")
        stored = self.credential_by_id(credential_id)
        original = stored["credentials"] if stored else None
        validated = await self.validated_or_400(principal, provider, model_type, model, credentials, original)
        credential = self.credential_for(provider.provider, model, model_type, credential_id)
        credential.update(credentials=validated, updated_at=now_iso())
        if name:
            credential["name"] = name
        self.state.save()
        return JSONResponse({"result": "success"})

    async def delete_credential(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        credential_id = uuid_value(body.get("credential_id"), "credential_id")
        provider = await self.require_provider(principal, request.path_params["provider"])
        credential = self.credential_for(provider.provider, model, model_type, credential_id)
        remaining = len(self.credentials_of(provider.provider, model, model_type))
        self.state.model_credentials.remove(credential)
        record = self.model_record(provider.provider, model, model_type)
        if record is not None and remaining <= 1:
            self.state.provider_models.remove(record)
        elif record is not None and record["credential_id"] == credential_id:
            record["credential_id"] = None
        self.state.save()
        return Response(status_code=204)

    async def switch_credential(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        credential_id = uuid_value(body.get("credential_id"), "credential_id")
        provider = await self.require_provider(principal, request.path_params["provider"])
        self.credential_for(provider.provider, model, model_type, credential_id)
        record = self.model_record(provider.provider, model, model_type)
        if record is None:
            self.add_model_record(provider.provider, model, model_type, credential_id)
        elif record["credential_id"] == credential_id:
            raise invalid_param("Can't add same credential")
        else:
            record["credential_id"] = credential_id
        self.state.save()
        return JSONResponse({"result": "success"})

    async def validate_credentials(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        credentials = credentials_of_body(body)
        provider = await self.require_provider(principal, request.path_params["provider"])
        try:
            await self.validate(principal, provider, model_type, model, credentials)
        except CredentialsValidateFailedError as exc:
            return JSONResponse({"result": "error", "error": str(exc) or ""})
        return JSONResponse({"result": "success"})

    # --- models -------------------------------------------------------------------------

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
            provider = await self.require_provider(principal, request.path_params["provider"])
            self.credential_for(provider.provider, model, model_type, credential_id)
            record = self.model_record(provider.provider, model, model_type)
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
        provider = await self.require_provider(principal, request.path_params["provider"])
        credentials = credentials_of_body(body)
        existing = self.credentials_of(provider.provider, model, model_type)
        original = existing[0]["credentials"] if existing else None
        validated = await self.validated_or_400(principal, provider, model_type, model, credentials, original)
        if existing:
            existing[0].update(credentials=validated, updated_at=now_iso())
        else:
            credential = self.store_credential(provider.provider, model, model_type, "API KEY 1", validated)
            self.add_model_record(provider.provider, model, model_type, credential["id"])
        self.state.save()
        return JSONResponse({"result": "success"})

    async def delete_model(self, request: Request, principal: Principal) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        provider = await self.require_provider(principal, request.path_params["provider"])
        record = self.model_record(provider.provider, model, model_type)
        if record is not None:
            self.state.provider_models.remove(record)
        if not self.config.features.credentials_api:
            for credential in self.credentials_of(provider.provider, model, model_type):
                self.state.model_credentials.remove(credential)
        self.state.save()
        return Response(status_code=204)

    async def set_model_enabled(self, request: Request, principal: Principal, enabled: bool) -> Response:
        body = await request_body(request)
        model, model_type = model_and_type(body)
        provider = await self.require_provider(principal, request.path_params["provider"])
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

    async def provider_models(
        self, principal: Principal, provider: Provider, model_type: str | None = None
    ) -> list[dict[str, Any]]:
        """``ProviderConfiguration.get_provider_models`` for a customizable-model provider."""
        models = []
        for record in self.records_of(provider.provider):
            if model_type and record["model_type"] != model_type:
                continue
            credential = self.credential_by_id(record.get("credential_id"))
            credentials = credential["credentials"] if credential else {}
            schema = await self.model_schema(
                principal, provider, record["model_type"], record["model"], credentials
            )
            if schema is None:
                continue
            status = "active"
            if not self.model_enabled(provider.provider, record["model"], record["model_type"]):
                status = "disabled"
            elif credential is None:
                status = "credential-removed"
            models.append(
                {
                    "model": schema["model"],
                    "label": schema["label"],
                    "model_type": schema["model_type"],
                    "features": schema.get("features") or [],
                    "fetch_from": "customizable-model",
                    "model_properties": schema.get("model_properties") or {},
                    "deprecated": schema.get("deprecated", False),
                    "status": status,
                    "load_balancing_enabled": False,
                    "has_invalid_load_balancing_configs": False,
                    "provider": self.simple_provider(principal, provider),
                }
            )
        return models

    async def active_models(self, principal: Principal, model_type: str) -> list[dict[str, Any]]:
        models = []
        for provider in (await self.providers(principal)).values():
            models += [
                m
                for m in await self.provider_models(principal, provider, model_type)
                if m["status"] == "active"
            ]
        return models

    async def list_models(self, request: Request, principal: Principal) -> Response:
        provider_id = normalize_provider(request.path_params["provider"])
        provider = (await self.providers(principal)).get(provider_id)
        return JSONResponse({"data": await self.provider_models(principal, provider) if provider else []})

    async def models_by_type(self, request: Request, principal: Principal) -> Response:
        model_type = parse_model_type(request.path_params["model_type"], accept_origin=True)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for model in await self.active_models(principal, model_type):
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
        if provider_id not in await self.providers(principal):
            return f"Provider {raw_provider} does not exist."
        active = await self.active_models(principal, model_type)
        if model not in [m["model"] for m in active if m["provider"]["provider"] == provider_id]:
            return f"Model {model} does not exist."
        return None

    async def get_default_model(self, request: Request, principal: Principal) -> Response:
        model_type = parse_model_type(request.query_params.get("model_type"))
        default = self.state.default_models.get(model_type)
        if default is None:
            # Like ProviderManager.get_default_model: adopt the first active model of that type.
            active = await self.active_models(principal, model_type)
            if not active:
                return JSONResponse({"data": None})
            default = {"provider": active[0]["provider"]["provider"], "model": active[0]["model"]}
            self.state.default_models[model_type] = default
            self.state.save()
        provider = (await self.providers(principal)).get(default["provider"])
        if provider is None:
            return JSONResponse({"data": None})
        return JSONResponse(
            {
                "data": {
                    "model": default["model"],
                    "model_type": model_type,
                    "provider": self.simple_provider(principal, provider),
                }
            }
        )

    # --- routing ------------------------------------------------------------------------

    def routes(
        self, console: Callable[[ConsoleHandler], Callable[[Request], Awaitable[Response]]]
    ) -> list[Route]:
        workspace = "/console/api/workspaces/current"
        models = f"{workspace}/model-providers/{{provider:path}}/models"
        credential_methods = (
            ["GET", "POST", "PUT", "DELETE"] if self.config.features.credentials_api else ["GET"]
        )
        routes = [
            Route(f"{workspace}/model-providers", console(self.list_providers), methods=["GET"]),
            Route(models, console(self.list_models), methods=["GET"]),
            Route(models, console(self.save_model), methods=["POST"]),
            Route(models, console(self.delete_model), methods=["DELETE"]),
            Route(f"{models}/credentials/validate", console(self.validate_credentials), methods=["POST"]),
            Route(f"{models}/enable", console(self.enable_model), methods=["PATCH"]),
            Route(f"{models}/disable", console(self.disable_model), methods=["PATCH"]),
            Route(
                f"{workspace}/models/model-types/{{model_type}}",
                console(self.models_by_type),
                methods=["GET"],
            ),
            Route(f"{workspace}/default-model", console(self.get_default_model), methods=["GET"]),
            Route(f"{workspace}/default-model", console(self.set_default_models), methods=["POST"]),
        ]
        handlers = {
            "GET": self.get_credentials,
            "POST": self.create_credential,
            "PUT": self.update_credential,
            "DELETE": self.delete_credential,
        }
        routes += [
            Route(f"{models}/credentials", console(handlers[m]), methods=[m]) for m in credential_methods
        ]
        if self.config.features.credentials_api:
            routes.append(
                Route(f"{models}/credentials/switch", console(self.switch_credential), methods=["POST"])
            )
        return routes


def _dispatch_payload(
    principal: Principal, provider: Provider, model_type: str, model: str, credentials: Mapping[str, Any]
) -> dict[str, Any]:
    """The body the api sends the plugin daemon for a model dispatch."""
    return {
        "user_id": principal.user_id,
        "data": {
            "provider": provider.short_name,
            "model_type": model_type,
            "model": model,
            "credentials": credentials,
        },
    }
