"""ONNX, LiteRT and OpenVINO exports (`export --format`, `export_model`), each run in its own runtime."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from inception_keras import build_model, get_spec
from inception_keras.export import formats as export_formats
from inception_keras.cli import main
from inception_keras.cli.commands import EXPORT_FORMATS
from inception_keras.data import to_model_input
from inception_keras.export import FORMATS, RELATIVE_TOLERANCE, ExportError, check_export, export_model
from inception_keras.spec import LRNSpec

MINI_CLASSES = [f"class_{i}" for i in range(10)]
STRONG_LRN = LRNSpec(size=5, alpha=2.0, beta=0.75)  # large enough that a runtime dropping it fails the check


def mini_caffe_lrn_spec():
    """googlenet_mini (batch norm, aux heads) taking Caffe's input and normalizing its stem with a strong LRN."""
    spec = get_spec("googlenet_mini")
    return spec.replace(stem=(*spec.stem, STRONG_LRN), input_conversion="caffe")


def run_in_runtime(path: Path, fmt: str, images: np.ndarray, input_size: tuple) -> np.ndarray:
    return export_formats.run_artifact(path, fmt, to_model_input(images, input_size, 3).numpy())


@pytest.fixture(scope="module")
def mini_keras_file(tmp_path_factory):
    spec = mini_caffe_lrn_spec()
    model = build_model(spec)
    path = tmp_path_factory.mktemp("mini") / "mini.keras"
    model.save(path)
    return spec, model, path


@pytest.fixture(scope="module")
def onnx_export(mini_keras_file, tmp_path_factory):
    spec, model, _ = mini_keras_file
    return export_model(model, spec, MINI_CLASSES, tmp_path_factory.mktemp("models"), format="onnx")


def test_the_cli_offers_every_export_format():
    assert EXPORT_FORMATS == FORMATS == ("saved_model", *export_formats.FORMATS)


@pytest.mark.parametrize("fmt", export_formats.FORMATS)
def test_a_caffe_input_lrn_model_exports_runs_in_its_runtime_and_checks_from_the_cli(fmt, mini_keras_file, tmp_path,
                                                                                    capsys):
    spec, model, keras_file = mini_keras_file
    assert main(["export", str(keras_file), "--format", fmt, "--base-dir", str(tmp_path)]) == 0
    exported = tmp_path / "googlenet_mini" / "1"
    assert f"(version 1, {fmt}): " in capsys.readouterr().out
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["format"] == fmt and (exported / manifest["artifact"]).is_file()
    assert manifest["inputs"] == [{"name": "images", "dtype": "float32", "shape": [None, 32, 32, 3]}]
    assert "x / 127.5 - 1" in manifest["preprocessing"] and "input_conversion" in manifest["preprocessing"]
    (check,) = manifest["checks"]
    assert check["top1_identical"] and check["of_spread"] <= RELATIVE_TOLERANCE
    assert check["runtime"].startswith(export_formats.NEEDS[fmt][-1][1])
    assert (exported / "class_names.txt").read_text().splitlines() == [str(i) for i in range(10)]

    # on images it was not checked on, the runtime computes what Keras does (aux heads dropped), with the LRN
    images = np.random.default_rng(7).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    served = run_in_runtime(exported, fmt, images, (32, 32))
    expected = model.predict(to_model_input(images, (32, 32), 3), verbose=0)["predictions"]
    assert np.abs(served - expected).max() <= RELATIVE_TOLERANCE * np.ptp(expected)
    without_lrn = build_model(spec.replace(stem=spec.stem[:-1]))
    without_lrn.set_weights(model.get_weights())
    dropped = without_lrn.predict(to_model_input(images, (32, 32), 3), verbose=0)["predictions"]
    assert np.abs(served - dropped).max() > 100 * RELATIVE_TOLERANCE * np.ptp(expected)

    assert main(["export", "--check", str(exported), "--model", str(keras_file)]) == 0
    assert f"OK, {check['runtime']}: max abs diff" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("litert", marks=pytest.mark.slow),
                                 pytest.param("openvino", marks=pytest.mark.slow)])  # ~9 s each; the mixed
def test_the_faithful_googlenet_in_mixed_bfloat16_exports_computing_in_float32(fmt, tmp_path):
    """LRN without batch norm, Caffe input, aux heads, bf16 compute: exported as its float32 copy, checked so
    (the float32 copy is made before any format's writer: ONNX proves it in the quick suite)."""
    spec = get_spec("googlenet").with_input_size(80).with_classes(5).replace(input_conversion="caffe")
    model = build_model(spec, precision="mixed_bfloat16")
    result = export_model(model, spec, list("abcde"), tmp_path, format=fmt)
    assert result.check["of_spread"] <= RELATIVE_TOLERANCE and result.check["top1_identical"]
    assert check_export(result.path).startswith(result.check["runtime"])
    assert "of the probabilities' spread" in check_export(result.path, model)


def test_a_tampered_reference_fails_the_check_with_one_line(onnx_export, tmp_path, capsys):
    assert main(["export", "--check", onnx_export.path]) == 0
    assert "top-1 identical on 2 images" in capsys.readouterr().out
    tampered = Path(shutil.copytree(onnx_export.path, tmp_path / "1"))
    with np.load(tampered / "check.npz") as stored:
        arrays = dict(stored)
    np.savez(tampered / "check.npz", **{**arrays, "probabilities": arrays["probabilities"] + 1e-3})
    assert main(["export", "--check", str(tampered)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnxruntime" in err and "differs from the Keras model by 1.000e-03" in err


def test_a_damaged_manifest_or_artifact_is_one_line(onnx_export, tmp_path, capsys):
    damaged = Path(shutil.copytree(onnx_export.path, tmp_path / "1"))
    manifest = json.loads((damaged / "manifest.json").read_text())
    (damaged / "model.onnx").write_bytes(b"\x08not onnx")
    assert main(["export", "--check", str(damaged)]) == 2
    assert "onnxruntime cannot run the export" in capsys.readouterr().err
    (damaged / "model.onnx").write_bytes(b"not onnx")
    assert main(["export", "--check", str(damaged)]) == 2
    assert f"error: {damaged / 'model.onnx'} is not an onnx model (its first bytes say otherwise): {damaged} is not " \
           f"a complete onnx export" in capsys.readouterr().err
    shape = '"inputs": [{"shape": [null, 32, 32, 3]}]'
    (tmp_path / "x.tflite").write_bytes(b"0000TFL3")
    for text, expected in (("{", "manifest.json is damaged"),
                           ('{"format": "pdf", "inputs": [{"shape": [null, 32, 32, 3]}]}', "format 'pdf'"),
                           ('{"format": "onnx", "inputs": [{"shape": [null, 99999, 32, 3]}]}', "input shape"),
                           ('{"format": "onnx", "artifact": "../../x", %s}' % shape,
                            "its artifact is '../../x', the onnx format's is 'model.onnx'"),
                           ('{"format": "litert", "artifact": "model.tflite", %s}' % shape,
                            "model.tflite is missing or not a regular file")):
        (damaged / "manifest.json").write_text(text)
        with pytest.raises(ExportError, match=re.escape(expected)):
            check_export(damaged)
    (damaged / "model.tflite").symlink_to(tmp_path / "x.tflite")  # a valid file, but outside the directory
    with pytest.raises(ExportError, match="model.tflite is missing or not a regular file"):
        check_export(damaged)
    assert manifest["artifact"] == "model.onnx"


def test_a_missing_runtime_names_the_extra_before_any_work(monkeypatch, mini_keras_file, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    _, _, keras_file = mini_keras_file
    assert main(["export", str(keras_file), "--format", "openvino", "--base-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: --format openvino needs openvino (not installed): "
                                       "pip install inception-keras[openvino]\n")
    assert not (tmp_path / "googlenet_mini").exists()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["torchvision", "slim", "caffe"])
def test_imported_googlenets_at_224_export_in_every_format(source, tmp_path):
    from helpers import fixture_weights

    from inception_keras.pretrained.convert import load_weights, source_spec

    _, weights = fixture_weights(source)
    spec = source_spec(weights)
    model = build_model(spec)
    load_weights(model, weights)
    classes = [str(i) for i in range(spec.head.classes)]
    for fmt in export_formats.FORMATS:
        result = export_model(model, spec, classes, tmp_path, format=fmt)
        assert result.check["of_spread"] <= RELATIVE_TOLERANCE and result.check["top1_identical"], fmt


def test_a_saved_model_export_has_the_same_manifest(mini_keras_file, tmp_path, capsys):
    spec, model, _ = mini_keras_file
    result = export_model(model, spec, MINI_CLASSES, tmp_path)  # format="saved_model": export_saved_model
    manifest = json.loads((Path(result.path) / "assets" / "manifest.json").read_text())
    assert (manifest["format"], manifest["artifact"]) == ("saved_model", "saved_model.pb")
    assert [entry["signature"] for entry in manifest["inputs"]] == ["serving_default", "serve_float"]
    assert manifest["checks"][0]["max_abs_diff"] == result.max_abs_diff <= manifest["checks"][0]["tolerance"]
    assert main(["export", "--check", result.path]) == 0
    assert "OK, max abs diff" in capsys.readouterr().out
