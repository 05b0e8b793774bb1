"""Preflight decisions that need no engine: taken ports with their fix, hardware warnings."""

from __future__ import annotations

import pytest

from difystack.config_loader import load_config
from difystack.errors import DifystackError
from difystack.preflight import EngineFacts, check_ports, hardware_warnings


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
