"""Reading the fakes' request journals and Dify's state from a docker-tier test."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import yaml

from difystack.clients.dify import DifyConsole
from tests.docker.conftest import StackUnderTest

JOURNAL = "/_fake/requests"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
XINFERENCE = "langgenius/xinference/xinference"  # Dify's provider id for Xinference


def published_journal(port: int, clear: bool = False) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}{JOURNAL}"
    if clear:
        httpx.delete(url, timeout=10).raise_for_status()
        return []
    return list(httpx.get(url, timeout=10).json())


def container_journal(
    stack: StackUnderTest,
    service: str,
    port: int,
    clear: bool = False,
    path: str = JOURNAL,
    run_in: Callable[..., subprocess.CompletedProcess[str]] | None = None,
) -> list[dict[str, Any]]:
    """The journal of a fake inside a container (``run_in`` runs a command there; default:
    `docker compose exec` in the stack's service)."""
    method = "DELETE" if clear else "GET"
    url = f"http://localhost:{port}{path}"
    code = (
        "import urllib.request, sys; "
        f"r = urllib.request.urlopen(urllib.request.Request('{url}', method='{method}')); "
        "sys.stdout.write(r.read().decode())"
    )
    run_in = run_in or (lambda *args: stack.compose("exec", "-T", service, *args))
    result = run_in("python", "-c", code)
    assert result.returncode == 0, result.stderr
    return [] if clear else list(json.loads(result.stdout))


def mutating(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{e['method']} {e['path']}" for e in entries if e["method"] in MUTATING]


def secrets_of(stack: StackUnderTest) -> dict[str, str]:
    return dict(yaml.safe_load((stack.root / "home" / stack.name / "secrets.yaml").read_text()))


def dify_console(stack: StackUnderTest) -> DifyConsole:
    console = DifyConsole(f"http://127.0.0.1:{stack.config['dify']['port']}")
    console.login(
        stack.config.get("dify", {}).get("admin", {}).get("email", "admin@example.com"),
        secrets_of(stack)["admin_password"],
    )
    return console


def credentials(console: DifyConsole, provider: str, model: str, model_type: str) -> dict[str, Any]:
    record = console.model_credentials(provider, model, model_type)
    assert record is not None, f"{model} is not registered"
    names = [c["credential_name"] for c in record["available_credentials"]]
    assert names == ["difystack"]
    assert record["current_credential_id"] == record["available_credentials"][0]["credential_id"]
    return dict(record["credentials"])
