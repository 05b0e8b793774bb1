"""Rendering: real `docker compose config` on every variant, structure, reference stacks, secrets."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from difystack.config_loader import load_config
from difystack.errors import ConfigError
from difystack.reference import committed_files, reference_dirs, render_reference
from difystack.render import render_project, write_project
from difystack.secrets_store import GENERATED, PLACEHOLDERS, SecretsStore
from difystack.stack import Stack
from tests.conftest import REPO_ROOT, compose_binary, stack_config

DIFY_1X_SERVICES = {
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
}
MODEL_CALLERS = {"api", "worker", "plugin_daemon"}
ONE_SHOT = {"init_permissions"}


def compose_config(project: Path) -> dict[str, Any]:
    """Run the real Compose v2 binary; fail on any warning (unset variables included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [
            compose_binary(),
            "--project-directory",
            str(project),
            "-f",
            str(project / "docker-compose.yml"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr and "not set" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def render_to(tmp_path: Path, assignments: list[str], *, gpu: bool = False) -> tuple[Path, dict[str, Any]]:
    config = load_config(env={}, assignments=assignments)
    out = tmp_path / "project"
    write_project(render_project(config, PLACEHOLDERS, gpu=gpu, config_dir=tmp_path), out)
    return out, compose_config(out)


VARIANTS: dict[str, list[str]] = {
    "default": [],
    "team-demo": ["bind_address=0.0.0.0", "dify.port=8088"],
    "no-dify": ["dify.enabled=false"],
    "xinference-only": ["localai.enabled=false"],
    "localai-only": ["xinference.enabled=false"],
    "external-localai": ["localai.external.url=http://127.0.0.1:8080"],
    "external-xinference-lan": ["xinference.external.url=http://192.168.1.20:9997"],
    "distributed": ["xinference.topology=distributed", "xinference.workers=3"],
    "auth": [
        "xinference.auth=true",
        "localai.api_key=true",
        "localai.models.0.register=false",
        "localai.models.1.register=false",
    ],
    "inline-localai-yaml": [
        "localai.models=[{name: 'tiny:q4', type: llm, config: {backend: llama-cpp, "
        "parameters: {model: tiny.gguf}}}]",
    ],
    "offline-plugins": [
        "dify.plugins.source=packages",
        "dify.plugins.verify_signatures=false",
        "dify.plugins.packages={langgenius/xinference: x.difypkg, langgenius/localai: l.difypkg}",
    ],
    "older-dify": ["dify.version=1.9.1"],
}


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_pass_real_compose_config(tmp_path: Path, variant: str, gpu: bool) -> None:
    _, parsed = render_to(tmp_path, VARIANTS[variant], gpu=gpu)
    services = parsed["services"]
    assert services, "no services rendered"
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in service and service["healthcheck"].get("test"), (
                f"{name} has no healthcheck"
            )
        assert service["labels"]["io.difystack.stack"] == "difystack"


def test_dify_services_and_shared_model_network(tmp_path: Path) -> None:
    _, parsed = render_to(tmp_path, [])
    services = parsed["services"]
    assert set(services) >= DIFY_1X_SERVICES
    for server in ("xinference", "localai"):
        server_networks = set(services[server]["networks"])
        for caller in MODEL_CALLERS:
            assert server_networks & set(services[caller]["networks"]), f"{caller} cannot reach {server}"
    # The sandbox must not share a network with the model servers or the outside world.
    assert set(services["sandbox"]["networks"]) == {"ssrf_proxy_network"}
    assert parsed["networks"]["ssrf_proxy_network"]["internal"] is True


def published_on(parsed: dict[str, Any]) -> dict[str, set[str]]:
    return {
        name: {port["host_ip"] for port in service.get("ports", [])}
        for name, service in parsed["services"].items()
        if service.get("ports")
    }


def test_bind_address_opens_dify_but_not_the_model_servers(tmp_path: Path) -> None:
    for bind in ("127.0.0.1", "0.0.0.0"):
        _, parsed = render_to(tmp_path / bind, [f"bind_address={bind}", "dify.port=8181"])
        assert published_on(parsed) == {
            "nginx": {bind},
            "xinference": {"127.0.0.1"},
            "localai": {"127.0.0.1"},
        }
        nginx_port = parsed["services"]["nginx"]["ports"][0]
        assert (nginx_port["published"], nginx_port["target"]) == ("8181", 80)


def test_an_exposed_xinference_is_published_with_its_accounts_on(tmp_path: Path) -> None:
    _, parsed = render_to(tmp_path, ["bind_address=0.0.0.0", "xinference.expose=true"])
    assert published_on(parsed)["xinference"] == {"0.0.0.0"}
    assert published_on(parsed)["localai"] == {"127.0.0.1"}
    assert parsed["services"]["xinference"]["environment"]["XINFERENCE_AUTH_ADVANCED"] == "1"
    with pytest.raises(ConfigError, match=r"xinference\.auth: off, but xinference\.expose"):
        load_config(env={}, assignments=["xinference.expose=true", "xinference.auth=false"])


def test_an_exposed_localai_with_registered_models_is_refused_naming_both_settings() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, assignments=["localai.expose=true"])
    message = str(caught.value)
    assert "localai.expose" in message and "localai.api_key" in message and "\n" not in message
    config = load_config(
        env={},
        assignments=[
            "localai.expose=true",
            "localai.models.0.register=false",
            "localai.models.1.register=false",
        ],
    )
    assert config.localai.api_key


def test_plugin_debugging_port_is_off_unless_asked_for(tmp_path: Path) -> None:
    _, parsed = render_to(tmp_path / "off", ["bind_address=0.0.0.0"])
    assert "ports" not in parsed["services"]["plugin_daemon"]
    _, parsed = render_to(tmp_path / "on", ["bind_address=0.0.0.0", "dify.plugin_debugging=true"])
    (port,) = parsed["services"]["plugin_daemon"]["ports"]
    assert (port["target"], port["published"], port["host_ip"]) == (5003, "5003", "0.0.0.0")


def test_dify_services_match_upstream_settings(tmp_path: Path) -> None:
    out, parsed = render_to(tmp_path, ["dify.port=8181", "dify.celery_workers=6"])
    env = parsed["services"]["worker"]["environment"]
    assert env["CELERY_WORKER_AMOUNT"] == "6"
    assert env["UV_CACHE_DIR"] == "/tmp/.uv-cache"
    assert env["TRIGGER_URL"] == env["FILES_URL"] == "http://localhost:8181"
    assert env["ENDPOINT_URL_TEMPLATE"] == "http://localhost:8181/e/{hook_id}"
    localai_targets = {volume["target"] for volume in parsed["services"]["localai"]["volumes"]}
    assert {"/models", "/backends", "/data", "/configuration"} <= localai_targets
    squid = (out / "ssrf_proxy" / "squid.conf").read_text()
    assert "cache_peer_access sandbox allow sandbox_port" in squid
    assert "cache_peer_access sandbox deny all" in squid


def test_public_url_is_the_lan_address_on_0_0_0_0_or_the_given_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("difystack.render.lan_address", lambda: "192.168.7.9")
    _, parsed = render_to(tmp_path / "lan", ["bind_address=0.0.0.0", "dify.port=8088"])
    env = parsed["services"]["api"]["environment"]
    assert env["ENDPOINT_URL_TEMPLATE"] == "http://192.168.7.9:8088/e/{hook_id}"
    assert env["PLUGIN_REMOTE_INSTALL_HOST"] == "192.168.7.9"
    _, parsed = render_to(
        tmp_path / "given", ["bind_address=0.0.0.0", "dify.public_url=https://dify.team.lan/"]
    )
    assert parsed["services"]["api"]["environment"]["SERVICE_API_URL"] == "https://dify.team.lan"
    with pytest.raises(ConfigError, match=r"dify\.public_url: "):
        load_config(env={}, assignments=["dify.public_url=https://dify.team.lan/app"])


def test_nginx_forwards_host_and_port_in_every_location(tmp_path: Path) -> None:
    out, _ = render_to(tmp_path, [])
    conf = (out / "nginx" / "default.conf").read_text()
    locations = [block for block in conf.split("location ")[1:] if "proxy_pass" in block]
    assert len(locations) >= 8
    for block in locations:
        for header in ("Host $host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Port"):
            assert f"proxy_set_header {header}" in block, block
    assert "Dify-Hook-Url $scheme://$http_host$request_uri" in conf


def test_xinference_hub_caches_live_in_its_volume(tmp_path: Path) -> None:
    _, parsed = render_to(tmp_path, [])
    service = parsed["services"]["xinference"]
    data = next(v for v in service["volumes"] if v["target"] == "/data")
    assert data["type"] == "volume"
    assert service["environment"]["HF_HOME"].startswith("/data/")
    assert service["environment"]["MODELSCOPE_CACHE"].startswith("/data/")


def test_image_overrides_take_effect(tmp_path: Path) -> None:
    _, parsed = render_to(
        tmp_path, ["images.api=mirror.local/dify-api:1", "images.xinference=stand-in/xinf:2"]
    )
    assert parsed["services"]["api"]["image"] == "mirror.local/dify-api:1"
    assert parsed["services"]["xinference"]["image"] == "stand-in/xinf:2"
    assert parsed["services"]["worker"]["image"] == "langgenius/dify-api:1.13.3"  # only what was overridden


def test_gpu_variant_reserves_devices_and_cpu_variant_does_not(tmp_path: Path) -> None:
    _, gpu = render_to(tmp_path / "gpu", [], gpu=True)
    _, cpu = render_to(tmp_path / "cpu", [], gpu=False)
    for server in ("xinference", "localai"):
        devices = gpu["services"][server]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        assert "deploy" not in cpu["services"][server]
    assert gpu["services"]["xinference"]["image"] == "xprobe/xinference:v4.1.0"
    assert cpu["services"]["xinference"]["image"] == "xprobe/xinference:v4.1.0-cpu"
    assert gpu["services"]["localai"]["image"].endswith("-gpu-nvidia-cuda-12")


def test_external_server_on_host_adds_host_gateway_to_plugin_daemon(tmp_path: Path) -> None:
    project, parsed = render_to(tmp_path, ["localai.external.url=http://127.0.0.1:8080"])
    assert "localai" not in parsed["services"]
    assert "host.docker.internal=host-gateway" in parsed["services"]["plugin_daemon"]["extra_hosts"]
    squid = (project / "ssrf_proxy" / "squid.conf").read_text()
    assert "dstdomain xinference host.docker.internal" in squid


def test_distributed_xinference_keeps_the_service_name(tmp_path: Path) -> None:
    _, parsed = render_to(tmp_path, ["xinference.topology=distributed", "xinference.workers=2"])
    services = parsed["services"]
    assert services["xinference"]["command"][0] == "xinference-supervisor"
    for index in (1, 2):
        worker = services[f"xinference-worker-{index}"]
        assert worker["command"][:3] == ["xinference-worker", "-e", "http://xinference:9997"]
        assert worker["depends_on"]["xinference"]["condition"] == "service_healthy"
        assert "ports" not in worker


def test_custom_model_weights_are_mounted_read_only(tmp_path: Path) -> None:
    weights = tmp_path / "weights" / "minilm"
    weights.mkdir(parents=True)
    stack_file = tmp_path / "difystack.yaml"
    stack_file.write_text(
        "xinference:\n  models:\n    - uid: minilm\n      type: embedding\n      name: my-minilm\n"
        "      custom: {path: weights/minilm, dimensions: 384, max_tokens: 256}\n"
        "localai:\n  enabled: false\n",
        encoding="utf-8",
    )
    config = load_config(stack_file, env={})
    out = tmp_path / "project"
    write_project(render_project(config, PLACEHOLDERS, gpu=False, config_dir=tmp_path), out)
    volumes = compose_config(out)["services"]["xinference"]["volumes"]
    bind = next(v for v in volumes if v["type"] == "bind")
    assert (bind["source"], bind["target"], bind["read_only"]) == (str(weights), "/models/minilm", True)


def test_inline_localai_model_yaml_is_rendered_and_mounted(tmp_path: Path) -> None:
    project, parsed = render_to(tmp_path, VARIANTS["inline-localai-yaml"])
    rendered = (project / "localai" / "models" / "tiny:q4.yaml").read_text()
    assert "name: tiny:q4\nbackend: llama-cpp" in rendered
    binds = [v for v in parsed["services"]["localai"]["volumes"] if v["type"] == "bind"]
    assert [b["target"] for b in binds] == ["/models/tiny:q4.yaml"]


@pytest.mark.parametrize("directory", reference_dirs(REPO_ROOT), ids=lambda p: p.name)
def test_reference_stack_matches_templates(directory: Path) -> None:
    rendered = {f.path: f.content for f in render_reference(directory)}
    committed = committed_files(directory)
    assert sorted(rendered) == sorted(committed), "files differ; run scripts/update-reference-stacks"
    for path, content in rendered.items():
        assert committed[path] == content, (
            f"{directory.name}/{path} drifted; run scripts/update-reference-stacks"
        )
    if (directory / "docker-stack.yml").exists():
        stack_config(directory)
    else:
        compose_config(directory)
    untracked = _untracked(directory, sorted(rendered))
    assert untracked == [], f"not committed (the rendered .gitignore hides .env: git add -f): {untracked}"


def _untracked(directory: Path, paths: list[str]) -> list[str]:
    """Rendered files git does not track (empty outside a git checkout)."""
    listed = subprocess.run(
        ["git", "ls-files", "--", *paths], cwd=directory, capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        return []
    return sorted(set(paths) - set(listed.stdout.split()))


def test_there_are_at_least_three_reference_stacks() -> None:
    names = {p.name for p in reference_dirs(REPO_ROOT)}
    assert "default" in names and len(names) >= 3


def test_no_generated_secret_in_reference_stacks(tmp_path: Path) -> None:
    real = SecretsStore(tmp_path / "s.yaml").ensure()
    committed = "\n".join(
        p.read_text(encoding="utf-8") for p in (REPO_ROOT / "compose").rglob("*") if p.is_file()
    )
    assert not [name for name, value in real.items() if value in committed]
    for env_file in (REPO_ROOT / "compose").glob("*/.env"):
        for line in env_file.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                assert value == "" or value.startswith("placeholder-"), (
                    f"{env_file}: {key} is not a placeholder"
                )


def test_secrets_created_0600_reused_and_distinct_per_stack(tmp_path: Path) -> None:
    env = {"DIFYSTACK_HOME": str(tmp_path / "home")}
    first = Stack.load(env=env, cwd=tmp_path)
    project = first.render(tmp_path / "out1")
    secrets_file = first.paths.secrets
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600
    assert stat.S_IMODE(first.paths.root.stat().st_mode) == 0o700
    values = first.secrets_store.read()
    assert set(values) == set(GENERATED)
    env_text = (project / ".env").read_text()
    assert f"DIFY_SECRET_KEY={values['dify_secret_key']}" in env_text
    assert values["dify_secret_key"] not in (project / "docker-compose.yml").read_text()

    again = Stack.load(env=env, cwd=tmp_path)
    again.render(tmp_path / "out2")
    assert again.secrets_store.read() == values
    assert (tmp_path / "out2" / ".env").read_text() == env_text

    other = Stack.load(env=env, cwd=tmp_path, assignments=["name=other"])
    other.render(tmp_path / "out3")
    other_values = other.secrets_store.read()
    assert other.paths.secrets != secrets_file
    assert all(other_values[k] != values[k] for k in values)


def test_admin_and_init_passwords_satisfy_difys_rules(tmp_path: Path) -> None:
    values = SecretsStore(tmp_path / "s.yaml").ensure()
    for name in ("admin_password", "init_password"):
        value = values[name]
        assert len(value) <= 30 and len(value) >= 8
        assert any(c.isalpha() for c in value) and any(c.isdigit() for c in value)


def test_rerender_removes_files_the_previous_render_wrote(tmp_path: Path) -> None:
    project, _ = render_to(tmp_path, VARIANTS["inline-localai-yaml"])
    assert (project / "localai" / "models" / "tiny:q4.yaml").exists()
    config = load_config(env={}, assignments=["localai.enabled=false"])
    write_project(render_project(config, PLACEHOLDERS, gpu=False, config_dir=tmp_path), project)
    assert not (project / "localai" / "models" / "tiny:q4.yaml").exists()
