"""Run a budgeted architecture search: feasibility first, then KerasTuner, then the report.

Resumable: run again with the same directory (without `overwrite`) and completed
trials are kept, the interrupted one runs again. Distributed: set the KerasTuner
variables (`configure_distributed`) in the chief and in every worker, same command.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from inception_keras.data import DataSplits, make_pipeline
from inception_keras.atomic import atomic_write_text
from inception_keras.serialize import CLASS_NAMES_FILE, read_class_names, write_class_names
from inception_keras.train import TrainConfig, output_names

from search.budget import BudgetError, check_feasible, cheapest
from search.report import read_records, report_text, write_results
from search.space import SearchSpace

CHIEF_ID = "chief"
RESULT_FILES = ("results.json", "results.csv", "pareto.png", "best_spec.yaml", "space.json", "class_names.txt")


@dataclass
class SearchOutcome:
    records: list[dict]
    screened: int
    rejected: int
    repaired: int
    seconds: float


def configure_distributed(role: str | None, tuner_id: str | None, ip: str, port: int) -> None:
    """Set KerasTuner's chief/worker variables. The chief serves the oracle on `ip:port` (127.0.0.1 by default)."""
    if role is None:
        return
    if role not in ("chief", "worker"):
        raise ValueError(f"role must be chief or worker, got {role!r}")
    if role == "worker" and (not tuner_id or CHIEF_ID in tuner_id):
        raise ValueError("a worker needs --tuner-id, unique per worker and without 'chief' in it (e.g. worker0)")
    os.environ["KERASTUNER_TUNER_ID"] = CHIEF_ID if role == "chief" else tuner_id
    os.environ["KERASTUNER_ORACLE_IP"] = ip
    os.environ["KERASTUNER_ORACLE_PORT"] = str(port)


def is_worker() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and CHIEF_ID not in os.environ.get("KERASTUNER_TUNER_ID", "")


def watchdog(seconds: float | None, directory: Path):
    """Ends the process if the search has not finished in `seconds` (KerasTuner's chief waits forever)."""
    if not seconds:
        return None

    def expire():
        done = len(read_records(directory))
        print(f"[search] timed out after {seconds:.0f} s with {done} trial(s) finished. If a worker died, restart it "
              f"with the same --tuner-id and --dir: it reruns its unfinished trial and the search goes on. Run the "
              f"same command again to resume.", flush=True)
        os._exit(124)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def _save_space(space: SearchSpace, directory: Path, class_names: list[str]) -> None:
    atomic_write_text(directory / "space.json", json.dumps({
        "name": space.name, "budget": space.budget.describe(),
        "dimensions": {dim.name: list(dim.values) for dim in space.dimensions},
        "base": space.base.to_dict()}, indent=1))
    write_class_names(directory / CLASS_NAMES_FILE, class_names)


def run_search(space: SearchSpace, data: DataSplits, directory: str | Path, tuner: str = "random",
               max_trials: int = 10, epochs: int = 3, config: TrainConfig | None = None, overwrite: bool = False,
               seed: int = 0, initial_points: int | None = None, max_attempts: int = 10_000, mirrored: bool = False,
               timeout: float | None = None, verbose: int = 0) -> SearchOutcome:
    """Search `space` on `data`; raise BudgetError before any training if the budget cannot be met."""
    from search.tuner import make_tuner

    directory = Path(directory)
    config = config or TrainConfig(epochs=epochs)
    if space.base.head.classes != len(data.class_names):
        raise ValueError(f"space {space.name!r} has {space.base.head.classes} classes, dataset {data.name!r} "
                         f"has {len(data.class_names)}")
    point_cost = check_feasible(space)
    start = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    if not is_worker():
        if overwrite:  # KerasTuner deletes its project (kt/); the records and results are ours
            shutil.rmtree(directory / "records", ignore_errors=True)
            for name in RESULT_FILES:
                (directory / name).unlink(missing_ok=True)
        _save_space(space, directory, data.class_names)
    low_params, low_macs = point_cost(cheapest(point_cost))
    print(f"[search] {space.name}: {len(space.dimensions)} widths vary, {space.size():.3g} points; "
          f"budget {space.budget.describe()}; cheapest point: {low_params:,} params, {low_macs:,} multiply-adds; "
          f"tuner {tuner}, {max_trials} trials", flush=True)
    strategy = None
    if mirrored:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    kt_tuner = make_tuner(tuner, space, config, -(-data.train_size // config.batch_size), directory, max_trials,
                          epochs, seed, overwrite and not is_worker(), initial_points, max_attempts, strategy)
    pipeline = dict(input_shape=space.base.input_shape, classes=space.base.head.classes,
                    batch_size=config.batch_size, output_names=output_names(space.base), raw_shape=data.image_shape)
    train_ds = make_pipeline(data.train, training=True, augment=config.augment, num_examples=data.train_size,
                             seed=seed, **pipeline)
    val_ds = make_pipeline(data.validation, num_examples=data.validation_size, **pipeline)
    timer = watchdog(timeout, directory)
    try:
        kt_tuner.search(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False)
    finally:
        if timer:
            timer.cancel()
    oracle = kt_tuner.oracle
    outcome = SearchOutcome(read_records(directory), getattr(oracle, "screened", 0), getattr(oracle, "rejected", 0),
                            getattr(oracle, "repaired", 0), time.perf_counter() - start)
    if getattr(oracle, "exhausted", False) and len(outcome.records) < max_trials:
        raise BudgetError(f"sampling found no new point within the budget ({space.budget.describe()}) in "
                          f"{max_attempts:,} draws after {len(outcome.records)} trial(s); {outcome.rejected:,} "
                          f"candidates were rejected in all. Loosen the budget or narrow the space towards smaller "
                          f"widths.")
    if not is_worker():
        write_results(directory)
        print(report_text(outcome.records, space.budget.describe()))
        print(f"[search] {len(outcome.records)} trials in {outcome.seconds:.1f} s; candidates screened "
              f"{outcome.screened:,}, rejected by the budget before any trial {outcome.rejected:,}, repaired "
              f"{outcome.repaired:,}; results in {directory}/results.csv, plot {directory}/pareto.png, best spec "
              f"{directory}/best_spec.yaml", flush=True)
    return outcome


def export_best(directory: str | Path, base_dir: str = "saved_models", name: str | None = None):
    """Export the best trial's model (its KerasTuner checkpoint) through `inception_keras.export`."""
    from inception_keras import NetworkSpec, build_model
    from inception_keras.export import export_saved_model

    from search.report import best_record

    directory = Path(directory)
    best = best_record(read_records(directory))
    if best is None:
        raise BudgetError(f"{directory} has no finished trial to export")
    spec = NetworkSpec.from_dict(best["spec"])
    checkpoint = directory / "kt" / f"trial_{best['trial_id']}" / "checkpoint.weights.h5"
    if not checkpoint.exists():
        raise BudgetError(f"the best trial's weights are missing: {checkpoint}")
    model = build_model(spec)
    model.load_weights(checkpoint, skip_mismatch=False)
    class_names = read_class_names(directory / CLASS_NAMES_FILE)
    return export_saved_model(model, spec, class_names, base_dir, name or f"{spec.name}")
