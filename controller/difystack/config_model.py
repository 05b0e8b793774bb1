"""The typed stack configuration (``difystack.yaml``).

Every model forbids unknown keys, so a typo is reported with the dotted path of the field
instead of being silently ignored. Cross-field rules (unique UIDs, port clashes, defaults
that point at registered models...) live in validators at the level that sees both fields.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from difystack.cluster_config import ExternalWorker, check_cluster, check_host_address, check_placement
from difystack.registration import Registration

STACK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SUPPORTED_DIFY = ((1, 0, 0), (1, 13, 99))
DifyModelType = Literal["llm", "text-embedding", "rerank"]
ModelKind = Literal["llm", "embedding", "rerank"]
DIFY_TYPE_OF_KIND: dict[str, str] = {"llm": "llm", "embedding": "text-embedding", "rerank": "rerank"}

# Services a user may give an image override for (see images.py for their defaults).
OVERRIDABLE_SERVICES = (
    "init_permissions",
    "api",
    "worker",
    "worker_beat",
    "web",
    "plugin_daemon",
    "db_postgres",
    "redis",
    "sandbox",
    "ssrf_proxy",
    "nginx",
    "weaviate",
    "xinference",
    "localai",
)


# The Dify plugin that serves each provider difystack registers.
PLUGIN_OF_PROVIDER = {"xinference": "langgenius/xinference", "localai": "langgenius/localai"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)


def version_tuple(version: str) -> tuple[int, ...]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:[-.+].*)?", version)
    if not match:
        raise ValueError(f"{version!r} is not a version like 1.13.3")
    return tuple(int(part) for part in match.groups())


class ExternalServer(Strict):
    """A model server that already runs elsewhere; difystack only deploys models on it."""

    url: str = Field(description="Base URL as reachable from the machine running difystack.")
    url_from_dify: str | None = Field(
        default=None,
        description="Base URL as reachable from Dify's containers. Derived from `url` when "
        "omitted: localhost becomes host.docker.internal.",
    )

    @field_validator("url", "url_from_dify")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.path.rstrip("/") in ("/v1",):
            raise ValueError(f"give the server root without /v1, e.g. {parts.scheme}://{parts.netloc}")
        return value.rstrip("/")

    @property
    def dify_url(self) -> str:
        if self.url_from_dify:
            return self.url_from_dify
        parts = urlsplit(self.url)
        if parts.hostname in ("localhost", "127.0.0.1", "::1"):
            netloc = parts.netloc.replace(parts.hostname, "host.docker.internal", 1)
            return f"{parts.scheme}://{netloc}"
        return self.url

    @property
    def needs_host_gateway(self) -> bool:
        return urlsplit(self.dify_url).hostname == "host.docker.internal"


class XinferenceCustomModel(Strict):
    """A model that is not built into Xinference: registered from local weights first."""

    path: str | None = Field(
        default=None, description="Host directory (or GGUF file) mounted read-only into the container."
    )
    server_path: str | None = Field(
        default=None, description="Absolute path where the weights already are on the server."
    )
    family: str | None = Field(default=None, description="Built-in family whose chat template is reused.")
    context_length: int = 2048
    abilities: list[str] = Field(default_factory=lambda: ["generate", "chat"])
    languages: list[str] = Field(default_factory=lambda: ["en"])
    dimensions: int | None = None
    max_tokens: int | None = None
    file_name: str | None = Field(default=None, description="GGUF file name inside `path` (LLMs).")

    @model_validator(mode="after")
    def _one_location(self) -> XinferenceCustomModel:
        if (self.path is None) == (self.server_path is None):
            raise ValueError(
                "path: give exactly one of `path` (host weights) or `server_path` (on the server)"
            )
        if self.server_path is not None and not PurePosixPath(self.server_path).is_absolute():
            raise ValueError("server_path: must be an absolute path on the Xinference server")
        return self


class XinferenceModel(Strict):
    uid: str = Field(description="Model UID on the server; what Dify's credentials point at.")
    type: ModelKind = "llm"
    name: str = Field(description="Built-in model name, or the name to register a custom model under.")
    engine: str | None = None
    format: str | None = None
    size: str | None = Field(default=None, description='Size in billions, e.g. "0_5".')
    quantization: str | None = None
    launch_options: dict[str, Any] = Field(default_factory=dict)
    custom: XinferenceCustomModel | None = None
    register_in_dify: bool = Field(default=True, alias="register", description="Register this model in Dify.")
    dify_name: str | None = Field(default=None, description="Model name shown in Dify (default: uid).")
    dimensions: int | None = Field(default=None, description="Expected embedding size, checked after deploy.")
    invoke_timeout: int = Field(default=60, ge=1)
    max_retries: int = Field(default=3, ge=0)
    worker: int | str | None = Field(
        default=None,
        description="Distributed topology: launch on the stack's worker N (xinference-worker-N), or on "
        "the external worker of that name.",
    )

    @field_validator("worker")
    @classmethod
    def _worker_number(cls, worker: int | str | None) -> int | str | None:
        if isinstance(worker, int) and worker < 1:
            raise ValueError(
                f"{worker}: a worker number must be greater than or equal to 1 (xinference-worker-N)"
            )
        return worker

    @field_validator("size", mode="before")
    @classmethod
    def _size_as_string(cls, value: Any) -> Any:
        if isinstance(value, (int, float)):
            return str(value).replace(".", "_")
        return value

    @field_validator("uid")
    @classmethod
    def _uid_rules(cls, uid: str) -> str:
        if not uid or len(uid) > 100:
            raise ValueError("must be 1 to 100 characters")
        bad = sorted({ch for ch in uid if ch in "/?#" or ch.isspace()})
        if bad:
            raise ValueError(
                f"{uid!r} contains {' '.join(repr(c) for c in bad)}; Dify reads /v1/models/<uid>, "
                "so UIDs may not contain '/', '?', '#' or spaces"
            )
        if re.search(r"-rep\d+$", uid):
            raise ValueError(f"{uid!r} ends in -rep<N>, which Xinference reserves for replicas")
        return uid

    @model_validator(mode="after")
    def _engine_for_llm(self) -> XinferenceModel:
        if self.type == "llm" and not self.engine:
            raise ValueError("engine: an LLM needs an engine (e.g. llama.cpp, Transformers, vLLM)")
        if self.custom and self.type == "embedding" and self.custom.dimensions is None:
            raise ValueError("custom.dimensions: a custom embedding model needs its dimensions")
        if self.custom and self.type == "llm" and not self.custom.family:
            raise ValueError("custom.family: a custom LLM needs a built-in family (for its chat template)")
        return self

    @property
    def display_name(self) -> str:
        return self.dify_name or self.uid


def worker_host(index: int) -> str:
    """The host name worker N registers with the supervisor (its compose service name)."""
    return f"xinference-worker-{index}"


def placement_host(worker: int | str | None) -> str | None:
    """The host part of the address of the worker a model is pinned to (None: any worker)."""
    return worker_host(worker) if isinstance(worker, int) else worker


class XinferenceConfig(Strict):
    enabled: bool = True
    version: str = "v4.1.0"
    port: int = Field(default=9997, ge=1, le=65535)
    external: ExternalServer | None = None
    topology: Literal["single", "distributed"] = "single"
    workers: int = Field(default=1, ge=1, le=16)
    supervisor_port: int = Field(
        default=9999, ge=1024, le=65535, description="The supervisor's own (xoscar) port, for workers."
    )
    join_address: str | None = Field(
        default=None,
        description="This machine's address that workers on other machines join at: Xinference's port "
        "and supervisor_port are published on it (the supervisor port has no authentication).",
    )
    external_workers: list[ExternalWorker] = Field(
        default_factory=list, description="Workers on other machines that must join (`difystack worker`)."
    )
    model_src: Literal["huggingface", "modelscope", "auto"] = "huggingface"
    hf_endpoint: str | None = None
    auth: bool = Field(default=False, description="Turn on Xinference's own accounts and API keys.")
    expose: bool = Field(
        default=False,
        description="Publish Xinference's port on bind_address (else on 127.0.0.1 only); turns auth on.",
    )
    max_concurrent_launches: int = Field(default=5, ge=1, le=64)
    shm_size: str = "8gb"
    models: list[XinferenceModel] = Field(default_factory=list)

    @field_validator("join_address")
    @classmethod
    def _reachable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_host_address(value, "this machine's address on the network the workers are on")

    @model_validator(mode="after")
    def _exposed_needs_accounts(self) -> XinferenceConfig:
        fix = "expose off" if self.expose else "unset join_address"
        if (self.expose or self.join_address) and not self.auth:
            if "auth" in self.model_fields_set:
                published_by = "xinference.expose" if self.expose else "xinference.join_address"
                raise ValueError(
                    f"auth: off, but {published_by} publishes Xinference beyond this machine; "
                    f"turn auth on or {fix}"
                )
            self.auth = True
        return self

    @model_validator(mode="after")
    def _cluster(self) -> XinferenceConfig:
        check_cluster(self)
        return self

    @model_validator(mode="after")
    def _unique_uids(self) -> XinferenceConfig:
        _reject_duplicates([m.uid for m in self.models], "uid")
        for index, model in enumerate(self.models):
            if model.worker is None:
                continue
            if self.topology != "distributed":
                raise ValueError(
                    f"models[{index}].worker: placing a model on a worker needs `topology: distributed`"
                )
            check_placement(self, index, model)
        return self


class LocalAIModel(Strict):
    name: str = Field(description="LocalAI model name; Dify uses the same name.")
    type: ModelKind = "llm"
    gallery: str | None = Field(default=None, description='Gallery id, e.g. "localai@qwen3-0.6b".')
    url: str | None = Field(default=None, description="URL of a model config (github:, https://, file://).")
    config: dict[str, Any] | None = Field(default=None, description="Inline LocalAI model YAML.")
    register_in_dify: bool = Field(default=True, alias="register", description="Register this model in Dify.")
    completion_type: Literal["chat_completion", "completion"] = "chat_completion"
    context_size: int | None = Field(default=None, ge=1)
    dimensions: int | None = Field(default=None, description="Expected embedding size, checked after deploy.")

    @field_validator("name")
    @classmethod
    def _name_rules(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}", name):
            raise ValueError(f"{name!r}: use letters, digits, '.', '_', ':' and '-' only")
        return name

    @model_validator(mode="after")
    def _one_source(self) -> LocalAIModel:
        sources = [s for s in ("gallery", "url", "config") if getattr(self, s) is not None]
        if len(sources) != 1:
            raise ValueError("gallery: give exactly one source: `gallery`, `url` or `config`")
        if self.config is not None and "name" in self.config and self.config["name"] != self.name:
            raise ValueError("config.name: must match `name` (or be left out)")
        return self


class LocalAIConfig(Strict):
    enabled: bool = True
    version: str = "v4.9.0"
    port: int = Field(default=8080, ge=1, le=65535)
    external: ExternalServer | None = None
    threads: int | None = Field(default=None, ge=1)
    api_key: bool = Field(default=False, description="Require an API key (Dify cannot send one).")
    expose: bool = Field(
        default=False,
        description="Publish LocalAI's port on bind_address (else on 127.0.0.1 only); needs api_key.",
    )
    models: list[LocalAIModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> LocalAIConfig:
        _reject_duplicates([m.name for m in self.models], "name")
        registered = [m.name for m in self.models if m.register_in_dify]
        if self.expose and registered:
            raise ValueError(
                "expose: an exposed LocalAI needs localai.api_key, which Dify's LocalAI plugin cannot "
                f"send; keep localai.expose off or set `register: false` on {', '.join(registered)}"
            )
        if self.expose and not self.api_key:
            if "api_key" in self.model_fields_set:
                raise ValueError("api_key: off, but localai.expose publishes LocalAI; turn api_key on")
            self.api_key = True
        if self.api_key and registered:
            raise ValueError(
                "api_key: on, but Dify's LocalAI provider cannot send an API key; set "
                f"`register: false` on {', '.join(registered)} or turn api_key off"
            )
        return self


class AdminConfig(Strict):
    email: str = "admin@example.com"
    name: str = Field(default="admin", max_length=30)
    language: str = "en-US"

    @field_validator("email")
    @classmethod
    def _email(cls, email: str) -> str:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}", email):
            raise ValueError(f"{email!r} is not an email address")
        return email.lower()


class PluginConfig(Strict):
    source: Literal["marketplace", "packages"] = "marketplace"
    packages: dict[str, str] = Field(
        default_factory=dict, description="Plugin id -> local .difypkg file (offline installs)."
    )
    marketplace_url: str = "https://marketplace.dify.ai"
    verify_signatures: bool = True
    pip_mirror_url: str | None = None


class DifyConfig(Strict):
    enabled: bool = True
    version: str = "1.13.3"
    port: int = Field(default=80, ge=1, le=65535)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    protect_setup: bool = Field(
        default=True, description="Gate the first-admin page with a generated INIT_PASSWORD."
    )
    vector_store: Literal["weaviate"] = "weaviate"
    plugins: PluginConfig = Field(default_factory=PluginConfig)
    plugin_debugging: bool = Field(
        default=False, description="Publish the plugin daemon's remote-debugging port 5003 on bind_address."
    )
    public_url: str | None = Field(
        default=None,
        description="The URL people open Dify at. Unset: http://<host>:<port>, the host being this "
        "machine's LAN address when bind_address is 0.0.0.0.",
    )
    celery_workers: int = Field(default=4, ge=1, le=64, description="CELERY_WORKER_AMOUNT of Dify's worker.")

    @field_validator("public_url")
    @classmethod
    def _origin_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise ValueError(f"{value!r}: give scheme, host and port only, e.g. http://dify.lan:8080")
        return value.rstrip("/")

    default_models: dict[DifyModelType, str] | None = Field(
        default=None,
        description="System default model per type, as `name` or `provider/name`. Unset: the "
        "first registered LLM and embedding model.",
    )

    @field_validator("version")
    @classmethod
    def _supported(cls, version: str) -> str:
        parsed = version_tuple(version)
        low, high = SUPPORTED_DIFY
        if not low <= parsed <= high:
            raise ValueError(
                f"difystack's templates cover Dify 1.0 to 1.13 (pinned 1.13.3); {version} is outside"
            )
        return version.lstrip("v")


# Swarm limits names to 64 characters; the longest name difystack gives is
# "<stack>_plugin_dify_inner_api_key_<8 hex>" (35 characters besides the stack name).
SWARM_MAX_STACK_NAME = 28


class DeployConfig(Strict):
    """Where the stack runs: one Docker engine (Compose) or a Docker Swarm (`docker stack deploy`)."""

    engine: Literal["compose", "swarm"] = Field(
        default="compose",
        description="compose: `docker compose` on this engine; swarm: `docker stack deploy` on the "
        "swarm this engine manages (overlay networks, Swarm secrets, placement by node labels).",
    )
    resolve_image: Literal["always", "changed", "never"] = Field(
        default="always",
        description="Swarm: `docker stack deploy --resolve-image`; `never` for images that exist only "
        "on the nodes (built locally, not in a registry).",
    )
    endpoint_mode: Literal["vip", "dnsrr"] = Field(
        default="vip",
        description="Swarm: vip gives each service a virtual IP and publishes ports through the routing "
        "mesh (needs IPVS in the nodes' kernels); dnsrr resolves service names to their tasks and "
        "publishes ports on the node that runs the task (kernels without IPVS).",
    )


class StackConfig(Strict):
    name: str = Field(default="difystack", pattern=STACK_NAME_PATTERN)
    bind_address: str = "127.0.0.1"
    gpu: Literal["none", "nvidia", "auto"] = "auto"
    images: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra Docker labels for every service of the stack."
    )
    dify: DifyConfig = Field(default_factory=DifyConfig)
    xinference: XinferenceConfig = Field(default_factory=XinferenceConfig)
    localai: LocalAIConfig = Field(default_factory=LocalAIConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)

    @field_validator("bind_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (use 127.0.0.1 or 0.0.0.0)") from None
        return value

    @field_validator("images")
    @classmethod
    def _known_services(cls, images: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(images) - set(OVERRIDABLE_SERVICES))
        if unknown:
            raise ValueError(
                f"no service named {', '.join(unknown)}; known: {', '.join(OVERRIDABLE_SERVICES)}"
            )
        return images

    @model_validator(mode="after")
    def _cross_checks(self) -> StackConfig:
        self._check_parts_have_models()
        self._check_port_clashes()
        self._check_default_models()
        self._check_plugin_packages()
        self._check_swarm_names()
        return self

    def _check_swarm_names(self) -> None:
        if self.deploy.engine == "swarm" and len(self.name) > SWARM_MAX_STACK_NAME:
            raise ValueError(
                f"name: {self.name!r} has {len(self.name)} characters; a stack deployed to a swarm may have "
                f"{SWARM_MAX_STACK_NAME} at most (Swarm's 64-character limit on secret and service names)"
            )

    def _check_plugin_packages(self) -> None:
        plugins = self.dify.plugins
        if not self.dify.enabled or plugins.source != "packages":
            return
        needed = sorted({PLUGIN_OF_PROVIDER[r.provider] for r in self.registered_models()})
        missing = [plugin for plugin in needed if plugin not in plugins.packages]
        if missing:
            raise ValueError(
                f"dify.plugins.packages: source is 'packages' but no .difypkg is given for "
                f"{', '.join(missing)} (dify.plugins.packages.<plugin id>: path)"
            )

    def _check_parts_have_models(self) -> None:
        for part in ("xinference", "localai"):
            cfg = getattr(self, part)
            if cfg.enabled and not cfg.models:
                raise ValueError(
                    f"{part}.models: {part} is enabled but declares no models; "
                    f"add models or set {part}.enabled: false"
                )
        if self.dify.enabled and not self.registered_models():
            raise ValueError(
                "dify.enabled: Dify is enabled but no model is registered in it; enable "
                "xinference or localai with models, or set dify.enabled: false"
            )

    def _check_port_clashes(self) -> None:
        seen: dict[int, str] = {}
        for field_path, port in self.published_ports().items():
            if port in seen:
                raise ValueError(
                    f"{field_path}: host port {port} is also published by {seen[port]}; give one another port"
                )
            seen[port] = field_path

    def _check_default_models(self) -> None:
        if self.dify.enabled:
            self.default_models()

    def default_models(self) -> dict[str, Registration]:
        """The system default model of each type, resolved to registrations."""
        registered = self.registered_models()
        if self.dify.default_models is None:
            chosen: dict[str, Registration] = {}
            for registration in registered:
                if registration.model_type in ("llm", "text-embedding"):
                    chosen.setdefault(registration.model_type, registration)
            return chosen
        resolved: dict[str, Registration] = {}
        for model_type, ref in self.dify.default_models.items():
            provider, _, name = ref.rpartition("/") if "/" in ref else ("", "", ref)
            matches = [r for r in registered if r.model == name and (not provider or r.provider == provider)]
            where = f"dify.default_models.{model_type}"
            if not matches:
                raise ValueError(f"{where}: {ref!r} is not a model registered in Dify by this stack")
            if len(matches) > 1:
                raise ValueError(f"{where}: {ref!r} is ambiguous; write xinference/{name} or localai/{name}")
            if matches[0].model_type != model_type:
                raise ValueError(f"{where}: {ref!r} is a {matches[0].model_type} model, not {model_type}")
            resolved[model_type] = matches[0]
        return resolved

    def published_ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        if self.dify.enabled:
            ports["dify.port"] = self.dify.port
        for part in ("xinference", "localai"):
            cfg = getattr(self, part)
            if cfg.enabled and cfg.external is None:
                ports[f"{part}.port"] = cfg.port
        if self.xinference.enabled and self.xinference.external is None and self.xinference.join_address:
            ports["xinference.supervisor_port"] = self.xinference.supervisor_port
        return ports

    def registered_models(self) -> list[Registration]:
        found: list[Registration] = []
        if self.xinference.enabled:
            found += [
                Registration(
                    "xinference",
                    m.display_name,
                    DIFY_TYPE_OF_KIND[m.type],
                    {},
                    m.uid,
                    f"xinference.models[{i}]",
                )
                for i, m in enumerate(self.xinference.models)
                if m.register_in_dify
            ]
        if self.localai.enabled:
            found += [
                Registration("localai", m.name, DIFY_TYPE_OF_KIND[m.type], {}, m.name, f"localai.models[{i}]")
                for i, m in enumerate(self.localai.models)
                if m.register_in_dify
            ]
        return found


def _reject_duplicates(values: list[str], what: str) -> None:
    first_index: dict[str, int] = {}
    for index, value in enumerate(values):
        if value in first_index:
            raise ValueError(
                f"models[{index}].{what}: duplicate {what} {value!r} (also models[{first_index[value]}]); "
                f"each model needs its own {what}"
            )
        first_index[value] = index
