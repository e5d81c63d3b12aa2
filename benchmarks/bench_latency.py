"""How well the latency predictor (`inception_keras.export.latency`) predicts measured latency, in one sitting.

    make bench-latency
    python benchmarks/bench_latency.py [--runtime onnxruntime] [--held-out 20] [--candidates 24] [--quick]

For each structure, a predictor is fitted anew (`build_predictor(..., rebuild=True)`: random width variants of
the base, exported and timed in interleaved rounds), then HELD_OUT random points of a search space over that
structure, drawn with a fixed seed before anything is measured and none of them a fitting candidate, are
exported, timed in interleaved rounds twice together with the base (the two measurements' agreement is the
measurement's own noise, the ceiling of any prediction), and predicted against their mean; and as a ratio to the
base timed in the same rounds (what a budget of `0.6x` the base's latency uses), which cancels the machine's drift
between passes. The goal: at least 90 % of the
predictions within +-10 % of the measured median. Structures: googlenet_mini at 32 px (points of
`cluttered_bottlenecks` and `cluttered_widths`) and the faithful googlenet at 224 px (points of
`googlenet_widths`, every width of every module from 16 to 384), batch 1, the runtime's default threads.
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


def held_out(spaces: list, count: int, seed: int) -> list:
    """`count` random points of `spaces` (in turn), each space's base at its input size, drawn before anything runs."""
    rng = random.Random(seed)
    points = []
    for index in range(count):
        space = spaces[index % len(spaces)]
        values = {dim.name: rng.choice(dim.values) for dim in space.dimensions}
        points.append(space.spec_for(values).without_aux())
    return points


def run(structure: tuple, runtime: str, count: int, candidates: int, results: Results) -> dict:
    from inception_keras import get_spec, network_cost
    from inception_keras.export.latency import build_predictor, measure_many, relative_errors
    from search.space import get_space

    label, name, size, space_names = structure
    base = get_spec(name).with_input_size(size)
    spaces = [get_space(space).with_base(get_space(space).base.with_input_size(size)) for space in space_names]
    points = held_out(spaces, count, SEED)
    start = time.perf_counter()
    predictor = build_predictor(base, runtime, rebuild=True, candidates=candidates)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    # the base is timed in the same interleaved rounds as the points: a point's latency over the base's cancels
    # what the machine does between passes (what a budget given as a fraction of the base's latency needs)
    *first, first_base = [t.median_ms for t in measure_many([*points, base], runtime, progress=print)]
    *second, second_base = [t.median_ms for t in measure_many([*points, base], runtime, progress=print)]
    measure_seconds = time.perf_counter() - start
    measured = [(a + b) / 2 for a, b in zip(first, second)]
    predicted = [predictor.predict(point) for point in points]
    errors = relative_errors(predicted, measured)
    repeat = relative_errors(second, first)
    ratios = [(a / first_base + b / second_base) / 2 for a, b in zip(first, second)]
    ratio_errors = relative_errors([q / predictor.predict(base) for q in predicted], ratios)
    ratio_repeat = relative_errors([b / second_base for b in second], [a / first_base for a in first])
    rows = [{"macs": network_cost(p).inference_macs, "measured_ms": m, "first_ms": a, "second_ms": b,
             "predicted_ms": q, "ratio_to_base": r}
            for p, m, a, b, q, r in zip(points, measured, first, second, predicted, ratios)]
    return {"structure": label, "spaces": list(space_names), "fit": predictor.fit_error,
            "fit_seconds": round(fit_seconds, 1), "measure_seconds": round(measure_seconds, 1), "errors": errors,
            "repeat": repeat, "ratio_errors": ratio_errors, "ratio_repeat": ratio_repeat,
            "base_ms": [first_base, second_base], "base_predicted_ms": predictor.predict(base), "points": rows,
            "coefficients": dict(zip(predictor.to_dict()["features"], predictor.coefficients))}


def table(found: list[dict], runtime: str) -> list[str]:
    lines = [f"| structure ({runtime}, batch 1) | held-out points | measured ms | predictions within ±10 % | "
             f"median error | 90th pct error | max error | two measurements within ±10 % of each other | "
             f"fit: candidates, seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for result in found:
        errors, times = result["errors"], [row["measured_ms"] for row in result["points"]]
        lines.append(f"| {result['structure']} ({', '.join(result['spaces'])}) | {errors['count']} | "
                     f"{min(times):.3f}–{max(times):.3f} | **{errors['within_10_percent']:.0%}** | "
                     f"{errors['median_abs']:.1%} | {errors['p90_abs']:.1%} | {errors['max_abs']:.1%} | "
                     f"{result['repeat']['within_10_percent']:.0%} | {result['fit']['candidates']}, "
                     f"{result['fit_seconds']:.0f} s |")
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
                     f"within ±10 % of each other. Against the first pass alone {within['first']:.0%} of the "
                     f"predictions were within ±10 %, against the second {within['second']:.0%}; the fit on its own "
                     f"{result['fit']['candidates']} candidates, timed in one pass, "
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
    found = [run(structure, args.runtime, args.held_out, args.candidates, results)
             for structure in STRUCTURES[:1 if args.quick else None]]
    results.figures = {"runtime": args.runtime, "results": found}
    results.add(table(found, args.runtime))
    results.add(ratio_table(found))
    for note in noise_notes(found):
        results.add(note)
    met = [r["structure"] for r in found if r["errors"]["within_10_percent"] >= GOAL_SHARE]
    met_ratio = [r["structure"] for r in found if r["ratio_errors"]["within_10_percent"] >= GOAL_SHARE]
    results.add(f"Goal: at least {GOAL_SHARE:.0%} of the held-out predictions within ±{GOAL_WITHIN:.0%} of the "
                f"measured median: met for {', '.join(met) or 'none'} of {len(found)} structures; as latency over "
                f"the base's timed in the same rounds, for {', '.join(met_ratio) or 'none'}.")
    results.write()


if __name__ == "__main__":
    main()
