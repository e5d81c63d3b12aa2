"""Search results without TensorFlow: the trials table, Pareto fronts, a PNG plot, the best spec.

Reads `DIR/records/trial_*.json` (one per finished trial, through the spec files' bounded reader; a damaged
one, or one that is not a regular file, is skipped with a one-line warning) and writes `DIR/results.json`, `DIR/results.csv`, `DIR/pareto.png` and
`DIR/best_spec.yaml`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

from inception_keras import NetworkSpec
from inception_keras.atomic import atomic_write_bytes, atomic_write_text
from inception_keras.errors import UserError
from inception_keras.report import format_table
from inception_keras.serialize import file_label, parse_document, read_text_file, spec_to_yaml
from inception_keras.spec import SpecError

COLUMNS = ("trial_id", "worker", "val_accuracy", "params", "macs", "train_seconds")
NUMBER_FIELDS = ("val_accuracy", "params", "macs", "train_seconds")
RECORD_TYPES = {"trial_id": str, "values": dict, "spec": dict}


class SearchError(UserError):
    """A search directory or one of its files cannot be used; the message says which and what to do."""


def warn(message: str) -> None:
    """One line on stderr."""
    print(f"warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record) -> str | None:
    """What makes `record` not a complete trial record, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    missing = [key for key in (*RECORD_TYPES, "worker", *NUMBER_FIELDS) if key not in record]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = [key for key, kind in RECORD_TYPES.items() if not isinstance(record[key], kind)]
    wrong += [key for key in NUMBER_FIELDS if not _is_number(record[key])]
    if wrong:
        return f"{', '.join(wrong)} of the wrong type"
    odd = [value for value in record["values"].values() if not isinstance(value, (int, float, str))]
    if odd:
        return f"values holds a {type(odd[0]).__name__}, not a number or string"
    try:
        NetworkSpec.from_dict(record["spec"])
    except SpecError as error:
        return f"its spec is not valid ({error})"
    return None


def _read_json(path: Path, what: str):
    """A JSON file's data through the spec files' bounded reader (a regular file of at most 4 MiB, bounded
    nesting and size); raises SpecError naming `path`."""
    return parse_document(read_text_file(path, what), file_label(path), fmt="json")


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    try:
        record = _read_json(path, "trial record")
    except SpecError as error:
        return None, error.message
    problem = record_problem(record)
    return (None, problem) if problem else (record, None)


def read_records(directory: str | Path, warn_damaged: bool = True) -> list[dict]:
    """Finished trials, ordered by trial id; a damaged record is skipped (with a warning on stderr)."""
    records = []
    for path in sorted(Path(directory, "records").glob("trial_*.json")):
        record, problem = _read_record(path)
        if record is not None:
            records.append(record)
        elif warn_damaged:
            warn(f"skipping {path}: {problem}")
    return sorted(records, key=lambda record: record["trial_id"])


def read_budget(directory: str | Path) -> str:
    """The budget that `DIR/space.json` describes; "" (with a warning if damaged) when it cannot be read."""
    path = Path(directory, "space.json")
    if not path.exists():
        return ""
    try:
        space = _read_json(path, "search space record")
        if not isinstance(space, dict) or "budget" not in space:
            raise SpecError(file_label(path), "no budget")
    except SpecError as error:
        warn(f"{path} is damaged ({error.message}); the report leaves the budget out")
        return ""
    return space["budget"] if isinstance(space["budget"], str) else ""


def pareto_front(records: list[dict], cost: str) -> list[dict]:
    """Trials no other trial beats on both `cost` (lower) and accuracy (higher); by ascending cost."""
    scored = [r for r in records if not math.isnan(r["val_accuracy"])]
    front, best = [], -math.inf
    for record in sorted(scored, key=lambda r: (r[cost], -r["val_accuracy"])):
        if record["val_accuracy"] > best:
            front.append(record)
            best = record["val_accuracy"]
    return front


def best_record(records: list[dict]) -> dict | None:
    """Highest validation accuracy; fewer parameters breaks ties."""
    scored = [r for r in records if not math.isnan(r["val_accuracy"])]
    return max(scored, key=lambda r: (r["val_accuracy"], -r["params"]), default=None)


def table(records: list[dict], title: str = "") -> str:
    rows = [("trial", "worker", "val acc", "params", "multiply-adds", "seconds")]
    rows += [(str(r["trial_id"]), str(r["worker"])[:12], f"{r['val_accuracy']:.4f}", f"{r['params']:,}",
              f"{r['macs']:,}", f"{r['train_seconds']:.1f}") for r in records]
    return "\n".join(([title] if title else []) + format_table(rows, {2, 3, 4, 5}))


def report_text(records: list[dict], budget: str = "") -> str:
    if not records:
        return "no finished trials yet"
    best = best_record(records)
    parts = [table(records, f"trials ({len(records)} finished){': budget ' + budget if budget else ''}"),
             table(pareto_front(records, "params"), "\nPareto front, params vs accuracy"),
             table(pareto_front(records, "macs"), "\nPareto front, multiply-adds vs accuracy")]
    if best:
        parts.append(f"\nbest: trial {best['trial_id']}, val accuracy {best['val_accuracy']:.4f}, "
                     f"{best['params']:,} params, {best['macs']:,} multiply-adds")
    return "\n".join(parts)


def plot(records: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 2, figsize=(11, 4.2))
    for axis, cost, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "multiply-adds")):
        axis.scatter([r[cost] for r in records], [r["val_accuracy"] for r in records], color="0.6", label="trials")
        front = pareto_front(records, cost)
        axis.step([r[cost] for r in front], [r["val_accuracy"] for r in front], where="post", color="C3",
                  marker="o", label="Pareto front")
        axis.set_xlabel(label)
        axis.set_ylabel("validation accuracy")
        axis.grid(alpha=0.3)
        axis.legend(loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    pyplot.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def _csv_text(records: list[dict]) -> str:
    rows = io.StringIO()
    names = sorted({name for r in records for name in r["values"]})
    writer = csv.writer(rows)
    writer.writerow([*COLUMNS, *names])
    for r in records:
        writer.writerow([*(r[c] for c in COLUMNS), *(r["values"].get(name, "") for name in names)])
    return rows.getvalue()


def _write(path: Path, write) -> Path:
    try:
        return write(path)
    except OSError as error:
        raise SearchError(f"cannot write {path}: {error.strerror or error}") from None


def write_results(directory: str | Path, records: list[dict] | None = None) -> list[Path]:
    """Write results.json, results.csv, pareto.png and best_spec.yaml from the trial records; return what was written.

    Args:
        directory: the search directory.
        records: the trial records (default: `read_records(directory)`).

    Raises:
        SearchError: there is no finished trial (nothing is written), or a file cannot be written.
    """
    directory = Path(directory)
    records = read_records(directory) if records is None else records
    if not records:
        raise SearchError(f"{directory}: no finished trials yet ({directory / 'records'} holds no complete trial "
                          f"record); nothing written")
    best = best_record(records)
    summary = json.dumps({"trials": records,
                          "pareto_params": [r["trial_id"] for r in pareto_front(records, "params")],
                          "pareto_macs": [r["trial_id"] for r in pareto_front(records, "macs")]}, indent=1)
    written = [_write(directory / "results.json", lambda path: atomic_write_text(path, summary)),
               _write(directory / "results.csv", lambda path: atomic_write_text(path, _csv_text(records))),
               _write(directory / "pareto.png", lambda path: plot(records, path))]
    if best:
        best_yaml = spec_to_yaml(NetworkSpec.from_dict(best["spec"]))
        written.append(_write(directory / "best_spec.yaml", lambda path: atomic_write_text(path, best_yaml)))
    return written
