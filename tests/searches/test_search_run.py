"""Searches that really train: a two-module network at 24 px on 24 generated images, 1 epoch a trial."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from dataclasses import replace

import pytest
import yaml

from inception_keras import build_model, load_spec, network_cost, scale_to_budget, scale_widths
from inception_keras.cli import main
from inception_keras.data import load_data
from inception_keras.train import TrainConfig
from search.budget import BudgetError, PointCost, cheapest
from search.driver import _clear as clear_search
from search.driver import parent_space, run_search
from search.report import SearchError
from search.tuner import Parent
from search.space import space_from_dict

TINY_SPEC = {
    "name": "tiny", "input_shape": [24, 24, 3], "normalization": "batch_norm",
    "stem": [{"conv": {"filters": 8, "kernel": 3}}, {"max_pool": {"size": 3, "stride": 2}}],
    "stages": [{"name": "3", "modules": [[8, 8, 8, 4, 4, 4]]},
               {"name": "4", "modules": [[8, 8, 8, 4, 4, 4]], "pool": {"max_pool": {"size": 3, "stride": 2}}}],
    "aux_heads": [{"after": "3a", "pool_size": 3, "pool_stride": 2, "conv_width": 8, "dense_width": 16}],
    "head": {"dropout": 0.2, "classes": 3},
}
VARY = [{"widths": ["ch3x3_reduce", "ch5x5_reduce", "pool_proj"], "choices": [2, 4, 8, 16]}]
CONFIG = TrainConfig(optimizer="adam", ema=False, batch_size=8)


@pytest.fixture(scope="module")
def folder_data(image_folder):
    return load_data(f"folder:{image_folder}")


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    """A two-module network (fast to build) whose budget, the base's own cost, rejects some candidates."""
    folder = tmp_path_factory.mktemp("space")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC))
    base_cost = network_cost(load_spec(folder / "tiny.yaml")).inference_params
    data = {"name": "tiny", "base": str(folder / "tiny.yaml"), "vary": VARY, "budget": {"max_params": base_cost}}
    (folder / "space.yaml").write_text(yaml.safe_dump(data))
    return folder / "space.yaml"


def tiny_space(space_file, **budget):
    data = yaml.safe_load(space_file.read_text())
    return space_from_dict({**data, "budget": {**data["budget"], **budget}})


def test_random_search_trials_are_all_within_budget_and_reported(space_file, folder_data, tmp_path, capsys):
    space = tiny_space(space_file)
    limit = space.budget.max_params
    outcome = run_search(space, folder_data, tmp_path / "s", "random", max_trials=3, epochs=1, config=CONFIG)
    assert len(outcome.records) == 3 and outcome.rejected > 0
    cost = PointCost(space)
    for record in outcome.records:
        assert record["params"] <= limit and cost.within(record["values"])
        assert record["params"] == cost(record["values"])[0]
        assert 0 <= record["val_accuracy"] <= 1 and record["train_seconds"] > 0 and record["worker"] == "tuner0"
    for name in ("results.json", "results.csv", "pareto.png", "best_spec.yaml", "space.json", "baseline.json"):
        assert (tmp_path / "s" / name).exists(), name
    baseline = json.loads((tmp_path / "s" / "baseline.json").read_text())  # the obvious answer, scored alike
    expected, multiplier = scale_to_budget(space.base, space.budget)
    assert (baseline["multiplier"], baseline["spec"]) == (multiplier, expected.to_dict())
    assert baseline["params"] == network_cost(expected).inference_params <= limit
    assert network_cost(scale_widths(space.base, multiplier + 1e-4)).inference_params > limit
    assert 0 <= baseline["val_accuracy"] <= 1 and baseline["executions"] == 1
    assert json.loads((tmp_path / "s" / "results.json").read_text())["baseline"] == baseline
    best = max(outcome.records, key=lambda r: (r["val_accuracy"], -r["params"]))
    assert load_spec(tmp_path / "s" / "best_spec.yaml") == space.spec_for(best["values"])
    capsys.readouterr()
    assert main(["search", "report", str(tmp_path / "s"), "--export", "--export-dir", str(tmp_path / "exp")]) == 0
    printed = capsys.readouterr().out
    assert "Pareto front, params vs accuracy" in printed and "Pareto front, multiply-adds vs accuracy" in printed
    assert f"width-multiplier baseline: the base with every width x{multiplier:g}, val accuracy " in printed
    assert "exported" in printed and (tmp_path / "exp" / "tiny_searched" / "1" / "saved_model.pb").exists()
    again = run_search(space, folder_data, tmp_path / "s", "random", max_trials=1, epochs=1, config=CONFIG,
                       overwrite=True)
    assert len(again.records) == 1 and len(list((tmp_path / "s" / "records").iterdir())) == 1


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband_searches_run(tuner, space_file, folder_data, tmp_path):
    space = tiny_space(space_file)
    epochs = 3 if tuner == "hyperband" else 1  # Hyperband: max epochs; its first bracket's trials train 1
    outcome = run_search(space, folder_data, tmp_path / tuner, tuner, max_trials=2, epochs=epochs, config=CONFIG,
                         initial_points=1)
    assert len(outcome.records) == 2
    assert all(record["params"] <= space.budget.max_params for record in outcome.records)


def test_impossible_budget_fails_before_any_training(space_file, folder_data, tmp_path):
    with pytest.raises(BudgetError, match="impossible budget .* the smallest achievable is"):
        run_search(tiny_space(space_file, max_params=500), folder_data, tmp_path / "s", max_trials=2, epochs=1,
                   config=CONFIG)
    assert not (tmp_path / "s").exists()


def test_budget_too_tight_for_sampling_is_a_clear_error(space_file, folder_data, tmp_path):
    cost = PointCost(tiny_space(space_file))
    tight = tiny_space(space_file, max_params=cost(cheapest(cost))[0])
    with pytest.raises(BudgetError, match="sampling found no new point within the budget .* in 200 draws after 1 "):
        run_search(tight, folder_data, tmp_path / "s", max_trials=2, epochs=1, config=CONFIG, max_attempts=500)


def _search_command(space_file, image_folder, directory, *extra):
    return [sys.executable, "-m", "inception_keras.cli", "search", "--space", str(space_file), "--dataset",
            f"folder:{image_folder}", "--epochs", "1", "--batch-size", "8", "--optimizer",
            "adam", "--no-ema", "--dir", str(directory), *extra]


def test_search_killed_with_sigkill_resumes_keeping_completed_trials(space_file, image_folder, tmp_path):
    directory = tmp_path / "s"
    command = _search_command(space_file, image_folder, directory, "--max-trials", "3")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not list(directory.glob("records/trial_*.json")):
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    kept = {path.name: path.read_text() for path in directory.glob("records/trial_*.json")}
    assert 1 <= len(kept) < 3
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    records = sorted(directory.glob("records/trial_*.json"))
    assert len(records) == 3
    for name, text in kept.items():
        assert (directory / "records" / name).read_text() == text  # completed trials were not rerun


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_distributed_chief_and_two_workers(space_file, image_folder, tmp_path):
    directory, port = tmp_path / "s", str(_free_port())
    common = ["--max-trials", "4", "--oracle-port", port, "--timeout", "280"]
    chief = subprocess.Popen(_search_command(space_file, image_folder, directory, "--role", "chief", *common),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(3)
    workers = [subprocess.Popen(_search_command(space_file, image_folder, directory, "--role", "worker",
                                                "--tuner-id", f"worker{i}", *common),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outputs = [process.communicate(timeout=300)[0] for process in [*workers, chief]]
    finally:
        for process in [chief, *workers]:
            process.kill()
    assert [p.returncode for p in [*workers, chief]] == [0, 0, 0], outputs[-1][-3000:]
    records = [json.loads(path.read_text()) for path in directory.glob("records/trial_*.json")]
    assert len(records) == 4
    assert {record["worker"] for record in records} <= {"worker0", "worker1"}
    assert "chief" not in {record["worker"] for record in records}
    assert (directory / "results.csv").exists()


def test_mirrored_strategy_option(space_file, folder_data, tmp_path):
    outcome = run_search(tiny_space(space_file), folder_data, tmp_path / "m", max_trials=1, epochs=1, config=CONFIG,
                         mirrored=True)
    assert len(outcome.records) == 1


def test_a_bad_port_variable_does_not_break_other_commands():
    env = {**os.environ, "KERASTUNER_ORACLE_PORT": "abc"}
    result = subprocess.run([sys.executable, "-m", "inception_keras.cli", "specs"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0 and "googlenet_mini" in result.stdout


def test_search_cli_errors(space_file, capsys):
    assert main(["search", "--space", str(space_file), "--budget-params", "10k", "--dataset", "no_such_ds_xyz"]) == 2
    assert "no tensorflow-datasets dataset named" in capsys.readouterr().err
    assert main(["search", "--space", str(space_file), "--budget-params", "lots"]) == 2
    assert "--budget-params: must be a count such as" in capsys.readouterr().err
    assert main(["search", "--space", "nope"]) == 2
    assert "neither a registered search space" in capsys.readouterr().err
    assert main(["search", "report", "/nonexistent/dir"]) == 2
    assert "holds no search" in capsys.readouterr().err
    assert main(["search", "--role", "worker", "--space", str(space_file)]) == 2
    assert "a worker needs --tuner-id" in capsys.readouterr().err


def parent_run(folder, spec, classes, seed=0):
    """A run directory of `spec` with random weights and batch-norm statistics, as a finished training leaves it."""
    import numpy as np

    from inception_keras import build_model, save_spec
    from inception_keras.serialize import write_class_names

    model = build_model(spec)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 2.0, w.shape).astype("float32") if v.path.endswith("variance")
                       else rng.normal(0, 0.2, w.shape).astype("float32") for v, w in zip(model.weights,
                                                                                       model.get_weights())])
    folder.mkdir(parents=True)
    model.save(folder / "best.keras")
    save_spec(spec, folder / "spec.yaml")
    write_class_names(folder / "class_names.txt", classes)
    return model


def test_an_inherited_search_starts_each_trial_from_the_parent(space_file, folder_data, tmp_path, capsys,
                                                              monkeypatch):
    import numpy as np
    import tensorflow as tf

    space = tiny_space(space_file, max_params=10**6)
    parent = parent_run(tmp_path / "parent", space.base, folder_data.class_names)
    tiny = replace(CONFIG, learning_rate=1e-7)
    outcome = run_search(space, folder_data, tmp_path / "s", max_trials=1, epochs=3, config=tiny,
                         parent=tmp_path / "parent", steps=1, recalibrate_batches=2)
    printed = capsys.readouterr().out
    assert f"every trial inherits from {tmp_path / 'parent'} (tiny): batch norm recalibrated on 2 batches, then " \
           f"1 steps" in printed
    [record] = outcome.records
    assert (record["parent"], record["steps"], record["executions"]) == (str(tmp_path / "parent"), 1, 1)
    point = json.loads((tmp_path / "s" / "parent.json").read_text())
    assert point["params"] == network_cost(space.base).inference_params and 0 <= point["val_accuracy"] <= 1
    checkpoint = tmp_path / "s" / "kt" / f"trial_{record['trial_id']}" / "checkpoint.weights.h5"
    child = build_model(space.spec_for(record["values"]))
    child.load_weights(checkpoint)
    stem = child.get_layer("conv1_conv").get_weights()[0]
    np.testing.assert_allclose(stem, parent.get_layer("conv1_conv").get_weights()[0], atol=1e-5)  # inherited
    events = list((tmp_path / "s" / "logs" / record["trial_id"] / "execution0").glob("events.out.tfevents.*"))
    plugins = {value.metadata.plugin_data.plugin_name for event in tf.compat.v1.train.summary_iterator(str(events[0]))
               for value in event.summary.value}
    assert "hparams" in plugins  # TensorBoard's HParams dashboard reads the trial's hyperparameters
    assert parent_space(space, Parent(parent, space.base, "p")).base == space.base
    other = tmp_path / "other"
    parent_run(other, space.base, folder_data.class_names)
    with pytest.raises(SearchError, match=rf"holds a search inheriting from {tmp_path / 'parent'} \(SHA-256 "
                                          rf"[0-9a-f]{{64}}\), not from {other} \(SHA-256 [0-9a-f]{{64}}\); use "):
        run_search(space, folder_data, tmp_path / "s", max_trials=1, epochs=1, config=tiny, parent=other, steps=1)
    recorded = json.loads((tmp_path / "s" / "space.json").read_text())["parent"]["sha256"]
    shutil.copy(tmp_path / "parent" / "best.keras", tmp_path / "saved.keras")
    parent_run(tmp_path / "changed", space.base, folder_data.class_names, seed=1)
    shutil.copy(tmp_path / "changed" / "best.keras", tmp_path / "parent" / "best.keras")
    with pytest.raises(SearchError, match=rf"holds a search inheriting from {tmp_path / 'parent'}, whose model "
                                          rf"changed since: SHA-256 {recorded} recorded, [0-9a-f]{{64}} now"):
        run_search(space, folder_data, tmp_path / "s", max_trials=1, epochs=1, config=tiny, parent=tmp_path / "parent",
                   steps=1, recalibrate_batches=2)
    shutil.copy(tmp_path / "saved.keras", tmp_path / "parent" / "best.keras")
    # scored after recalibration alone, every execution on the same 3 batches of the 24 training images (kept from
    # the first pass: shuffled anew, which images share a batch would move the statistics after the first batch
    # norm, and the score)
    from inception_keras.child_scoring import ChildScorer

    scored = []  # through masks on the parent (tested equal to narrowing, recalibrating and evaluating)
    monkeypatch.setattr(ChildScorer, "score", lambda self, spec, real=ChildScorer.score: scored.append(spec) or
                        real(self, spec))
    untrained = run_search(space, folder_data, tmp_path / "s", max_trials=1, epochs=1, config=tiny, steps=0,
                           parent=tmp_path / "parent", recalibrate_batches=3, executions_per_trial=2, overwrite=True)
    [record] = untrained.records
    assert (record["steps"], record["executions"], record["val_accuracy_std"]) == (0, 2, 0)
    assert [spec.to_dict() for spec in scored] == [record["spec"]] * 2
    assert 0 <= record["val_accuracy"] <= 1
    # no model built: the trial's checkpoint is its batch-norm statistics; exported, the child is narrowed again
    trial = tmp_path / "s" / "kt" / f"trial_{record['trial_id']}"
    assert (trial / "child_statistics.npz").exists() and not (trial / "checkpoint.weights.h5").exists()
    from inception_keras.child_scoring import load_statistics
    from inception_keras.data import training_pipelines
    from inception_keras.train import compile_model, monitor_name, output_names
    from search.driver import _child_of_parent

    statistics = load_statistics(trial / "child_statistics.npz")
    child = _child_of_parent(tmp_path / "s", space.spec_for(record["values"]), trial / "child_statistics.npz")
    np.testing.assert_array_equal(child.get_layer("conv1_conv").get_weights()[0],
                                  parent.get_layer("conv1_conv").get_weights()[0])
    assert statistics and all(np.array_equal(np.asarray(child.get_layer(name).moving_mean)[:len(mean)], mean)
                              for name, (mean, _) in statistics.items())  # a widened batch norm: its first channels
    assert not np.allclose(child.get_layer("conv1_bn").moving_mean, parent.get_layer("conv1_bn").moving_mean)
    compile_model(child, child_spec := space.spec_for(record["values"]), tiny, 1)
    _, val_ds, _ = training_pipelines(folder_data, child_spec.input_shape, child_spec.head.classes, tiny.batch_size,
                                      output_names(child_spec))
    scores = child.evaluate(val_ds, verbose=0, return_dict=True)  # the score the trial recorded
    assert scores[monitor_name(child_spec).removeprefix("val_")] == pytest.approx(record["val_accuracy"], abs=1e-6)
    assert main(["search", "report", str(tmp_path / "s"), "--export", "--export-dir", str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "tiny_searched" / "1" / "saved_model.pb").exists()
    shutil.copy(tmp_path / "changed" / "best.keras", tmp_path / "parent" / "best.keras")
    with pytest.raises(SearchError, match=rf"the best trial's model is narrowed from its parent {tmp_path / 'parent'}, "
                                          rf"whose model changed since the search \(SHA-256 {recorded} recorded, "):
        _child_of_parent(tmp_path / "s", child_spec, trial / "child_statistics.npz")
    clear_search(tmp_path / "s")  # --overwrite: the parent's point and the TensorBoard logs are the search's own
    assert not any((tmp_path / "s").iterdir())


def test_reduce_widths_that_cannot_inherit_leave_the_space_before_any_trial(space_file):
    space = tiny_space(space_file)
    with_zero = space_from_dict({**yaml.safe_load(space_file.read_text()),
                                 "vary": [{"widths": ["ch3x3_reduce"], "choices": [0, 2, 4]}]})
    restricted, left_out = Parent(None, space.base, "p").restrict(with_zero)
    assert [dim.values for dim in restricted.dimensions] == [(2, 4), (2, 4)] and left_out == 9 - 4
    no_bottleneck = space.base.replace(stages=tuple(
        replace(stage, modules=tuple(replace(m, ch3x3_reduce=0) for m in stage.modules))
        for stage in space.base.stages))
    with pytest.raises(SearchError, match=r"no 3a_ch3x3_reduce of the space can inherit from p: its choices \[2, 4, "
                                          r"8, 16\] are all above 0, and the parent has no bottleneck there"):
        Parent(None, no_bottleneck, "p").restrict(space)


def test_inheriting_flags_need_a_parent(space_file, image_folder, tmp_path, capsys):
    args = ["search", "--space", str(space_file), "--dataset", f"folder:{image_folder}", "--dir", str(tmp_path / "s"),
            "--steps", "3"]
    assert main(args) == 2
    assert "--steps and --recalibrate-batches go with --parent" in capsys.readouterr().err
    assert main(args[:-2] + ["--parent", str(tmp_path / "none")]) == 2
    assert f"--parent {tmp_path / 'none'}: " in capsys.readouterr().err


def test_a_pretrained_googlenet_is_compressed_by_an_inherited_search_and_exported(folder_data, tmp_path, capsys):
    """The faithful GoogLeNet imported from the recorded Caffe fixture (LRN, no batch norm, Caffe input conversion,
    1000 classes at 224 px) as the parent of a googlenet_bottlenecks search on 3 classes at 96 px."""
    from helpers import fixture_weights

    from inception_keras.pretrained.convert import load_weights, source_spec
    from search.report import read_parent
    from search.space import get_space

    _, weights = fixture_weights("caffe")
    spec = source_spec(weights)
    model = build_model(spec)
    load_weights(model, weights)
    model.save(tmp_path / "googlenet.keras")  # as `weights import` writes it: no spec.yaml beside it
    parent_params = network_cost(spec).inference_params
    space = get_space("googlenet_bottlenecks").with_budget(max_params=parent_params - 10**6)
    space = space.with_base(space.base.with_input_size(96).with_classes(3))
    outcome = run_search(space, folder_data, tmp_path / "s", max_trials=1, epochs=1, config=CONFIG,
                         parent=tmp_path / "googlenet.keras", steps=0)
    printed = capsys.readouterr().out
    assert "every trial inherits from" in printed and "no batch norm to recalibrate; scored without training" in \
        printed and "recalibrated on" not in printed  # it has no batch norm
    assert "note: the parent (googlenet) is another network than the base of space 'googlenet_bottlenecks' " \
           "(input_conversion: 'caffe' in the parent, 'none' in the base): the space's widths are searched on the " \
           "parent's network" in printed
    [record] = outcome.records
    assert record["params"] <= parent_params - 10**6 and record["spec"]["input_conversion"] == "caffe"
    assert read_parent(tmp_path / "s")["params"] == parent_params  # its accuracy: not on these classes
    assert main(["search", "report", str(tmp_path / "s"), "--export", "--export-dir", str(tmp_path / "exp")]) == 0
    assert "parent: " in capsys.readouterr().out
    assert (tmp_path / "exp" / "googlenet_searched" / "1" / "saved_model.pb").exists()


def test_a_parent_whose_spec_describes_another_network_is_refused(space_file, folder_data, tmp_path):
    from inception_keras import save_spec

    space = tiny_space(space_file, max_params=10**6)
    parent_run(tmp_path / "parent", space.base, folder_data.class_names)
    save_spec(space.base.without_aux(), tmp_path / "parent" / "spec.yaml")
    with pytest.raises(SearchError, match=rf"^--parent {tmp_path / 'parent'}: {tmp_path / 'parent' / 'spec.yaml'} "
                                          rf"\('tiny'\) does not describe the model: the model's layer aux_1_pool"):
        run_search(space, folder_data, tmp_path / "s", max_trials=1, epochs=1, config=CONFIG,
                   parent=tmp_path / "parent")
    assert not (tmp_path / "s").exists()


def test_a_latency_budget_is_screened_by_prediction_and_each_trial_measured(space_file, folder_data, tmp_path,
                                                                           monkeypatch, capsys):
    from inception_keras.export import latency

    monkeypatch.setenv("INCEPTION_KERAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(latency, "CANDIDATES", 4)
    monkeypatch.setattr(latency, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(latency, "ROUNDS", 1)
    monkeypatch.setattr(latency, "MIN_CALLS", 10)
    space = tiny_space(space_file).with_budget(max_latency_ms=1000.0)  # every point fits: the mechanics
    outcome = run_search(space, folder_data, tmp_path / "s", max_trials=1, epochs=1, config=CONFIG)
    printed = capsys.readouterr().out
    assert "[latency] fitting a latency predictor for tiny's structure in onnxruntime" in printed
    [record] = outcome.records
    assert record["latency_ms"] > 0 and record["predicted_latency_ms"] > 0 and record["over_budget"] is False
    assert "ms measured (" in printed and "latency ms" in printed  # the trial's line and the report's column
    baseline = json.loads((tmp_path / "s" / "baseline.json").read_text())
    assert baseline["latency_ms"] > 0 and baseline["params"] <= space.budget.max_params  # params bind, not latency
    assert list((tmp_path / "cache" / "latency").glob("*.json"))
    with pytest.raises(BudgetError, match=r"latency <= 0.001 ms on onnxruntime \(inference model\), but the smallest "
                                          r"achievable is .* ms predicted"):
        run_search(space.with_budget(max_latency_ms=0.001), folder_data, tmp_path / "t", max_trials=1, epochs=1,
                   config=CONFIG)
