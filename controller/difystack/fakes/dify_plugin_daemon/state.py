"""What the daemon keeps under ``PLUGIN_STORAGE_LOCAL_ROOT``: decoded packages (and their
files), installations per tenant and install tasks, persisted as JSON."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from difystack.fakes import difypkg

TERMINAL_TASK_STATUSES = frozenset({"success", "failed"})


def now_iso() -> str:
    """A timestamp as the daemon (Go) writes it: UTC, with ``Z``."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class DaemonStore:
    """Decoded packages, installations per tenant and install tasks, persisted as JSON."""

    def __init__(self, root: Path) -> None:
        self.package_dir = root / "plugin_packages"
        self.state_file = root / "difystack-fake" / "plugin-daemon-state.json"
        self.packages: dict[str, dict[str, Any]] = {}
        self.installations: dict[str, dict[str, dict[str, Any]]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        if not self.state_file.exists():
            return
        state = json.loads(self.state_file.read_text())
        self.packages = state.get("packages", {})
        self.installations = state.get("installations", {})
        self.tasks = state.get("tasks", {})
        for task in self.tasks.values():
            if task["status"] not in TERMINAL_TASK_STATUSES:  # the worker died with the process
                task["status"] = "failed"
                for plugin in task["plugins"]:
                    if plugin["status"] not in TERMINAL_TASK_STATUSES:
                        plugin.update(
                            status="failed", message="install task interrupted: plugin daemon restarted"
                        )

    def save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        state = {"packages": self.packages, "installations": self.installations, "tasks": self.tasks}
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=1))
        os.replace(temporary, self.state_file)

    def store_package(self, identifier: str, data: bytes, decoded: dict[str, Any]) -> None:
        self.package_dir.mkdir(parents=True, exist_ok=True)
        (self.package_dir / f"{difypkg.package_checksum(data)}.difypkg").write_bytes(data)
        self.packages[identifier] = decoded
        self.save()

    def tenant_installations(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        return self.installations.setdefault(tenant_id, {})
