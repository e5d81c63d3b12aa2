"""`.keras` files against a hostile or careless user: bounded before Keras reads them (`utils/keras_archive.py`),
refused with one line naming the file, within twice the peak memory of a normal load."""

import io
import json
import zipfile
from pathlib import Path

import h5py
import pytest

from inception_keras.cli import main
from inception_keras.pretrained import WeightsError
from inception_keras.pretrained.convert import load_keras_model
from inception_keras.utils import keras_archive
from inception_keras.utils.keras_archive import KerasFileError, check_keras_file, nesting
from memory_probe import assert_refused_within_twice

FIXTURE = Path(__file__).parents[1] / "fixtures" / "keras" / "tiny_bn_lrn.keras"


def _members() -> dict[str, bytes]:
    with zipfile.ZipFile(FIXTURE) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path: Path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression, compresslevel=1 if compression else None) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _config_bomb(path: Path, inflated: int) -> Path:
    """The fixture with a config.json of `inflated` bytes (the real config, then spaces), deflated."""
    members = _members()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("config.json", "w", force_zip64=True) as config:
            config.write(members["config.json"])
            chunk = b" " * (1 << 22)
            for _ in range((inflated - len(members["config.json"])) // len(chunk)):
                config.write(chunk)
        archive.writestr("metadata.json", members["metadata.json"])
        archive.writestr("model.weights.h5", members["model.weights.h5"])
    return path


def _shape_bomb(path: Path, declared_shape=(16384, 16384)) -> Path:
    """The fixture whose first convolution's kernel is a dataset declared `declared_shape` float32 and never
    written (HDF5 stores only its fill value)."""
    members = _members()
    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as weights:
        del weights["layers/conv2d/vars/0"]
        weights.create_dataset("layers/conv2d/vars/0", shape=declared_shape, dtype="float32", chunks=(256, 256),
                               compression="gzip")
    return _write(path, {**members, "model.weights.h5": buffer.getvalue()})


def _refused(path: Path, message: str) -> None:
    with pytest.raises(KerasFileError) as info:
        check_keras_file(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value), str(info.value)
    with pytest.raises(WeightsError, match="^" + str(path)):
        load_keras_model(path)


def test_the_fixture_and_a_googlenet_sized_config_are_within_the_bounds(tmp_path):
    check_keras_file(FIXTURE)
    config = json.loads(_members()["config.json"])
    assert nesting(config) < keras_archive.MAX_NESTING
    assert len(_members()["config.json"]) < keras_archive.MAX_CONFIG_BYTES // 50  # googlenet's: 118 KB
    deflated = _write(tmp_path / "deflated.keras", _members(), zipfile.ZIP_DEFLATED)  # a re-zipped file loads
    load_keras_model(deflated)


def test_a_config_bomb_is_refused_from_the_zip_directory(tmp_path):
    _refused(_config_bomb(tmp_path / "bomb.keras", 64 << 20), "entry 'config.json' inflates to 62,9")
    _refused(_write(tmp_path / "big.keras", {**_members(), "config.json": b" " * (9 << 20)}),
             "its config.json holds 9,437,184 bytes, more than the 8,388,608")


def test_configs_nested_too_deeply_or_not_json_are_refused(tmp_path):
    deep = '{"a": ' * 100 + "1" + "}" * 100
    _refused(_write(tmp_path / "deep.keras", {**_members(), "config.json": deep}), "nests 100 levels deep")
    deeper = "[" * 100_000 + "]" * 100_000
    _refused(_write(tmp_path / "deeper.keras", {**_members(), "config.json": deeper}), "nests deeper than 64")
    _refused(_write(tmp_path / "bad.keras", {**_members(), "config.json": b"\xff{"}), "config.json is not JSON")
    _refused(_write(tmp_path / "list.keras", {**_members(), "config.json": b"[]"}), "a JSON list, not a model")


def test_a_weights_dataset_declared_huge_and_stored_as_nothing_is_refused(tmp_path):
    bomb = _shape_bomb(tmp_path / "shape.keras")
    assert bomb.stat().st_size < 200_000
    _refused(bomb, "declare 1,073,743,876 bytes, but it stores")


def test_truncated_empty_foreign_and_crowded_files_say_what_they_are(tmp_path):
    data = FIXTURE.read_bytes()
    (tmp_path / "half.keras").write_bytes(data[:len(data) // 2])
    _refused(tmp_path / "half.keras", "not a readable .keras file: a truncated or damaged zip")
    (tmp_path / "empty.keras").write_bytes(b"")
    _refused(tmp_path / "empty.keras", "not a readable .keras file: the file is empty")
    _refused(_write(tmp_path / "noconfig.keras", {"a.txt": b"x"}), "not a .keras model: a zip without config.json")
    crowded = {**_members(), **{f"assets/{i}": b"" for i in range(keras_archive.MAX_ENTRIES)}}
    _refused(_write(tmp_path / "crowded.keras", crowded), "1,003 zip entries, more than the 1,000")


def test_commands_refuse_a_bomb_in_one_line(tmp_path, capsys):
    bomb = _config_bomb(tmp_path / "bomb.keras", 64 << 20)
    for argv in (["narrow", str(bomb), "googlenet_mini", "--out", str(tmp_path / "child.keras")],
                 ["export", str(bomb), "--base-dir", str(tmp_path / "exports")],
                 ["predict", str(bomb), str(tmp_path / "missing.png")]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"{bomb}: entry 'config.json' inflates to" in lines[0], lines


def test_bombs_are_refused_within_twice_a_normal_loads_peak_memory(tmp_path):
    hostile = [_config_bomb(tmp_path / "bomb.keras", 1536 << 20), _shape_bomb(tmp_path / "shape.keras")]
    assert_refused_within_twice("inception_keras.pretrained.convert:load_keras_model", FIXTURE, hostile)


def test_a_lambda_layer_is_refused_without_advice_the_cli_cannot_follow(tmp_path, capsys):
    import keras

    images = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(3, name="predictions")(keras.layers.Lambda(lambda t: t * 2)(images))
    keras.Model(images, outputs).save(tmp_path / "lambda.keras")
    assert main(["narrow", str(tmp_path / "lambda.keras"), "googlenet_mini", "--out", str(tmp_path / "x.keras")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: {tmp_path / 'lambda.keras'}: refused: the model holds a layer that would run "
                           f"Python code stored in the file (a `Lambda` layer") and "safe_mode=False" not in line
