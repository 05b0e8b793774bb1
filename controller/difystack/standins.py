"""Stand-in images: local images that take the place of images that cannot be pulled.

Two families:

* **fakes** - Xinference, LocalAI and Dify's api / plugin daemon / web / sandbox and weaviate,
  served by ``difystack.fakes``. Useful anywhere: a CI without GPUs can run a real Dify against
  fake model servers (override just ``xinference`` and ``localai``).
* **infra** - PostgreSQL, Redis, nginx, squid and busybox from the Debian packages of an offline
  base image. Only for machines that cannot pull any image (see ``scripts/provision-docker``).

Images are rebuilt only when their inputs change (a content hash is kept in a label).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

from difystack import settings
from difystack.errors import DifystackError
from difystack.paths import templates_dir
from difystack.render import Renderer

REPOSITORY = "difystack-standin"
HASH_LABEL = "io.difystack.standin.hash"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
RUNTIME = "runtime"
PYTHON = "python"


@dataclass(frozen=True)
class Role:
    name: str
    title: str
    services: tuple[str, ...]
    infra: bool
    command: list[str]
    entrypoint: list[str] | None = None
    fake: str = ""
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    scripts: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    workdir: str | None = None

    @property
    def image(self) -> str:
        return standin_image(self.name)


def standin_image(role: str) -> str:
    """``difystack-standin/<role>:<tag>``; $DIFYSTACK_STANDIN_TAG keeps parallel checkouts apart."""
    return f"{REPOSITORY}/{role}:{settings.STANDIN_TAG.read() or 'latest'}"


def _fake(role: str, port: int) -> list[str]:
    return [PYTHON, "-m", "difystack.fakes", role, "--port", str(port)]


ROLES: tuple[Role, ...] = (
    Role(
        "xinference",
        "Xinference",
        ("xinference",),
        False,
        command=["xinference-local", "-H", "0.0.0.0", "--port", "9997"],
        fake="xinference",
        port=9997,
        env={"XINFERENCE_HOME": "/data"},
        scripts=("xinference-local",),
    ),
    Role(
        "localai",
        "LocalAI",
        ("localai",),
        False,
        command=_fake("localai", 8080),
        fake="localai",
        port=8080,
        env={"MODELS_PATH": "/models"},
    ),
    Role(
        "dify-api",
        "Dify api / worker / worker_beat",
        ("api", "worker", "worker_beat"),
        False,
        command=["dify-api-entrypoint"],
        fake="dify-api",
        port=5001,
        env={"DIFYSTACK_FAKE_STATE_DIR": "/app/api/storage/difystack-fake"},
        scripts=("dify-api-entrypoint",),
    ),
    Role(
        "dify-plugin-daemon",
        "Dify plugin daemon",
        ("plugin_daemon",),
        False,
        command=_fake("dify-plugin-daemon", 5002),
        fake="dify-plugin-daemon",
        port=5002,
    ),
    Role(
        "dify-web",
        "Dify web",
        ("web",),
        False,
        command=_fake("stub", 3000),
        fake="stub",
        port=3000,
        env={"DIFYSTACK_STUB_NAME": "dify-web", "DIFYSTACK_STUB_PATHS": "/,/apps,/install,/signin"},
    ),
    Role(
        "dify-sandbox",
        "Dify sandbox",
        ("sandbox",),
        False,
        command=_fake("stub", 8194),
        fake="stub",
        port=8194,
        env={"DIFYSTACK_STUB_NAME": "dify-sandbox", "DIFYSTACK_STUB_PATHS": "/health"},
    ),
    Role(
        "weaviate",
        "Weaviate",
        ("weaviate",),
        False,
        command=_fake("stub", 8080),
        fake="stub",
        port=8080,
        env={
            "DIFYSTACK_STUB_NAME": "weaviate",
            "DIFYSTACK_STUB_PATHS": "/v1/.well-known/ready,/v1/.well-known/live,/v1/meta",
        },
    ),
    Role(
        "postgres",
        "PostgreSQL",
        ("db_postgres",),
        True,
        command=["postgres"],
        entrypoint=["postgres-entrypoint"],
        scripts=("postgres-entrypoint",),
    ),
    Role(
        "redis",
        "Redis",
        ("redis",),
        True,
        command=["redis-server"],
        workdir="/data",
        setup=("mkdir -p /data",),
    ),
    Role(
        "nginx",
        "nginx",
        ("nginx",),
        True,
        command=["nginx", "-g", "daemon off;"],
        setup=("rm -f /etc/nginx/sites-enabled/default",),
    ),
    Role(
        "squid",
        "squid (SSRF proxy)",
        ("ssrf_proxy",),
        True,
        command=["squid", "-N", "-f", "/etc/squid/squid.conf"],
    ),
    Role("busybox", "busybox (one-shot jobs)", ("init_permissions",), True, command=["sh"]),
)


# The daemon runs the real plugins, the api's simulated marketplace serves their packages.
PACKAGE_ROLES = frozenset({"dify-plugin-daemon", "dify-api"})


def roles(infra: bool) -> list[Role]:
    return [role for role in ROLES if infra or not role.infra]


def image_overrides(infra: bool = True, only: Iterable[str] | None = None) -> dict[str, str]:
    """Config ``images:`` entries (service -> stand-in image)."""
    wanted = set(only) if only is not None else None
    overrides = {}
    for role in roles(infra):
        for service in role.services:
            if wanted is None or service in wanted:
                overrides[service] = role.image
    return overrides


def with_env(base: str, variant: str, env: dict[str, str], docker: DockerClient | None = None) -> str:
    """A stand-in variant: ``base`` with extra environment (e.g. an injected failure)."""
    image = standin_image(variant)
    lines = [f"FROM {base}", *(f"ENV {name}={value}" for name, value in env.items())]
    with tempfile.TemporaryDirectory(prefix="difystack-variant-") as tmp:
        (Path(tmp) / "Dockerfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (docker or DockerClient()).legacy_build(tmp, tags=[image], quiet=True)
    return image


Progress = Callable[[str], None]


class StandinBuilder:
    def __init__(self, docker: DockerClient | None = None, progress: Progress | None = None) -> None:
        self.docker = docker or DockerClient()
        self.progress = progress or (lambda message: None)
        self.renderer = Renderer(templates_dir())

    def build(
        self,
        base_image: str = DEFAULT_BASE_IMAGE,
        infra: bool = False,
        force: bool = False,
        plugin_packages: Path | None = None,
        plugin_base: str | None = None,
        only: Iterable[str] | None = None,
    ) -> dict[str, str]:
        """Build (or reuse) the stand-ins (every one, or the ``only`` roles); returns service -> image.

        The plugin daemon runs Dify's real plugins and the api's simulated marketplace serves
        them: both need ``plugin_packages`` (a directory of .difypkg, see
        :mod:`difystack.plugin_standin`)."""
        names = set(only) if only is not None else None
        wanted = [role for role in roles(infra) if names is None or role.name in names]
        needs_packages = [role.name for role in wanted if role.name in PACKAGE_ROLES]
        if needs_packages and plugin_packages is None:
            raise DifystackError(
                f"the {' and '.join(needs_packages)} stand-ins run and serve Dify's real plugins:"
                " give a directory of .difypkg files",
                hint=f"--plugin-packages DIR or {settings.PLUGIN_PACKAGES.name}"
                " (e.g. the langgenius/xinference and langgenius/localai packages from Dify's marketplace)",
            )
        base_id = self.base_image_id(base_image)
        with tempfile.TemporaryDirectory(prefix="difystack-standins-") as tmp:
            work = Path(tmp)
            runtime_hash = self._build_runtime(base_image, base_id, work, force)
            for role in wanted:
                if role.name != "dify-plugin-daemon":
                    marketplace = plugin_packages if role.name == "dify-api" else None
                    self._build_role(role, base_image, base_id, runtime_hash, work, force, marketplace)
        if "dify-plugin-daemon" in needs_packages and plugin_packages is not None:
            from difystack.plugin_standin import DEFAULT_PLUGIN_BASE, build_plugin_daemon

            build_plugin_daemon(self, plugin_packages, plugin_base or DEFAULT_PLUGIN_BASE, force)
        return {service: role.image for role in wanted for service in role.services}

    def base_image_id(self, base_image: str) -> str:
        try:
            if not self.docker.image.exists(base_image):
                self.progress(f"pulling base image {base_image}")
                self.docker.image.pull(base_image, quiet=True)
            return str(self.docker.image.inspect(base_image).id)
        except DockerException as exc:
            raise DifystackError(
                f"base image {base_image} is not available: {_docker_message(exc)}",
                hint="without registry access, build one offline: scripts/provision-docker",
            ) from None

    def _build_runtime(self, base_image: str, base_id: str, work: Path, force: bool) -> str:
        context = work / RUNTIME
        context.mkdir()
        wheels = context / "wheels"
        python_tag, machine = self.probe_base(base_image)
        requirements = fakes_requirements()
        package = Path(__file__).resolve().parent
        shutil.copytree(package, context / "difystack", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        dockerfile = self.renderer.render("standins/runtime.Dockerfile.j2", {"base_image": base_image})
        digest = content_hash(
            base_id, python_tag, machine, "\n".join(requirements), dockerfile, _tree_digest(package)
        )
        image = standin_image(RUNTIME)
        if not force and self.has_hash(image, digest):
            self.progress(f"{image} is up to date")
            return digest
        self.progress(f"downloading wheels for Python {python_tag} on {machine}")
        download_wheels(requirements, wheels, python_tag, machine)
        (context / "Dockerfile").write_text(dockerfile, encoding="utf-8")
        self.docker_build(context, image, digest)
        return digest

    def _build_role(
        self,
        role: Role,
        base_image: str,
        base_id: str,
        runtime_hash: str,
        work: Path,
        force: bool,
        marketplace: Path | None = None,
    ) -> None:
        context = work / role.name
        context.mkdir()
        for script in role.scripts:
            shutil.copy(templates_dir() / "standins" / "files" / script, context / script)
        packages: list[str] = []
        if marketplace is not None:
            from difystack.plugin_standin import package_digests, package_files

            (context / "marketplace").mkdir()
            files = package_files(marketplace)
            for file in files:
                shutil.copy(file, context / "marketplace" / file.name)
            packages = package_digests(files)
        template = "standins/infra.Dockerfile.j2" if role.infra else "standins/fake.Dockerfile.j2"
        dockerfile = self.renderer.render(
            template,
            {
                "role": role,
                "base_image": base_image,
                "runtime_image": standin_image(RUNTIME),
                "marketplace": bool(packages),
            },
        )
        scripts = [(context / s).read_text(encoding="utf-8") for s in role.scripts]
        digest = content_hash(base_id if role.infra else runtime_hash, dockerfile, *scripts, *packages)
        if not force and self.has_hash(role.image, digest):
            self.progress(f"{role.image} is up to date")
            return
        (context / "Dockerfile").write_text(dockerfile, encoding="utf-8")
        self.docker_build(context, role.image, digest)

    def probe_base(self, base_image: str) -> tuple[str, str]:
        probe = (
            "import platform, sys; print(f'{sys.version_info[0]}.{sys.version_info[1]} {platform.machine()}')"
        )
        try:
            output = self.docker.run(base_image, ["python3", "-c", probe], remove=True)
        except DockerException as exc:
            raise DifystackError(
                f"base image {base_image} has no usable python3: {_docker_message(exc)}"
            ) from None
        python_tag, machine = str(output).split()
        return python_tag, machine

    def has_hash(self, image: str, digest: str) -> bool:
        if not self.docker.image.exists(image):
            return False
        labels = self.docker.image.inspect(image).config.labels or {}
        return labels.get(HASH_LABEL) == digest

    def docker_build(self, context: Path, image: str, digest: str) -> None:
        self.progress(f"building {image}")
        try:
            self.docker.legacy_build(context, tags=[image], labels={HASH_LABEL: digest}, quiet=True)
        except DockerException as exc:
            raise DifystackError(f"building {image} failed: {_docker_message(exc)}") from None


def fakes_requirements() -> list[str]:
    """difystack's own requirements plus those of its ``fakes`` extra."""
    requirements = []
    for requirement in importlib.metadata.requires("difystack") or []:
        spec, _, marker = requirement.partition(";")
        if marker and "extra" in marker:
            if not re.search(r"extra\s*==\s*['\"]fakes['\"]", marker):
                continue
            requirements.append(spec.strip())
        elif marker:
            requirements.append(requirement.strip())
        else:
            requirements.append(spec.strip())
    return sorted(r for r in requirements if not r.startswith("difystack"))


def download_wheels(requirements: list[str], dest: Path, python_version: str, machine: str) -> None:
    """Fetch Linux wheels for the stand-in's Python, whatever platform difystack runs on."""
    dest.mkdir(parents=True, exist_ok=True)
    command = pip_download_command(dest, python_version, machine)
    result = subprocess.run([*command, *requirements], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DifystackError(
            f"downloading wheels for the stand-in images failed: {result.stderr.strip()[-800:]}"
        )
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")


def pip_download_command(dest: Path, python_version: str, machine: str) -> list[str]:
    """``pip download`` of Linux wheels for an image's CPython (binary only, any host)."""
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        machine, machine
    )
    platforms = [f"manylinux2014_{arch}", f"manylinux_2_17_{arch}", f"manylinux_2_28_{arch}", "linux_" + arch]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--dest",
        str(dest),
    ]
    for platform in platforms:
        command += ["--platform", platform]
    return command


def content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _docker_message(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or str(exc)).strip() if hasattr(exc, "stderr") else str(exc)
    return text.splitlines()[-1] if text else str(exc)


def describe(overrides: dict[str, str]) -> dict[str, Any]:
    """The ``images:`` section for a stack file."""
    return {"images": dict(sorted(overrides.items()))}
