"""Property-based fuzzing of every loader and of the CLI: any input ends in a valid result or the project's own
error (a UserError, or SystemExit(0) from --help), never in another exception.

The default run keeps each property to about a hundred examples; `make test-slow` runs the same properties with
many more (the `_slow` twins).
"""

import contextlib
import copy
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inception_keras import NetworkSpec, get_spec, list_specs, network_cost, spec_to_yaml
from inception_keras.cli import build_parser, main
from inception_keras.utils.errors import UserError
from inception_keras.serialize import load_spec, spec_from_text
from search.budget import PointCost, check_feasible
from search.space import SearchSpace, load_space, space_from_dict

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_MESSAGE = 1000

SPEC_DICTS = [get_spec(name).to_dict() for name in list_specs()]
SPACE_DICTS = [
    {"name": "mini", "base": "googlenet_mini", "budget": {"max_params": "120k", "model": "inference"},
     "vary": [{"widths": ["ch3x3_reduce", "ch5x5_reduce"], "choices": [0, 4, 8, 16]},
              {"modules": ["3a", "4b"], "widths": "pool_proj", "range": {"min": 4, "max": 32, "step": 4}}]},
    {"base": "googlenet_mini", "budget": {"max_params": 90_000, "max_macs": "8M", "model": "training"}},
]


def _keys(data):
    if isinstance(data, dict):
        for key, value in data.items():
            yield key
            yield from _keys(value)
    elif isinstance(data, list):
        for item in data:
            yield from _keys(item)


WORDS = sorted({key for data in SPEC_DICTS + SPACE_DICTS for key in _keys(data)}
               | {"max", "avg", "same", "valid", "ceil", "adaptive_avg", "batch_norm", "none", "caffe", "relu",
                  "4a", "3a", "googlenet", "googlenet_mini", "all", "ch1x1", "min", "max", "step", "1e5", "-1",
                  "", " ", "/", ".", "..", "é", "a/b", "2.5M", "inf", "nan", "1e999", "x" * 200})

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 300), st.sampled_from([2**63, 10**400]),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.sampled_from(WORDS))
structures = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=7),
    st.dictionaries(st.one_of(st.sampled_from(WORDS), st.text(max_size=6), st.integers()), children, max_size=6)),
    max_leaves=30)


@st.composite
def mutated(draw, originals):
    """A real spec or space dict with up to four random edits: a number or word nudged, a value replaced, a key or
    item dropped, a key added, a list item repeated."""
    data = copy.deepcopy(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(0, 4))):
        _edit(draw, data)
    return data


def _edit(draw, data):
    paths = list(_paths(data))
    if not paths:
        return
    *parents, key = draw(st.sampled_from(paths))
    node = data
    for parent in parents:
        node = node[parent]
    child = node[key]
    action = draw(st.sampled_from(("nudge", "nudge", "replace", "scalar", "drop", "add", "repeat")))
    if action == "nudge":
        node[key] = draw(st.integers(0, 300) if isinstance(child, int) else st.sampled_from(WORDS))
    elif action == "drop":
        del node[key]
    elif action == "add" and isinstance(node, dict):
        node[draw(st.sampled_from(WORDS))] = draw(structures)
    elif action == "repeat" and isinstance(node, list):
        node.insert(key, node[key])
    else:
        node[key] = draw(scalars if action == "scalar" else structures)


def _paths(node, prefix=()):
    """The key path of every value inside `node`."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _spec_text(data):
    return yaml.safe_dump(data, sort_keys=False) if data is not None else ""


printable = st.characters(min_codepoint=32, max_codepoint=0x2FF)
yaml_edits = st.sampled_from(["&a ", "*a", "[", "]", "{", "}", ": ", "- ", "!!", "!!set ", "!!binary ", "\t",
                              "\n", "#", "'", '"', "<<: ", "? ", "1e5", ".nan", "-.inf", "0x1f", "1_000", "9" * 30,
                              "2001-13-01", "\x00", "\ufeff", "\ud800"])


@st.composite
def near_yaml(draw):
    """The YAML of a real spec with a few insertions, deletions and YAML-significant snippets."""
    text = spec_to_yaml(get_spec(draw(st.sampled_from(list_specs()))))
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(yaml_edits | st.text(printable, max_size=3)) + text[at + cut:]
    return text


documents = st.one_of(structures.map(_spec_text), mutated(SPEC_DICTS).map(_spec_text), near_yaml(),
                      st.text(max_size=60), mutated(SPEC_DICTS).map(json.dumps))
raw_bytes = st.one_of(st.binary(max_size=200), documents.map(lambda text: text.encode("utf-8", "surrogatepass")))


def _outcome(call):
    """The call's result, or None when it raised a UserError with a short one-line message."""
    try:
        return call()
    except UserError as error:
        message = str(error)
        assert message and len(message) <= MAX_MESSAGE and "\n" not in message.strip("\n"), message
        return None


def _check_spec(spec):
    """An accepted spec round-trips through dict and YAML and, when its feature maps fit, through text."""
    if spec is None:
        return
    assert isinstance(spec, NetworkSpec)
    assert NetworkSpec.from_dict(spec.to_dict()) == spec
    if _outcome(lambda: network_cost(spec)) is not None:
        assert spec_from_text(spec_to_yaml(spec)) == spec


def _check_space(space):
    """An accepted space has dimensions, maps points to valid specs and prices them exactly."""
    if space is None:
        return
    assert isinstance(space, SearchSpace) and space.dimensions
    point = space.smallest()
    exact = network_cost(space.spec_for(point))
    model_params = exact.inference_params if space.budget.model == "inference" else exact.total_params
    assert PointCost(space)(point)[0] == model_params
    _outcome(lambda: check_feasible(space))


def _write(data: bytes, suffix: str) -> Path:
    handle, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return Path(name)


def _from_file(load, data: bytes, suffix: str):
    path = _write(data, suffix)
    try:
        return _outcome(lambda: load(path))
    finally:
        path.unlink()


def _twins(*strategies):
    """A fast property test and its `slow` twin with many more examples."""
    def decorate(body):
        fast = FAST(given(*strategies)(body))
        slow = pytest.mark.slow(SLOW(given(*strategies)(body)))
        return fast, slow
    return decorate


def _spec_from_dict(data):
    _check_spec(_outcome(lambda: NetworkSpec.from_dict(data)))


def _spec_from_text(text):
    _check_spec(_outcome(lambda: spec_from_text(text)))
    _check_spec(_outcome(lambda: spec_from_text(text, "x.json", "json")))


def _spec_from_file(data, suffix):
    _check_spec(_from_file(load_spec, data, suffix))


def _space_from_dict(data):
    _check_space(_outcome(lambda: space_from_dict(data)))


def _space_from_file(data, suffix):
    _check_space(_from_file(load_space, data, suffix))


test_spec_from_dict, test_spec_from_dict_slow = _twins(st.one_of(structures, mutated(SPEC_DICTS)))(
    _spec_from_dict)
test_spec_from_text, test_spec_from_text_slow = _twins(st.one_of(documents, raw_bytes))(_spec_from_text)
test_spec_from_file, test_spec_from_file_slow = _twins(raw_bytes, st.sampled_from([".yaml", ".json", ".txt"]))(
    _spec_from_file)
test_space_from_dict, test_space_from_dict_slow = _twins(st.one_of(structures, mutated(SPACE_DICTS)))(
    _space_from_dict)
test_space_from_file, test_space_from_file_slow = _twins(
    st.one_of(raw_bytes, mutated(SPACE_DICTS).map(lambda d: _spec_text(d).encode())),
    st.sampled_from([".yaml", ".json"]))(_space_from_file)


# --- the command line -------------------------------------------------------------------------------------------

def _parser_words():
    """Every subcommand and option the parser knows, to build argument lists from."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    options = {option for sub in commands.values() for action in sub._actions for option in action.option_strings}
    return sorted(commands), sorted(options)


COMMANDS, OPTIONS = _parser_words()
ARG_WORDS = ["googlenet", "googlenet_mini", "report", "0", "1", "-1", "64", "2.5M", "inf", "nan", "1e999",
             "x.yaml", "/dev/zero", ".", "/", "", "-", "--", "é", "\x00", "9" * 100]
LONG = "9" * 5000  # an argument echoed whole: test_cli_bounds_a_long_argument
tokens = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(ARG_WORDS + [LONG]), st.text(max_size=10))


def _parse(argv):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, argv  # --help
    except UserError:
        pass


test_cli_parser, test_cli_parser_slow = _twins(
    st.one_of(st.lists(tokens, max_size=6), st.tuples(st.sampled_from(COMMANDS), st.lists(tokens, max_size=6))
              .map(lambda t: [t[0], *t[1]])))(_parse)

CHEAP_OPTIONS = {"specs": [], "spec": [], "summary": ["--input-size", "--classes", "--json"],
                 "search": ["--seed", "--dir", "--tuner"]}


@st.composite
def cheap_argv(draw):
    """`specs`, `spec`, `summary` or `search report DIR` with random arguments: nothing that trains or exports."""
    command = draw(st.sampled_from(sorted(CHEAP_OPTIONS)))
    words = st.one_of(st.sampled_from(CHEAP_OPTIONS[command] + ["-h"]) if CHEAP_OPTIONS[command]
                      else st.just("-h"), st.sampled_from(ARG_WORDS + list_specs()),
                      st.text(max_size=10).filter(lambda word: not word.startswith("-")))
    rest = draw(st.lists(words, max_size=5))
    if command == "search":
        return ["search", "report", draw(st.sampled_from(["runs/no_such_search", "/", ".", "é"])), *rest]
    return [command, *rest]


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, argv
        return
    assert code in (0, 2), (argv, err.getvalue())
    if code == 2:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= MAX_MESSAGE, lines


test_cli_main, test_cli_main_slow = _twins(cheap_argv())(_main)


@pytest.mark.parametrize("argv", [["spec", LONG], ["specs", LONG]])
def test_cli_bounds_a_long_argument(argv, capsys):
    assert main(argv) == 2
    assert len(capsys.readouterr().err) <= MAX_MESSAGE
