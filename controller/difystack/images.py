"""Which image each service runs: pinned defaults derived from the versions, then overrides."""

from __future__ import annotations

from difystack.config_model import StackConfig

# Companion images pinned together with Dify 1.13.3 (its official compose file).
DIFY_COMPANIONS = {
    "init_permissions": "busybox:1.36",
    "web": "langgenius/dify-web:{dify}",
    "plugin_daemon": "langgenius/dify-plugin-daemon:0.5.5-local",
    "db_postgres": "postgres:15-alpine",
    "redis": "redis:6-alpine",
    "sandbox": "langgenius/dify-sandbox:0.2.14",
    "ssrf_proxy": "ubuntu/squid:latest",
    "nginx": "nginx:1.27",
    "weaviate": "semitechnologies/weaviate:1.27.0",
}


def default_images(config: StackConfig, gpu: bool, cuda_flavour: str = "cuda-12") -> dict[str, str]:
    dify = config.dify.version
    images = {name: ref.format(dify=dify) for name, ref in DIFY_COMPANIONS.items()}
    api = f"langgenius/dify-api:{dify}"
    images.update(api=api, worker=api, worker_beat=api)
    xinference_tag = config.xinference.version if gpu else f"{config.xinference.version}-cpu"
    images["xinference"] = f"xprobe/xinference:{xinference_tag}"
    localai_tag = f"{config.localai.version}-gpu-nvidia-{cuda_flavour}" if gpu else config.localai.version
    images["localai"] = f"localai/localai:{localai_tag}"
    return images


def resolve_images(config: StackConfig, gpu: bool, cuda_flavour: str = "cuda-12") -> dict[str, str]:
    images = default_images(config, gpu, cuda_flavour)
    images.update(config.images)
    return images
