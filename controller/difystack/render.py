"""Render a stack configuration into a self-contained Docker Compose project.

The Jinja environment uses StrictUndefined: a template that mentions a value the context
does not provide fails loudly instead of rendering an empty string into a compose file.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import yaml

from difystack import __version__
from difystack.cluster import supervisor_extra_hosts, supervisor_join_ports
from difystack.config_model import StackConfig
from difystack.errors import DifystackError
from difystack.images import resolve_images
from difystack.model_paths import xinference_mount
from difystack.paths import templates_dir
from difystack.secrets_store import write_private

MANIFEST = ".difystack-files"
COMPOSE_FILE = "docker-compose.yml"
ENV_FILE = ".env"


@dataclass(frozen=True)
class RenderedFile:
    path: str
    content: str
    private: bool = False


def yaml_scalar(value: Any) -> str:
    """Quote a value for YAML; JSON strings are valid YAML scalars."""
    return json.dumps(value if isinstance(value, (int, float, bool)) or value is None else str(value))


class Renderer:
    def __init__(self, root: Path | None = None) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(root or templates_dir())),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
        self.env.filters["q"] = yaml_scalar

    def render(self, template: str, context: Mapping[str, Any]) -> str:
        try:
            return self.env.get_template(template).render(**context)
        except jinja2.UndefinedError as exc:
            raise DifystackError(f"template {template}: {exc.message}") from exc


def build_context(
    config: StackConfig,
    secrets: Mapping[str, str],
    *,
    gpu: bool,
    config_dir: Path,
    cuda_flavour: str = "cuda-12",
) -> dict[str, Any]:
    xinference_local = config.xinference.enabled and config.xinference.external is None
    localai_local = config.localai.enabled and config.localai.external is None
    mounts = []
    if xinference_local:
        for index, model in enumerate(config.xinference.models):
            mount = xinference_mount(model, config_dir, f"xinference.models[{index}]")
            if mount:
                mounts.append(mount)
    domains, ips = _ssrf_allowlist(config)
    public_url = dify_public_url(config)
    return {
        "difystack_version": __version__,
        "stack": config,
        "dify": config.dify,
        "xinference": config.xinference,
        "localai": config.localai,
        "parts": _describe_parts(config, gpu),
        "xinference_local": xinference_local,
        "localai_local": localai_local,
        "model_callers": ["api", "worker", "plugin_daemon"] if config.dify.enabled else [],
        "images": resolve_images(config, gpu, cuda_flavour),
        "gpu": gpu,
        "labels": {**config.labels, "io.difystack.stack": config.name, "io.difystack.managed": "true"},
        "host_gateway": any(
            part.enabled and part.external is not None and part.external.needs_host_gateway
            for part in (config.xinference, config.localai)
        ),
        "dify_public_url": public_url,
        "dify_public_host": urlsplit(public_url).hostname,
        "marketplace_enabled": "true" if config.dify.plugins.source == "marketplace" else "false",
        "ssrf_allowed_domains": domains,
        "ssrf_allowed_ips": ips,
        "xinference_mounts": mounts,
        "xinference_join_ports": supervisor_join_ports(config),
        "xinference_worker_hosts": supervisor_extra_hosts(config),
        "localai_model_files": [f"{m.name}.yaml" for m in config.localai.models if m.config is not None]
        if localai_local
        else [],
        "volumes": _volumes(config, xinference_local, localai_local),
        "secrets": secrets,
    }


def lan_address() -> str | None:
    """The address this machine's default route leaves from (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere
            return str(probe.getsockname()[0])
    except OSError:
        return None


def dify_public_url(config: StackConfig) -> str:
    """The URL people reach Dify at, for the links Dify hands out."""
    if config.dify.public_url:
        return config.dify.public_url
    bind = ipaddress.ip_address(config.bind_address)
    if bind.is_loopback:
        host = "localhost"
    elif bind.is_unspecified:
        host = lan_address() or socket.gethostname()
    else:
        host = config.bind_address if bind.version == 4 else f"[{config.bind_address}]"
    port = "" if config.dify.port == 80 else f":{config.dify.port}"
    return f"http://{host}{port}"


def render_project(
    config: StackConfig,
    secrets: Mapping[str, str],
    *,
    gpu: bool,
    config_dir: Path,
    renderer: Renderer | None = None,
    cuda_flavour: str = "cuda-12",
) -> list[RenderedFile]:
    renderer = renderer or Renderer()
    context = build_context(config, secrets, gpu=gpu, config_dir=config_dir, cuda_flavour=cuda_flavour)
    files = [
        RenderedFile(COMPOSE_FILE, renderer.render("compose/docker-compose.yml.j2", context)),
        RenderedFile(ENV_FILE, renderer.render("project/env.j2", context), private=True),
        RenderedFile(".gitignore", f"{ENV_FILE}\n"),
        RenderedFile("difystack.resolved.yaml", _resolved_config(config)),
    ]
    if config.dify.enabled:
        files.append(RenderedFile("nginx/default.conf", renderer.render("nginx/default.conf.j2", context)))
        files.append(
            RenderedFile("ssrf_proxy/squid.conf", renderer.render("ssrf_proxy/squid.conf.j2", context))
        )
    if context["localai_local"]:
        for index, model in enumerate(config.localai.models):
            if model.config is None:
                continue
            body = {"name": model.name, **model.config}
            text = yaml.safe_dump(body, sort_keys=False, default_flow_style=False).rstrip("\n")
            files.append(
                RenderedFile(
                    f"localai/models/{model.name}.yaml",
                    renderer.render(
                        "localai/model.yaml.j2", {"index": index, "model": model, "config_yaml": text}
                    ),
                )
            )
    return files


def write_project(files: list[RenderedFile], out_dir: Path) -> None:
    """Write the files, removing those a previous render wrote but this one did not."""
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(out_dir)
    current = {f.path for f in files}
    for stale in sorted(previous - current):
        (out_dir / stale).unlink(missing_ok=True)
    for rendered in files:
        target = out_dir / rendered.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if rendered.private:
            write_private(target, rendered.content)
        else:
            target.write_text(rendered.content, encoding="utf-8")
    (out_dir / MANIFEST).write_text("\n".join(sorted(current | {MANIFEST})) + "\n", encoding="utf-8")


def _read_manifest(out_dir: Path) -> set[str]:
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        return set()
    return {line for line in manifest.read_text(encoding="utf-8").splitlines() if line and ".." not in line}


def _resolved_config(config: StackConfig) -> str:
    header = (
        "# The configuration this project was rendered from, with every layer merged.\n"
        "# (Secrets are not part of the configuration; they live in the stack's state directory.)\n"
    )
    data = config.model_dump(mode="json", by_alias=True)
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _describe_parts(config: StackConfig, gpu: bool) -> list[str]:
    hardware = "NVIDIA GPU" if gpu else "CPU"
    parts = []
    if config.dify.enabled:
        parts.append(f"Dify {config.dify.version}")
    for label, part in (("Xinference", config.xinference), ("LocalAI", config.localai)):
        if not part.enabled:
            continue
        if part.external is not None:
            parts.append(f"external {label} at {part.external.url}")
        else:
            parts.append(f"{label} {part.version} ({hardware})")
    return parts


def _ssrf_allowlist(config: StackConfig) -> tuple[list[str], list[str]]:
    domains: list[str] = []
    ips: list[str] = []
    for service, part in (("xinference", config.xinference), ("localai", config.localai)):
        if not part.enabled:
            continue
        host = service if part.external is None else (urlsplit(part.external.dify_url).hostname or service)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            domains.append(host)
        else:
            ips.append(host)
    return domains, ips


def _volumes(config: StackConfig, xinference_local: bool, localai_local: bool) -> list[str]:
    volumes: list[str] = []
    if config.dify.enabled:
        volumes += [
            "app_storage",
            "db_data",
            "redis_data",
            "plugin_daemon_storage",
            "sandbox_dependencies",
            "weaviate_data",
        ]
    if xinference_local:
        volumes.append("xinference_home")
    if localai_local:
        volumes += ["localai_models", "localai_backends", "localai_data", "localai_configuration"]
    return volumes
