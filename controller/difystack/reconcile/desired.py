"""The desired state of a stack's models: what must run on each server and what Dify must hold.

Everything here is derived from the configuration (plus the endpoints Dify must use and the
few secrets that end up in credentials); nothing talks to a server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difystack.config_model import (
    DIFY_TYPE_OF_KIND,
    PLUGIN_OF_PROVIDER,
    LocalAIModel,
    StackConfig,
    XinferenceModel,
    placement_host,
)
from difystack.model_paths import xinference_model_uri

XINFERENCE_TYPE_OF_KIND = {"llm": "LLM", "embedding": "embedding", "rerank": "rerank"}
CREDENTIAL_NAME = "difystack"
# Credential fields Dify stores obfuscated: compared through a fingerprint, never read back.
SECRET_CREDENTIAL_FIELDS = frozenset({"api_key"})


@dataclass(frozen=True)
class XinferenceDeployment:
    uid: str
    model_type: str  # LLM | embedding | rerank
    launch: dict[str, Any]
    custom_spec: dict[str, Any] | None
    expected_dimensions: int | None
    field: str  # config path, for messages
    worker: str | None = None  # the worker's host as the supervisor knows it (launch's worker_ip)

    @property
    def name(self) -> str:
        return str(self.launch["model_name"])

    def matches(self, running: dict[str, Any]) -> bool:
        """Whether a running model (GET /v1/models item or describe) is this deployment."""
        if running.get("model_name") != self.name:
            return False
        for launch_key, described_key in (
            ("model_engine", "model_engine"),
            ("model_format", "model_format"),
            ("model_size_in_billions", "model_size_in_billions"),
            ("quantization", "quantization"),
        ):
            wanted = self.launch.get(launch_key)
            have = running.get(described_key)
            if wanted is not None and have is not None and str(wanted).lower() != str(have).lower():
                return False
        return True


@dataclass(frozen=True)
class LocalAIDeployment:
    name: str
    kind: str  # llm | embedding | rerank
    apply_body: dict[str, Any] | None  # None: the model is a rendered YAML the server loads itself
    expected_dimensions: int | None
    field: str


@dataclass(frozen=True)
class Registration:
    provider: str  # short: xinference | localai
    model: str  # the model name Dify shows
    model_type: str  # llm | text-embedding | rerank
    credentials: dict[str, str]
    server_id: str  # the uid / LocalAI name the model runs under
    field: str

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model} ({self.model_type})"

    def public_credentials(self) -> dict[str, str]:
        return {k: v for k, v in self.credentials.items() if k not in SECRET_CREDENTIAL_FIELDS}

    def secret_fingerprint(self) -> str:
        secret = {k: v for k, v in sorted(self.credentials.items()) if k in SECRET_CREDENTIAL_FIELDS}
        import hashlib

        return hashlib.sha256(json.dumps(secret).encode()).hexdigest()[:16] if secret else ""


@dataclass(frozen=True)
class DesiredState:
    xinference: list[XinferenceDeployment] = field(default_factory=list)
    localai: list[LocalAIDeployment] = field(default_factory=list)
    registrations: list[Registration] = field(default_factory=list)
    default_models: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (provider, model)
    plugins: list[str] = field(default_factory=list)

    def deployment_of(self, registration: Registration) -> XinferenceDeployment | LocalAIDeployment | None:
        pool: list[Any] = self.xinference if registration.provider == "xinference" else self.localai
        for deployment in pool:
            if getattr(deployment, "uid", getattr(deployment, "name", None)) == registration.server_id:
                return deployment  # type: ignore[no-any-return]
        return None


def xinference_deployment(model: XinferenceModel, index: int, config_dir: Path) -> XinferenceDeployment:
    field_path = f"xinference.models[{index}]"
    launch: dict[str, Any] = {
        "model_uid": model.uid,
        "model_name": model.name,
        "model_type": XINFERENCE_TYPE_OF_KIND[model.type],
    }
    for key, value in (
        ("model_engine", model.engine),
        ("model_format", model.format),
        ("model_size_in_billions", model.size),
        ("quantization", model.quantization),
    ):
        if value is not None:
            launch[key] = value
    worker = placement_host(model.worker)
    if worker is not None:
        # Xinference's launch places the model on the worker whose address has this host part.
        launch["worker_ip"] = worker
    launch.update(model.launch_options)
    custom = None
    if model.custom is not None:
        custom = custom_spec(model, xinference_model_uri(model, config_dir, field_path) or "")
    return XinferenceDeployment(
        model.uid, launch["model_type"], launch, custom, model.dimensions, field_path, worker
    )


def custom_spec(model: XinferenceModel, uri: str) -> dict[str, Any]:
    """An Xinference spec-version-2 registration for a model with local weights."""
    assert model.custom is not None
    custom = model.custom
    if model.type == "embedding":
        return {
            "version": 2,
            "model_name": model.name,
            "dimensions": custom.dimensions,
            "max_tokens": custom.max_tokens or 512,
            "language": custom.languages,
            "model_specs": [
                {
                    "model_format": model.format or "pytorch",
                    "model_hub": "huggingface",
                    "model_id": None,
                    "model_uri": uri,
                    "model_revision": None,
                    "quantization": model.quantization or "none",
                }
            ],
        }
    spec: dict[str, Any] = {
        "version": 2,
        "model_name": model.name,
        "model_family": custom.family,
        "model_lang": custom.languages,
        "model_ability": custom.abilities,
        "context_length": custom.context_length,
        "model_specs": [
            {
                "model_format": model.format or "ggufv2",
                "model_size_in_billions": model.size or "1",
                "quantization": model.quantization or "none",
                "model_hub": "huggingface",
                "model_id": None,
                "model_uri": uri,
                "model_file_name_template": custom.file_name,
                "model_revision": None,
            }
        ],
    }
    return spec


def localai_deployment(model: LocalAIModel, index: int, rendered_locally: bool) -> LocalAIDeployment:
    body: dict[str, Any] | None
    if model.gallery is not None:
        body = {"id": model.gallery, "name": model.name}
    elif model.url is not None:
        body = {"url": model.url, "name": model.name}
    elif rendered_locally:
        body = None  # mounted into /models by the compose project
    else:
        body = {"config_file": {"name": model.name, **(model.config or {})}, "name": model.name}
    return LocalAIDeployment(model.name, model.type, body, model.dimensions, f"localai.models[{index}]")


def desired_state(
    config: StackConfig,
    xinference_url_for_dify: str | None,
    localai_url_for_dify: str | None,
    config_dir: Path,
    xinference_api_key: str | None = None,
) -> DesiredState:
    xinference: list[XinferenceDeployment] = []
    localai: list[LocalAIDeployment] = []
    registrations: list[Registration] = []
    if config.xinference.enabled:
        for index, model in enumerate(config.xinference.models):
            xinference.append(xinference_deployment(model, index, config_dir))
            if config.dify.enabled and model.register_in_dify and xinference_url_for_dify:
                credentials = {
                    "server_url": xinference_url_for_dify,
                    "model_uid": model.uid,
                    "invoke_timeout": str(model.invoke_timeout),
                    "max_retries": str(model.max_retries),
                }
                if xinference_api_key:
                    credentials["api_key"] = xinference_api_key
                registrations.append(
                    Registration(
                        "xinference",
                        model.display_name,
                        DIFY_TYPE_OF_KIND[model.type],
                        credentials,
                        model.uid,
                        f"xinference.models[{index}]",
                    )
                )
    if config.localai.enabled:
        rendered_locally = config.localai.external is None
        for index, local_model in enumerate(config.localai.models):
            localai.append(localai_deployment(local_model, index, rendered_locally))
            if config.dify.enabled and local_model.register_in_dify and localai_url_for_dify:
                # Dify's LocalAI plugin posts reranks to {server_url}/rerank, which LocalAI only
                # serves under /v1.
                server_url = (
                    f"{localai_url_for_dify}/v1" if local_model.type == "rerank" else localai_url_for_dify
                )
                credentials = {"server_url": server_url}
                if local_model.type == "llm":
                    credentials["completion_type"] = local_model.completion_type
                    if local_model.context_size:
                        credentials["context_size"] = str(local_model.context_size)
                registrations.append(
                    Registration(
                        "localai",
                        local_model.name,
                        DIFY_TYPE_OF_KIND[local_model.type],
                        credentials,
                        local_model.name,
                        f"localai.models[{index}]",
                    )
                )
    defaults = {}
    if config.dify.enabled:
        defaults = {
            model_type: (registration.provider, registration.dify_name)
            for model_type, registration in config.default_models().items()
        }
    plugins = sorted({PLUGIN_OF_PROVIDER[r.provider] for r in registrations})
    return DesiredState(xinference, localai, registrations, defaults, plugins)
