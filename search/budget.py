"""Budget checks for search-space points, before any trial or model exists.

`PointCost` gives the exact parameters and multiply-adds of a point (equal to
`inception_keras.network_cost(space.spec_for(values))`, tested) from the base spec's
feature-map sizes, which widths do not change, using the cost model's own formulas;
it screens tens of thousands of candidates per second. `shrink` (random draws) and
`repair` (a Bayesian proposal: each time the step that brings it closest) move an over-budget point step by step
towards the cheapest point until it fits.
"""

from __future__ import annotations

from inception_keras.cost import batch_norm_params, conv_params, dense_params, network_cost
from inception_keras.utils.errors import UserError

from search.space import REDUCE_FIELDS, WIDTH_FIELDS, SearchSpace


class BudgetError(UserError, ValueError):
    """The budget cannot be met, or sampling found nothing within it."""


class PointCost:
    """Exact (params, multiply-adds) of the budgeted model for a dict of hp values; with `latency` (a function of a
    spec: its predicted milliseconds, `inception_keras.export.latency.Predictor.predict`) a latency budget screens
    too."""

    def __init__(self, space: SearchSpace, latency=None):
        base = space.base
        self.space, self.latency = space, latency
        if space.budget.max_latency_ms is not None and latency is None:
            raise ValueError("a latency budget needs a latency predictor")
        self.bn = base.normalization == "batch_norm"
        self.include_aux = space.budget.model == "training"
        cost = network_cost(base)
        blocks = cost.blocks
        self.stem_channels = _trunk_channels(blocks, base.input_shape[2])
        variable = lambda block: block.name.startswith("inception_") or block.aux or block.name == "predictions"
        fixed = [block for block in blocks if not variable(block) and (self.include_aux or not block.aux)]
        self.fixed_params = sum(block.params for block in fixed)
        self.fixed_macs = sum(block.macs for block in fixed)
        dims = {(dim.module, dim.width): dim.name for dim in space.dimensions}
        self.modules = []
        for stage in base.stages:
            for name, module in zip(stage.module_names(), stage.modules):
                block = next(b for b in blocks if b.name == f"inception_{name}")
                h, w, _ = block.output_shape
                widths = tuple((dims.get((name, field)), value) for field, value in zip(WIDTH_FIELDS, module.widths))
                self.modules.append((name, h * w, module.ch5x5_kernel, widths))
        self.aux = []
        for index, aux in enumerate(base.aux_heads, start=1):
            pooled = next(b for b in blocks if b.name == f"aux_{index}").layers[0].output_shape
            self.aux.append((aux.after, pooled[0] * pooled[1], aux.conv_width, aux.dense_width))
        self.classes = base.head.classes

    def _conv(self, pixels: int, cin: int, cout: int, kernel: int) -> tuple[int, int]:
        params = conv_params(cin, cout, kernel, bias=not self.bn) + (batch_norm_params(cout)[0] if self.bn else 0)
        return params, pixels * kernel * kernel * cin * cout

    def __call__(self, values) -> tuple[int, int]:
        params, macs = self.fixed_params, self.fixed_macs
        cin = self.stem_channels
        for name, pixels, kernel5, widths in self.modules:
            c1, r3, c3, r5, c5, pp = (values[hp] if hp else value for hp, value in widths)
            for reduce, width, kernel in ((0, c1, 1), (r3, c3, 3), (r5, c5, kernel5)):
                if reduce:
                    p, m = self._conv(pixels, cin, reduce, 1)
                    params, macs = params + p, macs + m
                p, m = self._conv(pixels, reduce or cin, width, kernel)
                params, macs = params + p, macs + m
            p, m = self._conv(pixels, cin, pp, 1)
            params, macs = params + p, macs + m
            cin = c1 + c3 + c5 + pp
            if self.include_aux:
                for after, pooled, conv_width, dense_width in self.aux:
                    if after == name:
                        p, m = self._conv(pooled, cin, conv_width, 1)
                        flat = pooled * conv_width
                        params += p + dense_params(flat, dense_width) + dense_params(dense_width, self.classes)
                        macs += m + flat * dense_width + dense_width * self.classes
        return params + dense_params(cin, self.classes), macs + cin * self.classes

    def excess(self, values) -> float:
        """0 within budget; else how far over, as a sum of (cost / limit - 1) over the limits exceeded."""
        params, macs = self(values)
        budget = self.space.budget
        over = 0.0
        if budget.max_params and params > budget.max_params:
            over += params / budget.max_params - 1
        if budget.max_macs and macs > budget.max_macs:
            over += macs / budget.max_macs - 1
        if budget.max_latency_ms:
            predicted = self.predicted_ms(values)
            if predicted > budget.max_latency_ms:
                over += predicted / budget.max_latency_ms - 1
        return over

    def predicted_ms(self, values) -> float:
        """The predicted latency of the point's inference model."""
        return self.latency(self.space.spec_for(values).without_aux())

    def within(self, values) -> bool:
        return self.excess(values) == 0.0


def _trunk_channels(blocks, input_channels: int) -> int:
    """Channels entering the first Inception module (the classifier's global pool, in a network without any)."""
    first = next(i for i, block in enumerate(blocks) if block.name.startswith("inception_")
                 or block.layers[0].type == "GlobalAveragePooling2D")
    return blocks[first - 1].output_shape[-1] if first else input_channels


def cheapest(cost: PointCost, weights: tuple[float, float] | None = None) -> dict:
    """The point of least weighted cost (params * w0 + macs * w1); weights default to 1/limit of the budget.

    Exact: output widths only grow the cost (theirs and the next module's input), so they
    take their smallest values; a reduce width only changes its own branch (0 means no
    bottleneck, which may cost more), so each takes its own best value given the rest.
    """
    budget = cost.space.budget
    if weights is None:
        weights = (1 / budget.max_params if budget.max_params else 0.0, 1 / budget.max_macs if budget.max_macs else 0.0)
        weights = weights if any(weights) else (1.0, 0.0)
    values = cost.space.smallest()

    def weighted(point):
        params, macs = cost(point)
        return params * weights[0] + macs * weights[1]

    for dim in cost.space.dimensions:
        if dim.width in REDUCE_FIELDS:
            values[dim.name] = min(dim.values, key=lambda v: (weighted({**values, dim.name: v}), v))
    return values


def check_feasible(space: SearchSpace, cost: PointCost | None = None) -> PointCost:
    """Raise BudgetError, naming the smallest achievable costs, if no point of the space can meet the budget."""
    cost = cost or PointCost(space)
    min_params = cost(cheapest(cost, (1.0, 0.0)))[0]
    min_macs = cost(cheapest(cost, (0.0, 1.0)))[1]
    budget = space.budget
    if (budget.max_params and min_params > budget.max_params) or (budget.max_macs and min_macs > budget.max_macs) \
            or not cost.within(cheapest(cost)):
        latency = f" and {cost.predicted_ms(space.smallest()):.3g} ms predicted" if budget.max_latency_ms else ""
        raise BudgetError(f"impossible budget for search space {space.name!r}: {budget.describe()}, but the smallest "
                          f"achievable is {min_params:,} params and {min_macs:,} multiply-adds{latency}. Loosen the "
                          f"budget, or let smaller widths into the space.")
    return cost


def _positions(values: dict, cost: PointCost) -> tuple[dict, dict, dict]:
    """`values` on the space's choices, each width's index among its choices, and its index at the cheapest point."""
    dims, target = cost.space.dimensions, cheapest(cost)
    values = {dim.name: min(dim.values, key=lambda v: abs(v - values[dim.name])) for dim in dims}
    return (values, {dim.name: dim.values.index(values[dim.name]) for dim in dims},
            {dim.name: dim.values.index(target[dim.name]) for dim in dims})


def shrink(values: dict, cost: PointCost, rng) -> dict:
    """Move a random width one step towards the cheapest point, again and again, until the point fits.

    A uniform draw from a space whose budget sits in the tail of its cost distribution is almost never within it
    (under 30 % of the way from the cheapest point to the base of `cluttered_widths`, 12 of 200,000 draws);
    shrinking such a draw by random steps lands it just under the budget, at a random allocation, where the most
    accurate networks of a budget are. The steps follow `rng` (a `random.Random`), so a seeded search repeats.
    """
    dims = cost.space.dimensions
    values, position, goal = _positions(values, cost)
    while not cost.within(values):
        movable = [dim for dim in dims if position[dim.name] != goal[dim.name]]
        if not movable:
            raise BudgetError(f"cannot shrink the point onto the budget ({cost.space.budget.describe()})")
        dim = rng.choice(movable)
        position[dim.name] += -1 if position[dim.name] > goal[dim.name] else 1
        values[dim.name] = dim.values[position[dim.name]]
    return values


def repair(values: dict, cost: PointCost) -> dict:
    """Move widths one step at a time towards the cheapest point, each time the step that brings the
    point closest to the budget, until it fits (the cheapest point fits: `check_feasible`)."""
    dims = cost.space.dimensions
    values, position, goal = _positions(values, cost)
    excess = cost.excess(values)
    while excess > 0:
        best = None
        for dim in dims:
            here, there = position[dim.name], goal[dim.name]
            if here == there:
                continue
            step = here - 1 if here > there else here + 1
            trial_excess = cost.excess({**values, dim.name: dim.values[step]})
            if best is None or trial_excess < best[0]:
                best = (trial_excess, dim, step)
        if best is None:
            raise BudgetError(f"cannot repair the point onto the budget ({cost.space.budget.describe()})")
        excess, dim, position[dim.name] = best
        values[dim.name] = dim.values[position[dim.name]]
    return values
