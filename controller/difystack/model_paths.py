"""Where custom Xinference weights live: on the host, inside the container, and as a URI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from difystack.config_model import XinferenceModel
from difystack.errors import ConfigError

CONTAINER_MODELS_ROOT = PurePosixPath("/models")


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str


def host_weights(model: XinferenceModel, config_dir: Path, field: str) -> Path | None:
    """The absolute host path of a custom model's weights (checked to exist), if any."""
    if model.custom is None or model.custom.path is None:
        return None
    path = Path(model.custom.path).expanduser()
    if not path.is_absolute():
        path = (config_dir / path).resolve()
    if not path.exists():
        raise ConfigError(f"{field}.custom.path: {path} does not exist")
    return path


def xinference_mount(model: XinferenceModel, config_dir: Path, field: str) -> BindMount | None:
    source = host_weights(model, config_dir, field)
    if source is None:
        return None
    target = CONTAINER_MODELS_ROOT / model.uid
    if source.is_file():
        target = target / source.name
    return BindMount(source=str(source), target=str(target))


def xinference_model_uri(model: XinferenceModel, config_dir: Path, field: str) -> str | None:
    """``file://`` URI of the weights as the Xinference server sees them."""
    if model.custom is None:
        return None
    if model.custom.server_path is not None:
        return f"file://{model.custom.server_path}"
    mount = xinference_mount(model, config_dir, field)
    assert mount is not None
    return f"file://{mount.target}"
