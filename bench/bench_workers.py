#!/usr/bin/env python3
"""Benchmark the distributed path: `difystack up` of a stack whose real Xinference 4.1.0 runs one
local worker and expects one external worker, while `difystack worker up` (a compose project of its
own, standing for a second host) starts at the same moment.

Prints the time from `up` to "2 workers joined and one model per worker ready", and the share of
it that is Xinference's own model load. Both come from Xinference: the joins from the supervisor's
/status (polled), each model's readiness from its worker's log (the end of launch_builtin_model,
timestamped by Docker), each model's load from the worker's own metric
`xinference:model_last_load_duration_seconds` (its metrics exporter).

Needs what bench_up.py needs plus the real Xinference image (built here, or reused). It prints
figures; it asserts nothing. Usage: python bench/bench_workers.py [--base-image IMAGE]
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_up import BenchStack, build_standins, standin_parser

from difystack.preflight import free_port
from difystack.xinference_image import XinferenceImageBuilder, stack_snippet

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LOAD_METRIC = re.compile(
    r'^xinference:model_last_load_duration_seconds\{[^}]*model_name="([^"]+)"[^}]*\}\s+(\S+)', re.M
)
METRICS_AT = re.compile(r"Metrics server is started at: http://[^:]+:(\d+)")
# Each worker logs the end of a launch with the replica's uid (`<model uid>-rep<n>`).
LAUNCH_LOG = re.compile(r"^(\S+) .*Launch (started|finished): model_name=\S+, model_uid=(\S+)-rep\d+", re.M)


def host_gateway(base_image: str) -> str:
    found = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--add-host",
            "this-host:host-gateway",
            base_image,
            "python3",
            "-c",
            "import socket; print(socket.gethostbyname('this-host'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return found.stdout.strip()


def docker_time(stamp: str) -> float:
    """Docker's RFC 3339 log timestamp (nanoseconds) as a Unix time."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}+00:00").timestamp() + float(f"0.{fraction or 0}")


def launch_times(container: str, uid: str) -> dict[str, float]:
    """When the worker last started and finished launching ``uid`` (Docker's log timestamps)."""
    logs = subprocess.run(["docker", "logs", "--timestamps", container], capture_output=True, text=True)
    times: dict[str, float] = {}
    for stamp, event, launched in LAUNCH_LOG.findall(logs.stdout + logs.stderr):
        if launched == uid:
            times[event] = docker_time(stamp)
    return times


def load_durations(container: str) -> dict[str, float]:
    """The worker's own measure of each model's load (by model name), from its metrics exporter."""
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    port = METRICS_AT.search(logs.stdout + logs.stderr)
    if port is None:
        return {}
    code = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port[1]}/metrics').read().decode())"
    metrics = subprocess.run(
        ["docker", "exec", container, "python3", "-c", code], capture_output=True, text=True
    )
    return {name: float(value) for name, value in LOAD_METRIC.findall(metrics.stdout)}


class JoinWatch(threading.Thread):
    """Polls the supervisor's /status: when did it first list both workers?"""

    def __init__(self, url: str, hosts: set[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.hosts = url, hosts
        self.joined_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25) and self.joined_at is None:
            try:
                workers = httpx.get(f"{self.url}/status", timeout=2).json().get("workers") or {}
            except (httpx.HTTPError, ValueError):
                continue
            if self.hosts <= {str(address).rsplit(":", 1)[0] for address in workers}:
                self.joined_at = time.time()


def union_within(intervals: list[tuple[float, float]], low: float, high: float) -> float:
    total, reach = 0.0, low
    for start, end in sorted(intervals):
        start, end = max(start, reach), min(end, high)
        if end > start:
            total += end - start
            reach = end
    return total


def real_xinference(base_image: str) -> dict[str, Any]:
    ca = CA_BUNDLE if CA_BUNDLE.is_file() else None
    builder = XinferenceImageBuilder(progress=lambda m: print(f"  {m}", file=sys.stderr))
    return stack_snippet(builder.build(base_image, ca_bundle=ca))


def cluster_stack(
    root: Path, images: dict[str, str], real: dict[str, Any], gateway: str, name: str
) -> tuple[BenchStack, dict[str, tuple[str, str]]]:
    """The stack (chat model on its local worker, embedding model on worker ``name``) and, per
    model uid, its model name and the container of the worker that loads it."""
    models = {m["uid"]: dict(m) for m in real["xinference"]["models"]}
    chat = next(uid for uid, model in models.items() if model.get("type", "llm") == "llm")
    embedding = next(uid for uid, model in models.items() if model.get("type") == "embedding")
    models[chat]["worker"], models[embedding]["worker"] = 1, name
    xinference = {
        "topology": "distributed",
        "workers": 1,
        "supervisor_port": free_port(),
        "join_address": gateway,
        "external_workers": [{"name": name, "address": gateway, "gpu": False}],
        "models": list(models.values()),
    }
    extra = {"xinference": xinference, "localai": {"enabled": False}}
    stack = BenchStack(root, {**images, **real["images"]}, extra)
    containers = {
        chat: (models[chat]["name"], f"{stack.name}-xinference-worker-1-1"),
        embedding: (models[embedding]["name"], f"difystack-worker-{name}-xinference-worker-1"),
    }
    return stack, containers


def figures(started: float, joined_at: float | None, models: dict[str, tuple[str, str]]) -> dict[str, Any]:
    launches = {uid: launch_times(container, uid) for uid, (_, container) in models.items()}
    done = {uid: times["finished"] for uid, times in launches.items() if "finished" in times}
    if joined_at is None or len(done) != len(models):
        raise SystemExit(f"no complete measurement: joined at {joined_at}, launches {launches}")
    loads = {
        uid: load_durations(container).get(name, float("nan")) for uid, (name, container) in models.items()
    }
    ready_at = max(joined_at, *done.values())
    intervals = [(done[uid] - loads[uid], done[uid]) for uid in models]
    return {
        "joined_s": joined_at - started,
        "ready_s": ready_at - started,
        "loads": loads,
        "finished_s": {uid: at - started for uid, at in done.items()},
        "launch_s": {uid: done[uid] - launches[uid].get("started", float("nan")) for uid in models},
        "load_s": union_within(intervals, started, ready_at),
    }


def run(args: Any, root: Path) -> dict[str, Any]:
    images = build_standins(args)
    real = real_xinference(args.base_image)
    gateway = host_gateway(args.base_image)
    name = f"bench-{secrets.token_hex(2)}"
    stack, containers = cluster_stack(root, images, real, gateway, name)
    port = stack.config["xinference"]["port"]
    join = ["--supervisor", f"{gateway}:{port}", "--name", name, "--address", gateway, "--cpu"]
    join += ["--image", real["images"]["xinference"]]
    watch = JoinWatch(f"http://127.0.0.1:{port}", {"xinference-worker-1", name})
    second_host = {**stack.env, "DIFYSTACK_HOME": str(stack.root / "second-host")}
    difystack = [sys.executable, "-m", "difystack"]
    try:
        started = time.time()
        watch.start()
        worker = subprocess.Popen(
            [*difystack, "worker", "up", *join],
            env=second_host,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        up_time, _ = stack.cli("up", "--timeout", "900")
        worker_out, _ = worker.communicate(timeout=900)
        if worker.returncode != 0:
            raise SystemExit(f"difystack worker up failed:\n{worker_out}")
        return {"up_s": up_time, **figures(started, watch.joined_at, containers)}
    finally:
        watch.stop.set()
        down = [*difystack, "worker", "down", "--name", name, "--volumes", "--yes"]
        subprocess.run(down, env=second_host, capture_output=True, check=False)
        stack.destroy()


def main() -> int:
    args = standin_parser(__doc__).parse_args()
    root = Path(tempfile.mkdtemp(prefix="difystack-bench-"))
    try:
        figures = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ready = figures["ready_s"]
    print(f"\nup -> 2 workers joined and one model per worker ready: {ready:.1f}s")
    print(f"  both workers listed by the supervisor after {figures['joined_s']:.1f}s")
    for uid, load in figures["loads"].items():
        print(
            f"  {uid}: ready after {figures['finished_s'][uid]:.1f}s; its launch on the worker took "
            f"{figures['launch_s'][uid]:.1f}s, of which Xinference's own load {load:.2f}s"
        )
    share = figures["load_s"] / ready if ready else float("nan")
    print(f"  Xinference's own model load: {figures['load_s']:.2f}s of it ({share:.0%}; the loads overlap)")
    print(f"  the whole `difystack up` (registration in Dify included): {figures['up_s']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
