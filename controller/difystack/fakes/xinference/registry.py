"""Model families: the built-in catalogue plus custom registrations.

A custom spec is validated and normalised the way 4.1.0's ``Custom*FamilyV2.parse_raw`` does
(its pydantic errors, 400s for names and URIs); a persisted one is kept under
``$XINFERENCE_HOME/model/v2/<type>/<name>.json`` and read back at start.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from difystack.fakes.xinference.catalogue import (
    BUILTIN_FAMILIES,
    CUSTOM_SPEC_CLASS_NAMES,
    EMBEDDING,
    INVALID_MODEL_NAME,
    LLM,
    MODEL_ABILITIES,
    SUPPORTED_TYPES,
)
from difystack.fakes.xinference.errors import RegistrationError


def persisted_dir_name(model_type: str) -> str:
    return "llm" if model_type == LLM else model_type


def uri_problem(model_uri: str) -> str | None:
    """Why a ``model_uri`` is refused at registration time, or None when it is accepted.

    Like Xinference: an existing path (with or without ``file://``) is fine; a ``file``
    (or scheme-less) URI must be absolute and exist on this machine; other schemes pass.
    """
    if os.path.exists(model_uri):
        return None if os.path.isabs(model_uri) else f"Model URI cannot be a relative path: {model_uri}"
    parsed = urlparse(model_uri)
    if parsed.scheme not in ("", "file") and len(parsed.scheme) > 1:
        return None
    path = parsed.netloc + parsed.path
    if not os.path.isabs(path):
        return f"Model URI cannot be a relative path: {model_uri}"
    if not os.path.exists(path):
        return f"Invalid model URI {model_uri}."
    return None


def _validation_failure(model_type: str, problems: list[tuple[str, str]]) -> RegistrationError:
    count = len(problems)
    lines = [f"{count} validation error{'s' if count > 1 else ''} for {CUSTOM_SPEC_CLASS_NAMES[model_type]}"]
    for location, message in problems:
        lines.extend([location, f"  {message}"])
    return RegistrationError(500, "\n".join(lines))


def _check_field(
    problems: list[tuple[str, str]],
    data: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    label: str,
) -> None:
    value = data.get(name)
    if value is None:
        problems.append((name, "Field required"))
    elif not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        problems.append((name, f"Input should be a valid {label}"))


def _normalized_spec(
    model_type: str, raw: Mapping[str, Any], index: int, problems: list[tuple[str, str]]
) -> dict:
    where = f"model_specs.{index}"
    if not isinstance(raw, Mapping):
        problems.append((where, "Input should be a valid dictionary"))
        return {}
    _check_field(problems, raw, "model_format", str, "string")
    spec: dict[str, Any] = {"model_format": raw.get("model_format")}
    if model_type == LLM:
        size = raw.get("model_size_in_billions")
        if size is None or isinstance(size, bool) or not isinstance(size, (int, str)):
            problems.append((f"{where}.model_size_in_billions", "Field required"))
        spec["model_size_in_billions"] = size
        if not isinstance(raw.get("quantization"), str):
            problems.append((f"{where}.quantization", "Field required"))
        spec["quantization"] = raw.get("quantization")
    spec["model_hub"] = raw.get("model_hub") or "huggingface"
    spec["model_id"] = raw.get("model_id")
    spec["model_uri"] = raw.get("model_uri")
    spec["model_revision"] = raw.get("model_revision")
    if model_type != LLM:
        spec["quantization"] = raw.get("quantization") or "none"
    if spec["model_format"] == "ggufv2" or model_type == LLM:
        spec["model_file_name_template"] = raw.get("model_file_name_template")
    if model_type == LLM:
        spec["model_file_name_split_template"] = raw.get("model_file_name_split_template")
        spec["quantization_parts"] = raw.get("quantization_parts")
        # 4.1.0's LLM spec model, in its field order (its errors print specs as key=value pairs).
        return {key: spec.get(key, raw.get(key)) for key in LLM_SPEC_FIELDS}
    return spec


LLM_SPEC_FIELDS = (
    "model_metadata",
    "model_format",
    "model_size_in_billions",
    "quantization",
    "multimodal_projectors",
    "model_id",
    "model_file_name_template",
    "model_file_name_split_template",
    "quantization_parts",
    "model_hub",
    "model_uri",
    "model_revision",
    "activated_size_in_billions",
    "draft_model_id",
    "draft_model_file_name_template",
    "draft_quantizations",
    "draft_model_revision",
)


def parse_custom_spec(model_type: str, text: Any) -> dict[str, Any]:
    """Validate and normalize a custom model spec the way ``Custom*FamilyV2.parse_raw`` does."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise _validation_failure(model_type, [("__root__", f"Invalid JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise _validation_failure(model_type, [("__root__", "Input should be a valid dictionary")])
    if model_type == LLM and not data.get("model_family"):
        raise RegistrationError(400, "You must specify `model_family` when registering custom LLM models.")

    problems: list[tuple[str, str]] = []
    _check_field(problems, data, "model_name", str, "string")
    raw_specs = data.get("model_specs")
    if not isinstance(raw_specs, list) or not raw_specs:
        problems.append(("model_specs", "Field required"))
        raw_specs = []
    specs = [_normalized_spec(model_type, raw, i, problems) for i, raw in enumerate(raw_specs)]
    abilities = data.get("model_ability", [])
    if not isinstance(abilities, list) or any(a not in MODEL_ABILITIES for a in abilities):
        problems.append(("model_ability", f"Input should be one of: {', '.join(sorted(MODEL_ABILITIES))}"))

    if model_type == LLM:
        _check_field(problems, data, "model_lang", list, "list")
        family = _normalized_llm(data, specs)
    elif model_type == EMBEDDING:
        _check_field(problems, data, "dimensions", int, "integer")
        _check_field(problems, data, "max_tokens", int, "integer")
        _check_field(problems, data, "language", list, "list")
        family = _normalized_embedding(data, specs)
    else:
        _check_field(problems, data, "language", list, "list")
        family = _normalized_rerank(data, specs)
    if problems:
        raise _validation_failure(model_type, problems)
    return family


def _normalized_llm(data: Mapping[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any]:
    family = {
        "version": 2,
        "context_length": data.get("context_length") or 2048,
        "model_name": data.get("model_name"),
        "model_lang": data.get("model_lang"),
        "model_ability": data.get("model_ability", []),
        "model_description": data.get("model_description"),
        "model_family": data.get("model_family"),
        "model_specs": specs,
        "chat_template": data.get("chat_template"),
        "stop_token_ids": data.get("stop_token_ids"),
        "stop": data.get("stop"),
        "architectures": data.get("architectures"),
        "reasoning_start_tag": data.get("reasoning_start_tag"),
        "reasoning_end_tag": data.get("reasoning_end_tag"),
        "cache_config": data.get("cache_config"),
        "virtualenv": data.get("virtualenv"),
        "tool_parser": data.get("tool_parser"),
    }
    # A chat model without its own template borrows the built-in family's template and stops.
    parent = BUILTIN_FAMILIES[LLM].get(str(family["model_family"]))
    if parent and family["chat_template"] is None and "chat" in family["model_ability"]:
        family["chat_template"] = parent["chat_template"]
        family["stop_token_ids"] = list(parent["stop_token_ids"])
        family["stop"] = list(parent["stop"])
    return family


def _normalized_embedding(data: Mapping[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 2,
        "model_name": data.get("model_name"),
        "dimensions": data.get("dimensions"),
        "max_tokens": data.get("max_tokens"),
        "language": data.get("language"),
        "model_ability": data.get("model_ability", []),
        "model_specs": specs,
        "cache_config": data.get("cache_config"),
        "virtualenv": data.get("virtualenv"),
    }


def _normalized_rerank(data: Mapping[str, Any], specs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 2,
        "model_name": data.get("model_name"),
        "type": data.get("type") or "normal",
        "language": data.get("language"),
        "max_tokens": data.get("max_tokens") or 512,
        "model_ability": data.get("model_ability", []),
        "model_specs": specs,
        "cache_config": data.get("cache_config"),
        "virtualenv": data.get("virtualenv"),
    }


class ModelRegistry:
    """Built-in families plus custom registrations (persisted ones live in ``model_dir``)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.custom: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in SUPPORTED_TYPES}
        self._load_persisted()

    def _persisted_path(self, model_type: str, name: str) -> Path:
        return self.model_dir / persisted_dir_name(model_type) / f"{name}.json"

    def _load_persisted(self) -> None:
        for model_type in SUPPORTED_TYPES:
            directory = self.model_dir / persisted_dir_name(model_type)
            if not directory.is_dir():
                continue
            for path in sorted(directory.glob("*.json")):
                try:
                    family = json.loads(path.read_text(encoding="utf-8"))
                    self.custom[model_type][family["model_name"]] = family
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    print(f"fake xinference: skipping unreadable registration {path}: {exc}", file=sys.stderr)

    def find(self, model_type: str, name: str) -> tuple[dict[str, Any], bool] | None:
        """The family called ``name`` and whether it is built in."""
        if name in BUILTIN_FAMILIES.get(model_type, {}):
            return BUILTIN_FAMILIES[model_type][name], True
        if name in self.custom.get(model_type, {}):
            return self.custom[model_type][name], False
        return None

    def names(self, model_type: str) -> list[tuple[str, bool]]:
        builtin = [(name, True) for name in BUILTIN_FAMILIES.get(model_type, {})]
        custom = [(name, False) for name in self.custom.get(model_type, {})]
        return sorted(builtin + custom)

    def register(self, model_type: str, family: dict[str, Any], persist: bool) -> None:
        name = str(family["model_name"])
        if name in self.custom[model_type]:
            raise RegistrationError(400, f"Model {name} already registered")
        if not name or INVALID_MODEL_NAME.search(name):
            raise RegistrationError(400, f"Invalid model name {name}.")
        for spec in family["model_specs"]:
            problem = uri_problem(spec["model_uri"]) if spec.get("model_uri") else None
            if problem:
                raise RegistrationError(400, problem)
        if name in BUILTIN_FAMILIES[model_type]:
            raise RegistrationError(400, f"Model name conflicts with existing model {name}")
        self.custom[model_type][name] = family
        if persist:
            path = self._persisted_path(model_type, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(family, indent=2), encoding="utf-8")

    def unregister(self, model_type: str, name: str) -> None:
        self.custom[model_type].pop(name, None)
        self._persisted_path(model_type, name).unlink(missing_ok=True)
