"""The stack configuration: layering, defaults and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from difystack.config_loader import env_layer, load_config, merge, set_layer
from difystack.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_embedded_default_declares_dify_xinference_localai_with_models() -> None:
    config = load_config()
    assert config.dify.enabled and config.xinference.enabled and config.localai.enabled
    assert config.bind_address == "127.0.0.1"
    kinds = {(r.provider, r.model_type) for r in config.registered_models()}
    assert kinds == {
        ("xinference", "llm"),
        ("xinference", "text-embedding"),
        ("localai", "llm"),
        ("localai", "text-embedding"),
    }
    defaults = config.default_models()
    assert (defaults["llm"].provider, defaults["llm"].model) == ("xinference", "qwen2.5-instruct-0.5b")
    assert defaults["text-embedding"].model == "bge-small-en-v1.5"


def test_layers_apply_in_order_defaults_file_env_set(tmp_path: Path) -> None:
    stack_file = write(tmp_path / "s.yaml", "dify:\n  port: 8001\nxinference:\n  port: 9001\n")
    env = {"DIFYSTACK_DIFY__PORT": "8002", "DIFYSTACK_LOCALAI__PORT": "9100"}
    config = load_config(stack_file, env, ["dify.port=8003"])
    assert config.dify.port == 8003  # --set beats env beats file
    assert config.xinference.port == 9001  # file beats defaults
    assert config.localai.port == 9100  # env beats defaults
    assert config.dify.version == "1.13.3"  # untouched default survives the merge


def test_lists_replace_and_set_can_edit_one_list_item(tmp_path: Path) -> None:
    stack_file = write(
        tmp_path / "s.yaml",
        "localai:\n  enabled: false\nxinference:\n  models:\n"
        "    - {uid: e1, type: embedding, name: bge-small-en-v1.5}\n"
        "dify:\n  default_models: {text-embedding: e1}\n",
    )
    config = load_config(stack_file, {}, ["xinference.models.0.uid=e2", "xinference.models.0.dify_name=e1"])
    assert [m.uid for m in config.xinference.models] == ["e2"]
    assert config.default_models()["text-embedding"].server_id == "e2"


def test_env_values_are_yaml_typed_and_other_prefixes_ignored() -> None:
    layer = env_layer({"DIFYSTACK_LOCALAI__ENABLED": "false", "DIFYSTACK_HOME": "/x", "PATH": "/bin"})
    assert layer == {"localai": {"enabled": False}}


def test_merge_keeps_base_keys_and_replaces_scalars() -> None:
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


@pytest.mark.parametrize(
    ("assignment", "field", "words"),
    [
        ("dify.portt=1", "dify.portt", "unknown key"),
        ("dify.port=abc", "dify.port", "integer"),
        ("xinference.models.1.uid=qwen2.5-instruct-0.5b", "xinference.models[1].uid", "duplicate"),
        ("xinference.models.0.uid=org/model", "xinference.models[0].uid", "'/'"),
        ("localai.port=80", "localai.port", "also published by dify.port"),
        ("xinference.models=[]", "xinference.models", "declares no models"),
        ("gpu=maybe", "gpu", "not allowed"),
        ("images.apii=x", "images", "no service named apii"),
        ("dify.default_models.llm=nope", "dify.default_models.llm", "not a model registered"),
        ("xinference.models.0.engine=null", "xinference.models[0].engine", "needs an engine"),
        ("bind_address=localhost", "bind_address", "not an IP address"),
        ("dify.version=1.15.0", "dify.version", "1.0 to 1.13"),
        ("xinference.models.0.worker=1", "xinference.models[0].worker", "needs `topology: distributed`"),
        ("xinference.models.0.worker=0", "xinference.models[0].worker", "greater than or equal to 1"),
    ],
)
def test_bad_values_name_the_field(assignment: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(assignments=[assignment])
    message = str(caught.value)
    assert f"{field}: " in message
    assert words in message
    assert "\n" not in message


def test_unknown_key_in_file_names_file_and_path(tmp_path: Path) -> None:
    stack_file = write(tmp_path / "bad.yaml", "xinference:\n  models:\n    - {uid: a, name: b, engin: x}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(stack_file)
    assert str(stack_file) in str(caught.value)
    assert "xinference.models[0].engin: unknown key" in str(caught.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    stack_file = write(tmp_path / "broken.yaml", "dify:\n  port: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml line \d+: not valid YAML"):
        load_config(stack_file)


def test_localai_api_key_conflicts_with_registration() -> None:
    with pytest.raises(ConfigError, match=r"localai\.api_key: .*cannot send an API key"):
        load_config(assignments=["localai.api_key=true"])


def test_set_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        set_layer(["dify.port"])


def test_external_localhost_server_is_reached_through_host_gateway() -> None:
    config = load_config(assignments=["localai.external.url=http://localhost:8080/"])
    assert config.localai.external is not None
    assert config.localai.external.url == "http://localhost:8080"
    assert config.localai.external.dify_url == "http://host.docker.internal:8080"
    assert config.localai.external.needs_host_gateway
    # An external server does not publish a port of the stack.
    assert "localai.port" not in config.published_ports()


def test_external_url_with_v1_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"xinference\.external\.url: .*without /v1"):
        load_config(assignments=["xinference.external.url=http://10.0.0.5:9997/v1"])


def test_every_tool_setting_is_exported_by_the_test_session() -> None:
    from difystack import settings
    from tests.conftest import EXPORTED_SETTINGS

    assert sorted(EXPORTED_SETTINGS) == sorted(settings.REGISTRY)


def test_tool_settings_are_not_config_keys() -> None:
    from difystack import settings

    env = {name: "some value" for name in settings.REGISTRY}
    assert env_layer(env) == {}
    config = load_config(env={**env, "DIFYSTACK_DIFY__PORT": "8088"})
    assert config.dify.port == 8088


@pytest.mark.parametrize(
    ("variable", "words"),
    [
        ("DIFYSTACK_DIFY_ADMIN_PASSWORDS", "DIFYSTACK_DIFY_ADMIN_PASSWORDS: no config key"),
        ("DIFYSTACK_DIFY__NO_SUCH_KEY", "DIFYSTACK_DIFY__NO_SUCH_KEY: no config key 'dify.no_such_key'"),
    ],
)
def test_unknown_environment_name_is_an_error_naming_the_variable(variable: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={variable: "x"})
    assert words in str(caught.value)


def test_offline_plugins_are_asked_only_for_the_providers_the_stack_registers(tmp_path: Path) -> None:
    package = tmp_path / "langgenius-xinference.difypkg"
    package.write_bytes(b"PK")
    config = load_config(
        assignments=[
            "localai.enabled=false",
            "dify.plugins.source=packages",
            f"dify.plugins.packages={{'langgenius/xinference': '{package}'}}",
        ]
    )
    assert config.dify.plugins.packages == {"langgenius/xinference": str(package)}
    with pytest.raises(
        ConfigError, match=r"dify\.plugins\.packages: .*no \.difypkg is given for langgenius/localai \("
    ):
        load_config(
            assignments=[
                "dify.plugins.source=packages",
                f"dify.plugins.packages={{'langgenius/xinference': '{package}'}}",
            ]
        )


def test_a_worker_beyond_the_stacks_workers_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            assignments=[
                "xinference.topology=distributed",
                "xinference.workers=2",
                "xinference.models.1.worker=3",
            ]
        )
    assert "xinference.models[1].worker: 3 names no worker; this stack has 2" in str(caught.value)
