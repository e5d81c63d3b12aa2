"""Local response normalization as a registered, serializable Keras layer.

Krizhevsky et al., "ImageNet Classification with Deep Convolutional Neural Networks"
(2012), section 3.3, with the Caffe convention GoogLeNet's BVLC model uses:
    y = x / (bias + alpha / size * sum_{size neighbouring channels} x^2) ** beta
Written with `keras.ops` only, so it runs on every Keras backend. Where XLA compiles the layer
(TensorFlow, via `inception_keras.layers.xla`, and JAX) the channel window is a sum of `size` shifted
slices and the gradient is written out,
    dx = g * s^-beta - 2 * alpha * beta / size * x * window(g * x * s^(-beta - 1)),
so forward and backward are one fused loop each over the data: 2.6x faster forward and 2.2x with
the gradient than the matrix-product form, at 32x56x56x192 on a 2-core CPU. Without XLA (other
backends, or an export traced under `xla.op_by_op()`) the window is a matrix product with a banded
0/1 matrix, the fastest form op by op. beta 0.75 / 0.5 / 1 use rsqrt instead of `power`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from inception_keras.layers import xla


def channel_window(channels: int, size: int) -> np.ndarray:
    """(channels, channels) 0/1 matrix: column j sums the `size` channels centred on j (clipped at the ends)."""
    half = size // 2
    index = np.arange(channels)
    return (np.abs(index[:, None] - index[None, :]) <= half).astype(np.float32)


def _banded_window(values, size: int):
    window = ops.convert_to_tensor(channel_window(values.shape[-1], size), dtype=values.dtype)
    return ops.matmul(values, window)


def _sliced_window(values, size: int):
    channels, half = values.shape[-1], size // 2
    padded = ops.pad(values, [[0, 0]] * (len(values.shape) - 1) + [[half, half]])
    total = padded[..., :channels]
    for offset in range(1, size):
        total = total + padded[..., offset:offset + channels]
    return total


@keras.saving.register_keras_serializable(package="inception_keras")
class LocalResponseNormalization(keras.layers.Layer):
    """Normalizes each channel by its `size` neighbours across channels (channels last)."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LocalResponseNormalization size must be a positive odd integer, got {size}")
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias
        self._compiled = self._compiled_with_gradient()

    def call(self, inputs):
        return self._compiled(inputs) if xla.compiles() else self._normalize(inputs, _banded_window)

    def _normalize(self, inputs, window):
        return inputs * self._inverse_power(self._scale(inputs, window))

    def _scale(self, inputs, window):
        return self.bias + (self.alpha / self.size) * window(ops.square(inputs), self.size)

    def _inverse_power(self, scale):
        """scale ** -beta."""
        if self.beta == 0.75:
            root = ops.rsqrt(scale)
            return root * ops.sqrt(root)
        if self.beta == 0.5:
            return ops.rsqrt(scale)
        if self.beta == 1.0:
            return 1.0 / scale
        return ops.power(scale, -self.beta)

    def _compiled_with_gradient(self):
        """The sliced form, forward and backward each one XLA computation; the backward pass recomputes the
        scale from the inputs rather than keep it alive between the passes."""
        def forward(inputs):
            return self._normalize(inputs, _sliced_window)

        def backward(inputs, upstream):
            scale = self._scale(inputs, _sliced_window)
            inverse_power = self._inverse_power(scale)
            window = _sliced_window(upstream * inputs * inverse_power / scale, self.size)
            return upstream * inverse_power - (2.0 * self.alpha * self.beta / self.size) * inputs * window

        forward, backward = xla.fused(forward), xla.fused(backward)

        @ops.custom_gradient
        def normalize(inputs):
            def gradient(*args, upstream=None):
                return backward(inputs, args[0] if upstream is None else upstream)

            return forward(inputs), gradient

        return normalize

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "bias": self.bias}
