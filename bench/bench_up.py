#!/usr/bin/env python3
"""Benchmark `difystack up` on the stand-in stack and print the figures beside their targets.

(a) wall time of `difystack up` from nothing to all-registered, divided by the wall time of a bare
    `docker compose up -d --wait` of the same rendered stack plus the slowest model's deploy time;
(b) wall time and number of mutating HTTP calls of a second `up` on a converged stack;
(c) 8 Xinference models with 2 s injected launch latency each: total deploy time.

Needs a Docker engine, Compose v2 and the stand-in images' base image (scripts/provision-docker).
It prints figures; it asserts nothing. Usage: python bench/bench_up.py [--base-image IMAGE]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from difystack.preflight import free_port
from difystack.standins import StandinBuilder, with_env

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
JOURNAL = "/_fake/requests"


class BenchStack:
    def __init__(self, root: Path, images: dict[str, str], extra: dict[str, Any] | None = None) -> None:
        self.name = f"bench{secrets.token_hex(3)}"
        self.root = root / self.name
        self.root.mkdir(parents=True)
        self.config: dict[str, Any] = {
            "name": self.name,
            "gpu": "none",
            "images": images,
            "dify": {"port": free_port()},
            "xinference": {"port": free_port()},
            "localai": {"port": free_port()},
        }
        for key, value in (extra or {}).items():
            self.config[key] = {**self.config.get(key, {}), **value}
        (self.root / "difystack.yaml").write_text(yaml.safe_dump(self.config), encoding="utf-8")
        # The user's environment as it is (DIFYSTACK_* included); only the stack's home is the bench's.
        self.env = {**os.environ, "DIFYSTACK_HOME": str(self.root / "home")}

    @property
    def project(self) -> Path:
        return self.root / "home" / self.name / "project"

    def cli(self, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "difystack", *args, "-c", str(self.root / "difystack.yaml")],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"difystack {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return elapsed, result

    def compose(self, *args: str) -> float:
        started = time.monotonic()
        subprocess.run(
            ["docker", "compose", "--project-directory", str(self.project), "-p", self.name, *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return time.monotonic() - started

    def destroy(self) -> None:
        subprocess.run(
            [
                "docker",
                "compose",
                "--project-directory",
                str(self.project),
                "-p",
                self.name,
                "down",
                "-v",
                "--remove-orphans",
            ],
            capture_output=True,
            check=False,
        )

    def journal(self, part: str, clear: bool = False) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.config[part]['port']}{JOURNAL}"
        if clear:
            httpx.delete(url, timeout=10)
            return []
        return list(httpx.get(url, timeout=10).json())

    def container_journal(self, service: str, port: int, clear: bool = False) -> list[dict[str, Any]]:
        method = "DELETE" if clear else "GET"
        code = (
            f"import urllib.request,sys; r=urllib.request.urlopen(urllib.request.Request("
            f"'http://localhost:{port}{JOURNAL}', method='{method}')); sys.stdout.write(r.read().decode())"
        )
        out = subprocess.run(
            [
                "docker",
                "compose",
                "--project-directory",
                str(self.project),
                "-p",
                self.name,
                "exec",
                "-T",
                service,
                "python",
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return [] if clear else list(json.loads(out.stdout))


def deploy_times(entries: list[dict[str, Any]], start_path: str, done_paths: tuple[str, ...]) -> list[float]:
    """Per model: first deploy request -> first verification call difystack made after it."""
    starts = [e["at"] for e in entries if e["method"] == "POST" and e["path"] == start_path]
    dones = sorted(
        e["at"]
        for e in entries
        if e["method"] == "POST"
        and e["path"] in done_paths
        and e["host"].split(":")[0] not in ("xinference", "localai")
    )
    if not starts or not dones:
        return []
    first = min(starts)
    return [done - first for done in dones]


def bench_a_and_b(root: Path, images: dict[str, str], latency: float) -> dict[str, Any]:
    slow = dict(images)
    slow["xinference"] = with_env(
        images["xinference"],
        "xinference-bench-latency",
        {"DIFYSTACK_FAKE_LAUNCH_LATENCY": str(latency)},
    )
    slow["localai"] = with_env(
        images["localai"],
        "localai-bench-latency",
        {"DIFYSTACK_FAKE_LAUNCH_LATENCY": str(latency)},
    )
    stack = BenchStack(root, slow)
    try:
        # The bare baseline: the same rendered project, plain compose, from nothing.
        stack.cli("render")
        bare = stack.compose("up", "-d", "--wait")
        stack.compose("down", "-v")

        up_time, _ = stack.cli("up", "--timeout", "600")
        xinference_times = deploy_times(
            stack.journal("xinference"), "/v1/models", ("/v1/embeddings", "/v1/chat/completions")
        )
        localai_times = deploy_times(
            stack.journal("localai"), "/models/apply", ("/v1/embeddings", "/v1/chat/completions")
        )
        slowest = max(xinference_times + localai_times, default=0.0)

        for part in ("xinference", "localai"):
            stack.journal(part, clear=True)
        stack.container_journal("api", 5001, clear=True)
        stack.container_journal("plugin_daemon", 5002, clear=True)
        second_time, second = stack.cli("up", "--timeout", "600")
        calls = (
            stack.journal("xinference")
            + stack.journal("localai")
            + stack.container_journal("api", 5001)
            + stack.container_journal("plugin_daemon", 5002)
        )
        mutating = [f"{e['method']} {e['path']}" for e in calls if e["method"] in MUTATING]
        return {
            "bare_compose_s": bare,
            "slowest_model_s": slowest,
            "up_s": up_time,
            "ratio": up_time / (bare + slowest),
            "second_up_s": second_time,
            "second_up_mutating": len(mutating),
            "second_up_mutating_calls": mutating,
            "second_up_reported_no_change": "changes     none" in second.stdout,
        }
    finally:
        stack.destroy()


def bench_c(root: Path, images: dict[str, str], latency: float, count: int) -> dict[str, Any]:
    slow = dict(images)
    slow["xinference"] = with_env(
        images["xinference"],
        "xinference-bench-concurrency",
        {"DIFYSTACK_FAKE_LAUNCH_LATENCY": str(latency)},
    )
    models = [
        {"uid": f"emb-{i}", "type": "embedding", "name": "bge-small-en-v1.5", "dimensions": 384}
        for i in range(1, count + 1)
    ]
    stack = BenchStack(
        root,
        slow,
        {"localai": {"enabled": False}, "xinference": {"models": models, "max_concurrent_launches": count}},
    )
    try:
        stack.cli("up", "--timeout", "600")
        # Restart Xinference (it forgets its models) and wait until it is healthy again, so the
        # next `up` measures only the relaunch of the models.
        subprocess.run(["docker", "restart", f"{stack.name}-xinference-1"], capture_output=True, check=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            health = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Health.Status}}", f"{stack.name}-xinference-1"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if health == "healthy":
                break
            time.sleep(0.5)
        stack.journal("xinference", clear=True)
        wall, _ = stack.cli("up", "--timeout", "600")
        times = deploy_times(stack.journal("xinference"), "/v1/models", ("/v1/embeddings",))
        return {
            "models": count,
            "latency_s": latency,
            "deploy_s": max(times, default=float("nan")),
            "up_wall_s": wall,
            "verified": len(times),
        }
    finally:
        stack.destroy()


SHARED_PACKAGES = Path(__file__).resolve().parents[2] / "shared" / "upstream" / "dify-official-plugins"


def standin_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every stand-in benchmark takes: the base image and the plugin packages."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--base-image", default=os.environ.get("DIFYSTACK_STANDIN_BASE", "difystack/offline-base:bookworm")
    )
    parser.add_argument(
        "--plugin-packages",
        type=Path,
        default=Path(os.environ.get("DIFYSTACK_PLUGIN_PACKAGES") or SHARED_PACKAGES),
        help="the .difypkg files the plugin-daemon stand-in runs",
    )
    return parser


def build_standins(args: argparse.Namespace) -> dict[str, str]:
    """The stand-in images (built, or reused while their inputs hold)."""
    return StandinBuilder(progress=lambda m: print(f"  {m}", file=sys.stderr)).build(
        args.base_image,
        infra=True,
        plugin_packages=args.plugin_packages,
        plugin_base=os.environ.get("DIFYSTACK_STANDIN_PLUGIN_BASE", "difystack/offline-base-plugins:trixie"),
    )


def main() -> int:
    parser = standin_parser(__doc__)
    parser.add_argument("--latency", type=float, default=5.0, help="model launch latency for (a) and (b)")
    args = parser.parse_args()
    images = build_standins(args)
    root = Path(tempfile.mkdtemp(prefix="difystack-bench-"))
    try:
        ab = bench_a_and_b(root, images, args.latency)
        c = bench_c(root, images, 2.0, 8)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        (
            "(a) up / (bare compose up --wait + slowest model)",
            f"{ab['up_s']:.1f}s / ({ab['bare_compose_s']:.1f}s + {ab['slowest_model_s']:.1f}s)"
            f" = {ab['ratio']:.2f}",
            "<= 1.10",
            ab["ratio"] <= 1.10,
        ),
        ("(b) second up: wall time", f"{ab['second_up_s']:.2f}s", "<= 2 s", ab["second_up_s"] <= 2.0),
        (
            "(b) second up: mutating HTTP calls",
            str(ab["second_up_mutating"]),
            "0",
            ab["second_up_mutating"] == 0,
        ),
        (
            f"(c) {c['models']} models x {c['latency_s']:.0f}s launch latency: deploy time",
            f"{c['deploy_s']:.2f}s (whole up {c['up_wall_s']:.1f}s, {c['verified']} verified)",
            "<= 3 s",
            c["deploy_s"] <= 3.0,
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'metric':<{width}}  {'measured':<48} {'target':<8} met")
    for name, measured, target, met in rows:
        print(f"{name:<{width}}  {measured:<48} {target:<8} {'yes' if met else 'NO'}")
    if ab["second_up_mutating_calls"]:
        print("mutating calls of the second up:", ", ".join(ab["second_up_mutating_calls"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
