"""`search report`: budget lines, the parent's (or base spec's) point, error bars over executions, readable axes;
mean ± std and N in the tables; parent.json read like a trial record. Synthetic directories, no training."""

import csv
import json

import pytest
from matplotlib.container import ErrorbarContainer

from inception_keras import network_cost
from inception_keras.cli import main
from search.report import (base_point, budget_from_text, human_count, pareto_figure, read_parent, read_records,
                           report_text)
from search.space import Budget, get_space

SPACE = get_space("mini_bottlenecks").with_budget(max_macs=30_000_000)
BASE = SPACE.base.to_dict()
PARENT = {"source": "runs/parent/model.keras", "params": 131_000, "macs": 34_000_000, "inference_params": 131_000,
          "inference_macs": 34_000_000, "total_params": 131_000, "total_macs": 34_000_000, "val_accuracy": 0.96}


def record(trial_id: str, accuracy: float, params: int, **extra) -> dict:
    return {"trial_id": trial_id, "worker": "tuner0", "values": {"3a_pool_proj": 8}, "params": params,
            "macs": params * 250, "val_accuracy": accuracy, "train_seconds": 1.5, "epochs": 1,
            "spec": {**BASE, "name": "googlenet_mini_searched"}, **extra}


RECORDS = [record("00", 0.9, 95_000), record("01", 0.9123, 97_500, executions=3, val_accuracy_std=0.004),
           record("02", 0.93, 110_000, executions=2, val_accuracy_std=0.01)]


def search_dir(directory, records=RECORDS, parent=PARENT):
    (directory / "records").mkdir()
    for r in records:
        (directory / "records" / f"trial_{r['trial_id']}.json").write_text(json.dumps(r))
    (directory / "space.json").write_text(json.dumps({"name": SPACE.name, "budget": SPACE.budget.describe(),
                                                      "dimensions": {}, "base": BASE}))
    if parent is not None:
        (directory / "parent.json").write_text(json.dumps(parent))
    return directory


def labelled(axis, label):
    return [line for line in axis.get_lines() if line.get_label() == label]


@pytest.mark.parametrize("count, text", [(0, "0"), (950, "950"), (95_000, "95k"), (97_500, "97.5k"),
                                         (120_000, "120k"), (999_999, "1M"), (1_200_000, "1.2M"),
                                         (10_200_000, "10.2M"), (1_500_000_000, "1.5G"), (-20_000, "-20k")])
def test_human_count(count, text):
    assert human_count(count) == text


def test_budget_is_rebuilt_from_its_description():
    for budget in (Budget(120_000), Budget(None, 600_000_000, "training"), Budget(2_500_000, 600_000_000), Budget()):
        assert budget_from_text(budget.describe()) == budget
    for text in ("", "params <= 12 and no budget (inference model)", "params <= 1e9 (inference model)",
                 "params <= 120,000 (other model)", 120_000, None):
        assert budget_from_text(text) is None


def test_plot_draws_budget_parent_and_error_bars_with_readable_axes():
    figure = pareto_figure(RECORDS, SPACE.budget, PARENT)
    params_axis, macs_axis = figure.axes
    for axis, limit, cost in ((params_axis, 120_000, "params"), (macs_axis, 30_000_000, "macs")):
        (budget,) = labelled(axis, "budget")
        assert list(budget.get_xdata()) == [limit, limit] and axis.get_xlim()[1] >= limit
        (parent,) = labelled(axis, "parent")
        assert list(parent.get_xdata()) == [PARENT[cost]] and list(parent.get_ydata()) == [0.96]
        assert parent.get_marker() == "*"
        assert not labelled(axis, "base spec")
        (bars,) = [c for c in axis.containers if isinstance(c, ErrorbarContainer)]
        segments = bars.lines[2][0].get_segments()
        assert [(s[0][0], round(s[1][1] - s[0][1], 6)) for s in segments] == [(RECORDS[1][cost], 0.008),
                                                                               (RECORDS[2][cost], 0.02)]
    figure.canvas.draw()
    params_labels = [label.get_text() for label in params_axis.get_xticklabels() if label.get_text()]
    macs_labels = [label.get_text() for label in macs_axis.get_xticklabels() if label.get_text()]
    assert "100k" in params_labels and all(text.endswith("k") for text in params_labels if text != "0")
    assert all(text[-1] == "M" for text in macs_labels if text != "0"), macs_labels
    for axis in figure.axes:
        assert axis.xaxis.get_offset_text().get_text() == axis.yaxis.get_offset_text().get_text() == ""


def test_without_a_parent_the_base_spec_is_its_cost_or_its_point():
    cost = network_cost(SPACE.base)
    base = base_point({"base": BASE}, SPACE.budget, RECORDS[1:])
    assert base == {"params": cost.inference_params, "macs": cost.inference_macs, "val_accuracy": 0.9123}
    assert base_point({"base": BASE}, Budget(1, model="training"), [])["params"] == cost.total_params
    no_trial_of_it = base_point({"base": BASE}, SPACE.budget, [record("00", 0.9, 1, spec=get_space(
        "googlenet_bottlenecks").base.to_dict())])
    assert no_trial_of_it["val_accuracy"] is None
    params_axis = pareto_figure(RECORDS, SPACE.budget, None, no_trial_of_it).axes[0]
    (line,) = labelled(params_axis, "base spec")
    assert list(line.get_xdata()) == [cost.inference_params] * 2 and line.get_linestyle() == ":"
    (point,) = labelled(pareto_figure(RECORDS, None, None, base).axes[0], "base spec")
    assert list(point.get_ydata()) == [0.9123]


def test_report_shows_mean_std_and_executions_and_the_parent(tmp_path, capsys):
    directory = search_dir(tmp_path)
    assert main(["search", "report", str(directory)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "0.9123 ± 0.0040 (3)" in captured.out and "0.9300 ± 0.0100 (2)" in captured.out
    assert "best: trial 02, val accuracy 0.9300 ± 0.0100 (2), 110,000 params" in captured.out
    assert "0.9000 ±" not in captured.out
    assert json.loads((directory / "results.json").read_text())["parent"] == PARENT
    rows = list(csv.DictReader((directory / "results.csv").open()))
    assert [(row["val_accuracy_std"], row["executions"]) for row in rows] == [("0.0", "1"), ("0.004", "3"),
                                                                               ("0.01", "2")]
    text = report_text(read_records(directory), SPACE.budget.describe(), read_parent(directory))
    assert text.splitlines()[-1] == ("parent: runs/parent/model.keras, val accuracy 0.9600, 131,000 params, "
                                     "34,000,000 multiply-adds")
    assert "parent" not in report_text(RECORDS)


@pytest.mark.parametrize("damage, problem", [(lambda text: text[:len(text) // 2], "not valid JSON"),
                                             (lambda text: json.dumps({"source": 1, "params": "9"}),
                                              "no macs, val_accuracy")])
def test_a_damaged_parent_is_skipped_with_a_warning(tmp_path, capsys, damage, problem):
    directory = search_dir(tmp_path)
    (directory / "parent.json").write_text(damage(json.dumps(PARENT)))
    assert main(["search", "report", str(directory)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith(f"warning: skipping {directory / 'parent.json'}: {problem}")
    assert json.loads((directory / "results.json").read_text())["parent"] is None


def test_a_record_of_bad_executions_is_skipped(tmp_path, capsys):
    directory = search_dir(tmp_path, [*RECORDS, record("03", 0.99, 1, executions=0),
                                      record("04", 0.99, 1, executions=2, val_accuracy_std="0.1")], parent=None)
    assert [r["trial_id"] for r in read_records(directory)] == ["00", "01", "02"]
    assert capsys.readouterr().err.splitlines() == [
        f"warning: skipping {directory / 'records' / 'trial_03.json'}: executions of the wrong type",
        f"warning: skipping {directory / 'records' / 'trial_04.json'}: val_accuracy_std of the wrong type"]


def test_the_report_command_imports_no_tensorflow(tmp_path):
    import subprocess
    import sys

    search_dir(tmp_path)
    code = ("import sys\nfrom inception_keras.cli import main\ncode = main(sys.argv[1:])\n"
            "print(code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code, "search", "report", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert run.stdout.split()[-3:] == ["0", "False", "False"], (run.stdout, run.stderr)
    assert (tmp_path / "pareto.png").stat().st_size > 0 and (tmp_path / "results.csv").exists()


BASELINE = {"multiplier": 0.7249, "params": 96_000, "macs": 24_000_000, "val_accuracy": 0.905, "executions": 1,
            "val_accuracy_std": 0.0}


def test_the_width_multiplier_baseline_is_reported_beside_the_trials_and_drawn(tmp_path):
    from search.report import pareto_figure, read_baseline, write_results

    directory = search_dir(tmp_path)
    (directory / "baseline.json").write_text(json.dumps(BASELINE))
    assert read_baseline(directory) == BASELINE
    text = report_text(RECORDS, "", None, BASELINE)
    assert text.endswith("width-multiplier baseline: the base with every width x0.7249, val accuracy 0.9050, "
                         "96,000 params, 24,000,000 multiply-adds; the best trial is 0.0250 above it")
    figure = pareto_figure(RECORDS, baseline=BASELINE)
    for axis, cost in zip(figure.axes, ("params", "macs")):
        [marker] = labelled(axis, "width x0.7249")
        assert list(marker.get_xdata()) == [BASELINE[cost]] and list(marker.get_ydata()) == [0.905]
    write_results(directory)
    assert json.loads((directory / "results.json").read_text())["baseline"] == BASELINE
    (directory / "baseline.json").write_text(json.dumps({**BASELINE, "params": "many"}))
    assert read_baseline(directory, warn_damaged=False) is None


def test_measured_latencies_get_a_column_a_front_and_a_panel_and_over_budget_trials_are_marked():
    timed = [record("00", 0.9, 95_000, latency_ms=0.41, predicted_latency_ms=0.40, latency_p90_ms=0.5,
                    over_budget=False),
             record("01", 0.93, 97_500, latency_ms=0.55, predicted_latency_ms=0.48, latency_p90_ms=0.6,
                    over_budget=True)]
    budget = Budget(max_latency_ms=0.5)
    text = report_text(timed, budget.describe())
    assert "latency ms" in text and "0.550 *" in text and "Pareto front, measured latency vs accuracy" in text
    assert "\n* measured over the latency budget (screened by the prediction): trial 01\n" in text
    figure = pareto_figure(timed, budget)
    assert len(figure.axes) == 3 and figure.axes[2].get_xlabel() == "latency (ms, onnxruntime, measured)"
    [line] = labelled(figure.axes[2], "budget")
    assert list(line.get_xdata()) == [0.5, 0.5]
    assert len(pareto_figure(RECORDS).axes) == 2  # no latency measured: two panels
