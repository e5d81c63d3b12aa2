"""The callbacks a training run writes its directory with (`inception_keras.training.run_dir` describes the files).

Each replaces a stock Keras callback where that one writes in place or stops too late:
HistoryLog (CSVLogger), BestCheckpoint (ModelCheckpoint), AtomicBackupAndRestore
(BackupAndRestore), StopOnNonFinite (TerminateOnNaN); Throughput times the training batches.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import keras

from inception_keras.training.distribute import local_only
from inception_keras.training.run_dir import (RunDamagedError, atomic_copy, fsync, history_text, save_best,
                                              weights_finite)
from inception_keras.utils.atomic import atomic_path, atomic_write_text
from inception_keras.utils.errors import error_text


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


class Diverged(Exception):
    def __init__(self, epoch: int, key: str, value: float):
        super().__init__(f"{key} {value} at epoch {epoch}")
        self.epoch, self.key, self.value = epoch, key, value


class StopOnNonFinite(keras.callbacks.Callback):
    """TerminateOnNaN that raises before anything of the bad epoch is written.

    Checks the loss after every batch and the epoch's loss and val_loss; it must come before
    the callbacks that write at an epoch's end (history, checkpoint, backup), which then keep
    the last good epoch. `train` turns the stop into a TrainingDivergedError.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, "loss")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, "loss", "val_loss")

    def _check(self, logs, *keys):
        for key in keys:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise Diverged(self.epoch + 1, key, float(value))


class HistoryLog(keras.callbacks.Callback):
    """Keras' CSVLogger (`epoch`, then the logs' keys sorted; epochs from 0), rewritten whole each epoch.

    The file goes through a temporary file, so a kill never leaves half a row; `rows` are the
    earlier epochs of a resumed run, and an epoch that runs again replaces its row.
    """

    def __init__(self, path: str | os.PathLike, rows: list[dict] | None = None):
        super().__init__()
        self.path = Path(path)
        self.rows = list(rows or [])

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch}
        for key, value in sorted((logs or {}).items()):
            with contextlib.suppress(TypeError, ValueError):
                row[key] = float(value)
        self.rows = [old for old in self.rows if old["epoch"] < epoch] + [row]
        atomic_write_text(self.path, history_text(self.rows))


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore (double checkpoint) whose files are each replaced whole, and that keeps them at the end.

    Weights are written before the metadata that names their epoch, so a kill between the two
    renames reruns one epoch rather than skipping one. `train` removes the backup once
    `summary.json` is written. A state that cannot be restored is a RunDamagedError.
    """

    def __init__(self, backup_dir: str | os.PathLike, snapshot=None, write: bool = True):
        super().__init__(str(backup_dir), double_checkpoint=True, delete_checkpoint=False)
        self.snapshot, self.write = snapshot, write  # several JAX processes: the chief writes a snapshot

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except Exception as error:  # h5py, JSON and Keras raise many types for a damaged backup
            raise RunDamagedError(f"{self.backup_dir}: cannot restore the training state ({error_text(error)}); "
                                  f"--overwrite starts afresh") from None

    def _save_model(self):
        if not self.write:
            return
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        for current, previous in ((self._weights_path, self._prev_weights_path),
                                  (self._training_metadata_path, self._prev_training_metadata_path)):
            if os.path.exists(current):
                atomic_copy(current, previous)
        with atomic_path(self._weights_path, suffix=".weights.h5") as tmp:
            if self.snapshot is None:
                self.model.save_weights(str(tmp), overwrite=True)
            else:
                copy = self.snapshot(self.model)
                with local_only():
                    copy.save_weights(str(tmp), overwrite=True)
            fsync(tmp)
        atomic_write_text(self._training_metadata_path,
                          json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))


class BestCheckpoint(keras.callbacks.Callback):
    """ModelCheckpoint(save_best_only=True, mode="max") with the EMA weights, written atomically.

    Saves at an epoch's end when `monitor` beats `best` (a `best_record` dict, or None), with
    the optimizer's moving averages swapped in for the save (when `ema`), never a model with a
    non-finite weight. The file carries its record (epoch from 1, monitor, score) as a member,
    so the score always belongs to the model in it.
    """

    def __init__(self, path: str | os.PathLike, monitor: str, ema: bool, best: dict | None = None, snapshot=None):
        super().__init__()
        self.path, self.monitor, self.best = Path(path), monitor, best
        self._swap = keras.callbacks.SwapEMAWeights() if ema else None
        self.snapshot = snapshot  # several JAX processes: save a single-process copy (distribute.Snapshot)

    def set_model(self, model):
        super().set_model(model)
        if self._swap is not None:
            self._swap.set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        score = (logs or {}).get(self.monitor)
        if score is None or not math.isfinite(float(score)):
            return
        if self.best is not None and float(score) <= self.best["score"]:
            return
        record = {"epoch": epoch + 1, "monitor": self.monitor, "score": float(score)}
        with self._model_to_save() as model:
            if not weights_finite(model):
                return
            save_best(model, self.path, record)
        self.best = record

    @contextlib.contextmanager
    def _model_to_save(self):
        """The model with its EMA weights swapped in (when `ema`); with several JAX processes, a single-process
        copy of those weights, with no Keras distribution while it is saved."""
        if self.snapshot is not None:
            copy = self.snapshot(self.model, ema=self._swap is not None)
            with local_only():
                yield copy
            return
        if self._swap is None:
            yield self.model
            return
        self._swap._swap_variables()
        try:
            yield self.model
        finally:
            self._swap._swap_variables()
