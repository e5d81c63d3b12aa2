"""Search spaces over Inception widths: which of a base spec's widths vary, over which values, under which budget.

The hp -> spec mapping (`SearchSpace.spec_for`) is one pure function. Spaces load from
YAML/JSON (`yaml.safe_load`) or come from the registry (`get_space`):

    name: mini_bottlenecks
    base: googlenet_mini            # registered spec name or spec file
    vary:                           # later entries override earlier ones
      - modules: all                # or [3a, 4b]
        widths: [ch3x3_reduce, ch5x5_reduce, pool_proj]   # the default
        choices: [0, 8, 16, 24]     # or range: {min: 8, max: 64, step: 8}
    budget: {max_params: 2.5M, max_macs: 600M, model: inference}
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from inception_keras import NetworkSpec, SpecError, list_specs, resolve_spec
from inception_keras.spec import StageSpec

WIDTH_FIELDS = ("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5", "pool_proj")
BOTTLENECK_FIELDS = ("ch3x3_reduce", "ch5x5_reduce", "pool_proj")
REDUCE_FIELDS = ("ch3x3_reduce", "ch5x5_reduce")
BUDGET_MODELS = ("inference", "training")
_SUFFIXES = {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9}


def parse_count(text: Any, where: str = "budget") -> int:
    """`2.5M` -> 2500000, `600M`, `1.2G`, `150k`, or a plain integer."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMgG]?)\s*", str(text))
        if not match:
            raise SpecError(where, f"must be a count such as 2500000, 2.5M, 600M or 1.2G; got {text!r}")
        value = round(float(match.group(1)) * _SUFFIXES[match.group(2)])
    if value <= 0:
        raise SpecError(where, f"must be > 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Dimension:
    """One varying width: module `3a`'s `ch3x3_reduce` takes one of `values` (ascending)."""

    module: str
    width: str
    values: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.module}_{self.width}"


@dataclass(frozen=True)
class Budget:
    """Upper bounds on the parameters and multiply-adds of the inference (or training) model."""

    max_params: int | None = None
    max_macs: int | None = None
    model: str = "inference"

    def describe(self) -> str:
        parts = [f"params <= {self.max_params:,}" if self.max_params else "",
                 f"multiply-adds <= {self.max_macs:,}" if self.max_macs else ""]
        return (" and ".join(p for p in parts if p) or "no budget") + f" ({self.model} model)"


@dataclass(frozen=True)
class SearchSpace:
    name: str
    base: NetworkSpec
    dimensions: tuple[Dimension, ...]
    budget: Budget = Budget()

    def spec_for(self, values: Mapping[str, int]) -> NetworkSpec:
        """The base spec with every dimension set from `values` (hp name -> width)."""
        by_module: dict[str, dict[str, int]] = {}
        for dim in self.dimensions:
            by_module.setdefault(dim.module, {})[dim.width] = int(values[dim.name])
        stages = []
        for stage in self.base.stages:
            modules = tuple(dataclasses.replace(module, **by_module[name]) if name in by_module else module
                            for name, module in zip(stage.module_names(), stage.modules))
            stages.append(StageSpec(stage.name, modules, stage.pool))
        return self.base.replace(name=f"{self.base.name}_searched", stages=tuple(stages))

    def smallest(self) -> dict[str, int]:
        return {dim.name: dim.values[0] for dim in self.dimensions}

    def base_values(self) -> dict[str, int]:
        widths = {name: dict(zip(WIDTH_FIELDS, module.widths)) for stage in self.base.stages
                  for name, module in zip(stage.module_names(), stage.modules)}
        return {dim.name: widths[dim.module][dim.width] for dim in self.dimensions}

    def size(self) -> int:
        return math.prod(len(dim.values) for dim in self.dimensions)

    def with_base(self, base: NetworkSpec) -> "SearchSpace":
        return dataclasses.replace(self, base=base)

    def with_budget(self, max_params: int | None = None, max_macs: int | None = None) -> "SearchSpace":
        budget = dataclasses.replace(self.budget, max_params=max_params or self.budget.max_params,
                                     max_macs=max_macs or self.budget.max_macs)
        return dataclasses.replace(self, budget=budget)


def _values(entry: Mapping, where: str, width: str) -> tuple[int, ...]:
    if ("choices" in entry) == ("range" in entry):
        raise SpecError(where, "give exactly one of choices: [...] or range: {min, max, step}")
    if "choices" in entry:
        values = entry["choices"]
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}.choices", f"must be a non-empty list of widths, got {values!r}")
    else:
        bounds = entry["range"]
        if not isinstance(bounds, Mapping) or set(bounds) - {"min", "max", "step"} or not {"min", "max"} <= set(bounds):
            raise SpecError(f"{where}.range", f"must be {{min: A, max: B, step: C}}, got {bounds!r}")
        step = bounds.get("step", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (bounds["min"], bounds["max"], step)) \
                or step <= 0 or bounds["max"] < bounds["min"]:
            raise SpecError(f"{where}.range", f"needs integers min <= max and step > 0, got {dict(bounds)!r}")
        values = list(range(bounds["min"], bounds["max"] + 1, step))
    minimum = 0 if width in REDUCE_FIELDS else 1
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpecError(where, f"{width} widths must be integers >= {minimum}, got {value!r}")
    return tuple(sorted(set(values)))


def default_values(base_width: int) -> tuple[int, ...]:
    """Multiples of 8 (of 4 below 16) from one step up to twice the base width."""
    step = 8 if base_width >= 16 else 4
    return tuple(range(step, max(step, 2 * base_width) + 1, step))


def dimensions_from(base: NetworkSpec, vary: list | None, where: str = "vary") -> tuple[Dimension, ...]:
    modules = base.module_names()
    widths_of = {name: dict(zip(WIDTH_FIELDS, module.widths)) for stage in base.stages
                 for name, module in zip(stage.module_names(), stage.modules)}
    chosen: dict[tuple[str, str], tuple[int, ...]] = {}
    if vary is None:
        for module in modules:
            for width in BOTTLENECK_FIELDS:
                chosen[(module, width)] = default_values(widths_of[module][width])
    elif not isinstance(vary, list) or not vary:
        raise SpecError(where, f"must be a non-empty list, got {vary!r}")
    for i, entry in enumerate(vary or []):
        at = f"{where}[{i}]"
        if not isinstance(entry, Mapping):
            raise SpecError(at, f"must be a mapping, got {entry!r}")
        unknown = set(entry) - {"modules", "widths", "choices", "range"}
        if unknown:
            raise SpecError(f"{at}.{sorted(unknown)[0]}", "unknown key; expected modules, widths, choices, range")
        names = entry.get("modules", "all")
        names = list(modules) if names == "all" else names
        if not isinstance(names, list) or not names:
            raise SpecError(f"{at}.modules", f"must be 'all' or a list of module names, got {names!r}")
        for j, name in enumerate(names):
            if name not in modules:
                raise SpecError(f"{at}.modules[{j}]", f"no module {name!r} in {base.name}; modules are "
                                                      f"{', '.join(modules)}")
        widths = entry.get("widths", list(BOTTLENECK_FIELDS))
        widths = widths if isinstance(widths, list) else [widths]
        for j, width in enumerate(widths):
            if width not in WIDTH_FIELDS:
                raise SpecError(f"{at}.widths[{j}]", f"unknown width {width!r}; widths are {', '.join(WIDTH_FIELDS)}")
        for width in widths:
            values = _values(entry, at, width)
            for name in names:
                chosen[(name, width)] = values
    order = {(module, width): (modules.index(module), WIDTH_FIELDS.index(width)) for module, width in chosen}
    return tuple(Dimension(module, width, chosen[(module, width)]) for module, width in sorted(chosen, key=order.get))


def budget_from(data: Any, where: str = "budget") -> Budget:
    if data is None:
        return Budget()
    if not isinstance(data, Mapping) or set(data) - {"max_params", "max_macs", "model"}:
        raise SpecError(where, f"must be {{max_params, max_macs, model}}, got {data!r}")
    model = data.get("model", "inference")
    if model not in BUDGET_MODELS:
        raise SpecError(f"{where}.model", f"must be one of {', '.join(BUDGET_MODELS)}; got {model!r}")
    count = {key: parse_count(data[key], f"{where}.{key}") if data.get(key) is not None else None
             for key in ("max_params", "max_macs")}
    return Budget(count["max_params"], count["max_macs"], model)


def space_from_dict(data: Any, source: str = "space") -> SearchSpace:
    if not isinstance(data, Mapping):
        raise SpecError(source, f"must be a mapping, got {type(data).__name__}")
    unknown = set(data) - {"name", "base", "vary", "budget"}
    if unknown:
        raise SpecError(sorted(unknown)[0], "unknown key; expected name, base, vary, budget")
    if "base" not in data:
        raise SpecError("base", "missing: a registered spec name or a spec file")
    base = resolve_spec(str(data["base"]))
    return SearchSpace(str(data.get("name", "custom")), base, dimensions_from(base, data.get("vary")),
                       budget_from(data.get("budget")))


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise SpecError(str(path), f"cannot read search space: {' '.join(str(error).split())}") from None
    try:
        return space_from_dict(data, str(path))
    except SpecError as error:
        raise SpecError(f"{path}: {error.path}", error.message) from None


_NAMED = {
    "mini_bottlenecks": {
        "base": "googlenet_mini",
        "vary": [{"widths": ["ch3x3_reduce", "ch5x5_reduce"], "choices": [0, 4, 8, 16, 24, 32]},
                 {"widths": ["pool_proj"], "choices": [4, 8, 16, 24, 32]}],
        "budget": {"max_params": 120_000},
    },
    "googlenet_bottlenecks": {
        "base": "googlenet",
        "vary": [{"widths": ["ch3x3_reduce", "ch5x5_reduce"], "range": {"min": 16, "max": 256, "step": 16}},
                 {"widths": ["pool_proj"], "range": {"min": 16, "max": 256, "step": 16}}],
        "budget": {"max_params": 6_000_000},
    },
    "googlenet_widths": {
        "base": "googlenet",
        "vary": [{"widths": list(WIDTH_FIELDS), "range": {"min": 16, "max": 384, "step": 16}}],
        "budget": {"max_params": 2_500_000, "max_macs": 600_000_000},
    },
}


def list_spaces() -> list[str]:
    return list(_NAMED)


def get_space(name_or_path: str) -> SearchSpace:
    """A registered space by name, or a YAML/JSON file."""
    if name_or_path in _NAMED:
        return space_from_dict({"name": name_or_path, **_NAMED[name_or_path]})
    if Path(name_or_path).exists() or Path(name_or_path).suffix.lower() in (".yaml", ".yml", ".json"):
        return load_space(name_or_path)
    raise SpecError("space", f"{name_or_path!r} is neither a registered search space ({', '.join(_NAMED)}) "
                             f"nor a .yaml/.json file; registered specs ({', '.join(list_specs())}) are bases")


__all__ = ["Budget", "Dimension", "SearchSpace", "get_space", "list_spaces", "load_space", "parse_count"]
