"""Beyond one device: MirroredStrategy (two logical CPUs), two JAX processes on 127.0.0.1, per-process data
shards, the follower that writes nothing, and one-line failures for a cluster that cannot form."""

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inception_keras import get_spec
from inception_keras.cli import main
from inception_keras.data import load_data, shard
from inception_keras.training.distribute import (MAX_COORDINATOR_TIMEOUT, Cluster, Distribution, DistributionError,
                                         require_listenable)
from inception_keras.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "tests" / "scripts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**extra) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **extra}


def run_all(commands: list[list[str]], timeout: float, **popen) -> list[tuple[int, str]]:
    """Start every command at once; (exit code, output) each. All are killed when the timeout passes."""
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                  **popen) for command in commands]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append((process.returncode, output))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{commands} did not finish within {timeout} s")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as loaded:
        return [loaded[f"arr_{i}"] for i in range(len(loaded.files))]


@pytest.mark.parametrize("elastic", [False, True], ids=["normal", "elastic"])
def test_mirrored_two_replicas_equal_one_device(tmp_path, elastic):
    """The global batch split over two replicas (momentum, EMA, aux losses) is the one-device step; elastic too (the
    replicas draw the same children and weigh their distillation losses as one device does)."""
    [(code, output)] = run_all([[sys.executable, str(SCRIPTS / "train_mirrored.py"), str(tmp_path),
                                 *(["elastic"] if elastic else [])]], 300, env=environment())
    assert code == 0, output[-3000:]
    mirrored, single = weights(tmp_path / "weights_mirrored.npz"), weights(tmp_path / "weights_single.npz")
    assert len(mirrored) == len(single) == 76
    assert max(np.abs(a - b).max() for a, b in zip(mirrored, single)) < 1e-6
    assert not all(np.array_equal(a, b) for a, b in zip(mirrored, single[::-1]))  # trained, not trivially equal
    assert (tmp_path / "mirrored" / "best.keras").exists() and (tmp_path / "single" / "best.keras").exists()


def test_two_jax_processes_equal_one_process_on_the_global_batch(tmp_path):
    """Two processes on 127.0.0.1 end with identical weights, equal within float tolerance to one process
    fed the global batches; process 0 alone wrote the shared run directory."""
    script, port = str(SCRIPTS / "train_jax_processes.py"), str(free_port())
    results = run_all([[sys.executable, script, str(tmp_path), "process", port, str(i), "2"] for i in range(2)], 400,
                      env=environment())
    for code, output in results:
        assert code == 0, output[-3000:]
    [(code, output)] = run_all([[sys.executable, script, str(tmp_path), "reference", "2"]], 300, env=environment())
    assert code == 0, output[-3000:]
    first, second, reference = (weights(tmp_path / f"weights_{name}.npz") for name in ("0", "1", "reference"))
    assert len(first) == len(reference) == 34  # every weight of the two-module network
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert max(np.abs(a - b).max() for a, b in zip(first, reference)) < 1e-5
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"best.keras", "class_names.txt", "history.csv", "logs", "run.json",
                                               "spec.yaml", "summary.json"}
    assert len((run / "history.csv").read_text().splitlines()) == 2  # header and one epoch, written once


def test_a_follower_process_writes_nothing(tmp_path):
    """Process 1 of 2 trains on its shard in batches of half the global batch and leaves the run directory
    to process 0 (barriers stubbed: a real cluster is the test above)."""

    class Follower(Distribution):
        def barrier(self, name):
            pass

    spec = get_spec("googlenet_mini").with_input_size(32)
    data = load_data("sklearn_digits", str(tmp_path / "tfds"))
    data = dataclasses.replace(data, train=data.train.take(64), train_size=64, validation=data.validation.take(32),
                               validation_size=32, builder=None)
    model, result = train(spec, data, tmp_path / "run", TrainConfig(epochs=1, batch_size=16), verbose=0,
                          distribution=Follower("data_parallel", num_processes=2, process_id=1))
    assert not (tmp_path / "run").exists()
    assert result.epochs_total == 1 and result.out_dir == str(tmp_path / "run")


def test_shards_are_disjoint_equal_and_cover_the_data(digits_dir, image_folder):
    data = load_data("sklearn_digits", digits_dir)
    parts = [shard(data, 3, i) for i in range(3)]
    assert {p.train_size for p in parts} == {data.train_size // 3}  # 1437 // 3: every process takes equal steps
    seen = [{image.numpy().tobytes() for image, _ in p.train} for p in parts]
    assert [len(s) for s in seen] == [p.train_size for p in parts]
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert sum(len(list(p.validation)) for p in parts) == 3 * parts[0].validation_size > data.validation_size - 3
    folder = load_data(f"folder:{image_folder}")
    halves = [shard(folder, 2, i) for i in range(2)]
    assert [h.train_size for h in halves] == [12, 12] and [len(list(h.train)) for h in halves] == [12, 12]
    assert shard(data, 1, 0) is data
    with pytest.raises(Exception, match="too small to share among 50 processes"):
        shard(folder, 50, 0)


def test_cluster_and_batch_errors_name_the_option():
    with pytest.raises(DistributionError, match="--coordinator 'localhost': expected HOST:PORT"):
        Cluster("localhost", 2, 0)
    with pytest.raises(DistributionError, match="--process-id 2 with --num-processes 2: the id must be 0 to 1"):
        Cluster("127.0.0.1:1234", 2, 2)
    with pytest.raises(DistributionError, match="--batch-size 33 is the global batch and must divide evenly among 2"):
        Distribution(num_processes=2).local_batch(33)
    assert Distribution(num_processes=4, process_id=3).local_batch(64) == 16


def test_keras_environment_variables_describe_the_cluster(monkeypatch):
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "10.0.0.1:1234,10.0.0.2:1234")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    assert Cluster.from_environment() == Cluster("10.0.0.1:1234", 2, 1)
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "x")
    with pytest.raises(DistributionError, match="KERAS_DISTRIBUTION_"):
        Cluster.from_environment()
    monkeypatch.delenv("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    with pytest.raises(DistributionError, match="KERAS_DISTRIBUTION_JOB_ADDRESSES is not set"):
        Cluster.from_environment()


def test_freeze_is_refused_with_the_cluster_in_keras_environment_variables(monkeypatch, capsys):
    monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "127.0.0.1:1234")
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", "1")
    assert main(["train", "googlenet_mini", "--freeze", "--weights", "x.keras"]) == 2
    assert "--freeze runs on one device" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, expected", [
    ("--coordinator-timeout", "1e308", f"must be at most {MAX_COORDINATOR_TIMEOUT:g}"),
    ("--coordinator-timeout", "3e9", f"must be at most {MAX_COORDINATOR_TIMEOUT:g}"),
    ("--coordinator-bind", "notaport", "expected HOST:PORT"),
    ("--coordinator", "127.0.0.1:70000", "expected HOST:PORT"),
])
def test_coordinator_arguments_are_checked_by_the_parser(option, value, expected, capsys):
    assert main(["train", "googlenet_mini", "--num-processes", "2", "--process-id", "0", option, value]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: inception-keras train: argument {option}: {expected}"), line


def test_an_address_in_use_is_refused_naming_it():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        with pytest.raises(DistributionError, match=f"cannot listen on {address} "):
            require_listenable(address)
    require_listenable(address)  # free again
    with pytest.raises(DistributionError, match="cannot listen on no-such-host.invalid:1234 "):
        require_listenable("no-such-host.invalid:1234")


def test_sigterm_ends_the_process_while_the_main_thread_is_stuck_in_native_code():
    """Like a main thread waiting in a JAX collective (which runs no Python signal handler): SIGTERM still
    ends the process at once, with one line and exit code 143."""
    stuck = ("import signal, time; from inception_keras.training.distribute import exit_on_sigterm; exit_on_sigterm(); "
             "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); print('ready', flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", stuck], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, env=environment())
    try:
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        _, error = process.communicate(timeout=5)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143
    assert error.splitlines() == ["terminated by SIGTERM: run the same command again to resume"]


def test_cli_distribution_refusals(capsys):
    base = ["train", "googlenet_mini"]
    assert main(base + ["--num-processes", "2", "--process-id", "2"]) == 2
    assert "--process-id 2 with --num-processes 2" in capsys.readouterr().err
    assert main(base + ["--num-processes", "2"]) == 2
    assert "several processes need --num-processes N and --process-id I" in capsys.readouterr().err
    assert main(base + ["--distribute", "data_parallel"]) == 2
    assert "need the JAX backend (--backend jax)" in capsys.readouterr().err
    assert main(base + ["--backend", "jax"]) == 2
    assert "Keras is already loaded with the tensorflow backend" in capsys.readouterr().err
    assert main(base + ["--distribute", "mirrored", "--freeze", "--weights", "x.keras"]) == 2
    assert "--freeze runs on one device" in capsys.readouterr().err


def test_cli_mirrored_training(digits_dir, tmp_path, capsys):
    args = ["train", "googlenet_mini", "--data-dir", digits_dir, "--input-size", "32", "--epochs", "1",
            "--batch-size", "64", "--optimizer", "adam", "--distribute", "mirrored", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "distributed training: MirroredStrategy over 1 local replica(s); batch size 64 is the global batch" \
        in printed
    assert (tmp_path / "run" / "best.keras").exists()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "inception_keras.cli", *args]


@pytest.mark.parametrize("process_id, expected", [
    ("1", "error: no coordinator answers at 127.0.0.1:{port} (waited 2 s): start process 0 first"),
    ("0", "error: the 2 processes did not all join the coordinator at 127.0.0.1:{port} within 2 s"),
])
def test_a_cluster_that_cannot_form_fails_in_one_line(process_id, expected):
    port = free_port()
    [(code, output)] = run_all([cli("train", "googlenet_mini", "--backend", "jax", "--num-processes", "2",
                                    "--process-id", process_id, "--coordinator", f"127.0.0.1:{port}",
                                    "--coordinator-timeout", "2")], 120, env=environment())
    assert code == 2, output
    assert output.strip().splitlines()[-1].startswith(expected.format(port=port)), output
    assert "Traceback" not in output  # run_all's 120 s is the hang guard


@pytest.mark.slow
def test_a_coordinator_port_in_use_fails_in_one_line():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        [(code, output)] = run_all([cli("train", "googlenet_mini", "--backend", "jax", "--num-processes", "2",
                                        "--process-id", "0", "--coordinator", address)], 120, env=environment())
    assert code == 2, output
    assert output.strip().splitlines() == [f"error: process 0 cannot listen on {address} (Address already in use) "
                                           f"for the coordinator: free that port, or choose another with "
                                           f"--coordinator / --coordinator-bind"]


@pytest.mark.slow
def test_two_cli_processes_stop_at_once_on_sigterm_and_resume(image_folder, tmp_path):
    """SIGTERM both processes (cluster from KERAS_DISTRIBUTION_* variables) once an epoch is backed up: both
    end within seconds with one line (JAX's preemption service would swallow the signal), then the same
    command resumes from process 0's backup and finishes its epochs, written by process 0 alone."""
    out = tmp_path / "run"
    command = cli("train", "googlenet_mini", "--dataset", f"folder:{image_folder}", "--input-size", "24", "--epochs",
                  "3", "--batch-size", "8", "--optimizer", "adam", "--backend", "jax", "--out", str(out))

    def cluster(process_id, port):
        return environment(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port}", KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                           KERAS_DISTRIBUTION_PROCESS_ID=str(process_id))

    port = free_port()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  env=cluster(i, port)) for i in range(2)]
    try:
        deadline = time.monotonic() + 400
        while not (out / "backup" / "training_metadata.json").exists():
            assert time.monotonic() < deadline and processes[0].poll() is None, "no backup was written"
            time.sleep(0.5)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        errors = [process.communicate(timeout=10)[1] for process in processes]  # at once, not at the epoch's end
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert [process.returncode for process in processes] == [143, 143]
    assert all(error.strip().splitlines()[-1] == "terminated by SIGTERM: run the same command again to resume"
               for error in errors), errors
    port = free_port()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                  env=cluster(i, port)) for i in range(2)]
    try:
        results = [(process.communicate(timeout=500)[0], process.returncode) for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert [code for _, code in results] == [0, 0], results[0][0][-2000:] + results[1][0][-2000:]
    assert re.search(f"Resuming {re.escape(str(out))} after epoch [12] of 3", results[0][0]), results[0][0][-2000:]
    assert "process 1:" in results[1][0] and "best model:" not in results[1][0]
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 4 and [row.split(",")[0] for row in history[1:]] == ["0", "1", "2"]
