"""Spec files: YAML (loaded with `yaml.safe_load` semantics) and JSON, written atomically.

Spec files and search-space files share the reader (`read_text_file`: regular files up to 4 MiB, UTF-8),
the parser (`parse_document`: one YAML loader, bounded size and depth) and name-or-file resolution
(`name_or_file`).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from inception_keras.utils.atomic import atomic_write_text
from inception_keras.utils.files import mode_problem
from inception_keras.cost import validate
from inception_keras.utils.errors import UserError, error_text
from inception_keras.spec import NetworkSpec, SpecError, show


# Real specs and spaces hold a few hundred values and take a few kB; pure-Python YAML reads about 1 MB/s
MAX_FILE_BYTES = 4 * 2**20
MAX_VALUES = 100_000
FILE_SUFFIXES = (".yaml", ".yml", ".json")


class _TooLarge(Exception):
    pass


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`), and stops after composing
    MAX_VALUES nodes, so that a document too large to accept is never read to its end."""

    def __init__(self, stream):
        super().__init__(stream)
        self.nodes_composed = 0

    def compose_node(self, parent, index):
        self.nodes_composed += 1
        if self.nodes_composed > MAX_VALUES:
            raise _TooLarge
        return super().compose_node(parent, index)


class _SpecDumper(yaml.SafeDumper):
    """Writes each mapping of plain values (a module, a layer, a head) as one flow-style row; knows the
    loader's float pattern, so strings that match it (a stage named "1e5") are quoted."""


for _cls in (_SpecLoader, _SpecDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                               list("-+0123456789."))


def _represent_dict(dumper, data):
    flow = all(not isinstance(value, (dict, list)) for value in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


_SpecDumper.add_representer(dict, _represent_dict)


def spec_to_yaml(spec: NetworkSpec) -> str:
    return yaml.dump(spec.to_dict(), Dumper=_SpecDumper, sort_keys=False, default_flow_style=None, width=120)


def spec_to_json(spec: NetworkSpec) -> str:
    return json.dumps(spec.to_dict(), indent=2)


def read_text_file(path: str | os.PathLike, what: str = "spec file") -> str:
    """The UTF-8 text of a regular file of at most MAX_FILE_BYTES, refused before reading when it is not one.

    Raises:
        SpecError: naming `path`: it cannot be opened, is not a regular file (a directory, a device, a FIFO), is
            larger than the limit, or is not UTF-8.
    """
    name = file_label(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens without waiting for a writer
    except (OSError, ValueError) as error:
        raise SpecError(name, f"cannot read {what}: {getattr(error, 'strerror', None) or error}") from None
    try:
        info = os.fstat(fd)
        if mode_problem(info.st_mode):
            raise SpecError(name, f"cannot read {what}: {mode_problem(info.st_mode)}")
        if info.st_size > MAX_FILE_BYTES:
            raise SpecError(name, f"{what} too large: {info.st_size:,} bytes, the limit is {MAX_FILE_BYTES:,}")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise SpecError(name, f"cannot read {what}: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(name, f"{what} too large: over the limit of {MAX_FILE_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(name, f"not a UTF-8 text file: {error.reason} at byte {error.start}") from None


def file_label(path: str | os.PathLike) -> str:
    """A file's path as error messages name it: as given, or a bounded repr when it is long or not printable."""
    name = os.fspath(path)
    return name if len(name) <= 200 and name.isprintable() else show(name, 120)


def parse_document(text: str, source: str = "<string>", fmt: str = "yaml") -> Any:
    """Plain data from YAML (`yaml.safe_load` plus `1e-4` as a float) or JSON text, refused when it is not
    valid, nested too deeply, refers to itself, or holds more than MAX_VALUES values once aliases are expanded.

    Raises:
        SpecError: naming `source`.
    """
    try:
        data = json.loads(text) if fmt == "json" else yaml.load(text, Loader=_SpecLoader)
        count = expanded_size(data)
    except RecursionError:
        raise SpecError(source, "nested too deeply") from None
    except _TooLarge:
        raise SpecError(source, f"too large: over the limit of {MAX_VALUES:,} values") from None
    except _SelfReference:
        raise SpecError(source, "a YAML alias refers to the mapping or list that holds it") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as error:
        reason = ("a number has more than 4300 digits" if "integer string conversion" in str(error)
                  else error_text(error, 200))
        raise SpecError(source, f"not valid {fmt.upper()}: {reason}") from None
    if count > MAX_VALUES:
        shown = f"{count:,}" if count < 10**15 else "more than 10^15"
        expanded = " once YAML aliases are expanded" if fmt == "yaml" else ""
        raise SpecError(source, f"too large: {shown} values{expanded}, the limit is {MAX_VALUES:,}")
    return data


class _SelfReference(Exception):
    pass


def expanded_size(data: Any) -> int:
    """How many values (containers, keys, scalars) `data` holds with shared (aliased) parts counted each time
    they occur; each shared container is walked once, so a billion-laughs document counts in microseconds.

    Raises:
        _SelfReference: a container holds itself (a YAML alias to an enclosing node).
    """
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if children is None:
            continue
        if done:
            open_ids.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] if _children(child) is not None else 1 for child in children)
        elif id(node) in open_ids:
            raise _SelfReference
        elif id(node) not in sizes:
            open_ids.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)
    return sizes[id(data)] if _children(data) is not None else 1


def _children(node: Any) -> list | None:
    if isinstance(node, dict):
        return [*node.keys(), *node.values()]
    if isinstance(node, (list, tuple, set, frozenset)):
        return list(node)
    return None


def spec_from_text(text: str, source: str = "<string>", fmt: str = "yaml") -> NetworkSpec:
    """Parse, build and validate a spec; any problem is a SpecError naming `source`."""
    data = parse_document(text, source, fmt)
    try:
        return validate(NetworkSpec.from_dict(data))
    except RecursionError:
        raise SpecError(source, "nested too deeply") from None


def load_document(path: str | os.PathLike, what: str = "spec file") -> Any:
    """Plain data from a `.json` file (JSON) or any other (YAML), through `read_text_file` and `parse_document`."""
    fmt = "json" if Path(path).suffix.lower() == ".json" else "yaml"
    return parse_document(read_text_file(path, what), file_label(path), fmt)


def within_file(error: SpecError, path: str | os.PathLike) -> SpecError:
    """`error` with its path prefixed by the file's (unless it already names it)."""
    name = file_label(path)
    if error.path == name or error.path.startswith(f"{name}: "):
        return error
    return SpecError(f"{name}: {error.path}" if error.path else name, error.message)


def load_spec(path: str | os.PathLike) -> NetworkSpec:
    """A spec from a `.yaml`/`.yml`/`.json` file; any problem is a SpecError naming the file."""
    try:
        return validate(NetworkSpec.from_dict(load_document(path)))
    except SpecError as error:
        raise within_file(error, path) from None
    except RecursionError:
        raise SpecError(file_label(path), "nested too deeply") from None


def looks_like_file(name: str) -> bool:
    """Whether `name` is meant as a file: it has a spec-file suffix or something exists at that path."""
    return os.path.splitext(name)[1].lower() in FILE_SUFFIXES or os.path.exists(name)


def name_or_file(name_or_path: Any, names: Iterable[str], field: str, what: str, hint: str = "") -> str | Path:
    """`name_or_path` as one of the registered `names` (returned as is) or as a file (returned as a Path).

    Raises:
        SpecError: naming `field`, when it is neither (or not a string).
    """
    names = list(names)
    if isinstance(name_or_path, os.PathLike):
        return Path(name_or_path)
    if not isinstance(name_or_path, str):
        raise SpecError(field, f"must be a registered {what} name or a file, got {show(name_or_path)}")
    if name_or_path in names:
        return name_or_path
    if looks_like_file(name_or_path):
        return Path(name_or_path)
    raise SpecError(field, f"{show(name_or_path)} is neither a registered {what} ({', '.join(names)}) "
                           f"nor a .yaml/.yml/.json file{hint}")


CLASS_NAMES_FILE = "class_names.txt"


def write_class_names(path: str | os.PathLike, names: list[str]) -> Path:
    """One class name per line, in label order, written atomically."""
    return atomic_write_text(path, "".join(f"{name}\n" for name in names))


def read_class_names(path: str | os.PathLike) -> list[str]:
    """The names `write_class_names` wrote; a missing or unreadable file is an OSError / UnicodeDecodeError."""
    return Path(path).read_text(encoding="utf-8").splitlines()


def save_spec(spec: NetworkSpec, path: str | os.PathLike) -> Path:
    """Write `spec` as JSON (`.json`) or YAML (anything else), atomically."""
    text = spec_to_json(spec) if Path(path).suffix.lower() == ".json" else spec_to_yaml(spec)
    return atomic_write_text(path, text)


RUN_MODEL_FILE = "best.keras"  # a training run's files (inception_keras.training.run_dir writes them)
RUN_SPEC_FILE = "spec.yaml"
RUN_RECORD_FILE = "run.json"


class RunFilesError(UserError):
    """A path that is neither a finished training run directory nor a `.keras` file."""


def run_files(run: str | os.PathLike) -> tuple[Path, Path | None, Path | None]:
    """(model file, spec file or None, class-names file or None) of a training run directory (`best.keras`,
    `spec.yaml`, `class_names.txt`) or of a `.keras` file (the spec and class names beside it, where they are);
    found without reading the model, so what the spec allows can be checked before Keras is loaded."""
    run = Path(run)
    if run.is_dir():
        missing = [name for name in (RUN_MODEL_FILE, RUN_SPEC_FILE, CLASS_NAMES_FILE) if not (run / name).exists()]
        if missing:
            raise RunFilesError(f"{run} is not a finished training run: missing {', '.join(missing)}")
        return run / RUN_MODEL_FILE, run / RUN_SPEC_FILE, run / CLASS_NAMES_FILE
    if run.suffix == ".keras" and run.is_file():
        beside = [run.parent / name for name in (RUN_SPEC_FILE, CLASS_NAMES_FILE)]
        return run, *(path if path.exists() else None for path in beside)
    raise RunFilesError(f"{run} is neither a training run directory nor a .keras file")


def run_record_of(run: str | os.PathLike) -> dict | None:
    """The `run.json` of a training run directory, or of the directory a `.keras` file is in; None where there is
    none or it is not a JSON object (nothing here vouches for it: callers read fields defensively)."""
    path = Path(run)
    record = (path if path.is_dir() else path.parent) / RUN_RECORD_FILE
    try:
        data = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def elastic_choices(run: str | os.PathLike) -> dict[tuple[str, str], tuple[int, ...]] | None:
    """The widths an elastic run was trained at, {(module, width field): choices} from its `run.json`; None where
    the run is not elastic or its record does not say them in that form."""
    elastic = _elastic_recipe(run)
    choices = elastic.get("choices") if isinstance(elastic, dict) else None
    if not isinstance(choices, list):
        return None
    found = {}
    for entry in choices:
        if not (isinstance(entry, list) and len(entry) == 3 and all(isinstance(v, str) for v in entry[:2])
                and isinstance(entry[2], list) and all(type(v) is int for v in entry[2])):
            return None
        found[(entry[0], entry[1])] = tuple(entry[2])
    return found


def is_elastic_run(run: str | os.PathLike) -> bool:
    """Whether `run` was trained elastic (`train --elastic`, its `run.json` says so): its children are its first
    channels, usable after batch-norm recalibration alone."""
    return bool(_elastic_recipe(run))


def _elastic_recipe(run: str | os.PathLike):
    """The `recipe.elastic` field of a run's `run.json` as it is written; None where there is none."""
    recipe = (run_record_of(run) or {}).get("recipe")
    return recipe.get("elastic") if isinstance(recipe, dict) else None


_SUFFIXES = {"": 1, "k": 10**3, "K": 10**3, "m": 10**6, "M": 10**6, "g": 10**9, "G": 10**9}
MAX_COUNT = 10**15
_COUNT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kKmMgG]?)\s*")


def parse_count(text: Any, where: str = "budget") -> int:
    """`2.5M` -> 2500000, `600M`, `1.2G`, `150k`, or a plain number.

    Raises:
        SpecError: naming `where`: not a count, not finite, not > 0, or above 10^15.
    """
    number = _count_number(text, where)
    if isinstance(number, float) and not math.isfinite(number):
        raise SpecError(where, f"must be a finite count, got {show(text)}")
    if number > MAX_COUNT:
        raise SpecError(where, f"must be at most 10^15, got {show(text)}")
    value = round(number)
    if value <= 0:
        raise SpecError(where, f"must be > 0, got {show(text)}")
    return value


def _count_number(text: Any, where: str) -> int | float:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    match = _COUNT.fullmatch(text) if isinstance(text, str) and len(text) <= 40 else None
    if not match:
        raise SpecError(where, f"must be a count such as 2500000, 2.5M, 600M or 1.2G; got {show(text)}")
    return float(match.group(1)) * _SUFFIXES[match.group(2)]
