"""TF-slim checkpoints (`inception_v1.ckpt`, a V1 checkpoint, or a V2 prefix with `.index`/`.data-*`)
read with TensorFlow's own `tf.train.load_checkpoint`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from inception_keras.errors import error_text
from inception_keras.pretrained import WeightsError

_SUFFIX = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")


def checkpoint_prefix(path: str | Path) -> str:
    """The checkpoint prefix for a V1 file, a V2 `.index`/`.data-*` file or prefix, or a directory."""
    path = Path(path)
    if path.is_dir():
        import tensorflow as tf

        found = tf.train.latest_checkpoint(str(path))
        if not found:
            raise WeightsError(f"{path}: a directory without a TensorFlow checkpoint (no 'checkpoint' file)")
        return found
    return _SUFFIX.sub("", str(path))


def read_slim_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a TensorFlow checkpoint, by name (e.g. `InceptionV1/Conv2d_1a_7x7/weights`)."""
    import tensorflow as tf

    prefix = checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
        return {name: np.asarray(reader.get_tensor(name)) for name in names}
    except Exception as error:  # TensorFlow's reader raises OpError, ValueError, IndexError... for damaged files
        raise WeightsError(f"{path}: not a readable TensorFlow checkpoint: {error_text(error)}") from None
