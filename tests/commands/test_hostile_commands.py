"""Hostile or careless input to `predict`, `export`, `weights import` and image folders: one `error:` line, exit 2,
naming what was wrong; images refused by their header's size before they are decoded."""

import io
import os
import struct
import threading
import zlib

import keras
import numpy as np
import pytest
from PIL import Image

from inception_keras.cli import main
from inception_keras.data import DataError, load_data, reading_images
from inception_keras.utils.image_header import MAX_IMAGE_PIXELS, image_problem, image_size


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def png_header(width: int, height: int) -> bytes:
    """A PNG of nothing but its signature and IHDR chunk, claiming `width` x `height` RGB pixels."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def encoded(fmt: str, width: int = 53, height: int = 37, **options) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 3-class image classifier, a vector model and a two-input model, as .keras files."""
    folder = tmp_path_factory.mktemp("models")
    (folder / "image").mkdir()
    image = keras.Input((8, 8, 3))
    keras.Model(image, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(image))) \
        .save(folder / "image" / "m.keras")
    vector = keras.Input((5,))
    keras.Model(vector, keras.layers.Dense(3, activation="softmax")(vector)).save(folder / "vector.keras")
    first, second = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()([first, second]))
    keras.Model([first, second], keras.layers.Dense(3)(pooled)).save(folder / "two.keras")
    (folder / "small.png").write_bytes(encoded("PNG", 6, 5))
    return folder


@pytest.mark.parametrize("fmt, options", [
    ("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True, "exif": b"Exif\0\0" + b"x" * 5000}), ("GIF", {}),
    ("BMP", {}), ("WEBP", {}), ("WEBP", {"lossless": True}),
])
def test_image_sizes_are_read_from_headers(fmt, options):
    assert image_size(encoded(fmt, **options)) == (53, 37, 53 * 37)


def test_headers_that_cannot_be_read_are_refused():
    assert image_problem(b"hello") == "not a JPEG, PNG, GIF, BMP or WebP image"
    assert image_problem(b"\x89PNG\r\n\x1a\n") == "a PNG without its IHDR header"
    assert image_problem(b"\xff\xd8\xff\xe0\x00\x10JFIF") == "a JPEG without a frame header"
    assert image_problem(b"BM" + bytes(16)) == "its header is cut short"
    assert image_problem(png_header(9459, 9459)) is None  # 89,472,681 pixels: within the default
    assert image_problem(png_header(9460, 9460)).startswith("a 9460x9460 image (89,491,600 pixels) is over the "
                                                            f"limit of {MAX_IMAGE_PIXELS:,} pixels")


def test_predict_refuses_a_decompression_bomb_before_decoding(models, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000))
    assert main(["predict", str(models / "image" / "m.keras"), str(bomb)]) == 2
    assert one_line_error(capsys) == (f"error: {bomb}: cannot read this image: a 20000x20000 image (400,000,000 "
                                      f"pixels) is over the limit of 89,478,485 pixels; raise it with "
                                      f"--max-image-pixels")
    assert main(["predict", str(models / "image" / "m.keras"), str(models / "small.png"),
                 "--max-image-pixels", "29"]) == 2
    assert "a 6x5 image (30 pixels) is over the limit of 29 pixels" in one_line_error(capsys)
    assert main(["predict", str(models / "image" / "m.keras"), str(models / "small.png"),
                 "--max-image-pixels", "30"]) == 0


def _open_for_writing(fifo) -> None:
    """Lets a reader blocked on `fifo` go on (it reads nothing), so a regression fails instead of hanging."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader: nothing to release
        pass


def test_predict_refuses_a_fifo_or_directory_before_reading(models, tmp_path, capsys, monkeypatch):
    import tensorflow as tf

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    reads, read_file = [], tf.io.read_file
    monkeypatch.setattr(tf.io, "read_file", lambda path, *a, **k: reads.append(path) or read_file(path, *a, **k))
    release = threading.Timer(20, _open_for_writing, [fifo])
    release.start()
    try:
        for path, kind in ((fifo, "a FIFO"), (tmp_path, "a directory")):
            assert main(["predict", str(models / "image" / "m.keras"), str(path)]) == 2
            assert one_line_error(capsys) == f"error: {path}: cannot read this image: not a regular file ({kind})"
    finally:
        release.cancel()
    assert reads == []  # refused from its file type, before anything is read (a FIFO with no writer would block)


def test_a_search_trial_names_an_image_over_the_datasets_pixel_limit(tmp_path):
    import tensorflow as tf

    from search.tuner import FatalTrialError, RecordingMixin

    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "small.png").write_bytes(encoded("PNG", 6, 5))

    class FailingTrial:
        def run_trial(self, trial):
            raise tf.errors.InvalidArgumentError(None, None, "an image over the limit")

    class Recorder(RecordingMixin, FailingTrial):
        pass

    recorder = Recorder(space=None, records_dir=tmp_path, dataset=f"folder:{tmp_path}", max_image_pixels=29)
    with pytest.raises(FatalTrialError) as info:
        recorder._train(None)
    assert "small.png (a 6x5 image (30 pixels) is over the limit of 29 pixels" in str(info.value.error)


def test_an_image_folder_refuses_a_decompression_bomb_naming_it(image_folder, tmp_path):
    root = tmp_path / "folder"
    for split in ("train", "validation"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            (root / split / label / "0.png").write_bytes(encoded("PNG", 6, 5))
    bomb = root / "train" / "b" / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000))
    data = load_data(f"folder:{root}")
    with pytest.raises(DataError) as info:
        with reading_images(data):
            for _ in data.train:
                pass
    assert str(info.value) == (f"dataset 'folder:{root}': cannot read image {bomb} (a 20000x20000 image "
                               f"(400,000,000 pixels) is over the limit of 89,478,485 pixels; raise it with "
                               f"--max-image-pixels): remove or replace it")
    good = load_data(f"folder:{image_folder}", max_image_pixels=40 * 40)
    image, _ = next(iter(good.train))
    assert image.dtype == "uint8" and image.shape[-1] == 3


@pytest.mark.parametrize("model, shapes", [
    ("vector.keras", "1 input of shape (5)"), ("two.keras", "2 inputs of shapes (8, 8, 3), (8, 8, 3)")])
def test_predict_and_export_need_one_image_input(models, model, shapes, tmp_path, capsys):
    assert main(["predict", str(models / model), str(models / "small.png")]) == 2
    assert one_line_error(capsys) == (f"error: {models / model}: predict needs a model with one image input (height, "
                                      f"width, 1 or 3 channels: RGB or grayscale); this model takes {shapes}")
    assert main(["export", str(models / model), "--base-dir", str(tmp_path)]) == 2
    assert "the serving signature needs a model with one image input" in one_line_error(capsys)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("names", ["", "red\n", "red\ngreen\nblue\nextra\n"])
def test_predict_refuses_class_names_of_another_count(models, names, capsys):
    names_file = models / "image" / "class_names.txt"
    names_file.write_text(names)
    try:
        assert main(["predict", str(models / "image" / "m.keras"), str(models / "small.png")]) == 2
    finally:
        names_file.unlink()
    count = len(names.splitlines())
    assert one_line_error(capsys) == (f"error: {names_file}: {count} class name{'' if count == 1 else 's'} for the "
                                      f"3-class model {models / 'image' / 'm.keras'}: one name a line, in label order")


def test_weights_import_refuses_an_out_it_cannot_write_before_reading(tmp_path, capsys):
    source = str(tmp_path / "missing.pth")  # never read: --out is checked first
    (tmp_path / "folder.keras").mkdir()
    assert main(["weights", "import", source, "--out", str(tmp_path / "folder.keras"), "--overwrite"]) == 2
    assert one_line_error(capsys) == (f"error: --out {tmp_path / 'folder.keras'} exists and is not a file; --overwrite "
                                      f"replaces only a file")
    (tmp_path / "file.keras").write_text("x")
    for out in (tmp_path / "file.keras" / "m.keras", tmp_path / "file.keras" / "sub" / "m.keras"):
        assert main(["weights", "import", source, "--out", str(out)]) == 2
        assert one_line_error(capsys) == f"error: --out {out}: {tmp_path / 'file.keras'} is a file, not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.keras", "folder.keras"]


def test_cheap_refusals_come_before_tensorflow_loads(tmp_path):
    """Arguments, output paths and what the run records are checked before TensorFlow and a model load (~10 s)."""
    import subprocess
    import sys

    (tmp_path / "afile").write_text("x")
    digits_run = tmp_path / "run"  # what the checks read of a run: its files' names and run.json (no dataset)
    digits_run.mkdir()
    for name in ("best.keras", "spec.yaml", "class_names.txt"):
        (digits_run / name).write_text("never read")
    (digits_run / "run.json").write_text("{}")
    cases = {("export", str(digits_run), "--format", "saved_model", "--int8"):
             "--int8 is for onnx, litert, openvino, not saved_model",
             ("export", str(digits_run / "best.keras"), "--format", "onnx", "--int8"):
             "--int8 calibrates on training images and checks on validation ones: give --dataset",
             ("export", str(tmp_path / "missing")): f"{tmp_path / 'missing'} does not exist",
             ("train", "googlenet_mini", "--out", str(tmp_path / "afile" / "run")):
             f"--out {tmp_path / 'afile' / 'run'}: {tmp_path / 'afile'} is a file, not a directory",
             ("search", "--steps", "100001"): "--steps: must be from 0 to 100,000, got '100001'",
             ("search", "--recalibrate-batches", "10001"): "--recalibrate-batches: must be from 0 to 10,000"}
    script = ("import sys\nfrom inception_keras.cli import main\ncode = main(sys.argv[1:])\n"
              "print(code, 'tensorflow' in sys.modules)")
    for argv, message in cases.items():
        run = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)
        assert len(run.stdout.split()) >= 2, (argv, run.returncode, run.stdout, run.stderr[-2000:])
        code, tensorflow = run.stdout.split()[-2:]
        assert code == "2" and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, (argv, run.stderr)
        assert tensorflow == "False" or argv[0] == "train", argv  # train imports it first, then checks --out


def test_a_memory_refusal_suggests_only_what_every_command_has(monkeypatch):
    from inception_keras import memory
    from inception_keras.builder import build_model
    from inception_keras.presets import get_spec
    from inception_keras.utils.errors import UserError

    monkeypatch.setattr(memory, "available", lambda: 1000)
    with pytest.raises(UserError, match=r"building it needs about .* of memory is available; use a smaller input "
                                        r"size or narrower widths$"):
        build_model(get_spec("googlenet_mini"))
