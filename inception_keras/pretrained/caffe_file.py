"""Read the weights of a binary BVLC Caffe ``.caffemodel`` file with ``protobuf`` alone (no Caffe needed).

Schema: a minimal subset of BVLC/caffe ``src/caffe/proto/caffe.proto`` (same package ``caffe``, same field
numbers), built at run time from a ``FileDescriptorProto`` in a private descriptor pool; every other field of
the file is skipped as unknown. Messages and fields used:

* ``NetParameter``: ``name`` = 1, ``layers`` = 2 (deprecated V1 layers), ``layer`` = 100.
* ``LayerParameter``: ``name`` = 1, ``type`` = 2 (string), ``blobs`` = 7.
* ``V1LayerParameter``: ``name`` = 4, ``type`` = 5 (enum ``LayerType``, read as int32), ``blobs`` = 6.
* ``BlobProto``: ``num`` = 1, ``channels`` = 2, ``height`` = 3, ``width`` = 4, ``data`` = 5 (float),
  ``shape`` = 7, ``double_data`` = 8 (double).
* ``BlobShape``: ``dim`` = 1 (int64).

Blob shapes:

* ``shape.dim`` when ``shape`` is present (a legacy shape stored beside it must agree with it).
* Otherwise the legacy 4-D ``(num, channels, height, width)``, which Caffe fills with leading 1s for blobs of
  lower rank. The leading 1s are dropped down to the rank the layer type implies: ``Convolution`` and
  ``Deconvolution`` weights keep 4 dims, ``InnerProduct`` weights keep 2 (``(1, 1, out, in)`` reads as
  ``(out, in)``), the second blob (bias) of those three types keeps 1 (``(1, 1, 1, n)`` reads as ``(n,)``),
  and any other blob drops all leading 1s but keeps at least one dim. A dim other than 1 is never dropped.
* With neither, a scalar (shape ``()``).

Values come from ``double_data`` when it is non-empty (as Caffe's ``Blob::FromProto`` does), else from
``data``; either way they are returned as float32 (a double beyond the float32 range is refused). Layer names
and types must be UTF-8; a network name that is not is decoded with backslash escapes.

Bounds, checked before protobuf builds a message: a file of at most `MAX_BYTES`, whose wire format, walked
without building messages, holds at most `MAX_LAYERS` layer entries, `MAX_BLOBS` blobs, `MAX_BLOB_AXES` axes
in a blob's shape and `MAX_FIELDS` fields walked (a packed array or a skipped submessage counts once). Parsed,
an empty layer entry, 3 bytes of the file, costs several hundred bytes of memory.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from inception_keras.pretrained import WeightsError
from inception_keras.utils.files import mode_problem

MAX_BYTES = 1 << 28
"""256 MiB, as the torch reader's storages: 5x the largest GoogLeNet (13,378,280 values) in float32, 2.5x in
``double_data``, and below the 2 GiB protobuf (and Caffe's own reader) can parse."""
MAX_LAYERS = 10_000
"""Layer entries (``layer`` and V1 ``layers``) in a file; a GoogLeNet has a few hundred."""
MAX_BLOBS = 10_000
"""Blobs in all layers; a GoogLeNet has a few hundred."""
MAX_BLOB_AXES = 32
"""Axes of a blob's ``shape`` (Caffe's ``kMaxBlobAxes``)."""
MAX_FIELDS = 100_000
"""Fields walked in the net, its layers, blobs and shapes (a packed array or a skipped field counts once); a
GoogLeNet has a few thousand."""

V1_LAYER_TYPES = {
    0: "", 1: "Accuracy", 2: "BNLL", 3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout", 7: "EuclideanLoss",
    8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 11: "Im2col", 12: "ImageData", 13: "InfogainLoss",
    14: "InnerProduct", 15: "LRN", 16: "MultinomialLogisticLoss", 17: "Pooling", 18: "ReLU", 19: "Sigmoid",
    20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 23: "TanH", 24: "WindowData", 25: "Eltwise", 26: "Power",
    27: "SigmoidCrossEntropyLoss", 28: "HingeLoss", 29: "MemoryData", 30: "ArgMax", 31: "Threshold",
    32: "DummyData", 33: "Slice", 34: "MVN", 35: "AbsVal", 36: "Silence", 37: "ContrastiveLoss", 38: "Exp",
    39: "Deconvolution",
}
"""``V1LayerParameter.LayerType`` value -> layer type string, as Caffe's ``UpgradeV1LayerType`` maps it."""

_LEGACY_RANKS = {"Convolution": (4, 1), "Deconvolution": (4, 1), "InnerProduct": (2, 1)}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_REPEATED = frozenset({"dim", "data", "double_data", "blobs", "layers", "layer"})
_BLOBS_FIELD = {2: 6, 100: 7}
"""NetParameter's ``layers`` (V1) and ``layer`` field numbers -> the ``blobs`` field number of their message."""
_BLOB_SHAPE, _SHAPE_DIM = 7, 1
_LENGTH_DELIMITED = 2


@dataclass(frozen=True)
class CaffeModel:
    """The weights of a ``.caffemodel`` file.

    Attributes:
        name: ``NetParameter.name`` ("" when the file has none).
        layers: Layer name -> its blobs as float32 arrays, in file order; only layers that have blobs.
        types: Layer name -> layer type string, for the same layers; V1 enum types are mapped to their new names
            (``INNER_PRODUCT`` -> "InnerProduct"), an unknown V1 value N to "V1 type N".
    """

    name: str
    layers: dict[str, list[np.ndarray]]
    types: dict[str, str]


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Reads the weights of a binary Caffe model file.

    Args:
        path: A ``.caffemodel`` file (``NetParameter`` with ``layer`` or deprecated V1 ``layers``).

    Returns:
        Layer name -> that layer's blobs as float32 arrays with their N-d shapes (see the module docstring for
        legacy shapes), in file order; only layers that have blobs.

    Raises:
        WeightsError: The file is missing, not a regular file, empty, too large, truncated, not a Caffe model,
            has no layers with weights, or has a malformed or inconsistent layer or blob.
    """
    return load_caffemodel(path).layers


def load_caffemodel(path: str | os.PathLike) -> CaffeModel:
    """Reads a binary Caffe model file with its network name and layer types.

    Args:
        path: A ``.caffemodel`` file.

    Returns:
        The network name, the weights (as `read_caffemodel` returns them) and the type of each layer with weights.

    Raises:
        WeightsError: As `read_caffemodel`.
    """
    path = os.fspath(path)
    net = _parse(path, _read_bytes(path))
    if len(net.layer) and len(net.layers):
        raise WeightsError(f"{path}: has both 'layer' and deprecated V1 'layers' entries; Caffe refuses such a net")
    entries = [(layer.name, layer.type, layer.blobs) for layer in net.layer]
    entries += [(layer.name, V1_LAYER_TYPES.get(layer.type, f"V1 type {layer.type}"), layer.blobs)
                for layer in net.layers]
    layers, types = {}, {}
    for index, (name, layer_type, blobs) in enumerate(entries):
        if not blobs:
            continue
        name = _text(path, name, f"layer #{index} name")
        layer_type = _text(path, layer_type, f"layer #{index} type")
        if not name:
            raise WeightsError(f"{path}: layer #{index} ({layer_type or 'no type'}) has weights but no name")
        if name in layers:
            raise WeightsError(f"{path}: layer {name!r} appears twice with weights")
        layers[name] = [_blob_array(path, name, layer_type, i, blob) for i, blob in enumerate(blobs)]
        types[name] = layer_type
    if not layers:
        raise WeightsError(f"{path}: not a Caffe model: no layers with weights")
    name = net.name.decode("utf-8", "backslashreplace") if isinstance(net.name, bytes) else net.name
    return CaffeModel(name=name, layers=layers, types=types)


def _read_bytes(path: str) -> bytes:
    """Returns the bytes of a regular file of at most `MAX_BYTES`."""
    too_large = f"more than the {MAX_BYTES:,} a GoogLeNet .caffemodel may hold"
    try:
        info = os.stat(path)
        if mode_problem(info.st_mode):
            raise WeightsError(f"{path}: {mode_problem(info.st_mode)}")
        if info.st_size == 0:
            raise WeightsError(f"{path}: empty file, not a Caffe model")
        if info.st_size > MAX_BYTES:
            raise WeightsError(f"{path}: {info.st_size:,} bytes, {too_large}")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise WeightsError(f"{path}: cannot read: {err.strerror or err}") from err
    if not data:
        raise WeightsError(f"{path}: empty file, not a Caffe model")
    if len(data) > MAX_BYTES:
        raise WeightsError(f"{path}: over {MAX_BYTES:,} bytes, {too_large}")
    return data


def _parse(path: str, data: bytes):
    """Parses ``NetParameter`` from bytes once its counts are within bounds, turning every decode failure into a
    `WeightsError`."""
    from google.protobuf.message import DecodeError

    if data.startswith(_HDF5_MAGIC):
        raise WeightsError(f"{path}: an HDF5 file (.caffemodel.h5); only binary protobuf .caffemodel files are read")
    _check_counts(path, data)
    net = _messages()["NetParameter"]()
    try:
        net.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError, RuntimeError) as err:
        raise _not_a_model(path, data, " ".join(str(err).split()) or type(err).__name__) from err
    return net


def _not_a_model(path: str, data: bytes, detail: str) -> WeightsError:
    """The error for bytes that are not protobuf wire format, with a hint when they look like text."""
    hint = "; it looks like a text file (a .prototxt?), not a binary .caffemodel" if _looks_like_text(data) else ""
    return WeightsError(f"{path}: truncated or not a Caffe model (protobuf: {detail}){hint}")


def _check_counts(path: str, data: bytes) -> None:
    """Refuses more layer entries, blobs, shape axes or fields than the bounds allow, walking the wire format."""
    wire = _Wire(path, data)
    layers = blobs = 0
    for number, kind, start, end in wire.fields(0, len(data)):
        if kind != _LENGTH_DELIMITED or number not in _BLOBS_FIELD:
            continue
        layers += 1
        if layers > MAX_LAYERS:
            raise WeightsError(f"{path}: more than {MAX_LAYERS:,} layers (at byte {start:,}); a GoogLeNet has a few "
                               "hundred")
        in_layer = 0
        for field, field_kind, blob_start, blob_end in wire.fields(start, end):
            if field_kind != _LENGTH_DELIMITED or field != _BLOBS_FIELD[number]:
                continue
            blobs, in_layer = blobs + 1, in_layer + 1
            if blobs > MAX_BLOBS:
                raise WeightsError(f"{path}: more than {MAX_BLOBS:,} blobs (at byte {blob_start:,}); a GoogLeNet has "
                                   "a few hundred")
            if wire.shape_axes(blob_start, blob_end) > MAX_BLOB_AXES:
                raise WeightsError(f"{path}: layer #{layers - 1} blob {in_layer - 1}: a shape of more than "
                                   f"{MAX_BLOB_AXES} axes (Caffe's limit)")


class _Wire:
    """Protobuf wire bytes walked field by field without building messages, at most `MAX_FIELDS` fields.

    Malformed bytes are refused as protobuf refuses them: a varint longer than 10 bytes or past the end of its
    message, a length past the end, field number 0, wire type 6 or 7, an end-group tag that closes no group.
    """

    def __init__(self, path: str, data: bytes):
        self.path, self.data, self.fields_left = path, data, MAX_FIELDS

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """Yields (field number, wire type, value start, value end) for the fields of ``data[start:end]``;
        groups are skipped whole."""
        pos = start
        while pos < end:
            number, kind, value, pos = self._field(pos, end)
            if kind == 3:
                pos = self._skip_group(number, pos, end)
            elif kind == 4:
                raise _not_a_model(self.path, self.data, f"an end-group tag that closes no group at byte {value:,}")
            else:
                yield number, kind, value, pos

    def shape_axes(self, start: int, end: int) -> int:
        """The axes of a ``BlobProto``'s shape, counted up to `MAX_BLOB_AXES` + 1."""
        axes = 0
        for field, kind, shape_start, shape_end in self.fields(start, end):
            if field != _BLOB_SHAPE or kind != _LENGTH_DELIMITED:
                continue
            for dim, dim_kind, dim_start, dim_end in self.fields(shape_start, shape_end):
                if dim == _SHAPE_DIM and dim_kind == _LENGTH_DELIMITED:  # packed: a varint ends at each byte < 128
                    packed = itertools.islice(memoryview(self.data)[dim_start:dim_end], 10 * (MAX_BLOB_AXES + 1))
                    axes += sum(byte < 0x80 for byte in packed)
                elif dim == _SHAPE_DIM and dim_kind == 0:
                    axes += 1
        return axes

    def _field(self, pos: int, end: int) -> tuple[int, int, int, int]:
        """(number, wire type, value start, value end) of the field at ``pos``; a group's value is empty."""
        self.fields_left -= 1
        if self.fields_left < 0:
            raise WeightsError(f"{self.path}: more than {MAX_FIELDS:,} protobuf fields in its net, layers and "
                               "blobs; a GoogLeNet has a few thousand")
        tag, value = self._varint(pos, end)
        number, kind = tag >> 3, tag & 7
        if number == 0 or kind in (6, 7):
            raise _not_a_model(self.path, self.data, f"field number {number} of wire type {kind} at byte {pos:,}")
        if kind == 0:
            _, stop = self._varint(value, end)
        elif kind == _LENGTH_DELIMITED:
            length, value = self._varint(value, end)
            stop = value + length
        else:
            stop = value + {1: 8, 5: 4}.get(kind, 0)  # 64-bit, 32-bit; group tags hold no value
        if stop > end:
            raise _not_a_model(self.path, self.data, f"field {number} at byte {pos:,} runs past the end of its "
                                                     "message")
        return number, kind, value, stop

    def _skip_group(self, number: int, pos: int, end: int) -> int:
        """The position after the end-group tag that closes group ``number`` (and every group nested in it)."""
        groups = [number]
        while groups:
            if pos >= end:
                raise _not_a_model(self.path, self.data, f"group {groups[-1]} has no end-group tag")
            inner, kind, value, pos = self._field(pos, end)
            if kind == 3:
                groups.append(inner)
            elif kind == 4 and inner != groups.pop():
                raise _not_a_model(self.path, self.data, f"an end-group tag that closes no group at byte {value:,}")
        return pos

    def _varint(self, pos: int, end: int) -> tuple[int, int]:
        """(value, position after it) of the varint at ``pos``."""
        value, start = 0, pos
        for shift in range(0, 70, 7):
            if pos >= end:
                break
            byte = self.data[pos]
            value, pos = value | (byte & 0x7F) << shift, pos + 1
            if byte < 0x80:
                return value, pos
        raise _not_a_model(self.path, self.data, f"the varint at byte {start:,} is cut short or over 10 bytes")


def _looks_like_text(data: bytes) -> bool:
    """Whether the first kilobyte is printable ASCII, as a prototxt would be."""
    head = data[:1024]
    return all(32 <= b < 127 or b in b"\t\n\r" for b in head)


def _text(path: str, value: str | bytes, what: str) -> str:
    """Returns a string field, which protobuf gives as bytes when it is not valid UTF-8."""
    if isinstance(value, bytes):
        raise WeightsError(f"{path}: {what} is not valid UTF-8: {value[:40]!r}")
    return value


def _blob_array(path: str, layer: str, layer_type: str, index: int, blob) -> np.ndarray:
    """Returns one blob as a float32 array of its shape, checking its element count."""
    where = f"{path}: layer {layer!r} blob {index}"
    shape = _blob_shape(where, layer_type, index, blob)
    values = np.array(blob.double_data, dtype=np.float64) if len(blob.double_data) else \
        np.array(blob.data, dtype=np.float32)
    if values.size != math.prod(shape):
        raise WeightsError(f"{where}: {values.size} values for shape {shape} ({math.prod(shape)} expected)")
    with np.errstate(over="ignore"):
        array = values.astype(np.float32, copy=False)
    if np.any(np.isinf(array) & np.isfinite(values)):
        raise WeightsError(f"{where}: double_data values beyond the float32 range")
    return array.reshape(shape)


def _blob_shape(where: str, layer_type: str, index: int, blob) -> tuple[int, ...]:
    """Returns a blob's shape from ``shape.dim`` or, failing that, the legacy 4-D fields."""
    legacy_fields = ("num", "channels", "height", "width")
    has_legacy = any(blob.HasField(f) for f in legacy_fields)
    legacy = tuple(getattr(blob, f) for f in legacy_fields)
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
        if has_legacy and (len(shape) > 4 or (1,) * (4 - len(shape)) + shape != legacy):
            raise WeightsError(f"{where}: shape {shape} disagrees with legacy (num, channels, height, width) {legacy}")
    elif has_legacy:
        shape = _squeeze_legacy(legacy, _legacy_rank(layer_type, index))
    else:
        shape = ()
    if any(d < 0 for d in shape):
        raise WeightsError(f"{where}: negative dimension in shape {shape}")
    return shape


def _legacy_rank(layer_type: str, index: int) -> int:
    """The rank a legacy 4-D blob of this layer type and blob index has in truth (1 when unknown)."""
    ranks = _LEGACY_RANKS.get(layer_type, ())
    return ranks[index] if index < len(ranks) else 1


def _squeeze_legacy(legacy: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """Drops leading 1s of a legacy 4-D shape, keeping at least ``rank`` dims."""
    shape = list(legacy)
    while len(shape) > rank and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


@functools.cache
def _messages() -> dict[str, type]:
    """Builds the minimal Caffe message classes once, in a private descriptor pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FieldDescriptorProto
    file_proto = descriptor_pb2.FileDescriptorProto(name="inception_keras/caffe_minimal.proto", package="caffe",
                                                    syntax="proto2")

    def message(name, *fields):
        msg = file_proto.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            label = fdp.LABEL_REPEATED if field_name in _REPEATED else fdp.LABEL_OPTIONAL
            field = msg.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = f".caffe.{type_name}"
            if kind in (fdp.TYPE_FLOAT, fdp.TYPE_DOUBLE, fdp.TYPE_INT64) and label == fdp.LABEL_REPEATED:
                field.options.packed = True

    message("BlobShape", ("dim", 1, fdp.TYPE_INT64, None))
    message("BlobProto", ("shape", 7, fdp.TYPE_MESSAGE, "BlobShape"), ("data", 5, fdp.TYPE_FLOAT, None),
            ("double_data", 8, fdp.TYPE_DOUBLE, None), ("num", 1, fdp.TYPE_INT32, None),
            ("channels", 2, fdp.TYPE_INT32, None), ("height", 3, fdp.TYPE_INT32, None),
            ("width", 4, fdp.TYPE_INT32, None))
    message("LayerParameter", ("name", 1, fdp.TYPE_STRING, None), ("type", 2, fdp.TYPE_STRING, None),
            ("blobs", 7, fdp.TYPE_MESSAGE, "BlobProto"))
    message("V1LayerParameter", ("name", 4, fdp.TYPE_STRING, None), ("type", 5, fdp.TYPE_INT32, None),
            ("blobs", 6, fdp.TYPE_MESSAGE, "BlobProto"))
    message("NetParameter", ("name", 1, fdp.TYPE_STRING, None), ("layers", 2, fdp.TYPE_MESSAGE, "V1LayerParameter"),
            ("layer", 100, fdp.TYPE_MESSAGE, "LayerParameter"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{m.name}"))
            for m in file_proto.message_type}

