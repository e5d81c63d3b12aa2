"""The fused batch norm is Keras' BatchNormalization with another kernel: same weights, outputs, updates, gradients."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from inception_keras.layers.batch_norm import BatchNormalization, use_fused_kernel


def pair(rng, shape, dtype, scale, **kwargs):
    stock = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, scale=scale, dtype=dtype, **kwargs)
    fused = BatchNormalization(momentum=0.9, epsilon=1e-3, scale=scale, dtype=dtype, **kwargs)
    stock.build(shape)
    fused.build(shape)
    weights = [rng.uniform(0.5, 2.0, w.shape) if "variance" in w.path else rng.normal(size=w.shape)
               for w in stock.weights]
    stock.set_weights(weights)
    fused.set_weights(weights)
    return stock, fused


def close(a, b, tolerance):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return np.abs(a - b).max() <= tolerance * max(1.0, np.abs(b).max())


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("mixed_bfloat16", 1e-2)])
@pytest.mark.parametrize("scale", [True, False])
def test_fused_equals_stock_in_training_and_inference(dtype, tolerance, scale):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.5, 2.0, (8, 5, 6, 7)).astype("float32"))
    stock, fused = pair(rng, x.shape, dtype, scale)
    projection = tf.constant(rng.normal(size=x.shape).astype("float32"))  # gradients of order 1, no cancellation
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        outputs = {"stock": stock(x, training=True), "fused": fused(x, training=True)}
        losses = {name: tf.reduce_sum(tf.cast(y, "float32") * projection) for name, y in outputs.items()}
    assert outputs["fused"].dtype == outputs["stock"].dtype
    assert close(outputs["fused"], outputs["stock"], tolerance)
    for a, b in zip(fused.non_trainable_weights, stock.non_trainable_weights):  # moving mean and variance
        assert close(a, b, 1e-6)
    grads = {name: tape.gradient(losses[name], [x, *layer.trainable_weights])
             for name, layer in (("stock", stock), ("fused", fused))}
    for a, b in zip(grads["fused"], grads["stock"]):
        assert close(a, b, tolerance)
    assert close(fused(x, training=False), stock(x, training=False), tolerance)


def test_what_cannot_be_fused_takes_the_stock_path():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 5)).astype("float32")  # 3-D: not fused
    stock, fused = pair(rng, x.shape, "float32", True)
    np.testing.assert_allclose(fused(x, training=True), stock(x, training=True), atol=1e-6)
    x64 = rng.normal(size=(2, 3, 3, 4))
    stock, fused = pair(rng, x64.shape, "float64", True)
    np.testing.assert_allclose(fused(x64, training=True), stock(x64, training=True), atol=1e-12)


def test_it_saves_as_the_stock_layer_and_our_loader_fuses_it_again(tmp_path):
    from inception_keras import build_model, get_spec
    from inception_keras.pretrained.convert import load_keras_model

    model = build_model(get_spec("googlenet_mini"))
    assert type(model.get_layer("conv1_bn")) is BatchNormalization
    model.save(tmp_path / "m.keras")
    layers = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))["config"]["layers"]
    saved = {(layer["module"], layer["class_name"], layer["registered_name"]) for layer in layers
             if layer["config"]["name"] == "conv1_bn"}
    assert saved == {("keras.layers", "BatchNormalization", None)}
    assert type(keras.saving.load_model(tmp_path / "m.keras").get_layer("conv1_bn")) is keras.layers.BatchNormalization
    norms = [layer for layer in load_keras_model(tmp_path / "m.keras").layers if layer.name.endswith("_bn")]
    assert norms and all(type(layer) is BatchNormalization for layer in norms)


def test_use_fused_kernel_reaches_nested_models_and_keeps_subclasses():
    class Custom(keras.layers.BatchNormalization):
        pass

    inner = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization(), Custom()])
    outer = keras.Sequential([keras.Input((4, 4, 2)), inner, keras.layers.BatchNormalization()])
    assert use_fused_kernel(outer) is outer
    assert [type(layer) for layer in (*inner.layers, outer.layers[-1])] == [BatchNormalization, Custom,
                                                                            BatchNormalization]
