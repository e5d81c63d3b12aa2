"""Exact parameter and multiply-add counts from a spec alone (no Keras import).

Counts follow what `inception_keras.builder` builds, layer by layer, so that
`network_cost(spec).params == build_model(spec).count_params()` exactly.

Multiply-adds (MACs) count the multiplications of convolutions
(out_h * out_w * out_c * k_h * k_w * in_c) and dense layers (in * out); bias adds,
pooling, LRN, batch norm (foldable into the conv) and activations count 0.
Reference: Szegedy et al., "Going Deeper with Convolutions", Table 1 ("ops").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from inception_keras.spec import ConvSpec, InceptionSpec, LRNSpec, NetworkSpec, PoolSpec, SpecError

Shape = tuple  # (height, width, channels) or (units,)


@dataclass(frozen=True)
class LayerCost:
    """One Keras layer: its name in the built model, type, output shape and costs."""

    name: str
    type: str
    output_shape: Shape
    params: int = 0
    trainable_params: int = 0
    macs: int = 0
    kernel: int = 0  # a convolution's or pool's window side
    in_channels: int = 0  # a convolution's input channels


@dataclass(frozen=True)
class BlockCost:
    """A row of the Table 1 layout: a stem layer, an Inception module, a pool, a head."""

    name: str
    type: str
    output_shape: Shape
    layers: tuple[LayerCost, ...]
    patch: str = ""
    depth: int = 0
    widths: tuple[int, ...] = ()
    aux: bool = False

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)


@dataclass(frozen=True)
class NetworkCost:
    """Per-block costs of a network; `total_*` include aux heads, `inference_*` do not."""

    spec_name: str
    input_shape: Shape
    blocks: tuple[BlockCost, ...] = field(default_factory=tuple)

    def layers(self, include_aux: bool = True) -> tuple[LayerCost, ...]:
        return tuple(layer for block in self.blocks if include_aux or not block.aux for layer in block.layers)

    def _sum(self, quantity: str, include_aux: bool) -> int:
        return sum(getattr(layer, quantity) for layer in self.layers(include_aux))

    total_params = property(lambda self: self._sum("params", True))
    total_trainable_params = property(lambda self: self._sum("trainable_params", True))
    total_macs = property(lambda self: self._sum("macs", True))
    inference_params = property(lambda self: self._sum("params", False))
    inference_trainable_params = property(lambda self: self._sum("trainable_params", False))
    inference_macs = property(lambda self: self._sum("macs", False))

    def to_dict(self) -> dict:
        return {
            "spec": self.spec_name,
            "input_shape": list(self.input_shape),
            "layers": [{"name": layer.name, "type": layer.type, "output_shape": list(layer.output_shape),
                        "params": layer.params, "macs": layer.macs} for layer in self.layers()],
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "inference_params": self.inference_params,
            "inference_macs": self.inference_macs,
        }


def conv_params(in_channels: int, filters: int, kernel: int, bias: bool) -> int:
    return kernel * kernel * in_channels * filters + (filters if bias else 0)


def batch_norm_params(channels: int, scale: bool = True) -> tuple[int, int]:
    """(all, trainable): gamma (unless not `scale`), beta, moving mean, moving variance."""
    trainable = (2 if scale else 1) * channels
    return trainable + 2 * channels, trainable


def conv_macs(out_pixels: int, in_channels: int, filters: int, kernel: int) -> int:
    return out_pixels * kernel * kernel * in_channels * filters


def dense_params(units_in: int, units_out: int) -> int:
    return units_in * units_out + units_out


class _Collapse(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where


def _ceil_mode_size(size: int, kernel: int, stride: int) -> int:
    """Output size of Caffe's / torch's ceil-mode pooling without padding (a last window must start inside)."""
    out = -(-(size - kernel) // stride) + 1
    return out - 1 if (out - 1) * stride >= size else out


def _keras_paddings_for_ceil(size: int, kernel: int, stride: int) -> set[str]:
    """The Keras paddings whose windows are exactly ceil mode's along one axis of `size`."""
    out = _ceil_mode_size(size, kernel, stride)
    found = set()
    if size >= kernel and (size - kernel) // stride + 1 == out:
        found.add("valid")
    same = -(-size // stride)
    if same == out and max((same - 1) * stride + kernel - size, 0) <= 1:  # nothing padded before the first window
        found.add("same")
    return found


def keras_pool_padding(shape: Shape, kernel: int, stride: int, padding: str, where: str = "") -> str:
    """The Keras padding that realizes `padding` (`same`, `valid` or `ceil`) on a `shape` feature map."""
    if padding != "ceil":
        return padding
    h, w = shape[0], shape[1]
    if min(_ceil_mode_size(h, kernel, stride), _ceil_mode_size(w, kernel, stride)) < 1:
        raise _Collapse(where, f"a {kernel}x{kernel} window (padding 'ceil') needs a feature map of at least "
                               f"{kernel - stride + 1}x{kernel - stride + 1}, got {h}x{w}")
    both = _keras_paddings_for_ceil(h, kernel, stride) & _keras_paddings_for_ceil(w, kernel, stride)
    if not both:
        raise SpecError(where, f"ceil-mode {kernel}x{kernel}/{stride} pooling of a {h}x{w} feature map has no "
                               f"exact Keras equivalent ('valid' or 'same'); use another input size or padding")
    return "valid" if "valid" in both else "same"


def _window(shape: Shape, kernel: int, stride: int, padding, where: str) -> tuple[int, int]:
    """Output (height, width) of a conv or pool window; raises _Collapse if nothing is left."""
    h, w = shape[0], shape[1]
    if padding == "ceil":
        padding = keras_pool_padding(shape, kernel, stride, padding, where)
    if padding == "same":
        return math.ceil(h / stride), math.ceil(w / stride)
    pad = 0 if padding == "valid" else padding
    if min(h, w) + 2 * pad < kernel:
        need = kernel - 2 * pad
        raise _Collapse(where, f"a {kernel}x{kernel} window (padding {padding!r}) needs a feature map of at "
                               f"least {need}x{need}, got {h}x{w}")
    return (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1


class _Tracer:
    """Walks a spec in build order, producing the layers the builder makes."""

    def __init__(self, spec: NetworkSpec):
        self.spec = spec
        self.bn = spec.normalization == "batch_norm"
        self.blocks: list[BlockCost] = []
        self.pool_count = 0
        self.conv_count = 0
        self.lrn_count = 0

    def conv(self, prefix: str, shape: Shape, filters: int, kernel: int, stride: int = 1,
             padding="same", where: str = "", activate: bool = True) -> tuple[Shape, list[LayerCost]]:
        h, w, c = shape
        out = (*_window(shape, kernel, stride, padding, where), filters)
        layers = []
        if isinstance(padding, int) and padding > 0:
            layers.append(LayerCost(f"{prefix}_pad", "ZeroPadding2D", (h + 2 * padding, w + 2 * padding, c)))
        params = conv_params(c, filters, kernel, bias=not self.bn)
        layers.append(LayerCost(f"{prefix}_conv", "Conv2D", out, params, params,
                                conv_macs(out[0] * out[1], c, filters, kernel), kernel, c))
        if self.bn:
            layers.append(LayerCost(f"{prefix}_bn", "BatchNormalization", out,
                                    *batch_norm_params(filters, self.spec.bn_scale)))
        if activate:
            layers.append(LayerCost(f"{prefix}_{self.spec.activation}", "Activation", out))
        return out, layers

    def pool(self, name: str, shape: Shape, pool: PoolSpec, where: str) -> Shape:
        out = (*_window(shape, pool.size, pool.stride, pool.padding, where), shape[2])
        layer = LayerCost(name, "MaxPooling2D" if pool.kind == "max" else "AveragePooling2D", out, kernel=pool.size)
        patch = f"{pool.size}x{pool.size}/{pool.stride}"
        self.blocks.append(BlockCost(name, f"{pool.kind} pool", out, (layer,), patch))
        return out

    def stem(self, shape: Shape) -> Shape:
        if self.spec.input_conversion != "none":
            layer = LayerCost("input_conversion", "InputConversion", shape)
            self.blocks.append(BlockCost("input_conversion", f"input ({self.spec.input_conversion})", shape, (layer,)))
        for i, layer in enumerate(self.spec.stem):
            where = f"stem[{i}]"
            if isinstance(layer, ConvSpec):
                self.conv_count += 1
                name = f"conv{self.conv_count}"
                shape, layers = self.conv(name, shape, layer.filters, layer.kernel, layer.stride, layer.padding, where)
                patch = f"{layer.kernel}x{layer.kernel}/{layer.stride}"
                self.blocks.append(BlockCost(name, "convolution", shape, tuple(layers), patch, depth=1))
            elif isinstance(layer, PoolSpec):
                self.pool_count += 1
                shape = self.pool(f"pool_{self.pool_count}", shape, layer, where)
            elif isinstance(layer, LRNSpec):
                self.lrn_count += 1
                name = f"lrn_{self.lrn_count}"
                layer_cost = LayerCost(name, "LocalResponseNormalization", shape)
                self.blocks.append(BlockCost(name, "LRN", shape, (layer_cost,)))
        return shape

    def module(self, name: str, shape: Shape, module: InceptionSpec) -> Shape:
        prefix = f"inception_{name}"
        layers: list[LayerCost] = []
        branches = (("1x1", 0, module.ch1x1, 1), ("3x3", module.ch3x3_reduce, module.ch3x3, 3),
                    ("5x5", module.ch5x5_reduce, module.ch5x5, module.ch5x5_kernel))
        for label, reduce, width, kernel in branches:
            branch_in = shape
            if reduce:
                branch_in, reduce_layers = self.conv(f"{prefix}_{label}_reduce", shape, reduce, 1)
                layers += reduce_layers
            layers += self.conv(f"{prefix}_{label}", branch_in, width, kernel, activate=False)[1]
        pool_type = "MaxPooling2D" if module.pool == "max" else "AveragePooling2D"
        layers.append(LayerCost(f"{prefix}_pool", pool_type, shape, kernel=module.pool_size))
        layers += self.conv(f"{prefix}_pool_proj", shape, module.pool_proj, 1, activate=False)[1]
        out = (shape[0], shape[1], module.out_channels)
        layers.append(LayerCost(f"{prefix}_concat", "Concatenate", out))
        layers.append(LayerCost(f"{prefix}_{self.spec.activation}", "Activation", out))
        self.blocks.append(BlockCost(prefix, f"inception ({name})", out, tuple(layers), depth=2, widths=module.widths))
        return out

    def aux(self, index: int, shape: Shape) -> None:
        aux = self.spec.aux_heads[index - 1]
        prefix = f"aux_{index}"
        where = f"aux_heads[{index - 1}] (after {aux.after})"
        c = shape[2]
        if aux.pool == "avg":
            pooled = (*_window(shape, aux.pool_size, aux.pool_stride, "valid", where), c)
            layers = [LayerCost(f"{prefix}_pool", "AveragePooling2D", pooled)]
            patch = f"{aux.pool_size}x{aux.pool_size}/{aux.pool_stride}"
        else:
            if min(shape[0], shape[1]) < 2:
                raise _Collapse(where, f"an adaptive average pool needs a feature map of at least 2x2 (Keras's "
                                       f"TensorFlow backend cannot pool a 1-pixel axis), got {shape[0]}x{shape[1]}")
            pooled = (aux.pool_size, aux.pool_size, c)
            layers = [LayerCost(f"{prefix}_pool", "AdaptiveAveragePooling2D", pooled)]
            patch = f"adaptive {aux.pool_size}x{aux.pool_size}"
        conv_out, conv_layers = self.conv(f"{prefix}_proj", pooled, aux.conv_width, 1)
        layers += conv_layers
        flat = conv_out[0] * conv_out[1] * conv_out[2]
        layers.append(LayerCost(f"{prefix}_flatten", "Flatten", (flat,)))
        layers += _dense(f"{prefix}_fc", flat, aux.dense_width)
        layers.append(LayerCost(f"{prefix}_dropout", "Dropout", (aux.dense_width,)))
        layers += _dense(prefix, aux.dense_width, self.spec.head.classes)
        self.blocks.append(BlockCost(prefix, f"aux head (after {aux.after})", (self.spec.head.classes,),
                                     tuple(layers), patch, depth=3, aux=True))

    def head(self, shape: Shape) -> None:
        self.pool_count += 1
        name = f"pool_{self.pool_count}"
        pooled = (shape[2],)
        self.blocks.append(BlockCost(name, "avg pool", pooled, (LayerCost(name, "GlobalAveragePooling2D", pooled),),
                                     f"{shape[0]}x{shape[1]}/1"))
        head = self.spec.head
        self.blocks.append(BlockCost("dropout", f"dropout ({head.dropout:.0%})", pooled,
                                     (LayerCost("dropout", "Dropout", pooled),)))
        self.blocks.append(BlockCost("predictions", "linear", (head.classes,),
                                     tuple(_dense("predictions", shape[2], head.classes)), depth=1))

    def run(self) -> NetworkCost:
        spec = self.spec
        for index, aux in enumerate(spec.aux_heads):
            if aux.pool == "adaptive_avg" and aux.pool_size < 2:
                raise SpecError(f"aux_heads[{index}].pool_size", "an adaptive_avg pool to 1x1 fails in Keras's "
                                                                 "TensorFlow backend; use pool avg, or pool_size >= 2")
        shape = self.stem(tuple(spec.input_shape))
        for stage_index, stage in enumerate(spec.stages):
            if stage.pool is not None:
                self.pool_count += 1
                shape = self.pool(f"pool_{self.pool_count}", shape, stage.pool, f"stages[{stage_index}].pool")
            for name, module in zip(stage.module_names(), stage.modules):
                shape = self.module(name, shape, module)
                for index, aux in enumerate(spec.aux_heads, start=1):
                    if aux.after == name:
                        self.aux(index, shape)
        self.head(shape)
        return NetworkCost(spec.name, tuple(spec.input_shape), tuple(self.blocks))


def _dense(name: str, units_in: int, units_out: int) -> list[LayerCost]:
    params = dense_params(units_in, units_out)
    return [LayerCost(name, "Dense", (units_out,), params, params, units_in * units_out)]


def _trace(spec: NetworkSpec) -> NetworkCost:
    return _Tracer(spec).run()


def _axis_windows(spec: NetworkSpec) -> list[tuple[int, int, object, bool]]:
    """(kernel, stride, padding, branch) of every window that can change or collapse the feature map, in build
    order; a `branch` window (an aux head's pool) needs the map but leaves the trunk's as it is."""
    windows = [(layer.kernel, layer.stride, layer.padding, False) if isinstance(layer, ConvSpec)
               else (layer.size, layer.stride, layer.padding, False)
               for layer in spec.stem if isinstance(layer, (ConvSpec, PoolSpec))]
    aux_pools: dict[str, list] = {}
    for aux in spec.aux_heads:
        window = (aux.pool_size, aux.pool_stride) if aux.pool == "avg" else (2, 1)  # adaptive: at least 2x2
        aux_pools.setdefault(aux.after, []).append((*window, "valid", True))
    for stage in spec.stages:
        if stage.pool is not None:
            windows.append((stage.pool.size, stage.pool.stride, stage.pool.padding, False))
        for name in stage.module_names():
            windows += aux_pools.get(name, [])
    return windows


def _axis_size(size: int, kernel: int, stride: int, padding, exact: bool) -> int | None:
    """A window's output size along one axis, None where it collapses (`exact`: or has no Keras equivalent)."""
    if padding == "ceil":
        out = _ceil_mode_size(size, kernel, stride)
        return None if out < 1 or exact and not _keras_paddings_for_ceil(size, kernel, stride) else out
    if padding == "same":
        return -(-size // stride)
    pad = 0 if padding == "valid" else padding
    return (size + 2 * pad - kernel) // stride + 1 if size + 2 * pad >= kernel else None


def _first_uncollapsed(windows: list, limit: int) -> int | None:
    """Smallest input size in 1..limit at which no window collapses: a binary search, since every window's
    output size only grows with its input size."""
    def fits(size):
        for kernel, stride, padding, branch in windows:
            out = _axis_size(size, kernel, stride, padding, exact=False)
            if out is None:
                return False
            size = size if branch else out
        return True

    low, high = 1, limit
    if not fits(high):
        return None
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low


def _first_exact(windows: list, start: int, limit: int, budget: int = 200_000) -> tuple[int | None, int]:
    """The smallest size in start..limit whose every window fits exactly (ceil mode with a Keras equivalent), and
    the largest size checked: at most `budget` window steps, remembering the (window, size) states that fail."""
    failing: set[tuple[int, int]] = set()
    for size in range(start, limit + 1):
        current, visited = size, []
        for index, (kernel, stride, padding, branch) in enumerate(windows):
            if (index, current) in failing:
                break
            budget -= 1
            if budget < 0:
                return None, size - 1
            visited.append((index, current))
            out = _axis_size(current, kernel, stride, padding, exact=True)
            if out is None:
                break
            current = current if branch else out
        else:
            return size, size
        failing.update(visited)
    return None, limit


def _traces(spec: NetworkSpec) -> bool:
    try:
        _trace(spec)
    except (_Collapse, SpecError):
        return False
    return True


def _smallest_input(spec: NetworkSpec, limit: int) -> tuple[int | None, int]:
    """(the smallest square input that works or None, the largest size known not to work below it)."""
    windows = _axis_windows(spec)
    start = _first_uncollapsed(windows, limit)
    if start is None:
        return None, limit
    found, checked = _first_exact(windows, start, limit)
    if found is not None and not _traces(spec.with_input_size(found)):
        return None, found - 1
    return found, checked


def smallest_input_size(spec: NetworkSpec, limit: int = 4096) -> int | None:
    """Smallest square input (same channels) at which no feature map collapses, or None up to `limit`.

    Fast for any depth: a binary search over the sizes where maps collapse, then a bounded scan for ceil-mode
    pools without a Keras equivalent; the answer is checked by tracing the whole network.
    """
    return _smallest_input(spec, limit)[0]


def network_cost(spec: NetworkSpec) -> NetworkCost:
    """Per-layer costs of `spec`; raises SpecError if a feature map collapses to nothing."""
    try:
        return _trace(spec)
    except _Collapse as collapse:
        smallest, checked = _smallest_input(spec, 4096)
        hint = (f"; the smallest input that works is {smallest}x{smallest}" if smallest
                else f"; no input size up to {checked} works")
        h, w, _ = spec.input_shape
        raise SpecError(collapse.where, f"{collapse} at input {h}x{w}{hint}") from None


def validate(spec: NetworkSpec) -> NetworkSpec:
    """Check the whole network (feature-map sizes included); return the spec."""
    network_cost(spec)
    return spec
