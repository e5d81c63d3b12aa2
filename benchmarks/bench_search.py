"""Budget screening speed, and the share of trials within budget for each constraint-aware oracle.

    python benchmarks/bench_search.py

1. Candidates screened per second by the budget check (`search.budget.PointCost`) against
   the full cost model and against building the Keras model and counting (goal >= 10,000/s).
2. Trials created by each oracle (random, Bayesian, Hyperband) under a budget that rejects
   most of the space, scored by a stand-in for accuracy (no training): share within budget
   (must be 100 %), candidates rejected before any trial, Bayesian proposals repaired.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import inception_keras  # noqa: E402,F401  first: turns oneDNN on where TensorFlow would not (cpu.py)
import keras_tuner as kt  # noqa: E402

from inception_keras import network_cost  # noqa: E402
from inception_keras.train import TrainConfig  # noqa: E402
from search.budget import PointCost, cheapest  # noqa: E402
from search.space import get_space  # noqa: E402
from search.tuner import (BudgetBayesianOracle, BudgetHyperbandOracle, BudgetRandomSearchOracle,  # noqa: E402
                          InceptionHyperModel)


def rate(fn, points) -> float:
    start = time.perf_counter()
    for values in points:
        fn(values)
    return len(points) / (time.perf_counter() - start)


def screening(name: str) -> str:
    from inception_keras import build_model

    space = get_space(name)
    cost = PointCost(space)
    rng = random.Random(0)
    points = [{d.name: rng.choice(d.values) for d in space.dimensions} for _ in range(5000)]
    screen = rate(cost.within, points)
    full = rate(lambda v: network_cost(space.spec_for(v)), points[:300])
    build = rate(lambda v: build_model(space.spec_for(v)).count_params(), points[:3])
    return (f"| {name} | {screen:,.0f} | {full:,.0f} | {build:,.2f} | {screen / build:,.0f}× | "
            f"{'met' if screen >= 10_000 else 'not met'} |")


def oracle_share(cls, space, trials: int, **kwargs) -> tuple[int, int, int, int]:
    hp = kt.HyperParameters()
    cost = PointCost(space)
    InceptionHyperModel(space, TrainConfig(), 10, cheapest(cost)).declare(hp)
    oracle = cls(objective=kt.Objective("val_predictions_accuracy", "max"), hyperparameters=hp,
                 tune_new_entries=False, space=space, seed=0, **kwargs)
    oracle._set_project_dir(tempfile.mkdtemp(), "bench")
    created = within = 0
    for _ in range(trials):
        trial = oracle.create_trial("bench")
        if trial.status != "RUNNING":
            break
        values = trial.hyperparameters.values
        created += 1
        within += cost.within(values)
        score = sum(values[d.name] for d in space.dimensions) / 1000  # wider looks better: pushes against the budget
        oracle.update_trial(trial.trial_id, {"val_predictions_accuracy": score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    return created, within, oracle.rejected, oracle.repaired


def main() -> None:
    from benchlib import Results

    results = Results("bench_search", "Budget screening and constraint-aware oracles", "bench",
                      "`benchmarks/bench_search.py`: candidates per second through the budget check "
                      "(`search.budget.PointCost`), the full cost model and building the Keras model (goal ≥ "
                      "10,000/s); then the trials each oracle creates under a budget that rejects most of the space, "
                      "scored by a stand-in for accuracy (no training): the share within budget must be 100 %.")
    results.add(["| space | screened / s | cost model / s | build / s | screening vs build | goal ≥ 10,000/s |",
                 "|---|---:|---:|---:|---:|---|",
                 *(screening(name) for name in ("mini_bottlenecks", "googlenet_bottlenecks", "googlenet_widths"))])
    space = get_space("mini_bottlenecks").with_budget(max_params=70_000)
    rows = ["| oracle | trials | within budget | rejected before a trial | proposals repaired |",
            "|---|---:|---:|---:|---:|"]
    for label, cls, kwargs in (("random", BudgetRandomSearchOracle, {"max_trials": 30}),
                               ("bayesian", BudgetBayesianOracle, {"max_trials": 30, "num_initial_points": 5}),
                               ("hyperband", BudgetHyperbandOracle, {"max_epochs": 27})):
        with contextlib.redirect_stdout(io.StringIO()):  # KerasTuner prints a block per trial
            created, within, rejected, repaired = oracle_share(cls, space, 30, **kwargs)
        rows.append(f"| {label} | {created} | {within / created:.0%} | {rejected:,} | {repaired} |")
    results.add(f"Oracles on `mini_bottlenecks` under {space.budget.describe()}, 30 trials each:")
    results.add(rows)
    results.write()


if __name__ == "__main__":
    main()
