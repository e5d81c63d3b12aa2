"""How well the latency predictor (`inception_keras.export.latency`) predicts measured latency, in one sitting.

    make bench-latency
    python benchmarks/bench_latency.py [--runtime onnxruntime] [--held-out 20] [--candidates 24] [--quick]

For each structure, a predictor is fitted anew as `search` fits one (`fitting_candidates`: the base, random
width variants of it and random points of the space being searched, exported and timed in interleaved rounds);
HELD_OUT random points of the same space, drawn with a fixed seed before anything is measured and none of them a
fitting candidate, are timed in the same interleaved rounds as the fitting candidates (one sitting: the fit sees
the machine as the points do) and predicted against that median; then timed again together with the base (the two
measurements' agreement is the measurement's own noise, the ceiling of any prediction), and the predictions are
also compared with the two passes' mean and, as a ratio to the base timed in the same rounds (what a budget of
`0.6x` the base's latency uses), with the ratios' mean. The goal: at least 90 % of the predictions within +-10 % of
the median measured in the fit's sitting. Structures: googlenet_mini at 32 px (points of `cluttered_bottlenecks`
and `cluttered_widths`) and the faithful googlenet at 224 px (points of `googlenet_widths`, every width of every
module from 16 to 384), batch 1, the runtime's default threads.
Writes benchmarks/results/bench_latency.json.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import inception_keras  # noqa: E402,F401  first: turns oneDNN on where TensorFlow would not (cpu.py)
from benchlib import Results, cpu_name  # noqa: E402

GOAL_WITHIN, GOAL_SHARE = 0.10, 0.90
SEED = 2026  # the held-out draws; the predictors' own candidates use seed 0
STRUCTURES = (("googlenet_mini at 32 px", "googlenet_mini", 32, ("cluttered_bottlenecks", "cluttered_widths")),
              ("googlenet at 224 px", "googlenet", 224, ("googlenet_widths",)))


def held_out(spaces: list, count: int, seed: int, exclude: list) -> list:
    """`count` random points of `spaces` (in turn), each space's base at its input size, none of them in `exclude`."""
    rng = random.Random(seed)
    points = []
    while len(points) < count:
        point = spaces[len(points) % len(spaces)].random_spec(rng).without_aux()
        if point not in exclude and point not in points:
            points.append(point)
    return points


def run(structure: tuple, runtime: str, count: int, candidates: int) -> dict:
    from inception_keras import get_spec, network_cost
    from inception_keras.export.latency import (fitted, fitting_candidates, measure_many, predictor_key,
                                                relative_errors)
    from search.space import get_space

    label, name, size, space_names = structure
    base = get_spec(name).with_input_size(size)
    spaces = [get_space(space).with_base(get_space(space).base.with_input_size(size)) for space in space_names]
    coverage = "+".join(space.widths_digest() for space in spaces)
    # what `search` fits its predictor on: width variants of the base and points of the space being searched
    fitting = fitting_candidates(base, candidates, draw=lambda rng: rng.choice(spaces).random_spec(rng))
    points = held_out(spaces, count, SEED, fitting)
    start = time.perf_counter()
    # one sitting: the fitting candidates and the held-out points timed in the same interleaved rounds (the fit sees
    # the machine as the points do); then the points and the base again, the measurement's own repeatability
    found = [t.median_ms for t in measure_many([*fitting, *points], runtime, progress=print)]
    fit_ms, first = found[:len(fitting)], found[len(fitting):]
    first_base = fit_ms[0]  # fitting[0] is the base
    predictor = fitted(predictor_key(base, runtime, 1, coverage), fitting, fit_ms)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    *second, second_base = [t.median_ms for t in measure_many([*points, base], runtime, progress=print)]
    measure_seconds = time.perf_counter() - start
    measured = [(a + b) / 2 for a, b in zip(first, second)]
    predicted = [predictor.predict(point) for point in points]
    ratios = [(a / first_base + b / second_base) / 2 for a, b in zip(first, second)]
    rows = [{"macs": network_cost(p).inference_macs, "measured_ms": m, "first_ms": a, "second_ms": b,
             "predicted_ms": q, "ratio_to_base": r}
            for p, m, a, b, q, r in zip(points, measured, first, second, predicted, ratios)]
    return {"structure": label, "spaces": list(space_names), "fit": predictor.fit_error,
            "fit_seconds": round(fit_seconds, 1), "measure_seconds": round(measure_seconds, 1),
            "errors": relative_errors(predicted, first), "errors_mean": relative_errors(predicted, measured),
            "repeat": relative_errors(second, first),
            "ratio_errors": relative_errors([q / predictor.predict(base) for q in predicted], ratios),
            "ratio_repeat": relative_errors([b / second_base for b in second], [a / first_base for a in first]),
            "base_ms": [first_base, second_base], "base_predicted_ms": predictor.predict(base), "points": rows,
            "coefficients": dict(zip(predictor.to_dict()["features"], predictor.coefficients))}


def table(found: list[dict], runtime: str) -> list[str]:
    lines = [f"| structure ({runtime}, batch 1) | held-out points | measured ms | predictions within ±10 % (the "
             f"fit's sitting) | median error | 90th pct error | max error | within ±10 % of the two passes' mean | "
             f"two passes within ±10 % of each other | fit: candidates, within ±10 %, seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in found:
        errors, times = result["errors"], [row["first_ms"] for row in result["points"]]
        lines.append(f"| {result['structure']} ({', '.join(result['spaces'])}) | {errors['count']} | "
                     f"{min(times):.3f}–{max(times):.3f} | **{errors['within_10_percent']:.0%}** | "
                     f"{errors['median_abs']:.1%} | {errors['p90_abs']:.1%} | {errors['max_abs']:.1%} | "
                     f"{result['errors_mean']['within_10_percent']:.0%} | "
                     f"{result['repeat']['within_10_percent']:.0%} | {result['fit']['candidates']}, "
                     f"{result['fit']['within_10_percent']:.0%}, {result['fit_seconds']:.0f} s |")
    return lines


def ratio_table(found: list[dict]) -> list[str]:
    lines = ["| structure | latency over the base's, timed in the same rounds: predictions within ±10 % | median "
             "error | 90th pct error | max error | the two passes' ratios within ±10 % of each other | base ms "
             "(two passes; predicted) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for result in found:
        errors, repeat = result["ratio_errors"], result["ratio_repeat"]
        first, second = result["base_ms"]
        lines.append(f"| {result['structure']} | **{errors['within_10_percent']:.0%}** | {errors['median_abs']:.1%} | "
                     f"{errors['p90_abs']:.1%} | {errors['max_abs']:.1%} | {repeat['within_10_percent']:.0%} | "
                     f"{first:.3f}, {second:.3f}; {result['base_predicted_ms']:.3f} |")
    return lines


def noise_notes(found: list[dict]) -> list[str]:
    """What the two passes say of the machine: how far apart they came, and the predictions against each pass."""
    import numpy as np

    notes = []
    for result in found:
        points = result["points"]
        first, second, predicted = (np.array([p[key] for p in points]) for key in ("first_ms", "second_ms",
                                                                                   "predicted_ms"))
        shift = float(np.median(second / first - 1))
        within = {name: float((np.abs(predicted / times - 1) <= 0.10).mean())
                  for name, times in (("first", first), ("second", second))}
        notes.append(f"{result['structure']}: the same {len(points)} networks timed twice, minutes apart, came out "
                     f"{shift:+.0%} apart (median of the ratios), {result['repeat']['within_10_percent']:.0%} of them "
                     f"within ±10 % of each other. Against the first pass (the fit's sitting) {within['first']:.0%} "
                     f"of the predictions were within ±10 %, against the second {within['second']:.0%}; the fit on "
                     f"its own {result['fit']['candidates']} candidates, timed in the same rounds, "
                     f"{result['fit']['within_10_percent']:.0%} (median error {result['fit']['median']:.1%}).")
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--held-out", type=int, default=20)
    parser.add_argument("--candidates", type=int, default=24)
    parser.add_argument("--quick", action="store_true", help="the small structure only")
    args = parser.parse_args()
    about = "`benchmarks/bench_latency.py`: " + __doc__.split("\n\n")[2].replace("\n", " ").strip()
    results = Results("bench_latency", "Latency prediction against measurement", "bench-latency", about)
    print(f"{cpu_name()}; runtime {args.runtime}", flush=True)
    found = [run(structure, args.runtime, args.held_out, args.candidates)
             for structure in STRUCTURES[:1 if args.quick else None]]
    results.figures = {"runtime": args.runtime, "results": found}
    results.add(table(found, args.runtime))
    results.add(ratio_table(found))
    for note in noise_notes(found):
        results.add(note)
    met = [r["structure"] for r in found if r["errors"]["within_10_percent"] >= GOAL_SHARE]
    met_ratio = [r["structure"] for r in found if r["ratio_errors"]["within_10_percent"] >= GOAL_SHARE]
    results.add(f"Goal: at least {GOAL_SHARE:.0%} of the held-out predictions within ±{GOAL_WITHIN:.0%} of the "
                f"median measured in the fit's sitting: met for {', '.join(met) or 'none'} of {len(found)} structures; as latency over "
                f"the base's timed in the same rounds, for {', '.join(met_ratio) or 'none'}.")
    results.write()


if __name__ == "__main__":
    main()
