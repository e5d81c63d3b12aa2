"""Tests of the BVLC Caffe .caffemodel reader against fixtures written with BVLC's own caffe.proto.

Fixtures: tests/fixtures/caffe (see its README.md). Bad files are crafted here as raw protobuf wire bytes, so
they do not depend on the reader's own schema.
"""

import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest

from inception_keras.pretrained import WeightsError
from inception_keras.pretrained import caffe_file
from inception_keras.pretrained.caffe_file import CaffeModel, load_caffemodel, read_caffemodel

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "caffe"
MODELS = ["tiny_layer.caffemodel", "tiny_v1_layers.caffemodel", "tiny_double_data.caffemodel"]


def _varint(value: int) -> bytes:
    value &= 2**64 - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def _bytes(number: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return _key(number, 2) + _varint(len(payload)) + payload


def _blob(values=(), shape=None, legacy=None, double=False) -> bytes:
    """BlobProto: shape=7 (BlobShape dim=1), data=5, double_data=8, num/channels/height/width=1..4."""
    out = b""
    if shape is not None:
        out += _bytes(7, _bytes(1, b"".join(_varint(d) for d in shape)))
    if legacy is not None:
        out += b"".join(_int(number, d) for number, d in zip((1, 2, 3, 4), legacy))
    if len(values):
        out += _bytes(8, struct.pack(f"<{len(values)}d", *values)) if double else \
            _bytes(5, struct.pack(f"<{len(values)}f", *values))
    return out


def _layer(name: str, layer_type: str, *blobs: bytes) -> bytes:
    """NetParameter.layer (100): LayerParameter name=1, type=2, blobs=7."""
    return _bytes(100, _bytes(1, name) + _bytes(2, layer_type) + b"".join(_bytes(7, b) for b in blobs))


def _v1_layer(name: str, layer_type: int, *blobs: bytes) -> bytes:
    """NetParameter.layers (2): V1LayerParameter name=4, type=5, blobs=6."""
    return _bytes(2, _bytes(4, name) + _int(5, layer_type) + b"".join(_bytes(6, b) for b in blobs))


def _write(tmp_path, *parts: bytes, name="crafted.caffemodel") -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(_bytes(1, "Crafted") + b"".join(parts))
    return path


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected.npz") as data:
        names = [str(n) for n in data["layer_names"]]
        layers = {n: [data[f"{n}:{i}"] for i in range(sum(k.startswith(f"{n}:") for k in data.files))]
                  for n in names}
        return str(data["net_name"]), layers


@pytest.mark.parametrize("filename", MODELS)
def test_fixture_reads_as_expected(filename, expected):
    want = expected[1]
    got = read_caffemodel(FIXTURES / filename)
    assert list(got) == list(want)
    for name, arrays in want.items():
        assert [a.shape for a in got[name]] == [a.shape for a in arrays], name
        for g, w in zip(got[name], arrays):
            assert g.dtype == np.float32
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("filename, v1, legacy, double", [("tiny_layer.caffemodel", False, False, False),
                                                           ("tiny_v1_layers.caffemodel", True, True, False),
                                                           ("tiny_double_data.caffemodel", False, False, True)])
def test_fixtures_store_the_format_they_claim(filename, v1, legacy, double):
    net = caffe_file._messages()["NetParameter"].FromString((FIXTURES / filename).read_bytes())
    layers = net.layers if v1 else net.layer
    assert len(layers) == (4 if v1 else 3) and len(net.layers if not v1 else net.layer) == 0
    blobs = [blob for layer in layers for blob in layer.blobs]
    assert all(blob.HasField("num") == legacy and blob.HasField("shape") != legacy for blob in blobs)
    assert any(len(blob.double_data) for blob in blobs) == double


@pytest.mark.parametrize("filename", MODELS)
def test_load_gives_name_and_types(filename, expected):
    model = load_caffemodel(str(FIXTURES / filename))
    assert isinstance(model, CaffeModel)
    assert model.name == expected[0]
    assert model.types == {"conv1/7x7_s2": "Convolution", "loss3/classifier": "InnerProduct"}


def test_legacy_shapes_drop_leading_ones_to_the_rank_of_the_layer_type(tmp_path):
    bias = _blob([5], legacy=(1, 1, 1, 1))
    path = _write(tmp_path,
                  _v1_layer("conv_one_filter", 4, _blob(range(9), legacy=(1, 1, 3, 3)), bias),
                  _v1_layer("fc_one_output", 14, _blob(range(6), legacy=(1, 1, 1, 6)), bias),
                  _v1_layer("fc_odd", 14, _blob(range(6), legacy=(2, 1, 1, 3))),
                  _v1_layer("relu", 18, _blob(range(3), legacy=(1, 1, 1, 3)), bias))
    shapes = {name: [a.shape for a in blobs] for name, blobs in read_caffemodel(path).items()}
    assert shapes == {"conv_one_filter": [(1, 1, 3, 3), (1,)], "fc_one_output": [(1, 6), (1,)],
                      "fc_odd": [(2, 1, 1, 3)], "relu": [(3,), (1,)]}


def test_both_layer_and_v1_layers_refused(tmp_path):
    blob = _blob([1.0], shape=(1,))
    path = _write(tmp_path, _v1_layer("conv1/7x7_s2", 4, blob), _layer("loss3/classifier", "InnerProduct", blob))
    with pytest.raises(WeightsError, match="both 'layer' and deprecated V1 'layers'"):
        read_caffemodel(path)


def test_shape_wins_and_scalar_without_any_shape(tmp_path):
    path = _write(tmp_path, _layer("a", "Scale", _blob(range(6), shape=(1, 2, 3)), _blob([2.5])))
    got = read_caffemodel(path)["a"]
    assert got[0].shape == (1, 2, 3) and got[1].shape == () and got[1] == 2.5


def test_count_mismatch_names_layer_and_blob(tmp_path):
    path = _write(tmp_path, _layer("loss3/classifier", "InnerProduct", _blob(range(6), shape=(2, 3)),
                                   _blob(range(4), shape=(5,))))
    with pytest.raises(WeightsError, match=r"crafted\.caffemodel: layer 'loss3/classifier' blob 1: 4 values for "
                                           r"shape \(5,\) \(5 expected\)"):
        read_caffemodel(path)


def test_double_data_count_is_checked_too(tmp_path):
    path = _write(tmp_path, _v1_layer("conv1/7x7_s2", 4, _blob(range(7), legacy=(1, 1, 2, 4), double=True)))
    with pytest.raises(WeightsError, match="layer 'conv1/7x7_s2' blob 0: 7 values"):
        read_caffemodel(path)


@pytest.mark.parametrize("blob, message", [
    (_blob(range(6), shape=(2, 3), legacy=(1, 1, 3, 2)), "disagrees with legacy"),
    (_blob([], shape=(2, -3)), "negative dimension"),
    (_blob([], legacy=(1, 1, -1, 2)), "negative dimension"),
])
def test_inconsistent_shapes(tmp_path, blob, message):
    with pytest.raises(WeightsError, match=f"layer 'x' blob 0: .*{message}"):
        read_caffemodel(_write(tmp_path, _layer("x", "Convolution", blob)))


def test_duplicate_and_unnamed_layers(tmp_path):
    blob = _blob([1.0], shape=(1,))
    with pytest.raises(WeightsError, match="layer 'inception_3a/1x1' appears twice"):
        read_caffemodel(_write(tmp_path, _layer("inception_3a/1x1", "Convolution", blob),
                               _layer("inception_3a/1x1", "Convolution", blob)))
    with pytest.raises(WeightsError, match=r"layer #1 \(Convolution\) has weights but no name"):
        read_caffemodel(_write(tmp_path, _layer("relu", "ReLU"), _layer("", "Convolution", blob)))


def test_layer_names_must_be_utf8_network_name_need_not(tmp_path):
    blob = _blob([1.0], shape=(1,))
    path = _write(tmp_path, _layer("relu", "ReLU"), _bytes(100, _bytes(1, b"conv\xff") + _bytes(7, blob)))
    with pytest.raises(WeightsError, match=r"layer #1 name is not valid UTF-8: b'conv\\xff'"):
        read_caffemodel(path)
    path.write_bytes(_bytes(1, b"Net\xff") + _layer("conv", "Convolution", blob))
    assert load_caffemodel(path).name == "Net\\xff"


def test_double_data_beyond_float32_range(tmp_path):
    path = _write(tmp_path, _layer("fc", "InnerProduct", _blob([1.0, 1e300], shape=(2,), double=True)))
    with pytest.raises(WeightsError, match="layer 'fc' blob 0: double_data values beyond the float32 range"):
        read_caffemodel(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty\.caffemodel: empty file"):
        read_caffemodel(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.caffemodel"
    path.write_bytes((FIXTURES / "tiny_layer.caffemodel").read_bytes()[:-7])
    with pytest.raises(WeightsError, match=r"truncated\.caffemodel: truncated or not a Caffe model \(protobuf:"):
        read_caffemodel(path)


@pytest.mark.parametrize("filename", ["tiny_layer.caffemodel", "tiny_v1_layers.caffemodel"])
def test_every_truncation_is_refused_or_a_clean_prefix(tmp_path, filename, expected):
    data = (FIXTURES / filename).read_bytes()
    path = tmp_path / "cut.caffemodel"
    refused = 0
    for size in range(1, len(data)):
        path.write_bytes(data[:size])
        try:
            got = read_caffemodel(path)
        except WeightsError as err:
            assert "cut.caffemodel" in str(err) and "\n" not in str(err)
            refused += 1
            continue
        assert list(got) == list(expected[1])[:len(got)]
        for name in got:
            for g, w in zip(got[name], expected[1][name], strict=True):
                np.testing.assert_array_equal(g, w)
    assert refused > 0.9 * len(data)


def test_garbage_and_text_files(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.caffemodel"
    for _ in range(200):
        path.write_bytes(rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes())
        with pytest.raises(WeightsError, match=r"noise\.caffemodel: (truncated or not a Caffe model|not a Caffe "
                                               r"model: no layers with weights)"):
            read_caffemodel(path)
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_bytes((FIXTURES / "tiny_deploy.prototxt").read_bytes())
    with pytest.raises(WeightsError, match=r"deploy\.prototxt: .*looks like a text file \(a \.prototxt\?\), not a "
                                           r"binary \.caffemodel"):
        read_caffemodel(prototxt)
    hdf5 = tmp_path / "net.caffemodel.h5"
    hdf5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(WeightsError, match="an HDF5 file"):
        read_caffemodel(hdf5)


def test_corrupted_bytes_raise_only_weights_error(tmp_path):
    base = np.frombuffer((FIXTURES / "tiny_v1_layers.caffemodel").read_bytes(), np.uint8)
    rng = np.random.default_rng(1)
    path = tmp_path / "corrupt.caffemodel"
    for _ in range(300):
        data = base.copy()
        data[rng.integers(0, data.size, 3)] = rng.integers(0, 256, 3)
        path.write_bytes(data.tobytes())
        try:
            got = read_caffemodel(path)
        except WeightsError as err:
            assert str(err).startswith(str(path)) and "\n" not in str(err)
        else:
            assert all(isinstance(name, str) and a.dtype == np.float32 for name, v in got.items() for a in v)


def test_no_layers_with_weights(tmp_path):
    path = _write(tmp_path, _layer("data", "Input"), _layer("conv1/relu_7x7", "ReLU"))
    with pytest.raises(WeightsError, match=r"crafted\.caffemodel: not a Caffe model: no layers with weights"):
        read_caffemodel(path)
    other = tmp_path / "other.pb"
    other.write_bytes(_bytes(9, b"\x08\x01") + _int(5, 1))
    with pytest.raises(WeightsError, match="no layers with weights"):
        read_caffemodel(other)


def test_missing_directory_and_oversized_paths(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match=r"nope\.caffemodel: cannot read"):
        read_caffemodel(tmp_path / "nope.caffemodel")
    with pytest.raises(WeightsError, match="not a regular file"):
        read_caffemodel(tmp_path)
    monkeypatch.setattr(caffe_file, "MAX_BYTES", 100)
    with pytest.raises(WeightsError, match=r"tiny_layer\.caffemodel: 2,0\d\d bytes, more than the 100 a GoogLeNet"):
        read_caffemodel(FIXTURES / "tiny_layer.caffemodel")


def test_import_does_not_load_tensorflow_or_keras():
    code = ("import sys, inception_keras.pretrained.caffe_file; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
