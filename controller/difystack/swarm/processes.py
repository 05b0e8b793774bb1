"""The process each image runs, for services whose secrets are loaded by a wrapper.

Swarm mounts secrets as files, and Dify's images read plain environment variables. A service
that needs a secret therefore starts a small shell wrapper that exports the files of
``/run/secrets`` and then execs the image's own process. Overriding the entrypoint drops the
image's entrypoint and command, so difystack must know them: for the official images from
this table (read from their Dockerfiles), for any other image from the image itself when it
is present on this machine (a mirror absent here is assumed to match the official image).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from python_on_whales import ClientNotFoundError, DockerClient
from python_on_whales.exceptions import DockerException


@dataclass(frozen=True)
class Process:
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]

    @property
    def argv(self) -> list[str]:
        return [*self.entrypoint, *self.command]


DIFY_API = Process(("/bin/bash", "/entrypoint.sh"), ())

# Entrypoint and command of the official images difystack pins (their Dockerfiles):
# langgenius/dify api/Dockerfile; dify-plugin-daemon docker/local.dockerfile (CMD only, from
# ubuntu:24.04); dify-sandbox docker/templates/production.dockerfile; weaviate's Dockerfile;
# the official postgres and redis images; LocalAI's Dockerfile (entrypoint only).
OFFICIAL: dict[str, Process] = {
    "api": DIFY_API,
    "worker": DIFY_API,
    "worker_beat": DIFY_API,
    "plugin_daemon": Process((), ("/bin/bash", "-c", "/app/entrypoint.sh")),
    "sandbox": Process(("/entrypoint.sh",), ()),
    "weaviate": Process(("/bin/weaviate",), ("--host", "0.0.0.0", "--port", "8080", "--scheme", "http")),
    "db_postgres": Process(("docker-entrypoint.sh",), ("postgres",)),
    "redis": Process(("docker-entrypoint.sh",), ("redis-server",)),
    "localai": Process(("/entrypoint.sh",), ()),
}


def official_processes() -> dict[str, Process]:
    return dict(OFFICIAL)


def local_processes(
    docker: DockerClient, images: Mapping[str, str], services: Iterable[str]
) -> dict[str, Process]:
    """The processes of ``services`` whose image is on this machine (read from the image)."""
    found: dict[str, Process] = {}
    for service in services:
        image = images.get(service)
        if image is None:
            continue
        try:
            if not docker.image.exists(image):
                continue
            config = docker.image.inspect(image).config
        except (DockerException, ClientNotFoundError):
            continue  # no engine here: the official table stands
        found[service] = Process(tuple(config.entrypoint or ()), tuple(config.cmd or ()))
    return found


def resolve_processes(
    docker: DockerClient | None, images: Mapping[str, str], overridden: Iterable[str]
) -> dict[str, Process]:
    """The official table, with the images given as overrides read from this machine when present."""
    processes = official_processes()
    if docker is not None:
        wanted = [service for service in overridden if service in processes]
        processes.update(local_processes(docker, images, wanted))
    return processes
