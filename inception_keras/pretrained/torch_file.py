"""Read a PyTorch ``.pth`` state dict into numpy arrays, without torch and without executing anything from the file.

Two layouts written by ``torch.save`` are understood; the layouts follow torch 2.x's own reader and writer:

* the zip format (torch >= 1.6, the default): ``torch/serialization.py`` ``_save`` and ``_load``. One folder
  inside the archive holds ``data.pkl`` (the object pickle), ``data/<key>`` (one record of raw bytes per storage)
  and ``byteorder`` (``little`` when absent). Persistent ids are ``('storage', storage_type, key, location, numel)``.
* the legacy stream format (torch 0.4 to 1.5, or ``_use_new_zipfile_serialization=False``): ``_legacy_save`` and
  ``_legacy_load``. Pickles of the magic number, the protocol version and a sys-info dict, then the object pickle
  (persistent ids ``('storage', storage_type, root_key, location, numel, view_metadata)``), then a pickle of the
  storage keys, then per key an 8-byte little-endian element count and the little-endian bytes
  (``THPStorage_writeFileRaw`` in ``torch/csrc/serialization.cpp``).

Tensors are rebuilt as in ``torch/_utils.py`` (``_rebuild_tensor_v2``, ``_rebuild_parameter``). Unpickling goes
through an allow-list in the spirit of ``torch/_weights_only_unpickler.py`` but smaller, and every allowed global
resolves to a stand-in defined here: torch is never imported and no callable named by the file is ever run.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import numpy as np

from inception_keras.pretrained import WeightsError
from inception_keras.utils.files import mode_problem

__all__ = ["read_torch_state_dict"]

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_WRAPPER_KEYS = ("state_dict", "model")
_MAX_NDIM = 64
MAX_PICKLE_BYTES = 1 << 20
"""A pickle (``data.pkl``, or the object pickle of a legacy file) may be 1 MiB: 20x a GoogLeNet state dict's."""
MAX_PICKLE_OBJECTS = 100_000
"""Objects a pickle may build (GoogLeNet's state dict builds about 9,000), so 1 MiB cannot become 200 MB."""
MAX_NESTING = 32
"""Levels a pickle may nest (a training checkpoint needs about 8); deeper input could overflow the C stack."""
MAX_STORAGE_BYTES = 1 << 28
"""Bytes of the storages a state dict's tensors view, 256 MiB in all: 5x the largest GoogLeNet in float32."""
MAX_EXPANDED_BYTES = 1 << 24
"""Bytes the tensors may view beyond their storages' (stride 0, as ``expand`` writes, or one storage under several
names), 16 MiB in all: twice GoogLeNet's largest tensor (2,097,152 float32 values)."""
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


class _Malformed(Exception):
    """The file breaks the layout torch writes; the message says where, without the file name."""


class _Sealed:
    """Refuses pickle's BUILD, so a file cannot alter a stand-in (frozen dataclasses also refuse setattr)."""

    def __setstate__(self, state: Any) -> None:
        raise _Malformed(f"the pickle tries to set the state of a {type(self).__name__.lstrip('_')}")


class _StandIn(_Sealed):
    """An allow-listed callable as the pickle sees it: callable, but with no attributes a BUILD could change."""

    def __init__(self, function: Callable[..., Any]):
        object.__setattr__(self, "_function", function)

    def __setattr__(self, name: str, value: Any) -> None:
        raise _Malformed(f"the pickle tries to set the attribute {name!r:.40} of a tensor rebuild function")

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """Stand-in for a ``torch.<Type>Storage`` class: the element type of the bytes it names."""

    global_name: str
    dtype: np.dtype
    bfloat16: bool = False


def _storage_types() -> dict[str, _StorageType]:
    codes = {"DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "LongStorage": "i8",
             "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
             "BoolStorage": "?"}
    types = {f"torch.{name}": _StorageType(f"torch.{name}", np.dtype(code)) for name, code in codes.items()}
    types["torch.BFloat16Storage"] = _StorageType("torch.BFloat16Storage", np.dtype("u2"), bfloat16=True)
    for name in ("torch.storage.UntypedStorage", "torch.UntypedStorage"):
        types[name] = _StorageType(name, np.dtype("u1"))
    return types


_STORAGE_TYPES = _storage_types()


@dataclass
class _Storage(_Sealed):
    """One storage of the file: its element type, element count and, once read, its raw bytes as a 1-D array."""

    key: str
    kind: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _StorageSlice(_Sealed):
    """What a persistent id resolves to: ``numel`` elements of a storage from element ``start`` on."""

    root: _Storage
    start: int
    numel: int


@dataclass(frozen=True)
class _TensorRef(_Sealed):
    """A tensor as the pickle describes it; its values are taken from the storage once every storage is read."""

    storage: _StorageSlice
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    negate: bool = False


def _check_ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > _MAX_NDIM:
        raise _Malformed(f"tensor {what} is {type(value).__name__} {value!r:.60}, not a tuple of integers")
    if not all(type(item) is int and item >= 0 for item in value):
        raise _Malformed(f"tensor {what} {value!r:.60} holds something other than non-negative integers")
    return value


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor``.

    Args:
        storage: What the persistent id resolved to.
        storage_offset: Element offset of the tensor in the storage.
        size: Shape of the tensor.
        stride: Element strides of the tensor.

    Returns:
        The tensor's description, checked for types only; bounds are checked when it is read.
    """
    if not isinstance(storage, _StorageSlice):
        raise _Malformed(f"a tensor is rebuilt from {type(storage).__name__}, not from a storage")
    if type(storage_offset) is not int or storage_offset < 0:
        raise _Malformed(f"tensor storage offset is {storage_offset!r:.60}")
    size, stride = _check_ints(size, "size"), _check_ints(stride, "stride")
    if len(size) != len(stride):
        raise _Malformed(f"tensor size {size} and stride {stride} differ in length")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``; the negative bit in ``metadata`` is honoured.

    Args:
        storage: What the persistent id resolved to.
        storage_offset: Element offset of the tensor in the storage.
        size: Shape of the tensor.
        stride: Element strides of the tensor.
        requires_grad: Ignored.
        backward_hooks: Ignored.
        metadata: None or torch's tensor metadata dict (``{"neg": True}``, ``{"conj": ...}``).

    Returns:
        The tensor's description.
    """
    tensor = _rebuild_tensor(storage, storage_offset, size, stride)
    if not metadata:
        return tensor
    if not isinstance(metadata, dict) or set(metadata) - {"neg", "conj"} or metadata.get("conj"):
        raise _Malformed(f"tensor metadata {metadata!r:.80} is not supported")
    return _TensorRef(tensor.storage, tensor.offset, tensor.size, tensor.stride, negate=bool(metadata.get("neg")))


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter`` (and ``_with_state``): a parameter is its tensor.

    Args:
        data: The parameter's tensor.
        requires_grad: Ignored.
        backward_hooks: Ignored.
        state: Ignored (extra Python attributes of the parameter).

    Returns:
        ``data``.
    """
    if not isinstance(data, _TensorRef):
        raise _Malformed(f"a parameter wraps {type(data).__name__}, not a tensor")
    return data


_ALLOWED_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": OrderedDict,
    "torch._utils._rebuild_tensor": _StandIn(_rebuild_tensor),
    "torch._utils._rebuild_tensor_v2": _StandIn(_rebuild_tensor_v2),
    "torch._utils._rebuild_parameter": _StandIn(_rebuild_parameter),
    "torch._utils._rebuild_parameter_with_state": _StandIn(_rebuild_parameter),
    **_STORAGE_TYPES,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed globals, to stand-ins, and only 'storage' persistent ids."""

    def __init__(self, file: BinaryIO, source: str, load_storage: Callable[[tuple], _StorageSlice] | None):
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
        qualified = f"{module}.{name}"
        if qualified in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[qualified]
        if module == "torch" and name.endswith("Storage"):
            raise WeightsError(f"cannot read {self._source}: it holds tensors of type {qualified}, "
                               "which this reader does not support (only real float, integer and bool dtypes)")
        raise WeightsError(f"refusing to load {self._source}: it references the global {qualified}, which a "
                           "state dict never needs; nothing in the file was executed")

    def persistent_load(self, pid: Any) -> Any:
        kind = _ascii(pid[0]) if isinstance(pid, tuple) and pid else None
        if kind != "storage" or self._load_storage is None:
            raise WeightsError(f"refusing to load {self._source}: it holds a persistent id of kind {kind!r:.40} "
                               "where only tensor storages are expected; nothing in the file was executed")
        return self._load_storage(pid)


def _ascii(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _unpickle(file: BinaryIO, source: str, load_storage: Callable[[tuple], _StorageSlice] | None = None) -> Any:
    """Unpickle the pickle at the file's position, after `_scan_pickle` has bounded it; the file is left after it."""
    start = file.tell()
    data = file.read(MAX_PICKLE_BYTES + 1)
    end = _scan_pickle(data)
    file.seek(start + end)
    return _RestrictedUnpickler(io.BytesIO(data[:end]), source, load_storage).load()


def _scan_pickle(data: bytes) -> int:
    """Walk a pickle's opcodes without building anything, tracking the nesting depth of each stack item.

    Args:
        data: The bytes from the pickle's start on (more may follow its STOP).

    Returns:
        The pickle's length, through its STOP opcode.

    Raises:
        _Malformed: It is longer than `MAX_PICKLE_BYTES`, builds more than `MAX_PICKLE_OBJECTS` objects, nests
            deeper than `MAX_NESTING` levels, stores to the memo out of order, or breaks the opcode grammar.
    """
    stack: list[int | None] = []  # the nesting depth of each item; None for a mark
    memo: dict[int, int | None] = {}
    objects = 0
    try:
        for opcode, arg, pos in pickletools.genops(data[:MAX_PICKLE_BYTES]):
            if opcode.name == "STOP":
                return pos + 1
            objects += _stack_effect(opcode, arg, stack, memo)
            if objects > MAX_PICKLE_OBJECTS:
                raise _Malformed(f"the pickle builds more than {MAX_PICKLE_OBJECTS:,} objects")
            if stack and stack[-1] is not None and stack[-1] > MAX_NESTING:
                raise _Malformed(f"the pickle nests deeper than {MAX_NESTING} levels (at byte {pos})")
    except (ValueError, IndexError, KeyError) as error:
        if len(data) > MAX_PICKLE_BYTES:
            raise _Malformed(f"the pickle is over {MAX_PICKLE_BYTES:,} bytes, more than a state dict needs") from None
        raise _Malformed(f"malformed pickle ({_one_line(error)})") from None
    raise _Malformed("malformed pickle (it ends without a STOP opcode)")


def _stack_effect(opcode: pickletools.OpcodeInfo, arg: Any, stack: list, memo: dict) -> bool:
    """Apply one opcode to the simulated stack of nesting depths.

    Returns:
        Whether the opcode built a new object (not a memo access, a mark, a duplicate, a pop, or a change to an
        existing container).
    """
    name = opcode.name
    if name in _MEMO_PUTS:
        index = len(memo) if name == "MEMOIZE" else arg
        if not stack or stack[-1] is None or index > len(memo):
            raise ValueError(f"{name} {index} stores to the memo out of order")
        memo[index] = stack[-1]
        return False
    if name in _MEMO_GETS or name in ("DUP", "MARK"):
        stack.append(memo[arg] if name in _MEMO_GETS else stack[-1] if name == "DUP" else None)
        return False
    popped = _pop_operands(opcode, stack)
    if name in _MUTATORS:
        stack.append(max([popped[0], *(depth + 1 for depth in popped[1:])]))
        return False
    if opcode.stack_after:
        stack.append(1 + max(popped, default=-1))
    return bool(opcode.stack_after)


def _pop_operands(opcode: pickletools.OpcodeInfo, stack: list) -> list[int]:
    """Pop an opcode's operands (those below a mark it consumes first, then the items above the mark)."""
    before = opcode.stack_before
    above: list[int] = []
    count = len(before)
    if pickletools.markobject in before or (opcode.name == "POP" and stack and stack[-1] is None):
        mark = len(stack) - 1 - stack[::-1].index(None)
        above, stack[mark:] = stack[mark + 1:], []
        count = before.index(pickletools.markobject) if pickletools.markobject in before else 0
    below = stack[len(stack) - count:] if count else []
    if len(below) != count or None in below:
        raise ValueError(f"{opcode.name} finds too few items on the stack")
    del stack[len(stack) - count:]
    return below + above


class _StorageTable:
    """The storages of one file by key, created as persistent ids name them."""

    def __init__(self) -> None:
        self.storages: dict[str, _Storage] = {}

    def resolve(self, key: Any, kind: Any, numel: Any) -> _Storage:
        """The storage under ``key``, created on first sight.

        Args:
            key: The storage key from the persistent id.
            kind: The ``_StorageType`` the persistent id names.
            numel: The storage's element count.

        Returns:
            The storage.
        """
        key = _ascii(key)
        if not isinstance(key, str) or not isinstance(kind, _StorageType) or type(numel) is not int or numel < 0:
            raise _Malformed(f"malformed storage reference (key {key!r:.40}, type {kind!r:.60}, numel {numel!r:.20})")
        storage = self.storages.setdefault(key, _Storage(key, kind, numel))
        if storage.kind != kind or storage.numel != numel:
            raise _Malformed(f"storage {key!r} is referenced as {kind.global_name} of {numel} elements and as "
                             f"{storage.kind.global_name} of {storage.numel}")
        return storage


def _bytes_to_array(raw: bytes, kind: _StorageType, byteorder: str) -> np.ndarray:
    return np.frombuffer(raw, dtype=kind.dtype.newbyteorder("<" if byteorder == "little" else ">"))


def _archive_prefix(names: list[str], source: str) -> str:
    if not names:
        raise WeightsError(f"cannot read {source}: it is an empty zip archive, not a torch.save file")
    prefix = names[0].split("/", 1)[0] + "/" if "/" in names[0] else ""
    if prefix + "constants.pkl" in names:
        raise WeightsError(f"cannot read {source}: it is a TorchScript archive (torch.jit.save); save "
                           "model.state_dict() with torch.save instead")
    if prefix + "data.pkl" not in names:
        raise WeightsError(f"cannot read {source}: it is a zip archive without {prefix}data.pkl, so not a "
                           "torch.save file")
    return prefix


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """The bytes of one zip record, refused before reading when compressed other than torch can or over `limit`."""
    if info.compress_type not in _ZIP_METHODS:
        method = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}.get(info.compress_type, info.compress_type)
        raise _Malformed(f"record {info.filename} is compressed with {method}, which torch never writes or reads")
    if info.file_size > limit:
        raise _Malformed(f"record {info.filename} holds {info.file_size:,} bytes, more than the {limit:,} it may")
    with archive.open(info) as member:
        raw = member.read(info.file_size)  # a read of its declared size inflates no more than that
    if len(raw) != info.file_size:
        raise _Malformed(f"record {info.filename} ends after {len(raw)} of its {info.file_size} bytes")
    return raw


def _read_zip(source: str) -> OrderedDict[str, np.ndarray]:
    """The tensors of a zip-format file: ``data.pkl`` unpickled, then the storage records its tensors view."""
    table = _StorageTable()
    with zipfile.ZipFile(source) as archive:
        names = archive.namelist()
        prefix = _archive_prefix(names, source)
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = _read_member(archive, archive.getinfo(prefix + "byteorder"), 16).decode("ascii")
        if byteorder not in ("little", "big"):
            raise WeightsError(f"cannot read {source}: its byteorder record says {byteorder!r:.20}")

        def load_storage(pid: tuple) -> _StorageSlice:
            if len(pid) != 5:
                raise _Malformed(f"storage persistent id has {len(pid)} fields, the zip format writes 5")
            _, kind, key, _location, numel = pid
            return _StorageSlice(table.resolve(key, kind, numel), 0, numel)

        pickled = _read_member(archive, archive.getinfo(prefix + "data.pkl"), MAX_PICKLE_BYTES)
        tensors = _tensor_refs(_unpickle(io.BytesIO(pickled), source, load_storage), source)
        for storage in _storages_to_read(tensors):
            storage.data = _zip_storage(archive, prefix, storage, byteorder)
    return _materialise_all(tensors)


def _zip_storage(archive: zipfile.ZipFile, prefix: str, storage: _Storage, byteorder: str) -> np.ndarray:
    name = f"{prefix}data/{storage.key}"
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _Malformed(f"storage record {name} is missing") from None
    expected = storage.numel * storage.kind.dtype.itemsize
    if info.file_size != expected:
        raise _Malformed(f"storage record {name} holds {info.file_size} bytes where its {storage.numel} elements "
                         f"of {storage.kind.global_name} need {expected}")
    return _bytes_to_array(_read_member(archive, info, expected), storage.kind, byteorder)


def _read_legacy(source: str) -> OrderedDict[str, np.ndarray]:
    """The tensors of a legacy stream-format file: the object pickle, then the storages that follow it."""
    table = _StorageTable()
    views: dict[str, _StorageSlice] = {}

    def load_storage(pid: tuple) -> _StorageSlice:
        if len(pid) != 6:
            raise _Malformed(f"storage persistent id has {len(pid)} fields, the legacy format writes 6")
        _, kind, key, _location, numel, view_metadata = pid
        storage = table.resolve(key, kind, numel)
        if view_metadata is None:
            return _StorageSlice(storage, 0, storage.numel)
        return _legacy_view(views, storage, view_metadata)

    with open(source, "rb") as file:
        _check_legacy_header(file, source)
        tensors = _tensor_refs(_unpickle(file, source, load_storage), source)
        keys = _unpickle(file, source)
        _read_legacy_storages(file, keys, table.storages, _storages_to_read(tensors))
    return _materialise_all(tensors)


def _check_legacy_header(file: BinaryIO, source: str) -> None:
    """Consume the magic-number, protocol-version and sys-info pickles, checking the first two."""
    magic = _unpickle(file, source)
    if magic != _LEGACY_MAGIC_NUMBER:
        raise WeightsError(f"cannot read {source}: it is a pickle but not a torch.save file (its first object is "
                           f"{type(magic).__name__}, not torch's magic number)")
    version = _unpickle(file, source)
    if version != _LEGACY_PROTOCOL_VERSION:
        raise WeightsError(f"cannot read {source}: legacy torch protocol version {version!r:.20} is not "
                           f"{_LEGACY_PROTOCOL_VERSION}")
    _unpickle(file, source)


def _legacy_view(views: dict[str, _StorageSlice], root: _Storage, view_metadata: Any) -> _StorageSlice:
    """The storage view ``(view_key, offset, numel)`` of a legacy persistent id, made once per key."""
    if not isinstance(view_metadata, tuple) or len(view_metadata) != 3:
        raise _Malformed(f"storage view metadata {view_metadata!r:.60} is not (key, offset, size)")
    view_key, start, numel = _ascii(view_metadata[0]), view_metadata[1], view_metadata[2]
    if type(start) is not int or type(numel) is not int or start < 0 or numel < 0 or start + numel > root.numel:
        raise _Malformed(f"storage view {view_key!r:.40} ({start!r:.20}, {numel!r:.20}) lies outside storage "
                         f"{root.key!r} of {root.numel} elements")
    return views.setdefault(view_key, _StorageSlice(root, start, numel))


def _read_legacy_storages(file: BinaryIO, keys: Any, storages: dict[str, _Storage], wanted: list[_Storage]) -> None:
    """Fill each wanted storage from its element count and little-endian bytes, skipping the others, in list order."""
    if not isinstance(keys, list):
        raise _Malformed(f"the storage key list is {type(keys).__name__}, not a list")
    wanted_keys = {storage.key for storage in wanted}
    for key in keys:
        storage = storages.get(_ascii(key))
        if storage is None:
            raise _Malformed(f"storage {key!r:.40} is listed but no tensor uses it")
        (numel,) = struct.unpack("<q", _read_exactly(file, 8, f"storage {storage.key!r} header"))
        if numel != storage.numel:
            raise _Malformed(f"storage {storage.key!r} holds {numel} elements where its tensors expect "
                             f"{storage.numel}")
        size = numel * storage.kind.dtype.itemsize
        if storage.key in wanted_keys:
            storage.data = _bytes_to_array(_read_exactly(file, size, f"storage {storage.key!r}"), storage.kind,
                                           "little")
        else:
            file.seek(size, os.SEEK_CUR)


def _read_exactly(file: BinaryIO, count: int, what: str) -> bytes:
    left = os.fstat(file.fileno()).st_size - file.tell()
    raw = file.read(count) if count <= left else b""
    if len(raw) != count:
        raise _Malformed(f"the file ends inside {what} ({min(left, count)} of {count} bytes)")
    return raw


def _element_count(name: str, ref: _TensorRef) -> int:
    """The tensor's element count, once its last element is known to lie inside its storage."""
    if 0 in ref.size:
        return 0
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= ref.storage.numel:
        raise _Malformed(f"tensor {name!r} (offset {ref.offset}, size {ref.size}, stride {ref.stride}) reaches "
                         f"element {last} of a storage of {ref.storage.numel}")
    return math.prod(ref.size)


def _storages_to_read(tensors: OrderedDict[str, _TensorRef]) -> list[_Storage]:
    """The storages the tensors view, once their sizes are within `MAX_STORAGE_BYTES` and `MAX_EXPANDED_BYTES`."""
    storages = list({id(ref.storage.root): ref.storage.root for ref in tensors.values()}.values())
    stored = sum(storage.numel * storage.kind.dtype.itemsize for storage in storages)
    if stored > MAX_STORAGE_BYTES:
        raise _Malformed(f"its tensors' storages hold {stored:,} bytes, more than the {MAX_STORAGE_BYTES:,} a "
                         "GoogLeNet state dict may")
    viewed = sum(_element_count(name, ref) * ref.storage.root.kind.dtype.itemsize for name, ref in tensors.items())
    if viewed > stored + MAX_EXPANDED_BYTES:
        raise _Malformed(f"its tensors view {viewed:,} bytes of storages that hold {stored:,} (stride 0 or shared "
                         f"storages), more than {MAX_EXPANDED_BYTES:,} beyond them")
    return storages


def _materialise(name: str, ref: _TensorRef) -> np.ndarray:
    """Copy a tensor out of its storage, honouring offset, size and stride (already checked by `_element_count`).

    Args:
        name: The tensor's name, for messages.
        ref: The tensor's description.

    Returns:
        A C-contiguous array in native byte order; bfloat16 becomes float32.
    """
    root, data = ref.storage.root, ref.storage.root.data
    if data is None:
        raise _Malformed(f"tensor {name!r}: storage {root.key!r} is never written to the file")
    kind = root.kind
    if 0 in ref.size:
        values = np.empty(ref.size, dtype=kind.dtype.newbyteorder("="))
    else:
        start = ref.storage.start + ref.offset
        strides = [s * data.itemsize if n > 1 else 0 for n, s in zip(ref.size, ref.stride)]
        view = np.lib.stride_tricks.as_strided(data[start:], shape=ref.size, strides=strides, writeable=False)
        values = np.array(view, dtype=kind.dtype.newbyteorder("="), order="C")
    if kind.bfloat16:
        values = (values.astype(np.uint32) << 16).view(np.float32)
    elif values.dtype == np.bool_:
        values = values.view(np.uint8) != 0
    return np.negative(values) if ref.negate else values


def _materialise_all(tensors: OrderedDict[str, _TensorRef]) -> OrderedDict[str, np.ndarray]:
    return OrderedDict((name, _materialise(name, ref)) for name, ref in tensors.items())


def _state_dict_of(obj: Any, source: str) -> dict:
    """The state dict itself, unwrapped from a checkpoint dict that holds it under a wrapper key."""
    if not isinstance(obj, dict):
        raise WeightsError(f"cannot read {source}: it holds {_describe(obj)}, not a state dict of tensors")
    for key in _WRAPPER_KEYS:
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _describe(obj: Any) -> str:
    if isinstance(obj, _TensorRef):
        return "a single tensor"
    if isinstance(obj, _StorageSlice):
        return "a bare storage"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def _tensor_refs(obj: Any, source: str) -> OrderedDict[str, _TensorRef]:
    """The tensors of the unpickled object by name, in order, not yet read; other values are skipped."""
    state = _state_dict_of(obj, source)
    tensors: OrderedDict[str, _TensorRef] = OrderedDict()
    for name, value in state.items():
        if isinstance(value, _TensorRef):
            if not isinstance(name, str):
                raise WeightsError(f"cannot read {source}: a tensor is stored under the key {name!r:.40}, not a name")
            tensors[name] = value
    if not tensors:
        keys = ", ".join(repr(key) for key in list(state)[:8])
        raise WeightsError(f"cannot read {source}: it holds a dict without tensors (keys: {keys or 'none'})")
    return tensors


def _sniff(source: str) -> str:
    """``"zip"`` or ``"legacy"`` from the file's first bytes; anything else is refused with a hint."""
    problem = mode_problem(os.stat(source).st_mode)
    if problem:
        raise WeightsError(f"cannot read {source}: {problem}")
    with open(source, "rb") as file:
        head = file.read(512)
    if not head:
        raise WeightsError(f"cannot read {source}: the file is empty")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[257:262] == b"ustar":
        raise WeightsError(f"cannot read {source}: tar-format torch file from torch < 0.4 is not supported")
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return "legacy"
    raise WeightsError(f"cannot read {source}: it is not a torch .pth file (it starts with {head[:16]!r}{_hint(head)}"
                       "; torch.save writes a zip archive or, before torch 1.6, a pickle stream)")


def _hint(head: bytes) -> str:
    hints = {b"\x89HDF": ", an HDF5 file", b"version https://git-lfs": ", a Git LFS pointer",
             b"\x93NUMPY": ", a numpy .npy file", b"<": ", an HTML or XML page"}
    for magic, hint in hints.items():
        if head.lstrip().startswith(magic):
            return hint
    return ""


def read_torch_state_dict(path: str | os.PathLike) -> OrderedDict[str, np.ndarray]:
    """Read the tensors of a ``torch.save``-d state dict as numpy arrays, without torch.

    Nothing named by the file is imported or called: the pickle may reference only the globals a plain state
    dict needs, each resolved to a stand-in of this module. A dict holding the state dict under ``"state_dict"``
    or ``"model"`` (a training checkpoint) is unwrapped; values that are not tensors are skipped.

    Args:
        path: A ``.pth``/``.pt`` file in torch's zip format or its pre-1.6 legacy stream format.

    Returns:
        Tensor name to array, in the file's order. Float tensors keep float16/32/64, bfloat16 becomes float32;
        integer and bool tensors keep their dtype. Arrays are C-contiguous copies in native byte order.

    Raises:
        WeightsError: The file is missing, unreadable, truncated, not a torch file, not a state dict, uses an
            unsupported dtype, or references a global or persistent id a state dict never needs.
    """
    source = os.fspath(path)
    try:
        reader = _read_zip if _sniff(source) == "zip" else _read_legacy
        return reader(source)
    except WeightsError:
        raise
    except _Malformed as error:
        raise WeightsError(f"cannot read {source}: {error}") from None
    except OSError as error:
        raise WeightsError(f"cannot read {source}: {error.strerror or error}") from error
    except Exception as error:
        raise WeightsError(f"cannot read {source}: it is truncated or corrupt "
                           f"({type(error).__name__}: {_one_line(error)})") from error


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]
