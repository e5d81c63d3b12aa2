"""Bounds on a `.keras` file, checked from its zip directory and its weights file's HDF5 metadata before Keras reads
any of it (Keras 3.15 refuses only members that inflate past 4 GiB at over 100x).

A `.keras` file is a zip of `config.json` (the network: ~0.5-1 KB a layer, 118 KB for googlenet with its aux
heads), `metadata.json` (64 bytes) and `model.weights.h5` (the weights, as many bytes as the model's variables
take), stored uncompressed by Keras, plus any assets. Refused, each with one line:

- a file that is empty, not a zip, or a truncated or damaged zip, or a zip without `config.json`;
- more than MAX_ENTRIES entries;
- an entry that inflates to more than MAX_EXPANSION times its stored bytes (above EXPANSION_FLOOR bytes: small
  entries compress as they like);
- a `config.json` over MAX_CONFIG_BYTES (room for ~10,000 layers), not UTF-8 JSON, or nested deeper than
  MAX_NESTING (Keras' own configs nest 11 deep); a `metadata.json` over MAX_METADATA_BYTES;
- a weights file whose HDF5 objects number more than MAX_H5_OBJECTS, or whose datasets declare more bytes
  than the file holds (DATASET_SLACK times, plus H5_FLOOR): what a model of that size can need is what it stores,
  so a dataset declared huge and stored as nothing (a fill value, a compressed run of zeros) is refused before a
  byte of it is allocated.
"""

from __future__ import annotations

import json
import os
import zipfile

from inception_keras.utils.errors import UserError, error_text
from inception_keras.utils.files import mode_problem

CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE = "config.json", "metadata.json", "model.weights.h5"
MAX_ENTRIES = 1000
MAX_EXPANSION = 20
EXPANSION_FLOOR = 1 << 20
MAX_CONFIG_BYTES = 8 << 20
MAX_METADATA_BYTES = 64 << 10
MAX_NESTING = 64
MAX_H5_OBJECTS = 100_000
DATASET_SLACK = 2
H5_FLOOR = 1 << 20


class KerasFileError(UserError, ValueError):
    """A file that is not a readable `.keras` model, or one past the bounds above; the message names it."""


def check_keras_file(path: str | os.PathLike) -> None:
    """Refuse `path` (a KerasFileError naming it and what is wrong) unless it is a `.keras` zip within the bounds
    of this module, checked without inflating more than its two small JSON members."""
    name = os.fspath(path)
    try:
        info = os.stat(name)
    except OSError as error:
        raise KerasFileError(f"{name}: cannot read this .keras file: {error.strerror or error}") from None
    if mode_problem(info.st_mode):
        raise KerasFileError(f"{name}: cannot read this .keras file: {mode_problem(info.st_mode)}")
    if info.st_size == 0:
        raise KerasFileError(f"{name}: not a readable .keras file: the file is empty")
    try:
        with zipfile.ZipFile(name) as archive:
            _check_archive(name, archive)
    except zipfile.BadZipFile as error:
        raise KerasFileError(f"{name}: not a readable .keras file: a truncated or damaged zip ({error})") from None
    except OSError as error:
        raise KerasFileError(f"{name}: cannot read this .keras file: {error.strerror or error}") from None


def _check_archive(name: str, archive: zipfile.ZipFile) -> None:
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise KerasFileError(f"{name}: {len(entries):,} zip entries, more than the {MAX_ENTRIES:,} a .keras model "
                             f"may hold")
    members = {entry.filename: entry for entry in entries}
    if CONFIG_FILE not in members:
        raise KerasFileError(f"{name}: not a .keras model: a zip without {CONFIG_FILE}")
    for entry in entries:
        if entry.file_size > EXPANSION_FLOOR and entry.file_size > MAX_EXPANSION * max(entry.compress_size, 1):
            raise KerasFileError(f"{name}: entry {entry.filename!r:.80} inflates to {entry.file_size:,} bytes from "
                                 f"{entry.compress_size:,} stored (over {MAX_EXPANSION}x): refused as a "
                                 f"decompression bomb")
    for member, limit in ((CONFIG_FILE, MAX_CONFIG_BYTES), (METADATA_FILE, MAX_METADATA_BYTES)):
        if member in members and members[member].file_size > limit:
            raise KerasFileError(f"{name}: its {member} holds {members[member].file_size:,} bytes, more than the "
                                 f"{limit:,} a model's may take")
    _check_config(name, archive.read(CONFIG_FILE)[:MAX_CONFIG_BYTES + 1])
    if WEIGHTS_FILE in members:
        with archive.open(WEIGHTS_FILE) as weights:
            _check_weights(name, weights, members[WEIGHTS_FILE].file_size)


def nesting(value) -> int:
    """How deeply lists and dicts nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _check_config(name: str, data: bytes) -> None:
    if len(data) > MAX_CONFIG_BYTES:
        raise KerasFileError(f"{name}: its {CONFIG_FILE} inflates past {MAX_CONFIG_BYTES:,} bytes")
    try:
        config = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise KerasFileError(f"{name}: its {CONFIG_FILE} nests deeper than {MAX_NESTING} levels") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise KerasFileError(f"{name}: its {CONFIG_FILE} is not JSON ({error_text(error, 100)})") from None
    if not isinstance(config, dict):
        raise KerasFileError(f"{name}: its {CONFIG_FILE} holds a JSON {type(config).__name__}, not a model's config")
    if nesting(config) > MAX_NESTING:
        raise KerasFileError(f"{name}: its {CONFIG_FILE} nests {nesting(config)} levels deep, more than "
                             f"{MAX_NESTING}")


def _check_weights(name: str, handle, stored: int) -> None:
    """The HDF5 objects of the weights file, counted, and its datasets' declared bytes, against what it stores."""
    import h5py
    import numpy as np

    declared, objects = 0, 0

    class TooMany(Exception):
        pass

    def visit(_, item):
        nonlocal declared, objects
        objects += 1
        if objects > MAX_H5_OBJECTS:
            raise TooMany
        if isinstance(item, h5py.Dataset):
            declared += int(np.prod(item.shape, dtype=object) or 0) * item.dtype.itemsize
        return None

    try:
        with h5py.File(handle, "r") as weights:
            weights.visititems(visit)
    except TooMany:
        raise KerasFileError(f"{name}: its {WEIGHTS_FILE} holds more than {MAX_H5_OBJECTS:,} HDF5 objects") from None
    except Exception as error:  # h5py raises OSError, KeyError, ValueError for damaged files
        raise KerasFileError(f"{name}: its {WEIGHTS_FILE} is not a readable HDF5 file "
                             f"({error_text(error, 120)})") from None
    limit = DATASET_SLACK * stored + H5_FLOOR
    if declared > limit:
        raise KerasFileError(f"{name}: the datasets of its {WEIGHTS_FILE} declare {declared:,} bytes, but it "
                             f"stores {stored:,}: refused before reading (at most {DATASET_SLACK}x its size plus "
                             f"{H5_FLOOR:,} bytes)")
