"""Batch normalization that uses TensorFlow's fused kernel on the TensorFlow backend.

Keras 3's `BatchNormalization` computes, on every backend, the moments and the normalization as
separate ops, upcasting 16-bit inputs to float32 and back: on TensorFlow that is a dozen
unfused ops per layer, and profiling `googlenet_torchvision` training on a 2-core CPU put
33 % of a bf16 step (20 % in float32) and 31 % of bf16 inference there. This subclass keeps the
layer's variables, config and arithmetic, and on TensorFlow, for 4-D channels-last inputs, runs
`FusedBatchNormV3` (one op forward, one backward; float32 statistics for bf16/float16 inputs; in
inference TensorFlow's graph optimizer folds it into the preceding convolution). Moving
statistics are updated exactly as Keras does (the batch variance without Bessel's correction).
Everything else — other backends (JAX: XLA fuses the stock ops), masks, renorm, synchronized
statistics, float64, tiny epsilons — goes through the stock `call`.

A model saves this layer as `keras.layers.BatchNormalization`, so its `.keras` file loads with Keras
alone (into the stock layer); `use_fused_kernel` switches a loaded model's stock batch norms back to
this class. Earlier versions saved it as `inception_keras>BatchNormalization`; this module registers
that name, so their files still load.
"""

from __future__ import annotations

from collections.abc import Iterator

import keras
from keras import ops
from keras.src import api_export

FUSED_DTYPES = ("float16", "bfloat16", "float32")
MIN_FUSED_EPSILON = 1.001e-5  # FusedBatchNorm raises smaller epsilons to this
STOCK_NAME = "keras.layers.BatchNormalization"
FORMER_NAME = "inception_keras>BatchNormalization"  # what earlier versions saved


class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same arguments, weights and outputs), fused on TensorFlow."""

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        scale = ops.cast(self.gamma, "float32") if self.scale else tf.ones(inputs.shape[-1], "float32")
        offset = ops.cast(self.beta, "float32") if self.center else tf.zeros(inputs.shape[-1], "float32")
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # the op returns Bessel-corrected
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)
        return ops.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 4
                and self.axis in (-1, 3) and not self.renorm and not self.synchronized
                and self.epsilon >= MIN_FUSED_EPSILON
                and keras.backend.standardize_dtype(inputs.dtype) in FUSED_DTYPES)


# Keras saves a class under its public API name where this table has one (module `keras.layers`, no registered
# name) and loads that name as the stock class; the fused kernel is not part of the saved model.
api_export.REGISTERED_OBJS_TO_NAMES[BatchNormalization] = STOCK_NAME
keras.saving.get_custom_objects()[FORMER_NAME] = BatchNormalization


def _all_layers(model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def use_fused_kernel(model: keras.Model) -> keras.Model:
    """`model` with each stock `keras.layers.BatchNormalization` (nested models included) switched in place to
    this subclass, which adds no state: the same layer, weights and config, computed with the fused kernel."""
    for layer in _all_layers(model):
        if type(layer) is keras.layers.BatchNormalization:
            layer.__class__ = BatchNormalization
    return model
