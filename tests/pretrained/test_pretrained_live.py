"""The live cross-framework comparison, run by `make verify-weights` (deselected otherwise).

`tests/reference/make_reference.py` (in the reference venv) wrote, into REFERENCE_DIR, GoogLeNet weights in each
framework's own file formats and that framework's own outputs. Here every file goes through the whole public
path, `GoogLeNet(weights=FILE)` (and `inception-keras weights import` for one per source), and our outputs are
compared with the framework's: float32 and, where the framework can run it (torch, TF-slim), float64.
"""

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from inception_keras.applications import GoogLeNet
from helpers import EVAL_IMAGES, relative_difference, synthetic, top5

pytestmark = pytest.mark.verify
DIRECTORY = Path(os.environ.get("REFERENCE_DIR", "runs/verify-weights"))
FILES = [("torchvision", "torchvision_zip.pth"), ("torchvision", "torchvision_legacy.pth"),
         ("slim", "slim_v1.ckpt"), ("slim", "slim_v2/model.ckpt"), ("slim", "slim_v2"),
         ("caffe", "caffe.caffemodel"), ("caffe", "caffe_v1.caffemodel")]
RESULTS = []


def outputs(path, aux: bool, dtype: str = "float32") -> dict:
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        model = GoogLeNet(weights=path, classifier_activation=None, aux_heads=aux)
        features = GoogLeNet(weights=path, include_top=False, pooling="avg")
        images = synthetic.images(**EVAL_IMAGES).astype(dtype)
        found = model.predict(images, verbose=0)
        found = dict(found) if isinstance(found, dict) else {"predictions": found}
        found["features"] = features.predict(images, verbose=0)
    finally:
        keras.config.set_dtype_policy(policy)
    return {"logits" if key == "predictions" else key: np.asarray(value) for key, value in found.items()}


@pytest.mark.parametrize("source, name", FILES)
def test_file_through_the_public_api_equals_its_framework(source, name):
    path = DIRECTORY / name
    if not path.exists() and not Path(f"{path}.index").exists():
        pytest.fail(f"{path} is missing: run `make verify-weights`, which writes it first")
    reference = np.load(DIRECTORY / f"{source}.npz")
    ours = outputs(path, aux=source != "slim")
    for key in ("logits", "features", "aux_1", "aux_2"):
        if key not in reference.files:
            continue
        difference = relative_difference(ours[key], reference[key])
        RESULTS.append(f"{name:<24} {key:<9} float32  max|diff|/std {difference:.1e}")
        assert difference <= 2e-4, key
        if key != "features":
            np.testing.assert_array_equal(top5(ours[key]), top5(reference[key]))
    if "logits_float64" in reference.files:
        ours64 = outputs(path, aux=False, dtype="float64")
        for key in ("logits", "features"):
            difference = relative_difference(ours64[key], reference[f"{key}_float64"])
            RESULTS.append(f"{name:<24} {key:<9} float64  max|diff|/std {difference:.1e}")
            assert difference <= 1e-9, key


def test_weights_import_command_per_source(tmp_path, capsys):
    from inception_keras.cli import main
    from inception_keras.pretrained.convert import load_keras_model

    for source, name in (("torchvision", "torchvision_legacy.pth"), ("slim", "slim_v1.ckpt"),
                         ("caffe", "caffe_v1.caffemodel")):
        out = tmp_path / f"{source}.keras"
        assert main(["weights", "import", str(DIRECTORY / name), "--out", str(out)]) == 0
        model = load_keras_model(out)
        probabilities = model.predict(synthetic.images(**EVAL_IMAGES), verbose=0)
        probabilities = probabilities["predictions"] if isinstance(probabilities, dict) else probabilities
        logits = np.load(DIRECTORY / f"{source}.npz")["logits"]
        np.testing.assert_array_equal(top5(probabilities), top5(logits))
    print("\n" + "\n".join(RESULTS))
