"""Weights files against a hostile or careless user: one `error:` line for what is not a weights file, and a
hypothesis fuzz of the `.pth`, `.caffemodel` and TF checkpoint readers (mutated fixtures and crafted files): every
outcome is the file's tensors or a WeightsError. `make test-slow` runs each fuzz with 2,000 examples."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inception_keras.cli import main
from inception_keras.pretrained import WeightsError
from inception_keras.pretrained.caffe_file import read_caffemodel
from inception_keras.pretrained.slim_file import read_slim_checkpoint
from inception_keras.pretrained.torch_file import read_torch_state_dict
from memory_probe import assert_refused_within_twice
from test_pretrained_caffe import _blob, _int, _key, _layer, _varint
from test_pretrained_torch import op_state_dict, op_tensor, write_zip

FIXTURES = Path(__file__).parents[1] / "fixtures"
TORCH = [(FIXTURES / "torch" / name).read_bytes() for name in ("small_zip.pth", "small_legacy.pth")]
CAFFE = [path.read_bytes() for path in sorted((FIXTURES / "caffe").glob("*.caffemodel"))]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
TABLE_MAGIC = bytes.fromhex("57fb808b247547db")


def _index_with_footer(path: Path, block_size: int) -> Path:
    handles = _varint(0) + _varint(10) + _varint(0) + _varint(block_size)
    path.write_bytes(bytes(100) + handles.ljust(40, b"\0") + TABLE_MAGIC)
    return path


def _import(path, tmp_path, capsys) -> str:
    assert main(["weights", "import", str(path), "--out", str(tmp_path / "out.keras")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), lines
    return lines[0]


def test_devices_and_fifos_are_not_regular_files(tmp_path, capsys, monkeypatch):
    import builtins

    os.mkfifo(tmp_path / "fifo.pth")
    opened, real_open, real_os_open = [], builtins.open, os.open
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: opened.append(str(file)) or real_open(file, *a, **k))
    monkeypatch.setattr(os, "open", lambda file, *a, **k: opened.append(str(file)) or real_os_open(file, *a, **k))
    for path in ("/dev/zero", tmp_path / "fifo.pth"):
        assert ": not a regular file" in _import(path, tmp_path, capsys)
        assert str(path) not in opened  # refused from its file type: a FIFO with no writer would block the open
    monkeypatch.undo()
    with pytest.raises(WeightsError, match="fifo.pth: not a regular file"):
        read_torch_state_dict(tmp_path / "fifo.pth")


def test_damaged_checkpoints_are_one_line(tmp_path, capsys):
    index = _index_with_footer(tmp_path / "random.index", 1 << 40)  # TensorFlow: std::bad_alloc
    assert _import(index, tmp_path, capsys).endswith(
        "not a readable TensorFlow checkpoint: its footer names a block of 1,099,511,627,776 bytes at 0, outside "
        "the file's 148 bytes")
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "checkpoint").write_bytes(b'\xffmodel_checkpoint_path: "x"\n')
    assert _import(directory, tmp_path, capsys) == \
        f"error: {directory}/checkpoint: not a UTF-8 text file: invalid start byte at byte 0"
    (directory / "checkpoint").write_text("model_checkpoint_path: {{{\n")
    assert _import(directory, tmp_path, capsys).endswith("its 'checkpoint' file names no checkpoint that exists")


# --- .caffemodel counts -----------------------------------------------------------------------------------------

WEIGHTED_LAYER = _layer("conv", "Convolution", _blob([1.0], shape=(1,)))
EMPTY_LAYER = _key(100, 2) + b"\0"
HOSTILE_CAFFEMODELS = {  # each a few hundred KB
    "layers.caffemodel": (WEIGHTED_LAYER + EMPTY_LAYER * 100_000, "more than 10,000 layers (at byte 30,035)"),
    "blobs.caffemodel": (_layer("fc", "InnerProduct", *[_blob([1.0])] * 60_000), "more than 10,000 blobs"),
    "axes.caffemodel": (_layer("fc", "InnerProduct", _blob([], shape=[1] * 100_000)),
                        "layer #0 blob 0: a shape of more than 32 axes (Caffe's limit)"),
    "fields.caffemodel": (WEIGHTED_LAYER + _int(5, 1) * 100_000, "more than 100,000 protobuf fields"),
}


def _hostile_caffemodels(tmp_path: Path) -> list[Path]:
    for name, (data, _) in HOSTILE_CAFFEMODELS.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / name for name in HOSTILE_CAFFEMODELS]


def test_caffemodel_counts_are_bounded_before_protobuf_parses_them(tmp_path):
    for path in _hostile_caffemodels(tmp_path):
        with pytest.raises(WeightsError) as error:
            read_caffemodel(path)
        message = str(error.value)
        assert message.startswith(f"{path}: ") and len(message) < 300, message[:300]
        assert HOSTILE_CAFFEMODELS[path.name][1] in message
    at_the_bounds = tmp_path / "bounds.caffemodel"
    at_the_bounds.write_bytes(_layer("fc", "InnerProduct", _blob([1.0], shape=[1] * 32)) + EMPTY_LAYER * 9_999)
    assert read_caffemodel(at_the_bounds)["fc"][0].shape == (1,) * 32


def test_hostile_caffemodels_are_refused_within_twice_a_normal_reads_peak_memory(tmp_path):
    paths = [FIXTURES / "caffe" / "tiny_layer.caffemodel", *_hostile_caffemodels(tmp_path)]
    assert max(path.stat().st_size for path in paths) < 600_000
    assert_refused_within_twice("inception_keras.pretrained.caffe_file:read_caffemodel", paths[0], paths[1:])


# --- fuzz -------------------------------------------------------------------------------------------------------

@st.composite
def mutated(draw, originals: list[bytes]) -> bytes:
    """A fixture with up to eight random edits: bytes flipped, cut, duplicated, or a run overwritten."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(("flip", "flip", "set", "cut", "repeat", "truncate")))
        if action == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif action == "set":
            data[at:at + 8] = draw(st.binary(min_size=1, max_size=8))
        elif action == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif action == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


big = st.sampled_from([0, 1, 2, 7, 255, 2**20, 2**27, 2**30, 2**31 - 1])


@st.composite
def crafted_pth(draw) -> tuple[bytes, dict[str, bytes]]:
    """A zip-format state dict of crafted tensors: sizes, strides, offsets and storage claims drawn at random."""
    entries, records = {}, {}
    for index in range(draw(st.integers(1, 3))):
        key = str(draw(st.integers(0, 2)))
        numel = draw(big)
        ndim = draw(st.integers(0, 3))
        size = tuple(draw(st.lists(big, min_size=ndim, max_size=ndim)))
        stride = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 2**30]), min_size=ndim, max_size=ndim)))
        entries[f"w{index}"] = op_tensor(key, numel, draw(st.sampled_from([0, 1, 2**31 - 1])), size, stride)
        records[key] = bytes(4 * min(numel, draw(st.sampled_from([0, 1, 64]))))
    return op_state_dict(entries), records


def _read(read, path):
    try:
        read(path)
    except WeightsError as error:
        assert str(error) and "\n" not in str(error) and len(str(error)) < 1000


def _fuzz(strategy, read, suffix):
    def body(data):
        path = Path(f"/tmp/fuzz-{os.getpid()}{suffix}")
        if isinstance(data, tuple):
            write_zip(path, *data)
        else:
            path.write_bytes(data)
        try:
            _read(read, path)
        finally:
            path.unlink()
    return FAST(given(strategy)(body)), pytest.mark.slow(SLOW(given(strategy)(body)))


test_fuzz_pth, test_fuzz_pth_slow = _fuzz(st.one_of(mutated(TORCH), crafted_pth(),
                                                     st.binary(max_size=300).map(lambda b: b"\x80\x02" + b)),
                                          read_torch_state_dict, ".pth")
test_fuzz_caffemodel, test_fuzz_caffemodel_slow = _fuzz(mutated(CAFFE), read_caffemodel, ".caffemodel")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> bytes:
    """The .index bytes of a two-variable V2 checkpoint whose data file sits beside the fuzzed index."""
    import tensorflow as tf

    prefix = tmp_path_factory.mktemp("ckpt") / "tiny"
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable([[1.0, 2.0]], name="a/weights"), tf.compat.v1.Variable([3], name="b")]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.variables_initializer(variables))
            tf.compat.v1.train.Saver(variables).save(session, str(prefix), write_meta_graph=False)
    return prefix


def _checkpoint(prefix: Path, index: bytes) -> None:
    target = prefix.parent / "fuzzed"
    for data in prefix.parent.glob("tiny.data-*"):
        (prefix.parent / data.name.replace("tiny", "fuzzed")).write_bytes(data.read_bytes())
    Path(f"{target}.index").write_bytes(index)
    _read(read_slim_checkpoint, str(target))


def _index_strategy(prefix: Path):
    original = Path(f"{prefix}.index").read_bytes()
    return st.one_of(mutated([original]), st.binary(max_size=200).map(lambda b: b + TABLE_MAGIC))


def test_fuzz_checkpoint(tiny_checkpoint):
    FAST(given(_index_strategy(tiny_checkpoint))(lambda index: _checkpoint(tiny_checkpoint, index)))()


@pytest.mark.slow
def test_fuzz_checkpoint_slow(tiny_checkpoint):
    SLOW(given(_index_strategy(tiny_checkpoint))(lambda index: _checkpoint(tiny_checkpoint, index)))()


def test_tiny_checkpoint_reads(tiny_checkpoint):
    tensors = read_slim_checkpoint(tiny_checkpoint)
    assert sorted(tensors) == ["a/weights", "b"] and tensors["b"].tolist() == [3]
