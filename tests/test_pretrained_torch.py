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
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from inception_keras.pretrained import WeightsError
from inception_keras.pretrained.torch_file import read_torch_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
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
