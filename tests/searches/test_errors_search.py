"""Bad inputs to `search` and `search report`: one line, exit 2, naming what and where; no traceback."""

import json
import os
import socket

import grpc
import numpy as np
import pytest
import yaml

from inception_keras import get_spec
from inception_keras.cli import main
from inception_keras.data import DataError
from search import driver
from search.report import SearchError
from search.tuner import FatalTrialError, RecordingMixin

TINY_SPEC = {
    "name": "tiny", "input_shape": [24, 24, 3], "normalization": "batch_norm",
    "stem": [{"conv": {"filters": 8, "kernel": 3}}, {"max_pool": {"size": 3, "stride": 2}}],
    "stages": [{"name": "3", "modules": [[8, 8, 8, 4, 4, 4]]}],
    "head": {"dropout": 0.2, "classes": 3},
}
SPEC_DICT = get_spec("googlenet_mini").to_dict()


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("space")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPEC))
    (folder / "space.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "base": str(folder / "tiny.yaml"), "budget": {"max_params": 1_000_000},
        "vary": [{"widths": ["ch3x3_reduce"], "choices": [4, 8]}]}))
    return folder / "space.yaml"


def search_args(space_file, image_folder, directory, *extra):
    return ["search", "--space", str(space_file), "--dataset", f"folder:{image_folder}", "--epochs", "1",
            "--batch-size", "8", "--optimizer", "adam", "--no-ema", "--max-trials", "1", "--dir", str(directory),
            *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def record(trial_id: str, accuracy: float, params: int) -> dict:
    return {"trial_id": trial_id, "worker": "tuner0", "values": {"4a_ch3x3_reduce": 8}, "params": params,
            "macs": params * 10, "val_accuracy": accuracy, "train_seconds": 1.5, "epochs": 1, "spec": SPEC_DICT}


def write_records(directory, *records):
    (directory / "records").mkdir(parents=True, exist_ok=True)
    for r in records:
        (directory / "records" / f"trial_{r['trial_id']}.json").write_text(json.dumps(r))


def test_report_skips_a_half_written_record(tmp_path, capsys):
    write_records(tmp_path, record("00", 0.5, 1000), record("01", 0.75, 2000))
    text = (tmp_path / "records" / "trial_01.json").read_text()
    (tmp_path / "records" / "trial_01.json").write_text(text[:len(text) // 2])
    (tmp_path / "records" / "trial_02.json").write_text(json.dumps({"trial_id": "02"}))
    write_records(tmp_path, {**record("03", 0.9, 500), "spec": {"bogus": 1}})
    (tmp_path / "space.json").write_text("{not json")
    assert main(["search", "report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 4 and "Traceback" not in captured.err
    assert warnings[0].startswith(f"warning: skipping {tmp_path / 'records' / 'trial_01.json'}: not valid JSON")
    assert warnings[1].startswith(f"warning: skipping {tmp_path / 'records' / 'trial_02.json'}: "
                                  f"no values, spec, worker")
    assert warnings[2].startswith(f"warning: skipping {tmp_path / 'records' / 'trial_03.json'}: its spec is not valid")
    assert warnings[3].startswith(f"warning: {tmp_path / 'space.json'} is damaged")
    assert "trials (1 finished)" in captured.out
    assert f"written: {tmp_path / 'results.json'}, {tmp_path / 'results.csv'}" in captured.out
    assert json.loads((tmp_path / "results.json").read_text())["pareto_params"] == ["00"]


def test_report_skips_hostile_records_with_a_warning(tmp_path, capsys):
    write_records(tmp_path, record("00", 0.5, 1000))
    records = tmp_path / "records"
    (records / "trial_01.json").write_text("[" * 100_000 + "]" * 100_000)
    os.mkfifo(records / "trial_02.json")  # no writer: reading it would block
    write_records(tmp_path, {**record("03", 0.9, 500), "values": {"4a_ch3x3_reduce": [[[8]]]}})
    os.mkfifo(tmp_path / "space.json")
    assert main(["search", "report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 4 and "Traceback" not in captured.err, captured.err
    assert warnings[0] == f"warning: skipping {records / 'trial_01.json'}: nested too deeply"
    assert warnings[1] == f"warning: skipping {records / 'trial_02.json'}: cannot read trial record: not a regular " \
                          f"file (a FIFO)"
    assert warnings[2] == f"warning: skipping {records / 'trial_03.json'}: values holds a list, not a number or string"
    assert warnings[3].startswith(f"warning: {tmp_path / 'space.json'} is damaged (cannot read search space record: "
                                  f"not a regular file")
    assert "trials (1 finished)" in captured.out


def test_report_of_no_finished_trials_writes_nothing(tmp_path, capsys):
    (tmp_path / "records").mkdir()
    assert main(["search", "report", str(tmp_path)]) == 2
    assert "no finished trials yet" in one_line_error(capsys)
    (tmp_path / "records" / "trial_00.json").write_text("")
    assert main(["search", "report", str(tmp_path)]) == 2
    assert "nothing written" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records"]


def test_report_results_that_cannot_be_written(tmp_path, capsys):
    write_records(tmp_path, record("00", 0.5, 1000))
    (tmp_path / "results.csv").mkdir()
    assert main(["search", "report", str(tmp_path)]) == 2
    assert f"cannot write {tmp_path / 'results.csv'}: Is a directory" in one_line_error(capsys)


@pytest.mark.parametrize("argument, value, message", [
    ("--timeout", "nan", "--timeout: must be a finite positive number, got 'nan'"),
    ("--timeout", "inf", "--timeout: must be a finite positive number, got 'inf'"),
    ("--timeout", "0", "--timeout: must be a finite positive number, got '0'"),
    ("--timeout", "-5", "--timeout: must be a finite positive number, got '-5'"),
    ("--learning-rate", "nan", "--learning-rate: must be a finite positive number"),
    ("--budget-params", "1e400", "--budget-params: must be a finite count"),
    ("--budget-macs", "nan", "--budget-macs: must be a count such as"),
    ("--oracle-port", "70000", "--oracle-port: must be a port number 1-65535"),
    ("--seed", "-1", "--seed: must be an integer >= 0"),
    ("--dir", "", "--dir: must not be empty"),
])
def test_bad_numbers_are_refused_at_parse_time(argument, value, message, capsys):
    assert main(["search", "--space", "mini_bottlenecks", argument, value]) == 2
    assert message in one_line_error(capsys)


def test_search_directory_errors(space_file, image_folder, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(search_args(space_file, image_folder, tmp_path / "afile")) == 2
    assert "search directory" in (err := one_line_error(capsys)) and "is a file, not a directory" in err
    directory = tmp_path / "s"
    directory.mkdir()
    (directory / "space.json").write_text('{"name": "tiny", "budg')
    assert main(search_args(space_file, image_folder, directory)) == 2
    assert f"{directory / 'space.json'} is damaged" in one_line_error(capsys)
    (directory / "space.json").write_text(json.dumps({"name": "other", "budget": "params <= 5"}))
    assert main(search_args(space_file, image_folder, directory)) == 2
    assert "holds a search of another space (name, budget, dimensions, base differ" in one_line_error(capsys)
    (directory / "space.json").unlink()
    (directory / "class_names.txt").write_bytes(b"\xff\xfe\x00")
    assert main(search_args(space_file, image_folder, directory)) == 2
    assert f"{directory / 'class_names.txt'} is damaged" in one_line_error(capsys)
    (directory / "class_names.txt").write_text("cats\ndogs\n")
    assert main(search_args(space_file, image_folder, directory)) == 2
    assert "holds a search on other classes (2: cats, dogs)" in one_line_error(capsys)
    (directory / "class_names.txt").unlink()
    (directory / "kt").mkdir()
    (directory / "kt" / "tuner0.json").write_text('{"trunc')
    assert main(search_args(space_file, image_folder, directory)) == 2
    assert "holds a KerasTuner project that cannot be reloaded" in one_line_error(capsys)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def distributed_env(monkeypatch):
    """configure_distributed sets KerasTuner's variables; restore them after the test."""
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_a_worker_without_a_chief(space_file, image_folder, tmp_path, capsys, distributed_env):
    port = _free_port()
    args = search_args(space_file, image_folder, tmp_path / "s", "--role", "worker", "--tuner-id", "worker0",
                       "--oracle-port", str(port), "--timeout", "2")
    assert main(args) == 2
    assert f"error: no chief answers at 127.0.0.1:{port} (waited 2 s)" in one_line_error(capsys)


def test_a_chief_whose_port_is_taken(space_file, image_folder, tmp_path, capsys, distributed_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = search_args(space_file, image_folder, tmp_path / "s", "--role", "chief", "--oracle-port", str(port))
        assert main(args) == 2
    assert f"the chief cannot serve on 127.0.0.1:{port}: Address already in use" in one_line_error(capsys)
    assert main(search_args(space_file, image_folder, tmp_path / "s", "--role", "worker", "--tuner-id", "../w")) == 2
    assert "--tuner-id '../w': use letters, digits" in one_line_error(capsys)


def test_a_corrupt_image_stops_the_search_naming_it(space_file, tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "images"
    for split in ("train", "validation"):
        for i, label in enumerate(("a", "b")):
            (root / split / label).mkdir(parents=True)
            for n in range(3):
                Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)).save(root / split / label / f"{n}.png")
    broken = root / "train" / "a" / "2.png"
    broken.write_bytes(broken.read_bytes()[:50])
    assert main(search_args(space_file, root, tmp_path / "s")) == 2
    assert f"cannot read image {broken}" in one_line_error(capsys)
    assert not list((tmp_path / "s" / "records").glob("*.json"))


class _Tuner:
    def __init__(self, error):
        self.error = error

    def search(self, *args, **kwargs):
        raise self.error


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.DEADLINE_EXCEEDED


def test_kerastuner_failures_become_one_line_errors(monkeypatch):
    def search(error):
        driver._search(_Tuner(error), None, None, 1, 0, [])

    with pytest.raises(SearchError, match=r"^3 trials in a row failed, the last with ValueError: boom; fix"):
        search(RuntimeError("Number of consecutive failures exceeded the limit of 3.\nTraceback (most recent call "
                            "last):\n  File \"x.py\", line 1\nValueError: boom\n"))
    with pytest.raises(DataError, match="^bad image$"):
        search(FatalTrialError(DataError("bad image")))
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "10.0.0.9")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8123")
    with pytest.raises(SearchError, match=r"^no chief answers at 10.0.0.9:8123 \(DEADLINE_EXCEEDED\)"):
        search(_Unavailable())
    with pytest.raises(RuntimeError, match="unrelated"):
        search(RuntimeError("unrelated"))


def test_a_trial_record_that_cannot_be_written_ends_the_search(tmp_path):
    (tmp_path / "records").write_text("a file where the records directory goes")
    recorder = RecordingMixin(space=None, records_dir=tmp_path / "records")
    with pytest.raises(FatalTrialError) as info:
        recorder._write_record({"trial_id": "00"})
    assert isinstance(info.value.error, SearchError)
    assert str(info.value.error).startswith(f"cannot write the trial record {tmp_path / 'records' / 'trial_00.json'}")


def test_overwrite_removes_only_what_a_search_wrote(tmp_path):
    from inception_keras.training.owned import NotOursError

    ours = ["space.json", "class_names.txt", "results.json", "pareto.png", ".results.csv.x1", "records/trial_0.json",
            "records/.trial_1.json.ab12", "kt/oracle.json", "kt/tuner0.json", "kt/trial_0/trial.json",
            "kt/trial_0/checkpoint.weights.h5", ".lock"]
    for name in ours + ["kt/trial_0/thesis.tex"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    with pytest.raises(NotOursError, match=rf"{tmp_path / 'kt' / 'trial_0' / 'thesis.tex'}, which no search writes"):
        driver._clear(tmp_path)
    assert (tmp_path / "records" / "trial_0.json").exists() and (tmp_path / "kt" / "trial_0" / "thesis.tex").exists()
    (tmp_path / "kt" / "trial_0" / "thesis.tex").unlink()
    driver._clear(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == [".lock"]
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "trial_0.json").write_text("x")
    with pytest.raises(NotOursError, match=r"holds .*records but no space.json"):
        driver._clear(tmp_path)
