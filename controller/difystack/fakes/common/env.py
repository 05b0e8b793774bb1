"""Settings read from an environment mapping, with errors that name the variable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

N = TypeVar("N", int, float)

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


def first_set(env: Mapping[str, str], *names: str) -> str:
    """The value of the first of ``names`` set to a non-blank value, else ``""``."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return ""


def is_true(value: str) -> bool:
    return value.strip().lower() in TRUE_VALUES


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip()
    return default if not raw else is_true(raw)


def number(
    env: Mapping[str, str],
    name: str,
    parse: Callable[[str], N],
    default: N,
    valid: Callable[[N], bool],
    what: str,
) -> N:
    """The variable parsed by ``parse``; ``default`` when unset; an error naming it when not ``what``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from exc
    if not valid(value):
        raise ValueError(f"{name} must be {what}, got {raw!r}")
    return value


def seconds(env: Mapping[str, str], name: str) -> float:
    """A non-negative number of seconds; 0 when unset."""
    return number(env, name, float, 0.0, lambda value: value >= 0, "a non-negative number of seconds")


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    return number(env, name, int, default, lambda value: value >= 1, "a positive integer")
