"""Run directories under damage and contention: cut writes, changed configurations, NaN, two processes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from inception_keras import get_spec
from inception_keras.cli import main
from inception_keras.data import load_data
from inception_keras.utils.errors import UserError
from inception_keras.training.locking import LOCK_FILE, DirectoryInUseError, DirectoryLock, LockError
from inception_keras.training.owned import NotOursError
from inception_keras.pretrained.convert import load_keras_model
from inception_keras.training.run_dir import check_record, run_record
from inception_keras.train import (RunDamagedError, RunMismatchError, TrainConfig, TrainingDivergedError,
                                   best_record, clear_run, read_history, read_history_rows, train)

SCRIPTS = Path(__file__).parents[1] / "scripts"
CONFIG = TrainConfig(epochs=3, batch_size=8, learning_rate=0.05)  # the paper recipe: SGD, EMA weights
MONITOR = "val_predictions_accuracy"


def tiny_spec(size=24):
    return get_spec("googlenet_mini").with_input_size(size).with_classes(3)


class Interrupt(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt()


class PoisonAt(keras.callbacks.Callback):
    """Sets a weight to NaN when `epoch` begins: the loss of its first batch is NaN."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            layer = self.model.get_layer("predictions")
            kernel = layer.get_weights()[0]
            kernel[0, 0] = np.nan
            layer.set_weights([kernel] + layer.get_weights()[1:])


@pytest.fixture(scope="module")
def data(image_folder):
    return load_data(f"folder:{image_folder}")


@pytest.fixture(scope="module")
def interrupted(data, tmp_path_factory):
    """A run of 3 epochs interrupted after its second: backup/ at epoch 2 (and 1 before it), 2 history rows."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(Interrupt):
        train(tiny_spec(), data, out, CONFIG, callbacks=[InterruptAfter(1)], verbose=0)
    return out


@pytest.fixture
def run(interrupted, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(interrupted, copy)
    return copy


def snapshot(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def temporaries(folder: Path) -> list:
    return [path.name for path in folder.rglob(".*") if path.name != LOCK_FILE]


def assert_finished_with_loadable_best(out: Path, result):
    summary = json.loads((out / "summary.json").read_text())
    record = best_record(out / "best.keras")
    load_keras_model(out / "best.keras")
    assert record["score"] == summary["best_val_accuracy"] == result.best_val_accuracy
    assert record["epoch"] == summary["best_epoch"] >= 1
    assert read_history(out / "history.csv")[MONITOR][record["epoch"] - 1] == record["score"]
    assert not (out / "backup").exists() and not (out / LOCK_FILE).exists() and not temporaries(out)


def test_sigkill_while_writing_best_keras_leaves_the_old_one_and_resume_finishes(image_folder, data, tmp_path,
                                                                                  capsys):
    out = tmp_path / "run"
    command = [sys.executable, str(SCRIPTS / "train_folder_kill_mid_save.py"), str(image_folder), str(out), "3", "2"]
    killed = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert "KILLING while writing" in killed.stdout
    assert best_record(out / "best.keras")["epoch"] == 1  # the old file, whole: the cut write went to a temporary
    load_keras_model(out / "best.keras")
    assert any(name.startswith(".best.keras.") for name in temporaries(out))
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert (out / LOCK_FILE).exists()

    _, result = train(tiny_spec(), data, out, CONFIG, verbose=0)
    printed = capsys.readouterr().out
    assert "which no longer runs: taking the lock over" in printed
    assert f"Resuming {out} after epoch 1 of 3" in printed
    assert (result.resumed_from_epoch, result.epochs_this_run, result.epochs_total) == (1, 2, 3)
    assert read_history(out / "history.csv")["epoch"] == [0, 1, 2]
    assert_finished_with_loadable_best(out, result)


def test_resume_repairs_a_damaged_run_directory_and_may_train_longer(run, data, capsys):
    backup, best = run / "backup", run / "best.keras"
    (backup / "training_metadata.json").write_text("")  # falls back to the state one epoch before
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])  # as a kill mid-write left it before the fix
    with (run / "history.csv").open("a") as handle:
        handle.write("2,0.61,0.3")  # a row cut short: no line end
    (run / "spec.yaml").unlink()
    (run / "class_names.txt").unlink()
    (run / ".best.keras.x1y2.keras").write_bytes(b"half")
    assert [row["epoch"] for row in read_history_rows(run / "history.csv")[0]] == [0, 1]

    _, result = train(tiny_spec(), data, run, replace(CONFIG, epochs=4, early_stopping_patience=5), verbose=0)
    printed = capsys.readouterr().out
    assert "training_metadata.json is empty; resuming from the backup before it" in printed
    assert f"Resuming {run} after epoch 1 of 4" in printed
    assert f"{best} does not load" in printed and "removed it; the next epoch writes a new one" in printed
    assert "left out 1 torn or damaged row(s)" in printed
    assert (result.resumed_from_epoch, result.epochs_this_run, result.epochs_total) == (1, 3, 4)
    assert result.best_epoch >= 2  # the damaged best was dropped with its score
    assert read_history(run / "history.csv")["epoch"] == [0, 1, 2, 3]
    assert json.loads((run / "run.json").read_text())["recipe"]["epochs"] == 4
    assert (run / "spec.yaml").exists() and (run / "class_names.txt").read_text() == "blue\ngreen\nred\n"
    assert_finished_with_loadable_best(run, result)


def test_damaged_backup_without_an_earlier_state_is_one_line_from_the_cli(run, image_folder, capsys):
    backup = run / "backup"
    (backup / "training_metadata.json").write_text('{"epo')
    (backup / "training_metadata.json.bkp").unlink()
    args = ["train", "googlenet_mini", "--dataset", f"folder:{image_folder}", "--input-size", "24", "--epochs", "3",
            "--batch-size", "8", "--learning-rate", "0.05", "--out", str(run)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"error: {backup / 'training_metadata.json'} is damaged" in err
    assert "cannot resume; --overwrite starts afresh" in err
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n")
    assert main(args) == 2
    assert "latest.weights.h5 is damaged" in capsys.readouterr().err


def test_resume_refuses_another_configuration_before_touching_anything(run, data, tmp_path):
    before = snapshot(run)
    with pytest.raises(RunMismatchError, match=rf"^{run} was started with input_shape \[24, 24, 3\]; this run asks "
                                               rf"for \[32, 32, 3\]; use another --out, or --overwrite"):
        train(tiny_spec(32), data, run, CONFIG, verbose=0)
    with pytest.raises(RunMismatchError, match=r"recipe.learning_rate 0.05; this run asks for 0.01;"):
        train(tiny_spec(), data, run, replace(CONFIG, learning_rate=0.01), verbose=0)
    with pytest.raises(RunMismatchError, match=r"freeze \"none\"; this run asks for \"batch_norm\""):
        train(tiny_spec(), data, run, replace(CONFIG, freeze="batch_norm"), verbose=0)
    other = replace(data, name="folder:elsewhere", class_names=["cyan", "magenta", "yellow"])
    with pytest.raises(RunMismatchError, match=r"dataset \"folder:.*\"; this run asks for \"folder:elsewhere\" "
                                               r"\(and 1 more: class_names\)"):
        train(tiny_spec(), data=other, out_dir=run, config=CONFIG, verbose=0)
    with pytest.raises(RunMismatchError, match=r"weights null; this run asks for \".*best.keras\""):
        train(tiny_spec(), data, run, CONFIG, verbose=0, weights=run / "best.keras")
    assert snapshot(run) == before

    (run / "run.json").write_text("{")
    with pytest.raises(RunDamagedError, match=r"run.json is damaged .*: cannot tell what .* was started with"):
        train(tiny_spec(), data, run, CONFIG, verbose=0)
    (run / "run.json").unlink()
    with pytest.raises(RunMismatchError, match="holds a training run without run.json"):
        train(tiny_spec(), data, run, CONFIG, verbose=0)


def test_overwrite_starts_an_interrupted_run_afresh(run, data):
    model, result = train(tiny_spec(32), data, run, replace(CONFIG, epochs=1), overwrite=True, verbose=0)
    assert (result.resumed_from_epoch, result.epochs_total) == (0, 1)
    saved = load_keras_model(run / "best.keras").get_weights()  # the EMA weights, as fit leaves them at the end
    assert all(np.array_equal(a, b) for a, b in zip(saved, model.get_weights()))
    assert json.loads((run / "run.json").read_text())["input_shape"] == [32, 32, 3]
    assert read_history(run / "history.csv")["epoch"] == [0]
    assert_finished_with_loadable_best(run, result)


RUN_LAYOUT = ("run.json", "spec.yaml", "class_names.txt", "history.csv", "best.keras", "summary.json",
              ".best.keras.ab12.keras", "backup/latest.weights.h5", "backup/training_metadata.json.bkp",
              "backup/.latest.weights.h5.x1.weights.h5", "logs/train/events.out.tfevents.1.vm.1.0.v2",
              "logs/validation/events.out.tfevents.2.vm.1.1.v2", LOCK_FILE)


def lay_out(folder, names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    return folder


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_overwrite_clears_a_run_and_its_fine_tuning_head_leaving_the_lock(tmp_path):
    lay_out(tmp_path, RUN_LAYOUT + tuple(f"head/{name}" for name in RUN_LAYOUT if name != LOCK_FILE))
    clear_run(tmp_path)
    assert listing(tmp_path) == [LOCK_FILE]
    clear_run(tmp_path / "never-made")  # nothing to clear


@pytest.mark.parametrize("foreign", ["notes.md", "backup/thesis.tex", "logs/app.log", "logs/train/notes.txt",
                                     "head/notes.md", "head/backup/thesis.tex", "best.keras/model.keras"])
def test_overwrite_refuses_a_run_directory_holding_anything_a_run_does_not_write(tmp_path, foreign):
    folder_for_a_file = foreign.startswith("best.keras/")
    names = [name for name in RUN_LAYOUT if name != "best.keras" or not folder_for_a_file]
    lay_out(tmp_path, names + [f"head/{name}" for name in ("run.json", "best.keras")] + [foreign])
    named = tmp_path / ("best.keras" if folder_for_a_file else foreign)
    before = listing(tmp_path)
    with pytest.raises(NotOursError, match=rf"^--overwrite refused: {tmp_path} holds {named}, which no "
                                           rf"training run writes; --overwrite removes only what a training run "
                                           rf"wrote there"):
        clear_run(tmp_path)
    assert listing(tmp_path) == before


def test_overwrite_refuses_our_names_without_run_json_and_symbolic_links(tmp_path):
    lay_out(tmp_path / "plain", ["history.csv", "logs/train/events.out.tfevents.1"])
    with pytest.raises(NotOursError, match=r"holds .*plain/history.csv but no run.json, so it cannot be told"):
        clear_run(tmp_path / "plain")
    lay_out(tmp_path / "headless", ["run.json", "head/best.keras"])
    with pytest.raises(NotOursError, match=r"holds .*headless/head/best.keras but no run.json"):
        clear_run(tmp_path / "headless")
    lay_out(tmp_path / "mine", ["thesis.tex"])
    lay_out(tmp_path / "linked", ["run.json"]).joinpath("backup").symlink_to(tmp_path / "mine")
    with pytest.raises(NotOursError, match=r"holds .*linked/backup, which no training run writes"):
        clear_run(tmp_path / "linked")
    assert listing(tmp_path / "plain") == ["history.csv", "logs", "logs/train", "logs/train/events.out.tfevents.1"]
    assert (tmp_path / "mine" / "thesis.tex").exists() and (tmp_path / "headless" / "head" / "best.keras").exists()


def test_a_start_refused_before_its_first_epoch_writes_no_record_to_refuse_the_corrected_one(data, run, tmp_path):
    out = tmp_path / "refused"
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02junk")
    with pytest.raises(UserError, match="junk.pth"):
        train(tiny_spec(), data, out, CONFIG, verbose=0, weights=tmp_path / "junk.pth")
    assert listing(out) == []
    lay_out(out, ["run.json", "spec.yaml"])  # a record an older version wrote before such a refusal ...
    shutil.copyfile(run / "run.json", out / "run.json")
    record = run_record(tiny_spec(32), data, CONFIG, None)
    check_record(out, record)  # ... is no reason to refuse: no epoch finished there
    with pytest.raises(RunMismatchError, match=r"input_shape \[24, 24, 3\]; this run asks for \[32, 32, 3\]"):
        check_record(run, record)


def test_nan_loss_stops_with_a_user_error_and_leaves_the_last_good_state(run, data):
    with pytest.raises(TrainingDivergedError, match=rf"^training stopped at epoch 3: the loss became nan \(try a "
                                                    rf"lower learning rate\); {run / 'best.keras'} holds epoch [12] "
                                                    rf"\({MONITOR} [01]\.\d+\); --overwrite starts afresh, rerunning "
                                                    rf"resumes after epoch 2$"):
        train(tiny_spec(), data, run, CONFIG, callbacks=[PoisonAt(2)], verbose=0)
    assert not (run / "summary.json").exists()
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    assert read_history(run / "history.csv")["epoch"] == [0, 1]
    model = load_keras_model(run / "best.keras")
    assert all(np.isfinite(weights).all() for weights in model.get_weights())
    assert not (run / LOCK_FILE).exists()


@pytest.fixture
def live_pid():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait()


def write_lock(folder: Path, pid: int, host: str | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "started": time.time(), "what": "training run",
              "token": "t"}
    (folder / LOCK_FILE).write_text(json.dumps(holder))


def test_a_locked_run_directory_is_refused_naming_the_holder(data, tmp_path, live_pid):
    write_lock(tmp_path / "run", live_pid)
    with pytest.raises(DirectoryInUseError, match=rf"^{tmp_path / 'run'} is in use by pid {live_pid} on host "
                                                  rf"{socket.gethostname()} since \d\d:\d\d:\d\d \(training run\)"):
        train(tiny_spec(), data, tmp_path / "run", CONFIG, verbose=0)
    assert issubclass(DirectoryInUseError, UserError)
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == [LOCK_FILE]


def test_lock_takes_over_a_dead_holder_and_is_released_on_errors(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lock(tmp_path, dead.pid)
    notes = []
    with pytest.raises(KeyError):
        with DirectoryLock(tmp_path, what="search", note=notes.append) as lock:
            held = json.loads((tmp_path / LOCK_FILE).read_text())
            assert (held["pid"], held["what"]) == (os.getpid(), "search") and lock.holder == held
            with pytest.raises(DirectoryInUseError, match=rf"in use by pid {os.getpid()} .* \(search\)"):
                DirectoryLock(tmp_path).acquire()
            raise KeyError("boom")
    assert len(notes) == 1 and f"was locked by pid {dead.pid} on host" in notes[0]
    assert "taking the lock over" in notes[0]
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_from_another_host_or_unreadable_is_not_taken_over(tmp_path):
    write_lock(tmp_path, 1, host="elsewhere")
    with pytest.raises(DirectoryInUseError, match=rf"in use by pid 1 on host elsewhere .*if no process there uses it "
                                                  rf"any more, delete {tmp_path / LOCK_FILE}"):
        DirectoryLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).write_text("")
    with pytest.raises(DirectoryInUseError, match="is being written or is damaged"):
        DirectoryLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_FILE, (old, old))
    notes = []
    with DirectoryLock(tmp_path, note=notes.append):
        assert notes == [f"note: {tmp_path} held an old, unreadable lock file: taking the lock over"]
    (tmp_path / "file").write_text("")
    with pytest.raises(LockError, match=rf"^{tmp_path / 'file' / 'run'}: cannot create the lock file"):
        DirectoryLock(tmp_path / "file" / "run").acquire()
