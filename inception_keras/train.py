"""Training with `model.fit`: one loss per output, the paper's recipe or Adam, standard callbacks.

Szegedy et al. (2015), section 6: SGD with momentum 0.9, learning rate x 0.96 every 8
epochs, Polyak averaging (here: the optimizer's EMA of weights, swapped in for
validation and checkpoints); aux losses weighted 0.3.

The run directory it writes (`out_dir`) is described in `inception_keras.training.run_dir`; its
callbacks are in `inception_keras.training.callbacks`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from inception_keras.utils.atomic import atomic_write_text
from inception_keras.builder import build_model
from inception_keras.training.callbacks import (AtomicBackupAndRestore, BestCheckpoint, Diverged, HistoryLog,
                                                StopOnNonFinite, Throughput)
from inception_keras import memory
from inception_keras.cost import network_cost
from inception_keras.utils.cpu import native_bf16
from inception_keras.data import DataSplits, reading_images, require_classes, shard, training_pipelines
from inception_keras.training.distribute import Distribution, Snapshot, local_only
from inception_keras.utils.errors import UserError
from inception_keras.training.locking import DirectoryLock
from inception_keras.training.run_dir import (BEST_FILE, HEAD_DIR, RUN_FILES, RunDamagedError,  # noqa: F401 (API)
                                     RunExistsError, RunMismatchError, RunState, best_from_history, best_record,
                                     check_record, clear_run, columns, is_finished, model_problem, open_run,
                                     read_history, read_history_rows, run_record, save_best, weights_finite,
                                     write_run_files)
from inception_keras.spec import NetworkSpec, SpecError

OPTIMIZERS = ("sgd", "adam")
FREEZE = ("none", "base", "batch_norm")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclass
class TrainConfig:
    """How to train. `learning_rate` None means 0.01 for SGD, 0.001 for Adam.

    A resumed run may change `epochs` and `early_stopping_patience` (RESUMABLE); every other
    field is part of the run's recipe and must stay as it was started.
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    learning_rate: float | None = None
    momentum: float = 0.9
    decay_every_epochs: int = 8
    decay_rate: float = 0.96
    ema: bool = True
    ema_momentum: float = 0.99
    label_smoothing: float = 0.0
    augment: bool = False
    early_stopping_patience: int = 0
    freeze: str = "none"
    precision: str = "float32"
    jit: bool = False
    seed: int | None = 0
    elastic: "ElasticWidths | None" = None  # inception_keras.elastic: train so that every child is a model too
    elastic_samples: int = 2

    def __post_init__(self):
        checks = [("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1),
                  ("optimizer", self.optimizer in OPTIMIZERS),
                  ("learning_rate", self.learning_rate is None or self.learning_rate > 0),
                  ("decay_every_epochs", self.decay_every_epochs >= 1), ("decay_rate", 0 < self.decay_rate <= 1),
                  ("ema_momentum", 0 < self.ema_momentum < 1), ("label_smoothing", 0 <= self.label_smoothing < 1),
                  ("early_stopping_patience", self.early_stopping_patience >= 0), ("freeze", self.freeze in FREEZE),
                  ("precision", self.precision in PRECISIONS), ("elastic_samples", self.elastic_samples >= 0),
                  ("precision", self.elastic is None or self.precision != "mixed_float16")]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name}: invalid value {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What a training run did; also written to `OUT/summary.json`.

    `best_val_accuracy` and `best_epoch` (from 1; 0: none) are those of the model in best.keras.
    """

    best_val_accuracy: float
    monitor: str
    epochs_total: int
    epochs_this_run: int
    resumed_from_epoch: int
    wall_seconds: float
    train_images_per_second: float
    out_dir: str
    best_model: str
    best_epoch: int = 0
    history: dict = field(default_factory=dict)


def is_head_layer(name: str) -> bool:
    """The classifier `predictions` and every layer of the aux heads (`aux_1_proj_conv`, `aux_1`, ...)."""
    return name == "predictions" or name.startswith("aux_")


def apply_freeze(model: keras.Model, freeze: str) -> None:
    """`base`: only the heads train; `batch_norm`: all but batch norm, which then runs in inference mode
    (a Keras BatchNormalization with trainable False normalizes with its moving statistics)."""
    for layer in model.layers:
        if freeze == "base":
            layer.trainable = is_head_layer(layer.name)
        elif freeze == "batch_norm":
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


def output_names(spec: NetworkSpec) -> tuple[str, ...]:
    if not spec.aux_heads:
        return ()
    return ("predictions",) + tuple(f"aux_{i}" for i in range(1, len(spec.aux_heads) + 1))


def monitor_name(spec: NetworkSpec) -> str:
    return "val_predictions_accuracy" if spec.aux_heads else "val_accuracy"


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    ema = dict(use_ema=config.ema, ema_momentum=config.ema_momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate or 1e-3, **ema)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate or 0.01, decay_steps=config.decay_every_epochs * steps_per_epoch,
        decay_rate=config.decay_rate, staircase=True)
    return keras.optimizers.SGD(schedule, momentum=config.momentum, **ema)


def output_metrics(spec: NetworkSpec) -> list:
    """An output's metrics: accuracy, and top-5 accuracy with at least 5 classes."""
    found = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if spec.head.classes >= 5:
        found.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
    return found


def compile_model(model: keras.Model, spec: NetworkSpec, config: TrainConfig, steps_per_epoch: int) -> None:
    """One loss per output weighted as the spec says; accuracy (and top-5 with >= 5 classes) per output.

    Losses are computed in float32 whatever the precision; a `mixed_float16` model gets Keras' dynamic
    loss scaling (LossScaleOptimizer, which `compile` wraps around the optimizer). `config.jit` is XLA.
    """

    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    names = output_names(spec)
    if names:
        weights = {"predictions": 1.0, **{f"aux_{i}": aux.loss_weight for i, aux in enumerate(spec.aux_heads, 1)}}
        model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss={name: loss for name in names},
                      loss_weights=weights, metrics={name: output_metrics(spec) for name in names}, jit_compile=config.jit)
    else:
        model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=loss, metrics=output_metrics(spec),
                      jit_compile=config.jit)


class TrainingDivergedError(UserError):
    """The loss became NaN or infinite; the run directory is left as after the last good epoch."""


def standard_callbacks(run_dir: Path, spec: NetworkSpec, config: TrainConfig, rows: list[dict],
                       best: dict | None, snapshot=None, chief: bool = True) -> list:
    """HistoryLog, (SwapEMAWeights,) BestCheckpoint, AtomicBackupAndRestore, TensorBoard, EarlyStopping.

    Order matters at each epoch's end, after StopOnNonFinite (which `train` puts first): the
    history row, then the checkpoint, then the backup. A kill before the backup is written reruns
    the epoch (its row is replaced); a kill after it finds best.keras already up to date. The
    backup holds the raw weights; the checkpoint swaps the EMA weights in for its own save, and
    SwapEMAWeights swaps them in for validation only. `rows` (earlier epochs of a resumed run) seed
    the history, `best` (what best.keras holds) the checkpoint.

    Several JAX processes: the chief's `snapshot` makes the checkpoint and the backup save a
    single-process copy; every other process (`chief=False`) runs the same steps with no writes:
    it restores the chief's backup at the start and swaps the EMA weights in for validation.
    """
    swap = [keras.callbacks.SwapEMAWeights()] if config.ema else []
    stop = [keras.callbacks.EarlyStopping(monitor=monitor_name(spec), mode="max",
                                          patience=config.early_stopping_patience)] \
        if config.early_stopping_patience else []
    if not chief:
        return swap + [AtomicBackupAndRestore(run_dir / "backup", write=False)] + stop
    return [HistoryLog(run_dir / "history.csv", rows), *swap,
            BestCheckpoint(run_dir / BEST_FILE, monitor_name(spec), config.ema, best, snapshot),
            AtomicBackupAndRestore(run_dir / "backup", snapshot), keras.callbacks.TensorBoard(str(run_dir / "logs")),
            *stop]


def _final_best(run_dir: Path, checkpoint: BestCheckpoint, model: keras.Model, rows: list[dict]) -> dict | None:
    """Make sure a finished run ends with a best.keras that loads: else the final model becomes it."""
    path = run_dir / BEST_FILE
    if checkpoint.best is not None and path.exists():
        problem = model_problem(path)
        if problem is None:
            return checkpoint.best
        print(f"note: {problem}")
    last = best_from_history(rows[-1:], checkpoint.monitor)
    if checkpoint.snapshot is not None:
        model = checkpoint.snapshot(model)
    if last is None or not weights_finite(model):
        return None
    save_best(model, path, last)
    print(f"note: {path}: wrote the final model (epoch {last['epoch']})")
    return last


def _check_inputs(spec: NetworkSpec, data: DataSplits, config: TrainConfig) -> None:
    """Refuse what cannot train, before anything is built or written: the spec, channels, classes, memory."""
    cost = network_cost(spec)
    if spec.input_shape[2] not in (1, 3):  # any width costs and builds; images come grey or RGB
        raise SpecError("input_shape[2]", f"images are fed with 1 (grey) or 3 (RGB) channels, "
                                          f"got {spec.input_shape[2]}")
    require_classes(spec.head.classes, data, f"spec {spec.name!r}",
                    f"use spec.with_classes({len(data.class_names)})")
    needed = memory.estimate(cost, config.batch_size, config.optimizer, config.ema).training
    memory.check(cost, f"training at batch {config.batch_size}", needed,
                 "use a smaller --batch-size, --input-size or widths")


def _diverged_message(stop: Diverged, run_dir: Path | None, best: dict | None) -> str:
    text = f"training stopped at epoch {stop.epoch}: the {stop.key} became {stop.value} (try a lower learning rate)"
    if run_dir is None:
        return text
    holds = (f"{run_dir / BEST_FILE} holds epoch {best['epoch']} ({best['monitor']} {best['score']:.4f})"
             if best else f"no {BEST_FILE} was written")
    rerun = f"resumes after epoch {stop.epoch - 1}" if stop.epoch > 1 else "starts it again"
    return f"{text}; {holds}; --overwrite starts afresh, rerunning {rerun}"


def train(spec: NetworkSpec, data: DataSplits, out_dir: str | Path | None = None, config: TrainConfig | None = None,
          callbacks: list | None = None, standard: bool = True, overwrite: bool = False,
          verbose: int | str = "auto", weights: str | Path | None = None,
          distribution: Distribution | None = None) -> tuple[keras.Model, TrainResult]:
    """Build `spec` and fit it on `data`.

    With `out_dir` (and `standard`), the run directory is locked for the run
    (`inception_keras.training.locking.DirectoryLock`; another process there is a UserError naming it)
    and records what the run was started with (`run.json`, see `run_record`). Started again with
    the same arguments, a run killed at any point, SIGKILL included, continues after its last
    finished epoch; the backup, history and best.keras it relies on are checked first (a damaged
    best.keras is removed and rewritten by the next epoch, a damaged backup falls back to the one
    before it). A resumed run must be the same run: another spec, input size, dataset, class
    names, starting weights (path or content), freeze mode or recipe is refused (RunMismatchError
    naming the difference) before anything is touched; a directory where no epoch finished has
    nothing to resume and takes the new run. The record is written once the run has started. Only `config.epochs`
    (to stop earlier, or train longer than first planned; an epoch count already reached finishes the run at once) and
    `config.early_stopping_patience` may change. A finished run (summary.json written) raises
    RunExistsError: it keeps no optimizer state to continue from. `overwrite=True` removes the
    run's files (finished or interrupted) and starts afresh; it removes nothing from a directory
    that holds anything a run does not write, or no run.json (NotOursError naming the file).

    Args:
        spec, data: the network (its class count must be the dataset's) and the data.
        out_dir: the run directory (see above); summary.json is written there even without `standard`.
        config: how to train (`config.freeze` freezes the base or batch norm).
        callbacks: passed to `model.fit` as they are, after the standard ones.
        standard: use the standard callbacks, lock and run record (needs `out_dir`).
        overwrite: start afresh in `out_dir`.
        verbose: Keras' progress output; "auto": bars on a terminal, a line per epoch otherwise.
        weights: start from a file's weights (`inception_keras.pretrained.convert.load_weights`):
            a torchvision, TF-slim, Caffe or `.keras` file; classifiers whose class count differs
            and heads the file lacks start fresh. A resumed run restores its own weights instead.
        distribution: `inception_keras.training.distribute.Distribution`: MirroredStrategy (build and compile
            in its scope; `config.batch_size` is the global batch), or JAX data parallelism across
            processes (each reads its own shard in batches of batch_size / processes; only process 0
            writes, and locks, `out_dir`, which must be one directory all processes see). Default: one device.

    Returns:
        The model (EMA weights when `config.ema`) and a TrainResult; `best_val_accuracy` and
        `best_epoch` are those of the model in best.keras.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (nothing of that epoch is written).
        RunExistsError, RunMismatchError, RunDamagedError, DirectoryInUseError: see above.
    """
    config = config or TrainConfig()
    distribution = distribution or Distribution()
    _check_inputs(spec, data, config)
    if config.elastic is not None and (distribution.kind not in ("none", "mirrored") or
                                       keras.backend.backend() not in ("tensorflow", "jax")):
        raise UserError(f"elastic training runs on one device or under MirroredStrategy, with the TensorFlow or JAX "
                        f"backend (here: distribution {distribution.kind!r}, backend {keras.backend.backend()!r})")
    if out_dir is None or not standard:
        return _train(spec, data, None, out_dir, config, callbacks, verbose, weights, distribution=distribution)
    run_dir = Path(out_dir)
    lock = DirectoryLock(run_dir, what="training run") if distribution.is_chief else contextlib.nullcontext()
    with lock:
        return _train(spec, data, run_dir, out_dir, config, callbacks, verbose, weights, overwrite, distribution)


def precision_note(precision: str) -> str | None:
    """A warning for `mixed_bfloat16` where bfloat16 would be emulated (Keras on a CPU with no native bf16)."""
    if precision != "mixed_bfloat16" or native_bf16() is not False:
        return None
    if not all(device.lower().startswith("cpu") for device in keras.distribution.list_devices()):
        return None
    return ("this CPU has no bf16 arithmetic (AVX512-BF16 or AMX) and no GPU is in use: mixed_bfloat16 is emulated, "
            "measured 4-10x slower than float32 training on an AVX2 CPU; --precision float32 is faster")


def _train(spec: NetworkSpec, data: DataSplits, run_dir: Path | None, out_dir, config: TrainConfig, callbacks,
           verbose, weights, overwrite: bool = False, distribution: Distribution | None = None
           ) -> tuple[keras.Model, TrainResult]:
    """`train` for a locked `run_dir` (None: no standard callbacks)."""
    distribution = distribution or Distribution()
    chief = distribution.is_chief
    state = RunState()
    if run_dir is not None and chief:
        record = run_record(spec, data, config, weights)
        with local_only():  # it may load best.keras: in this process alone
            state = open_run(run_dir, record, overwrite, config.epochs, monitor_name(spec))
    distribution.barrier("run directory opened")
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    local = shard(data, distribution.num_processes, distribution.process_id)
    train_ds, val_ds, steps = training_pipelines(
        local, spec.input_shape, spec.head.classes, distribution.local_batch(config.batch_size), output_names(spec),
        config.augment, config.seed, drop_remainder=distribution.multi_process)
    with distribution.scope():
        model = build_model(spec, precision=config.precision)
        if weights is not None and not state.resumed_from:
            from inception_keras.pretrained.convert import load_weights

            report = load_weights(model, weights, fresh_heads=True)
            if chief:
                print(f"{weights}: {report.describe()}")
        apply_freeze(model, config.freeze)
        fitted = model
        if config.elastic is not None:
            from inception_keras.elastic import ElasticTrainer

            fitted = ElasticTrainer(model, config.elastic, config.elastic_samples, config.seed or 0)
        compile_model(fitted, spec, config, steps)
    if run_dir is not None and chief:
        write_run_files(run_dir, record, spec, data.class_names)
    note = precision_note(config.precision)
    if chief and note:
        print(f"note: {note}")

    throughput = Throughput()
    snapshot = Snapshot(model) if distribution.multi_process and chief and run_dir is not None else None
    standard = [] if run_dir is None else standard_callbacks(run_dir, spec, config, state.rows, state.best,
                                                             snapshot, chief)
    checkpoint = next((c for c in standard if isinstance(c, BestCheckpoint)), None)
    if verbose == "auto":  # progress bars on a terminal, one line per epoch in a log
        verbose = 1 if sys.stdout.isatty() else 2
    if not chief:
        verbose = 0
    start = time.perf_counter()
    try:
        with reading_images(data):
            history = fitted.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=verbose,
                                shuffle=False, callbacks=[throughput, StopOnNonFinite(), *standard, *(callbacks or [])])
    except Diverged as stop:
        raise TrainingDivergedError(_diverged_message(stop, run_dir, checkpoint and checkpoint.best)) from None
    wall = time.perf_counter() - start
    monitor = monitor_name(spec)
    if run_dir is not None and chief:
        rows = next(c for c in standard if isinstance(c, HistoryLog)).rows
        with local_only():
            best = _final_best(run_dir, checkpoint, fitted, rows)
        full = columns(rows)
    else:
        full = {key: [float(v) for v in values] for key, values in history.history.items()}
        best = best_from_history([{"epoch": i, monitor: v} for i, v in enumerate(full.get(monitor, []))], monitor)
    result = TrainResult(
        best_val_accuracy=best["score"] if best else math.nan,
        monitor=monitor,
        epochs_total=len(full.get(monitor, [])),
        epochs_this_run=throughput.epochs,
        resumed_from_epoch=state.resumed_from,
        wall_seconds=round(wall, 2),
        train_images_per_second=round(local.train_size * distribution.num_processes * throughput.epochs
                                      / throughput.seconds, 1) if throughput.seconds else 0.0,
        out_dir=str(out_dir) if out_dir is not None else "",
        best_model=str(run_dir / BEST_FILE) if run_dir is not None else "",
        best_epoch=best["epoch"] if best else 0,
        history=full,
    )
    if out_dir is not None and chief:
        atomic_write_text(Path(out_dir) / "summary.json", json.dumps(asdict(result), indent=2))
    if run_dir is not None and chief:
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
    distribution.barrier("run finished")
    return model, result


def fine_tune(spec: NetworkSpec, data: DataSplits, out_dir: str | Path, config: TrainConfig, weights: str | Path,
              fine_tune_epochs: int = 0, fine_tune_learning_rate: float | None = None, overwrite: bool = False,
              verbose: int | str = "auto") -> tuple[keras.Model, TrainResult]:
    """Transfer learning as in the Keras guide: train the new head(s) on a frozen base, then optionally everything.

    Phase 1 (`config.epochs`): only the classifiers train; the base, batch norm included, is
    frozen (batch norm in inference mode). Phase 2 (`fine_tune_epochs` > 0) starts from phase 1's
    best model and trains everything but batch norm (still in inference mode) at
    `fine_tune_learning_rate` (default a tenth of phase 1's). Phase 1 writes to `out_dir/head`
    when there is a phase 2, which writes to `out_dir`; rerun the same call to resume either
    (each phase is a run directory as `train` describes; a finished phase 1 is checked to have
    been started with the same weights file, path and content, spec, data and recipe before phase 2
    resumes). `out_dir` is locked throughout; `overwrite` removes both phases' files and starts afresh.
    """
    _check_inputs(spec, data, config)
    out_dir = Path(out_dir)
    head_dir = out_dir / HEAD_DIR if fine_tune_epochs else out_dir
    first = dataclasses.replace(config, freeze="base")
    with DirectoryLock(out_dir, what="training run"):
        if overwrite:
            clear_run(out_dir)
        if not fine_tune_epochs:
            return _train(spec, data, out_dir, out_dir, first, None, verbose, weights)
        if is_finished(head_dir):  # phase 1 is done: it must be this run's, started from these weights
            check_record(head_dir, run_record(spec, data, first, weights))
        else:
            train(spec, data, head_dir, first, verbose=verbose, weights=weights)
        rate = fine_tune_learning_rate or (config.learning_rate or (0.01 if config.optimizer == "sgd" else 1e-3)) / 10
        second = dataclasses.replace(config, freeze="batch_norm", epochs=fine_tune_epochs, learning_rate=rate)
        print(f"fine-tuning everything but batch norm for {fine_tune_epochs} epochs at learning rate {rate:g}, "
              f"from {head_dir / BEST_FILE}")
        return _train(spec, data, out_dir, out_dir, second, None, verbose, head_dir / BEST_FILE)


def summary_line(result: TrainResult) -> str:
    """One line: the best score and its epoch, epochs, wall time, training throughput."""
    return (f"best {result.monitor}: {result.best_val_accuracy:.4f} (epoch {result.best_epoch}) | epochs: "
            f"{result.epochs_total} ({result.epochs_this_run} this run) | wall time: {result.wall_seconds:.1f} s | "
            f"training: {result.train_images_per_second:,.0f} images/s")
