"""Ranking fidelity and cost of the search's proxies on `cluttered_digits` (the space `cluttered_bottlenecks`).

    python benchmarks/bench_ranking.py            # K=10 candidates; about an hour on 2 cores
    python benchmarks/bench_ranking.py --quick    # a smoke run of a few minutes

First, the target phase (`--long-epochs`, 0: none; `--target-only` re-measures it alone): on the whole training
split, googlenet_mini (the space's base) and the space's narrowest point after the search's default epochs
(`--target-seeds`), and the base after `--long-epochs` of cosine decay from scratch: what issue 19 asks of
`cluttered_digits` (50-90 % after the default epochs, far higher after long training, and the narrowest point
below the base by at least 3 seed standard deviations).

K candidates of the space are drawn under its budget, stratified by parameter count (same seed, same candidates).
The parent, googlenet_mini (the space's base), is trained once (Adam, no EMA); its one-off cost is reported. Each
candidate is then scored by:

- the from-scratch proxy: what a search trial without a parent does, `--proxy-epochs` epochs of Adam 3e-3 from
  scratch, the best validation accuracy, for 2 seeds (the mean; the seed std is reported);
- the inherited proxy: `narrow(parent)`, batch norm re-estimated on N fixed training batches
  (`recalibrate_batch_norm`), S fine-tuning steps on fixed batches (Adam, a fresh optimizer), then the accuracy on
  a fixed validation subset; several settings of (N, S, learning rate), each timed on its own, part by part;
- the reference: the candidate trained `--reference-epochs` epochs from the inherited weights with a cosine-decayed
  learning rate (Adam), its final accuracy on the whole validation split; a second seed for a few candidates
  gives the reference's own noise (the rank correlation between its two runs bounds what any proxy can reach);
  and, beside it, the same from scratch (`--scratch-reference-epochs`).

Kendall's tau and Spearman's rho (scipy.stats) of each proxy, and of the parameter count (a floor), against the
reference; the seconds per candidate of each proxy. Goals (issue 19): the inherited proxy's tau >= 0.6 and >= the
from-scratch proxy's, at <= 1/10 of its seconds per candidate. Everything goes to `benchmarks/results/
bench_ranking.json` (rewritten after each phase, so a long run that is stopped keeps what it measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from inception_keras.utils.atomic import atomic_write_text  # noqa: E402
from search.budget import PointCost  # noqa: E402
from search.space import SearchSpace, get_space  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_ranking.json"
SPACE = "cluttered_bottlenecks"
DATASET = "cluttered_digits"
LEARNING_RATE = 3e-3  # Adam, as the search's examples and the parent
GOAL_TAU = 0.6
GOAL_COST_RATIO = 0.1


@dataclasses.dataclass(frozen=True)
class Setting:
    """One inherited proxy: N recalibration batches, S fine-tuning steps at learning rate `lr`."""

    batches: int
    steps: int
    lr: float

    @property
    def label(self) -> str:
        tune = f", {self.steps} steps at {self.lr:g}" if self.steps else ", no step"
        return f"inherited: {self.batches} BN batches{tune}"

    @property
    def key(self) -> str:
        return f"{self.batches}:{self.steps}:{self.lr:g}"


def parse_setting(text: str) -> Setting:
    """`N:S:LR` (e.g. `100:50:0.001`) -> Setting; argparse turns the ValueError into a usage error."""
    batches, steps, lr = text.split(":")
    setting = Setting(int(batches), int(steps), float(lr))
    if setting.batches < 0 or setting.steps < 0 or not setting.lr > 0:
        raise ValueError(text)
    return setting


def point_params(space: SearchSpace, values: dict) -> int:
    """Parameters of the budgeted model of a point (the inference model's, for this space)."""
    return PointCost(space)(values)[0]


def draw_candidates(space: SearchSpace, count: int, seed: int = 0, pool: int = 4000) -> list[dict]:
    """`count` distinct points within the space's budget, spread over its range of parameter counts.

    A pool of points is drawn around random levels of width (each dimension's choice near the level, so narrow,
    mid and wide points all occur, where independent uniform choices would crowd the middle); the range of the
    pool's parameter counts is cut into `count` equal strata and one point is drawn from each (the nearest unused
    one to its centre where a stratum is empty). Same seed, same candidates, ascending parameter count.
    """
    rng = random.Random(seed)
    cost = PointCost(space)
    found: dict[tuple, tuple[int, dict]] = {}
    for _ in range(pool):
        level = rng.random()
        values = {}
        for dim in space.dimensions:
            top = len(dim.values) - 1
            values[dim.name] = dim.values[min(top, max(0, round(level * top + rng.gauss(0.0, 1.0))))]
        if cost.within(values):
            found.setdefault(tuple(values.values()), (cost(values)[0], values))
    points = sorted(found.values(), key=lambda item: item[0])
    if len(points) < count:
        raise ValueError(f"only {len(points)} distinct points within the budget of {space.name}; asked {count}")
    low, high = points[0][0], points[-1][0]
    width = (high - low) / count
    chosen: list[int] = []
    for stratum in range(count):
        start, end = low + stratum * width, low + (stratum + 1) * width
        inside = [i for i, (params, _) in enumerate(points)
                  if i not in chosen and start <= params <= end]
        if not inside:
            centre = (start + end) / 2
            inside = [min((i for i in range(len(points)) if i not in chosen),
                          key=lambda i: abs(points[i][0] - centre))]
        chosen.append(inside[rng.randrange(len(inside))])
    return [points[i][1] for i in sorted(chosen)]


def rank_correlation(proxy: list[float], reference: list[float]) -> dict:
    """Kendall's tau (tau-b) and Spearman's rho of two score lists (None where undefined, e.g. a constant list)."""
    from scipy import stats

    def finite(value) -> float | None:
        return None if value is None or not math.isfinite(value) else round(float(value), 4)

    if len(set(proxy)) < 2 or len(set(reference)) < 2:  # fewer than two points, or a constant list
        return {"kendall_tau": None, "spearman_rho": None}
    return {"kendall_tau": finite(stats.kendalltau(proxy, reference).statistic),
            "spearman_rho": finite(stats.spearmanr(proxy, reference).statistic)}


def write_results(path: str | Path, payload: dict) -> Path:
    """Write `payload` as indented JSON (no NaN) to `path` through a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def machine() -> dict:
    """The CPU (model name, family, instruction sets), its cores, and the library versions (`benchlib.machine`)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from benchlib import machine as describe

    return describe()


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


class Bench:
    """The data, the space and the fixed batches every measurement shares."""

    def __init__(self, args: argparse.Namespace):
        import keras
        import numpy as np
        import tensorflow as tf

        from inception_keras.data import load_data, make_pipeline
        from inception_keras.train import output_names

        self.args = args
        self.space = get_space(SPACE)
        self.spec = self.space.base
        self.names = output_names(self.spec)
        data = load_data(DATASET)
        self.full_data = data
        if args.train_subset:
            data = dataclasses.replace(data, train=data.train.take(args.train_subset),
                                       train_size=min(args.train_subset, data.train_size))
        self.data = data
        shape, classes = self.spec.input_shape, self.spec.head.classes

        def arrays(split):
            images, labels = [], []
            for x, y in make_pipeline(split, shape, classes, 500, self.names):
                images.append(x.numpy())
                labels.append(np.argmax(y[self.names[0]].numpy() if self.names else y.numpy(), axis=-1))
            return np.concatenate(images), np.concatenate(labels)

        x_train, y_train = arrays(data.train)
        self.x_val, self.y_val = arrays(data.validation)
        subset = args.validation_subset or len(self.y_val)
        self.x_val_subset, self.y_val_subset = self.x_val[:subset], self.y_val[:subset]
        order = np.random.default_rng(args.seed).permutation(len(y_train))
        most = max([s.batches for s in args.settings] + [s.steps for s in args.settings] + [1]) * args.batch_size
        order = np.resize(order, most)  # the first batches of one fixed shuffle, wrapped if the subset is small
        targets = keras.utils.to_categorical(y_train[order], classes)
        self.recal_ds = tf.data.Dataset.from_tensor_slices(x_train[order]).batch(args.batch_size)
        self.tune_ds = tf.data.Dataset.from_tensor_slices(
            (x_train[order], {name: targets for name in self.names} if self.names else targets)).batch(
            args.batch_size)
        self._pipelines = {}

    def pipelines(self, seed: int, full: bool = False):
        """(train, validation, steps per epoch) of the search's own input pipeline, shuffled by `seed`; `full`: on
        the whole training split rather than the bench's subset."""
        from inception_keras.data import training_pipelines

        if (seed, full) not in self._pipelines:
            self._pipelines[seed, full] = training_pipelines(self.full_data if full else self.data,
                                                             self.spec.input_shape, self.spec.head.classes,
                                                             self.args.batch_size, self.names, seed=seed)
        return self._pipelines[seed, full]

    def config(self, epochs: int, lr: float, seed: int):
        from inception_keras.train import TrainConfig

        return TrainConfig(epochs=max(1, epochs), optimizer="adam", learning_rate=lr, ema=False, seed=seed)


def accuracy(model, x, labels, batch: int = 500) -> float:
    """Top-1 accuracy of the model's main classifier on arrays, in one compiled predict."""
    import keras
    import numpy as np

    head = keras.Model(model.inputs, model.get_layer("predictions").output)
    return float(np.mean(np.argmax(head.predict(x, batch_size=batch, verbose=0), axis=-1) == labels))


def train_parent(bench: Bench, epochs: int) -> tuple[object, dict]:
    """googlenet_mini trained `epochs` epochs (Adam 3e-3, no EMA): the model and its cost and accuracy."""
    import keras

    from inception_keras import build_model
    from inception_keras.train import compile_model

    keras.utils.set_random_seed(bench.args.seed)
    start = time.perf_counter()
    train_ds, val_ds, steps = bench.pipelines(bench.args.seed)
    model = build_model(bench.spec)
    compile_model(model, bench.spec, bench.config(epochs, LEARNING_RATE, bench.args.seed), steps)
    model.fit(train_ds, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    return model, {"epochs": epochs, "seconds": round(seconds, 1), "val_accuracy": accuracy(model, bench.x_val,
                                                                                           bench.y_val),
                   "params": point_params(bench.space, bench.space.base_values())}


def inherited_proxy(bench: Bench, parent, values: dict, setting: Setting) -> tuple[float, dict]:
    """The inherited proxy's score for one point, run on its own, and the seconds of each of its parts."""
    import keras

    from inception_keras.inherit import narrow, recalibrate_batch_norm
    from inception_keras.train import compile_model

    keras.utils.set_random_seed(bench.args.seed)
    parts = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        parts[name] = round(now - clock, 3)
        clock = now

    spec = bench.space.spec_for(values)
    model = narrow(parent, bench.spec, spec)
    lap("narrow")
    recalibrate_batch_norm(model, bench.recal_ds, setting.batches)
    lap("recalibrate")
    if setting.steps:
        compile_model(model, spec, bench.config(1, setting.lr, bench.args.seed), setting.steps)
        model.fit(bench.tune_ds.take(setting.steps), epochs=1, verbose=0)
        lap("fine_tune")
    score = accuracy(model, bench.x_val_subset, bench.y_val_subset)
    lap("evaluate")
    return score, parts


def scratch_proxy(bench: Bench, values: dict, seed: int, epochs: int, full: bool = False) -> tuple[float, float]:
    """What a search trial without a parent does: the best validation accuracy of `epochs` epochs from scratch
    (`full`: on the whole training split), and its seconds."""
    import keras

    from inception_keras import build_model
    from inception_keras.train import compile_model, monitor_name

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    spec = bench.space.spec_for(values)
    train_ds, val_ds, steps = bench.pipelines(seed, full)
    model = build_model(spec)
    compile_model(model, spec, bench.config(epochs, LEARNING_RATE, seed), steps)
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0)
    return max(history.history[monitor_name(spec)]), time.perf_counter() - start


def scratch_runs(bench: Bench, values: dict, seeds: list[int], epochs: int, full: bool = False) -> dict:
    """The from-scratch proxy of one point for each of `seeds`: the scores, their mean and standard deviation, and
    the seconds of all the runs."""
    runs = [scratch_proxy(bench, values, seed, epochs, full) for seed in seeds]
    mean, std = mean_std([score for score, _ in runs])
    return {"scores": [score for score, _ in runs], "mean": mean, "seed_std": std,
            "seconds": round(sum(seconds for _, seconds in runs), 2)}


def reference(bench: Bench, parent, values: dict, seed: int, epochs: int, full: bool = False) -> tuple[float, float]:
    """The final validation accuracy after `epochs` epochs with a cosine-decayed learning rate, from the parent's
    inherited weights (or from scratch when `parent` is None; `full`: on the whole training split), and its
    seconds."""
    import keras

    from inception_keras import build_model
    from inception_keras.inherit import narrow
    from inception_keras.train import compile_model

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    spec = bench.space.spec_for(values)
    train_ds, _, steps = bench.pipelines(seed, full)
    model = build_model(spec) if parent is None else narrow(parent, bench.spec, spec)
    lr = bench.args.reference_lr
    compile_model(model, spec, bench.config(epochs, lr, seed), steps)
    decay = keras.callbacks.LearningRateScheduler(lambda epoch: lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs)))
    model.fit(train_ds, epochs=epochs, verbose=0, callbacks=[decay])
    return accuracy(model, bench.x_val, bench.y_val), time.perf_counter() - start


def target(bench: Bench) -> dict:
    """What makes `cluttered_digits` a target where widths matter, on its whole training split: the base and the
    narrowest point of the space after the search's default epochs (`--target-seeds` each), and the base after
    long training from scratch."""
    args, space = bench.args, bench.space
    result = {"train_images": bench.full_data.train_size, "epochs": args.proxy_epochs, "seeds": args.target_seeds,
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    for name, values in (("base", space.base_values()), ("narrowest", space.smallest())):
        result[name] = {"params": point_params(space, values),
                        **scratch_runs(bench, values, args.target_seeds, args.proxy_epochs, full=True)}
        scores = ", ".join(f"{score:.4f}" for score in result[name]["scores"])
        print(f"  {name}: {scores} after {args.proxy_epochs} epochs", flush=True)
    if args.long_epochs:
        score, seconds = reference(bench, None, space.base_values(), args.seed, args.long_epochs, full=True)
        result["long"] = {"epochs": args.long_epochs, "accuracy": round(score, 4), "seconds": round(seconds, 1)}
        print(f"  base: {score:.4f} after {args.long_epochs} epochs", flush=True)
    return result


def target_notes(results: dict) -> str:
    """The target's figures and the issue's three criteria, in sentences."""
    found = results.get("target")
    if not found:
        return ""
    base, narrow, epochs = found["base"], found["narrowest"], found["epochs"]
    scores = " / ".join(f"{100 * score:.1f}" for score in base["scores"])
    narrow_scores = " / ".join(f"{100 * score:.1f}" for score in narrow["scores"])
    std = max(base["seed_std"], narrow["seed_std"])
    gap = base["mean"] - narrow["mean"]
    seeds = " / ".join(str(seed) for seed in found["seeds"])
    lines = [f"The target, on all {found['train_images']:,} training images: googlenet_mini ({base['params']:,} "
             f"params) reaches {scores} % validation accuracy after the search's default {epochs} epochs (seeds "
             f"{seeds}, mean {100 * base['mean']:.1f} %; goal: within 50-90 %: "
             f"{'met' if 0.5 <= base['mean'] <= 0.9 else 'NOT met'})"]
    if "long" in found:
        long = found["long"]
        lines.append(f"and {100 * long['accuracy']:.1f} % after {long['epochs']} (cosine decay, {long['seconds']:.0f}"
                     f" s; {100 * (long['accuracy'] - base['mean']):+.1f} points)")
    lines[-1] += "."
    lines.append(f"The narrowest point of the space ({narrow['params']:,} params) reaches {narrow_scores} % (mean "
                 f"{100 * narrow['mean']:.1f} %): {100 * gap:.1f} points below the base, "
                 f"{gap / std if std else float('inf'):.1f}× the larger seed std ({100 * std:.1f} points, n - 1; "
                 f"goal: >= 3×: {'met' if std and gap >= 3 * std else 'NOT met'}).")
    return " ".join(lines)


def repeat_indices(count: int, repeats: int) -> list[int]:
    """`repeats` candidate indices spread evenly over `count` (candidates are in ascending parameter count)."""
    repeats = min(repeats, count)
    if repeats <= 1:
        return [0][:repeats]
    return sorted({round(i * (count - 1) / (repeats - 1)) for i in range(repeats)})


def summarize(results: dict) -> dict:
    """Rank correlations of every proxy (and the parameter count) against the references, seconds per candidate."""
    candidates = results["candidates"]
    rows = {}
    ref = [c.get("reference") for c in candidates]
    scratch_ref = [c.get("scratch_reference") for c in candidates]

    def row(name, scores, seconds):
        entry = {"seconds_per_candidate": seconds}
        if None not in ref and None not in scores:
            entry["vs_reference"] = rank_correlation(scores, ref)
        if None not in scratch_ref and None not in scores:
            entry["vs_scratch_reference"] = rank_correlation(scores, scratch_ref)
        rows[name] = entry

    row("parameter count", [c["params"] for c in candidates], 0.0)
    if all("scratch" in c for c in candidates):
        row("scratch", [c["scratch"]["mean"] for c in candidates],
            round(sum(c["scratch"]["seconds"] for c in candidates) / len(candidates), 2))
    for key in results["settings"]:
        if all(key in c.get("inherited", {}) for c in candidates):
            row(key, [c["inherited"][key]["score"] for c in candidates],
                round(sum(c["inherited"][key]["seconds"] for c in candidates) / len(candidates), 2))
    pairs = [(c["reference"], c["reference_repeat"]) for c in candidates if "reference_repeat" in c]
    ceiling = rank_correlation([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) > 1 else None
    gaps = [abs(a - b) for a, b in pairs]
    summary = {"proxies": rows, "reference_ceiling": ceiling, "reference_repeats": len(pairs),
               "reference_seed_gap_mean": round(sum(gaps) / len(gaps), 4) if gaps else None,
               "reference_spread_std": round(mean_std(ref)[1], 4) if None not in ref and len(ref) > 1 else None}
    if None not in ref and None not in scratch_ref:
        summary["scratch_reference_vs_reference"] = rank_correlation(scratch_ref, ref)
    return summary


def table(results: dict) -> str:
    """The proxies' table (markdown): τ and ρ against both references, seconds per candidate, ratio to the scratch
    proxy's."""
    summary = results["summary"]
    scratch_seconds = summary["proxies"].get("scratch", {}).get("seconds_per_candidate")
    lines = ["| proxy | τ | ρ | τ vs scratch ref. | ρ vs scratch ref. | s / candidate | of scratch's |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, entry in summary["proxies"].items():
        corr, scorr = entry.get("vs_reference", {}), entry.get("vs_scratch_reference", {})
        ratio = (entry["seconds_per_candidate"] / scratch_seconds if scratch_seconds and name != "parameter count"
                 else None)
        lines.append(f"| {_label(name, results)} | {fmt(corr.get('kendall_tau'))} | {fmt(corr.get('spearman_rho'))} "
                     f"| {fmt(scorr.get('kendall_tau'))} | {fmt(scorr.get('spearman_rho'))} "
                     f"| {entry['seconds_per_candidate']:.1f} | {fmt(ratio, 3)} |")
    return "\n".join(lines)


def notes(results: dict) -> str:
    """The reference's own noise, the two references' agreement and the goals, in sentences."""
    summary = results["summary"]
    lines = []
    if summary.get("reference_repeats"):
        lines.append(f"The reference's own noise: {summary['reference_repeats']} candidates trained again with another "
                     f"seed, mean gap {summary['reference_seed_gap_mean']:.4f} against a spread (std) across "
                     f"candidates of {summary['reference_spread_std']}.")
    if "scratch_reference_vs_reference" in summary:
        agree = summary["scratch_reference_vs_reference"]
        lines.append(f"The scratch reference against the reference: τ {fmt(agree['kendall_tau'])}, ρ "
                     f"{fmt(agree['spearman_rho'])}.")
    if results.get("default_setting"):
        lines.append(goals(results, parse_setting(results["default_setting"])) + ".")
    return " ".join(lines)


def markdown(results: dict) -> dict:
    """The report's keys (title, make, about, sections, readme) for `benchmarks/report.py`, from the stored
    figures."""
    args, parent = results["args"], results.get("parent") or {}
    params = [c["params"] for c in results["candidates"]]
    about = (f"`benchmarks/bench_ranking.py`: {len(params)} candidates of `{results['space']}` drawn under its budget "
             f"({results['budget']}), stratified by parameter count ({min(params):,} to {max(params):,}), trained on "
             f"{results['data']['train_images']:,} of `{results['dataset']}`' training images. Parent: googlenet_mini "
             f"{parent.get('epochs')} epochs, {parent.get('seconds', 0):.0f} s once, validation accuracy "
             f"{parent.get('val_accuracy', 0):.3f}. Reference: each candidate {args['reference_epochs']} epochs from "
             f"the inherited weights (Adam {args['reference_lr']:g}, cosine decay); scratch reference: "
             f"{args['scratch_reference_epochs']} epochs from scratch. The from-scratch proxy is a search trial "
             f"without a parent ({args['proxy_epochs']} epochs, mean of {len(args['proxy_seeds'])} seeds); an "
             f"inherited proxy is `narrow` + `recalibrate_batch_norm` on N batches + S steps, scored on "
             f"{results['data']['inherited_validation_images']:,} validation images. τ: Kendall, ρ: Spearman.")
    proxies, settings = results["summary"]["proxies"], results["settings"]
    inherited = [name for name in proxies if name in settings and proxies[name].get("vs_reference")]
    best = max(inherited, key=lambda name: (proxies[name]["vs_reference"]["kendall_tau"],
                                            -proxies[name]["seconds_per_candidate"]), default=None)
    short = ["| proxy | τ | ρ | seconds / candidate |", "|---|---:|---:|---:|"]
    for name in dict.fromkeys(["parameter count", "scratch", results.get("default_setting"), best]):
        if name in proxies:
            corr = proxies[name].get("vs_reference", {})
            short.append(f"| {_label(name, results)} | {fmt(corr.get('kendall_tau'))} | "
                         f"{fmt(corr.get('spearman_rho'))} | {proxies[name]['seconds_per_candidate']:.1f} |")
    return {"title": "Ranking fidelity of the search's proxies", "make": "bench-ranking", "about": about,
            "sections": [target_notes(results), table(results), notes(results)], "readme": "\n".join(short)}


def _label(name: str, results: dict) -> str:
    """A proxy's name in the tables; the default inherited setting in bold."""
    settings, args = results["settings"], results["args"]
    if name in settings:
        label = f"inherited: {settings[name].removeprefix('inherited: ')}"
        return f"**{label} (the default)**" if name == results.get("default_setting") else label
    if name == "scratch":
        return f"from scratch, {args['proxy_epochs']} epochs × {len(args['proxy_seeds'])} seeds"
    return "parameter count (floor)"


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def goals(results: dict, setting: Setting) -> str:
    """Whether the default inherited setting meets the issue's goals."""
    proxies = results["summary"]["proxies"]
    main, scratch = proxies.get(setting.key, {}), proxies.get("scratch", {})
    tau = main.get("vs_reference", {}).get("kendall_tau")
    scratch_tau = scratch.get("vs_reference", {}).get("kendall_tau")
    if tau is None or scratch_tau is None:
        return "goals: not measured (a phase is missing)"
    ratio = main["seconds_per_candidate"] / scratch["seconds_per_candidate"]
    checks = [f"tau {tau:.2f} >= {GOAL_TAU} {'met' if tau >= GOAL_TAU else 'NOT met'}",
              f">= scratch's {scratch_tau:.2f} {'met' if tau >= scratch_tau else 'NOT met'}",
              f"cost {ratio:.3f} of scratch's <= {GOAL_COST_RATIO} {'met' if ratio <= GOAL_COST_RATIO else 'NOT met'}"]
    return f"goals ({setting.label}): " + "; ".join(checks)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="candidates, parent, fixed batches, reference")
    parser.add_argument("--parent-epochs", type=int, default=8)
    parser.add_argument("--proxy-epochs", type=int, default=3)
    parser.add_argument("--proxy-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--long-epochs", type=int, default=30,
                        help="the target phase's long training of the base (0: no target phase)")
    parser.add_argument("--target-seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="the target phase's seeds for the base and the narrowest point")
    parser.add_argument("--target-only", action="store_true",
                        help="measure the target phase alone and store it in --out's results, keeping the rest")
    parser.add_argument("--reference-epochs", type=int, default=6)
    parser.add_argument("--reference-lr", type=float, default=2e-3, help="peak of the cosine decay")
    parser.add_argument("--reference-repeats", type=int, default=4, help="candidates whose reference runs twice")
    parser.add_argument("--scratch-reference-epochs", type=int, default=4, help="0: none")
    parser.add_argument("--recalibrate-batches", type=int, default=20, help="the default inherited setting's N")
    parser.add_argument("--steps", type=int, default=0, help="the default inherited setting's S")
    parser.add_argument("--fine-tune-lr", type=float, default=1e-3)
    parser.add_argument("--variants", type=parse_setting, nargs="*",
                        default=[parse_setting(s) for s in ("0:0:0.001", "100:0:0.001", "20:20:0.001",
                                                            "100:50:0.001", "100:50:0.0003", "100:100:0.001",
                                                            "100:100:0.0003")],
                        help="other inherited settings, each N:S:LR")
    parser.add_argument("--validation-subset", type=int, default=1000, help="images the inherited proxy scores on")
    parser.add_argument("--train-subset", type=int, default=8000, help="use only the first N training images (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 candidates, 1,000 images, 1 epoch")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite --out's tables for the report from the figures it holds")
    args = parser.parse_args(argv)
    if args.quick:
        args.candidates, args.train_subset, args.parent_epochs, args.proxy_epochs = 4, 1000, 1, 1
        args.reference_epochs, args.reference_repeats, args.scratch_reference_epochs = 1, 2, 0
        args.long_epochs = 0
        args.variants = [parse_setting("0:0:0.001")]
    args.default = Setting(args.recalibrate_batches, args.steps, args.fine_tune_lr)
    args.settings = [args.default] + [s for s in dict.fromkeys(args.variants) if s != args.default]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report_only or args.target_only:  # rewrite --out's stored results, after measuring the target phase
        results = json.loads(Path(args.out).read_text(encoding="utf-8"))
        if args.target_only:
            results["target"] = target(Bench(args))
            print(target_notes(results))
        results.update(markdown(results))
        write_results(args.out, results)
        print(f"written: {args.out}")
        return
    start = time.perf_counter()
    space = get_space(SPACE)
    chosen = draw_candidates(space, args.candidates, args.seed)
    results = {
        "benchmark": "bench_ranking", "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
        "args": {key: value for key, value in vars(args).items() if key not in ("variants", "settings", "default")},
        "space": SPACE, "dataset": DATASET, "budget": space.budget.describe(), "default_setting": args.default.key,
        "settings": {s.key: s.label for s in args.settings},
        "candidates": [{"values": values, "params": point_params(space, values)} for values in chosen],
    }
    counts = ", ".join(f"{candidate['params']:,}" for candidate in results["candidates"])
    print(f"{len(chosen)} candidates of {SPACE} ({space.budget.describe()}): params {counts}", flush=True)
    bench = Bench(args)
    results["data"] = {"train_images": bench.data.train_size, "validation_images": len(bench.y_val),
                       "inherited_validation_images": len(bench.y_val_subset)}

    def save(phase):
        results["phases_done"] = results.get("phases_done", []) + [phase]
        results["wall_seconds"] = round(time.perf_counter() - start, 1)
        results["summary"] = summarize(results)
        results.update(markdown(results))
        write_results(args.out, results)
        print(f"[{results['wall_seconds']:.0f} s] {phase} done", flush=True)

    if args.long_epochs:
        results["target"] = target(bench)
        save("target")
    parent, results["parent"] = train_parent(bench, args.parent_epochs)
    save("parent")
    for candidate in results["candidates"]:
        candidate["inherited"] = {}
        for setting in args.settings:
            score, parts = inherited_proxy(bench, parent, candidate["values"], setting)
            candidate["inherited"][setting.key] = {"score": score, "seconds": round(sum(parts.values()), 3),
                                                   "parts": parts}
    save("inherited proxies")
    for candidate in results["candidates"]:
        candidate["reference"], candidate["reference_seconds"] = reference(
            bench, parent, candidate["values"], args.seed, args.reference_epochs)
    save("reference")
    for candidate in results["candidates"]:
        candidate["scratch"] = scratch_runs(bench, candidate["values"], args.proxy_seeds, args.proxy_epochs)
    save("scratch proxy")
    for index in repeat_indices(len(chosen), args.reference_repeats):
        candidate = results["candidates"][index]
        candidate["reference_repeat"], _ = reference(bench, parent, candidate["values"], args.seed + 1,
                                                     args.reference_epochs)
    save("reference repeats")
    if args.scratch_reference_epochs:
        for candidate in results["candidates"]:
            candidate["scratch_reference"], candidate["scratch_reference_seconds"] = reference(
                bench, None, candidate["values"], args.seed, args.scratch_reference_epochs)
        save("scratch reference")
    print(f"\n{SPACE} on {DATASET}, {results['machine']['cpu']}, {results['machine']['cores']} cores; "
          f"{len(chosen)} candidates, {bench.data.train_size:,} training images; {results['wall_seconds']:.0f} s")
    print(target_notes(results))
    print(table(results))
    print(notes(results))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
