"""The fake LocalAI's settings, read from the real server's environment variables."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from difystack.fakes.common.env import first_set, is_true
from difystack.fakes.localai.catalogue import DEFAULT_GALLERIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    models_path: Path
    config_file: Path | None
    preload_requests: tuple[dict[str, Any], ...]
    galleries: tuple[dict[str, Any], ...]
    api_keys: frozenset[str]
    gallery_endpoints: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        models_path = Path(first_set(env, "LOCALAI_MODELS_PATH", "MODELS_PATH") or Path.cwd() / "models")
        config_file = first_set(env, "LOCALAI_CONFIG_FILE", "CONFIG_FILE")
        keys = first_set(env, "LOCALAI_API_KEY", "API_KEY")
        return cls(
            models_path=models_path.absolute(),
            config_file=Path(config_file) if config_file else None,
            preload_requests=_preload_requests(env),
            galleries=_galleries(env),
            api_keys=frozenset(key.strip() for key in keys.split(",") if key.strip()),
            gallery_endpoints=not is_true(
                first_set(env, "LOCALAI_DISABLE_GALLERY_ENDPOINT", "DISABLE_GALLERY_ENDPOINT")
            ),
        )


def _preload_requests(env: Mapping[str, str]) -> tuple[dict[str, Any], ...]:
    requests: list[Any] = []
    inline = first_set(env, "LOCALAI_PRELOAD_MODELS", "PRELOAD_MODELS")
    if inline:
        try:
            requests.extend(json.loads(inline))
        except (ValueError, TypeError) as exc:
            log.error("localai: cannot parse PRELOAD_MODELS as a JSON list: %s", exc)
    config_path = first_set(env, "LOCALAI_PRELOAD_MODELS_CONFIG", "PRELOAD_MODELS_CONFIG")
    if config_path:
        try:
            requests.extend(yaml.safe_load(Path(config_path).read_text()) or [])
        except (OSError, yaml.YAMLError, TypeError) as exc:
            log.error("localai: cannot read PRELOAD_MODELS_CONFIG %s: %s", config_path, exc)
    return tuple(request for request in requests if isinstance(request, dict))


def _galleries(env: Mapping[str, str]) -> tuple[dict[str, Any], ...]:
    raw = first_set(env, "LOCALAI_GALLERIES", "GALLERIES")
    if not raw:
        return copy.deepcopy(DEFAULT_GALLERIES)
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        log.error("localai: cannot parse GALLERIES as JSON: %s", exc)
        return copy.deepcopy(DEFAULT_GALLERIES)
    return tuple(gallery for gallery in parsed if isinstance(gallery, dict))
