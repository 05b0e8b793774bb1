"""The stack's Swarm secrets, kept in step with its secrets file.

Each secret a stack file names is created from the secrets file under its versioned name
(the name changes with the value, so a changed secret rolls the services that use it);
versions no service uses any more are removed. Values pass through a 0600 file in the
stack's private state directory that is deleted at once; they are never printed.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.components.secret.models import SecretInspectResult
from python_on_whales.exceptions import DockerException

from difystack.compose_runtime import docker_error_text
from difystack.errors import DifystackError
from difystack.swarm.inspect import inspect_all
from difystack.swarm.transform import SwarmSecret

STACK_LABEL = "io.difystack.stack"
KEY_LABEL = "io.difystack.secret"


def quiet() -> contextlib.AbstractContextManager[object]:
    """python-on-whales 0.81 prints the reference of every Secret object it makes."""
    return contextlib.redirect_stdout(io.StringIO())


class SwarmSecrets:
    def __init__(self, docker: DockerClient, stack: str, scratch_dir: Path) -> None:
        self.docker = docker
        self.stack = stack
        self.scratch_dir = scratch_dir

    def existing(self) -> set[str]:
        """Names of the stack's secrets in the swarm."""
        try:
            with quiet():
                found = self.docker.secret.list(filters=[("label", f"{STACK_LABEL}={self.stack}")])
            inspected = inspect_all(self.docker, [str(secret) for secret in found], SecretInspectResult)
            return {str(secret.spec.name) for secret in inspected if secret.spec}
        except DockerException as exc:
            raise DifystackError(f"cannot list the swarm's secrets: {docker_error_text(exc)}") from None

    def create_missing(self, wanted: list[SwarmSecret]) -> list[str]:
        """Create the secrets the swarm does not hold yet; returns their keys."""
        present = self.existing()
        created = []
        for secret in wanted:
            if secret.name in present:
                continue
            self._create(secret)
            created.append(secret.key)
        return created

    def _create(self, secret: SwarmSecret) -> None:
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=self.scratch_dir, prefix=".swarm-secret-")  # mode 0600
        path = Path(scratch)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(secret.content)
            labels = {STACK_LABEL: self.stack, KEY_LABEL: secret.key}
            with quiet():
                self.docker.secret.create(secret.name, path, labels=labels)
        except DockerException as exc:
            raise DifystackError(
                f"cannot create the swarm secret {secret.name}: {docker_error_text(exc)}"
            ) from None
        finally:
            path.unlink(missing_ok=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove the stack's secrets not in ``keep`` (those still in use are left)."""
        removed = []
        for name in sorted(self.existing() - keep):
            try:
                self.docker.secret.remove(name)
            except DockerException:
                continue  # still used by a service that has not rolled yet; the next run retries
            removed.append(name)
        return removed
