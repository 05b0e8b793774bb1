"""Load the stack configuration from its layers.

built-in defaults < stack file < ``DIFYSTACK_*`` environment variables < ``--set key=value``

Mappings merge key by key; any other value (lists included) replaces the lower layer's.
Environment variables name a path with ``__`` between levels
(``DIFYSTACK_DIFY__PORT=8081``); ``--set`` uses dots (``dify.port=8081``) and digits index
lists (``xinference.models.0.uid=x``). Values are parsed as YAML, so ``true`` and ``8081``
arrive typed.
"""

from __future__ import annotations

import copy
import re
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from difystack import settings
from difystack.config_model import StackConfig
from difystack.errors import ConfigError

ENV_PREFIX = settings.PREFIX
DEFAULT_STACK_FILE = "difystack.yaml"
_RELATIVE_PATH_IN_MESSAGE = re.compile(r"^((?:[A-Za-z_][\w-]*|\[\d+\])(?:(?:\.[A-Za-z_][\w-]*)|\[\d+\])*): ")


def default_layer() -> dict[str, Any]:
    text = resources.files("difystack").joinpath("default-stack.yaml").read_text(encoding="utf-8")
    return _as_mapping(yaml.safe_load(text), "built-in defaults")


def load_stack_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such stack file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return _as_mapping(data or {}, str(path))


def env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or settings.is_tool_setting(name):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise ConfigError(f"{name}: empty path segment (use __ between levels)")
        unknown = _unknown_key(keys)
        if unknown is not None:
            raise ConfigError(
                f"{name}: no config key {unknown!r} and not a difystack setting",
                hint="config keys use __ between levels, e.g. DIFYSTACK_DIFY__PORT=8081; the "
                "README lists difystack's own DIFYSTACK_* settings",
            )
        _assign(layer, keys, _parse_value(raw, name), name)
    return layer


def _unknown_key(keys: list[str]) -> str | None:
    """The dotted prefix of ``keys`` that names no field of the config model, if any.

    Only typed sections are checked; below a free-form mapping anything goes (the model's
    own validation still applies to the merged result).
    """
    model: type[BaseModel] | None = StackConfig
    in_list = False
    for depth, key in enumerate(keys):
        if in_list and key.isdigit():
            in_list = False
            continue
        if model is None or in_list:
            return None
        fields = dict(model.model_fields)
        fields.update({info.alias: info for info in model.model_fields.values() if info.alias})
        if key not in fields:
            return ".".join(keys[: depth + 1])
        annotation = fields[key].annotation
        in_list = typing.get_origin(annotation) is list
        model = _section_model(annotation)
    return None


def _section_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def set_layer(assignments: Iterable[str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. dify.port=8081")
        keys = key.strip().split(".")
        if not all(keys):
            raise ConfigError(f"--set {item!r}: empty path segment")
        _assign(layer, keys, _parse_value(raw, f"--set {key}"), f"--set {key}")
    return layer


def merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(override, dict) and all(isinstance(k, int) for k in override):
        # --set xinference.models.0.uid=... edits one element of an inherited list.
        merged_list = list(base)
        for index, value in override.items():
            if index >= len(merged_list):
                raise ConfigError(
                    f"list index {index} is out of range (the list has {len(merged_list)} items)"
                )
            merged_list[index] = merge(merged_list[index], value)
        return merged_list
    return copy.deepcopy(override)


def load_config(
    stack_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    assignments: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> StackConfig:
    """Merge every layer and validate; raises ConfigError naming the offending field.

    ``overrides`` is a last layer given as data, for callers such as the pytest plugin.
    """
    layers: list[tuple[str, dict[str, Any]]] = [("built-in defaults", default_layer())]
    if stack_file is not None:
        layers.append((str(stack_file), load_stack_file(stack_file)))
    if env:
        layers.append(("environment", env_layer(env)))
    assignments = list(assignments)
    if assignments:
        layers.append(("--set", set_layer(assignments)))
    if overrides:
        layers.append(("overrides", dict(overrides)))
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = merge(merged, layer)
    sources = " + ".join(name for name, layer in layers if layer)
    return validate(merged, sources)


def validate(data: Mapping[str, Any], sources: str = "config") -> StackConfig:
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid stack config ({sources}): {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each starting with the dotted path of the field."""
    lines = []
    for error in exc.errors():
        path = _dotted(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        match = _RELATIVE_PATH_IN_MESSAGE.match(message)
        if match:
            inner = match.group(1)
            path = f"{path}.{inner}" if path and not inner.startswith("[") else f"{path}{inner}"
            message = message[match.end() :]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "literal_error":
            message = f"{error['input']!r} is not allowed; {message[0].lower()}{message[1:]}"
        elif error["type"].endswith("_parsing") or error["type"].endswith("_type"):
            message = f"{message} (got {error['input']!r})"
        lines.append(f"{path or '<root>'}: {message}")
    return "; ".join(lines)


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _assign(tree: dict[Any, Any], keys: list[str], value: Any, origin: str) -> None:
    node: dict[Any, Any] = tree
    parsed_keys: list[Any] = [int(k) if k.isdigit() else k for k in keys]
    for key in parsed_keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {key!r} is set both as a value and as a section")
        node = child
    node[parsed_keys[-1]] = value


def _parse_value(raw: str, origin: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"{origin}: {raw!r} is not a valid YAML value") from None


def _as_mapping(data: Any, origin: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data
