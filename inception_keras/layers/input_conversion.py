"""A registered layer that converts the project's input convention to another framework's.

Every model here takes RGB scaled to [-1, 1]. BVLC Caffe's GoogLeNet was trained on BGR in
0-255 minus the per-channel mean (104, 117, 123 for B, G, R; `mean_value` in BVLC's
`models/bvlc_googlenet/train_val.prototxt`). Written with `keras.ops` only.
"""

from __future__ import annotations

import keras
from keras import ops

CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)


@keras.saving.register_keras_serializable(package="inception_keras")
class InputConversion(keras.layers.Layer):
    """RGB in [-1, 1] -> the input a converted model's original framework expects (`mode` `caffe`)."""

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode != "caffe":
            raise ValueError(f"InputConversion mode must be 'caffe', got {mode!r}")
        self.mode = mode

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1)
        return bgr * 127.5 + ops.convert_to_tensor([127.5 - mean for mean in CAFFE_MEAN_BGR], dtype=inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
