"""Which specs can inherit a model's weights (`inception_keras.inherit.narrow`): the rules, on specs alone, without
Keras, so a command refuses what cannot work before it loads TensorFlow and a model.

A child spec inherits from a parent's when the two differ only in the six widths of each Inception module and the
filters of the stem's convolutions (and,
for a pretrained parent searched on other data, the class count and input size), with bottlenecks in the same
places (a reduce width is 0 in both or in neither).
"""

from __future__ import annotations

from inception_keras.spec import NetworkSpec
from inception_keras.utils.errors import UserError

WIDTHS = ("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5", "pool_proj")


class NarrowError(UserError, ValueError):
    """The child spec cannot inherit the parent's weights (it differs in more than module widths, or a bottleneck)."""


class SpecMismatchError(NarrowError):
    """A spec given with a model (a spec.yaml beside it, --parent-spec) describes another network."""


def check_inheritable(spec: NetworkSpec, child_spec: NetworkSpec, fresh_heads: bool = False) -> None:
    """Raise NarrowError unless the two specs differ only in module widths (and with `fresh_heads`, class count and
    input size), with bottlenecks in the same places."""
    check_same_network(spec, child_spec, fresh_heads)
    for name, parent, child in zip(spec.module_names(), _modules(spec), _modules(child_spec)):
        for width in ("ch3x3_reduce", "ch5x5_reduce"):
            before, after = getattr(parent, width), getattr(child, width)
            if (before == 0) != (after == 0):
                raise NarrowError(f"inception_{name}: {width} is {after} in the child spec and {before} in the "
                                  f"parent's: a branch {'without' if after == 0 else 'with'} a bottleneck cannot "
                                  f"inherit the weights of one {'with' if after == 0 else 'without'}")


def network_difference(spec: NetworkSpec, other: NetworkSpec, fresh_heads: bool = False) -> tuple | None:
    """(path, spec's value, other's value) of the first field in which two specs differ beyond module widths (and
    with `fresh_heads`, class count and input size); None where they do not."""
    return _first_difference(_comparable(spec, fresh_heads), _comparable(other, fresh_heads))


def check_same_network(spec: NetworkSpec, other: NetworkSpec, fresh_heads: bool = False) -> None:
    """Raise NarrowError, naming the first field, unless the specs differ only in module widths (and with
    `fresh_heads`, class count and input size)."""
    difference = network_difference(spec, other, fresh_heads)
    if difference is not None:
        path, ours, theirs = difference
        allowed = " (and the class count and input size)" if fresh_heads else ""
        raise NarrowError(f"child spec {path}: {theirs!r}, the parent's is {ours!r}; only the six widths of each "
                          f"Inception module{allowed} may differ")


def inheritable(spec: NetworkSpec, child_spec: NetworkSpec, fresh_heads: bool = False) -> bool:
    """Whether `narrow` can give `child_spec` the weights of a model of `spec`."""
    try:
        check_inheritable(spec, child_spec, fresh_heads)
    except NarrowError:
        return False
    return True


def _modules(spec: NetworkSpec):
    return [module for stage in spec.stages for module in stage.modules]


def _comparable(spec: NetworkSpec, fresh_heads: bool) -> dict:
    """`spec.to_dict()` without what may differ: the name, the module widths, the stem convolutions' filters (and
    the classes and input size)."""
    data = spec.to_dict()
    stages = [{**stage, "modules": [{key: value for key, value in module.items() if key not in WIDTHS}
                                    for module in stage["modules"]]} for stage in data["stages"]]
    stem = [{kind: {key: value for key, value in fields.items() if kind != "conv" or key != "filters"}
             for kind, fields in layer.items()} if isinstance(layer, dict) else layer for layer in data["stem"]]
    data = {**data, "stages": stages, "stem": stem, "name": None}
    if fresh_heads:
        data = {**data, "input_shape": data["input_shape"][2:], "head": {**data["head"], "classes": None}}
    return data


def _first_difference(ours, theirs, path: str = ""):
    """(path, ours, theirs) of the first leaf where two plain values differ, or None."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in list(ours) + [key for key in theirs if key not in ours]:
            found = _first_difference(ours.get(key), theirs.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for i, (a, b) in enumerate(zip(ours, theirs)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if ours == theirs else (path, ours, theirs)
