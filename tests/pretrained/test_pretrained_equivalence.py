"""Our GoogLeNets against the original frameworks' own forward passes, recorded in small fixtures.

`tests/reference/make_reference.py` (run by `make verify-weights` in a venv with torch + torchvision,
tf_slim and OpenCV) made deterministic weights, let each framework calibrate them on images and
recorded its outputs. Here the same weights are made again (`synthetic.py`, from the recorded
seed, manifest and statistics), mapped onto our specs by the converters, and our outputs compared.
"""

import keras
import numpy as np
import pytest

from inception_keras.builder import build_model
from inception_keras.pretrained.convert import SourceWeights, load_weights, source_spec

from helpers import EVAL_IMAGES, fixture_weights, relative_difference, synthetic, top5


def our_outputs(spec, weights: SourceWeights, images: np.ndarray) -> dict:
    """Logits, pooled features and aux logits of our model for `spec` with `weights` loaded."""
    model = build_model(spec, classifier_activation=None)
    report = load_weights(model, weights)
    assert not report.fresh
    assert all(name.startswith(("aux", "loss1/", "loss2/")) for name in report.unused) and \
        bool(report.unused) == (not spec.aux_heads and weights.source != "slim")
    names = {"logits": "predictions", "features": model.get_layer("dropout").input, "aux_1": "aux_1",
             "aux_2": "aux_2"}
    names = {key: value for key, value in names.items() if not isinstance(value, str) or value in
             {layer.name for layer in model.layers}}
    probe = keras.Model(model.inputs, {key: value if not isinstance(value, str) else model.get_layer(value).output
                                       for key, value in names.items()})
    return {key: np.asarray(value) for key, value in probe.predict(images, verbose=0).items()}


@pytest.mark.parametrize("source", ["torchvision", "slim", "caffe"])
def test_outputs_equal_the_reference_frameworks(source):
    record, weights = fixture_weights(source)
    spec = source_spec(weights)
    assert spec.name == {"torchvision": "googlenet_torchvision", "slim": "googlenet_slim", "caffe": "googlenet"}[source]
    ours = our_outputs(spec, weights, synthetic.images(**EVAL_IMAGES))
    expected = {"torchvision": {"logits", "features", "aux_1", "aux_2"}, "slim": {"logits", "features"},
                "caffe": {"logits", "features", "aux_1", "aux_2"}}[source]
    assert set(ours) == expected
    for key in sorted(expected):
        reference = record[key]
        assert relative_difference(ours[key], reference) <= 2e-4, key
        if key != "features":
            np.testing.assert_array_equal(top5(ours[key]), top5(reference))
    assert record["logits"].std(axis=0).mean() > 0.2 * record["logits"].std()  # outputs depend on the input


@pytest.mark.parametrize("source", ["torchvision", "slim"])
def test_float64_outputs_agree_to_rounding(source):
    """Without float32 rounding (both frameworks in float64) the networks agree to ~1e-13."""
    record, weights = fixture_weights(source)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        ours = our_outputs(source_spec(weights).without_aux(), weights,
                           synthetic.images(**EVAL_IMAGES).astype(np.float64))
    finally:
        keras.config.set_dtype_policy(policy)
    for key in ("logits", "features"):
        assert ours[key].dtype == np.float64
        reference = record[f"{key}_float64"]  # stored rounded to float32
        assert relative_difference(ours[key], reference) <= 1e-6, key
