"""Run a budgeted architecture search: feasibility first, then KerasTuner, then the report.

Resumable: run again with the same directory (without `overwrite`) and completed
trials are kept, the interrupted one runs again. Distributed: set the KerasTuner
variables (`configure_distributed`) in the chief and in every worker, same command.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from inception_keras.child_scoring import STATISTICS_FILE
from inception_keras.data import DataSplits, require_classes, training_pipelines
from inception_keras.serialize import elastic_choices, is_elastic_run
from inception_keras.utils.atomic import atomic_write_text
from inception_keras.utils.errors import error_text, short_repr
from inception_keras.training.locking import DirectoryLock
from inception_keras.training.owned import clear_owned, temporaries
from inception_keras.cost import network_cost
from inception_keras.scaling import scale_to_budget
from inception_keras.spec import SpecError
from inception_keras.inherit_rules import network_difference
from inception_keras.serialize import CLASS_NAMES_FILE, load_document, read_class_names, write_class_names
from inception_keras.train import TrainConfig, output_names, precision_note

from search.budget import BudgetError, PointCost, check_feasible, cheapest
from search.report import (BASELINE_FILE, PARENT_FILE, SearchError, read_baseline, read_parent, read_records,
                           report_text, write_results)
from search.space import SearchSpace

CHIEF_ID = "chief"
RESULT_FILES = ("results.json", "results.csv", "pareto.png", "best_spec.yaml", "space.json", "class_names.txt")
DEFAULT_RECALIBRATE_BATCHES = 20
_EVENTS = {"events.out.tfevents.*": None}
SEARCH_TREE = {  # what a search writes (inception_keras.training.owned): --overwrite removes these and nothing else
    **{name: None for name in RESULT_FILES + (PARENT_FILE, BASELINE_FILE)},
    **temporaries(*RESULT_FILES, PARENT_FILE, BASELINE_FILE),
    "records": {"trial_*.json": None, ".trial_*.json.*": None},
    "kt": {"*.json": None, "trial_*": {"*.json": None, "checkpoint*": None, STATISTICS_FILE: None,
                                       **temporaries(STATISTICS_FILE)}},  # KerasTuner's project
    "logs": {"*": {"execution*": {**_EVENTS, "train": _EVENTS, "validation": _EVENTS}}},  # TensorBoard, per trial
}
CHIEF_WAIT_SECONDS = 300.0
TUNER_ID = re.compile(r"[A-Za-z0-9_.-]+")
FAILURES = re.compile(r"Number of consecutive failures exceeded the limit of (\d+)")


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
    if role == "worker" and (not TUNER_ID.fullmatch(tuner_id) or tuner_id.strip(".") == ""):
        raise ValueError(f"--tuner-id {tuner_id!r}: use letters, digits, '_', '-' and '.' only (e.g. worker0)")
    os.environ["KERASTUNER_TUNER_ID"] = CHIEF_ID if role == "chief" else tuner_id
    os.environ["KERASTUNER_ORACLE_IP"] = ip
    os.environ["KERASTUNER_ORACLE_PORT"] = str(port)


def is_worker() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and CHIEF_ID not in os.environ.get("KERASTUNER_TUNER_ID", "")


def is_chief() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ and CHIEF_ID in os.environ.get("KERASTUNER_TUNER_ID", "")


def chief_address() -> str:
    return f"{os.environ.get('KERASTUNER_ORACLE_IP')}:{os.environ.get('KERASTUNER_ORACLE_PORT')}"


def check_chief_address() -> None:
    """A SearchError if the chief cannot serve the oracle on its address (taken, or not this machine's)."""
    ip, port = os.environ["KERASTUNER_ORACLE_IP"], int(os.environ["KERASTUNER_ORACLE_PORT"])
    try:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((ip, port))
    except OSError as error:
        raise SearchError(f"the chief cannot serve on {ip}:{port}: {error.strerror or error} (another chief "
                          f"there? choose another --oracle-port; --oracle-ip must be this machine's)") from None


def wait_for_chief(seconds: float) -> float:
    """Wait until the chief's oracle answers; return the seconds waited. A SearchError if none answers in time."""
    import grpc

    start = time.monotonic()
    channel = grpc.insecure_channel(chief_address())
    try:
        grpc.channel_ready_future(channel).result(timeout=seconds)
    except grpc.FutureTimeoutError:
        raise SearchError(f"no chief answers at {chief_address()} (waited {seconds:.0f} s): start the chief "
                          f"(the same command with --role chief) first, or fix --oracle-ip / --oracle-port") from None
    finally:
        channel.close()
    return time.monotonic() - start


def _count(number: int) -> str:
    """A count for a message: exact up to a million, then in scientific notation (also beyond float's range)."""
    if number < 1_000_000:
        return f"{number:,}"
    digits = str(number)
    return f"{digits[0]}.{digits[1:3]}e{len(digits) - 1}"


def watchdog(seconds: float | None, directory: Path):
    """Ends the process if the search has not finished in `seconds` (KerasTuner's chief waits forever)."""
    if not seconds:
        return None

    def expire():
        done = len(read_records(directory, warn_damaged=False))
        print(f"[search] timed out after {seconds:.0f} s with {done} trial(s) finished. If a worker died, restart it "
              f"with the same --tuner-id and --dir: it reruns its unfinished trial and the search goes on. Run the "
              f"same command again to resume.", flush=True)
        os._exit(124)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def _space_record(space: SearchSpace, parent=None, executions_per_trial: int = 1) -> dict:
    """What `space.json` holds: the space as plain JSON values."""
    inherits = None if parent is None else {
        "source": str(Path(parent.source).resolve()), "sha256": _parent_digest(parent.source),
        "recalibrate_batches": parent.recalibrate_batches, "steps": parent.steps,
        **({"importance": parent.importance} if parent.importance != "l1" else {})}
    return json.loads(json.dumps({
        "name": space.name, "budget": space.budget.describe(),
        "dimensions": {dim.name: list(dim.values) for dim in space.dimensions},
        "base": space.base.to_dict(), "parent": inherits,
        "executions_per_trial": executions_per_trial if executions_per_trial > 1 else None}))


def _parent_digest(source: str) -> str | None:
    """SHA-256 of the parent's model file (a run directory's best.keras)."""
    from inception_keras.training.run_dir import BEST_FILE, weights_digest

    path = Path(source)
    return weights_digest(path / BEST_FILE if path.is_dir() else path)


def load_parent(source: str | Path, space: SearchSpace, recalibrate_batches: int = DEFAULT_RECALIBRATE_BATCHES,
                steps: int | None = None):
    """The parent every trial of a search of `space` inherits from: a training run directory or a `.keras` file
    (an imported pretrained one too) whose modules include those the space varies.

    Raises:
        SearchError: it cannot be loaded, or it lacks a module the space varies.
    """
    from inception_keras.export import ExportError, load_run
    from inception_keras.inherit import NarrowError, model_spec

    from search.tuner import Parent

    try:
        model, spec, _ = load_run(source)
        spec = spec or model_spec(model)
    except (ExportError, NarrowError) as error:
        raise SearchError(f"--parent {source}: {error}") from None
    missing = sorted({dim.module for dim in space.dimensions} - set(spec.module_names()))
    if missing:
        raise SearchError(f"--parent {source}: its spec {spec.name!r} has no module {missing[0]}, which search space "
                          f"{space.name!r} varies; its modules are {', '.join(spec.module_names())}")
    batches = recalibrate_batches if spec.normalization == "batch_norm" else 0
    if is_elastic_run(source):  # its children are its first channels, usable as they are
        return Parent(model, spec, str(source), batches, 0 if steps is None else steps, importance="first",
                      trained=elastic_choices(source))
    return Parent(model, spec, str(source), batches, steps)


def _training(steps: int | None, epochs: int) -> str:
    return "scored without training" if steps == 0 else f"{steps} steps" if steps else f"{epochs} epochs"


def parent_space(space: SearchSpace, parent) -> SearchSpace:
    """`space` over the parent's network: its base becomes the parent's spec at the base's class count and input size
    (the widths the space varies, and its budget, apply to the parent's architecture)."""
    base = parent.spec.with_classes(space.base.head.classes).replace(input_shape=space.base.input_shape)
    return space.with_base(base)


def _parent_point(parent, space: SearchSpace, config: TrainConfig, val_ds) -> dict:
    """The parent's params, multiply-adds and, where it classifies this data at this size, validation accuracy."""
    from inception_keras.train import compile_model, monitor_name

    cost = network_cost(parent.spec)
    inference = space.budget.model == "inference"
    accuracy = None
    if parent.spec.input_shape == space.base.input_shape and parent.spec.head == space.base.head and \
            parent.spec.aux_heads == space.base.aux_heads:
        compile_model(parent.model, parent.spec, config, 1)
        scores = parent.model.evaluate(val_ds, verbose=0, return_dict=True)
        accuracy = float(scores[monitor_name(parent.spec).removeprefix("val_")])
    return {"source": parent.source, "params": cost.inference_params if inference else cost.total_params,
            "macs": cost.inference_macs if inference else cost.total_macs,
            "inference_params": cost.inference_params, "inference_macs": cost.inference_macs,
            "total_params": cost.total_params, "total_macs": cost.total_macs, "val_accuracy": accuracy}


def _prepare_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise SearchError(f"search directory {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SearchError(f"cannot create the search directory {directory}: {error.strerror or error}") from None


def _clear(directory: Path) -> None:
    """Remove what a search wrote in `directory` (SEARCH_TREE), refusing a directory that holds anything else."""
    try:
        clear_owned(directory, SEARCH_TREE, "space.json", "search")
    except OSError as error:
        raise SearchError(f"cannot clear the search in {directory} for --overwrite: {error.strerror or error} "
                          f"({error.filename})") from None


def _read_saved(path: Path, read) -> object:
    try:
        return read(path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SearchError(f"{path} is damaged ({error_text(error, 120)}): delete it to resume with this command's "
                          f"settings, or start afresh with --overwrite") from None


def check_resume(space: SearchSpace, directory: Path, class_names: list[str], parent=None,
                 executions_per_trial: int = 1) -> None:
    """A SearchError if `directory` holds a search of another space, parent or dataset, or its records of them are
    damaged."""
    if (directory / "space.json").exists():
        saved = _read_saved(directory / "space.json", lambda path: load_document(path, "search record"))
        current = _space_record(space, parent, executions_per_trial)
        if not isinstance(saved, dict):
            saved = {}
        differ = [key for key in current if saved.get(key) != current[key]]
        if differ == ["parent"]:
            raise SearchError(f"{directory} holds a search {_parent_change(saved.get('parent'), current['parent'])}; "
                              f"use another --dir, or --overwrite to start afresh")
        if differ:
            raise SearchError(f"{directory} holds a search of another space ({', '.join(differ)} differ: it searched "
                              f"{saved.get('name')!r} with budget {saved.get('budget')!r}); use another --dir, or "
                              f"--overwrite to start afresh")
    if (directory / CLASS_NAMES_FILE).exists():
        saved_names = _read_saved(directory / CLASS_NAMES_FILE, read_class_names)
        if saved_names != list(class_names):
            raise SearchError(f"{directory} holds a search on other classes ({len(saved_names)}: "
                              f"{', '.join(saved_names[:5])}{', ...' if len(saved_names) > 5 else ''}) than this "
                              f"dataset's ({len(class_names)}); use another --dir, or --overwrite to start afresh")


def _parent_words(parent) -> str:
    if not isinstance(parent, dict):
        return "no parent"
    return f"{parent.get('source')} (SHA-256 {parent.get('sha256')})"


def _parent_change(saved, current) -> str:
    """How the parent a search in a directory inherited from differs from this run's, in words."""
    if not isinstance(saved, dict) or current is None:
        return f"of the same space with {_parent_words(saved)} as its parent, not {_parent_words(current)}"
    if saved.get("source") == current["source"] and saved.get("sha256") != current["sha256"]:
        return (f"inheriting from {current['source']}, whose model changed since: SHA-256 {saved.get('sha256')} "
                f"recorded, {current['sha256']} now")
    if saved.get("source") != current["source"]:
        return f"inheriting from {_parent_words(saved)}, not from {_parent_words(current)}"
    settings = [f"{key} {saved.get(key)} recorded, {current[key]} now" for key in ("recalibrate_batches", "steps")
                if saved.get(key) != current[key]]
    return f"inheriting from {current['source']} with other settings ({'; '.join(settings)})"


def _save_space(space: SearchSpace, directory: Path, class_names: list[str], parent=None,
                executions_per_trial: int = 1) -> None:
    try:
        atomic_write_text(directory / "space.json", json.dumps(_space_record(space, parent, executions_per_trial),
                                                               indent=1))
        write_class_names(directory / CLASS_NAMES_FILE, class_names)
    except OSError as error:
        raise SearchError(f"cannot write in the search directory {directory}: {error.strerror or error}") from None


def run_search(space: SearchSpace, data: DataSplits, directory: str | Path, tuner: str = "random",
               max_trials: int = 10, epochs: int = 3, config: TrainConfig | None = None, overwrite: bool = False,
               seed: int = 0, initial_points: int | None = None, max_attempts: int = 10_000, mirrored: bool = False,
               timeout: float | None = None, verbose: int = 0, parent: str | Path | None = None,
               recalibrate_batches: int = DEFAULT_RECALIBRATE_BATCHES, steps: int | None = None,
               executions_per_trial: int = 1, latency_fraction: float | None = None) -> SearchOutcome:
    """Search `space` on `data`; raise BudgetError before any training if the budget cannot be met.

    With `parent` (a training run directory or `.keras` file, an imported pretrained one too, whose modules include
    those the space varies; the space's base becomes its spec at the base's class count and input size) every
    trial starts from `inception_keras.inherit.narrow` of it, re-estimates batch-norm
    statistics on `recalibrate_batches` training batches (none without batch norm), then trains `steps` steps
    (None: `epochs` epochs; 0: none, scored as it is); reduce widths that cannot inherit (0 where the parent has a
    bottleneck, or the reverse) leave the space before any trial. The parent's own point goes to `parent.json`.
    Each trial trains `executions_per_trial` times; its record holds the mean score, its standard deviation and the
    count. `latency_fraction` sets a latency budget of that fraction of the base's predicted latency on this machine
    (in the budget's runtime).

    Raises:
        BudgetError: the budget cannot be met, or sampling found no point within it.
        SearchError: `directory` cannot be used (a file, not writable, damaged, another space's or
            dataset's search), a worker's chief does not answer, or trials keep failing.
        DataError: an image of the dataset cannot be read (named).
    """

    directory = Path(directory)
    config = config or TrainConfig(epochs=epochs)
    require_classes(space.base.head.classes, data, f"space {space.name!r}")
    inherit = None
    if parent is not None:
        inherit = load_parent(parent, space, recalibrate_batches, steps)
        difference = network_difference(inherit.spec, space.base, fresh_heads=True)
        if difference is not None:
            field, theirs, base = difference
            print(f"[search] note: the parent ({inherit.spec.name}) is another network than the base of space "
                  f"{space.name!r} ({field}: {short_repr(theirs)} in the parent, {short_repr(base)} in the base): "
                  f"the space's widths are searched on the parent's network", flush=True)
        space, left_out = inherit.restrict(parent_space(space, inherit))
        recalibration = f"batch norm recalibrated on {inherit.recalibrate_batches} batches, then " \
            if inherit.spec.normalization == "batch_norm" else "no batch norm to recalibrate; "
        elastic = " an elastic parent: each trial is its first channels," if inherit.importance == "first" else ""
        print(f"[search] every trial inherits from {parent} ({inherit.spec.name}):{elastic} {recalibration}"
              f"{_training(inherit.steps, epochs)}; {_count(left_out)} points of the space cannot inherit and are "
              f"left out", flush=True)
    latency = _latency_predictor(space) if space.budget.max_latency_ms is not None or latency_fraction else None
    if latency_fraction:
        base_ms = latency.predict(space.base)
        space = space.with_budget(max_latency_ms=round(latency_fraction * base_ms, 4))
        print(f"[search] latency budget: {latency_fraction:g} of {space.base.name}'s {base_ms:.3f} ms predicted in "
              f"{space.budget.runtime} here: {space.budget.max_latency_ms:g} ms", flush=True)
    point_cost = check_feasible(space, PointCost(space, latency.predict if latency else None))
    start = time.perf_counter()
    _prepare_directory(directory)
    with contextlib.ExitStack() as held:
        if not (is_worker() or is_chief()):  # a chief and its workers share the directory on purpose
            held.enter_context(DirectoryLock(directory, what="search", note=print))
        return _run(space=space, data=data, directory=directory, tuner=tuner, max_trials=max_trials, epochs=epochs,
                    config=config, overwrite=overwrite, seed=seed, initial_points=initial_points,
                    max_attempts=max_attempts, mirrored=mirrored, timeout=timeout, verbose=verbose,
                    point_cost=point_cost, start=start, parent=inherit, executions_per_trial=executions_per_trial)


def _run(*, space, data, directory, tuner, max_trials, epochs, config, overwrite, seed, initial_points, max_attempts,
         mirrored, timeout, verbose, point_cost, start, parent, executions_per_trial) -> SearchOutcome:
    """`run_search` in its prepared (and, unless distributed, locked) directory."""
    import keras

    from search.tuner import make_tuner

    if not is_worker():
        if overwrite:
            _clear(directory)
        else:
            check_resume(space, directory, data.class_names, parent, executions_per_trial)
        _save_space(space, directory, data.class_names, parent, executions_per_trial)
    if is_chief():
        check_chief_address()
    low_params, low_macs = point_cost(cheapest(point_cost))
    print(f"[search] {space.name}: {len(space.dimensions)} widths vary, {_count(space.size())} points; "
          f"budget {space.budget.describe()}; cheapest point: {low_params:,} params, {low_macs:,} multiply-adds; "
          f"tuner {tuner}, {max_trials} trials", flush=True)
    note = precision_note(config.precision)
    if note:
        print(f"[search] note: {note}", flush=True)
    strategy = None
    if mirrored:
        from inception_keras.training.distribute import Distribution

        strategy = Distribution.mirrored().strategy
    with _reloading(directory, overwrite and not is_worker()):
        kt_tuner = make_tuner(tuner, space, config, -(-data.train_size // config.batch_size), directory, max_trials,
                              epochs, seed, overwrite and not is_worker(), initial_points, max_attempts, strategy,
                              dataset=data.name, parent=parent, executions_per_trial=executions_per_trial,
                              max_image_pixels=data.max_image_pixels, point_cost=point_cost)
    train_ds, val_ds, _ = training_pipelines(data, space.base.input_shape, space.base.head.classes,
                                             config.batch_size, output_names(space.base), config.augment, seed)
    kt_tuner.hypermodel.fix_recalibration_batches(train_ds)
    if parent is not None and not is_worker() and not (directory / PARENT_FILE).exists():
        point = _parent_point(parent, space, config, val_ds)
        atomic_write_text(directory / PARENT_FILE, json.dumps(point, indent=1))
        if point["val_accuracy"] is not None:
            print(f"[search] the parent: {point['params']:,} params, validation accuracy {point['val_accuracy']:.4f}",
                  flush=True)
    if is_worker():
        waited = wait_for_chief(min(timeout, CHIEF_WAIT_SECONDS) if timeout else CHIEF_WAIT_SECONDS)
        timeout = max(timeout - waited, 1.0) if timeout else None
    timer = watchdog(timeout, directory)
    try:
        _search(kt_tuner, train_ds, val_ds, epochs, verbose,
                [keras.callbacks.TensorBoard(str(directory / "logs"), write_graph=False)])
    finally:
        if timer:
            timer.cancel()
    if not (is_worker() or is_chief()) and not (directory / BASELINE_FILE).exists() \
            and read_records(directory, warn_damaged=False):  # a distributed search's chief trains nothing
        _score_baseline(kt_tuner.hypermodel, space, train_ds, val_ds, epochs, executions_per_trial, directory,
                        point_cost.latency)
    oracle = kt_tuner.oracle
    records = read_records(directory)
    outcome = SearchOutcome(records, getattr(oracle, "screened", 0), getattr(oracle, "rejected", 0),
                            getattr(oracle, "repaired", 0), time.perf_counter() - start)
    if getattr(oracle, "exhausted", False) and len(outcome.records) < max_trials:
        raise BudgetError(f"sampling found no new point within the budget ({space.budget.describe()}) in "
                          f"{oracle.draws:,} draws after {len(outcome.records)} trial(s); {outcome.rejected:,} "
                          f"candidates were over it in all, each shrunk onto it ({outcome.repaired:,} new points). "
                          f"Loosen the budget or narrow the space towards smaller widths.")
    if not is_worker():
        write_results(directory, records)
        print(report_text(outcome.records, space.budget.describe(), read_parent(directory, warn_damaged=False),
                          read_baseline(directory, warn_damaged=False)))
        print(f"[search] {len(outcome.records)} trials in {outcome.seconds:.1f} s; candidates screened "
              f"{outcome.screened:,}, over the budget before any trial {outcome.rejected:,}, shrunk or repaired "
              f"onto it "
              f"{outcome.repaired:,}; results in {directory}/results.csv, plot {directory}/pareto.png, best spec "
              f"{directory}/best_spec.yaml", flush=True)
    return outcome


def _latency_predictor(space: SearchSpace):
    """The latency predictor of the space's base structure in the budget's runtime (cached, or fitted now)."""
    from inception_keras.export import ExportError
    from inception_keras.export.latency import build_predictor

    print(f"[search] latency budget: predicting each candidate's latency in {space.budget.runtime} on this machine "
          f"(the predictor of {space.base.name}'s structure, fitted once on measured width variants and points of "
          f"the space, and cached)", flush=True)
    try:
        return build_predictor(space.base, space.budget.runtime, draw=space.random_spec,
                               coverage=space.widths_digest())
    except ExportError as error:
        raise SearchError(f"cannot predict latency in {space.budget.runtime}: {error}") from None


def _score_baseline(hypermodel, space: SearchSpace, train_ds, val_ds, epochs: int, executions: int,
                    directory: Path, latency=None) -> None:
    """The width-multiplier baseline: the space's base with every width scaled by the largest factor within the
    budget (`inception_keras.scale_to_budget`), trained and scored as a trial is (same proxy, same executions),
    into `DIR/baseline.json`. Without a budget there is nothing to scale to."""
    from search.tuner import latency_fields

    budget = space.budget
    if not budget.bounded():
        return
    try:
        spec, multiplier = scale_to_budget(space.base, budget, latency=latency)
    except SpecError as error:
        print(f"[search] no width-multiplier baseline: {error.message}", flush=True)
        return
    start = time.perf_counter()
    scores = hypermodel.score(spec, train_ds, val_ds, epochs, executions)
    seconds = time.perf_counter() - start
    cost = network_cost(spec)
    inference = budget.model == "inference"
    accuracy = statistics.fmean(scores)
    point = {"multiplier": multiplier, "params": cost.inference_params if inference else cost.total_params,
             "macs": cost.inference_macs if inference else cost.total_macs,
             "val_accuracy": accuracy if math.isfinite(accuracy) else None,
             "val_accuracy_std": statistics.stdev(scores) if len(scores) > 1 else 0.0, "executions": len(scores),
             "train_seconds": round(seconds, 2), "spec": spec.to_dict(),
             **(latency_fields(spec, budget, latency) if latency else {})}
    atomic_write_text(directory / BASELINE_FILE, json.dumps(point, indent=1))
    print(f"[search] width-multiplier baseline (every width of {space.base.name} x{multiplier:g}): "
          f"{point['params']:,} params, {point['macs']:,} multiply-adds, val accuracy {accuracy:.4f}, "
          f"{seconds:.1f} s", flush=True)


@contextlib.contextmanager
def _reloading(directory: Path, overwrite: bool):
    """A KerasTuner project in `directory/kt` that cannot be reloaded is a SearchError."""
    import tensorflow as tf

    project = directory / "kt"
    reloads = project.exists() and not overwrite
    try:
        yield
    except (ValueError, KeyError, TypeError, IndexError, OSError, tf.errors.OpError) as error:
        if not reloads:
            raise
        raise SearchError(f"{project} holds a KerasTuner project that cannot be reloaded, it is damaged "
                          f"({type(error).__name__}: {error_text(error, 120)}); start afresh with "
                          f"--overwrite") from None


def _search(kt_tuner, train_ds, val_ds, epochs: int, verbose: int, callbacks: list) -> None:
    """`kt_tuner.search`, with KerasTuner's and gRPC's failures said in one line. A TensorBoard callback among
    `callbacks` gets a folder per trial and execution, with the trial's hyperparameters (the HParams dashboard)."""
    import grpc

    from search.tuner import FatalTrialError

    try:
        kt_tuner.search(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False,
                        callbacks=callbacks)
    except FatalTrialError as fatal:
        raise fatal.error from None
    except grpc.RpcError as error:
        code = error.code().name if hasattr(error, "code") else type(error).__name__
        raise SearchError(f"no chief answers at {chief_address()} ({code}): it stopped or was never started; "
                          f"restart the chief with the same --dir, then this worker with the same --tuner-id") from None
    except RuntimeError as error:
        failures = FAILURES.search(str(error))
        if not failures:
            raise
        last = [line for line in str(error).splitlines() if line.strip()][-1].strip()
        raise SearchError(f"{failures.group(1)} trials in a row failed, the last with {last[:300]}; fix that and run "
                          f"the same command to resume") from None


def export_best(directory: str | Path, base_dir: str = "saved_models", name: str | None = None):
    """Export the best trial's model (its KerasTuner checkpoint, or the child narrowed from the parent again with its
    saved batch-norm statistics) through `inception_keras.export`."""
    from inception_keras import NetworkSpec, build_model
    from inception_keras.export import export_saved_model

    from search.report import best_record

    directory = Path(directory)
    best = best_record(read_records(directory, warn_damaged=False))
    if best is None:
        raise BudgetError(f"{directory} has no finished trial to export")
    spec = NetworkSpec.from_dict(best["spec"])
    checkpoint = directory / "kt" / f"trial_{best['trial_id']}" / "checkpoint.weights.h5"
    statistics = checkpoint.with_name(STATISTICS_FILE)
    if statistics.exists() and not checkpoint.exists():  # scored through masks on the parent
        model = _child_of_parent(directory, spec, statistics)
    elif not checkpoint.exists():
        raise BudgetError(f"the best trial's weights are missing: {checkpoint}")
    else:
        model = build_model(spec)
        try:
            model.load_weights(checkpoint, skip_mismatch=False)
        except Exception as error:  # h5py and Keras raise many types for a damaged file
            raise SearchError(f"the best trial's weights {checkpoint} cannot be loaded "
                              f"({error_text(error, 150)})") from None
    class_names = _read_saved(directory / CLASS_NAMES_FILE, read_class_names)
    return export_saved_model(model, spec, class_names, base_dir, name or f"{spec.name}")


def _child_of_parent(directory: Path, spec, statistics: Path):
    """The model of a trial scored through masks: `spec` narrowed from the search's parent (`space.json`: the same
    model file, checked by its SHA-256) with the trial's batch-norm `statistics`."""
    from inception_keras.child_scoring import load_statistics, set_statistics
    from inception_keras.export import ExportError, load_run
    from inception_keras.inherit import NarrowError, model_spec, narrow

    saved = _read_saved(directory / "space.json", lambda path: load_document(path, "search record"))
    parent = saved.get("parent") if isinstance(saved, dict) else None
    if not isinstance(parent, dict) or not isinstance(parent.get("source"), str):
        raise SearchError(f"{directory / 'space.json'} names no parent, which the best trial's model {statistics} "
                          f"is narrowed from")
    source, digest = parent["source"], _parent_digest(parent["source"])
    if digest != parent.get("sha256"):
        raise SearchError(f"the best trial's model is narrowed from its parent {source}, whose model "
                          f"{'is missing' if digest is None else 'changed since the search'} (SHA-256 "
                          f"{parent.get('sha256')} recorded, {digest} now)")
    try:
        model, parent_spec, _ = load_run(source)
        child = narrow(model, parent_spec or model_spec(model), spec, importance=parent.get("importance", "l1"),
                       fresh_heads=True)
        set_statistics(child, _read_saved(statistics, load_statistics))
    except (ExportError, NarrowError, KeyError, ValueError) as error:
        raise SearchError(f"the best trial's model cannot be narrowed from its parent {source} with {statistics} "
                          f"({error_text(error, 150)})") from None
    return child
