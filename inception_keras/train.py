"""Training with `model.fit`: one loss per output, the paper's recipe or Adam, standard callbacks.

Szegedy et al. (2015), section 6: SGD with momentum 0.9, learning rate x 0.96 every 8
epochs, Polyak averaging (here: the optimizer's EMA of weights, swapped in for
validation and checkpoints); aux losses weighted 0.3.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from inception_keras.builder import build_model
from inception_keras.cost import validate
from inception_keras.data import DataSplits, make_pipeline
from inception_keras.errors import UserError
from inception_keras.atomic import atomic_write_text
from inception_keras.serialize import CLASS_NAMES_FILE, save_spec, write_class_names
from inception_keras.spec import NetworkSpec, SpecError

OPTIMIZERS = ("sgd", "adam")
FREEZE = ("none", "base", "batch_norm")


@dataclass
class TrainConfig:
    """How to train. `learning_rate` None means 0.01 for SGD, 0.001 for Adam."""

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
    seed: int | None = 0

    def __post_init__(self):
        checks = [("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1),
                  ("optimizer", self.optimizer in OPTIMIZERS),
                  ("learning_rate", self.learning_rate is None or self.learning_rate > 0),
                  ("decay_every_epochs", self.decay_every_epochs >= 1), ("decay_rate", 0 < self.decay_rate <= 1),
                  ("ema_momentum", 0 < self.ema_momentum < 1), ("label_smoothing", 0 <= self.label_smoothing < 1),
                  ("early_stopping_patience", self.early_stopping_patience >= 0), ("freeze", self.freeze in FREEZE)]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name}: invalid value {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What a training run did; also written to `OUT/summary.json`."""

    best_val_accuracy: float
    monitor: str
    epochs_total: int
    epochs_this_run: int
    resumed_from_epoch: int
    wall_seconds: float
    train_images_per_second: float
    out_dir: str
    best_model: str
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


def compile_model(model: keras.Model, spec: NetworkSpec, config: TrainConfig, steps_per_epoch: int) -> None:
    """One loss per output weighted as the spec says; accuracy (and top-5 with >= 5 classes) per output."""

    def metrics():
        found = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if spec.head.classes >= 5:
            found.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
        return found

    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    names = output_names(spec)
    if names:
        weights = {"predictions": 1.0, **{f"aux_{i}": aux.loss_weight for i, aux in enumerate(spec.aux_heads, 1)}}
        model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss={name: loss for name in names},
                      loss_weights=weights, metrics={name: metrics() for name in names})
    else:
        model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss=loss, metrics=metrics())


class Throughput(keras.callbacks.Callback):
    """Seconds spent on training batches (validation excluded), summed over epochs."""

    def __init__(self):
        super().__init__()
        self.seconds, self.epochs, self._start = 0.0, 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.epochs += 1
            self._start = None

    def on_epoch_end(self, epoch, logs=None):
        self.on_test_begin()


def standard_callbacks(out_dir: Path, spec: NetworkSpec, config: TrainConfig, history: dict) -> list:
    """CSVLogger, BackupAndRestore, (SwapEMAWeights,) ModelCheckpoint, TensorBoard, TerminateOnNaN, EarlyStopping.

    Order matters at each epoch's end: the CSV row is written before the backup (an
    epoch rerun after a kill rewrites its row; `read_history` keeps the last), the
    backup holds the raw weights (before SwapEMAWeights), and the checkpoint the
    averaged ones (after it). `history` (earlier epochs of a resumed run) seeds the
    checkpoint's best value.
    """
    monitor = monitor_name(spec)
    callbacks = [keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=bool(history)),
                 keras.callbacks.BackupAndRestore(str(out_dir / "backup"), double_checkpoint=True)]
    if config.ema:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    checkpoint = keras.callbacks.ModelCheckpoint(str(out_dir / "best.keras"), monitor=monitor, mode="max",
                                                 save_best_only=True)
    if history.get(monitor):
        checkpoint.best = max(history[monitor])
    callbacks += [checkpoint, keras.callbacks.TensorBoard(str(out_dir / "logs")), keras.callbacks.TerminateOnNaN()]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max",
                                                       patience=config.early_stopping_patience))
    return callbacks


def read_history(path: Path) -> dict[str, list[float]]:
    """The CSVLogger file as columns, one entry per epoch (a rerun epoch's last row wins)."""
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        rows = {int(row["epoch"]): row for row in csv.DictReader(handle) if row.get("epoch")}
    ordered = [rows[epoch] for epoch in sorted(rows)]
    return {key: [float(row[key]) for row in ordered] for key in (ordered[0] if ordered else {})}


class RunExistsError(UserError, ValueError):
    """The output directory holds a finished training."""


def _clear_finished_run(out_dir: Path, overwrite: bool) -> None:
    """A finished run (summary.json, no backup/) is kept unless `overwrite`; an interrupted one resumes."""
    if not _is_finished(out_dir):
        return
    if not overwrite:
        raise RunExistsError(f"{out_dir} holds a finished training (summary.json, best.keras): give another output "
                             f"directory, or overwrite it (--overwrite) to train again from scratch")
    for name in ("summary.json", "best.keras", "history.csv"):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "logs", ignore_errors=True)


def train(spec: NetworkSpec, data: DataSplits, out_dir: str | Path | None = None, config: TrainConfig | None = None,
          callbacks: list | None = None, standard: bool = True, overwrite: bool = False,
          verbose: int | str = "auto", weights: str | Path | None = None) -> tuple[keras.Model, TrainResult]:
    """Build `spec` and fit it on `data`.

    Args:
        spec, data: the network (its class count must be the dataset's) and the data.
        out_dir: where the standard callbacks write; a run killed at any point continues from
            its last finished epoch when started again with the same `out_dir`; a finished run
            there raises RunExistsError unless `overwrite`.
        config: how to train (`config.freeze` freezes the base or batch norm).
        callbacks: passed to `model.fit` as they are, after the standard ones.
        standard: use the standard callbacks (needs `out_dir`).
        verbose: Keras' progress output; "auto": bars on a terminal, a line per epoch otherwise.
        weights: start from a file's weights (`inception_keras.pretrained.convert.load_weights`):
            a torchvision, TF-slim, Caffe or `.keras` file; classifiers whose class count differs
            and heads the file lacks start fresh.
    """
    config = config or TrainConfig()
    run_dir = Path(out_dir) if out_dir is not None and standard else None  # where the standard callbacks write
    validate(spec)
    if spec.input_shape[2] not in (1, 3):  # any width costs and builds; images come grey or RGB
        raise SpecError("input_shape[2]", f"images are fed with 1 (grey) or 3 (RGB) channels, "
                                          f"got {spec.input_shape[2]}")
    if run_dir is not None:
        _clear_finished_run(run_dir, overwrite)
    if spec.head.classes != len(data.class_names):
        raise ValueError(f"spec {spec.name!r} has {spec.head.classes} classes but dataset {data.name!r} has "
                         f"{len(data.class_names)}; use spec.with_classes({len(data.class_names)})")
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    names = output_names(spec)
    pipeline = dict(input_shape=spec.input_shape, classes=spec.head.classes, batch_size=config.batch_size,
                    output_names=names, raw_shape=data.image_shape)
    train_ds = make_pipeline(data.train, training=True, augment=config.augment, num_examples=data.train_size,
                             seed=config.seed, **pipeline)
    val_ds = make_pipeline(data.validation, num_examples=data.validation_size, **pipeline)
    steps = -(-data.train_size // config.batch_size)
    model = build_model(spec)
    if weights is not None:
        from inception_keras.pretrained.convert import load_weights

        print(f"{weights}: {load_weights(model, weights, fresh_heads=True).describe()}")
    apply_freeze(model, config.freeze)
    compile_model(model, spec, config, steps)

    throughput = Throughput()
    all_callbacks = [throughput]
    resumed_from = 0
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        metadata = run_dir / "backup" / "training_metadata.json"
        resumed_from = json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0
        earlier = read_history(run_dir / "history.csv") if resumed_from else {}
        if resumed_from:
            print(f"Resuming {run_dir} after epoch {resumed_from} of {config.epochs}")
        save_spec(spec, run_dir / "spec.yaml")
        write_class_names(run_dir / CLASS_NAMES_FILE, data.class_names)
        all_callbacks += standard_callbacks(run_dir, spec, config, earlier)
    all_callbacks += list(callbacks or [])

    if verbose == "auto":  # progress bars on a terminal, one line per epoch in a log
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=all_callbacks,
                        verbose=verbose, shuffle=False)  # the pipeline shuffles
    wall = time.perf_counter() - start
    monitor = monitor_name(spec)
    full = read_history(run_dir / "history.csv") if run_dir is not None else {}
    full = full or {key: [float(v) for v in values] for key, values in history.history.items()}
    result = TrainResult(
        best_val_accuracy=max(full.get(monitor, [float("nan")])),
        monitor=monitor,
        epochs_total=len(full.get(monitor, [])),
        epochs_this_run=throughput.epochs,
        resumed_from_epoch=resumed_from,
        wall_seconds=round(wall, 2),
        train_images_per_second=round(data.train_size * throughput.epochs / throughput.seconds, 1)
        if throughput.seconds else 0.0,
        out_dir=str(out_dir) if out_dir is not None else "",
        best_model=str(run_dir / "best.keras") if run_dir is not None else "",
        history=full,
    )
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "summary.json", json.dumps(asdict(result), indent=2))
    return model, result


def fine_tune(spec: NetworkSpec, data: DataSplits, out_dir: str | Path, config: TrainConfig, weights: str | Path,
              fine_tune_epochs: int = 0, fine_tune_learning_rate: float | None = None, overwrite: bool = False,
              verbose: int | str = "auto") -> tuple[keras.Model, TrainResult]:
    """Transfer learning as in the Keras guide: train the new head(s) on a frozen base, then optionally everything.

    Phase 1 (`config.epochs`): only the classifiers train; the base, batch norm included, is
    frozen (batch norm in inference mode). Phase 2 (`fine_tune_epochs` > 0) starts from phase 1's
    best model and trains everything but batch norm (still in inference mode) at
    `fine_tune_learning_rate` (default a tenth of phase 1's). Phase 1 writes to `out_dir/head`
    when there is a phase 2, which writes to `out_dir`; rerun the same call to resume either.
    """
    out_dir = Path(out_dir)
    head_dir = out_dir / "head" if fine_tune_epochs else out_dir
    if overwrite or not _is_finished(head_dir) or not fine_tune_epochs:
        model, result = train(spec, data, head_dir, dataclasses.replace(config, freeze="base"), overwrite=overwrite,
                              verbose=verbose, weights=weights)
        if not fine_tune_epochs:
            return model, result
    rate = fine_tune_learning_rate or (config.learning_rate or (0.01 if config.optimizer == "sgd" else 1e-3)) / 10
    second = dataclasses.replace(config, freeze="batch_norm", epochs=fine_tune_epochs, learning_rate=rate)
    print(f"fine-tuning everything but batch norm for {fine_tune_epochs} epochs at learning rate {rate:g}, "
          f"from {head_dir / 'best.keras'}")
    return train(spec, data, out_dir, second, overwrite=overwrite, verbose=verbose, weights=head_dir / "best.keras")


def _is_finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists() and not (run_dir / "backup").exists()


def summary_line(result: TrainResult) -> str:
    return (f"best {result.monitor}: {result.best_val_accuracy:.4f} | epochs: {result.epochs_total} "
            f"({result.epochs_this_run} this run) | wall time: {result.wall_seconds:.1f} s | "
            f"training: {result.train_images_per_second:,.0f} images/s")
