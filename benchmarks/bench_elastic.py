"""Train once, deploy any width: an elastic googlenet_mini against the same networks trained alone, on cluttered_digits.

    make bench-elastic
    python benchmarks/bench_elastic.py [--quick]

Everything below is fixed before anything runs. The elastic widths: those of the space `cluttered_widths` up to
the base's own (0.5, 0.75 and 1x every module width), so the largest network is googlenet_mini itself. For each of
SEEDS, googlenet_mini is trained EPOCHS epochs normally (Adam 3e-3, batch 64, `train`) and elastic the same epochs
(`TrainConfig(elastic=...)`, SAMPLES random children a step besides the largest and the smallest), each timed.
The children: the width-multiplier networks at the frontier benchmark's three multiply-add budgets (30, 50 and
70 % of the way from the space's cheapest point to the base), each (i) taken from each elastic parent
(`narrow(..., importance="first")`, batch norm recalibrated on 20 batches of 64, nothing trained), (ii) narrowed
from each normally trained parent the same way (channels of largest L1 norm), (iii) trained alone from scratch for
EPOCHS epochs with each of SEEDS; all scored on the 2,000 validation images. Iso-cost ranking: the frontier
benchmark's iso-cost points (its draws, made again) taken from the first elastic parent as they are, Kendall tau
against the frontier's long-trained references (benchmarks/results/bench_frontier.json), beside its proxies'.
Goals: the elastic parent within 1 point of the normal one; each child within 1 point of the same network trained
alone; elastic training at most 4x the normal training's wall time (SAMPLES = 2); a child taken and scored in at
most 5 s. Writes benchmarks/results/bench_elastic.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import inception_keras  # noqa: E402,F401  first: turns oneDNN on where TensorFlow would not (cpu.py)
from benchlib import Results, cpu_name  # noqa: E402
from benchlib import about as benchlib_about  # noqa: E402

EPOCHS, SEEDS, SAMPLES = 8, (0, 1), 2
RECALIBRATE = 20


def trained(bench, spec, seed: int, epochs: int, elastic=None):
    from inception_keras.train import TrainConfig, train

    config = TrainConfig(epochs=epochs, optimizer="adam", learning_rate=3e-3, ema=False, seed=seed, elastic=elastic,
                         elastic_samples=SAMPLES)
    model, result = train(spec, bench.data, None, config, verbose=0)
    return model, result.wall_seconds


def child_accuracy(bench, parent, spec, child_spec, importance: str) -> tuple[float, float]:
    """(accuracy, seconds) of `child_spec` taken from `parent` and recalibrated, nothing trained."""
    from inception_keras.inherit import narrow, recalibrate_batch_norm

    start = time.perf_counter()
    child = narrow(parent, spec, child_spec, importance=importance)
    recalibrate_batch_norm(child, bench.recal_ds, RECALIBRATE)
    accuracy = bench.accuracy(child)
    return accuracy, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 training images, 1 epoch, 1 seed")
    args = parser.parse_args()
    import bench_frontier as frontier
    from inception_keras import network_cost, scale_to_budget
    from search.budget import PointCost, cheapest

    start = time.perf_counter()
    print(f"{cpu_name()}; elastic googlenet_mini on cluttered_digits", flush=True)
    bench = frontier.Bench(args.quick)
    base, space = bench.base, bench.space
    widths = frontier.elastic_widths(space)
    epochs, seeds = (1, SEEDS[:1]) if args.quick else (EPOCHS, SEEDS)
    point_cost = PointCost(space)
    cheapest_macs = point_cost(cheapest(point_cost, (0.0, 1.0)))[1]
    base_macs = network_cost(base).inference_macs
    children = [(fraction, scale_to_budget(base, max_macs=round(cheapest_macs + fraction *
                                                                 (base_macs - cheapest_macs)))[0])
                for fraction in frontier.FRACTIONS]
    payload = {"settings": {"epochs": epochs, "seeds": list(seeds), "samples": SAMPLES, "quick": args.quick},
               "parents": [], "children": []}
    parents = []
    for seed in seeds:
        normal, normal_seconds = trained(bench, base, seed, epochs)
        elastic, elastic_seconds = trained(bench, base, seed, epochs, widths)
        parents.append((normal, elastic))
        entry = {"seed": seed, "normal": bench.accuracy(normal), "elastic": bench.accuracy(elastic),
                 "normal_seconds": normal_seconds, "elastic_seconds": elastic_seconds}
        payload["parents"].append(entry)
        print(f"seed {seed}: {entry}", flush=True)
    for fraction, spec in children:
        taken = [child_accuracy(bench, elastic, base, spec, "first") for _, elastic in parents]
        narrowed = [child_accuracy(bench, normal, base, spec, "l1")[0] for normal, _ in parents]
        alone = [bench.accuracy(trained(bench, spec, seed, epochs)[0]) for seed in seeds]
        entry = {"fraction": fraction, "macs": network_cost(spec).inference_macs,
                 "params": network_cost(spec).inference_params, "elastic": [a for a, _ in taken],
                 "seconds": [s for _, s in taken], "narrowed": narrowed, "alone": alone}
        payload["children"].append(entry)
        print(f"child {fraction}: {entry}", flush=True)
    payload["iso_cost"] = iso_cost(bench, space, parents[0][1], base)
    payload["seconds"] = round(time.perf_counter() - start, 1)
    report(payload)


def iso_cost(bench, space, elastic, base) -> dict | None:
    """The frontier benchmark's iso-cost points taken from `elastic` as they are, against its references."""
    import bench_frontier as frontier
    from inception_keras import network_cost
    from search.budget import PointCost, cheapest

    path = frontier.RESULTS_PATH
    found = json.loads(path.read_text(encoding="utf-8")).get("figures", {}) if path.exists() else {}
    iso = found.get("iso_cost")
    if not iso:
        return None
    point_cost = PointCost(space)
    cheapest_macs = point_cost(cheapest(point_cost, (0.0, 1.0)))[1]
    budget = round(cheapest_macs + frontier.ISO_FRACTION * (network_cost(base).inference_macs - cheapest_macs))
    if budget != iso["budget_macs"]:
        return None
    points = frontier.draw(space, round((1 - frontier.ISO_BAND) * budget), round((1 + frontier.ISO_BAND) * budget),
                           frontier.ISO_K, frontier.DRAW_SEED + 100)
    scores = [child_accuracy(bench, elastic, base, point, "first")[0] for point in points]
    mean_reference = [sum(r) / len(r) for r in iso["references"]]
    return {"scores": scores, "tau": frontier.kendall(scores, mean_reference),
            "proxies": {name: p["tau"] for name, p in iso["proxies"].items()}}


def mean(values) -> float:
    return sum(values) / len(values)


def report(payload: dict) -> None:
    about = benchlib_about(Path(__file__).name, __doc__, {"EPOCHS": EPOCHS, "SEEDS": SEEDS, "SAMPLES": SAMPLES})
    results = Results("bench_elastic", "Train once, deploy any width", "bench-elastic", about)
    parents = payload["parents"]
    normal, elastic = mean([p["normal"] for p in parents]), mean([p["elastic"] for p in parents])
    ratio = mean([p["elastic_seconds"] / p["normal_seconds"] for p in parents])
    results.add(["| googlenet_mini | validation accuracy (mean of seeds) | wall seconds (mean) |", "|---|---:|---:|",
                 f"| trained normally | {normal:.4f} | {mean([p['normal_seconds'] for p in parents]):.0f} |",
                 f"| trained elastic (the largest network) | {elastic:.4f} | "
                 f"{mean([p['elastic_seconds'] for p in parents]):.0f} |"])
    rows = ["| child (budget of the way from the cheapest point to the base) | multiply-adds | "
            "from the elastic parent, "
            "recalibrated only | from the normal parent, recalibrated only | trained alone | elastic - alone | "
            "seconds to take and score |", "|---|---:|---:|---:|---:|---:|---:|"]
    within = 0
    for child in payload["children"]:
        gap = mean(child["elastic"]) - mean(child["alone"])
        within += gap >= -0.01
        rows.append(f"| width multiplier at {child['fraction']:.0%} | {child['macs']:,} | {mean(child['elastic']):.4f} "
                    f"| {mean(child['narrowed']):.4f} | {mean(child['alone']):.4f} | {gap:+.4f} | "
                    f"{mean(child['seconds']):.1f} |")
    results.add(rows)
    iso = payload.get("iso_cost")
    iso_text = (f"Iso-cost ranking (the frontier benchmark's points): τ {iso['tau']} for the elastic children as "
                f"they are, against {', '.join(f'{v} ({k})' for k, v in iso['proxies'].items())}."
                if iso else "Iso-cost ranking: not measured (no full bench_frontier results to compare with).")
    results.add(f"Goals: the elastic parent {elastic - normal:+.4f} against the normal one (goal: within 1 point); "
                f"{within} of {len(payload['children'])} children within 1 point of the same network trained alone; "
                f"elastic training {ratio:.2f}x the normal wall time (goal ≤ 4x); a child taken and scored in "
                f"{max(s for c in payload['children'] for s in c['seconds']):.1f} s at most (goal ≤ 5 s). {iso_text} "
                f"Total {payload['seconds'] / 60:.0f} min.")
    results.figures = payload
    results.write()


if __name__ == "__main__":
    main()
