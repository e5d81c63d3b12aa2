"""Search spaces over Inception widths: which of a base spec's widths vary, over which values, under which budget.

The hp -> spec mapping (`SearchSpace.spec_for`) is one pure function. Spaces load from YAML/JSON files
through the spec files' own reader and loader (`inception_keras.serialize`) or come from the registry
(`get_space`):

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
import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from inception_keras import NetworkSpec, SpecError, list_specs, resolve_spec
from inception_keras.serialize import MAX_COUNT, file_label, load_document, name_or_file, parse_count, within_file
from inception_keras.spec import MAX_INT, key_text, name_list, show

MAX_VALUES = 10_000  # per dimension
WIDTH_FIELDS = ("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5", "pool_proj")
BOTTLENECK_FIELDS = ("ch3x3_reduce", "ch5x5_reduce", "pool_proj")
REDUCE_FIELDS = ("ch3x3_reduce", "ch5x5_reduce")
BUDGET_MODELS = ("inference", "training")
LATENCY_RUNTIMES = ("onnxruntime", "openvino", "litert", "keras")  # inception_keras.export.latency.RUNTIMES
DEFAULT_RUNTIME = "onnxruntime"
MAX_LATENCY_MS = 1_000_000
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
    """Upper bounds on the parameters and multiply-adds of the inference (or training) model, and on the inference
    model's latency in milliseconds at batch 1 in a deployment runtime (predicted to screen, measured per trial)."""

    max_params: int | None = None
    max_macs: int | None = None
    model: str = "inference"
    max_latency_ms: float | None = None
    runtime: str = DEFAULT_RUNTIME

    def __post_init__(self):
        for name in ("max_params", "max_macs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 < value <= MAX_COUNT):
                raise SpecError(f"budget.{name}", f"must be an integer count in 1..10^15, got {show(value)}")
        if self.model not in BUDGET_MODELS:
            raise SpecError("budget.model", f"must be one of {', '.join(BUDGET_MODELS)}; got {show(self.model)}")
        latency = self.max_latency_ms
        if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))
                                    or not 0 < latency <= MAX_LATENCY_MS):
            raise SpecError("budget.max_latency_ms", f"must be a number of milliseconds in (0, {MAX_LATENCY_MS:,}], "
                                                     f"got {show(latency)}")
        if self.runtime not in LATENCY_RUNTIMES:
            raise SpecError("budget.runtime", f"must be one of {', '.join(LATENCY_RUNTIMES)}; got {show(self.runtime)}")

    def describe(self) -> str:
        parts = [f"params <= {self.max_params:,}" if self.max_params else "",
                 f"multiply-adds <= {self.max_macs:,}" if self.max_macs else "",
                 f"latency <= {self.max_latency_ms:g} ms on {self.runtime}" if self.max_latency_ms else ""]
        return (" and ".join(p for p in parts if p) or "no budget") + f" ({self.model} model)"

    def bounded(self) -> bool:
        return any(value is not None for value in (self.max_params, self.max_macs, self.max_latency_ms))


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
        return self.base.with_module_widths(by_module).replace(name=f"{self.base.name[:91]}_searched")

    def smallest(self) -> dict[str, int]:
        return {dim.name: dim.values[0] for dim in self.dimensions}

    def random_spec(self, rng: random.Random) -> NetworkSpec:
        """A uniform random point of the space (each dimension's value drawn on its own), as a spec."""
        return self.spec_for({dim.name: rng.choice(dim.values) for dim in self.dimensions})

    def widths_digest(self) -> str:
        """What the space varies and over which values (not its name, base widths or budget), hashed."""
        dims = [[dim.module, dim.width, list(dim.values)] for dim in self.dimensions]
        return hashlib.sha256(json.dumps(dims).encode()).hexdigest()[:16]

    def base_values(self) -> dict[str, int]:
        widths = {name: dict(zip(WIDTH_FIELDS, module.widths)) for stage in self.base.stages
                  for name, module in zip(stage.module_names(), stage.modules)}
        return {dim.name: widths[dim.module][dim.width] for dim in self.dimensions}

    def size(self) -> int:
        return math.prod(len(dim.values) for dim in self.dimensions)

    def with_base(self, base: NetworkSpec) -> "SearchSpace":
        return dataclasses.replace(self, base=base)

    def with_budget(self, max_params: int | None = None, max_macs: int | None = None,
                    max_latency_ms: float | None = None, runtime: str | None = None) -> "SearchSpace":
        budget = dataclasses.replace(self.budget, max_params=max_params or self.budget.max_params,
                                     max_macs=max_macs or self.budget.max_macs,
                                     max_latency_ms=max_latency_ms or self.budget.max_latency_ms,
                                     runtime=runtime or self.budget.runtime)
        return dataclasses.replace(self, budget=budget)


def _values(entry: Mapping, where: str, width: str) -> tuple[int, ...]:
    if ("choices" in entry) == ("range" in entry):
        raise SpecError(where, "give exactly one of choices: [...] or range: {min, max, step}")
    values = _choices(entry["choices"], f"{where}.choices") if "choices" in entry \
        else _range(entry["range"], f"{where}.range")
    minimum = 0 if width in REDUCE_FIELDS else 1
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INT:
            raise SpecError(where, f"{width} widths must be integers >= {minimum}, got {show(value)}")
    return tuple(sorted(set(values)))


def _choices(values: Any, where: str) -> list:
    if not isinstance(values, list) or not values:
        raise SpecError(where, f"must be a non-empty list of widths, got {show(values)}")
    if len(values) > MAX_VALUES:
        raise SpecError(where, f"{len(values):,} widths; at most {MAX_VALUES:,} per width")
    return values


def _range(bounds: Any, where: str) -> range:
    """The widths of `{min, max, step}`, refused before enumerating when there would be more than MAX_VALUES."""
    if not isinstance(bounds, Mapping) or set(bounds) - {"min", "max", "step"} or not {"min", "max"} <= set(bounds):
        raise SpecError(where, f"must be {{min: A, max: B, step: C}}, got {show(bounds)}")
    low, high, step = bounds["min"], bounds["max"], bounds.get("step", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step)) \
            or step <= 0 or high < low:
        raise SpecError(where, f"needs integers min <= max and step > 0, got {show(dict(bounds))}")
    count = (high - low) // step + 1
    if count > MAX_VALUES:
        raise SpecError(where, f"would enumerate {show(count)} widths; at most {MAX_VALUES:,} per width "
                               f"(use a larger step)")
    return range(low, high + 1, step)


def default_values(base_width: int) -> tuple[int, ...]:
    """Multiples of 8 (of 4 below 16) from one step up to twice the base width."""
    step = 8 if base_width >= 16 else 4
    return tuple(range(step, max(step, 2 * base_width) + 1, step))


def _unknown_key(data: Mapping, allowed: tuple[str, ...]) -> str | None:
    unknown = [key_text(key) for key in data if key not in allowed]
    return min(unknown) if unknown else None


def dimensions_from(base: NetworkSpec, vary: list | None, where: str = "vary") -> tuple[Dimension, ...]:
    """The dimensions `vary` describes over `base`'s modules (None: every bottleneck width, default values)."""
    modules = base.module_names()
    widths_of = {name: dict(zip(WIDTH_FIELDS, module.widths)) for stage in base.stages
                 for name, module in zip(stage.module_names(), stage.modules)}
    chosen: dict[tuple[str, str], tuple[int, ...]] = {}
    if vary is None:
        for module in modules:
            for width in BOTTLENECK_FIELDS:
                chosen[(module, width)] = default_values(widths_of[module][width])
    elif not isinstance(vary, list) or not vary:
        raise SpecError(where, f"must be a non-empty list, got {show(vary)}")
    for i, entry in enumerate(vary or []):
        at = f"{where}[{i}]"
        names, widths = _entry_targets(entry, at, base)
        for width in widths:
            values = _values(entry, at, width)
            for name in names:
                chosen[(name, width)] = values
    order = {(module, width): (modules.index(module), WIDTH_FIELDS.index(width)) for module, width in chosen}
    return tuple(Dimension(module, width, chosen[(module, width)]) for module, width in sorted(chosen, key=order.get))


def _entry_targets(entry: Any, at: str, base: NetworkSpec) -> tuple[list[str], list[str]]:
    """The module names and width fields one `vary` entry names, checked against `base`."""
    if not isinstance(entry, Mapping):
        raise SpecError(at, f"must be a mapping, got {show(entry)}")
    unknown = _unknown_key(entry, ("modules", "widths", "choices", "range"))
    if unknown:
        raise SpecError(f"{at}.{unknown}", "unknown key; expected modules, widths, choices, range")
    modules = base.module_names()
    names = entry.get("modules", "all")
    names = list(modules) if names == "all" else names
    if not isinstance(names, list) or not names:
        raise SpecError(f"{at}.modules", f"must be 'all' or a non-empty list of module names, got {show(names)}")
    for j, name in enumerate(names):
        if not isinstance(name, str) or name not in modules:
            raise SpecError(f"{at}.modules[{j}]", f"no module {show(name)} in {base.name}; modules are "
                                                  f"{name_list(modules)}")
    widths = entry.get("widths", list(BOTTLENECK_FIELDS))
    widths = widths if isinstance(widths, list) else [widths]
    if not widths:
        raise SpecError(f"{at}.widths", "must name at least one width")
    for j, width in enumerate(widths):
        if not isinstance(width, str) or width not in WIDTH_FIELDS:
            raise SpecError(f"{at}.widths[{j}]", f"unknown width {show(width)}; widths are {', '.join(WIDTH_FIELDS)}")
    return names, widths


def parse_milliseconds(text: Any, where: str = "budget.max_latency_ms") -> float:
    """`1.2ms`, `1.2 ms` or `1.2` -> 1.2 (milliseconds; `s` and `us` suffixes too), in (0, MAX_LATENCY_MS]."""
    scale = {"ms": 1.0, "s": 1000.0, "us": 0.001}
    value = text
    if isinstance(text, str) and len(text) <= 40:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|us)?\s*", text)
        value = float(match.group(1)) * scale[match.group(2) or "ms"] if match else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_LATENCY_MS:
        raise SpecError(where, f"must be a latency such as 1.2ms (0 to {MAX_LATENCY_MS:,} ms), got {show(text)}")
    return float(value)


def budget_from(data: Any, where: str = "budget") -> Budget:
    """A Budget from `{max_params, max_macs, model, max_latency_ms, runtime}` (counts such as 2.5M, latencies
    such as 1.2ms); None is no budget."""
    keys = ("max_params", "max_macs", "model", "max_latency_ms", "runtime")
    if data is None:
        return Budget()
    if not isinstance(data, Mapping) or _unknown_key(data, keys):
        raise SpecError(where, f"must be {{{', '.join(keys)}}}, got {show(data)}")
    model = data.get("model", "inference")
    if not isinstance(model, str) or model not in BUDGET_MODELS:
        raise SpecError(f"{where}.model", f"must be one of {', '.join(BUDGET_MODELS)}; got {show(model)}")
    count = {key: parse_count(data[key], f"{where}.{key}") if data.get(key) is not None else None
             for key in ("max_params", "max_macs")}
    latency = parse_milliseconds(data["max_latency_ms"], f"{where}.max_latency_ms") \
        if data.get("max_latency_ms") is not None else None
    runtime = data.get("runtime", DEFAULT_RUNTIME)
    if not isinstance(runtime, str) or runtime not in LATENCY_RUNTIMES:
        raise SpecError(f"{where}.runtime", f"must be one of {', '.join(LATENCY_RUNTIMES)}; got {show(runtime)}")
    return Budget(count["max_params"], count["max_macs"], model, latency, runtime)


def space_from_dict(data: Any, source: str = "space") -> SearchSpace:
    """A SearchSpace from `{name, base, vary, budget}`; errors name the field's path."""
    if not isinstance(data, Mapping):
        raise SpecError(source, f"must be a mapping, got {type(data).__name__}")
    unknown = _unknown_key(data, ("name", "base", "vary", "budget"))
    if unknown:
        raise SpecError(unknown, "unknown key; expected name, base, vary, budget")
    if "base" not in data:
        raise SpecError("base", "missing: a registered spec name or a spec file")
    name = data.get("name", "custom")
    if not isinstance(name, str) or not 0 < len(name) <= 100 or not name.isprintable():
        raise SpecError("name", f"must be a name of 1 to 100 printable characters, got {show(name)}")
    base = resolve_spec(data["base"], field="base")
    if not base.stages:
        raise SpecError("base", f"{base.name} has no stages, so no Inception module widths to search")
    return SearchSpace(name, base, dimensions_from(base, data.get("vary")), budget_from(data.get("budget")))


def load_space(path: str | Path) -> SearchSpace:
    """A SearchSpace from a YAML/JSON file; any problem is a SpecError naming the file."""
    try:
        return space_from_dict(load_document(path, "search space"), file_label(path))
    except SpecError as error:
        raise within_file(error, path) from None
    except RecursionError:
        raise SpecError(file_label(path), "nested too deeply") from None


AROUND_BASE = (0.5, 0.75, 1.0, 1.25, 1.5)  # cluttered_widths: each width's choices, as factors of its base value


def widths_around(base: str, factors: tuple[float, ...] = AROUND_BASE) -> list[dict]:
    """`vary` entries giving each of the six widths of each module of registered spec `base` the choices
    `factors` x its own value (rounded as the width multiplier rounds: multiples of 2, at least 2)."""
    from inception_keras.presets import get_spec
    from inception_keras.scaling import scale_width

    spec = get_spec(base)
    return [{"modules": [name], "widths": [width],
             "choices": sorted({scale_width(getattr(module, width), factor) for factor in factors})}
            for name, module in zip(spec.module_names(), (m for stage in spec.stages for m in stage.modules))
            for width in WIDTH_FIELDS if getattr(module, width)]


_NAMED = {
    "mini_bottlenecks": {
        "base": "googlenet_mini",
        "vary": [{"widths": ["ch3x3_reduce", "ch5x5_reduce"], "choices": [0, 4, 8, 16, 24, 32]},
                 {"widths": ["pool_proj"], "choices": [4, 8, 16, 24, 32]}],
        "budget": {"max_params": 120_000},
    },
    "cluttered_bottlenecks": {  # for --dataset cluttered_digits; the narrowest candidate has 1/4 of the base's params
        "base": "googlenet_mini",
        "vary": [{"widths": list(BOTTLENECK_FIELDS), "choices": [2, 4, 8, 16, 24, 32]}],
        "budget": {"max_params": 110_000},
    },
    "cluttered_widths": {  # every width of every module, so where the channels go under a multiply-add budget matters
        "base": "googlenet_mini",
        "vary": widths_around("googlenet_mini"),
        "budget": {"max_macs": 4_750_000},  # half of the base's 9.48M
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
    found = name_or_file(name_or_path, _NAMED, "space", "search space",
                         hint=f"; registered specs ({', '.join(list_specs())}) are bases")
    return space_from_dict({"name": found, **_NAMED[found]}) if isinstance(found, str) else load_space(found)


__all__ = ["Budget", "Dimension", "SearchSpace", "get_space", "list_spaces", "load_space", "parse_count"]


def elastic_widths(name_or_path: str):
    """A space's varying widths as `inception_keras.elastic.ElasticWidths` (what `train --elastic SPACE` trains
    every child of); a choice of 0 (no bottleneck: another network) is refused naming the width."""
    from inception_keras.elastic import ElasticWidths

    space = get_space(name_or_path)
    return ElasticWidths.from_choices({(dim.module, dim.width): dim.values for dim in space.dimensions})
