"""Model configurations: the YAML files of the models directory and of ``CONFIG_FILE``, read and
checked as the real loader does, and merged with gallery overrides."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from difystack.fakes.localai.catalogue import (
    BACKEND_NAME,
    DEFAULT_EMBEDDING_DIMENSIONS,
    EMBEDDING_DIMENSIONS,
    NATIVE_EMBEDDING_BACKENDS,
    RERANK_BACKENDS,
    WEIGHT_SUFFIXES,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    data: dict[str, Any]

    @property
    def backend(self) -> str:
        return str(self.data.get("backend") or "")

    @property
    def model_reference(self) -> str:
        parameters = self.data.get("parameters") or {}
        return str(parameters.get("model") or "") if isinstance(parameters, dict) else ""

    @property
    def embeddings(self) -> bool:
        return bool(self.data.get("embeddings"))

    @property
    def reranking(self) -> bool:
        return bool(self.data.get("reranking"))

    @property
    def usecases(self) -> frozenset[str]:
        raw = self.data.get("known_usecases") or []
        items = raw.split(",") if isinstance(raw, str) else raw
        return frozenset(str(item).strip().lower() for item in items)

    def can_embed(self) -> bool:
        return self.embeddings or self.backend in NATIVE_EMBEDDING_BACKENDS

    def can_rerank(self) -> bool:
        return self.reranking or self.backend in RERANK_BACKENDS

    def can_generate(self) -> bool:
        # llama.cpp loaded in embeddings mode (and the Python embedding/rerank backends)
        # cannot produce text.
        return not (
            self.embeddings
            or self.reranking
            or self.backend in NATIVE_EMBEDDING_BACKENDS
            or self.backend in RERANK_BACKENDS
        )

    def serves(self, usecase: str) -> bool:
        if usecase == "embeddings":
            return self.can_embed()
        if usecase == "rerank":
            return self.can_rerank()
        return self.can_generate()

    def embedding_dimensions(self) -> int:
        reference = self.model_reference.lower().replace("_", "-")
        for fragment, dimensions in EMBEDDING_DIMENSIONS:
            if fragment in reference:
                return dimensions
        return DEFAULT_EMBEDDING_DIMENSIONS


def config_problem(data: Any) -> str | None:
    """Why a model config would be rejected by the real loader, or None when it is valid."""
    if not isinstance(data, dict):
        return "not a YAML mapping"
    if not str(data.get("name") or "").strip():
        return "missing name"
    return config_paths_problem(data)


def config_paths_problem(data: Mapping[str, Any]) -> str | None:
    parameters = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
    targets = [
        str(data.get("backend") or ""),
        str(parameters.get("model") or ""),
        str(data.get("mmproj") or ""),
    ]
    targets += [
        str(item.get("filename") or "") for item in data.get("download_files") or [] if isinstance(item, dict)
    ]
    for target in targets:
        if target and (target.startswith("/") or ".." in target):
            return f"invalid file path: {target}"
    backend = str(data.get("backend") or "")
    if backend and not BACKEND_NAME.match(backend):
        return f"invalid backend name: {backend}"
    return None


def _accept_config(data: Any, origin: str) -> ModelConfig | None:
    problem = config_problem(data)
    if problem is not None:
        log.warning("localai: skipping model config %s: %s", origin, problem)
        return None
    return ModelConfig(name=str(data["name"]), data=dict(data))


def read_models_directory(models_path: Path) -> list[ModelConfig]:
    """Every valid ``*.yaml``/``*.yml`` model config directly in the models directory."""
    configs: list[ModelConfig] = []
    if not models_path.is_dir():
        return configs
    for path in sorted(models_path.iterdir()):
        if path.name.startswith(".") or path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            log.warning("localai: skipping model config %s: %s", path, exc)
            continue
        config = _accept_config(data, str(path))
        if config is not None:
            configs.append(config)
    return configs


def read_config_list_file(path: Path) -> list[ModelConfig]:
    """The model configs of a multi-model ``CONFIG_FILE`` (a YAML list)."""
    try:
        items = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        log.error("localai: cannot load config file %s: %s", path, exc)
        return []
    if not isinstance(items, list):
        log.error("localai: config file %s is not a YAML list of model configs", path)
        return []
    accepted = (_accept_config(item, f"{path}[{index}]") for index, item in enumerate(items))
    return [config for config in accepted if config is not None]


def missing_weights(config: ModelConfig, models_path: Path) -> Path | None:
    """The local weights file a config names but that is absent (URIs are fetched at load)."""
    reference = config.model_reference
    if not reference or "://" in reference or not reference.lower().endswith(WEIGHT_SUFFIXES):
        return None
    path = models_path / reference
    return None if path.exists() else path


def merge_overrides(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base`` the way LocalAI's mergo call does.

    Nested mappings merge key by key; other values replace the base value, except empty
    values (``false``, ``0``, ``""``, empty lists/maps), which never override an existing key.
    """
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = merge_overrides(current, value)
        elif key not in merged or value not in (None, False, 0, "", [], {}):
            merged[key] = copy.deepcopy(value)
    return merged
