"""read_torch_state_dict: torch-written fixtures in both formats, damaged and foreign files, hostile pickles.

The fixtures come from tests/reference/make_torch_fixtures.py (real torch); everything else is crafted here
without torch, the pickles opcode by opcode where they must name torch's globals.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import tarfile
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from inception_keras.pretrained import WeightsError
from inception_keras.pretrained.torch_file import read_torch_state_dict
from memory_probe import assert_refused_within_twice

FIXTURES = Path(__file__).parents[1] / "fixtures" / "torch"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as npz:
        return OrderedDict((name, npz[name]) for name in npz["__names__"])


# --- a few pickle opcodes (protocol 2), to name torch's globals without torch -----------------------------------

def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def op_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def op_ordered_dict() -> bytes:
    return op_global("collections", "OrderedDict") + b")R"


def op_tensor(key: str, numel: int, offset: int, size: tuple, stride: tuple, storage: str = "FloatStorage",
              legacy_view: bytes | None = None, metadata: bytes = b"") -> bytes:
    pid = [op_str("storage"), op_global("torch", storage), op_str(key), op_str("cpu"), op_int(numel)]
    if legacy_view is not None:
        pid.append(legacy_view)
    args = op_tuple(op_tuple(*pid) + b"Q", op_int(offset), op_tuple(*map(op_int, size)),
                    op_tuple(*map(op_int, stride)), b"\x89", op_ordered_dict(), metadata)
    return op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def op_state_dict(entries: dict[str, bytes]) -> bytes:
    items = b"".join(op_str(name) + value for name, value in entries.items())
    return b"\x80\x02" + op_ordered_dict() + b"(" + items + b"u."


def write_zip(path: Path, data_pkl: bytes, records: dict[str, bytes], byteorder: bytes | None = b"little") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        if byteorder is not None:
            archive.writestr("archive/byteorder", byteorder)
        for key, raw in records.items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


def legacy_bytes(obj_pickle: bytes, storages: dict[str, bytes], element_counts: dict[str, int]) -> bytes:
    head = b"".join(pickle.dumps(value, protocol=2) for value in (LEGACY_MAGIC, 1001, SYS_INFO))
    body = b"".join(struct.pack("<q", element_counts[key]) + raw for key, raw in storages.items())
    return head + obj_pickle + pickle.dumps(list(storages), protocol=2) + body


def f32(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


# --- torch-written fixtures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["small_zip.pth", "small_legacy.pth", "small_zip_bigendian.pth",
                                  "wrapped_state_dict.pth", "wrapped_model_legacy.pth"])
def test_fixture_reads_as_torch_wrote_it(name, expected):
    state = read_torch_state_dict(FIXTURES / name)
    assert isinstance(state, OrderedDict)
    assert list(state) == list(expected)
    for key, value in state.items():
        assert (value.dtype, value.shape) == (expected[key].dtype, expected[key].shape), key
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
        assert value.flags.c_contiguous and value.flags.writeable and value.dtype.isnative, key


def test_fixture_covers_views_dtypes_and_batchnorm(expected):
    state = read_torch_state_dict(FIXTURES / "small_legacy.pth")
    np.testing.assert_array_equal(state["transposed"], np.arange(12, dtype=np.float32).reshape(3, 4).T)
    np.testing.assert_array_equal(state["shared.head"], [3, 6, 9])
    np.testing.assert_array_equal(state["shared.tail"], [[15, 18], [21, 24]])
    np.testing.assert_array_equal(state["expanded"], [[1.5, 2.5]] * 3)
    np.testing.assert_array_equal(state["bfloat16"], [1.0, -2.5, 3.140625, 0.00099945068359375, 65280.0])
    assert state["scalar"].shape == () and state["scalar"] == 2.5
    assert state["empty"].shape == (0, 3)
    assert state["bn.num_batches_tracked"].dtype == np.int64 and state["bn.num_batches_tracked"] == 7
    assert {str(v.dtype) for v in state.values()} == {"float32", "float64", "float16", "int64", "int32", "int16",
                                                      "int8", "uint8", "bool"}


# --- damaged and foreign files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["small_zip.pth", "small_legacy.pth"])
def test_truncated_file_is_refused(name, tmp_path):
    data = (FIXTURES / name).read_bytes()
    for cut in sorted({0, 1, 2, 4, 11, 30, 64, 200, len(data) // 3, len(data) // 2, len(data) - 100,
                       len(data) - 22, len(data) - 1}):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match=f"cut{cut}.pth"):
            read_torch_state_dict(path)


def test_corrupted_storage_fails_the_zip_checksum(tmp_path):
    data = bytearray((FIXTURES / "small_zip.pth").read_bytes())
    with zipfile.ZipFile(FIXTURES / "small_zip.pth") as archive:
        info = archive.getinfo(next(n for n in archive.namelist() if n.endswith("/data/0")))
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_length + extra_length] ^= 0xFF
    path = tmp_path / "flipped.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="flipped.pth: it is truncated or corrupt"):
        read_torch_state_dict(path)


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"hello, this is a README and not weights\n", "not a torch .pth file .*hello"),
    (bytes(np.random.default_rng(1).integers(1, 256, 300, dtype=np.uint8)), "not a torch .pth file"),
    (b"\x89HDF\r\n\x1a\n" + bytes(100), "an HDF5 file"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "a Git LFS pointer"),
    (b"<!DOCTYPE html><html>404</html>", "an HTML or XML page"),
    (pickle.dumps({"a": 1}, protocol=2), "not a torch.save file"),
])
def test_foreign_file_is_refused_with_a_hint(content, message, tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=f"weights.pth: .*{message}"):
        read_torch_state_dict(path)


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="nope.pth: No such file"):
        read_torch_state_dict(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match=str(tmp_path.name)):
        read_torch_state_dict(tmp_path)


def test_other_zip_archives_are_refused(tmp_path):
    np.savez(tmp_path / "arrays.npz", a=np.ones(2))
    with pytest.raises(WeightsError, match="zip archive without .*data.pkl"):
        read_torch_state_dict(tmp_path / "arrays.npz")
    with zipfile.ZipFile(tmp_path / "scripted.pt", "w") as archive:
        for name in ("data.pkl", "constants.pkl", "code/__torch__.py"):
            archive.writestr(f"scripted/{name}", b"")
    with pytest.raises(WeightsError, match="TorchScript archive"):
        read_torch_state_dict(tmp_path / "scripted.pt")


def test_tar_format_is_refused(tmp_path):
    path = tmp_path / "old.pth"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("sys_info")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(WeightsError, match="tar-format torch file from torch < 0.4 is not supported"):
        read_torch_state_dict(path)


# --- crafted pickles: layouts torch writes, and breaks of them ---------------------------------------------------

def test_crafted_zip_tensor_honours_offset_and_stride(tmp_path):
    pkl = op_state_dict({"w": op_tensor("0", 6, 1, (2, 2), (1, 2))})
    state = read_torch_state_dict(write_zip(tmp_path / "a.pth", pkl, {"0": f32(0, 1, 2, 3, 4, 5)}, byteorder=None))
    np.testing.assert_array_equal(state["w"], [[1, 3], [2, 4]])


def test_neg_bit_metadata_negates(tmp_path):
    metadata = b"}" + op_str("neg") + b"\x88s"
    pkl = op_state_dict({"w": op_tensor("0", 2, 0, (2,), (1,), metadata=metadata)})
    state = read_torch_state_dict(write_zip(tmp_path / "a.pth", pkl, {"0": f32(1, -2)}))
    np.testing.assert_array_equal(state["w"], [-1, 2])


def test_legacy_storage_view(tmp_path):
    view = op_tuple(op_str("view"), op_int(2), op_int(3))
    pkl = op_state_dict({"w": op_tensor("root", 6, 1, (2,), (1,), legacy_view=view)})
    path = tmp_path / "a.pth"
    path.write_bytes(legacy_bytes(pkl, {"root": f32(0, 1, 2, 3, 4, 5)}, {"root": 6}))
    np.testing.assert_array_equal(read_torch_state_dict(path)["w"], [3, 4])


@pytest.mark.parametrize("tensor, records, message", [
    (op_tensor("0", 6, 0, (2, 3), (3, 2)), {"0": f32(*range(6))}, "tensor 'w' .* reaches element 7 of .* 6"),
    (op_tensor("0", 6, 6, (), ()), {"0": f32(*range(6))}, "tensor 'w' .* reaches element 6"),
    (op_tensor("0", 6, 0, (6,), (1,)), {"0": f32(1, 2)}, "data/0 holds 8 bytes where its 6 elements"),
    (op_tensor("0", 1, 0, (1,), (1,)), {}, "storage record archive/data/0 is missing"),
    (op_tensor("0", 1, 0, (1,), (1, 1)), {"0": f32(1)}, "differ in length"),
    (op_tensor("0", 1, 0, (1,), (1,), storage="ComplexFloatStorage"), {}, "torch.ComplexFloatStorage, which this"),
    (op_global("torch._utils", "_rebuild_parameter") + op_tuple(op_int(3), b"\x89", b"N") + b"R", {},
     "a parameter wraps int"),
])
def test_malformed_tensor_is_refused(tensor, records, message, tmp_path):
    path = write_zip(tmp_path / "bad.pth", op_state_dict({"w": tensor}), records)
    with pytest.raises(WeightsError, match=f"bad.pth: .*{message}"):
        read_torch_state_dict(path)


def test_legacy_storage_count_mismatch_and_unused_storage(tmp_path):
    pkl = op_state_dict({"w": op_tensor("k", 2, 0, (2,), (1,), legacy_view=b"N")})
    path = tmp_path / "bad.pth"
    path.write_bytes(legacy_bytes(pkl, {"k": f32(1, 2, 3)}, {"k": 3}))
    with pytest.raises(WeightsError, match="storage 'k' holds 3 elements where its tensors expect 2"):
        read_torch_state_dict(path)
    path.write_bytes(legacy_bytes(pkl, {"k": f32(1, 2), "other": f32(1)}, {"k": 2, "other": 1}))
    with pytest.raises(WeightsError, match="storage 'other' is listed but no tensor uses it"):
        read_torch_state_dict(path)


def test_unknown_byteorder_is_refused(tmp_path):
    path = write_zip(tmp_path / "a.pth", op_state_dict({"w": op_tensor("0", 1, 0, (), ())}), {"0": f32(1)},
                     byteorder=b"middle")
    with pytest.raises(WeightsError, match="byteorder record says 'middle'"):
        read_torch_state_dict(path)


@pytest.mark.parametrize("obj, message", [
    ([1, 2, 3], "holds a list of 3 items, not a state dict"),
    ({"epoch": 3, "lr": 0.1}, r"a dict without tensors \(keys: 'epoch', 'lr'\)"),
    ({"state_dict": {}}, "a dict without tensors"),
])
def test_non_state_dict_is_refused(obj, message, tmp_path):
    path = write_zip(tmp_path / "ckpt.pth", pickle.dumps(obj, protocol=2), {})
    with pytest.raises(WeightsError, match=f"ckpt.pth: .*{message}"):
        read_torch_state_dict(path)


def test_non_tensor_values_are_skipped(tmp_path):
    pkl = op_state_dict({"w": op_tensor("0", 1, 0, (), ()), "note": op_str("text"), "n": op_int(4)})
    assert list(read_torch_state_dict(write_zip(tmp_path / "a.pth", pkl, {"0": f32(1)}))) == ["w"]


def test_single_tensor_is_refused(tmp_path):
    pkl = b"\x80\x02" + op_tensor("0", 1, 0, (), ()) + b"."
    with pytest.raises(WeightsError, match="holds a single tensor, not a state dict"):
        read_torch_state_dict(write_zip(tmp_path / "a.pth", pkl, {"0": f32(1)}))


# --- hostile files: nothing runs ----------------------------------------------------------------------------

class Payload:
    """Pickles as a call of ``function(*args)``, the way a hostile file runs code."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker: Path) -> list[tuple[Payload, str]]:
    return [(Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
            (Payload(eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
            (Payload(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen")]


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("layout", ["zip", "legacy", "legacy-header", "nested"])
def test_hostile_pickle_is_refused_and_nothing_runs(layout, protocol, tmp_path):
    marker = tmp_path / "MARKER"
    for index, (payload, global_name) in enumerate(payloads(marker)):
        path = tmp_path / f"evil{index}.pth"
        evil = pickle.dumps(payload, protocol=protocol)
        if layout == "zip":
            write_zip(path, evil, {})
        elif layout == "nested":
            write_zip(path, pickle.dumps(OrderedDict(w=[payload]), protocol=protocol), {})
        elif layout == "legacy":
            path.write_bytes(legacy_bytes(evil, {}, {}))
        else:
            path.write_bytes(evil + legacy_bytes(b"", {}, {}))
        with pytest.raises(WeightsError) as error:
            read_torch_state_dict(path)
        assert str(error.value) == (f"refusing to load {path}: it references the global {global_name}, which a "
                                    "state dict never needs; nothing in the file was executed")
        assert not marker.exists()


def test_foreign_persistent_id_is_refused(tmp_path):
    pkl = b"\x80\x02" + op_tuple(op_str("module"), op_str("x"), b"N", b"N") + b"Q."
    with pytest.raises(WeightsError, match="persistent id of kind 'module' where only tensor storages"):
        read_torch_state_dict(write_zip(tmp_path / "a.pth", pkl, {}))
    pkl = b"\x80\x02" + op_str("0") + b"Q."
    with pytest.raises(WeightsError, match="persistent id of kind None"):
        read_torch_state_dict(write_zip(tmp_path / "b.pth", pkl, {}))


@pytest.mark.parametrize("target", [op_global("torch", "FloatStorage"),
                                    op_global("torch._utils", "_rebuild_tensor_v2")])
def test_pickle_cannot_alter_the_stand_ins(target, tmp_path):
    state = b"N" + b"}" + op_str("__defaults__") + op_tuple(b"\x89", b"N", b"}" + op_str("neg") + b"\x88s") + b"s"
    pkl = b"\x80\x02" + target + op_tuple(state)[1:-1] + b"\x86b."
    with pytest.raises(WeightsError, match="the pickle tries to set the state of a"):
        read_torch_state_dict(write_zip(tmp_path / "a.pth", pkl, {}))
    good = op_state_dict({"w": op_tensor("0", 1, 0, (), ())})
    assert read_torch_state_dict(write_zip(tmp_path / "b.pth", good, {"0": f32(1)}))["w"] == 1


# --- small hostile files: bounded work and memory ------------------------------------------------------------

def deflated_zeros(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of `size` zero bytes (a multiple of 4 MiB) and its CRC-32, built in ~0.1 s."""
    chunk, compressor = bytes(1 << 22), zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)  # repeatable: the window is reset
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    return block * (size // len(chunk)) + compressor.flush(), crc


def raw_zip(path: Path, members: list[tuple[str, int, bytes, int, int]]) -> Path:
    """A zip archive of (name, method, compressed bytes, crc, size) members, written without recompressing."""
    local, central = b"", b""
    for name, method, data, crc, size in members:
        header = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, crc, len(data), size, len(name), 0)
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 33, crc, len(data), size,
                               len(name), 0, 0, 0, 0, 0, len(local)) + name.encode()
        local += header + name.encode() + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(local + central + end)
    return path


def stored(name: str, data: bytes) -> tuple[str, int, bytes, int, int]:
    return name, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data)


def expanded_file(path: Path) -> Path:
    """The 900-byte file of three stride-0 tensors of 2.5e8 elements over a one-element storage."""
    tensor = op_tensor("0", 1, 0, (250_000_000,), (0,))
    return write_zip(path, op_state_dict({f"w{i}": tensor for i in range(3)}), {"0": f32(1)})


def inflating_storage_file(path: Path) -> Path:
    """A 520 KB file whose storage record inflates to 512 MiB, as its tensor claims."""
    data, crc = deflated_zeros(1 << 29)
    pkl = op_state_dict({"w": op_tensor("0", 1 << 27, 0, (1 << 27,), (1,))})
    return raw_zip(path, [stored("archive/data.pkl", pkl), ("archive/data/0", zipfile.ZIP_DEFLATED, data, crc,
                                                                1 << 29)])


def inflating_pickle_file(path: Path) -> Path:
    """A 35 KB file whose data.pkl inflates to 256 MiB."""
    data, crc = deflated_zeros(1 << 28)
    return raw_zip(path, [("archive/data.pkl", zipfile.ZIP_DEFLATED, data, crc, 1 << 28)])


def deep_key_file(path: Path, depth: int) -> Path:
    """data.pkl: a dict whose key is a tuple nested `depth` deep (hashing 200,000 levels overflows the C stack)."""
    return write_zip(path, b"\x80\x02}" + b")" + b"\x85" * depth + b"Ns.", {})


def memo_file(path: Path) -> Path:
    """data.pkl stores to memo slot 2**27, which makes C's unpickler allocate and clear a 1 GiB memo table."""
    return write_zip(path, b"\x80\x02}r" + struct.pack("<I", 1 << 27) + b".", {})


def refusal(path: Path) -> str:
    with pytest.raises(WeightsError) as error:
        read_torch_state_dict(path)
    message = str(error.value)
    assert message.startswith(f"cannot read {path}: ") and "\n" not in message and len(message) < 400, message
    return message


def test_stride_zero_tensors_are_bounded_before_they_are_copied(tmp_path):
    assert "view 3,000,000,000 bytes of storages that hold 4 (stride 0 or shared storages), more than 16,777,216 " \
           "beyond them" in refusal(expanded_file(tmp_path / "expanded.pth"))
    shared = op_tensor("0", 1 << 20, 0, (1 << 20,), (1,))  # 4 MiB, named five times: 16 MiB beyond the storage
    path = write_zip(tmp_path / "shared.pth", op_state_dict({f"w{i}": shared for i in range(6)}),
                     {"0": bytes(4 << 20)})
    assert "view 25,165,824 bytes of storages that hold 4,194,304" in refusal(path)
    path = write_zip(tmp_path / "ok.pth", op_state_dict({f"w{i}": shared for i in range(5)}), {"0": bytes(4 << 20)})
    assert len(read_torch_state_dict(path)) == 5


def test_storages_beyond_the_bound_are_refused_before_they_are_read(tmp_path):
    pkl = op_state_dict({"w": op_tensor("0", 1 << 27, 0, (1 << 27,), (1,))})
    assert "storages hold 536,870,912 bytes, more than the 268,435,456 a GoogLeNet state dict may" in refusal(
        write_zip(tmp_path / "big.pth", pkl, {}))
    legacy = tmp_path / "big_legacy.pth"
    legacy.write_bytes(legacy_bytes(op_state_dict({"w": op_tensor("k", 1 << 27, 0, (2,), (1,), legacy_view=b"N")}),
                                    {"k": f32(1, 2)}, {"k": 1 << 27}))
    assert "536,870,912 bytes, more than" in refusal(legacy)
    legacy.write_bytes(legacy_bytes(op_state_dict({"w": op_tensor("k", 1 << 20, 0, (2,), (1,), legacy_view=b"N")}),
                                    {"k": f32(1, 2)}, {"k": 1 << 20}))
    assert "the file ends inside storage 'k' (8 of 4194304 bytes)" in refusal(legacy)


def test_zip_records_are_bounded_and_never_bzip2_or_lzma(tmp_path):
    tensor = op_state_dict({"w": op_tensor("0", 1, 0, (), ())})
    for method, name in ((zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")):
        path = tmp_path / f"{name}.pth"
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            archive.writestr("archive/data.pkl", tensor)
            archive.writestr("archive/data/0", f32(1))
        assert f"record archive/data.pkl is compressed with {name}, which torch never writes or reads" in refusal(
            path)
    assert "record archive/data.pkl holds 268,435,456 bytes, more than the 1,048,576 it may" in refusal(
        inflating_pickle_file(tmp_path / "pkl.pth"))
    path = write_zip(tmp_path / "deflated.pth", tensor, {"0": f32(7)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", tensor)
        archive.writestr("archive/data/0", f32(7))
    assert read_torch_state_dict(path)["w"] == 7


@pytest.mark.parametrize("pkl, message", [
    (b"\x80\x02}" + b")" + b"\x85" * 40 + b"Ns.", "the pickle nests deeper than 32 levels (at byte 36)"),
    (b"\x80\x02" + b"]" * 41 + b"a" * 40 + b".", "nests deeper than 32 levels"),
    (b"\x80\x02}r" + struct.pack("<I", 1 << 27) + b".", "malformed pickle (LONG_BINPUT 134217728 stores to the "
                                                         "memo out of order)"),
    (b"\x80\x02(" + b"]" * 100_001 + b"l.", "the pickle builds more than 100,000 objects"),
    (b"\x80\x02" + b"X" + struct.pack("<I", 2 << 20) + bytes(2 << 20) + b".", "1,048,576"),
    (b"\x80\x02)\x85a.", "malformed pickle (APPEND finds too few items on the stack)"),
])
def test_pickles_are_walked_and_bounded_before_they_are_loaded(pkl, message, tmp_path):
    assert message in refusal(write_zip(tmp_path / "a.pth", pkl, {}))
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(b"".join(pickle.dumps(value, protocol=2) for value in (LEGACY_MAGIC, 1001, SYS_INFO)) + pkl)
    assert message.split(" (at")[0] in refusal(legacy)


def test_hostile_files_are_refused_within_twice_a_normal_reads_peak_memory(tmp_path):
    paths = [FIXTURES / "small_zip.pth", expanded_file(tmp_path / "expanded.pth"),
             inflating_storage_file(tmp_path / "storage.pth"), inflating_pickle_file(tmp_path / "pkl.pth"),
             deep_key_file(tmp_path / "deep.pth", 200_000), memo_file(tmp_path / "memo.pth")]
    assert max(path.stat().st_size for path in paths) < 600_000
    assert_refused_within_twice("inception_keras.pretrained.torch_file:read_torch_state_dict", paths[0], paths[1:])
