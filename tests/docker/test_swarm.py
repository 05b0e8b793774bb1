"""`difystack up/status/logs/down --engine swarm` on a one-node swarm of the test engine.

`docker swarm init` works offline; the fixture makes the engine a one-node swarm only when it is
not in one yet, and leaves the swarm again afterwards (only then). The stand-in images exist on
this node, so the stack deploys with `deploy.resolve_image: never`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from difystack.swarm.preflight import kernel_lacks_ipvs
from tests.docker.conftest import BASE_IMAGE, StackUnderTest, _unavailable
from tests.docker.fakes_access import (
    XINFERENCE,
    container_journal,
    credentials,
    dify_console,
    mutating,
    published_journal,
    secrets_of,
)
from tests.docker.swarm_node import SwarmNode, build_node_image, join_swarm, remove_node, start_node

pytestmark = pytest.mark.docker


def swarm_settings() -> dict[str, str]:
    """The stand-ins exist only here (never resolve); virtual IPs need IPVS in this kernel."""
    kernel = docker("info", "--format", "{{.KernelVersion}}").stdout.strip()
    mode = "dnsrr" if kernel_lacks_ipvs(kernel) else "vip"
    return {"engine": "swarm", "resolve_image": "never", "endpoint_mode": mode}


SERVICES = {
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
    "xinference",
    "localai",
}
LOCALAI = "langgenius/localai/localai"


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def manager_id() -> str:
    return docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()


def bridge_gateway() -> str:
    """This machine's address on Docker's default bridge (the subnet's first address)."""
    inspected = docker("network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}")
    config = (json.loads(inspected.stdout or "[]") or [{}])[0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config.get("Subnet", "127.0.0.0/8")).hosts()))


@pytest.fixture(scope="module")
def one_node_swarm(docker_engine: None) -> Iterator[None]:
    """This engine as a one-node swarm, for this module only (unless it already was one)."""
    initialised = False
    had_gateway = docker("network", "inspect", "docker_gwbridge").returncode == 0
    if swarm_state() == "inactive":
        # The bridge's gateway, so that a node in a container (see below) can reach the manager.
        init = docker("swarm", "init", "--advertise-addr", bridge_gateway())
        if init.returncode != 0:
            _unavailable(f"a one-node swarm (docker swarm init: {init.stderr.strip()})")
        initialised = True
    elif swarm_state() != "active":
        _unavailable(f"an engine that can join a swarm (swarm: {swarm_state()})")
    before = json.loads(docker("node", "inspect", "self", "--format", "{{json .Spec.Labels}}").stdout or "{}")
    yield
    if initialised:
        docker("swarm", "leave", "--force")
        if not had_gateway:  # `swarm init` created it, `swarm leave` keeps it
            docker("network", "rm", "docker_gwbridge")
        return
    added = [label for label in ("difystack.dify", "difystack.gpu") if label not in (before or {})]
    if added:
        docker("node", "update", *(f"--label-rm={label}" for label in added), manager_id())


def remove_swarm_stack(name: str) -> None:
    """Whatever a test left of a swarm stack: services, containers, networks, secrets, volumes."""
    docker("stack", "rm", name)
    label = f"label=com.docker.stack.namespace={name}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and docker("service", "ls", "-q", "--filter", label).stdout.strip():
        time.sleep(1)
    leftovers = docker("ps", "-aq", "--filter", label).stdout.split()
    if leftovers:
        docker("rm", "-f", *leftovers)
    while time.monotonic() < deadline and docker("network", "ls", "-q", "--filter", label).stdout.strip():
        time.sleep(1)
    for kind in ("secret", "volume"):
        ids = docker(kind, "ls", "-q", "--filter", f"label=io.difystack.stack={name}").stdout.split()
        if ids:
            docker(kind, "rm", *ids)


@pytest.fixture
def swarm_stack(one_node_swarm: None, make_stack) -> Iterator[StackUnderTest]:
    stack: StackUnderTest = make_stack(deploy=swarm_settings())
    yield stack
    remove_swarm_stack(stack.name)


def task_container(stack: StackUnderTest, service: str) -> str:
    label = f"label=com.docker.swarm.service.name={stack.name}_{service}"
    ids = docker("ps", "-q", "--filter", label).stdout.split()
    assert ids, f"no running container of {service}"
    return ids[0]


def in_task(stack: StackUnderTest, service: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs a command in the service's running task container (docker exec)."""
    return lambda *args: docker("exec", task_container(stack, service), *args)


def environment_digest(stack: StackUnderTest, service: str, variable: str) -> str:
    """sha256 of a variable in the environment of the service's main process (never the value)."""
    code = (
        "import hashlib; text = open('/proc/1/environ').read(); "
        "env = dict(line.split('=', 1) for line in text.split('\\0') if line); "
        f"print(hashlib.sha256(env.get({variable!r}, '').encode()).hexdigest())"
    )
    result = in_task(stack, service)("python3", "-c", code)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def service_versions(stack: StackUnderTest) -> dict[str, str]:
    listed = docker("service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack.name}")
    inspected = docker(
        "service", "inspect", "--format", "{{.Spec.Name}} {{.Version.Index}}", *listed.stdout.split()
    )
    return dict(line.split() for line in inspected.stdout.splitlines())


def swarm_secrets(stack: StackUnderTest) -> list[str]:
    listed = docker(
        "secret", "ls", "--format", "{{.Name}}", "--filter", f"label=io.difystack.stack={stack.name}"
    )
    return sorted(listed.stdout.split())


def psql(stack: StackUnderTest, sql: str) -> subprocess.CompletedProcess[str]:
    return in_task(stack, "db_postgres")("psql", "-U", "postgres", "-d", "dify", "-tAc", sql)


def test_up_on_an_engine_outside_a_swarm_changes_nothing(make_stack) -> None:
    if swarm_state() != "inactive":
        pytest.skip("the engine is already part of a swarm")
    stack: StackUnderTest = make_stack(deploy=swarm_settings())
    result = stack.cli("up")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not a swarm manager (swarm: inactive)" in result.stderr and "docker swarm init" in result.stderr
    assert not (stack.root / "home" / stack.name).exists()
    assert swarm_state() == "inactive"


def assert_ready_on_the_swarm(stack: StackUnderTest) -> None:
    report = stack.status()
    assert report["engine"] == "swarm"
    services = {s["service"]: s for s in report["services"]}
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service["ready"], (name, service)
    assert (services["init_permissions"]["state"], services["init_permissions"]["exit_code"]) == ("exited", 0)
    assert services["api"]["health"] == "healthy"
    assert services["nginx"]["ports"] == [f"*:{stack.config['dify']['port']}->80/tcp"]


def assert_models_registered(stack: StackUnderTest) -> None:
    xport = stack.config["xinference"]["port"]
    running = httpx.get(f"http://127.0.0.1:{xport}/v1/models", timeout=10).json()["data"]
    assert {m["id"] for m in running} == {"qwen2.5-instruct-0.5b", "bge-small-en-v1.5"}
    console = dify_console(stack)
    llm = credentials(console, XINFERENCE, "qwen2.5-instruct-0.5b", "llm")
    assert (llm["server_url"], llm["model_uid"]) == ("http://xinference:9997", "qwen2.5-instruct-0.5b")
    assert credentials(console, LOCALAI, "qwen3-0.6b", "llm")["server_url"] == "http://localai:8080/"
    assert console.default_model("text-embedding")["model"] == "bge-small-en-v1.5"
    # Dify's plugin reached the model server over the swarm's overlay network, by service name.
    assert any(e["host"] == "xinference:9997" for e in published_journal(xport))


def assert_secrets_are_swarm_secrets(stack: StackUnderTest, output: str) -> None:
    project = stack.root / "home" / stack.name / "project"
    assert (project / "docker-stack.yml").exists() and not (project / ".env").exists()
    values = secrets_of(stack)
    assert len(swarm_secrets(stack)) >= 8
    listed = docker("service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack.name}")
    specs = docker("service", "inspect", *listed.stdout.split()).stdout
    exposed = [name for name, value in values.items() if value in specs or value in output]
    assert exposed == []
    digest = {name: hashlib.sha256(value.encode()).hexdigest() for name, value in values.items()}
    assert environment_digest(stack, "api", "INIT_PASSWORD") == digest["init_password"]
    assert environment_digest(stack, "plugin_daemon", "SERVER_KEY") == digest["plugin_daemon_key"]
    assert environment_digest(stack, "api", "PLUGIN_DAEMON_KEY") == digest["plugin_daemon_key"]


def test_the_stack_converges_on_a_swarm_and_down_keeps_its_volumes(swarm_stack: StackUnderTest) -> None:
    stack = swarm_stack
    first = stack.cli("up", "--timeout", "400", timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "swarm manager" in first.stdout and "Stack is up." in first.stdout
    assert "docker stack deploy, stage 1/3" in first.stdout and "stage 3/3: nginx" in first.stdout
    labels = json.loads(docker("node", "inspect", "self", "--format", "{{json .Spec.Labels}}").stdout)
    assert labels.get("difystack.dify") == "true"
    assert_ready_on_the_swarm(stack)
    assert_models_registered(stack)
    assert_secrets_are_swarm_secrets(stack, first.stdout + first.stderr)

    # A second up changes nothing: no service update, no new secret, no mutating HTTP call.
    versions, secrets = service_versions(stack), swarm_secrets(stack)
    xport, lport = stack.config["xinference"]["port"], stack.config["localai"]["port"]
    published_journal(xport, clear=True)
    published_journal(lport, clear=True)
    container_journal(stack, "api", 5001, clear=True, run_in=in_task(stack, "api"))
    second = stack.cli("up", "--timeout", "300")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "services are up to date" in second.stdout and "changes     none" in second.stdout
    assert "docker stack deploy" not in second.stdout
    assert service_versions(stack) == versions and swarm_secrets(stack) == secrets
    assert mutating(published_journal(xport)) == [] and mutating(published_journal(lport)) == []
    assert mutating(container_journal(stack, "api", 5001, run_in=in_task(stack, "api"))) == []

    logs = stack.cli("logs", "xinference", "--tail", "50")
    assert logs.returncode == 0 and "fake xinference" in logs.stdout, logs.stderr

    marker = psql(stack, "CREATE TABLE difystack_marker (id int); INSERT INTO difystack_marker VALUES (42);")
    assert marker.returncode == 0, marker.stderr
    down = stack.cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert service_versions(stack) == {} and swarm_secrets(stack) == []
    assert docker("ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack.name}").stdout == ""
    assert f"{stack.name}_db_data" in stack_volumes(stack)

    again = stack.cli("up", "--timeout", "400", timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert psql(stack, "SELECT id FROM difystack_marker").stdout.strip() == "42"

    destroyed = stack.cli("down", "--volumes", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert f"{stack.name}_db_data" in destroyed.stdout and stack_volumes(stack) == []


def stack_volumes(stack: StackUnderTest) -> list[str]:
    listed = docker("volume", "ls", "-q", "--filter", f"label=io.difystack.stack={stack.name}")
    return sorted(listed.stdout.split())


# -- a second node --------------------------------------------------------------------------------


@pytest.fixture
def second_node(one_node_swarm: None) -> Iterator[SwarmNode]:
    """A worker node in a container, labelled for GPU work; the manager labelled for Dify."""
    try:
        image = build_node_image(BASE_IMAGE)
        node = start_node(image, f"dst-node-{secrets.token_hex(3)}")
    except RuntimeError as exc:
        _unavailable(f"a docker-in-docker swarm node ({exc})")
    try:
        join_swarm(node, docker("info", "--format", "{{.Swarm.NodeAddr}}").stdout.strip())
        docker("node", "update", "--label-add", "difystack.gpu=true", node.node_id)
        docker("node", "update", "--label-add", "difystack.dify=true", manager_id())
        yield node
    finally:
        remove_node(node)


def pinned_to_worker_1(real_xinference: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**model, "worker": 1} for model in real_xinference["xinference"]["models"]]


def test_xinference_workers_run_on_a_second_node_labelled_for_gpus(
    second_node: SwarmNode, make_stack, real_xinference: dict[str, Any]
) -> None:
    second_node.load(real_xinference["images"]["xinference"])
    stack: StackUnderTest = make_stack(
        gpu="nvidia",
        images=real_xinference["images"],
        xinference={"topology": "distributed", "workers": 1, "models": pinned_to_worker_1(real_xinference)},
        localai={"enabled": False},
        deploy=swarm_settings(),
    )
    try:
        first = stack.cli("up", "--timeout", "900", timeout=1200)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "swarm manager" in first.stdout and "(2 nodes)" in first.stdout
        services = {s["service"]: s for s in stack.status()["services"]}
        assert services["xinference-worker-1"]["container"].endswith(f" on {second_node.name}")
        assert not services["xinference"]["container"].endswith(f" on {second_node.name}")
        assert not services["api"]["container"].endswith(f" on {second_node.name}")
        assert all(service["ready"] for service in services.values()), services

        listed = stack.cli("models", "--json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        rows = {(m["server_state"], m["worker"], m["dify_state"]) for m in json.loads(listed.stdout)}
        assert rows == {("running", "xinference-worker-1:30001", "registered")}
        # The worker's container really is on the second node's own engine.
        on_node = second_node.run("ps", "--format", "{{.Names}}").stdout
        assert f"{stack.name}_xinference-worker-1." in on_node

        again = stack.cli("up", "--timeout", "300")
        assert again.returncode == 0 and "changes     none" in again.stdout, again.stdout + again.stderr
    finally:
        stack.cli("down", "--volumes", "--yes")
