"""The real-Xinference image: its Dockerfile, its torch download and its stack-file sections."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from difystack import xinference_image
from difystack.config_model import StackConfig
from difystack.errors import DifystackError
from difystack.reconcile.desired import desired_state
from difystack.xinference_image import (
    BAKED_MODELS,
    GGUF_FILE,
    TORCH_CPU_INDEX,
    download_torch,
    image_name,
    render_dockerfile,
    stack_snippet,
    torch_requirement,
)

REPO = Path(__file__).resolve().parents[2]


def dockerfile(ca_bundle: bool) -> str:
    return render_dockerfile("base:1", "4.1.0", "torch==2.13.0+cpu", ca_bundle=ca_bundle)


def test_dockerfile_installs_the_pinned_release_offline_ready() -> None:
    text = dockerfile(ca_bundle=False)
    assert text.startswith("# The real Xinference 4.1.0") and "FROM base:1\n" in text
    assert '"torch==2.13.0+cpu" "xinference==4.1.0" "sentence-transformers==6.2.0"' in text
    assert "--constraint /tmp/constraints.txt --find-links /tmp/wheels" in text
    assert "pip uninstall -y torchvision" in text
    assert "m.assemble('/models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf')" in text
    assert "HF_HUB_OFFLINE=1" in text
    assert "build-ca.pem" not in text and "PIP_CERT" not in text
    assert text.rstrip().endswith('CMD ["xinference-local", "-H", "0.0.0.0", "--port", "9997"]')


def test_dockerfile_trusts_a_given_ca_bundle_in_the_build_only() -> None:
    text = dockerfile(ca_bundle=True)
    assert "COPY build-ca.pem /tmp/build-ca.pem" in text
    assert text.count("PIP_CERT=/tmp/build-ca.pem /opt/xinference/bin/pip install") == 2
    assert "rm -rf /tmp/model-packages /tmp/build-ca.pem" in text
    assert "ENV PIP_CERT" not in text  # nothing of it reaches the running server


@pytest.mark.parametrize(
    ("machine", "requirement"),
    [("x86_64", "torch==2.13.0+cpu"), ("amd64", "torch==2.13.0+cpu"), ("aarch64", "torch==2.13.0")],
)
def test_torch_is_the_cpu_build_for_the_image_architecture(machine: str, requirement: str) -> None:
    assert torch_requirement(machine) == requirement


def test_torch_comes_from_pips_sources_else_from_the_pytorch_cpu_index(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[list[str]] = []

    def fake_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        if TORCH_CPU_INDEX not in command:
            return subprocess.CompletedProcess(command, 1, "", "No matching distribution found for torch")
        (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"wheel")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(xinference_image.subprocess, "run", fake_pip)
    wheel = download_torch("torch==2.13.0+cpu", tmp_path, "3.11", "x86_64")
    assert wheel.name.startswith("torch-2.13.0+cpu")
    assert len(calls) == 2
    assert {"--no-deps", "--only-binary=:all:", "torch==2.13.0+cpu"} <= set(calls[0])
    assert calls[1][-2:] == ["--extra-index-url", TORCH_CPU_INDEX]


def test_torch_that_cannot_be_found_anywhere_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def failing_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(xinference_image.subprocess, "run", failing_pip)
    with pytest.raises(DifystackError) as raised:
        download_torch("torch==2.13.0+cpu", tmp_path, "3.11", "x86_64")
    assert "downloading torch==2.13.0+cpu for the Xinference image failed" in str(raised.value)
    assert TORCH_CPU_INDEX in (raised.value.hint or "")


@pytest.mark.parametrize(("content", "problem"), [(None, "No such file"), ("hello", "not a PEM file")])
def test_a_bad_ca_bundle_is_refused_before_any_build(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    builder = xinference_image.XinferenceImageBuilder(standins=_NoDocker())  # type: ignore[arg-type]
    with pytest.raises(DifystackError) as raised:
        builder.build("base:1", ca_bundle=bundle)
    assert f"--ca-bundle {bundle}" in str(raised.value) and problem in str(raised.value)


class _NoDocker:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the builder touched Docker ({name}) before checking its inputs")


def test_stack_snippet_is_a_valid_stack_whose_models_register_from_paths_in_the_image() -> None:
    snippet = stack_snippet(image_name())
    config = StackConfig.model_validate({**snippet, "localai": {"enabled": False}})
    assert config.images == {"xinference": "difystack-local/xinference:4.1.0-cpu"}
    desired = desired_state(config, "http://xinference:9997", None, REPO)
    specs = {d.uid: d.custom_spec for d in desired.xinference}
    assert specs["all-minilm-l6-v2"] is not None and specs["gemma-3-270m"] is not None
    embedding = specs["all-minilm-l6-v2"]["model_specs"][0]
    assert embedding["model_uri"] == "file:///models/all-minilm-l6-v2"
    chat = specs["gemma-3-270m"]
    assert chat["model_family"] == "gemma-3-1b-it" and chat["version"] == 2
    assert chat["model_specs"][0]["model_uri"] == "file:///models/gemma-3-270m"
    assert chat["model_specs"][0]["model_file_name_template"] == GGUF_FILE
    launches = {d.uid: d.launch for d in desired.xinference}
    assert launches["gemma-3-270m"]["model_engine"] == "llama.cpp"
    assert {k: config.default_models()[k].model for k in ("llm", "text-embedding")} == {
        "llm": "gemma-3-270m",
        "text-embedding": "all-minilm-l6-v2",
    }
    assert [m.directory for m in BAKED_MODELS] == ["/models/gemma-3-270m", "/models/all-minilm-l6-v2"]


def test_the_reference_stack_runs_the_built_image_and_its_models() -> None:
    reference = yaml.safe_load((REPO / "compose" / "xinference-real-offline" / "difystack.yaml").read_text())
    snippet = stack_snippet(image_name())
    assert reference["images"] == snippet["images"]
    assert reference["xinference"]["models"] == snippet["xinference"]["models"]
