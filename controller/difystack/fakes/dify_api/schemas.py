"""Request parsing and Dify's credential-schema rules for the fake api's endpoints.

``validate_and_filter`` is Dify's ``ModelCredentialSchemaValidator`` + ``CommonValidator``:
``__model_type`` is injected so ``show_on`` fields apply to their model type only, only
schema variables survive, a required field must be present and non-empty, values must be
strings, select values must be among the options, a missing optional field takes its
default and empty values are dropped. Violations are ``400 invalid_param`` (a ValueError in
Dify).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from difystack.fakes.common.http import json_body, json_object
from difystack.fakes.dify_api.errors import DifyError, invalid_param

HIDDEN_VALUE = "[__HIDDEN__]"
MODEL_TYPES = ("llm", "text-embedding", "rerank", "speech2text", "moderation", "tts")
ORIGIN_MODEL_TYPES = {"text-generation": "llm", "embeddings": "text-embedding", "reranking": "rerank"}
PROVIDER_ID_PATTERN = re.compile(r"^[a-z0-9_-]+/[a-z0-9_-]+/[a-z0-9_-]+$")
SHORT_PROVIDER_PATTERN = re.compile(r"^[a-z0-9_-]+$")
API_KEY_NAME_PATTERN = re.compile(r"^API KEY\s+(\d+)$")


class CredentialsValidateFailedError(Exception):
    """The plugin rejected the credentials (the message is the plugin's text)."""


@dataclass(frozen=True)
class Provider:
    provider: str  # langgenius/xinference/xinference
    plugin_id: str  # langgenius/xinference
    declaration: Mapping[str, Any]

    @property
    def short_name(self) -> str:
        return str(self.declaration["provider"])

    @property
    def credential_schemas(self) -> list[dict[str, Any]]:
        schema = self.declaration.get("model_credential_schema")
        if not schema:
            raise invalid_param(f"Provider {self.provider} does not have model_credential_schema")
        return list(schema.get("credential_form_schemas") or [])

    @property
    def secret_variables(self) -> set[str]:
        schema = self.declaration.get("model_credential_schema") or {}
        return {
            form["variable"]
            for form in schema.get("credential_form_schemas") or []
            if form.get("type") == "secret-input"
        }


def normalize_provider(value: str) -> str:
    """``models.provider_ids``: a bare ``xinference`` means ``langgenius/xinference/xinference``."""
    if PROVIDER_ID_PATTERN.match(value):
        return value
    if SHORT_PROVIDER_PATTERN.match(value):
        return f"langgenius/{value}/{value}"
    raise invalid_param(f"Invalid plugin id {value}")


def parse_model_type(value: Any, *, accept_origin: bool = False) -> str:
    if accept_origin and value in ORIGIN_MODEL_TYPES:
        return ORIGIN_MODEL_TYPES[value]
    if value not in MODEL_TYPES:
        if accept_origin:
            raise invalid_param(f"invalid origin model type {value}")
        allowed = ", ".join(f"'{item}'" for item in MODEL_TYPES)
        raise invalid_param(f"model_type: Input should be {allowed}")
    return str(value)


def validate_and_filter(
    schemas: list[dict[str, Any]], model_type: str, credentials: Mapping[str, Any]
) -> dict[str, Any]:
    """Dify's ModelCredentialSchemaValidator + CommonValidator."""
    given = {**credentials, "__model_type": model_type}
    validated: dict[str, Any] = {}
    for schema in schemas:
        conditions = schema.get("show_on") or []
        if any(given.get(cond["variable"], object()) != cond["value"] for cond in conditions):
            continue
        value = validate_field(schema, given)
        if value:
            validated[schema["variable"]] = value
    return validated


def validate_field(schema: Mapping[str, Any], credentials: Mapping[str, Any]) -> Any:
    variable = schema["variable"]
    if variable not in credentials or not credentials[variable]:
        if schema.get("required"):
            raise invalid_param(f"Variable {variable} is required")
        return schema.get("default") or None
    value = credentials[variable]
    if not isinstance(value, str):
        raise invalid_param(f"Variable {variable} should be string")
    max_length = schema.get("max_length") or 0
    if max_length and len(value) > max_length:
        raise invalid_param(f"Variable {variable} length should not be greater than {max_length}")
    options = [option["value"] for option in schema.get("options") or []]
    if schema.get("type") in {"select", "radio"} and options and value not in options:
        raise invalid_param(f"Variable {variable} is not in options")
    if schema.get("type") == "switch":
        if value.lower() not in {"true", "false"}:
            raise invalid_param(f"Variable {variable} should be true or false")
        return value.lower() == "true"
    return value


def uuid_value(value: Any, field: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise invalid_param(f"{field}: {value} is not a valid uuid.") from None


async def request_body(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise DifyError(400, "bad_request", "Failed to decode JSON object: the body is not a JSON object.")
    return body


def model_and_type(body: Mapping[str, Any]) -> tuple[str, str]:
    if not isinstance(body.get("model"), str):
        raise invalid_param("model: Field required")
    return body["model"], parse_model_type(body.get("model_type"))


def credential_name(body: Mapping[str, Any]) -> str | None:
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 30):
        raise invalid_param("name: String should have at most 30 characters")
    return name or None


def credentials_of_body(body: Mapping[str, Any]) -> dict[str, Any]:
    credentials = body.get("credentials")
    if not isinstance(credentials, dict):
        raise invalid_param("credentials: Input should be a valid dictionary")
    return credentials


async def object_body(request: Request) -> dict[str, Any]:
    """The JSON body when it is an object, else ``{}`` (the fields' own checks then fail)."""
    return await json_object(request) or {}


def query_int(
    request: Request, name: str, *, default: int | None = None, minimum: int = 1, maximum: int | None = None
) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise invalid_param(f"{name}: Field required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_param(f"{name}: Input should be a valid integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise invalid_param(f"{name}: Input should be between {minimum} and {maximum}")
    return value


def obfuscated_token(token: str) -> str:
    """Dify's ``encrypter.obfuscated_token``."""
    if not token:
        return token
    if len(token) <= 8:
        return "*" * 20
    return token[:6] + "*" * 12 + token[-2:]


def window(items: list[Any], page: int, limit: int) -> list[Any]:
    """The ``page``-th ``limit`` items (pages start at 1)."""
    return items[(page - 1) * limit : page * limit]
