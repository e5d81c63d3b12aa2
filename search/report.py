"""Search results without TensorFlow: the trials table, Pareto fronts, a PNG plot, the best spec.

Reads `DIR/records/trial_*.json` (one per finished trial) and writes `DIR/results.json`,
`DIR/results.csv`, `DIR/pareto.png` and `DIR/best_spec.yaml`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from inception_keras import NetworkSpec
from inception_keras.atomic import atomic_write_bytes, atomic_write_text
from inception_keras.serialize import spec_to_yaml

COLUMNS = ("trial_id", "worker", "val_accuracy", "params", "macs", "train_seconds")


def read_records(directory: str | Path) -> list[dict]:
    """Finished trials, ordered by trial id."""
    records = []
    for path in sorted(Path(directory, "records").glob("trial_*.json")):
        records.append(json.loads(path.read_text()))
    return sorted(records, key=lambda record: record["trial_id"])


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
    lines = [title] if title else []
    lines.append(f"{'trial':<8}{'worker':<10}{'val acc':>9}{'params':>14}{'multiply-adds':>18}{'seconds':>9}")
    for r in records:
        lines.append(f"{r['trial_id']:<8}{str(r['worker'])[:9]:<10}{r['val_accuracy']:>9.4f}{r['params']:>14,}"
                     f"{r['macs']:>18,}{r['train_seconds']:>9.1f}")
    return "\n".join(lines)


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


def write_results(directory: str | Path) -> list[dict]:
    """Write results.json, results.csv, pareto.png and best_spec.yaml from the trial records."""
    directory = Path(directory)
    records = read_records(directory)
    atomic_write_text(directory / "results.json", json.dumps({
        "trials": records,
        "pareto_params": [r["trial_id"] for r in pareto_front(records, "params")],
        "pareto_macs": [r["trial_id"] for r in pareto_front(records, "macs")],
    }, indent=1))
    rows = io.StringIO()
    names = sorted({name for r in records for name in r["values"]})
    writer = csv.writer(rows)
    writer.writerow([*COLUMNS, *names])
    for r in records:
        writer.writerow([*(r[c] for c in COLUMNS), *(r["values"].get(name, "") for name in names)])
    atomic_write_text(directory / "results.csv", rows.getvalue())
    if records:
        plot(records, directory / "pareto.png")
    best = best_record(records)
    if best:
        atomic_write_text(directory / "best_spec.yaml", spec_to_yaml(NetworkSpec.from_dict(best["spec"])))
    return records
