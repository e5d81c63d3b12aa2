"""Local response normalization as a registered, serializable Keras layer.

Krizhevsky et al., "ImageNet Classification with Deep Convolutional Neural Networks"
(2012), section 3.3, with the Caffe convention GoogLeNet's BVLC model uses:
    y = x / (bias + alpha / size * sum_{size neighbouring channels} x^2) ** beta
Written with `keras.ops` only, so it runs on every Keras backend.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="inception_keras")
class LocalResponseNormalization(keras.layers.Layer):
    """Normalizes each channel by its `size` neighbours across channels (channels last)."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LocalResponseNormalization size must be a positive odd integer, got {size}")
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    def call(self, inputs):
        channels = inputs.shape[-1]
        half = self.size // 2
        squared = ops.square(inputs)
        padded = ops.pad(squared, [[0, 0]] * (len(inputs.shape) - 1) + [[half, half]])
        window = sum(padded[..., offset:offset + channels] for offset in range(self.size))
        return inputs / ops.power(self.bias + (self.alpha / self.size) * window, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "bias": self.bias}
