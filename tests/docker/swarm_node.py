"""A second swarm node for the docker tier: a Docker engine in a container (docker-in-docker).

The image is the offline base with Debian's docker.io. This machine's kernel grants containers
no CAP_SYS_RESOURCE, so `--privileged` cannot start; the nested dockerd runs with the
capabilities it needs (SYS_ADMIN, NET_ADMIN), the host's cgroup hierarchy mounted writable and
its data on a volume (overlay2 does not nest on overlay2). It joins the test swarm as a worker.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from difystack import settings

DOCKERFILE = """FROM {base}
RUN apt-get update && apt-get install -y --no-install-recommends docker.io iptables \\
 && rm -rf /var/lib/apt/lists/*
"""


def docker(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, input=stdin, check=False)


@dataclass
class SwarmNode:
    name: str
    node_id: str = ""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A docker command against this node's own engine."""
        return docker("exec", self.name, "docker", *args)

    def load(self, image: str) -> None:
        """Copy an image from the manager's engine (a node pulls from nowhere here)."""
        saved = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        loaded = subprocess.run(
            ["docker", "exec", "-i", self.name, "docker", "load", "-q"],
            stdin=saved.stdout,
            capture_output=True,
            check=False,
        )
        saved.wait()
        if loaded.returncode != 0 or saved.returncode != 0:
            raise RuntimeError(f"loading {image} into {self.name} failed: {loaded.stderr.decode()}")


def build_node_image(base: str) -> str:
    image = f"difystack-test/swarm-node:{settings.STANDIN_TAG.read() or 'latest'}"
    built = docker("build", "-q", "-t", image, "-", stdin=DOCKERFILE.format(base=base))
    if built.returncode != 0:
        raise RuntimeError(f"building {image} failed: {built.stderr.strip()}")
    return image


def start_node(image: str, name: str, timeout: float = 60) -> SwarmNode:
    started = docker(
        "run",
        "-d",
        "--name",
        name,
        "--hostname",
        name,
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "-v",
        f"{name}-data:/var/lib/docker",
        image,
        "dockerd",
        "--host",
        "unix:///var/run/docker.sock",
    )
    if started.returncode != 0:
        raise RuntimeError(f"starting {name} failed: {started.stderr.strip()}")
    node = SwarmNode(name)
    deadline = time.monotonic() + timeout
    while node.run("info").returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the engine in {name} did not start: {docker('logs', name).stderr[-2000:]}")
        time.sleep(1)
    return node


def join_swarm(node: SwarmNode, manager_address: str) -> None:
    token = docker("swarm", "join-token", "-q", "worker").stdout.strip()
    joined = node.run("swarm", "join", "--token", token, f"{manager_address}:2377")
    if joined.returncode != 0:
        raise RuntimeError(f"{node.name} could not join the swarm: {joined.stderr.strip()}")
    node.node_id = node.run("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()


def remove_node(node: SwarmNode) -> None:
    node.run("swarm", "leave", "--force")
    if node.node_id:
        docker("node", "rm", "--force", node.node_id)
    docker("rm", "-f", node.name)
    docker("volume", "rm", f"{node.name}-data")
