"""Declarative Inception network specs: frozen dataclasses of plain values.

An Inception module is the six widths of Table 1 of Szegedy et al., "Going Deeper
with Convolutions" (CVPR 2015), in the paper's column order: #1x1, #3x3 reduce,
#3x3, #5x5 reduce, #5x5, pool proj. A network is input + stem + stages + aux heads +
head. Every field is checked when a spec is made; errors name the field's path:

    stages[1].modules[0].ch3x3: must be > 0, got -4

Whole-network checks that need feature-map sizes live in `inception_keras.cost`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from inception_keras.utils.errors import UserError, short_repr

NORMALIZATIONS = ("none", "batch_norm")
ACTIVATIONS = ("relu", "relu6", "elu", "selu", "gelu", "silu", "swish", "tanh", "leaky_relu", "mish")
POOL_KINDS = ("max", "avg")
POOL_PADDINGS = ("same", "valid", "ceil")
AUX_POOLS = ("avg", "adaptive_avg")
INPUT_CONVERSIONS = ("none", "caffe")
MAX_INT = 2**63 - 1  # TensorFlow's shapes and attributes are int64
# TensorFlow's name scopes take ASCII letters, digits and `_.-` (a model's name may not start with `_` or `-`);
# names are also directory names (runs/NAME, saved_models/NAME), so never `/` or a leading `.`
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
STAGE_NAME_PATTERN = re.compile(r"[A-Za-z0-9]{1,64}")


def show(value: Any, limit: int = 60) -> str:
    """A user's value for an error message: a bounded repr that never expands huge or aliased structures."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        return short_repr(value, limit)
    except ValueError:  # an integer too long for repr() somewhere inside
        return f"a {type(value).__name__} too large to show"


def name_list(names: Iterable[str], limit: int = 12) -> str:
    """`a, b, c`, cut after `limit` names with how many there are in all."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


class SpecError(UserError, ValueError):
    """A spec field is wrong. `path` names it, e.g. `stages[1].modules[0].ch3x3`."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def with_prefix(self, prefix: str) -> "SpecError":
        if not self.path:
            return SpecError(prefix, self.message)
        joiner = "" if self.path.startswith("[") else "."
        return SpecError(f"{prefix}{joiner}{self.path}", self.message)


def _check_int(name: str, value: Any, minimum: int, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(name, f"must be an integer, got {show(value)}")
    if value < minimum or (strict and value == minimum):
        raise SpecError(name, f"must be {'>' if strict else '>='} {minimum}, got {show(value)}")
    if value > MAX_INT:
        raise SpecError(name, f"must be < 2**63, got {show(value)}")


def _check_float(name: str, value: Any, low: float, high: float, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(name, f"must be a number, got {show(value)}")
    if not low <= value <= high or (high_open and value == high):  # nan compares false: refused too
        bracket = ")" if high_open else "]"
        raise SpecError(name, f"must be in [{low}, {high}{bracket}, got {show(value)}")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if not isinstance(value, str) or value not in choices:
        raise SpecError(name, f"must be one of {', '.join(map(str, choices))}; got {show(value)}")


def _check_padding(name: str, value: Any, allow_int: bool) -> None:
    if isinstance(value, str):
        _check_choice(name, value, ("same", "valid") if allow_int else POOL_PADDINGS)
    elif allow_int:
        _check_int(name, value, 0)
    else:
        raise SpecError(name, f"must be one of {', '.join(POOL_PADDINGS)}; got {show(value)}")


@dataclass(frozen=True)
class InceptionSpec:
    """One Inception module, widths in Table 1's column order.

    A reduce width of 0 means no bottleneck: that branch's conv reads the module input.
    `ch5x5_kernel` is the "5x5" branch's kernel (torchvision and TF-slim use 3).
    `pool` is the pool branch's pooling (`max` or `avg`), `pool_size`x`pool_size`, stride 1.
    """

    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    ch5x5_reduce: int
    ch5x5: int
    pool_proj: int
    ch5x5_kernel: int = 5
    pool: str = "max"
    pool_size: int = 3

    def __post_init__(self):
        for name in ("ch1x1", "ch3x3", "ch5x5", "pool_proj"):
            _check_int(name, getattr(self, name), 0, strict=True)
        for name in ("ch3x3_reduce", "ch5x5_reduce"):
            _check_int(name, getattr(self, name), 0)
        _check_int("ch5x5_kernel", self.ch5x5_kernel, 1)
        _check_choice("pool", self.pool, POOL_KINDS)
        _check_int("pool_size", self.pool_size, 1)

    @property
    def widths(self) -> tuple[int, int, int, int, int, int]:
        return (self.ch1x1, self.ch3x3_reduce, self.ch3x3, self.ch5x5_reduce, self.ch5x5, self.pool_proj)

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


@dataclass(frozen=True)
class ConvSpec:
    """A stem convolution. `padding` is `same`, `valid`, or an explicit zero padding (int)."""

    filters: int
    kernel: int
    stride: int = 1
    padding: Union[str, int] = "same"

    def __post_init__(self):
        _check_int("filters", self.filters, 0, strict=True)
        _check_int("kernel", self.kernel, 1)
        _check_int("stride", self.stride, 1)
        _check_padding("padding", self.padding, allow_int=True)


@dataclass(frozen=True)
class PoolSpec:
    """A pooling layer: `kind` is `max` or `avg`.

    `padding` `ceil` is Caffe's and torch's `ceil_mode=True` with no padding: windows start
    at the top left and a last, partial window is kept. The builder realizes it as Keras
    `valid` or `same` where one of them is exactly equal (for 3x3/2 and 2x2/2 windows always).
    """

    kind: str = "max"
    size: int = 3
    stride: int = 2
    padding: str = "same"

    def __post_init__(self):
        _check_choice("kind", self.kind, POOL_KINDS)
        _check_int("size", self.size, 1)
        _check_int("stride", self.stride, 1)
        _check_padding("padding", self.padding, allow_int=False)


@dataclass(frozen=True)
class LRNSpec:
    """Local response normalization across channels, as in Caffe/AlexNet:
    x / (bias + alpha / size * sum of x^2 over `size` neighbouring channels) ** beta."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    bias: float = 1.0

    def __post_init__(self):
        _check_int("size", self.size, 1)
        if self.size % 2 == 0:
            raise SpecError("size", f"must be odd, got {self.size}")
        _check_float("alpha", self.alpha, 0.0, 1e6)
        _check_float("beta", self.beta, 0.0, 1e6)
        _check_float("bias", self.bias, 1e-12, 1e6)


StemLayer = Union[ConvSpec, PoolSpec, LRNSpec]


@dataclass(frozen=True)
class StageSpec:
    """Modules named `{name}a`, `{name}b`, ...; `pool` (if any) runs before them."""

    name: str
    modules: tuple[InceptionSpec, ...]
    pool: PoolSpec | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not STAGE_NAME_PATTERN.fullmatch(self.name):
            raise SpecError("name", f"must be 1 to 64 ASCII letters and digits (part of Keras layer names), "
                                    f"got {show(self.name)}")
        if not isinstance(self.modules, tuple) or not self.modules:
            raise SpecError("modules", "must be a non-empty tuple of InceptionSpec")
        if len(self.modules) > 26:
            raise SpecError("modules", f"at most 26 modules per stage, got {len(self.modules)}")
        for i, module in enumerate(self.modules):
            if not isinstance(module, InceptionSpec):
                raise SpecError(f"modules[{i}]", f"must be an InceptionSpec, got {type(module).__name__}")
        if self.pool is not None and not isinstance(self.pool, PoolSpec):
            raise SpecError("pool", f"must be a max_pool or avg_pool (or null), got {type(self.pool).__name__}")

    def module_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}{chr(ord('a') + i)}" for i in range(len(self.modules)))


@dataclass(frozen=True)
class AuxHeadSpec:
    """An auxiliary classifier after module `after` (e.g. `4a`).

    pool `avg`: average pool `pool_size`x`pool_size`, stride `pool_stride`, valid padding
    (the paper: 5x5/3). pool `adaptive_avg`: adaptive average pool to
    `pool_size`x`pool_size` (torchvision: 4x4). Then 1x1 conv `conv_width`, dense
    `dense_width`, dropout, linear classifier; its loss counts `loss_weight`.
    """

    after: str
    pool: str = "avg"
    pool_size: int = 5
    pool_stride: int = 3
    conv_width: int = 128
    dense_width: int = 1024
    dropout: float = 0.7
    loss_weight: float = 0.3

    def __post_init__(self):
        if not isinstance(self.after, str) or not self.after:
            raise SpecError("after", f"must name a module such as '4a', got {show(self.after)}")
        _check_choice("pool", self.pool, AUX_POOLS)
        _check_int("pool_size", self.pool_size, 1)
        _check_int("pool_stride", self.pool_stride, 1)
        _check_int("conv_width", self.conv_width, 0, strict=True)
        _check_int("dense_width", self.dense_width, 0, strict=True)
        _check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _check_float("loss_weight", self.loss_weight, 0.0, 1e6)


@dataclass(frozen=True)
class HeadSpec:
    """Global average pool, dropout, linear classifier with softmax."""

    dropout: float = 0.4
    classes: int = 1000

    def __post_init__(self):
        _check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        _check_int("classes", self.classes, 2)


@dataclass(frozen=True)
class NetworkSpec:
    """A whole Inception network.

    The model takes RGB in [-1, 1]. `input_conversion` `caffe` starts it with a layer that
    turns that into what BVLC Caffe's weights expect (BGR, 0-255, minus the mean 104/117/123).
    `bn_scale` False leaves out batch norm's gamma (TF-slim's `scale=False`).

    Feature-map sizes are checked by `inception_keras.cost.validate`, which every
    entry point (registry, file loading, builder, cost) runs.
    """

    name: str
    input_shape: tuple[int, int, int] = (224, 224, 3)
    input_conversion: str = "none"
    normalization: str = "none"
    activation: str = "relu"
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    bn_scale: bool = True
    stem: tuple[StemLayer, ...] = ()
    stages: tuple[StageSpec, ...] = ()
    aux_heads: tuple[AuxHeadSpec, ...] = ()
    head: HeadSpec = field(default_factory=HeadSpec)

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise SpecError("name", f"must be 1 to 100 ASCII letters, digits, '_', '.' or '-', starting with a letter "
                                    f"or digit (a Keras model name and a directory name), got {show(self.name)}")
        shape = self.input_shape
        if not isinstance(shape, tuple) or len(shape) != 3:
            raise SpecError("input_shape", f"must be [height, width, channels], got {show(shape)}")
        for i, size in enumerate(shape):
            _check_int(f"input_shape[{i}]", size, 0, strict=True)
        _check_choice("input_conversion", self.input_conversion, INPUT_CONVERSIONS)
        if self.input_conversion != "none" and shape[2] != 3:
            raise SpecError("input_conversion", f"{self.input_conversion!r} needs 3 input channels, got {shape[2]}")
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_float("bn_epsilon", self.bn_epsilon, 1e-12, 1.0)
        _check_float("bn_momentum", self.bn_momentum, 0.0, 1.0, high_open=True)
        if not isinstance(self.bn_scale, bool):
            raise SpecError("bn_scale", f"must be true or false, got {show(self.bn_scale)}")
        self._check_types()
        self._check_names()

    def _check_types(self):
        for name, value, kinds in (("stem", self.stem, (ConvSpec, PoolSpec, LRNSpec)),
                                   ("stages", self.stages, (StageSpec,)),
                                   ("aux_heads", self.aux_heads, (AuxHeadSpec,))):
            if not isinstance(value, tuple):
                raise SpecError(name, f"must be a tuple, got {type(value).__name__}")
            for i, item in enumerate(value):
                if not isinstance(item, kinds):
                    raise SpecError(f"{name}[{i}]", f"must be one of {[k.__name__ for k in kinds]}, "
                                                    f"got {type(item).__name__}")
        if not isinstance(self.head, HeadSpec):
            raise SpecError("head", f"must be a HeadSpec, got {type(self.head).__name__}")

    def _check_names(self):
        seen = set()
        for i, stage in enumerate(self.stages):
            if stage.name in seen:
                raise SpecError(f"stages[{i}].name", f"duplicate stage name {stage.name!r}")
            seen.add(stage.name)
        modules = self.module_names()
        if len(set(modules)) != len(modules):
            twice = next(name for i, name in enumerate(modules) if name in modules[:i])
            raise SpecError("stages", f"module names collide: {twice!r} twice")
        for i, aux in enumerate(self.aux_heads):
            if aux.after not in modules:
                raise SpecError(f"aux_heads[{i}].after",
                                f"no module named {show(aux.after)}; modules are {name_list(modules) or 'none'}")

    def module_names(self) -> tuple[str, ...]:
        return tuple(name for stage in self.stages for name in stage.module_names())

    def modules_by_name(self) -> dict[str, "InceptionSpec"]:
        return {name: module for stage in self.stages for name, module in zip(stage.module_names(), stage.modules)}

    def replace(self, **changes) -> "NetworkSpec":
        return dataclasses.replace(self, **changes)

    def with_module_widths(self, changes: dict, where: str = "stages") -> "NetworkSpec":
        """This spec with named modules' widths replaced: {module name: {width field: value}}."""
        unknown = set(changes) - set(self.module_names())
        if unknown:
            raise SpecError(where, f"{self.name!r} has no module {sorted(unknown)[0]!r}")
        stages = tuple(dataclasses.replace(stage, modules=tuple(
            dataclasses.replace(module, **changes[name]) if name in changes else module
            for name, module in zip(stage.module_names(), stage.modules))) for stage in self.stages)
        return self.replace(stages=stages)

    def stem_filters(self) -> dict[str, int]:
        """{name: filters} of the stem's convolutions, named as the builder names them: conv1, conv2, ..."""
        convolutions = [layer for layer in self.stem if isinstance(layer, ConvSpec)]
        return {f"conv{number}": layer.filters for number, layer in enumerate(convolutions, 1)}

    def with_stem_filters(self, changes: dict, where: str = "stem") -> "NetworkSpec":
        """This spec with named stem convolutions' filters replaced: {"conv1": value} (names as `stem_filters`)."""
        unknown = set(changes) - set(self.stem_filters())
        if unknown:
            raise SpecError(f"{where}.{sorted(unknown)[0]}", f"{self.name!r} has no such stem convolution; it has "
                                                             f"{', '.join(self.stem_filters()) or 'none'}")
        stem, number = [], 0
        for layer in self.stem:
            if isinstance(layer, ConvSpec):
                number += 1
                layer = dataclasses.replace(layer, filters=changes.get(f"conv{number}", layer.filters))
            stem.append(layer)
        return self.replace(stem=tuple(stem))

    def with_input_size(self, size: int) -> "NetworkSpec":
        return self.replace(input_shape=(size, size, self.input_shape[2]))

    def with_classes(self, classes: int) -> "NetworkSpec":
        try:
            head = dataclasses.replace(self.head, classes=classes)
        except SpecError as error:
            raise error.with_prefix("head") from None
        return self.replace(head=head)

    def without_aux(self) -> "NetworkSpec":
        return self.replace(aux_heads=())

    def to_dict(self) -> dict:
        """Plain dict (lists, not tuples) that `from_dict` turns back into an equal spec."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: Any) -> "NetworkSpec":
        """Spec from a plain dict; a bad field raises SpecError naming its path."""
        return _from_plain(NetworkSpec, data, "")


def key_text(key: Any) -> str:
    """A mapping key as it goes into an error path: as written when short and plain, else a bounded repr."""
    return key if isinstance(key, str) and key.isprintable() and 0 < len(key) <= 40 else show(key, 40)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _tagged_to_plain(layer: StemLayer) -> dict:
    body = {f.name: getattr(layer, f.name) for f in dataclasses.fields(layer) if f.name != "kind"}
    tag = f"{layer.kind}_pool" if isinstance(layer, PoolSpec) else _TAGS_BY_TYPE[type(layer)]
    return {tag: body}


def _tagged_from_plain(data: Any, path: str) -> StemLayer:
    if not isinstance(data, dict) or len(data) != 1:
        raise SpecError(path, f"must be a one-key mapping such as {{conv: {{...}}}} with key one of "
                              f"{', '.join(_TAGGED)}; got {show(data)}")
    (tag, body), = data.items()
    if tag not in _TAGGED:
        raise SpecError(path, f"unknown layer type {show(tag)}; expected one of {', '.join(_TAGGED)}")
    cls, preset = _TAGGED[tag]
    body = {} if body is None else body
    if isinstance(body, dict) and "kind" in body:
        raise SpecError(_join(path, tag), "unknown key 'kind' (the layer type is the mapping key)")
    return _from_plain(cls, {**preset, **body} if isinstance(body, dict) else body, _join(path, tag))


def _to_plain(value: Any) -> Any:
    if isinstance(value, (ConvSpec, PoolSpec, LRNSpec)):
        return _tagged_to_plain(value)
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(item) for item in value]
    return value


def _sequence(data: Any, path: str, item) -> tuple:
    if not isinstance(data, (list, tuple)):
        raise SpecError(path, f"must be a list, got {type(data).__name__}")
    return tuple(item(value, f"{path}[{i}]") for i, value in enumerate(data))


def _module_from_plain(data: Any, path: str) -> InceptionSpec:
    if isinstance(data, (list, tuple)):
        if len(data) != 6:
            raise SpecError(path, f"a module as a list needs the six widths of Table 1, got {show(data)}")
        data = dict(zip(("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5", "pool_proj"), data))
    return _from_plain(InceptionSpec, data, path)


_NESTED = {
    NetworkSpec: {
        "input_shape": lambda v, p: _sequence(v, p, lambda x, _: x),
        "stem": lambda v, p: _sequence(v, p, _tagged_from_plain),
        "stages": lambda v, p: _sequence(v, p, lambda x, q: _from_plain(StageSpec, x, q)),
        "aux_heads": lambda v, p: _sequence(v, p, lambda x, q: _from_plain(AuxHeadSpec, x, q)),
        "head": lambda v, p: _from_plain(HeadSpec, v, p),
    },
    StageSpec: {
        "modules": lambda v, p: _sequence(v, p, _module_from_plain),
        "pool": lambda v, p: None if v is None else _tagged_from_plain(v, p),
    },
}


def _from_plain(cls, data: Any, path: str):
    if not isinstance(data, dict):
        raise SpecError(path, f"must be a mapping, got {type(data).__name__} {show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise SpecError(_join(path, key_text(key)), f"unknown key; expected one of {', '.join(fields)}")
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SpecError(path, f"missing required key(s): {', '.join(missing)}")
    nested = _NESTED.get(cls, {})
    kwargs = {key: nested[key](value, _join(path, key)) if key in nested else value
              for key, value in data.items()}
    try:
        return cls(**kwargs)
    except SpecError as error:
        raise error.with_prefix(path) if path else error


_TAGGED = {
    "conv": (ConvSpec, {}),
    "max_pool": (PoolSpec, {"kind": "max"}),
    "avg_pool": (PoolSpec, {"kind": "avg"}),
    "lrn": (LRNSpec, {}),
}
_TAGS_BY_TYPE = {ConvSpec: "conv", LRNSpec: "lrn"}
