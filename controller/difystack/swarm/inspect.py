"""Batched `docker inspect` of swarm objects, parsed into python-on-whales' typed models.

python-on-whales inspects each object on attribute access; readiness polls read every task
of the stack about once a second, so one `docker inspect` for all of them is used instead.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel
from python_on_whales import DockerClient
from python_on_whales.components.node.models import NodeInspectResult
from python_on_whales.components.secret.models import SecretInspectResult
from python_on_whales.components.service.models import ServiceInspectResult
from python_on_whales.components.task.models import TaskInspectResult
from python_on_whales.utils import run

Model = TypeVar("Model", bound=BaseModel)

_TYPES: dict[type[BaseModel], str] = {
    TaskInspectResult: "task",
    ServiceInspectResult: "service",
    NodeInspectResult: "node",
    SecretInspectResult: "secret",
}


def inspect_all(docker: DockerClient, ids: list[str], model: type[Model]) -> list[Model]:
    """``docker inspect --type <kind> ids...`` as typed results (raises DockerException)."""
    if not ids:
        return []
    command = [*docker.client_config.docker_cmd, "inspect", "--type", _TYPES[model], *ids]
    return [model.model_validate(item) for item in json.loads(str(run(command)))]
