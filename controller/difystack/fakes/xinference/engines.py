"""Engines and launch matching: which engine can load which spec of a family (``/v1/engines``)
and the spec a launch request selects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from difystack.fakes.xinference.catalogue import (
    EMBEDDING,
    LLM,
    NO_MATCHING_FORMAT_REASON,
    UNUSABLE_LLM_ENGINES,
    USABLE_ENGINES,
)


def engine_params(model_type: str, family: Mapping[str, Any]) -> dict[str, Any]:
    """What ``/v1/engines`` reports: usable engine -> parameter combos, unusable -> reason."""
    result: dict[str, Any] = {}
    for engine, formats in USABLE_ENGINES[model_type].items():
        specs = [spec for spec in family["model_specs"] if spec["model_format"] in formats]
        if model_type != LLM:
            if specs:
                result[engine] = [
                    {
                        "model_name": family["model_name"],
                        "model_format": spec["model_format"],
                        "quantization": spec["quantization"],
                    }
                    for spec in specs
                ]
            continue
        result[engine] = _llm_param_combos(engine, family, specs) or NO_MATCHING_FORMAT_REASON[engine]
    if model_type == LLM:
        usable = {k: v for k, v in result.items() if isinstance(v, list)}
        reasons = {k: v for k, v in result.items() if isinstance(v, str)}
        result = {**usable, **UNUSABLE_LLM_ENGINES, **reasons}
    return result


def _llm_param_combos(engine: str, family: Mapping[str, Any], specs: list[dict[str, Any]]) -> list[dict]:
    combos: dict[tuple[str, str], dict[str, Any]] = {}
    for spec in specs:
        key = (spec["model_format"], str(spec["model_size_in_billions"]))
        if key not in combos:
            combos[key] = {
                "model_name": family["model_name"],
                "model_format": spec["model_format"],
                "model_size_in_billions": spec["model_size_in_billions"],
                "quantizations": [],
            }
            if engine == "llama.cpp":
                combos[key].update({"multimodal_projectors": None, "support_draft_model": True})
        combos[key]["quantizations"].append(spec["quantization"])
    return list(combos.values())


@dataclass(frozen=True)
class LaunchPlan:
    family: dict[str, Any]
    engine: str
    spec: dict[str, Any]


def match_spec(
    model_type: str,
    family: Mapping[str, Any],
    engine: str,
    model_format: str | None,
    size: Any,
    quantization: str | None,
) -> LaunchPlan:
    """The engine + model spec a launch request selects, or a ValueError with Xinference's text."""
    name = family["model_name"]
    usable = {k: v for k, v in engine_params(model_type, family).items() if isinstance(v, list)}
    canonical = next((k for k in usable if k.lower() == engine.lower()), None)
    if canonical is None:
        raise ValueError(f"Model {name} cannot be run on engine {engine}.")
    formats = USABLE_ENGINES[model_type][canonical]
    for spec in family["model_specs"]:
        if spec["model_format"] not in formats:
            continue
        if model_format and spec["model_format"] != model_format:
            continue
        if size is not None and model_type == LLM and str(spec["model_size_in_billions"]) != str(size):
            continue
        if quantization and spec["quantization"] != quantization:
            continue
        return LaunchPlan(dict(family), canonical, dict(spec))
    raise ValueError(
        f"Model {name} cannot be run on engine {engine}, with format {model_format}, "
        f"size {size} and quantization {quantization}."
    )


def unknown_model_message(model_type: str, name: str, available: list[str]) -> str:
    if model_type == LLM:
        return f"Model {name} not found."
    label = "Embedding" if model_type == EMBEDDING else "Rerank"
    return f"{label} model {name} not found, available models: dict_keys({available!r})"
