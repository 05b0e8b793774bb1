"""The desired state of a stack's models: what must run on each server and what Dify must hold.

Everything here is derived from the configuration (plus the URLs Dify must use); nothing talks
to a server. Secrets that end up in credentials (an Xinference API key) are added when used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from difystack.config_model import (
    PLUGIN_OF_PROVIDER,
    LocalAIModel,
    StackConfig,
    XinferenceModel,
    placement_host,
)
from difystack.model_paths import xinference_model_uri
from difystack.registration import Registration

XINFERENCE_TYPE_OF_KIND = {"llm": "LLM", "embedding": "embedding", "rerank": "rerank"}


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
    completion_type: str = "chat_completion"  # how its verification (and Dify) asks an LLM


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
    return LocalAIDeployment(
        model.name, model.type, body, model.dimensions, f"localai.models[{index}]", model.completion_type
    )


def desired_state(
    config: StackConfig,
    xinference_url_for_dify: str | None,
    localai_url_for_dify: str | None,
    config_dir: Path,
) -> DesiredState:
    xinference: list[XinferenceDeployment] = []
    localai: list[LocalAIDeployment] = []
    if config.xinference.enabled:
        xinference = [
            xinference_deployment(model, index, config_dir)
            for index, model in enumerate(config.xinference.models)
        ]
    if config.localai.enabled:
        rendered_locally = config.localai.external is None
        localai = [
            localai_deployment(model, index, rendered_locally)
            for index, model in enumerate(config.localai.models)
        ]
    registrations: list[Registration] = []
    defaults = {}
    if config.dify.enabled:
        registrations = registrations_for_dify(config, xinference_url_for_dify, localai_url_for_dify)
        defaults = {
            model_type: (registration.provider, registration.model)
            for model_type, registration in config.default_models().items()
        }
    plugins = sorted({PLUGIN_OF_PROVIDER[r.provider] for r in registrations})
    return DesiredState(xinference, localai, registrations, defaults, plugins)


def registrations_for_dify(
    config: StackConfig, xinference_url: str | None, localai_url: str | None
) -> list[Registration]:
    """The stack's registrations with the exact credential fields of each provider's plugin, as strings."""
    xinference_models = {model.uid: model for model in config.xinference.models}
    localai_models = {model.name: model for model in config.localai.models}
    registrations = []
    for registration in config.registered_models():
        if registration.provider == "xinference" and xinference_url:
            model = xinference_models[registration.server_id]
            credentials = {
                "server_url": xinference_url,
                "model_uid": model.uid,
                "invoke_timeout": str(model.invoke_timeout),
                "max_retries": str(model.max_retries),
            }
        elif registration.provider == "localai" and localai_url:
            local_model = localai_models[registration.server_id]
            # Dify's LocalAI plugin posts reranks to {server_url}/rerank, which LocalAI only
            # serves under /v1.
            credentials = {"server_url": f"{localai_url}/v1" if local_model.type == "rerank" else localai_url}
            if local_model.type == "llm":
                credentials["completion_type"] = local_model.completion_type
                if local_model.context_size:
                    credentials["context_size"] = str(local_model.context_size)
        else:
            continue
        registrations.append(replace(registration, credentials=credentials))
    return registrations
