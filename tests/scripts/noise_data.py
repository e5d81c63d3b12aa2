"""Random-noise images as a DataSplits, for the distributed-training equality scripts.

Not the digits: upscaled 8x8 digits have flat patches, so max pooling meets exact ties, and which
tied position gets the gradient flips with float rounding (one device and two replicas sum in
different orders): after a few steps the weights differ by ~1e-6 with no bug at all. Noise has no
ties, so both runs must agree to float rounding.
"""

import numpy as np
import tensorflow as tf

from inception_keras.data import DataSplits


def noise_data(train_size: int, validation_size: int = 32, size: int = 32, classes: int = 10) -> DataSplits:
    rng = np.random.default_rng(7)

    def split(count):
        images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        return tf.data.Dataset.from_tensor_slices((images, rng.integers(0, classes, count)))

    return DataSplits("noise", split(train_size), split(validation_size), [str(i) for i in range(classes)],
                      train_size, validation_size, (size, size, 3))
