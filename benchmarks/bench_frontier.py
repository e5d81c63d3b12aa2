"""Does the search find a better allocation of widths than the obvious answer? One sitting on `cluttered_digits`.

    make bench-frontier
    python benchmarks/bench_frontier.py [--quick] [--elastic [--elastic-parent RUN]]

Everything below is fixed before anything runs (seeds, budgets, draws, epochs). A googlenet_mini parent is
trained PARENT_EPOCHS epochs (Adam 3e-3, seed 0). Three multiply-add budgets are set at FRACTIONS of the way from
the space's cheapest point to the base (googlenet_mini at 32 px and batch 1 is not a latency target: in ONNX
Runtime the whole space's predicted latency spans 6 %, under the machine's own drift between passes, see
bench_latency; the predicted and measured latency of each pick are reported). Under each, in the space
`cluttered_widths` (all six widths of every module at 0.5-1.5x the base), three arms pick a network:

- (a) the width multiplier: the base with every width scaled by the largest factor within the budget
  (`scale_to_budget`);
- (b) the best of TRIALS random points near the budget (multiply-adds within 90-100 % of it: uniform draws shrunk
  onto the budget as the search's sampler does), by the search's default proxy (inherited from the parent, batch
  norm recalibrated on 20 batches, no step);
- (c) the search's pick: `run_search` (random tuner, TRIALS trials, the same proxy, seed 0) under the budget.

Each pick is then trained the same way, FINAL_EPOCHS epochs from the parent's inherited weights (Adam 1e-3,
cosine decay, whole training split) with each of FINAL_SEEDS, and scored on the 2,000 validation images; its
latency is measured. The goal: (c) beats (a) by more than 2 standard deviations of the difference (std of each
mean: sample std / sqrt(seeds)) at 2 of the 3 budgets.

The elastic arm (the design change): a googlenet_mini parent trained elastic PARENT_EPOCHS epochs with the same
recipe (`TrainConfig(elastic=...)`, the space's widths up to the base's, ELASTIC_SAMPLES random children a step),
then under each budget (d) its width-multiplier child and (e) the search's pick on it (`run_search` with the elastic
run as parent: each trial its first channels, recalibrated, no step), each scored as it is (recalibrated only) and
after the same final training from the elastic parent's first channels. `--elastic` runs this arm alone and adds
it to the results already in benchmarks/results/bench_frontier.json (made with the same settings); with
`--elastic-parent RUN` (the run directory an interrupted `--elastic` printed) it reuses that parent, checked to
score what the results record, and runs only the budgets that lack the arm.

Iso-cost ranking: ISO_K points with multiply-adds within +-5 % of the middle budget (drawn as in (b), seed
DRAW_SEED), each trained as above with ISO_SEEDS; Kendall tau of each proxy (the default, a fine-tuned one of 100
batch-norm batches and 50 steps, the parameter count, the multiply-adds) against their mean accuracy, beside the
two reference seeds' tau with each other (the ceiling). Goal: tau >= 0.5 for the default proxy.
Writes benchmarks/results/bench_frontier.json (rewritten after each phase).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import inception_keras  # noqa: E402,F401  first: turns oneDNN on where TensorFlow would not (cpu.py)
from benchlib import Results, command_line, cpu_name  # noqa: E402
from benchlib import about as benchlib_about  # noqa: E402

SPACE, DATASET, RUNTIME = "cluttered_widths", "cluttered_digits", "onnxruntime"
FRACTIONS = (0.3, 0.5, 0.7)
TRIALS = 8
PARENT_EPOCHS = 8
FINAL_EPOCHS, FINAL_LR, FINAL_SEEDS = 4, 1e-3, (0, 1, 2)
ISO_K, ISO_BAND, ISO_FRACTION, ISO_SEEDS = 10, 0.05, 0.5, (0, 1)
NEAR = (0.9, 1.0)
ELASTIC_SAMPLES = 2
DRAW_SEED = 2026
RESULTS_PATH = HERE / "results" / "bench_frontier.json"


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0


class Bench:
    def __init__(self, quick: bool):
        import numpy as np

        from inception_keras.data import load_data, make_pipeline
        from inception_keras.train import output_names
        from search.space import get_space

        self.quick = quick
        self.space = get_space(SPACE)
        self.base = self.space.base
        self.names = output_names(self.base)
        self.data = load_data(DATASET)
        if quick:
            self.data = dataclasses.replace(self.data, train=self.data.train.take(2000), train_size=2000)
        shape, classes = self.base.input_shape, self.base.head.classes
        images, labels = [], []
        for x, y in make_pipeline(self.data.validation, shape, classes, 500, self.names):
            images.append(x.numpy())
            labels.append(np.argmax(y[self.names[0]].numpy(), axis=-1))
        self.x_val, self.y_val = np.concatenate(images), np.concatenate(labels)
        import keras
        import tensorflow as tf

        batches = list(make_pipeline(self.data.train, shape, classes, 500, self.names).take(8))  # 4,000 images
        x_train = np.concatenate([x.numpy() for x, _ in batches])
        y_train = np.concatenate([np.argmax(y[self.names[0]].numpy(), axis=-1) for _, y in batches])
        order = np.random.default_rng(0).permutation(len(x_train))
        targets = keras.utils.to_categorical(y_train[order], classes)
        self.recal_ds = tf.data.Dataset.from_tensor_slices(x_train[order]).batch(64)
        self.tune_ds = tf.data.Dataset.from_tensor_slices(
            (x_train[order], {name: targets for name in self.names})).batch(64)

    def accuracy(self, model) -> float:
        import keras
        import numpy as np

        head = keras.Model(model.inputs, model.get_layer("predictions").output)
        return float(np.mean(np.argmax(head.predict(self.x_val, batch_size=500, verbose=0), axis=-1) == self.y_val))


def train_parent(bench: Bench):
    import keras

    from inception_keras import build_model
    from inception_keras.data import training_pipelines
    from inception_keras.train import TrainConfig, compile_model

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    train_ds, _, steps = training_pipelines(bench.data, bench.base.input_shape, bench.base.head.classes, 64,
                                            bench.names, seed=0)
    model = build_model(bench.base)
    epochs = 1 if bench.quick else PARENT_EPOCHS
    compile_model(model, bench.base, TrainConfig(epochs=epochs, optimizer="adam", learning_rate=3e-3, ema=False),
                  steps)
    model.fit(train_ds, epochs=epochs, verbose=0)
    return model, {"epochs": epochs, "seconds": round(time.perf_counter() - start, 1),
                   "val_accuracy": bench.accuracy(model)}


def proxy(bench: Bench, parent, spec, batches: int = 20, steps: int = 0, importance: str = "l1") -> float:
    """The search's inherited proxy: narrowed from the parent, batch norm recalibrated, `steps` steps at 1e-3
    (`importance="first"`: an elastic parent's child, its first channels)."""
    import keras

    from inception_keras.inherit import narrow, recalibrate_batch_norm
    from inception_keras.train import TrainConfig, compile_model

    keras.utils.set_random_seed(0)
    model = narrow(parent, bench.base, spec, importance=importance)
    recalibrate_batch_norm(model, bench.recal_ds, batches)
    if steps:
        compile_model(model, spec, TrainConfig(epochs=1, optimizer="adam", learning_rate=1e-3, ema=False), steps)
        model.fit(bench.tune_ds.take(steps), epochs=1, verbose=0)
    return bench.accuracy(model)


def final(bench: Bench, parent, spec, seed: int, importance: str = "l1") -> float:
    """FINAL_EPOCHS epochs from the parent's inherited weights, Adam 1e-3 with cosine decay: validation accuracy."""
    import keras

    from inception_keras.data import training_pipelines
    from inception_keras.inherit import narrow
    from inception_keras.train import TrainConfig, compile_model

    keras.utils.set_random_seed(seed)
    epochs = 1 if bench.quick else FINAL_EPOCHS
    train_ds, _, steps = training_pipelines(bench.data, spec.input_shape, spec.head.classes, 64, bench.names,
                                            seed=seed)
    model = narrow(parent, bench.base, spec, importance=importance)
    compile_model(model, spec, TrainConfig(epochs=epochs, optimizer="adam", learning_rate=FINAL_LR, ema=False,
                                           seed=seed), steps)
    decay = keras.callbacks.LearningRateScheduler(
        lambda epoch: FINAL_LR * 0.5 * (1 + math.cos(math.pi * epoch / epochs)))
    model.fit(train_ds, epochs=epochs, verbose=0, callbacks=[decay])
    return bench.accuracy(model)


def draw(space, low: int, high: int, count: int, seed: int, limit: int = 20_000) -> list:
    """`count` distinct points of `space` whose multiply-adds are within [low, high]: uniform draws, each one over
    `high` shrunk onto it by random steps (`search.budget.shrink`, the search's own sampler)."""
    from search.budget import PointCost, shrink

    cost = PointCost(space.with_budget(max_macs=high))
    rng, found, seen = random.Random(seed), [], set()
    for _ in range(limit):
        values = {dim.name: rng.choice(dim.values) for dim in space.dimensions}
        if not cost.within(values):
            values = shrink(values, cost, rng)
        key = tuple(values[dim.name] for dim in space.dimensions)
        if key in seen or cost(values)[1] < low:
            continue
        seen.add(key)
        found.append(space.spec_for(values))
        if len(found) == count:
            return found
    raise RuntimeError(f"only {len(found)} points within {low:,}-{high:,} multiply-adds in {limit:,} draws")


def search_pick(bench: Bench, parent_dir: Path, budget_macs: int, directory: Path):
    from inception_keras import NetworkSpec
    from inception_keras.train import TrainConfig
    from search.driver import run_search
    from search.report import best_record

    space = bench.space.with_budget(max_macs=budget_macs)
    outcome = run_search(space, bench.data, directory, max_trials=TRIALS, epochs=1, overwrite=True, seed=0,
                         config=TrainConfig(epochs=1, optimizer="adam", learning_rate=3e-3, ema=False),
                         parent=parent_dir, steps=0, recalibrate_batches=20)
    best = best_record(outcome.records)
    seconds = sum(record["train_seconds"] for record in outcome.records) / len(outcome.records)
    return NetworkSpec.from_dict(best["spec"]), best["val_accuracy"], seconds


def elastic_widths(space):
    """The space's widths up to the base's own as ElasticWidths: the largest network is the base itself."""
    from inception_keras.elastic import ElasticWidths

    base = space.base_values()
    return ElasticWidths.from_choices({(dim.module, dim.width): [v for v in dim.values if v <= base[dim.name]]
                                       for dim in space.dimensions})


def elastic_arm(bench: Bench, payload: dict, work: Path, parent_run: Path | None = None) -> None:
    """Train the elastic parent (or take the one trained in `parent_run` by an earlier run with these settings, whose
    accuracy must be the one recorded), then under each budget of `payload` its width-multiplier child and the
    search's pick on it, as they are and after the final training: added to each budget's arms, written after each;
    a budget that has them already is kept as it is."""
    from inception_keras import network_cost, scale_to_budget
    from inception_keras.export import load_run
    from inception_keras.train import TrainConfig, train

    epochs = 1 if bench.quick else PARENT_EPOCHS
    run = parent_run or work / "elastic"
    if parent_run is None:
        config = TrainConfig(epochs=epochs, optimizer="adam", learning_rate=3e-3, ema=False, seed=0,
                             elastic=elastic_widths(bench.space), elastic_samples=ELASTIC_SAMPLES)
        _, result = train(bench.base, bench.data, run, config, verbose=0)
    parent = load_run(run)[0]
    accuracy = bench.accuracy(parent)
    if parent_run is None:
        payload["elastic_parent"] = {"epochs": epochs, "samples": ELASTIC_SAMPLES, "seconds": result.wall_seconds,
                                     "val_accuracy": accuracy}
    elif accuracy != payload.get("elastic_parent", {}).get("val_accuracy"):
        sys.exit(f"{run}: its elastic parent scores {accuracy}, the results record "
                 f"{payload.get('elastic_parent', {}).get('val_accuracy')}: not the parent of these results")
    print(f"elastic parent: {payload['elastic_parent']}", flush=True)
    seeds = FINAL_SEEDS[:1] if bench.quick else FINAL_SEEDS
    for index, entry in enumerate(payload["budgets"]):
        if "elastic parent: search's pick" in entry["arms"]:
            print(f"budget {entry['fraction']}: the elastic arm is in the results already", flush=True)
            continue
        multiplier_spec, multiplier = scale_to_budget(bench.base, max_macs=entry["budget_macs"])
        searched_spec, searched_proxy, trial_seconds = search_pick(bench, run, entry["budget_macs"],
                                                                   work / f"elastic_search_{index}")
        arms = {"elastic parent: width multiplier": (multiplier_spec, {"multiplier": multiplier}),
                "elastic parent: search's pick": (searched_spec, {"proxy": searched_proxy,
                                                                  "trial_seconds": trial_seconds})}
        for name, (spec, extra) in arms.items():
            accuracies = [final(bench, parent, spec, seed, "first") for seed in seeds]
            mean, std = mean_std(accuracies)
            entry["arms"][name] = {**extra, "as_is": proxy(bench, parent, spec, importance="first"),
                                   "accuracies": accuracies, "mean": mean, "std": std,
                                   "params": network_cost(spec).inference_params,
                                   "macs": network_cost(spec).inference_macs, "spec": spec.to_dict()}
            print(f"budget {entry['fraction']}: {name}: as is {entry['arms'][name]['as_is']:.4f}, "
                  f"fine-tuned {mean:.4f} +- {std:.4f}", flush=True)
        write(payload)


def kendall(a: list[float], b: list[float]) -> float | None:
    from scipy import stats

    return None if len(set(a)) < 2 or len(set(b)) < 2 else round(float(stats.kendalltau(a, b).statistic), 4)


def write(payload: dict) -> None:
    from inception_keras.utils.atomic import atomic_write_text

    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS_PATH, json.dumps(payload, indent=1, allow_nan=False, default=float) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 training images, 1 epoch each")
    parser.add_argument("--elastic", action="store_true",
                        help="the elastic arm alone, added to the results in benchmarks/results/bench_frontier.json")
    parser.add_argument("--elastic-parent", type=Path, metavar="RUN",
                        help="with --elastic: the elastic parent's run directory from an earlier --elastic run "
                             "of these results (kept under the work directory it printed); only the budgets "
                             "without an elastic arm are run")
    args = parser.parse_args()
    if args.elastic_parent and not args.elastic:
        parser.error("--elastic-parent goes with --elastic")
    if args.elastic:
        return elastic_only(args.quick, args.elastic_parent)
    from inception_keras import network_cost, scale_to_budget
    from inception_keras.export.latency import build_predictor, measure
    from inception_keras.serialize import save_spec, write_class_names
    from search.budget import PointCost, cheapest

    start = time.perf_counter()
    print(f"{cpu_name()}; {SPACE} on {DATASET}; multiply-add budgets {FRACTIONS} of the way from the cheapest point "
          f"to the base", flush=True)
    bench = Bench(args.quick)
    predictor = build_predictor(bench.base, RUNTIME, draw=bench.space.random_spec, coverage=bench.space.widths_digest())
    base_ms = predictor.predict(bench.base)
    parent, parent_info = train_parent(bench)
    print(f"parent: {parent_info}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-frontier-"))
    parent_dir = work / "parent"
    parent_dir.mkdir()
    parent.save(parent_dir / "best.keras")
    save_spec(bench.base, parent_dir / "spec.yaml")
    write_class_names(parent_dir / "class_names.txt", bench.data.class_names)
    payload = {"settings": {"fractions": FRACTIONS, "trials": TRIALS, "final_epochs": FINAL_EPOCHS,
                            "final_seeds": FINAL_SEEDS, "iso_k": ISO_K, "iso_seeds": ISO_SEEDS, "quick": args.quick},
               "base_predicted_ms": base_ms, "predictor": predictor.fit_error, "parent": parent_info, "budgets": [],
               "commands": [command_line()]}
    seeds = FINAL_SEEDS[:1] if args.quick else FINAL_SEEDS
    point_cost = PointCost(bench.space)
    base_macs = network_cost(bench.base).inference_macs
    cheapest_macs = point_cost(cheapest(point_cost, (0.0, 1.0)))[1]
    payload.update(base_macs=base_macs, cheapest_macs=cheapest_macs,
                   cheapest_predicted_ms=predictor.predict(bench.space.spec_for(cheapest(point_cost, (0.0, 1.0)))))
    for index, fraction in enumerate(FRACTIONS):
        budget = round(cheapest_macs + fraction * (base_macs - cheapest_macs))
        multiplier_spec, multiplier = scale_to_budget(bench.base, max_macs=budget)
        near = draw(bench.space, round(NEAR[0] * budget), budget, TRIALS, DRAW_SEED + index)
        scores = [proxy(bench, parent, spec) for spec in near]
        random_spec = near[max(range(len(near)), key=scores.__getitem__)]
        searched_spec, searched_proxy, _ = search_pick(bench, parent_dir, budget, work / f"search_{index}")
        arms = {"width multiplier": (multiplier_spec, {"multiplier": multiplier}),
                "best of random near the budget": (random_spec, {"proxy": max(scores)}),
                "search's pick": (searched_spec, {"proxy": searched_proxy})}
        entry = {"fraction": fraction, "budget_macs": budget, "arms": {}}
        for name, (spec, extra) in arms.items():
            accuracies = [final(bench, parent, spec, seed) for seed in seeds]
            mean, std = mean_std(accuracies)
            entry["arms"][name] = {**extra, "accuracies": accuracies, "mean": mean, "std": std,
                                   "predicted_ms": predictor.predict(spec),
                                   "measured_ms": measure(spec, RUNTIME).median_ms,
                                   "params": network_cost(spec).inference_params,
                                   "macs": network_cost(spec).inference_macs, "spec": spec.to_dict()}
            print(f"budget {fraction}: {name}: {mean:.4f} +- {std:.4f}", flush=True)
        payload["budgets"].append(entry)
        write(payload)
    iso_budget = round(cheapest_macs + ISO_FRACTION * (base_macs - cheapest_macs))
    iso = draw(bench.space, round((1 - ISO_BAND) * iso_budget), round((1 + ISO_BAND) * iso_budget), ISO_K,
               DRAW_SEED + 100)
    references = []
    for number, spec in enumerate(iso, start=1):
        references.append([final(bench, parent, spec, seed) for seed in (ISO_SEEDS[:1] if args.quick else ISO_SEEDS)])
        print(f"iso-cost point {number}/{len(iso)}: {network_cost(spec).inference_macs:,} multiply-adds, "
              f"{references[-1]}", flush=True)
    mean_reference = [sum(r) / len(r) for r in references]
    proxies = {"inherited: 20 BN batches, no step (the default)": [proxy(bench, parent, s) for s in iso],
               "inherited: 100 BN batches, 50 steps at 0.001": [proxy(bench, parent, s, 100, 50) for s in iso],
               "parameter count": [network_cost(s).inference_params for s in iso],
               "multiply-adds": [network_cost(s).inference_macs for s in iso]}
    payload["iso_cost"] = {"budget_macs": iso_budget, "band": ISO_BAND, "references": references,
                           "spread": max(mean_reference) - min(mean_reference),
                           "seed_tau": kendall([r[0] for r in references], [r[-1] for r in references])
                           if len(references[0]) > 1 else None,
                           "proxies": {name: {"scores": s, "tau": kendall(s, mean_reference)}
                                       for name, s in proxies.items()}}
    elastic_arm(bench, payload, work)
    payload["seconds"] = round(time.perf_counter() - start, 1)
    write(payload)
    report(payload)


def elastic_only(quick: bool, parent_run: Path | None = None) -> None:
    """The elastic arm added to the results of a run with the same settings (its other arms as they were); with
    `parent_run`, to the budgets that lack it, from the elastic parent trained there."""
    found = json.loads(RESULTS_PATH.read_text(encoding="utf-8")) if RESULTS_PATH.exists() else {}
    payload = found.get("figures", found)
    settings = {"fractions": list(FRACTIONS), "trials": TRIALS, "final_epochs": FINAL_EPOCHS,
                "final_seeds": list(FINAL_SEEDS), "quick": quick}
    if not payload.get("budgets") or any(payload["settings"].get(k) != v for k, v in settings.items()):
        sys.exit(f"{RESULTS_PATH}: no results of a run with these settings to add the elastic arm to ({settings}): "
                 f"run the whole benchmark")
    start = time.perf_counter()
    print(f"{cpu_name()}; the elastic arm on {DATASET}", flush=True)
    bench = Bench(quick)
    commands = payload.get("commands") or [f"python benchmarks/bench_frontier.py{' --quick' if quick else ''}"]
    if parent_run is None:  # a new elastic parent: its arms replace any earlier ones
        commands = [command for command in commands if "--elastic" not in command]
        for entry in payload["budgets"]:
            entry["arms"] = {name: arm for name, arm in entry["arms"].items() if not name.startswith("elastic")}
    work = Path(tempfile.mkdtemp(prefix="bench-frontier-"))
    print(f"work directory (the elastic parent's run: {work / 'elastic'}): {work}", flush=True)
    elastic_arm(bench, payload, work, parent_run)
    seconds = round(time.perf_counter() - start, 1)
    payload["elastic_seconds"] = payload.get("elastic_seconds", 0) + seconds if parent_run else seconds
    payload["commands"] = [*commands, command_line()]
    write(payload)
    report(payload)


def report(payload: dict) -> None:
    constants = ("PARENT_EPOCHS", "FRACTIONS", "TRIALS", "FINAL_EPOCHS", "FINAL_SEEDS", "ISO_K", "ISO_SEEDS",
                 "ELASTIC_SAMPLES", "DRAW_SEED")
    about = benchlib_about(Path(__file__).name, __doc__, {name: globals()[name] for name in constants})
    results = Results("bench_frontier", "Does the search beat the width multiplier?", "bench-frontier", about)
    lines = ["| multiply-add budget (of the way from the cheapest point to the base) | arm | accuracy, mean ± std | "
             "multiply-adds | params | predicted ms | measured ms |", "|---|---|---:|---:|---:|---:|---:|"]
    wins = random_wins = 0
    for entry in payload["budgets"]:
        arms = entry["arms"]
        for name, arm in arms.items():
            if name.startswith("elastic parent"):  # a table of their own (elastic_text)
                continue
            lines.append(f"| {entry['fraction']:.0%} ({entry['budget_macs']:,}) | {name} | "
                         f"{arm['mean']:.4f} ± {arm['std']:.4f} | {arm['macs']:,} | {arm['params']:,} | "
                         f"{arm['predicted_ms']:.3f} | {arm['measured_ms']:.3f} |")
        a, c = arms["width multiplier"], arms["search's pick"]
        n = len(a["accuracies"])
        sigma = math.sqrt((a["std"] ** 2 + c["std"] ** 2) / n) if n > 1 else float("nan")
        wins += bool(n > 1 and c["mean"] - a["mean"] > 2 * sigma)
        b = arms["best of random near the budget"]
        random_wins += bool(n > 1 and b["mean"] - a["mean"] > 2 * math.sqrt((a["std"] ** 2 + b["std"] ** 2) / n))
    results.add(lines)
    iso = payload["iso_cost"]
    rows = ["| proxy | Kendall τ against the final accuracy |", "|---|---:|"]
    rows += [f"| {name} | {p['tau']} |" for name, p in iso["proxies"].items()]
    rows.append(f"| the reference's two seeds against each other (the ceiling) | {iso['seed_tau']} |")
    results.add(rows)
    results.add(f"Parent: googlenet_mini, {payload['parent']['epochs']} epochs, {payload['parent']['seconds']:.0f} s, "
                f"validation accuracy {payload['parent']['val_accuracy']:.4f}. Multiply-adds: the space's cheapest "
                f"point {payload['cheapest_macs']:,}, the base {payload['base_macs']:,}; their predicted latency in "
                f"{RUNTIME} at batch 1: {payload['cheapest_predicted_ms']:.3f} and "
                f"{payload['base_predicted_ms']:.3f} ms "
                f"(fit: {payload['predictor']['within_10_percent']:.0%} of {payload['predictor']['candidates']} "
                f"candidates within ±10 %). "
                f"Total {(payload['seconds'] + payload.get('elastic_seconds', 0)) / 60:.0f} min.")
    results.add(f"Goals: the search's pick beats the width multiplier by more than 2 standard deviations of the "
                f"difference at {wins} of {len(payload['budgets'])} budgets (goal: 2), the best of random points "
                f"near the "
                f"budget at {random_wins}; iso-cost τ of the default "
                f"proxy {iso['proxies']['inherited: 20 BN batches, no step (the default)']['tau']} (goal: 0.5), "
                f"the final accuracies of the {len(iso['references'])} iso-cost points spreading "
                f"{iso['spread']:.4f}.")
    if "elastic_parent" in payload:
        table, text = elastic_text(payload)
        results.add(table)
        results.add(text)
    results.figures = payload
    results.write(command="; ".join(payload.get("commands", [])) or None)


def elastic_text(payload: dict) -> tuple[list[str], str]:
    """The elastic arm's table and its verdicts: against its own width multiplier and the normal parent's."""
    def beats(c, a) -> bool:
        n = len(c["accuracies"])
        return n > 1 and c["mean"] - a["mean"] > 2 * math.sqrt((a["std"] ** 2 + c["std"] ** 2) / n)

    rows = ["| multiply-add budget | arm | as it is (recalibrated only) | after the final training, mean ± std | "
            "multiply-adds | params |", "|---|---|---:|---:|---:|---:|"]
    own = normal = as_is = 0
    budgets = [entry for entry in payload["budgets"] if "elastic parent: search's pick" in entry["arms"]]
    for entry in budgets:
        arms = entry["arms"]
        for name in ("elastic parent: width multiplier", "elastic parent: search's pick"):
            arm = arms[name]
            rows.append(f"| {entry['fraction']:.0%} ({entry['budget_macs']:,}) | {name} | {arm['as_is']:.4f} | "
                        f"{arm['mean']:.4f} ± {arm['std']:.4f} | {arm['macs']:,} | {arm['params']:,} |")
        pick, multiplier = arms["elastic parent: search's pick"], arms["elastic parent: width multiplier"]
        own += beats(pick, multiplier)
        normal += beats(pick, arms["width multiplier"])
        as_is += pick["as_is"] > multiplier["as_is"]
    parent = payload["elastic_parent"]
    seconds = [e["arms"]["elastic parent: search's pick"]["trial_seconds"] for e in budgets]
    count = len(budgets)
    return rows, (f"Elastic parent: googlenet_mini, {parent['epochs']} epochs, {parent['samples']} random children a "
                  f"step, {parent['seconds']:.0f} s ({parent['seconds'] / payload['parent']['seconds']:.1f}x the "
                  f"normal parent's), validation accuracy {parent['val_accuracy']:.4f} (the normal parent "
                  f"{payload['parent']['val_accuracy']:.4f}). The search's pick on it, after the final training, "
                  f"beats the elastic parent's width multiplier by more than 2 standard deviations of the difference "
                  f"at {own} of {count} budgets and the normal parent's width multiplier at {normal} of {count}; as "
                  f"they are it scores above the elastic width multiplier at {as_is} of {count}. A search trial on "
                  f"the elastic parent: {min(seconds):.1f}-{max(seconds):.1f} s on average per budget.")


if __name__ == "__main__":
    main()
