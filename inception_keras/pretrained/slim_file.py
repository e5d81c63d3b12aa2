"""TF-slim checkpoints (`inception_v1.ckpt`, a V1 checkpoint, or a V2 prefix with `.index`/`.data-*`)
read with TensorFlow's own `tf.train.load_checkpoint`, once the files are known to be regular files whose
table footer points inside them (TensorFlow would otherwise allocate whatever a damaged footer claims)."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import numpy as np

from inception_keras.pretrained import WeightsError
from inception_keras.utils.files import file_problem
from inception_keras.utils.errors import UserError, error_text

_SUFFIX = re.compile(r"\.(index|meta|data-\d{5}-of-\d{5})$")
_FOOTER_BYTES = 48  # two block handles (varint offset and size), padding, then the 8-byte table magic
_BLOCK_TRAILER_BYTES = 5  # compression type and CRC after each block


def checkpoint_prefix(path: str | Path) -> str:
    """The checkpoint prefix for a V1 file, a V2 `.index`/`.data-*` file or prefix, or a directory."""
    path = Path(path)
    if path.is_dir():
        from inception_keras.serialize import read_text_file

        state = path / "checkpoint"
        if not state.exists():
            raise WeightsError(f"{path}: a directory without a TensorFlow checkpoint (no 'checkpoint' file)")
        try:
            read_text_file(state, "checkpoint state file")
            import tensorflow as tf

            found = tf.train.latest_checkpoint(str(path))
        except UserError as error:
            raise WeightsError(str(error)) from None
        except Exception as error:  # text_format.ParseError, OpError for a damaged state file
            raise WeightsError(f"{state}: not a readable checkpoint state file: {error_text(error)}") from None
        if not found:
            raise WeightsError(f"{path}: its 'checkpoint' file names no checkpoint that exists")
        return found
    return _SUFFIX.sub("", str(path))


def _check_files(prefix: str) -> None:
    """Refuse checkpoint files that are not regular files, and a table whose footer points outside it."""
    table = f"{prefix}.index" if os.path.exists(f"{prefix}.index") else prefix
    for name in [table, *glob.glob(glob.escape(prefix) + ".data-*")]:
        if file_problem(name):
            raise WeightsError(f"{name}: {file_problem(name)}")
    if not os.path.isfile(table):
        return  # TensorFlow names what is missing
    size = os.path.getsize(table)
    with open(table, "rb") as file:
        file.seek(max(size - _FOOTER_BYTES, 0))
        footer = file.read(_FOOTER_BYTES)
    position, handles = 0, []
    for _ in range(4):
        value, shift = 0, 0
        while position < len(footer) and shift < 70:
            byte = footer[position]
            value, shift, position = value | (byte & 0x7F) << shift, shift + 7, position + 1
            if byte < 0x80:
                break
        handles.append(value)
    for offset, length in (handles[0:2], handles[2:4]):
        if size < _FOOTER_BYTES or offset + length + _BLOCK_TRAILER_BYTES > size - _FOOTER_BYTES:
            raise WeightsError(f"{table}: not a readable TensorFlow checkpoint: its footer names a block of "
                               f"{length:,} bytes at {offset:,}, outside the file's {size:,} bytes")


def read_slim_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a TensorFlow checkpoint, by name (e.g. `InceptionV1/Conv2d_1a_7x7/weights`)."""
    prefix = checkpoint_prefix(path)
    _check_files(prefix)
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
        return {name: np.asarray(reader.get_tensor(name)) for name in names}
    except Exception as error:  # TensorFlow's reader raises OpError, ValueError, IndexError... for damaged files
        detail = error_text(error)
        if isinstance(error, MemoryError) or "bad_alloc" in detail:
            detail = "a block in it claims more memory than there is (the file is damaged)"
        raise WeightsError(f"{path}: not a readable TensorFlow checkpoint: {detail}") from None
