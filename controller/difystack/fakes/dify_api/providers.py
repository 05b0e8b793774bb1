"""Model providers as the fake Dify api knows them (§5).

A provider exists only while its plugin is installed: declarations (and credential schemas)
come from the plugin daemon's ``/management/models``. Credentials go through Dify's filter
(:func:`~difystack.fakes.dify_api.schemas.validate_and_filter`) and then the plugin's
``validate_model_credentials`` over the daemon; what the plugin returns is merged into what is
stored. Model schemas for listings come from the daemon's ``dispatch/model/schema``, as in the
real api.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from difystack.fakes.dify_api.config import ApiConfig
from difystack.fakes.dify_api.daemon_client import PluginDaemonClient, PluginDaemonFailure
from difystack.fakes.dify_api.errors import DifyError, invalid_param
from difystack.fakes.dify_api.schemas import (
    API_KEY_NAME_PATTERN,
    HIDDEN_VALUE,
    CredentialsValidateFailedError,
    Provider,
    normalize_provider,
    obfuscated_token,
    uuid_value,
    validate_and_filter,
)
from difystack.fakes.dify_api.state import ApiState, Principal, now_iso


@dataclass(frozen=True)
class ModelRef:
    """One model of a provider, as a workspace's account addresses it."""

    principal: Principal
    provider: Provider
    model_type: str
    model: str


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

    async def find_provider(self, principal: Principal, raw: str) -> Provider | None:
        return (await self.providers(principal)).get(normalize_provider(raw))

    async def require_provider(self, principal: Principal, raw: str) -> Provider:
        provider = await self.find_provider(principal, raw)
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
        self, ref: ModelRef, credentials: Mapping[str, Any], original: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Filter by the schema, let the plugin validate, return what Dify stores."""
        given = dict(credentials)
        for key in ref.provider.secret_variables:
            if given.get(key) == HIDDEN_VALUE and original and key in original:
                given[key] = original[key]
        filtered = validate_and_filter(ref.provider.credential_schemas, ref.model_type, given)
        try:
            result = await self.dispatch(ref, "validate_model_credentials", filtered)
        except PluginDaemonFailure as failure:
            inner = failure.plugin_invoke_error()
            raise CredentialsValidateFailedError(inner[1] if inner else str(failure)) from failure
        if isinstance(result, dict) and isinstance(result.get("credentials"), dict):
            filtered.update(result["credentials"])
        return filtered

    async def validated_or_400(
        self, ref: ModelRef, credentials: Mapping[str, Any], original: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """:meth:`validate`, with the plugin's refusal as a ``400 invalid_param``."""
        try:
            return await self.validate(ref, credentials, original)
        except CredentialsValidateFailedError as exc:
            raise invalid_param(str(exc)) from exc

    async def model_schema(self, ref: ModelRef, credentials: Mapping[str, Any]) -> dict[str, Any] | None:
        key = json.dumps(
            [ref.provider.provider, ref.model_type, ref.model, credentials], sort_keys=True, default=str
        )
        if key not in self._schema_cache:
            try:
                result = await self.dispatch(ref, "schema", credentials)
            except PluginDaemonFailure:
                return None  # "get custom model schema failed": the model is left out of listings
            self._schema_cache[key] = result.get("model_schema") if isinstance(result, dict) else None
        return self._schema_cache[key]

    async def dispatch(self, ref: ModelRef, action: str, credentials: Mapping[str, Any]) -> Any:
        """A ``dispatch/model/<action>`` call to the model's plugin."""
        payload = {
            "user_id": ref.principal.user_id,
            "data": {
                "provider": ref.provider.short_name,
                "model_type": ref.model_type,
                "model": ref.model,
                "credentials": credentials,
            },
        }
        path = f"/plugin/{ref.principal.tenant_id}/dispatch/model/{action}"
        return await self.daemon.dispatch(path, ref.provider.plugin_id, payload)

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
            ref = ModelRef(principal, provider, record["model_type"], record["model"])
            schema = await self.model_schema(ref, credentials)
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

    async def model_credentials(
        self, principal: Principal, raw_provider: str, model: str, model_type: str
    ) -> tuple[Provider, dict[str, Any]]:
        """The provider and the stored credentials of a registered, enabled model."""
        provider = await self.find_provider(principal, raw_provider)
        record = self.model_record(provider.provider, model, model_type) if provider is not None else None
        credential = self.credential_by_id(record["credential_id"]) if record else None
        if provider is None or credential is None:
            raise DifyError(400, "provider_not_initialize", f"Model {model} credentials is not initialized.")
        if not self.model_enabled(provider.provider, model, model_type):
            raise DifyError(400, "provider_not_initialize", f"Model {model} is disabled.")
        return provider, dict(credential["credentials"])
