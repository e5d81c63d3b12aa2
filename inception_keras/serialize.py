"""Spec files: YAML (loaded with `yaml.safe_load`) and JSON, written atomically."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from inception_keras.atomic import atomic_write_text
from inception_keras.cost import validate
from inception_keras.spec import NetworkSpec, SpecError


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


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


def spec_from_text(text: str, source: str = "<string>", fmt: str = "yaml") -> NetworkSpec:
    """Parse, build and validate a spec; any problem is a SpecError naming `source`."""
    try:
        data = json.loads(text) if fmt == "json" else yaml.load(text, Loader=_SpecLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(source, f"not valid {fmt.upper()}: {' '.join(str(error).split())}") from None
    return validate(NetworkSpec.from_dict(data))


def load_spec(path: str | os.PathLike) -> NetworkSpec:
    """A spec from a `.yaml`/`.yml`/`.json` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(str(path), f"cannot read spec file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(str(path), f"not a UTF-8 text file: {error}") from None
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    try:
        return spec_from_text(text, str(path), fmt)
    except SpecError as error:
        if error.path.startswith(str(path)):
            raise
        raise SpecError(f"{path}: {error.path}" if error.path else str(path), error.message) from None


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
