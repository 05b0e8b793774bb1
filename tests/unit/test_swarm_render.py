"""The swarm variant: config fields, the stack file (checked by `docker stack config`), secrets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from difystack.config_loader import load_config
from difystack.errors import ConfigError
from difystack.render import write_project
from difystack.secrets_store import PLACEHOLDERS, SecretsStore
from difystack.swarm.processes import Process, official_processes
from difystack.swarm.render import STACK_FILE, render_swarm_project
from difystack.swarm.transform import DIFY_PLACEMENT, GPU_PLACEMENT, deployment_stages
from tests.conftest import stack_config

DIFY_SERVICES = {
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


def render_swarm(
    tmp_path: Path,
    assignments: list[str] = (),
    *,
    gpu: bool = False,
    secrets: dict[str, str] | None = None,
    processes: dict[str, Process] | None = None,
) -> tuple[Path, dict[str, Any], list[Any]]:
    config = load_config(env={}, assignments=["deploy.engine=swarm", *assignments])
    files, swarm_secrets = render_swarm_project(
        config, secrets or PLACEHOLDERS, gpu=gpu, config_dir=tmp_path, processes=processes
    )
    out = tmp_path / "project"
    write_project(files, out)
    return out, yaml.safe_load((out / STACK_FILE).read_text()), swarm_secrets


# -- configuration --------------------------------------------------------------------------------


def test_engine_defaults_to_compose_and_every_layer_can_choose_swarm(tmp_path: Path) -> None:
    assert load_config(env={}).deploy.engine == "compose"
    assert load_config(env={}).deploy.resolve_image == "always"
    stack_file = tmp_path / "difystack.yaml"
    stack_file.write_text("deploy:\n  engine: swarm\n  resolve_image: never\n")
    from_file = load_config(stack_file, env={})
    assert (from_file.deploy.engine, from_file.deploy.resolve_image) == ("swarm", "never")
    assert load_config(env={"DIFYSTACK_DEPLOY__ENGINE": "swarm"}).deploy.engine == "swarm"
    assert load_config(env={}, assignments=["deploy.engine=swarm"]).deploy.engine == "swarm"


@pytest.mark.parametrize(
    ("assignments", "field", "words"),
    [
        (["deploy.engine=kubernetes"], "deploy.engine", "'compose' or 'swarm'"),
        (["deploy.resolve_image=sometimes"], "deploy.resolve_image", "'always', 'changed' or 'never'"),
        (["deploy.engine=swarm", f"name={'s' * 29}"], "name", "28 at most"),
        (["deploy.enigne=swarm"], "deploy.enigne", "unknown key"),
    ],
)
def test_bad_deploy_settings_name_the_field(assignments: list[str], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(env={}, assignments=assignments)
    assert f"{field}: " in str(error.value) and words in str(error.value)


def test_a_long_name_is_fine_for_compose() -> None:
    assert load_config(env={}, assignments=[f"name={'s' * 40}"]).name == "s" * 40


# -- the stack file -------------------------------------------------------------------------------


def test_swarm_stack_passes_docker_stack_config_and_keeps_every_service(tmp_path: Path) -> None:
    project, _, _ = render_swarm(tmp_path)
    loaded = stack_config(project)
    assert set(loaded["services"]) == DIFY_SERVICES | {"init_permissions", "xinference", "localai"}
    assert not (project / ".env").exists() and not (project / "docker-compose.yml").exists()
    # After the swarm's variable substitution the secrets wrapper reads `$pair`, not `$$pair`.
    entrypoint = loaded["services"]["api"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    assert 'for pair in $SWARM_SECRETS_AS_ENV; do export "${pair%%=*}=' in entrypoint[2]
    assert loaded["services"]["api"]["command"] == ["/bin/bash", "/entrypoint.sh"]
    # Nothing is left for `docker stack deploy` to substitute from the user's environment.
    text = (project / STACK_FILE).read_text()
    assert re.findall(r"(?<!\$)\$(?!\$)", text.replace("$$", "")) == []


def test_what_swarm_ignores_is_turned_into_explicit_settings(tmp_path: Path) -> None:
    _, stack, _ = render_swarm(tmp_path)
    services = stack["services"]
    for name, service in services.items():
        assert not {"depends_on", "restart", "container_name", "build", "shm_size"} & set(service), name
        for port in service.get("ports", []):
            assert "host_ip" not in port and port["mode"] == "ingress"
    job = services["init_permissions"]["deploy"]
    assert (job["mode"], job["restart_policy"]) == ("replicated-job", {"condition": "none"})
    assert services["api"]["deploy"]["restart_policy"]["condition"] == "any"
    for name in DIFY_SERVICES | {"init_permissions"}:
        assert services[name]["deploy"]["placement"]["constraints"] == DIFY_PLACEMENT, name
    assert "placement" not in services["xinference"]["deploy"]  # a CPU model server may run anywhere
    assert services["nginx"]["configs"] == [
        {"source": "nginx_default_conf", "target": "/etc/nginx/conf.d/default.conf"}
    ]
    assert stack["configs"]["nginx_default_conf"]["file"] == "./nginx/default.conf"
    assert all(network["driver"] == "overlay" for network in stack["networks"].values())
    assert stack["networks"]["ssrf_proxy_network"]["internal"] is True


def test_depends_on_becomes_stages_and_the_conditions_difystack_waits_for(tmp_path: Path) -> None:
    _, stack, _ = render_swarm(tmp_path)
    stages, waits = stack["x-difystack"]["stages"], stack["x-difystack"]["waits"]
    position = {service: index for index, stage in enumerate(stages) for service in stage}
    assert position["init_permissions"] == position["db_postgres"] == position["redis"] == 0
    assert position["api"] == position["worker"] == position["plugin_daemon"] == 1
    assert position["nginx"] == 2
    assert waits["api"] == {
        "init_permissions": "service_completed_successfully",
        "db_postgres": "service_healthy",
        "redis": "service_healthy",
    }
    assert waits["nginx"] == {"api": "service_started", "web": "service_started"}


def test_stages_follow_chains_of_any_length() -> None:
    depends = {"c": {"b": "service_healthy"}, "b": {"a": "service_started"}, "d": {"a": "service_healthy"}}
    assert deployment_stages(depends, ["a", "b", "c", "d", "e"]) == [["a", "e"], ["b", "d"], ["c"]]


def test_gpu_servers_are_placed_by_label_without_device_reservations(tmp_path: Path) -> None:
    project, stack, _ = render_swarm(tmp_path, ["gpu=nvidia"], gpu=True)
    stack_config(project)
    for name in ("xinference", "localai"):
        service = stack["services"][name]
        assert service["deploy"]["placement"]["constraints"] == GPU_PLACEMENT, name
        assert "resources" not in service["deploy"], name
        assert service["environment"]["NVIDIA_VISIBLE_DEVICES"] == "all", name
    shm = [v for v in stack["services"]["xinference"]["volumes"] if isinstance(v, dict)]
    assert shm == [{"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": 8 * 1024**3}}]


def test_distributed_xinference_binds_its_name_on_every_interface(tmp_path: Path) -> None:
    project, stack, _ = render_swarm(tmp_path, ["xinference.topology=distributed", "xinference.workers=2"])
    stack_config(project)
    assert stack["services"]["xinference"]["extra_hosts"] == ["xinference:0.0.0.0"]
    assert stack["services"]["xinference-worker-2"]["extra_hosts"] == ["xinference-worker-2:0.0.0.0"]
    assert stack["x-difystack"]["waits"]["xinference-worker-1"] == {"xinference": "service_healthy"}
    # Swarm names a task in DNS only once it is healthy: a worker's healthcheck cannot wait for the
    # supervisor, which reaches the worker by that name. It checks its own port (30002 = 0x7532).
    check = stack["services"]["xinference-worker-2"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python3", "-c"] and ":7532'" in check[3] and "9997" not in check[3]


# -- secrets ----------------------------------------------------------------------------------------


def test_secrets_become_versioned_swarm_secrets_and_never_reach_a_file(tmp_path: Path) -> None:
    real = SecretsStore(tmp_path / "s.yaml").ensure()
    project, stack, secrets = render_swarm(tmp_path, secrets=real)
    written = "\n".join(p.read_text() for p in project.rglob("*") if p.is_file())
    leaked = [name for name, value in real.items() if value in written]
    assert leaked == []
    by_key = {secret.key: secret for secret in secrets}
    assert by_key["db_password"].content == real["db_password"]
    assert by_key["celery_broker_url"].content == f"redis://:{real['redis_password']}@redis:6379/1"
    for key, declared in stack["secrets"].items():
        assert declared == {"external": True, "name": by_key[key].name}
        assert (
            re.fullmatch(rf"difystack_{key}_[0-9a-f]{{8}}", declared["name"]) and len(declared["name"]) <= 64
        )
    api = stack["services"]["api"]
    assert "DB_PASSWORD" not in api["environment"]
    as_env = dict(pair.split("=") for pair in api["environment"]["SWARM_SECRETS_AS_ENV"].split())
    assert as_env["DB_PASSWORD"] == "db_password" and as_env["SECRET_KEY"] == "dify_secret_key"
    # One secret may fill several variables, but each is mounted once (Swarm sorts mounts by name).
    assert as_env["INNER_API_KEY_FOR_PLUGIN"] == as_env["PLUGIN_DIFY_INNER_API_KEY"]
    mounted = [mount["source"] for mount in api["secrets"]]
    assert mounted == sorted(set(as_env.values()))
    assert all(mount["target"] == mount["source"] for mount in api["secrets"])
    daemon = stack["services"]["plugin_daemon"]["environment"]["SWARM_SECRETS_AS_ENV"]
    assert "SERVER_KEY=plugin_daemon_key" in daemon.split()


def test_a_changed_secret_renames_only_that_secret_and_the_same_secrets_render_the_same(
    tmp_path: Path,
) -> None:
    _, first, _ = render_swarm(tmp_path / "a")
    _, again, _ = render_swarm(tmp_path / "b")
    assert first == again
    changed = {**PLACEHOLDERS, "db_password": "another-value"}
    _, rotated, _ = render_swarm(tmp_path / "c", secrets=changed)
    renamed = {k for k in first["secrets"] if first["secrets"][k]["name"] != rotated["secrets"][k]["name"]}
    assert renamed == {"db_password"}


def test_redis_reads_its_password_from_a_secret_and_keeps_its_entrypoint(tmp_path: Path) -> None:
    project, _, _ = render_swarm(tmp_path)
    redis = stack_config(project)["services"]["redis"]
    assert redis["command"] == [
        "/bin/sh",
        "-c",
        'exec docker-entrypoint.sh redis-server --requirepass "$REDIS_PASSWORD"',
    ]
    assert [m["source"] for m in redis["secrets"]] == ["redis_password"]
    assert (
        redis["environment"]["SWARM_SECRETS_AS_ENV"]
        == "REDISCLI_AUTH=redis_password REDIS_PASSWORD=redis_password"
    )
    # Its healthcheck runs beside the wrapper, so it loads the password itself.
    assert redis["healthcheck"]["test"][1].endswith("redis-cli ping | grep -q PONG")
    assert "/run/secrets/" in redis["healthcheck"]["test"][1]


def test_an_empty_secret_stays_an_empty_variable(tmp_path: Path) -> None:
    _, stack, secrets = render_swarm(tmp_path, ["dify.protect_setup=false"])
    assert stack["services"]["api"]["environment"]["INIT_PASSWORD"] == ""
    assert "dify_init_password" not in {secret.key for secret in secrets}


def test_the_wrapper_runs_what_the_image_runs(tmp_path: Path) -> None:
    processes = {**official_processes(), "api": Process((), ("dify-api-entrypoint",))}
    _, stack, _ = render_swarm(tmp_path, processes=processes)
    assert stack["services"]["api"]["command"] == ["dify-api-entrypoint"]
    assert stack["services"]["worker"]["command"] == ["/bin/bash", "/entrypoint.sh"]
    # A service with its own command keeps the image's entrypoint in front of it.
    assert stack["services"]["db_postgres"]["command"][:2] == ["docker-entrypoint.sh", "postgres"]


def test_without_virtual_ips_ports_are_published_where_the_manager_runs_them(tmp_path: Path) -> None:
    project, stack, _ = render_swarm(tmp_path, ["deploy.endpoint_mode=dnsrr"])
    stack_config(project)
    for name, service in stack["services"].items():
        assert service["deploy"]["endpoint_mode"] == "dnsrr", name
        for port in service.get("ports", []):
            assert port["mode"] == "host", name
    for name in ("xinference", "localai", "nginx"):
        assert stack["services"][name]["deploy"]["placement"]["constraints"] == DIFY_PLACEMENT, name


def test_without_virtual_ips_gpu_work_goes_to_xinference_workers(tmp_path: Path) -> None:
    distributed = ["deploy.endpoint_mode=dnsrr", "gpu=nvidia", "xinference.topology=distributed"]
    _, stack, _ = render_swarm(tmp_path, distributed, gpu=True)
    services = stack["services"]
    assert services["xinference"]["deploy"]["placement"]["constraints"] == DIFY_PLACEMENT  # publishes 9997
    assert services["xinference-worker-1"]["deploy"]["placement"]["constraints"] == GPU_PLACEMENT
    assert "ports" not in services["xinference-worker-1"]
