"""A real Dify plugin run the way the plugin daemon's local runtime runs it.

The daemon starts an installed plugin as ``INSTALL_METHOD=local python -m main`` in the
unpacked package directory, with pipes on stdin, stdout and stderr, and talks to it in JSON
lines: the plugin first prints its declaration, then ``log`` events and a ``heartbeat`` every
10 s (the first heartbeat means ready); a request is one ``{"event": "request", ...}`` line and
its answers are ``session`` events of type ``stream`` / ``error`` / ``end`` for that session id.

The plugin SDK stops when its parent is PID 1 (it takes that as "the daemon died"); the fake
daemon is often PID 1 of its container, so the plugin is started through a small relay process
that only waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The relay between the daemon (whose pid is its first argument) and the plugin: its child
# inherits the pipes. When the daemon goes away without stop() (a test process that ends, a
# killed fake), the plugin would live on with its stdin closed, which the SDK answers by
# spinning: the relay then ends its whole process group.
RELAY = """
import os, signal, subprocess, sys, threading, time
parent = int(sys.argv[1])
child = subprocess.Popen(sys.argv[2:])
def end_group_when_orphaned():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=end_group_when_orphaned, daemon=True).start()
sys.exit(child.wait())
"""
HEARTBEAT_TIMEOUT = 60.0
MAX_LINE = 64 * 1024 * 1024
# A uv.lock package taken from a registry (the project itself has a virtual/editable source).
LOCKED_PACKAGE = re.compile(
    r'^\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"\nsource = \{ registry = ', re.MULTILINE
)


class PluginStartError(Exception):
    """The plugin exited or stayed silent before its first heartbeat."""


@dataclass(frozen=True)
class PluginFailure(Exception):
    """A session answered with ``error``: the plugin's own error type, message and args."""

    error_type: str
    message: str
    args_: Any = None

    def __str__(self) -> str:
        return self.message


def unpack(package: bytes | Path, dest: Path) -> Path:
    """Unpack a .difypkg (a zip of the plugin directory) into ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    source: Path | io.BytesIO = package if isinstance(package, Path) else io.BytesIO(package)
    with zipfile.ZipFile(source) as archive:
        for member in archive.infolist():
            target = (dest / member.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise PluginStartError(f"package member escapes the plugin directory: {member.filename}")
        archive.extractall(dest)
    return dest


def locked_requirements(plugin_dir: Path) -> list[str]:
    """``name==version`` of every registry package in the plugin's uv.lock (else requirements.txt)."""
    lock = plugin_dir / "uv.lock"
    if lock.exists():
        return sorted(
            f"{name}=={version}" for name, version in LOCKED_PACKAGE.findall(lock.read_text(encoding="utf-8"))
        )
    requirements = plugin_dir / "requirements.txt"
    if requirements.exists():
        lines = requirements.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    raise PluginStartError(f"{plugin_dir.name}: neither uv.lock nor requirements.txt")


@dataclass
class PluginProcess:
    """One running plugin: start it, wait for its heartbeat, send it requests."""

    plugin_dir: Path
    python: str
    env: Mapping[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    declaration: dict[str, Any] | None = None
    logs: list[str] = field(default_factory=list)
    start_seconds: float = 0.0
    _sessions: dict[str, asyncio.Queue[dict[str, Any]]] = field(default_factory=dict)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def ensure_started(self, timeout: float = HEARTBEAT_TIMEOUT) -> None:
        async with self._lock:
            if not self.running:
                await self.start(timeout)

    async def start(self, timeout: float = HEARTBEAT_TIMEOUT) -> None:
        started = time.monotonic()
        self._ready = asyncio.Event()
        env = {**os.environ, **self.env, "INSTALL_METHOD": "local", "PYTHONUNBUFFERED": "1"}
        self.process = await asyncio.create_subprocess_exec(
            self.python,
            "-c",
            RELAY,
            str(os.getpid()),
            self.python,
            "-m",
            "main",
            cwd=self.plugin_dir,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE,
            start_new_session=True,  # its own process group: stop() ends the relay and the plugin
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        waiter = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.process.wait())
        done, _ = await asyncio.wait({waiter, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        exited.cancel()
        if not self._ready.is_set():
            tail = "\n".join(self.logs[-10:])
            await self.stop()
            reason = "exited" if exited in done else f"sent no heartbeat within {timeout:.0f} s"
            raise PluginStartError(f"plugin {self.plugin_dir.name} {reason}: {tail}")
        self.start_seconds = time.monotonic() - started

    async def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                message = json.loads(text)
            except ValueError:
                self.logs.append(text)
                continue
            if not isinstance(message, dict):
                continue
            event = message.get("event")
            if event is None and self.declaration is None:
                self.declaration = message
            elif event == "heartbeat":
                self._ready.set()
            elif event == "log":
                self.logs.append(json.dumps(message.get("data")))
            elif event == "session":
                queue = self._sessions.get(str(message.get("session_id")))
                if queue is not None:
                    queue.put_nowait(message.get("data") or {})
        for queue in self._sessions.values():  # the plugin died: wake every waiting session
            queue.put_nowait({"type": "exit"})

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.logs.append(line.decode("utf-8", "replace").rstrip())
            del self.logs[:-200]

    async def invoke(self, data: Mapping[str, Any], timeout: float = 600) -> list[Any]:
        """Send one request; the ``stream`` chunks, or PluginFailure for an ``error``."""
        await self.ensure_started()
        assert self.process is not None and self.process.stdin is not None
        session_id = str(uuid.uuid4())
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sessions[session_id] = queue
        request = {
            "session_id": session_id,
            "conversation_id": None,
            "message_id": None,
            "app_id": None,
            "endpoint_id": None,
            "context": {},
            "event": "request",
            "data": dict(data),
        }
        chunks: list[Any] = []
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            await self.process.stdin.drain()
            failure = await asyncio.wait_for(self._collect(queue, chunks), timeout)
        finally:
            del self._sessions[session_id]
        if failure is not None:
            raise failure
        return chunks

    async def _collect(self, queue: asyncio.Queue[dict[str, Any]], chunks: list[Any]) -> PluginFailure | None:
        failure: PluginFailure | None = None
        while True:
            answer = await queue.get()
            kind = answer.get("type")
            if kind == "stream":
                chunks.append(answer.get("data"))
            elif kind == "error":
                error = answer.get("data") or {}
                failure = PluginFailure(
                    str(error.get("error_type", "")), str(error.get("message", "")), error.get("args")
                )
            elif kind == "end":
                return failure
            elif kind == "exit":
                raise PluginStartError(f"plugin {self.plugin_dir.name} exited during a request")

    async def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        for task in self._tasks:
            task.cancel()


def env_key(requirements: list[str]) -> str:
    """The name of the environment built for exactly these locked requirements."""
    return hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]


def env_python(envs_root: Path, plugin_dir: Path) -> Path | None:
    """The python of the prebuilt environment for this plugin's lock, if there is one."""
    python = envs_root / env_key(locked_requirements(plugin_dir)) / "bin" / "python"
    return python if python.exists() else None


def build_env(plugin_dir: Path, envs_root: Path, python: str, pip_args: list[str] | None = None) -> Path:
    """Build (once) the environment of the plugin's own lock with ``python`` (>= 3.12)."""
    requirements = locked_requirements(plugin_dir)
    env = envs_root / env_key(requirements)
    if (env / "bin" / "python").exists() and (env / ".complete").exists():
        return env / "bin" / "python"
    if env.exists():
        shutil.rmtree(env)
    subprocess.run([python, "-m", "venv", str(env)], check=True, capture_output=True)
    result = subprocess.run(
        [str(env / "bin" / "pip"), "install", "--quiet", "--no-deps", *(pip_args or []), *requirements],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise PluginStartError(f"failed to install dependencies: {result.stderr.strip()[-800:]}")
    (env / ".complete").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    return env / "bin" / "python"
