"""Preflight decisions that need no engine: taken ports with their fix, hardware warnings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from difystack.config_loader import load_config
from difystack.errors import DifystackError
from difystack.gpu import check_gpu_driver, driver_cuda_version
from difystack.paths import StackPaths
from difystack.preflight import EngineFacts, check_ports, hardware_warnings
from difystack.stack import Stack


def test_taken_port_names_the_field_and_a_free_alternative() -> None:
    config = load_config(env={}, assignments=["dify.port=8080", "localai.port=8090"])
    taken = {8080, 8081}
    with pytest.raises(DifystackError) as caught:
        check_ports(
            config, set(), probe=lambda address, port: port not in taken, holder=lambda port: "container x"
        )
    message = str(caught.value)
    assert "dify.port: port 8080 on 127.0.0.1 is already in use (used by container x)" in message
    assert "--set dify.port=8082" in message  # 8081 is taken too, 8090 belongs to localai
    assert "localai.port" not in message


def test_ports_held_by_the_stack_itself_are_fine() -> None:
    config = load_config(env={}, assignments=["dify.port=8088"])
    own = {8088, 9997, 8080}  # dify, xinference and localai of the running stack
    check_ports(config, own, probe=lambda address, port: port not in own)


def facts(architecture: str = "x86_64", runtimes: frozenset[str] = frozenset({"runc"})) -> EngineFacts:
    return EngineFacts("28.0", "2.40.3", None, architecture, runtimes)


def test_arm64_cpu_xinference_is_warned_about() -> None:
    config = load_config(env={})
    assert any("arm64" in w for w in hardware_warnings(config, False, facts("aarch64")))
    assert hardware_warnings(config, False, facts("x86_64")) == []
    external = load_config(env={}, assignments=["xinference.external.url=http://127.0.0.1:9997"])
    assert hardware_warnings(external, False, facts("aarch64")) == []


def test_gpu_stack_without_nvidia_runtime_is_warned_about() -> None:
    config = load_config(env={})
    assert any("nvidia runtime" in w for w in hardware_warnings(config, True, facts()))
    assert hardware_warnings(config, True, facts(runtimes=frozenset({"runc", "nvidia"}))) == []


def fake_nvidia_smi(directory: Path, cuda: str) -> None:
    """An nvidia-smi on PATH that prints the real tool's header with the given CUDA version."""
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA L4 (UUID: GPU-0)"; exit 0; fi\n'
        "echo '+-----------------------------------------------------------------------------+'\n"
        f"echo '| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: {cuda}     |'\n"
    )
    script.chmod(0o755)


@pytest.mark.parametrize(
    ("cuda", "refused", "flavour"), [("12.2", True, "cuda-12"), ("13.0", False, "cuda-13")]
)
def test_gpu_stack_checks_the_drivers_cuda_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuda: str, refused: bool, flavour: str
) -> None:
    fake_nvidia_smi(tmp_path, cuda)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    driver = driver_cuda_version()
    assert driver == tuple(int(part) for part in cuda.split("."))
    config = load_config(env={}, assignments=["gpu=nvidia"])
    if refused:
        with pytest.raises(DifystackError) as caught:
            check_gpu_driver(config, True, driver)
        assert "xinference.version" in str(caught.value) and "CUDA 12.2" in str(caught.value)
        assert caught.value.hint is not None
        assert "xinference.version: v2.12.0" in caught.value.hint and "gpu: none" in caught.value.hint
    else:
        check_gpu_driver(config, True, driver)
    # The CUDA 12 Xinference release and a CPU stack pass on any driver.
    check_gpu_driver(
        load_config(env={}, assignments=["gpu=nvidia", "xinference.version=v2.12.0"]), True, driver
    )
    check_gpu_driver(config, False, driver)
    # LocalAI's image follows the driver.
    stack = Stack(config, None, StackPaths.for_stack("gpu-test", {"DIFYSTACK_HOME": str(tmp_path)}), tmp_path)
    assert stack.gpu and stack.cuda_driver == driver
    compose = (
        stack.render(tmp_path / "project", placeholder_secrets=True) / "docker-compose.yml"
    ).read_text()
    assert f"localai/localai:v4.9.0-gpu-nvidia-{flavour}" in compose
