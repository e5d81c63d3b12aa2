"""Spec files and search-space files against hostile input: one reader, one YAML loader, bounded work and
messages. Every refusal is a SpecError (a UserError): one line naming the file and what is wrong."""

import os

import pytest
import yaml

from inception_keras import SpecError, get_spec, load_spec, resolve_spec, serialize
from inception_keras.cli import main
from inception_keras.serialize import (MAX_FILE_BYTES, MAX_VALUES, expanded_size, parse_document, read_text_file,
                                      spec_from_text)
from search.space import get_space, load_space

LAUGHS = "".join([
    'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n',
    *(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)),
])


def _loaders(tmp_path, text: str, suffix: str = ".yaml"):
    """(what, load) for a spec file and a space file holding `text`."""
    spec_file, space_file = tmp_path / f"spec{suffix}", tmp_path / f"space{suffix}"
    spec_file.write_text(text)
    space_file.write_text(text)
    return [(spec_file, load_spec), (space_file, load_space)]


def _refused(load, path, match: str) -> str:
    with pytest.raises(SpecError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and match in message and "\n" not in message, message
    assert len(message) < 300, message
    return message


def _counting(monkeypatch, owner, name: str) -> list:
    """Replace `owner.name` with a wrapper that records each call; returns the record."""
    calls, original = [], getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(None)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_billion_laughs_is_counted_without_expanding_and_refused(tmp_path, monkeypatch):
    levels = [10]  # a list of 9 strings; each next level: a list of 9 of the one before
    for _ in range(8):
        levels.append(1 + 9 * levels[-1])
    assert expanded_size(yaml.safe_load(LAUGHS)) == 1 + 9 + sum(levels)
    expected = 1 + 11 + sum(levels) + 2 * levels[-1]  # plus keys name and base, each holding the last level
    visits = _counting(monkeypatch, serialize, "_children")
    for path, load in _loaders(tmp_path, LAUGHS + "name: *i\nbase: *i\n"):
        visits.clear()
        message = _refused(load, path, "too large: ")
        assert len(visits) < 1000  # each shared list is walked once, not its ~10^9 expanded values
        assert message.endswith(f"too large: {expected:,} values once YAML aliases are expanded, the limit is 100,000")


def test_a_long_document_is_refused_without_reading_it_all(tmp_path, monkeypatch):
    composed = _counting(monkeypatch, serialize._SpecLoader, "compose_node")
    for path, load in _loaders(tmp_path, "name: [" + "1, " * 1_000_000 + "1]\n"):
        composed.clear()
        _refused(load, path, "too large: over the limit of 100,000 values")
        assert len(composed) == MAX_VALUES + 1  # it stops at the first value over the limit, of 1,000,003


def test_an_alias_to_its_own_container_is_refused(tmp_path):
    for path, load in _loaders(tmp_path, "name: &a [x, *a]\nbase: googlenet_mini\n"):
        _refused(load, path, "a YAML alias refers to the mapping or list that holds it")


@pytest.mark.parametrize("suffix, text", [(".yaml", "name: " + "[" * 5000 + "]" * 5000),
                                          (".json", '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                                          (".yaml", "name: " + "{a: " * 3000 + "1" + "}" * 3000)])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, suffix, text):
    for path, load in _loaders(tmp_path, text, suffix):
        _refused(load, path, "nested too deeply")


def test_directories_fifos_and_devices_are_refused_before_reading(tmp_path, monkeypatch):
    (tmp_path / "dir.yaml").mkdir()
    os.mkfifo(tmp_path / "fifo.yaml")
    for path, kind in ((tmp_path / "dir.yaml", "a directory"), (tmp_path / "fifo.yaml", "a FIFO"),
                       ("/dev/zero", "a character device")):
        for load in (load_spec, load_space):
            reads = _counting(monkeypatch, os, "fdopen")  # what would block on a FIFO with no writer
            _refused(load, path, f"not a regular file ({kind})")
            assert reads == []  # refused from fstat, before anything is read


def test_a_file_over_the_limit_is_refused_by_its_size(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing to read, so this would hang if it were read
    for load in (load_spec, load_space):
        _refused(load, path, f"too large: {MAX_FILE_BYTES + 1:,} bytes, the limit is {MAX_FILE_BYTES:,}")
    path.write_bytes(b"\xff\xfe\x00")
    for load in (load_spec, load_space):
        _refused(load, path, "not a UTF-8 text file: invalid start byte at byte 0")
    assert read_text_file(__file__).startswith('"""Spec files')


def test_missing_and_unreadable_paths(tmp_path):
    for load in (load_spec, load_space):
        _refused(load, tmp_path / "missing.yaml", "cannot read")
    with pytest.raises(SpecError, match="cannot read spec file: embedded null byte"):
        load_spec("a\0b.yaml")


def test_spec_and_space_files_read_numbers_alike(tmp_path):
    assert parse_document("a: 1e5\nb: 1e-4\nc: '1e5'\n") == {"a": 100000.0, "b": 0.0001, "c": "1e5"}
    spec_file = tmp_path / "spec.yaml"
    data = get_spec("googlenet_mini").to_dict()
    data["stages"][0]["modules"][0] = "[1e1, 16, 24, 4, 8, 8]"
    spec_file.write_text(str(data).replace("'[1e1", "[1e1").replace("8]'", "8]"))
    assert str(pytest.raises(SpecError, load_spec, spec_file).value).endswith(
        "stages[0].modules[0].ch1x1: must be an integer, got 10.0")
    space_file = tmp_path / "space.yaml"
    space_file.write_text("base: googlenet_mini\nvary: [{widths: ch1x1, choices: [1e1]}]\n"
                          "budget: {max_params: 1e5}\n")
    assert str(pytest.raises(SpecError, load_space, space_file).value).endswith(
        "vary[0]: ch1x1 widths must be integers >= 1, got 10.0")
    space_file.write_text("base: googlenet_mini\nbudget: {max_params: 1e5}\n")
    assert load_space(space_file).budget.max_params == 100_000


def test_name_or_file_resolution_is_shared(tmp_path):
    spec_file = tmp_path / "mini.yaml"
    spec_file.write_text("name: mini\n")
    assert resolve_spec(str(spec_file)).name == "mini"
    assert get_space("mini_bottlenecks").base == get_spec("googlenet_mini")
    for resolve, field, what in ((resolve_spec, "spec", "spec"), (get_space, "space", "search space")):
        with pytest.raises(SpecError, match=rf"^{field}: 'nothing' is neither a registered {what} \("):
            resolve("nothing")
        with pytest.raises(SpecError, match=rf"^{field}: must be a registered {what} name or a file, got \[1, 2\]"):
            resolve([1, 2])
        for long_name in ("x" * 100_000, "x" * 100_000 + ".yaml"):
            assert len(str(pytest.raises(SpecError, resolve, long_name).value)) < 400
        with pytest.raises(SpecError, match="not a regular file"):
            resolve(str(tmp_path))


def test_error_values_never_expand_aliases():
    text = LAUGHS.replace("a: &a", "x: &a") + "name: net\nstem: *i\n"
    with pytest.raises(SpecError) as info:
        spec_from_text(text.replace("b: &b", "y: &b", 1))
    assert len(str(info.value)) < 300
    data = get_spec("googlenet_mini").to_dict()
    data["stages"][0]["modules"][0] = [[list(range(10**4))] * 10**4] * 6
    with pytest.raises(SpecError, match=r"^stages\[0\]\.modules\[0\]\.ch1x1: must be an integer, got \[\[0, 1, 2"):
        type(get_spec("googlenet_mini")).from_dict(data)


@pytest.mark.parametrize("text, message", [
    ("name: x\ninput_shape: [" + "9" * 5000 + ", 1, 3]\n", "not valid YAML: a number has more than 4300 digits"),
    ("name: x\ninput_shape: [" + "9" * 4000 + ", 1, 3]\n", "input_shape[0]: must be < 2**63, got an integer of"),
    ("name: 2001-13-01\n", "not valid YAML: month must be in 1..12"),
    ("name: !!python/object:os.system x\n", "not valid YAML: could not determine a constructor"),
])
def test_odd_yaml_values_are_spec_errors(text, message):
    with pytest.raises(SpecError) as info:
        spec_from_text(text)
    assert message in str(info.value) and len(str(info.value)) < 300


def test_cli_refuses_hostile_files_with_one_line(tmp_path, capsys):
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS + "name: *i\n")
    for target in (str(path), str(tmp_path), "/dev/zero"):
        assert main(["summary", target]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {target}: ") and len(err.strip().splitlines()) == 1


def test_every_reader_refuses_what_is_not_a_regular_file_in_the_same_words(tmp_path):
    """One check (`utils/files.py`) for the spec, weights, model and image readers: a FIFO, a device and a directory
    are named as what they are, before a byte is read."""
    from inception_keras.cli.common import CommandError
    from inception_keras.cli.weights import load_image
    from inception_keras.pretrained.caffe_file import read_caffemodel
    from inception_keras.pretrained.convert import detect_source
    from inception_keras.pretrained.slim_file import read_slim_checkpoint
    from inception_keras.pretrained.torch_file import read_torch_state_dict
    from inception_keras.serialize import read_text_file
    from inception_keras.utils.errors import UserError
    from inception_keras.utils.keras_archive import check_keras_file

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    readers = {"spec": read_text_file, "weights source": detect_source, "torch": read_torch_state_dict,
               "caffe": read_caffemodel, "keras": check_keras_file, "image": lambda path: load_image(path, 1.0, 10**6),
               "slim": lambda path: read_slim_checkpoint(f"{path}.ckpt")}
    os.mkfifo(tmp_path / "fifo.ckpt")
    for path, kind in ((tmp_path / "fifo", "a FIFO"), ("/dev/null", "a character device")):
        for name, read in readers.items():
            if name == "slim" and path == "/dev/null":
                continue  # a checkpoint is named by its prefix: /dev/null.ckpt does not exist
            with pytest.raises((UserError, CommandError)) as info:
                read(path)
            assert str(path) in str(info.value) and f"not a regular file ({kind})" in str(info.value), name
    for name in ("spec", "torch", "caffe", "keras", "image"):
        with pytest.raises((UserError, CommandError), match=r"not a regular file \(a directory\)"):
            readers[name](tmp_path / "dir")
