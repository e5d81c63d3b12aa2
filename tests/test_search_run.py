"""Searches that really train: a two-module network at 24 px on 24 generated images, 1 epoch a trial."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from inception_keras import load_spec, network_cost
from inception_keras.cli import main
from inception_keras.data import load_data
from inception_keras.train import TrainConfig
from search.budget import BudgetError, PointCost, cheapest
from search.driver import run_search
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
    for name in ("results.json", "results.csv", "pareto.png", "best_spec.yaml", "space.json"):
        assert (tmp_path / "s" / name).exists(), name
    best = max(outcome.records, key=lambda r: (r["val_accuracy"], -r["params"]))
    assert load_spec(tmp_path / "s" / "best_spec.yaml") == space.spec_for(best["values"])
    capsys.readouterr()
    assert main(["search", "report", str(tmp_path / "s"), "--export", "--export-dir", str(tmp_path / "exp")]) == 0
    printed = capsys.readouterr().out
    assert "Pareto front, params vs accuracy" in printed and "Pareto front, multiply-adds vs accuracy" in printed
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
    with pytest.raises(BudgetError, match="sampling found no new point within the budget .* in 500 draws after 0"):
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
