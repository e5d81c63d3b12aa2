"""Train once, deploy any width: an elastic googlenet_mini against the same networks trained alone, on cluttered_digits.

    make bench-elastic
    python benchmarks/bench_elastic.py [--quick] [--cost] [--trials ELASTIC_RUN] [--every-width [--stem]]

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

The cost in one sitting (`--cost`, added to the results already written): googlenet_mini trained COST_EPOCHS epochs
normally, elastic with the children's weights cut to their widths (`ElasticTrainer(slicing=True)`, TensorFlow
only), elastic with masked children (`slicing=False`, the default), then normally again, one after another in
one process; each elastic training's wall time over the mean of the two normal ones. Then the same for one
compute-bound network, the faithful googlenet at STEP_SIZE px (every module width elastic at 1/2, 3/4 and 1 of
its own), in milliseconds per training step at batch STEP_BATCH on synthetic images, the first epoch (tracing)
excluded.

A search's trials on an elastic parent (`--trials RUN`, RUN an elastic parent's run directory, e.g. the one
`bench_frontier.py --elastic` trains; added to the results already written): `run_search` of TRIALS trials on
`cluttered_widths` under the frontier benchmark's 50 % multiply-add budget, seed 0, scored as they are (20
batch-norm batches of 64, no step), twice in one process: each child scored through masks (`ChildScorer`, the
default: no model built, the child's batch-norm statistics saved as its checkpoint), then each narrowed,
recalibrated and evaluated as its own Keras model, its weights saved (the reference); each trial's seconds
(`train_seconds`) and the largest difference between the two arms' accuracies.

Children that are points of the space (`--space-children RUN`, RUN an elastic parent's run directory, added to the
results already written): for each of SPACE_FRACTIONS of the base's multiply-adds, the base scaled by the largest
multiplier whose network, every elastic width moved down to the largest choice under it (the smallest choice where
none is), is within that budget: that network, whose widths are all widths the parent was trained at; each taken
from RUN's parent (recalibrated only) and trained alone for EPOCHS epochs with each of SEEDS. The width-multiplier children above have widths
between the choices (rounded), which a parent drawn from the choices never trained.

Every width (`--every-width`, added to the results already written): an elastic parent whose children's widths are
drawn from every width between each one's smallest and largest choice (`ElasticWidths.every_width`, `train
--elastic-every-width`), seed 0, otherwise the recipe above; its own accuracy, the same width-multiplier children
recalibrated only, and the iso-cost tau, beside seed 0's parent drawn from the choices alone. With `--stem`
(`--every-width --stem`): the stem's convolution elastic too, every width from 1/2 of its filters to all
(`ElasticWidths.with_stem`, `train --elastic-stem`), as a width multiplier narrows it, with each of SEEDS (those
the results lack); also the children that are points of the space from those parents.
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
from benchlib import Results, command_line, cpu_name  # noqa: E402
from benchlib import about as benchlib_about  # noqa: E402

EPOCHS, SEEDS, SAMPLES = 8, (0, 1), 2
COST_EPOCHS = 2
STEP_SIZE, STEP_BATCH, STEP_STEPS = 112, 16, 6
RECALIBRATE = 20
TRIALS = 10
SPACE_FRACTIONS = (0.3, 0.5, 0.7)  # of the base's multiply-adds: `--space-children`


def trained(bench, spec, seed: int, epochs: int, elastic=None, slicing: bool | None = None):
    from inception_keras.train import TrainConfig, train

    config = TrainConfig(epochs=epochs, optimizer="adam", learning_rate=3e-3, ema=False, seed=seed, elastic=elastic,
                         elastic_samples=SAMPLES)
    if slicing is None:
        model, result = train(spec, bench.data, None, config, verbose=0)
    else:  # the trainer `train` makes, with its children computed one way
        import inception_keras.elastic as elastic_module

        real = elastic_module.ElasticTrainer

        class Trainer(real):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, slicing=slicing, **kwargs)

        elastic_module.ElasticTrainer = Trainer
        try:
            model, result = train(spec, bench.data, None, config, verbose=0)
        finally:
            elastic_module.ElasticTrainer = real
    return model, result.wall_seconds


def cost(bench, widths, epochs: int) -> dict:
    """Wall seconds of normal, sliced elastic, masked elastic and normal training again, in one process."""
    found = {}
    for name, kwargs in (("normal", {}), ("sliced", {"elastic": widths, "slicing": True}),
                         ("masked", {"elastic": widths, "slicing": False}), ("normal again", {})):
        found[name] = trained(bench, bench.base, 0, epochs, **kwargs)[1]
        print(f"cost: {name}: {found[name]:.1f} s", flush=True)
    return {"epochs": epochs, "seconds": found, **ratios(found), "googlenet": step_cost()}


def ratios(found: dict) -> dict:
    """Each elastic measurement of `found` over the mean of its two normal ones."""
    normal = (found["normal"] + found["normal again"]) / 2
    return {"sliced_ratio": found["sliced"] / normal, "masked_ratio": found["masked"] / normal}


def step_cost() -> dict:
    """Milliseconds per training step of googlenet at STEP_SIZE px: normal, sliced elastic, masked, normal again."""
    import keras
    import numpy as np
    import tensorflow as tf

    from inception_keras import build_model, get_spec
    from inception_keras.elastic import ElasticTrainer, ElasticWidths
    from inception_keras.inherit_rules import WIDTHS
    from inception_keras.train import TrainConfig, compile_model, output_names

    base = get_spec("googlenet").with_input_size(STEP_SIZE)
    modules = [module for stage in base.stages for module in stage.modules]
    widths = ElasticWidths.from_choices({(name, field): {max(1, width * q // 4) for q in (2, 3, 4)}
                                         for name, module in zip(base.module_names(), modules)
                                         for field, width in zip(WIDTHS, module.widths) if width})
    names, classes = output_names(base), base.head.classes
    count = STEP_BATCH * STEP_STEPS
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (count, *base.input_shape)).astype("float32")
    labels = keras.utils.to_categorical(rng.integers(0, classes, count), classes)
    data = tf.data.Dataset.from_tensor_slices((images, {name: labels for name in names})).batch(STEP_BATCH).cache()
    found = {}
    for name, make in (("normal", lambda: build_model(base)),
                       ("sliced", lambda: ElasticTrainer(build_model(base), widths, slicing=True)),
                       ("masked", lambda: ElasticTrainer(build_model(base), widths, slicing=False)),
                       ("normal again", lambda: build_model(base))):
        keras.utils.set_random_seed(0)
        model = make()
        compile_model(model, base, TrainConfig(epochs=1, optimizer="adam", learning_rate=1e-3, ema=False),
                      STEP_STEPS)
        model.fit(data, epochs=1, verbose=0)  # traced
        start = time.perf_counter()
        model.fit(data, epochs=2, verbose=0)
        found[name] = (time.perf_counter() - start) / (2 * STEP_STEPS) * 1e3
        print(f"cost: googlenet at {STEP_SIZE} px: {name}: {found[name]:.0f} ms a step", flush=True)
    return {"size": STEP_SIZE, "batch": STEP_BATCH, "ms": found, **ratios(found)}


def budget_macs(bench, fraction: float) -> int:
    """The multiply-adds `fraction` of the way from the space's cheapest point to the base (the frontier
    benchmark's budgets)."""
    from inception_keras import network_cost
    from search.budget import PointCost, cheapest

    point_cost = PointCost(bench.space)
    cheapest_macs = point_cost(cheapest(point_cost, (0.0, 1.0)))[1]
    return round(cheapest_macs + fraction * (network_cost(bench.base).inference_macs - cheapest_macs))


def multiplier_children(bench) -> list:
    """(fraction, spec) of the width-multiplier networks at the frontier benchmark's multiply-add budgets."""
    import bench_frontier as frontier
    from inception_keras import scale_to_budget

    return [(fraction, scale_to_budget(bench.base, max_macs=budget_macs(bench, fraction))[0])
            for fraction in frontier.FRACTIONS]


def space_children(bench, widths) -> list:
    """(fraction, spec) per SPACE_FRACTIONS of the base's multiply-adds: the base scaled by the largest multiplier α
    (a multiple of 1e-4) whose network, each elastic width moved down to the largest choice under it (the smallest
    where none is), is within the budget; that network (the smallest point where none is)."""
    from inception_keras import network_cost, scale_widths

    def snapped(multiplier: float):
        modules, changes = scale_widths(bench.base, multiplier).modules_by_name(), {}
        for module, width, values in widths.choices:
            target = getattr(modules[module], width)
            changes.setdefault(module, {})[width] = max((v for v in values if v <= target), default=values[0])
        return bench.base.with_module_widths(changes, "space child")

    found = []
    for fraction in SPACE_FRACTIONS:
        budget = int(fraction * network_cost(bench.base).inference_macs)
        low, high = 100, 10_000  # multiples of 1e-4: the largest that fits, by bisection (costs grow with α)
        if network_cost(snapped(low / 1e4)).inference_macs > budget:
            found.append((fraction, widths.smallest(bench.base)))
            continue
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if network_cost(snapped(middle / 1e4)).inference_macs <= budget else \
                (low, middle - 1)
        found.append((fraction, snapped(low / 1e4)))
    return found


def space_children_accuracy(bench, widths, run: Path, epochs: int, seeds) -> dict:
    """`space_children` taken from the elastic parent in `run` (recalibrated only) and trained alone per seed."""
    import keras

    from inception_keras import network_cost

    parent = keras.saving.load_model(run / "best.keras", safe_mode=True)
    found = {"parent": str(run), "parent_accuracy": bench.accuracy(parent),
             "base_macs": network_cost(bench.base).inference_macs, "children": []}
    for fraction, spec in space_children(bench, widths):
        entry = {"fraction": fraction, "macs": network_cost(spec).inference_macs,
                 "params": network_cost(spec).inference_params,
                 "elastic": child_accuracy(bench, parent, bench.base, spec, "first")[0],
                 "alone": [bench.accuracy(trained(bench, spec, seed, epochs)[0]) for seed in seeds]}
        found["children"].append(entry)
        print(f"space child {fraction}: {entry}", flush=True)
    return found


def every_width(bench, widths, epochs: int, stem: bool = False, seed: int = 0) -> dict:
    """An elastic parent drawing every width between the choices (with `stem`, the stem's too): its accuracy, its
    width-multiplier children and (with `stem`) the children that are points of the space, recalibrated only, the
    iso-cost tau."""
    model, seconds = trained(bench, bench.base, seed, epochs,
                             (widths.with_stem(bench.base) if stem else widths).every_width())
    children = [child_accuracy(bench, model, bench.base, spec, "first")[0] for _, spec in multiplier_children(bench)]
    iso = iso_cost(bench, bench.space, model, bench.base)
    found = {"seed": seed, "epochs": epochs, "parent": bench.accuracy(model), "seconds": seconds,
             "children": children, "iso_tau": iso["tau"] if iso else None, "cpu": cpu_name()}
    if stem:
        found["space_children"] = [child_accuracy(bench, model, bench.base, spec, "first")[0]
                                   for _, spec in space_children(bench, widths)]
    print(f"every width{' and the stem' if stem else ''}: {found}", flush=True)
    return found


STEM_KEYS = ("seed", "parent", "seconds", "children", "space_children", "iso_tau", "cpu")


def every_width_stem(bench, widths, epochs: int, seeds, found: dict | None) -> dict:
    """`every_width` with the stem elastic for each of `seeds` that `found` (lists per key of STEM_KEYS, one entry a
    seed) lacks, added to it."""
    found = found or {key: [] for key in STEM_KEYS}
    for seed in seeds:
        if seed not in found["seed"]:
            entry = every_width(bench, widths, epochs, stem=True, seed=seed)
            for key in STEM_KEYS:
                found[key].append(entry[key])
    return found


def references(bench, widths, epochs: int, seeds) -> dict:
    """On this machine, per seed: googlenet_mini trained normally (accuracy, seconds), the width-multiplier children and
    the children that are points of the space trained alone: the stem arm's references where its machine is not the
    main run's."""
    found = {"cpu": cpu_name(), "seed": list(seeds), "normal": [], "normal_seconds": [], "alone": [],
             "space_alone": []}
    for seed in seeds:
        model, seconds = trained(bench, bench.base, seed, epochs)
        found["normal"].append(bench.accuracy(model))
        found["normal_seconds"].append(seconds)
        found["alone"].append([bench.accuracy(trained(bench, spec, seed, epochs)[0])
                               for _, spec in multiplier_children(bench)])
        found["space_alone"].append([bench.accuracy(trained(bench, spec, seed, epochs)[0])
                                     for _, spec in space_children(bench, widths)])
        print(f"references, seed {seed}: {found}", flush=True)
    return found


def trial_seconds(bench, run: Path) -> dict:
    """A search's trials on the elastic parent in `run`, children scored through masks, then as Keras models."""
    import tempfile

    import bench_frontier as frontier
    from inception_keras.child_scoring import ChildScorer
    from inception_keras.train import TrainConfig
    from search.driver import run_search

    budget = budget_macs(bench, frontier.FRACTIONS[1])
    space = bench.space.with_budget(max_macs=budget)
    found = {}
    supports = ChildScorer.supports
    for arm in ("masked", "keras models"):
        if arm == "keras models":
            ChildScorer.supports = lambda self, child: False  # every child narrowed, recalibrated and evaluated
        try:
            with tempfile.TemporaryDirectory(prefix="bench-elastic-trials-") as directory:
                outcome = run_search(space, bench.data, directory, max_trials=TRIALS, epochs=1, overwrite=True,
                                     seed=0, config=TrainConfig(epochs=1, optimizer="adam", learning_rate=3e-3,
                                                                ema=False),
                                     parent=run, steps=0, recalibrate_batches=RECALIBRATE)
        finally:
            ChildScorer.supports = supports
        records = sorted(outcome.records, key=lambda record: int(record["trial_id"]))
        found[arm] = {"seconds": [record["train_seconds"] for record in records],
                      "accuracy": [record["val_accuracy"] for record in records],
                      "values": [record["values"] for record in records]}
        print(f"trials, {arm}: {found[arm]['seconds']} s, {found[arm]['accuracy']}", flush=True)
    same = [index for index, (a, b) in enumerate(zip(found["masked"]["values"], found["keras models"]["values"]))
            if a == b]
    differences = [abs(found["masked"]["accuracy"][i] - found["keras models"]["accuracy"][i]) for i in same]
    return {"parent": str(run), "budget_macs": budget, "trials": TRIALS, "arms": found, "same_points": len(same),
            "largest_accuracy_difference": max(differences, default=None)}


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
    parser.add_argument("--cost", action="store_true",
                        help="only the cost of elastic training, sliced and masked, against normal training in one "
                             "sitting, added to benchmarks/results/bench_elastic.json")
    parser.add_argument("--every-width", action="store_true",
                        help="only an elastic parent drawing every width between the choices (seed 0), added to "
                             "benchmarks/results/bench_elastic.json")
    parser.add_argument("--stem", action="store_true",
                        help="with --every-width: the stem's convolutions elastic too (`ElasticWidths.with_stem`)")
    parser.add_argument("--space-children", metavar="RUN", type=Path,
                        help="only children that are points of the space, taken from the elastic parent trained in "
                             "RUN and trained alone, added to benchmarks/results/bench_elastic.json")
    parser.add_argument("--trials", metavar="RUN", type=Path,
                        help="only the seconds of a search's trials on the elastic parent trained in RUN, scored "
                             "through masks and as Keras models, added to benchmarks/results/bench_elastic.json")
    args = parser.parse_args()
    if args.stem and not args.every_width:
        parser.error("--stem goes with --every-width")
    import bench_frontier as frontier
    from inception_keras import network_cost

    start = time.perf_counter()
    print(f"{cpu_name()}; elastic googlenet_mini on cluttered_digits", flush=True)
    bench = frontier.Bench(args.quick)
    base, space = bench.base, bench.space
    widths = frontier.elastic_widths(space)
    epochs, seeds = (1, SEEDS[:1]) if args.quick else (EPOCHS, SEEDS)
    if args.cost or args.trials or args.every_width or args.space_children:
        path = HERE / "results" / "bench_elastic.json"
        written = json.loads(path.read_text(encoding="utf-8"))
        payload = written["figures"]
        flag = "--cost" if args.cost else "--trials" if args.trials else "--stem" if args.stem else \
            "--every-width" if args.every_width else "--space-children"
        if args.cost:
            payload["cost"] = cost(bench, widths, 1 if args.quick else COST_EPOCHS)
        elif args.trials:
            payload["trials"] = trial_seconds(bench, args.trials)
        elif args.space_children:
            payload["space_children"] = space_children_accuracy(bench, widths, args.space_children, epochs, seeds)
        elif args.stem:
            found = every_width_stem(bench, widths, epochs, seeds, payload.get("every_width_stem"))
            payload["every_width_stem"] = found
            if set(found["cpu"]) != {written["machine"]["cpu"]} and "references" not in found:
                found["references"] = references(bench, widths, epochs, seeds)
        else:
            payload["every_width"] = every_width(bench, widths, epochs)
        made = [c for c in payload.get("commands") or ["python benchmarks/bench_elastic.py"]
                if flag not in c or (flag == "--every-width" and "--stem" in c)]
        payload["commands"] = [*made, command_line()]
        return report(payload, written["machine"] if args.stem else None)
    children = multiplier_children(bench)
    payload = {"settings": {"epochs": epochs, "seeds": list(seeds), "samples": SAMPLES, "quick": args.quick,
                            "children": "masked"},  # ElasticTrainer's default
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
    payload["commands"] = [command_line()]
    report(payload)


def iso_cost(bench, space, elastic, base) -> dict | None:
    """The frontier benchmark's iso-cost points taken from `elastic` as they are, against its references."""
    import bench_frontier as frontier

    path = frontier.RESULTS_PATH
    found = json.loads(path.read_text(encoding="utf-8")).get("figures", {}) if path.exists() else {}
    iso = found.get("iso_cost")
    if not iso:
        return None
    budget = budget_macs(bench, frontier.ISO_FRACTION)
    if budget != iso["budget_macs"]:
        return None
    points = frontier.draw(space, round((1 - frontier.ISO_BAND) * budget), round((1 + frontier.ISO_BAND) * budget),
                           frontier.ISO_K, frontier.DRAW_SEED + 100)
    scores = [child_accuracy(bench, elastic, base, point, "first")[0] for point in points]
    mean_reference = [sum(r) / len(r) for r in iso["references"]]
    return {"scores": scores, "tau": frontier.kendall(scores, mean_reference),
            "proxies": {name: p["tau"] for name, p in iso["proxies"].items()}}


def stem_text(payload: dict) -> str:
    """What the stem arm found: its children against the same networks trained alone, on its own machine where it
    measured them there (`references`), else the main run's."""
    found = stem_means(payload["every_width_stem"])
    references = payload["every_width_stem"].get("references")
    if references:
        alone = [mean(column) for column in zip(*references["alone"])]
        space_alone = [mean(column) for column in zip(*references["space_alone"])]
        where = "on the same machine"
    else:
        alone = [mean(child["alone"]) for child in payload["children"]]
        space_alone = [mean(child["alone"]) for child in (payload.get("space_children") or {}).get("children", [])]
        where = "on the main run's machine"
    gaps = [value - reference for value, reference in zip(found["children"], alone)]
    space = [value - reference for value, reference in zip(found.get("space_children", []), space_alone)]
    text = (f"With the stem elastic too (mean of seeds {', '.join(map(str, found['seed']))}; trained on "
            f"{'; '.join(sorted(set(found['cpu'])))}, {found['seconds']:.0f} s each): the parent "
            f"{found['parent']:.4f}")
    if references:
        text += (f" against {mean(references['normal']):.4f} trained normally there "
                 f"({found['seconds'] / mean(references['normal_seconds']):.2f}x its wall time)")
    text += (f"; {sum(gap >= -0.01 for gap in gaps)} of {len(gaps)} width-multiplier children no more than 1 point "
             f"below the same network trained alone {where} (goal; " + ", ".join(f"{a:.4f}" for a in alone) +
             f"), elastic - alone {min(gaps):+.4f} to {max(gaps):+.4f} (a width multiplier narrows the stem's "
             f"convolution too, which a parent whose stem was trained at one width never trained to stand alone)")
    if space:
        text += (f"; the children that are points of the space {min(space):+.4f} to {max(space):+.4f} against the "
                 f"same networks trained alone {where}")
    return text + f"; the iso-cost τ {found['iso_tau']}."


def stem_means(found: dict) -> dict:
    """`every_width_stem`'s lists as means over its seeds (the seeds and CPUs kept as lists)."""
    def average(values):
        return [mean(column) for column in zip(*values)] if isinstance(values[0], list) else mean(values)

    taus = [tau for tau in found["iso_tau"] if tau is not None]
    return {**{key: average(found[key]) for key in ("parent", "seconds", "children", "space_children")},
            "iso_tau": round(mean(taus), 4) if taus else None, "seed": found["seed"], "cpu": found["cpu"]}


def every_width_row(found: dict, label: str) -> str:
    """A row of the every-width table: the parent, its width-multiplier children, the iso-cost tau."""
    return (f"| {label} | {found['parent']:.4f} | " + " | ".join(f"{value:.4f}" for value in found["children"])
            + f" | {found['iso_tau'] if found['iso_tau'] is not None else '—'} |")


def mean(values) -> float:
    return sum(values) / len(values)


def report(payload: dict, machine_of: dict | None = None) -> None:
    about = benchlib_about(Path(__file__).name, __doc__, {
        "COST_EPOCHS": COST_EPOCHS, "EPOCHS": EPOCHS, "SEEDS": SEEDS, "SAMPLES": SAMPLES, "STEP_SIZE": STEP_SIZE,
        "STEP_BATCH": STEP_BATCH, "SPACE_FRACTIONS": SPACE_FRACTIONS})
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
                f"elastic training {ratio:.2f}x the normal wall time "
                f"({payload['settings'].get('children', 'masked')} children; goal ≤ 4x); a child taken and scored in "
                f"{max(s for c in payload['children'] for s in c['seconds']):.1f} s at most (goal ≤ 5 s). {iso_text} "
                f"Total {payload['seconds'] / 60:.0f} min.")
    if "cost" in payload:
        found = payload["cost"]
        results.add(f"The cost in one sitting ({found['epochs']} epochs each, seed 0): normal training "
                    f"{found['seconds']['normal']:.0f} s and {found['seconds']['normal again']:.0f} s; elastic with "
                    f"the children's weights cut to their widths {found['seconds']['sliced']:.0f} s, "
                    f"{found['sliced_ratio']:.2f}x; with masked children (the default) "
                    f"{found['seconds']['masked']:.0f} s, **{found['masked_ratio']:.2f}x** (goal ≤ 4x).")
        if "googlenet" in found:
            step = found["googlenet"]
            results.add(f"googlenet at {step['size']} px, batch {step['batch']} (compute-bound): a normal step "
                        f"{step['ms']['normal']:.0f} and {step['ms']['normal again']:.0f} ms; elastic with cut "
                        f"weights {step['ms']['sliced']:.0f} ms, {step['sliced_ratio']:.2f}x; with masked "
                        f"children {step['ms']['masked']:.0f} ms, **{step['masked_ratio']:.2f}x**.")
    if "every_width" in payload:
        found, first = payload["every_width"], payload["parents"][0]
        rows = ["| elastic parent, recalibrated only | the parent | " + " | ".join(
                    f"width multiplier at {child['fraction']:.0%}" for child in payload["children"])
                + " | iso-cost τ |", "|---|---:|" + "---:|" * len(payload["children"]) + "---:|",
                f"| children drawn from the choices (the table above, seed {first['seed']}) | {first['elastic']:.4f} | "
                + " | ".join(f"{child['elastic'][0]:.4f}" for child in payload["children"])
                + f" | {payload['iso_cost']['tau'] if payload.get('iso_cost') else '—'} |",
                every_width_row(found, "children drawn from every width between (`--elastic-every-width`)"),
                *([every_width_row(stem_means(payload["every_width_stem"]), "children drawn from every width "
                                   "between, the stem's too (`--elastic-every-width --elastic-stem`; mean of seeds "
                                   f"{', '.join(map(str, payload['every_width_stem']['seed']))})")]
                  if "every_width_stem" in payload else []),
                "| trained alone (mean of the seeds) | — | "
                + " | ".join(f"{mean(child['alone']):.4f}" for child in payload["children"]) + " | — |"]
        references = (payload.get("every_width_stem") or {}).get("references")
        if references:
            rows.append(f"| trained alone on the stem row's machine (mean of the seeds; normally trained parent) | "
                        f"{mean(references['normal']):.4f} | " + " | ".join(
                            f"{mean(column):.4f}" for column in zip(*references["alone"])) + " | — |")
        results.add(rows)
    if "every_width_stem" in payload:
        results.add(stem_text(payload))
    if "space_children" in payload:
        found = payload["space_children"]
        stem = stem_means(payload["every_width_stem"])["space_children"] if "every_width_stem" in payload else None
        rows = ["| child: a point of the space (every width a trained choice) | multiply-adds (of the base's) | "
                "from the elastic parent, recalibrated only | trained alone (mean ± std of the seeds) | "
                "elastic - alone |" + (" from the every-width parents with an elastic stem (mean) |" if stem else ""),
                "|---|---:|---:|---:|---:|" + ("---:|" if stem else "")]
        within = 0
        for index, child in enumerate(found["children"]):
            alone = child["alone"]
            spread = (sum((a - mean(alone)) ** 2 for a in alone) / max(1, len(alone) - 1)) ** 0.5
            gap = child["elastic"] - mean(alone)
            within += gap >= -0.01
            rows.append(f"| at {child['fraction']:.0%} of the base's multiply-adds | {child['macs']:,} "
                        f"({child['macs'] / found['base_macs']:.0%}) | {child['elastic']:.4f} | {mean(alone):.4f} ± "
                        f"{spread:.4f} | {gap:+.4f} |" + (f" {stem[index]:.4f} |" if stem else ""))
        results.add(rows)
        gaps = [child["elastic"] - mean(child["alone"]) for child in found["children"]]
        results.add(f"The elastic parent of seed 0 ({found['parent_accuracy']:.4f}; children drawn from the choices): "
                    f"{within} of {len(found['children'])} children that are points of the space no more than 1 point "
                    f"below the same network trained alone (goal); elastic - alone {min(gaps):+.4f} to "
                    f"{max(gaps):+.4f}.")
    if "trials" in payload:
        found = payload["trials"]
        rows = ["| a search's trial on the elastic parent (scored as it is) | first trial, s | later trials: median "
                "s | max s |", "|---|---:|---:|---:|"]
        for arm, label in (("masked", "children scored through masks (`ChildScorer`, the default)"),
                           ("keras models", "each child narrowed, recalibrated and evaluated as a Keras model")):
            seconds = found["arms"][arm]["seconds"]
            rows.append(f"| {label} | {seconds[0]:.1f} | {sorted(seconds[1:])[len(seconds[1:]) // 2]:.1f} | "
                        f"{max(seconds[1:]):.1f} |")
        results.add(rows)
        masked = found["arms"]["masked"]["seconds"]
        difference = found["largest_accuracy_difference"]
        results.add(f"{found['trials']} trials of `cluttered_widths` under {found['budget_macs']:,} multiply-adds "
                    f"on the elastic parent, seed 0: the two arms drew the same {found['same_points']} points"
                    f"{f', whose accuracies differ by at most {difference:.4f}' if difference is not None else ''}; "
                    f"a trial through masks takes at most "
                    f"**{max(masked[1:]):.1f} s** after the first ({masked[0]:.1f} s, which traces the scorer's two "
                    f"models), {sorted(masked[1:])[len(masked[1:]) // 2]:.1f} s the median (goal ≤ 5 s).")
    results.figures = payload
    results.write(command="; ".join(payload.get("commands", [])) or None, machine_of=machine_of)


if __name__ == "__main__":
    main()
