"""A training run directory: what is in it, what it was started with, and whether a run can resume there.

A run directory (`out_dir` of `inception_keras.train.train`) holds what one training wrote, each
file replaced whole through a temporary file (`inception_keras.utils.atomic`), so a kill at any point,
SIGKILL included, leaves every file either as it was or as it became:

    run.json          what the run was started with (`run_record`); a resume must match it
    spec.yaml, class_names.txt
    history.csv       one row per finished epoch (Keras' CSVLogger columns)
    best.keras        the best model (EMA weights), carrying its own epoch and score (`best_record`)
    backup/           Keras' BackupAndRestore state (raw weights, optimizer, epoch), two deep
    logs/             TensorBoard (append-only event files, which TensorBoard reads past a torn record)
    summary.json      written last: the run is finished
    .lock             while a process trains there (`inception_keras.training.locking`)
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import math
import os
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from inception_keras.data import DataSplits
from inception_keras.serialize import CLASS_NAMES_FILE, RUN_MODEL_FILE, RUN_RECORD_FILE, save_spec, write_class_names
from inception_keras.spec import NetworkSpec
from inception_keras.training.owned import clear_owned, temporaries
from inception_keras.utils.atomic import atomic_path, atomic_write_text
from inception_keras.utils.errors import UserError, error_text

RUN_RECORD = RUN_RECORD_FILE
RUN_FORMAT = 1
HEAD_DIR = "head"  # a two-phase fine-tuning's first phase, a run directory inside the second's
BEST_FILE = RUN_MODEL_FILE
BEST_RECORD = "inception_keras_best.json"  # a member of best.keras: the epoch and score of the model it holds
RUN_FILES = ("backup", "history.csv", BEST_FILE, "logs", "summary.json", RUN_RECORD, "spec.yaml", CLASS_NAMES_FILE)
RESUMABLE = ("epochs", "early_stopping_patience")  # TrainConfig fields a resumed run may change
_BACKUP_FILES = ("latest.weights.h5", "training_metadata.json")
_ATOMIC_NAMES = RUN_FILES + _BACKUP_FILES
_EVENTS = {"events.out.tfevents.*": None}
RUN_TREE = {  # what a run writes (inception_keras.training.owned): --overwrite removes these and nothing else
    **{name: None for name in RUN_FILES if name not in ("backup", "logs")}, **temporaries(*RUN_FILES),
    "backup": {**{name: None for name in _BACKUP_FILES}, **{f"{name}.bkp": None for name in _BACKUP_FILES},
               **temporaries(*_BACKUP_FILES)},
    "logs": {"train": _EVENTS, "validation": _EVENTS},
}
_NOT_COMPARED = {"format", "started", "spec.input_shape"} | {f"recipe.{name}" for name in RESUMABLE}
_NEWER = {"weights_sha256"}  # what records of older versions lack: not compared with those
_MISSING = object()


class RunExistsError(UserError, ValueError):
    """The output directory holds a finished training."""


class RunMismatchError(UserError):
    """The output directory holds a run started with another configuration (or one that cannot be checked)."""


class RunDamagedError(UserError):
    """A file that resuming relies on is damaged and cannot be repaired."""


def fsync(path: str | os.PathLike) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    with atomic_path(target, suffix=Path(target).suffix) as tmp:
        shutil.copyfile(source, tmp)
        fsync(tmp)


def weights_finite(model: keras.Model) -> bool:
    return all(np.isfinite(weights).all() for weights in model.get_weights())


def save_best(model: keras.Model, path: str | os.PathLike, record: dict) -> None:
    """`model.save(path)` through a temporary file, with `record` stored in the archive (see `best_record`); of a
    trainer that wraps the network it trains (`saved_network`, an elastic run's), that network."""
    model = getattr(model, "saved_network", model)
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(BEST_RECORD, json.dumps(record))
        fsync(tmp)


def best_record(path: str | os.PathLike) -> dict | None:
    """The epoch (from 1), monitor and score stored in a `best.keras` by `save_best`; None if it has none.

    Raises:
        OSError, zipfile.BadZipFile: the file cannot be read.
    """
    with zipfile.ZipFile(path) as archive:
        try:
            record = json.loads(archive.read(BEST_RECORD))
        except (KeyError, ValueError):
            return None
    valid = isinstance(record, dict) and isinstance(record.get("epoch"), int) and \
        isinstance(record.get("score"), (int, float))
    return record if valid else None


def history_text(rows: list[dict]) -> str:
    keys = ["epoch"] + sorted({key for row in rows for key in row} - {"epoch"})
    text = io.StringIO()
    writer = csv.DictWriter(text, keys, restval="nan", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _parse_row(raw: dict) -> dict | None:
    if None in raw or any(value is None for value in raw.values()):
        return None
    try:
        row = {key: float(value) for key, value in raw.items()}
    except ValueError:
        return None
    if "epoch" not in row or not row["epoch"].is_integer() or row["epoch"] < 0:
        return None
    return {**row, "epoch": int(row["epoch"])}


def read_history_rows(path: str | os.PathLike) -> tuple[list[dict], int]:
    """The rows of a history.csv in epoch order (a rerun epoch's last row wins), and how many were dropped.

    A row is dropped when it is torn or damaged: a last line without its line end (a writer killed
    mid-row, as Keras' CSVLogger can be), a missing or extra field, or a value that is not a number.
    A missing file has no rows; an unreadable one none that count.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], 0
    except (OSError, UnicodeDecodeError):
        return [], 1
    lines = text.splitlines(keepends=True)
    dropped = 0
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines, dropped = lines[:-1], 1
    rows = {}
    try:
        for raw in csv.DictReader(lines):
            row = _parse_row(raw)
            if row is None:
                dropped += 1
            else:
                rows[int(row["epoch"])] = row
    except csv.Error:
        dropped += 1
    return [rows[epoch] for epoch in sorted(rows)], dropped


def read_history(path: str | os.PathLike) -> dict[str, list[float]]:
    """The history file as columns, one entry per epoch (a rerun epoch's last row wins; torn rows are left out)."""
    return columns(read_history_rows(path)[0])


def columns(rows: list[dict]) -> dict[str, list[float]]:
    return {key: [row.get(key, math.nan) for row in rows] for key in (rows[0] if rows else {})}


def run_record(spec: NetworkSpec, data: DataSplits, config, weights: str | os.PathLike | None) -> dict:
    """What a run is started with, as `run.json` holds it (plain JSON values).

    Keys: `format` (1), `started` (ISO time), `input_shape`, `dataset` (its name), `class_names`,
    `weights` (the absolute path training started from, or null) and `weights_sha256` (its content,
    `weights_digest`), `freeze`, `recipe` (every other TrainConfig field) and `spec`
    (`NetworkSpec.to_dict()`).
    """
    recipe = asdict(config)
    freeze = recipe.pop("freeze")
    record = {"format": RUN_FORMAT, "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
              "input_shape": list(spec.input_shape), "dataset": data.name, "class_names": list(data.class_names),
              "weights": str(Path(weights).resolve()) if weights is not None else None,
              "weights_sha256": weights_digest(weights) if weights is not None else None, "freeze": freeze,
              "recipe": recipe, "spec": spec.to_dict()}
    return json.loads(json.dumps(record))


def weights_digest(path: str | os.PathLike) -> str | None:
    """The SHA-256 of a weights file's bytes; of a TF-slim checkpoint, of its files' names and bytes (a folder's
    files, or those beside a prefix `model.ckpt`); None when there is no regular file to read."""
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        files = sorted(path.iterdir() if path.is_dir() else path.parent.glob(f"{glob.escape(path.name)}.*"))
        files = [file for file in files if file.is_file()]
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def _leaves(value, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


def record_differences(started: dict, asked: dict) -> list[tuple[str, object, object]]:
    """(path, started-with value, asked-for value) for each field that a resumed run may not change."""
    before, after = dict(_leaves(started)), dict(_leaves(asked))
    paths = list(after) + [path for path in before if path not in after]
    return [(path, before.get(path, _MISSING), after.get(path, _MISSING)) for path in paths
            if path not in _NOT_COMPARED and before.get(path, _MISSING) != after.get(path, _MISSING)
            and not (path in _NEWER and path not in before)]


def _show(value) -> str:
    if value is _MISSING:
        return "nothing"
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:197] + "..."  # a path in full


def _mismatch_message(run_dir: Path, differences: list) -> str:
    path, before, after = differences[0]
    more = ""
    if len(differences) > 1:
        names = ", ".join(name for name, _, _ in differences[1:4]) + (", ..." if len(differences) > 4 else "")
        more = f" (and {len(differences) - 1} more: {names})"
    return (f"{run_dir} was started with {path} {_show(before)}; this run asks for {_show(after)}{more}; "
            f"use another --out, or --overwrite to start afresh")


@dataclass


class RunState:
    """What a run directory holds for the run about to start: the epochs done, their history rows, the best."""

    resumed_from: int = 0
    rows: list = field(default_factory=list)
    best: dict | None = None


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists() and not (run_dir / "backup").exists()


def _has_state(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in ("backup", "history.csv", BEST_FILE, "summary.json"))


def _remove_temporaries(run_dir: Path) -> None:
    """Temporary files of writes cut short (`.best.keras.1a2b.keras`, ...), here and in backup/."""
    for folder in (run_dir, run_dir / "backup"):
        for path in folder.glob(".*"):
            if path.is_file() and any(path.name.startswith(f".{name}.") for name in _ATOMIC_NAMES):
                path.unlink(missing_ok=True)


def clear_run(run_dir: str | os.PathLike) -> None:
    """Remove what a training run wrote in `run_dir`, a fine-tuning's first phase in `head/` included.

    Raises:
        NotOursError: `run_dir` holds anything a run does not write, or no run.json (see
            `inception_keras.training.owned`).
    """
    clear_owned(Path(run_dir), RUN_TREE, RUN_RECORD, "training run", nested=(HEAD_DIR,))


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or "spec" not in record:
            raise ValueError("not a run record")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RunDamagedError(f"{path} is damaged ({error_text(error, 120)}): cannot tell what {path.parent} was "
                              f"started with; use another --out, or --overwrite to start afresh") from None
    return record


def check_record(run_dir: Path, record: dict) -> None:
    """Refuse a run directory that holds a run started with another configuration (or one that cannot be checked).

    A directory where no epoch finished holds nothing to resume: the new record replaces its one.
    """
    if not _has_state(run_dir):
        return
    path = run_dir / RUN_RECORD
    if not path.exists():
        raise RunMismatchError(f"{run_dir} holds a training run without {RUN_RECORD} (an older version's, or "
                               f"damaged), so it cannot be checked to be the same run; use another --out, or "
                               f"--overwrite to start afresh")
    differences = record_differences(_read_record(path), record)
    if differences:
        raise RunMismatchError(_mismatch_message(run_dir, differences))


def _read_epoch(path: Path) -> tuple[int | None, str | None]:
    """The epoch a backup's metadata names, or None and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, UnicodeDecodeError) as error:
        return None, f"{path} cannot be read ({error_text(error, 120)})"
    if not text.strip():
        return None, f"{path} is empty"
    try:
        epoch = json.loads(text)["epoch"]
    except (ValueError, KeyError, TypeError) as error:
        return None, f"{path} is damaged ({error_text(error, 120)})"
    if not isinstance(epoch, int) or epoch < 0:
        return None, f"{path} is damaged (epoch {epoch!r})"
    return epoch, None


def _weights_problem(path: Path) -> str | None:
    """What is wrong with a weights file (unreadable, truncated), or None."""
    import h5py

    def read(_, item):
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(read)
    except FileNotFoundError:
        return f"{path} is missing"
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError ... for a damaged file
        return f"{path} is damaged ({error_text(error, 120)})"
    return None


def _read_backup(backup: Path, suffix: str = "") -> tuple[int | None, str | None]:
    epoch, problem = _read_epoch(backup / f"training_metadata.json{suffix}")
    if problem is None:
        problem = _weights_problem(backup / f"latest.weights.h5{suffix}")
    return (epoch, None) if problem is None else (None, problem)


def _check_backup(run_dir: Path) -> int:
    """The epochs the backup holds, falling back to its previous state when the latest is damaged.

    An empty backup/ (a first save cut short) is removed. Raises RunDamagedError when neither
    state can be read.
    """
    backup = run_dir / "backup"
    if not backup.is_dir():
        return 0
    if not any(path for path in backup.iterdir() if not path.name.startswith(".")):
        shutil.rmtree(backup)
        return 0
    epoch, problem = _read_backup(backup)
    if problem is None:
        return epoch
    previous, _ = _read_backup(backup, ".bkp")
    if previous is None:
        raise RunDamagedError(f"{problem}, and backup/ holds no usable earlier state: {run_dir} cannot resume; "
                              f"--overwrite starts afresh")
    for name in ("latest.weights.h5", "training_metadata.json"):
        atomic_copy(backup / f"{name}.bkp", backup / name)
    print(f"note: {problem}; resuming from the backup before it")
    return previous


def _history_rows(run_dir: Path, resumed_from: int) -> list[dict]:
    rows, dropped = read_history_rows(run_dir / "history.csv")
    if dropped and resumed_from:
        print(f"note: {run_dir / 'history.csv'}: left out {dropped} torn or damaged row(s)")
    kept = [row for row in rows if row["epoch"] < resumed_from]
    if len(kept) < resumed_from:
        print(f"note: {run_dir / 'history.csv'} holds {len(kept)} of the {resumed_from} finished epochs")
    return kept


def best_from_history(rows: list[dict], monitor: str) -> dict | None:
    scored = [row for row in rows if math.isfinite(row.get(monitor, math.nan))]
    if not scored:
        return None
    row = max(scored, key=lambda row: row[monitor])
    return {"epoch": int(row["epoch"]) + 1, "monitor": monitor, "score": row[monitor]}


def _check_best(run_dir: Path, rows: list[dict], monitor: str) -> dict | None:
    """What best.keras holds; a file that does not load is removed (the next epoch writes a new one)."""
    path = run_dir / BEST_FILE
    if not path.exists():
        return None
    problem = model_problem(path)
    if problem is not None:
        path.unlink()
        print(f"note: {problem}: removed it; the next epoch writes a new one")
        return None
    return best_record(path) or best_from_history(rows, monitor)


def model_problem(path: Path) -> str | None:
    from inception_keras.pretrained import WeightsError
    from inception_keras.pretrained.convert import load_keras_model

    try:
        load_keras_model(path)
        best_record(path)
    except (WeightsError, OSError, zipfile.BadZipFile) as error:
        return f"{path} does not load ({error_text(error, 160)})"
    return None


def write_run_files(run_dir: Path, record: dict, spec: NetworkSpec, class_names: list[str]) -> None:
    """Write run.json (keeping the time a resumed run first started), spec.yaml and class_names.txt."""
    path = run_dir / RUN_RECORD
    if path.exists():
        started = _read_record(path)
        record = {**record, "started": started.get("started", record["started"])}
        if record == started:
            record = None
    if record is not None:
        atomic_write_text(path, json.dumps(record, indent=2))
    save_spec(spec, run_dir / "spec.yaml")
    write_class_names(run_dir / CLASS_NAMES_FILE, class_names)


def open_run(run_dir: Path, record: dict, overwrite: bool, epochs: int, monitor: str) -> RunState:
    """Check (and if asked, clear) a locked run directory; what it resumes from.

    It writes no record: `write_run_files` does, once the run has started (its weights loaded), so a
    start refused on the way leaves no record to be refused by.
    """
    if overwrite:
        clear_run(run_dir)
    elif is_finished(run_dir):
        raise RunExistsError(f"{run_dir} holds a finished training (summary.json, best.keras): give another output "
                             f"directory, or overwrite it (--overwrite) to train again from scratch")
    else:
        check_record(run_dir, record)
    resumed_from = _check_backup(run_dir)
    rows = _history_rows(run_dir, resumed_from) if resumed_from else []
    best = _check_best(run_dir, rows, monitor)
    _remove_temporaries(run_dir)
    if resumed_from:
        print(f"Resuming {run_dir} after epoch {resumed_from} of {epochs}")
    return RunState(resumed_from, rows, best)
