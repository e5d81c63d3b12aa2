import ast
import contextlib
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import inception_keras
from inception_keras import build_model, get_spec, inference_model
from inception_keras.layers import xla
from inception_keras.layers.lrn import LocalResponseNormalization


def test_outputs_are_named_and_shaped():
    spec = get_spec("googlenet_mini")
    model = build_model(spec)
    outputs = model(np.zeros((2, 32, 32, 3), "float32"))
    assert sorted(outputs) == ["aux_1", "aux_2", "predictions"]
    assert all(tuple(value.shape) == (2, 10) for value in outputs.values())
    np.testing.assert_allclose(np.asarray(outputs["predictions"]).sum(axis=1), 1.0, rtol=1e-5)
    single = build_model(spec.without_aux())
    assert tuple(single(np.zeros((1, 32, 32, 3), "float32")).shape) == (1, 10)


def test_batch_norm_settings_come_from_the_spec():
    model = build_model(get_spec("googlenet_torchvision").with_input_size(64).without_aux())
    bn = model.get_layer("inception_4e_5x5_bn")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-3)
    assert model.get_layer("inception_4e_5x5_conv").kernel_size == (3, 3)  # torchvision's "5x5" is 3x3
    assert not model.get_layer("inception_4e_5x5_conv").use_bias
    paper = build_model(get_spec("googlenet").without_aux())
    assert paper.get_layer("inception_4e_5x5_conv").kernel_size == (5, 5)
    assert paper.get_layer("inception_4e_5x5_conv").use_bias


def test_layer_names_follow_the_convention():
    names = {layer.name for layer in build_model(get_spec("googlenet")).layers}
    for name in ("inception_3a_3x3_reduce_conv", "inception_3a_concat", "inception_5b_relu", "pool_4",
                 "lrn_1", "lrn_2", "conv1_conv", "aux_1_pool", "aux_2", "predictions", "pool_5"):
        assert name in names
    assert not [name for name in names if "/" in name]


@pytest.mark.parametrize("name", ["googlenet", "googlenet_torchvision"])
def test_module_activation_follows_the_concatenation(name):
    """Each branch ends in its conv (or batch norm); the module's one activation takes the concatenation."""
    model = build_model(get_spec(name).with_input_size(96).without_aux())
    last = "bn" if get_spec(name).normalization == "batch_norm" else "conv"
    for module in ("3a", "4e", "5b"):
        concat = model.get_layer(f"inception_{module}_concat")
        feeding = [node.operation.name for node in concat._inbound_nodes[0].parent_nodes]
        assert feeding == [f"inception_{module}_{branch}_{last}" for branch in ("1x1", "3x3", "5x5", "pool_proj")]
        activation = model.get_layer(f"inception_{module}_relu")
        assert activation._inbound_nodes[0].parent_nodes[0].operation is concat
    names = {layer.name for layer in model.layers}
    assert "inception_3a_1x1_relu" not in names and "inception_3a_3x3_reduce_relu" in names


def test_inference_model_shares_weights():
    model = build_model(get_spec("googlenet_mini"))
    inference = inference_model(model)
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(inference(x), model(x)["predictions"], atol=1e-6)
    kernel = model.get_layer("predictions").kernel
    kernel.assign(kernel * 0)
    np.testing.assert_allclose(inference(x), 0.1, atol=1e-6)
    assert len(inference.outputs) == 1


@pytest.mark.parametrize("name", ["googlenet_mini", "googlenet"])
def test_keras_save_and_safe_load_give_equal_outputs(name, tmp_path):
    spec = get_spec(name)
    if name == "googlenet":  # LRN and biases; smallest size with aux heads
        spec = spec.with_input_size(79).with_classes(10)
    model = build_model(spec)
    x = np.random.default_rng(1).random((2, *spec.input_shape), dtype=np.float32)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    after = loaded.predict(x, verbose=0)
    for key in before:  # batch norm loads as the stock layer: the same function, another kernel
        np.testing.assert_allclose(before[key], after[key], rtol=1e-5, atol=1e-7)


LRN_SETTINGS = [(5, 0.75), (3, 0.5), (1, 1.0), (7, 0.6)]


def caffe_lrn(x, size, alpha, beta, bias):
    expected = np.empty_like(x)
    half, channels = size // 2, x.shape[-1]
    for c in range(channels):
        lo, hi = max(0, c - half), min(channels, c + half + 1)
        expected[..., c] = x[..., c] / (bias + alpha / size * (x[..., lo:hi] ** 2).sum(-1)) ** beta
    return expected


@pytest.mark.parametrize("compiled", [True, False], ids=["xla", "op_by_op"])
@pytest.mark.parametrize("size, beta", LRN_SETTINGS)
def test_lrn_matches_caffe_formula(size, beta, compiled):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 3, 9)).astype("float32") * 10
    alpha, bias = 1e-2, 2.0
    layer = LocalResponseNormalization(size, alpha, beta, bias)
    expected = caffe_lrn(x, size, alpha, beta, bias)
    with contextlib.nullcontext() if compiled else xla.op_by_op():
        np.testing.assert_allclose(layer(x), expected, rtol=1e-5)
        clone = LocalResponseNormalization.from_config(layer.get_config())
        np.testing.assert_allclose(clone(x), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="size must be a positive odd integer, got 4"):
        LocalResponseNormalization(4)


@pytest.mark.parametrize("size, beta", LRN_SETTINGS)
def test_lrn_written_out_gradient_equals_the_automatic_one(size, beta):
    """The XLA form's gradient (written out) against TensorFlow's gradient of the op-by-op form."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, 4, 4, 11)).astype("float32") * 10)
    upstream = tf.constant(rng.normal(size=(2, 4, 4, 11)).astype("float32"))
    layer = LocalResponseNormalization(size, 1e-2, beta, 2.0)

    def gradient(compiled):
        with tf.GradientTape() as tape, contextlib.nullcontext() if compiled else xla.op_by_op():
            tape.watch(x)
            outputs = layer(x)
        return tape.gradient(outputs, x, output_gradients=upstream).numpy()

    automatic, written_out = gradient(compiled=False), gradient(compiled=True)
    assert np.abs(automatic).max() > 0.1
    np.testing.assert_allclose(written_out, automatic, rtol=1e-4, atol=1e-6)


def test_model_code_uses_no_tensorflow():
    package = Path(inception_keras.__file__).parent
    for module in ("builder.py", "layers/lrn.py", "layers/input_conversion.py", "spec.py", "cost.py", "memory.py"):
        tree = ast.parse((package / module).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert "tensorflow" not in imported, module
    for module in ("spec.py", "cost.py", "presets.py", "serialize.py", "report.py", "cli/__init__.py"):
        tree = ast.parse((package / module).read_text())
        top = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
        top |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
        assert not {name for name in top if name and name.split(".")[0] in ("keras", "tensorflow")}, module


def test_ceil_mode_pooling_equals_torch_or_is_refused():
    """`ceil` padding (Caffe's and torch's ceil_mode) against torch's own pooling, recorded for maps 2..13."""
    from inception_keras.builder import pool
    from inception_keras.spec import PoolSpec, SpecError

    sys.path.insert(0, str(Path(__file__).parents[1] / "reference"))
    from synthetic import pooling_input

    recorded = np.load(Path(__file__).parents[1] / "fixtures" / "pretrained" / "pooling.npz")
    exact = refused = 0
    for key in recorded.files:
        kind, size, stride, n = key.split("_")
        x, expected = pooling_input(kind, int(size), int(stride), int(n)), recorded[key]
        inputs = keras.Input(shape=x.shape[1:])
        try:
            model = keras.Model(inputs, pool(inputs, PoolSpec(kind, int(size), int(stride), "ceil"), "p"))
        except SpecError as error:
            assert "no exact Keras equivalent" in str(error) or "needs a feature map" in str(error)
            refused += 1
            continue
        np.testing.assert_allclose(model(x), expected, atol=1e-6, err_msg=key)
        exact += 1
    assert (exact, refused) == (70, 0)  # 3x3/2, 2x2/2 and 3x3/1 always have an exact Keras padding
