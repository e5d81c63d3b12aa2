"""Bad inputs to export, export --check and the data loaders: one line, exit 2, naming what and where."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from inception_keras import build_model, get_spec
from inception_keras import export as export_module
from inception_keras.cli import main
from inception_keras.data import (DataError, find_unreadable_image, load_data, make_pipeline, reading_images,
                                  why_unreadable)
from inception_keras.export import ExportError, check_saved_model, export_saved_model
from memory_probe import assert_refused_within_twice

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def mini():
    spec = get_spec("googlenet_mini")
    return spec, build_model(spec)


@pytest.fixture(scope="module")
def exported(mini, tmp_path_factory):
    spec, model = mini
    return Path(export_saved_model(model, spec, CLASSES, base_dir=tmp_path_factory.mktemp("exports")).path)


def nan_model(spec):
    model = build_model(spec)
    kernel = model.get_layer("predictions").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    return model


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    return err


def test_a_model_with_nan_weights_is_not_exported(mini, tmp_path):
    spec, _ = mini
    with pytest.raises(ExportError, match=r"cannot export googlenet_mini: the model's outputs are not finite \(nan\): "
                                          r"the model's weights hold 1,600 non-finite values"):
        export_saved_model(nan_model(spec), spec, CLASSES, base_dir=tmp_path)
    assert not (tmp_path / "googlenet_mini").exists()


def test_check_refuses_a_non_finite_export(mini, tmp_path, monkeypatch, capsys):
    """An export written before the finiteness checks existed: its SavedModel outputs nan."""
    spec, model = mini
    monkeypatch.setattr(export_module, "_refuse_non_finite", lambda *args: None)
    with pytest.raises(ExportError, match=r"outputs are not finite \(nan\): its variables hold 1,600 non-finite"):
        export_saved_model(nan_model(spec), spec, CLASSES, base_dir=tmp_path)
    assert not [p for p in (tmp_path / "googlenet_mini").iterdir() if p.name.isdigit()]
    monkeypatch.setattr(export_module, "check_saved_model", lambda path: 0.0)
    old = export_saved_model(nan_model(spec), spec, CLASSES, base_dir=tmp_path).path
    monkeypatch.undo()
    assert main(["export", "--check", old]) == 2
    assert "the SavedModel's outputs are not finite (nan)" in one_line_error(capsys)
    model_file = tmp_path / "nan.keras"
    nan_model(spec).save(model_file)
    good = export_saved_model(model, spec, CLASSES, base_dir=tmp_path).path
    with pytest.raises(ExportError, match=r"the Keras model's outputs are not finite \(nan\): the model's weights "
                                          r"hold 1,600"):
        check_saved_model(good, model_file)


def _truncate(path: Path, size: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2 if size is None else size])


def _data_file(export: Path) -> Path:
    return next((export / "variables").glob("variables.data-*"))


def _write_check(export: Path, **arrays) -> None:
    np.savez(export / "assets" / "check.npz", **arrays)


DAMAGES = {
    "truncated variables data": (lambda d: _truncate(_data_file(d)), "cannot be loaded, it is damaged or incomplete"),
    "empty variables data": (lambda d: _truncate(_data_file(d), 0), "cannot be loaded, it is damaged or incomplete"),
    "flipped variables data": (lambda d: _data_file(d).write_bytes(b"\xff" * _data_file(d).stat().st_size),
                               "cannot be loaded, it is damaged or incomplete"),
    "no variables index": (lambda d: (d / "variables" / "variables.index").unlink(), "damaged or incomplete"),
    "truncated saved_model.pb": (lambda d: _truncate(d / "saved_model.pb"), "damaged or incomplete"),
    "no saved_model.pb": (lambda d: (d / "saved_model.pb").unlink(), "is not an inception_keras SavedModel (no "
                                                                     "saved_model.pb)"),
    "saved_model.pb a directory": (lambda d: ((d / "saved_model.pb").unlink(), (d / "saved_model.pb").mkdir()),
                                   "(no saved_model.pb)"),
    "no check.npz": (lambda d: (d / "assets" / "check.npz").unlink(), "(no assets/check.npz)"),
    "garbage check.npz": (lambda d: (d / "assets" / "check.npz").write_bytes(b"garbage"), "check.npz is damaged"),
    "truncated check.npz": (lambda d: _truncate(d / "assets" / "check.npz"), "check.npz is damaged"),
    "check.npz without images": (lambda d: _write_check(d, probabilities=np.zeros((2, 10))), "check.npz is damaged"),
    "check.npz with float images": (lambda d: _write_check(d, images=np.zeros((2, 8, 8, 3)),
                                                           probabilities=np.zeros((2, 10))),
                                    "declares images float64[2, 8, 8, 3] and probabilities float64[2, 10], not a "
                                    "reference batch"),
    "check.npz of 1200 images of 256x256 in a few hundred KB": (
        lambda d: np.savez_compressed(d / "assets" / "check.npz", images=np.zeros((1200, 256, 256, 3), np.uint8),
                                      probabilities=np.zeros((1200, 10), np.float32)),
        "declares images uint8[1200, 256, 256, 3] and probabilities float32[1200, 10], not a reference batch of at "
        "most 256 uint8 RGB images and their outputs in 67,108,864 bytes; nothing was read"),
    "check.npz for another class count": (lambda d: _write_check(d, images=np.zeros((2, 8, 8, 3), np.uint8),
                                                                 probabilities=np.zeros((2, 7), np.float32)),
                                          "gives outputs of shape (2, 10), the Keras model (2, 7)"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_check_of_a_damaged_export_is_one_line(damage, exported, tmp_path, capsys):
    copy = tmp_path / "1"
    shutil.copytree(exported, copy)
    change, message = DAMAGES[damage]
    change(copy)
    assert main(["export", "--check", str(copy)]) == 2
    err = one_line_error(capsys)
    assert message in err and str(copy) in err


def test_check_of_what_is_not_an_export(exported, tmp_path, capsys):
    assert main(["export", "--check", str(tmp_path / "missing")]) == 2
    assert "does not exist" in one_line_error(capsys)
    (tmp_path / "file").write_text("x")
    assert main(["export", "--check", str(tmp_path / "file")]) == 2
    assert "a file, not an export directory" in one_line_error(capsys)
    assert main(["export", "--check", str(exported.parent)]) == 2
    assert f"give a version directory such as {exported}" in one_line_error(capsys)


def test_export_base_dir_and_name_errors(mini, tmp_path, capsys):
    spec, model = mini
    model_file = tmp_path / "mini.keras"
    model.save(model_file)
    (tmp_path / "afile").write_text("x")
    assert main(["export", str(model_file), "--base-dir", str(tmp_path / "afile")]) == 2
    assert "afile is a file, not a directory" in one_line_error(capsys)
    assert main(["export", str(model_file), "--base-dir", str(tmp_path / "afile" / "sub")]) == 2
    assert "cannot create the export directory" in one_line_error(capsys)
    assert main(["export", str(model_file), "--base-dir", str(tmp_path / "out"), "--name", "../up"]) == 2
    assert "export name '../up' is not a plain directory name" in one_line_error(capsys)
    assert not (tmp_path / "up").exists()


def test_an_unwritable_base_dir(mini, tmp_path, monkeypatch):
    class Refusing:
        def write_out(self, path, **kwargs):
            raise PermissionError(13, "Permission denied", path)

    spec, model = mini
    monkeypatch.setattr(export_module, "_archive", lambda *args: Refusing())
    with pytest.raises(ExportError, match=f"cannot write the export under {tmp_path / 'googlenet_mini'}: .*Permission "
                                          f"denied"):
        export_saved_model(model, spec, CLASSES, base_dir=tmp_path)
    assert list((tmp_path / "googlenet_mini").iterdir()) == []


def test_export_next_to_odd_leftovers(mini, tmp_path):
    spec, model = mini
    root = tmp_path / "googlenet_mini"
    root.mkdir()
    (root / "3").write_text("a file where a version would go")
    (root / "²").mkdir()  # str.isdigit() is true, int() fails
    (root / "notes.txt").write_text("x")
    (root / ".tmp-7-99999999999999999999").mkdir()  # no such process (int too large for a pid)
    (root / f".tmp-8-{os.getpid()}").mkdir()  # an earlier process with this id
    (root / ".tmp-junk").write_text("x")
    result = export_saved_model(model, spec, CLASSES, base_dir=tmp_path)
    assert Path(result.path) == root / "4"
    assert sorted(p.name for p in root.iterdir()) == ["3", "4", "notes.txt", "²"]


@pytest.mark.parametrize("name, message", [
    ("mnist:abc", "dataset 'mnist:abc': version 'abc' is not MAJOR.MINOR.PATCH"),
    ("mnist:9.9.9", "dataset 'mnist:9.9.9': Dataset mnist cannot be loaded at version 9.9.9, only: 3.0.1"),
    ("mnist/config/extra", "dataset name 'mnist/config/extra' is not NAME, NAME/CONFIG or NAME:VERSION"),
    ("", "the dataset name is empty"),
    ("mn ist!", "dataset name 'mn ist!' is not NAME"),
    ("../etc", "dataset name '../etc' is not NAME"),
    ("mnist/nope", "dataset 'mnist/nope': BuilderConfig nope not found"),
    ("folder:", "folder: needs a path"),
])
def test_malformed_dataset_names(name, message, tmp_path):
    with pytest.raises(DataError) as info:
        load_data(name, str(tmp_path), download=False)
    assert message in str(info.value) and "\n" not in str(info.value)


def _png(path: Path, colour=(200, 30, 30)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), colour, np.uint8)).save(path)


def _folder(root: Path, classes=("a", "b"), per_class=2) -> Path:
    for split in ("train", "validation"):
        for i, label in enumerate(classes):
            for n in range(per_class):
                _png(root / split / label / f"{n}.png", (40 * i, 100, 200))
    return root


def test_empty_and_one_class_folders(tmp_path):
    def error(root):
        with pytest.raises(DataError) as info:
            load_data(f"folder:{root}")
        return str(info.value)

    (tmp_path / "empty").mkdir()
    assert "has no train/ folder" in error(tmp_path / "empty")
    _png(tmp_path / "flat" / "train" / "x.png")
    assert "train/ holds no images in class folders" in error(tmp_path / "flat")
    (tmp_path / "no_images" / "train" / "a").mkdir(parents=True)
    assert "train/ holds no images in class folders" in error(tmp_path / "no_images")
    _folder(tmp_path / "no_validation")
    shutil.rmtree(tmp_path / "no_validation" / "validation")
    assert "has no validation/ folder" in error(tmp_path / "no_validation")
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in error(tmp_path / "file")
    _folder(tmp_path / "one", classes=("cats",))
    assert error(tmp_path / "one") == (f"dataset 'folder:{tmp_path / 'one'}' has 1 class ('cats'); a classifier "
                                       f"needs at least 2")


def test_a_corrupt_image_is_named(tmp_path, image_folder):
    root = _folder(tmp_path / "images", per_class=3)
    broken = root / "train" / "b" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])
    (root / "validation" / "a" / "empty.jpg").write_bytes(b"")
    data = load_data(f"folder:{root}")
    with pytest.raises(DataError) as info:
        with reading_images(data):
            for _ in make_pipeline(data.train, (16, 16, 3), 2, batch_size=4):
                pass
    assert str(info.value).startswith(f"dataset 'folder:{root}': cannot read image {broken} (")
    assert find_unreadable_image(f"folder:{root}")[0] == broken
    assert why_unreadable(root / "validation" / "a" / "empty.jpg") is not None
    assert find_unreadable_image(f"folder:{image_folder}") is None
    with pytest.raises(tf.errors.InvalidArgumentError):  # not the data's: passed through
        with reading_images(load_data(f"folder:{image_folder}")):
            tf.debugging.check_numerics(tf.constant(np.nan), "a model bug")


def test_a_check_file_declaring_a_huge_batch_is_refused_within_twice_a_normal_checks_memory(exported, tmp_path):
    hostile = tmp_path / "1"
    shutil.copytree(exported, hostile)
    np.savez_compressed(hostile / "assets" / "check.npz", images=np.zeros((1200, 256, 256, 3), np.uint8),
                        probabilities=np.zeros((1200, 10), np.float32))
    assert (hostile / "assets" / "check.npz").stat().st_size < 1_000_000
    assert_refused_within_twice("inception_keras.export:check_export", exported, [hostile])
