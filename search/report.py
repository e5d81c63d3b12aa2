"""Search results without TensorFlow: the trials table, Pareto fronts, a PNG plot, the best spec.

Reads `DIR/records/trial_*.json` (one per finished trial; with KerasTuner's executions per trial, `val_accuracy`
is their mean, `val_accuracy_std` their standard deviation and `executions` their number), `DIR/space.json` (the
budget and base spec), `DIR/parent.json` (the point of the model a search inherits from) and `DIR/baseline.json`
(the width-multiplier baseline's point), all through the spec files' bounded reader; a damaged one, or one that
is not a regular file, is skipped with a one-line warning. Writes `DIR/results.json`, `DIR/results.csv`,
`DIR/pareto.png` (with the budget lines, the parent's point or the base spec's cost, the baseline, and error
bars) and `DIR/best_spec.yaml`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from pathlib import Path

from inception_keras import NetworkSpec
from inception_keras.utils.atomic import atomic_write_bytes, atomic_write_text
from inception_keras.cost import network_cost
from inception_keras.utils.errors import UserError
from inception_keras.report import format_table
from inception_keras.serialize import file_label, load_document, spec_to_yaml
from inception_keras.spec import SpecError

from search.space import DEFAULT_RUNTIME, Budget, parse_count

COLUMNS = ("trial_id", "worker", "val_accuracy", "val_accuracy_std", "executions", "params", "macs", "train_seconds",
           "latency_ms", "predicted_latency_ms", "over_budget")
LATENCY_FIELDS = ("latency_ms", "latency_p90_ms", "predicted_latency_ms")  # a latency budget's trials have them
NUMBER_FIELDS = ("val_accuracy", "params", "macs", "train_seconds")
RECORD_TYPES = {"trial_id": str, "values": dict, "spec": dict}
PARENT_FIELDS = ("params", "macs", "val_accuracy")
BASELINE_FIELDS = ("multiplier", "params", "macs", "val_accuracy")
PARENT_FILE, BASELINE_FILE = "parent.json", "baseline.json"
# What Budget.describe() writes, e.g. "params <= 120,000 and multiply-adds <= 600,000,000 (inference model)".
_BUDGET_TEXT = re.compile(r"(?:params <= ([0-9,]{1,25}))?(?: and )?(?:multiply-adds <= ([0-9,]{1,25}))?(?: and )?"
                          r"(?:latency <= ([0-9.e+-]{1,25}) ms on (\w{1,20}))?(?:no budget)? \((\w{1,20}) model\)")


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
    wrong += [key for key in ("val_accuracy_std", *LATENCY_FIELDS) if key in record and not _is_number(record[key])]
    if "executions" in record and (isinstance(record["executions"], bool) or not isinstance(record["executions"], int)
                                   or record["executions"] < 1):
        wrong.append("executions")
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


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    try:
        record = load_document(path, "trial record")
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


def executions(record: dict) -> int:
    """How many executions a trial's score averages (1 in records written before executions per trial)."""
    return record.get("executions", 1)


def accuracy_std(record: dict) -> float:
    """The standard deviation of a trial's validation accuracy over its executions (0 for one execution)."""
    return record.get("val_accuracy_std", 0.0)


def accuracy_text(record: dict) -> str:
    """`0.9123`, or `0.9123 ± 0.0040 (3)` (mean ± std, executions) for a trial of more than one execution."""
    mean = f"{record['val_accuracy']:.4f}"
    return f"{mean} ± {accuracy_std(record):.4f} ({executions(record)})" if executions(record) > 1 else mean


def _read_space(directory: str | Path) -> tuple[dict | None, str | None]:
    """`DIR/space.json` and None, (None, None) when there is none, or (None, what is wrong with it)."""
    path = Path(directory, "space.json")
    if not path.exists():
        return None, None
    try:
        space = load_document(path, "search space record")
        if not isinstance(space, dict) or "budget" not in space:
            raise SpecError(file_label(path), "no budget")
    except SpecError as error:
        return None, error.message
    return space, None


def read_budget(directory: str | Path) -> str:
    """The budget that `DIR/space.json` describes; "" (with a warning if damaged) when it cannot be read."""
    space, problem = _read_space(directory)
    if problem:
        warn(f"{Path(directory, 'space.json')} is damaged ({problem}); the report leaves the budget out")
    return space["budget"] if space and isinstance(space["budget"], str) else ""


def budget_from_text(text) -> Budget | None:
    """The Budget whose `describe()` is `text` (space.json's "budget"), or None when `text` is no such description."""
    match = _BUDGET_TEXT.fullmatch(text) if isinstance(text, str) else None
    if not match:
        return None
    params, macs, latency, runtime, model = match.groups()
    try:
        budget = Budget(*(parse_count(limit.replace(",", "")) if limit else None for limit in (params, macs)), model,
                        float(latency) if latency else None, runtime or DEFAULT_RUNTIME)
    except (SpecError, ValueError):
        return None
    return budget if budget.describe() == text else None


def base_point(space: dict, budget: Budget, records: list[dict]) -> dict | None:
    """The base spec's point (space.json's "base") under `budget`'s cost model: {"params", "macs", "val_accuracy"},
    the accuracy being that of a trial of exactly the base's widths, else None; None when there is no valid base."""
    try:
        base = NetworkSpec.from_dict(space.get("base"))
    except SpecError:
        return None
    cost = network_cost(base)
    inference = budget.model == "inference"
    same = [r["val_accuracy"] for r in records if NetworkSpec.from_dict(r["spec"]).replace(name=base.name) == base]
    return {"params": cost.inference_params if inference else cost.total_params,
            "macs": cost.inference_macs if inference else cost.total_macs,
            "val_accuracy": same[0] if same else None}


def parent_problem(parent) -> str | None:
    """What makes `parent` (parent.json's data) not a parent model's point, or None."""
    if not isinstance(parent, dict):
        return f"a JSON {type(parent).__name__}, not an object"
    missing = [key for key in ("source", *PARENT_FIELDS) if key not in parent]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = ["source"] if not isinstance(parent["source"], str) else []
    wrong += [key for key in PARENT_FIELDS if not _is_number(parent[key])
              and not (key == "val_accuracy" and parent[key] is None)]  # null: not measured on this data
    return f"{', '.join(wrong)} of the wrong type" if wrong else None


def baseline_problem(baseline) -> str | None:
    """What makes `baseline` (baseline.json's data) not the width-multiplier baseline's point, or None."""
    if not isinstance(baseline, dict):
        return f"a JSON {type(baseline).__name__}, not an object"
    missing = [key for key in BASELINE_FIELDS if key not in baseline]
    if missing:
        return f"no {', '.join(missing)}"
    wrong = [key for key in BASELINE_FIELDS if not _is_number(baseline[key])
             and not (key == "val_accuracy" and baseline[key] is None)]
    return f"{', '.join(wrong)} of the wrong type" if wrong else None


def _read_point(directory: str | Path, name: str, what: str, problem_of, warn_damaged: bool) -> dict | None:
    path = Path(directory, name)
    if not path.exists():
        return None
    try:
        point = load_document(path, what)
    except SpecError as error:
        problem = error.message
    else:
        problem = problem_of(point)
    if problem and warn_damaged:
        warn(f"skipping {path}: {problem}")
    return None if problem else point


def read_parent(directory: str | Path, warn_damaged: bool = True) -> dict | None:
    """The parent model's point (`DIR/parent.json`), None when the search inherits from none or the file is
    damaged (skipped with a warning on stderr)."""
    return _read_point(directory, PARENT_FILE, "parent record", parent_problem, warn_damaged)


def read_baseline(directory: str | Path, warn_damaged: bool = True) -> dict | None:
    """The width-multiplier baseline's point (`DIR/baseline.json`: the base scaled to the budget, scored as a trial),
    None when there is none (no budget) or the file is damaged (skipped with a warning on stderr)."""
    return _read_point(directory, BASELINE_FILE, "baseline record", baseline_problem, warn_damaged)


def baseline_text(baseline: dict, best: dict | None) -> str:
    """The baseline's line of the report, and how the best trial compares."""
    accuracy = baseline["val_accuracy"]
    text = (f"width-multiplier baseline: the base with every width x{baseline['multiplier']:g}, val accuracy "
            f"{accuracy_text(baseline) if accuracy is not None else 'not measured'}, {baseline['params']:,} params, "
            f"{baseline['macs']:,} multiply-adds")
    if _is_number(baseline.get("latency_ms")):
        text += f", {latency_text(baseline)} ms measured"
    if best is not None and accuracy is not None:
        gap = best["val_accuracy"] - accuracy
        text += f"; the best trial is {abs(gap):.4f} {'above' if gap > 0 else 'below'} it" if gap else \
            "; the best trial is level with it"
    return text


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


def latency_text(record: dict) -> str:
    """`0.412` (ms measured), `0.512 *` when measured over the latency budget; `-` when not measured."""
    if "latency_ms" not in record:
        return "-"
    return f"{record['latency_ms']:.3f}{' *' if record.get('over_budget') else ''}"


def table(records: list[dict], title: str = "") -> str:
    latency = any("latency_ms" in r for r in records)
    rows = [("trial", "worker", "val acc", "params", "multiply-adds", *(("latency ms",) if latency else ()),
             "seconds")]
    rows += [(str(r["trial_id"]), str(r["worker"])[:12], accuracy_text(r), f"{r['params']:,}",
              f"{r['macs']:,}", *((latency_text(r),) if latency else ()), f"{r['train_seconds']:.1f}")
             for r in records]
    return "\n".join(([title] if title else []) + format_table(rows, set(range(2, len(rows[0])))))


def report_text(records: list[dict], budget: str = "", parent: dict | None = None, baseline: dict | None = None) \
        -> str:
    """The trials table, both Pareto fronts, the best trial, the parent model's point (`read_parent`) and the
    width-multiplier baseline's (`read_baseline`)."""
    if not records:
        return "no finished trials yet"
    best = best_record(records)
    parts = [table(records, f"trials ({len(records)} finished){': budget ' + budget if budget else ''}"),
             table(pareto_front(records, "params"), "\nPareto front, params vs accuracy"),
             table(pareto_front(records, "macs"), "\nPareto front, multiply-adds vs accuracy")]
    timed = [r for r in records if "latency_ms" in r]
    if timed:
        parts.append(table(pareto_front(timed, "latency_ms"), "\nPareto front, measured latency vs accuracy"))
        over = [r["trial_id"] for r in timed if r.get("over_budget")]
        if over:
            parts.append(f"* measured over the latency budget (screened by the prediction): trial "
                         f"{', '.join(map(str, over))}")
    if best:
        parts.append(f"\nbest: trial {best['trial_id']}, val accuracy {accuracy_text(best)}, "
                     f"{best['params']:,} params, {best['macs']:,} multiply-adds")
    if parent:
        accuracy = "not measured (other classes or input size)" if parent["val_accuracy"] is None else \
            f"{parent['val_accuracy']:.4f}"
        parts.append(f"parent: {file_label(parent['source'])}, val accuracy {accuracy}, "
                     f"{parent['params']:,} params, {parent['macs']:,} multiply-adds")
    if baseline:
        parts.append(baseline_text(baseline, best))
    return "\n".join(parts)


def human_count(count: float) -> str:
    """A count as axis labels show it: `950`, `95k`, `97.5k`, `1.2M`, `10.2M`, `120M`, `1.5G` (one decimal below
    100 of a unit, none above, no trailing `.0`)."""
    value, suffix = float(count), ""
    for larger in ("k", "M", "G", "T"):
        if abs(round(value, 1 if abs(value) < 100 else 0)) < 1000:
            break
        value, suffix = value / 1000, larger
    text = (f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}").removesuffix(".0")
    return ("0" if float(text) == 0 else text) + suffix


def _draw_point(axis, x: float, accuracy: float | None, label: str, style: dict) -> None:
    """A reference model on one panel: a marker at its accuracy, or a vertical line at its cost when unknown."""
    if accuracy is None:
        axis.axvline(x, color=style["color"], linestyle=":", linewidth=1.5, label=label)
    else:
        axis.plot([x], [accuracy], linestyle="none", markersize=11, label=label, **style)


def pareto_figure(records: list[dict], budget: Budget | None = None, parent: dict | None = None,
                  base: dict | None = None, baseline: dict | None = None):
    """The Pareto plot as a matplotlib Figure: accuracy against parameters and against multiply-adds.

    Args:
        records: the trial records; error bars (± std) on those of more than one execution.
        budget: its limits are drawn as vertical lines labelled "budget".
        parent: the parent model's point (`read_parent`), a star labelled "parent" (a dotted vertical line at
            its cost where its accuracy was not measured).
        base: the base spec's point (`base_point`), drawn only without a parent: a diamond, or a dotted vertical
            line at its cost when its accuracy is None.
        baseline: the width-multiplier baseline's point (`read_baseline`): a cross labelled "width xA".
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    panels = [("params", "parameters"), ("macs", "multiply-adds")]
    if any("latency_ms" in r for r in records):
        panels.append(("latency_ms", f"latency (ms{', ' + budget.runtime if budget else ''}, measured)"))
    figure = Figure(figsize=(5.5 * len(panels), 4.2))
    FigureCanvasAgg(figure)
    limits = {"params": budget.max_params, "macs": budget.max_macs, "latency_ms": budget.max_latency_ms} \
        if budget else {}
    for index, (cost, label) in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), index + 1)
        shown = [r for r in records if cost in r]  # latency: the trials measured
        repeated = [r for r in shown if executions(r) > 1]
        if repeated:
            axis.errorbar([r[cost] for r in repeated], [r["val_accuracy"] for r in repeated],
                          yerr=[accuracy_std(r) for r in repeated], fmt="none", ecolor="0.45", elinewidth=1,
                          capsize=3, label="± std over executions")
        axis.scatter([r[cost] for r in shown], [r["val_accuracy"] for r in shown], color="0.6", label="trials")
        over = [r for r in shown if cost == "latency_ms" and r.get("over_budget")]
        if over:
            axis.scatter([r[cost] for r in over], [r["val_accuracy"] for r in over], facecolors="none",
                         edgecolors="C3", s=120, label="measured over budget")
        front = pareto_front(shown, cost)
        axis.step([r[cost] for r in front], [r["val_accuracy"] for r in front], where="post", color="C3",
                  marker="o", label="Pareto front")
        if limits.get(cost):
            axis.axvline(limits[cost], color="C0", linestyle="--", linewidth=1.5, label="budget")
        if parent and cost in parent:
            _draw_point(axis, parent[cost], parent["val_accuracy"], "parent", {"color": "C2", "marker": "*"})
        elif base and cost in base:
            _draw_point(axis, base[cost], base["val_accuracy"], "base spec", {"color": "C1", "marker": "D"})
        if baseline and _is_number(baseline.get(cost)):
            _draw_point(axis, baseline[cost], baseline["val_accuracy"], f"width x{baseline['multiplier']:g}",
                        {"color": "C4", "marker": "X"})
        if cost != "latency_ms":
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: human_count(value)))
        axis.ticklabel_format(axis="y", style="plain", useOffset=False)
        axis.set_xlabel(label)
        axis.set_ylabel("validation accuracy")
        axis.grid(alpha=0.3)
        axis.legend(loc="best")
    figure.tight_layout()
    return figure


def plot(records: list[dict], path: Path, budget: Budget | None = None, parent: dict | None = None,
         base: dict | None = None, baseline: dict | None = None) -> Path:
    """Write `pareto_figure(records, budget, parent, base, baseline)` to `path` as a PNG."""
    buffer = io.BytesIO()
    pareto_figure(records, budget, parent, base, baseline).savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue())


def _csv_text(records: list[dict]) -> str:
    rows = io.StringIO()
    names = sorted({name for r in records for name in r["values"]})
    writer = csv.writer(rows)
    writer.writerow([*COLUMNS, *names])
    for r in records:
        row = {**r, "val_accuracy_std": accuracy_std(r), "executions": executions(r)}
        writer.writerow([*(row.get(c, "") for c in COLUMNS), *(r["values"].get(name, "") for name in names)])
    return rows.getvalue()


def _write(path: Path, write) -> Path:
    try:
        return write(path)
    except OSError as error:
        raise SearchError(f"cannot write {path}: {error.strerror or error}") from None


def write_results(directory: str | Path, records: list[dict] | None = None) -> list[Path]:
    """Write results.json, results.csv, pareto.png and best_spec.yaml from the trial records, `DIR/space.json`
    (budget and base spec; a damaged one is left out silently, `read_budget` warns) and `DIR/parent.json`
    (`read_parent`); return what was written.

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
    space, _ = _read_space(directory)
    parent, baseline = read_parent(directory), read_baseline(directory)
    budget = budget_from_text(space["budget"]) if space else None
    base = base_point(space, budget, records) if budget and not parent else None
    summary = json.dumps({"trials": records,
                          "pareto_params": [r["trial_id"] for r in pareto_front(records, "params")],
                          "pareto_macs": [r["trial_id"] for r in pareto_front(records, "macs")],
                          "parent": parent, "baseline": baseline}, indent=1)
    written = [_write(directory / "results.json", lambda path: atomic_write_text(path, summary)),
               _write(directory / "results.csv", lambda path: atomic_write_text(path, _csv_text(records))),
               _write(directory / "pareto.png", lambda path: plot(records, path, budget, parent, base, baseline))]
    if best:
        best_yaml = spec_to_yaml(NetworkSpec.from_dict(best["spec"]))
        written.append(_write(directory / "best_spec.yaml", lambda path: atomic_write_text(path, best_yaml)))
    return written
