"""The width multiplier: every width of a network scaled by one factor (MobileNet's α; Howard et al., "MobileNets",
2017, section 4.2), and the largest factor whose network fits a budget. It is the obvious answer to "this network,
but smaller": a search under a budget has to beat it to be worth its trials.

A width w becomes `divisor * round(α w / divisor)` (halves round up), at least `divisor`; a reduce width of 0 (no
bottleneck) stays 0. The six widths of every Inception module and the filters of every stem convolution are
scaled; the aux heads and the classifier are not (they follow the class count, and the budget's inference model
has no aux heads). The default divisor, 2, keeps every registered spec as it is at α = 1; 8 suits SIMD kernels on
wider networks. Costs are exact: each candidate's comes from the cost model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from inception_keras.cost import network_cost
from inception_keras.spec import ConvSpec, NetworkSpec, SpecError, StageSpec

DIVISOR = 2
WIDTHS = ("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5", "pool_proj")
MIN_MULTIPLIER, MAX_MULTIPLIER = 0.01, 8.0
MULTIPLIER_DIGITS = 4  # scale_to_budget's answer is a multiple of 10**-4


def scale_width(width: int, multiplier: float, divisor: int = DIVISOR) -> int:
    """`width` times `multiplier`, rounded to the nearest multiple of `divisor` (halves up), at least `divisor`; 0
    stays 0."""
    if width == 0:
        return 0
    return max(divisor, divisor * math.floor(width * multiplier / divisor + 0.5))


def scale_widths(spec: NetworkSpec, multiplier: float, divisor: int = DIVISOR) -> NetworkSpec:
    """`spec` with every Inception-module width and stem convolution's filters scaled by `multiplier` (see the
    module docstring), named `NAME_x0.5`.

    Raises:
        SpecError: the multiplier is not a finite number in [0.01, 8], or the divisor not a positive integer.
    """
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or \
            not MIN_MULTIPLIER <= multiplier <= MAX_MULTIPLIER:
        raise SpecError("width multiplier", f"must be a number from {MIN_MULTIPLIER} to {MAX_MULTIPLIER:g}, got "
                                            f"{multiplier!r}")
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
        raise SpecError("divisor", f"must be a positive integer, got {divisor!r}")
    stem = tuple(dataclasses.replace(layer, filters=scale_width(layer.filters, multiplier, divisor))
                 if isinstance(layer, ConvSpec) else layer for layer in spec.stem)
    stages = tuple(StageSpec(stage.name, tuple(
        dataclasses.replace(module, **{name: scale_width(getattr(module, name), multiplier, divisor)
                                       for name in WIDTHS}) for module in stage.modules), stage.pool)
        for stage in spec.stages)
    name = f"{spec.name[:88]}_x{multiplier:.{MULTIPLIER_DIGITS}g}"
    return spec.replace(name=name, stem=stem, stages=stages)


def budget_problem(spec: NetworkSpec, max_params: int | None = None, max_macs: int | None = None,
                   model: str = "inference", max_latency_ms: float | None = None,
                   latency: Callable[[NetworkSpec], float] | None = None) -> str | None:
    """Which bound `spec` exceeds, in words (params, multiply-adds of the inference or training model, predicted
    latency in ms by `latency`); None where it fits them all."""
    cost = network_cost(spec)
    inference = model == "inference"
    params = cost.inference_params if inference else cost.total_params
    macs = cost.inference_macs if inference else cost.total_macs
    if max_params is not None and params > max_params:
        return f"{params:,} params > {max_params:,}"
    if max_macs is not None and macs > max_macs:
        return f"{macs:,} multiply-adds > {max_macs:,}"
    if max_latency_ms is not None:
        if latency is None:
            raise ValueError("a latency budget needs a latency predictor")
        predicted = latency(spec)
        if predicted > max_latency_ms:
            return f"{predicted:.3g} ms predicted > {max_latency_ms:g} ms"
    return None


def scale_to_budget(spec: NetworkSpec, budget=None, *, max_params: int | None = None, max_macs: int | None = None,
                    model: str = "inference", max_latency_ms: float | None = None,
                    latency: Callable[[NetworkSpec], float] | None = None,
                    divisor: int = DIVISOR) -> tuple[NetworkSpec, float]:
    """The width-multiplier network of `spec` for a budget: (spec scaled by α, α) with α the largest multiple of
    10**-4 in [0.01, 8] whose network is within every bound given. A bisection: each width only grows with α, so
    does every cost.

    Args:
        budget: an object with `max_params`, `max_macs`, `model` (and optionally `max_latency_ms`) such as
            `search.space.Budget`; or give the bounds as keywords.
        latency: the predicted latency (ms) of a spec, for `max_latency_ms`.

    Raises:
        SpecError: no bound is given, or even α = 0.01 does not fit (the message says what it exceeds).
    """
    if budget is not None:
        max_params, max_macs = budget.max_params, budget.max_macs
        model = getattr(budget, "model", model)
        max_latency_ms = getattr(budget, "max_latency_ms", max_latency_ms)
    if max_params is None and max_macs is None and max_latency_ms is None:
        raise SpecError("budget", "give at least one bound: params, multiply-adds or latency")

    def problem(multiplier: float) -> str | None:
        return budget_problem(scale_widths(spec, multiplier, divisor), max_params, max_macs, model, max_latency_ms,
                              latency)

    step = 10 ** -MULTIPLIER_DIGITS
    low, high = round(MIN_MULTIPLIER / step), round(MAX_MULTIPLIER / step)  # in steps
    smallest = problem(low * step)
    if smallest is not None:
        raise SpecError("budget", f"even {spec.name} scaled by {MIN_MULTIPLIER} does not fit: {smallest}")
    if problem(high * step) is None:
        return scale_widths(spec, high * step, divisor), high * step
    while high - low > 1:  # low fits, high does not
        middle = (low + high) // 2
        low, high = (middle, high) if problem(middle * step) is None else (low, middle)
    multiplier = round(low * step, MULTIPLIER_DIGITS)
    return scale_widths(spec, multiplier, divisor), multiplier
