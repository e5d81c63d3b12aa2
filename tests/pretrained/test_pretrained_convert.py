from pathlib import Path

import numpy as np
import pytest

from inception_keras import build_model, get_spec
from inception_keras.cli import main
from inception_keras.pretrained import WeightsError
from inception_keras.pretrained.convert import SourceWeights, detect_source, load_weights, read_source

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize("path, source", [
    ("torch/small_zip.pth", "torchvision"), ("torch/small_legacy.pth", "torchvision"),
    ("caffe/tiny_layer.caffemodel", "caffe"), ("caffe/tiny_v1_layers.caffemodel", "caffe"),
])
def test_the_source_is_detected_from_the_file(path, source):
    assert detect_source(FIXTURES / path) == source


def test_slim_and_keras_files_are_detected(slim_checkpoint, tmp_path):
    assert detect_source(slim_checkpoint) == detect_source(slim_checkpoint + ".index") == "slim"
    model = build_model(get_spec("googlenet_mini"))
    model.save(tmp_path / "mini.keras")
    assert detect_source(tmp_path / "mini.keras") == "keras"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(WeightsError, match="cannot tell what this file is"):
        detect_source(tmp_path / "notes.txt")
    with pytest.raises(WeightsError, match="no such file"):
        detect_source(tmp_path / "missing.pth")


def test_a_file_for_another_network_names_the_missing_tensor_and_loads_nothing():
    model = build_model(get_spec("googlenet_torchvision").with_input_size(64).without_aux())
    before = [w.copy() for w in model.get_layer("conv1_conv").get_weights()]
    with pytest.raises(WeightsError, match=r"small_zip.pth: no tensor 'conv1.conv.weight' \(for layer conv1_conv\)"):
        load_weights(model, FIXTURES / "torch" / "small_zip.pth")
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0], before[0])


def test_a_wrong_shape_is_refused_before_anything_is_assigned():
    from helpers import fixture_weights

    _, weights = fixture_weights("torchvision")
    model = build_model(get_spec("googlenet_torchvision").with_input_size(64).without_aux())
    tensors = dict(weights.tensors)
    tensors["inception5b.branch4.1.conv.weight"] = tensors["inception5b.branch4.1.conv.weight"][:100]
    kernel = model.get_layer("conv1_conv").get_weights()[0].copy()
    with pytest.raises(WeightsError, match=r"layer inception_5b_pool_proj_conv needs weights of shapes "
                                           r"\[\(1, 1, 832, 128\)\], but inception5b.branch4.1.conv.weight gives"):
        load_weights(model, SourceWeights("edited.pth", "torchvision", tensors))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0], kernel)  # nothing assigned
    del tensors["inception5b.branch4.1.conv.weight"]
    with pytest.raises(WeightsError, match="no tensor 'inception5b.branch4.1.conv.weight'"):
        load_weights(model, SourceWeights("edited.pth", "torchvision", tensors))


def test_fresh_heads_replace_a_classifier_of_another_class_count():
    from helpers import fixture_weights

    _, weights = fixture_weights("torchvision")
    model = build_model(get_spec("googlenet_torchvision").with_input_size(96).with_classes(10))
    with pytest.raises(WeightsError, match="layer aux_1 needs weights of shapes"):
        load_weights(model, weights)
    report = load_weights(model, weights, fresh_heads=True)
    assert report.fresh == ["aux_1", "aux_2", "predictions"] and not report.unused
    np.testing.assert_array_equal(model.get_layer("aux_1_fc").get_weights()[1], weights.tensors["aux1.fc1.bias"])


def test_truncated_checkpoint_is_a_weights_error(slim_checkpoint, tmp_path):
    data = Path(slim_checkpoint + ".data-00000-of-00001").read_bytes()
    (tmp_path / "cut.ckpt.data-00000-of-00001").write_bytes(data[:len(data) // 2])
    (tmp_path / "cut.ckpt.index").write_bytes(Path(slim_checkpoint + ".index").read_bytes())
    with pytest.raises(WeightsError, match="cut.ckpt: not a readable TensorFlow checkpoint"):
        read_source(tmp_path / "cut.ckpt")


def test_weights_import_and_predict_commands(slim_checkpoint, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "slim.keras"
    assert main(["weights", "import", slim_checkpoint, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "a TF-slim checkpoint with 230 tensors -> spec googlenet_slim (1001 classes, without aux heads" in text
    assert "loaded 115 layers" in text and "max abs diff 0.0e+00" in text and out.exists()
    assert main(["weights", "import", slim_checkpoint, "--out", str(out)]) == 2
    assert "exists; give another --out, or --overwrite" in capsys.readouterr().err

    image = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(out), str(image), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 4 and lines[1].startswith("  1. ")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["predict", str(out), str(tmp_path / "broken.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png: cannot read this image" in err[0]


def test_weights_import_refuses_garbage_with_one_line(tmp_path, capsys):
    (tmp_path / "model.pth").write_bytes(b"\x80\x02garbage")
    assert main(["weights", "import", str(tmp_path / "model.pth"), "--out", str(tmp_path / "x.keras")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "model.pth" in err[0]
    assert not (tmp_path / "x.keras").exists()
