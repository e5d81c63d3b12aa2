import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from inception_keras import build_model, get_spec, inference_model, load_spec
from inception_keras import export as export_module
from inception_keras.cli import main
from inception_keras.data import to_model_input
from inception_keras.export import ExportError, check_saved_model, export_saved_model
from inception_keras.spec import LRNSpec

SCRIPTS = Path(__file__).parents[1] / "scripts"
CLASSES = [f"class_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def mini():
    spec = get_spec("googlenet_mini")
    return spec, build_model(spec)


def test_export_layout_signatures_and_reload(mini, tmp_path):
    spec, model = mini
    first = export_saved_model(model, spec, CLASSES, base_dir=tmp_path)
    second = export_saved_model(model, spec, CLASSES, base_dir=tmp_path)
    root = tmp_path / "googlenet_mini"
    assert (Path(first.path), Path(second.path)) == (root / "1", root / "2")
    assert first.max_abs_diff <= 1e-5
    assets = Path(first.path) / "assets"
    assert load_spec(assets / "spec.yaml") == spec
    assert (assets / "class_names.txt").read_text().splitlines() == CLASSES
    assert sorted(p.name for p in (tmp_path / "googlenet_mini").iterdir()) == ["1", "2"]

    loaded = tf.saved_model.load(first.path)
    assert set(loaded.signatures) == {"serving_default", "serve_float"}
    images = np.random.default_rng(3).integers(0, 256, size=(3, 50, 70, 3), dtype=np.uint8)  # any size
    served = loaded.signatures["serving_default"](tf.constant(images))
    expected = inference_model(model).predict(to_model_input(images, (32, 32), 3), verbose=0)
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    assert served["top_k_ids"].shape == (3, 5) and served["top_k_ids"].dtype == tf.int32
    np.testing.assert_array_equal(served["top_k_ids"][:, 0], np.argmax(expected, axis=1))
    np.testing.assert_allclose(served["top_k_probabilities"][:, 0], expected.max(axis=1), atol=1e-5)


def test_variables_are_stored_once(mini, tmp_path):
    spec, model = mini
    from inception_keras.export.folding import fold_batch_norm

    result = export_saved_model(model, spec, CLASSES, base_dir=tmp_path)
    weights = sum(int(np.prod(w.shape)) * 4 for w in fold_batch_norm(inference_model(model)).weights)
    assert result.weight_bytes == weights  # what is stored: batch norm folded into the convolutions
    assert result.variables_bytes <= 1.15 * weights


def test_check_command_and_a_tampered_export(mini, tmp_path, capsys):
    spec, model = mini
    result = export_saved_model(model, spec, CLASSES, base_dir=tmp_path)
    assert main(["export", "--check", result.path]) == 0
    assert "OK, max abs diff" in capsys.readouterr().out
    model_path = tmp_path / "mini.keras"
    model.save(model_path)
    assert main(["export", "--check", result.path, "--model", str(model_path)]) == 0
    check = Path(result.path) / "assets" / "check.npz"
    with np.load(check) as stored:
        images, probabilities = stored["images"], stored["probabilities"]
    np.savez(check, images=images, probabilities=probabilities + 1e-3)
    assert main(["export", "--check", result.path]) == 2
    assert "differs from the Keras model by 1.000e-03" in capsys.readouterr().err
    assert main(["export", "--check", str(tmp_path)]) == 2
    assert "is not an inception_keras SavedModel" in capsys.readouterr().err


def test_failed_export_leaves_no_version_directory(mini, tmp_path, monkeypatch):
    spec, model = mini

    def broken(path, keras_model=None):
        raise ExportError("simulated failure")

    monkeypatch.setattr(export_module, "check_saved_model", broken)
    with pytest.raises(ExportError, match="simulated failure"):
        export_saved_model(model, spec, CLASSES, base_dir=tmp_path)
    assert list((tmp_path / "googlenet_mini").iterdir()) == []


def test_export_killed_midway_leaves_no_partial_version(tmp_path):
    process = subprocess.Popen([sys.executable, str(SCRIPTS / "export_mini.py"), str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    root = tmp_path / "googlenet_mini"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not list(root.glob(".tmp-*/saved_model.pb")):
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list(root.glob(".tmp-*")), "the export should have been killed while writing"
    assert not [p for p in root.iterdir() if p.name.isdigit()]
    spec = get_spec("googlenet_mini")
    result = export_saved_model(build_model(spec), spec, CLASSES, base_dir=tmp_path)
    assert Path(result.path).name == "1"
    assert sorted(p.name for p in root.iterdir()) == ["1"]  # the killed export's temporary is cleaned up


def test_export_refuses_wrong_class_names(mini, tmp_path):
    spec, model = mini
    with pytest.raises(ExportError, match="3 class names for a 10-class model"):
        export_saved_model(model, spec, ["a", "b", "c"], base_dir=tmp_path)
    with pytest.raises(ExportError, match="not an inception_keras SavedModel"):
        check_saved_model(tmp_path)


def test_export_holds_no_xla_clusters(mini, tmp_path):
    """In process LRN runs compiled by XLA; the export is traced op by op, so TF Serving needs no XLA JIT."""
    spec, _ = mini
    spec = spec.replace(stem=(*spec.stem, LRNSpec(size=5, alpha=1e-4, beta=0.75)))
    model = build_model(spec)
    assert "_XlaMustCompile" in str(tf.function(model).get_concrete_function(
        tf.TensorSpec([1, *spec.input_shape])).graph.as_graph_def())
    result = export_saved_model(model, spec, CLASSES, base_dir=tmp_path)
    assert result.max_abs_diff <= 1e-5
    saved = saved_model_pb2.SavedModel.FromString((Path(result.path) / "saved_model.pb").read_bytes())
    functions = saved.meta_graphs[0].graph_def.library.function
    assert functions and not [f.signature.name for f in functions if f.attr["_XlaMustCompile"].b]


@pytest.mark.slow
def test_googlenet_export_is_at_most_115_percent_of_weights(tmp_path):
    spec = get_spec("googlenet")
    result = export_saved_model(build_model(spec), spec, [str(i) for i in range(1000)], base_dir=tmp_path)
    assert result.total_bytes <= 1.15 * result.weight_bytes
    assert result.max_abs_diff <= 1e-5


def test_an_imported_caffe_style_model_exports_from_a_keras_file(tmp_path, capsys):
    """The uint8 signature feeds [-1, 1] to the model; a model that converts for Caffe inside exports unchanged."""
    spec = get_spec("googlenet_mini").replace(input_conversion="caffe")
    model = build_model(spec)
    assert model.get_layer("input_conversion").count_params() == 0
    path = tmp_path / "imported.keras"
    model.save(path)
    assert main(["export", str(path), "--base-dir", str(tmp_path / "models")]) == 0
    exported = tmp_path / "models" / "googlenet_mini" / "1"
    assert "exported" in capsys.readouterr().out
    assert (exported / "assets" / "class_names.txt").read_text().splitlines() == [str(i) for i in range(10)]
    assert not (exported / "assets" / "spec.yaml").exists()  # not known for a bare .keras file
    assert main(["export", "--check", str(exported), "--model", str(path)]) == 0
    loaded = tf.saved_model.load(str(exported))
    images = np.random.default_rng(5).integers(0, 256, size=(2, 40, 30, 3), dtype=np.uint8)
    served = loaded.signatures["serving_default"](tf.constant(images))["probabilities"]
    expected = model.predict(to_model_input(images, (32, 32), 3), verbose=0)["predictions"]
    np.testing.assert_allclose(served, expected, atol=1e-5)
