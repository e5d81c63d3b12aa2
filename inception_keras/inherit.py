"""Weight inheritance: a trained model's weights in a network of other Inception-module widths, narrowed by channel
importance, or widened so that it computes what the parent computes.

Narrowing keeps each layer's most important output channels, as in Once-for-All (Cai et al., ICLR 2020) and
network slimming (Liu et al., ICCV 2017); widening is Net2Net's function-preserving wider operator
(Chen et al., ICLR 2016) with zero weights in the consumers of the new channels.

```python
child = narrow(parent_model, spec, child_spec)  # a keras.Model of child_spec with the parent's weights
```

Every layer's output channels are tracked as indices into the parent's channels (-1: a new channel), through the
concatenations at their offsets, the pooling and activation layers, the flatten of an aux head and the global pooling
of the classifier, so each consumer takes exactly the input slice its producer kept.
"""

from __future__ import annotations

import keras
import numpy as np

from inception_keras.inherit_rules import (NarrowError, SpecMismatchError, check_inheritable,  # noqa: F401
                                          check_same_network, inheritable)
from inception_keras.spec import NetworkSpec

IMPORTANCES = ("l1", "first")
NEW = -1  # a channel the parent does not have


def narrow(model: keras.Model, spec: NetworkSpec, child_spec: NetworkSpec, importance: str = "l1",
           fresh_heads: bool = False, precision: str | None = None) -> keras.Model:
    """A model built from `child_spec` whose weights come from `model`, built from `spec`.

    A layer narrowed to k channels keeps the k with the largest importance, in their order: `l1`, the L1 norm
    of the channel's affine map once a following batch norm is folded into it (the filter times
    |gamma| / sqrt(variance + epsilon), and the folded bias), so a channel whose filter and batch-norm gamma and
    beta (or bias, without batch norm) are zero is removed first; `first`, its first k channels (a parent whose
    module channels were put in order of importance by `sort_channels`, or an elastic one). A layer widened gets
    the child's freshly initialised filters (batch norm: gamma 1, beta 0, mean 0, variance 1) for its new channels
    and zero weights for them in every consumer, so the wider network computes what the parent computes.

    With `fresh_heads` the child may also have another class count and input size (a pretrained parent
    searched on other data): a classifier whose shape then differs from the parent's, and an aux head's dense
    layer after a flatten of another size, keep their fresh weights. `precision` is `build_model`'s.

    Raises:
        NarrowError: the specs differ in anything but the six widths of each module (named by path), a reduce
            width is 0 in one and not in the other (named by module), or the model is not one of `spec`
            (SpecMismatchError, naming the first differing layer).
    """
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {', '.join(IMPORTANCES)}; got {importance!r}")
    check_inheritable(spec, child_spec, fresh_heads)
    check_model_spec(model, spec, "the parent's spec")
    return _transfer(model, spec, child_spec, importance, precision)


def sort_channels(model: keras.Model, spec: NetworkSpec) -> keras.Model:
    """A model of `spec` computing what `model` computes, each Inception-module convolution's output channels in
    decreasing `l1` importance (ties in their order), every consumer's input channels permuted to match: the
    first k channels of each layer are then the k that `narrow` keeps, and `narrow(..., importance="first")`
    takes them. The stem's convolutions keep their order (an LRN after them mixes neighbouring channels)."""
    check_model_spec(model, spec, "the parent's spec")
    return _transfer(model, spec, spec, "sorted", None)


def _transfer(model: keras.Model, spec: NetworkSpec, child_spec: NetworkSpec, importance: str,
              precision: str | None) -> keras.Model:
    from inception_keras.builder import build_model

    child = build_model(child_spec, precision=precision)
    kept = {}  # layer name -> parent channel index of each of its output channels
    for layer in child.layers:
        try:
            source = model.get_layer(layer.name)
        except ValueError:
            raise NarrowError(f"the parent model has no layer {layer.name!r}: it is not a model of spec "
                              f"{spec.name!r}") from None
        kept[layer.name] = _inherit(layer, source, model, [kept[name] for name in inbound_names(layer)], importance)
    return child


def inbound_names(layer) -> list[str]:
    """The names of the layers whose outputs a functional model's `layer` takes, in order."""
    return [tensor._keras_history.operation.name for tensor in layer._inbound_nodes[0].input_tensors]


def spec_mismatch(model: keras.Model, spec: NetworkSpec) -> str | None:
    """Where `spec` does not describe `model`, in words (the input, or the first layer whose name, type, output shape
    or parameter count differs, in the model's order, then a layer of the spec the model lacks); None where it does.
    The cost model gives each layer's expected name, type, shape and count without building anything."""
    from inception_keras.cost import network_cost

    given = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if given != tuple(spec.input_shape):
        return f"the model takes {_shape(given)} inputs, the spec {_shape(spec.input_shape)}"
    expected = {layer.name: layer for layer in network_cost(spec).layers()}
    names = set()
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        names.add(layer.name)
        cost = expected.get(layer.name)
        if cost is None:
            return f"the model's layer {layer.name} ({kind}) is not in the spec"
        shape, params = tuple(layer.output.shape[1:]), layer.count_params()
        if (kind, shape, params) != (cost.type, tuple(cost.output_shape), cost.params):
            kernel = f", kernel {_shape(layer.kernel.shape)}" if hasattr(layer, "kernel") else ""
            return (f"layer {layer.name}: the model's is a {kind} of {params:,} params{kernel}, output "
                    f"{_shape(shape)}; the spec's a {cost.type} of {cost.params:,} params, output "
                    f"{_shape(cost.output_shape)}")
    missing = [name for name in expected if name not in names]
    return f"the spec's layer {missing[0]} ({expected[missing[0]].type}) is not in the model" if missing else None


def check_model_spec(model: keras.Model, spec: NetworkSpec, what: str = "the spec") -> None:
    """Raise SpecMismatchError, naming the first differing layer, unless `spec` describes `model`."""
    problem = spec_mismatch(model, spec)
    if problem is not None:
        raise SpecMismatchError(f"{what} ({spec.name!r}) does not describe the model: {problem}")


def _shape(shape) -> str:
    return "x".join("?" if n is None else str(n) for n in shape) if shape is not None else "several"


def model_spec(model: keras.Model) -> NetworkSpec:
    """The spec of a model our builder made from a registered spec (a `weights import`ed file): the registered spec
    of the model's name at the model's input size and class count, without aux heads where it has none, with
    the input conversion it has.

    Raises:
        NarrowError: no registered spec has the model's name, or its parameter count is not the model's.
    """
    from inception_keras.cost import network_cost
    from inception_keras.presets import get_spec, list_specs

    if model.name not in list_specs():
        raise NarrowError(f"cannot tell the spec of model {model.name!r}: it is not a registered spec's name; give "
                          f"its spec (a spec.yaml beside the file, or --parent-spec)")
    spec = get_spec(model.name).with_input_size(int(model.inputs[0].shape[1]))
    spec = spec.with_classes(int(model.get_layer("predictions").output.shape[-1]))
    if not any(layer.name.startswith("aux_") for layer in model.layers):
        spec = spec.without_aux()
    layers = {layer.name: layer for layer in model.layers}
    if "input_conversion" in layers:  # an imported Caffe model
        spec = spec.replace(input_conversion=layers["input_conversion"].mode)
    if network_cost(spec).total_params != model.count_params():
        raise NarrowError(f"model {model.name!r} has {model.count_params():,} parameters, the registered spec of its "
                          f"name {network_cost(spec).total_params:,}; give its spec (--parent-spec)")
    return spec


def _inherit(layer, source, parent: keras.Model, inputs: list[np.ndarray], importance: str) -> np.ndarray:
    """Set `layer`'s weights from `source` (the parent's layer of its name); its output channels' parent indices."""
    kind = type(layer).__name__
    if kind == "InputLayer":
        return np.arange(layer.output.shape[-1])
    if kind == "Concatenate":
        offsets = np.cumsum([0] + [tensor.shape[-1] for tensor in source.input[:-1]])
        return np.concatenate([np.where(m == NEW, NEW, m + offset) for m, offset in zip(inputs, offsets)])
    if kind == "Flatten":
        if layer.input.shape[1:-1] != source.input.shape[1:-1]:
            return None  # another input size: what follows starts fresh
        return _flattened(inputs[0], layer.input.shape[1:-1], source.input.shape[-1])
    if isinstance(layer, keras.layers.Conv2D):
        return _conv(layer, source, parent, inputs[0], importance)
    if isinstance(layer, keras.layers.BatchNormalization):
        weights = [_take(new, old, inputs[0]) for new, old in zip(layer.get_weights(), source.get_weights())]
        layer.set_weights(weights)
        return inputs[0]
    if isinstance(layer, keras.layers.Dense):
        if inputs[0] is None or source.units != layer.units:
            return np.arange(layer.units)  # fresh: a classifier for other classes, or after another flatten
        kernel, *bias = source.get_weights()
        layer.set_weights([_rows(layer.get_weights()[0], kernel, inputs[0]), *bias])
        return np.arange(layer.units)
    if layer.weights:
        layer.set_weights(source.get_weights())
    return inputs[0]


def _conv(layer, source, parent: keras.Model, inputs: np.ndarray, importance: str) -> np.ndarray:
    kernel, *bias = source.get_weights()
    fresh, *fresh_bias = layer.get_weights()
    outputs = _choose(channel_importance(source, parent), fresh.shape[-1],
                      importance if layer.name.startswith("inception_") or importance != "sorted" else "first")
    new_kernel = _take(fresh, _rows(fresh, kernel, inputs, axis=2), outputs)
    layer.set_weights([new_kernel, *(_take(f, b, outputs) for f, b in zip(fresh_bias, bias))])
    return outputs


def channel_importance(conv, parent: keras.Model) -> np.ndarray:
    """Per output channel of `conv` (a parent layer): the L1 norm of its affine map, a following batch norm folded
    in."""
    kernel, *bias = conv.get_weights()
    bias = bias[0] if bias else np.zeros(kernel.shape[-1], kernel.dtype)
    name = conv.name.removesuffix("_conv") + "_bn"
    if name in {layer.name for layer in parent.layers}:
        norm = parent.get_layer(name)
        gamma, beta, mean, variance = _bn_parameters(norm)
        scale = gamma / np.sqrt(variance + norm.epsilon)
        kernel, bias = kernel * scale, beta + (bias - mean) * scale
    return np.abs(kernel).sum(axis=tuple(range(kernel.ndim - 1))) + np.abs(bias)


def _bn_parameters(norm) -> tuple[np.ndarray, ...]:
    weights = dict(zip([weight.path.rsplit("/", 1)[-1] for weight in norm.weights], norm.get_weights()))
    channels = weights["moving_mean"].shape[0]
    return (weights.get("gamma", np.ones(channels)), weights.get("beta", np.zeros(channels)),
            weights["moving_mean"], weights["moving_variance"])


def _choose(importance: np.ndarray, width: int, how: str = "l1") -> np.ndarray:
    """The parent channels a layer of `width` keeps: all (then NEW ones) when not narrower; else the most important in
    their order (`l1`), the first (`first`); `sorted`: all of them, the most important first."""
    if how == "sorted":
        return np.argsort(-importance, kind="stable")
    if width >= len(importance):
        return np.concatenate([np.arange(len(importance)), np.full(width - len(importance), NEW)])
    return np.arange(width) if how == "first" else np.sort(np.argsort(-importance, kind="stable")[:width])


def _take(fresh: np.ndarray, parent: np.ndarray, channels: np.ndarray, axis: int = -1) -> np.ndarray:
    """`fresh` with the parent's values along `axis` wherever `channels` names a parent channel."""
    out = np.array(fresh, copy=True)
    old = channels != NEW
    index = [slice(None)] * out.ndim
    index[axis] = old
    out[tuple(index)] = np.take(parent, channels[old], axis=axis)
    return out


def _rows(fresh: np.ndarray, parent: np.ndarray, channels: np.ndarray, axis: int = 0) -> np.ndarray:
    """The parent's weights for the input `channels` along `axis`, zero for the new ones (their consumers' share)."""
    shape = list(parent.shape)
    shape[axis] = len(channels)
    out = _take(np.zeros(shape, parent.dtype), parent, channels, axis)
    return out.astype(fresh.dtype)


def _flattened(channels: np.ndarray, spatial, parent_channels: int) -> np.ndarray:
    """A flatten's output positions (H, W, C order) as the parent's flat positions."""
    cells = np.arange(int(np.prod(spatial)))[:, None] * parent_channels
    return np.where(channels[None, :] == NEW, NEW, cells + channels[None, :]).reshape(-1)


class _BatchStatistics(keras.layers.Layer):
    """Per batch, of each tensor `features` computes in training mode: the mean and the mean square of every channel
    over (batch, height, width), each as one row."""

    def __init__(self, features: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.features = features

    def call(self, images):
        rows = []
        for tensor in self.features(images, training=True):
            tensor = keras.ops.cast(tensor, "float32")
            rows += [keras.ops.mean(tensor, axis=(0, 1, 2))[None],
                     keras.ops.mean(tensor * tensor, axis=(0, 1, 2))[None]]
        return rows


def pooled_statistics(means, squares) -> tuple:
    """The mean and variance of a channel over batches of one size from their rows of per-batch means and mean
    squares."""
    mean, square = means.mean(axis=0), squares.mean(axis=0)
    return mean, np.maximum(square - mean * mean, 0.0)


def recalibrate_batch_norm(model: keras.Model, dataset, batches: int) -> int:
    """Re-estimate every batch norm's moving mean and variance on `batches` batches of `dataset` (EagleEye's adaptive
    batch norm: forward passes in training mode, no gradient), in one compiled `predict`; returns the batch norms set.

    Each batch norm's statistics are those of its input over all the batches' images (the pooled mean and
    variance), with the batch norms before it normalising by their batch statistics, as in training.

    Args:
        model: the model whose batch norms to set (narrowed or widened ones carry their parent's statistics).
        dataset: a `tf.data.Dataset` (or what `model.predict` takes) of images, or (images, targets) pairs.
        batches: how many of its batches to use; 0 changes nothing.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms or batches <= 0:
        return 0
    features = keras.Model(model.inputs[0], [norm.input for norm in norms])
    images = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    probe = keras.Model(images, _BatchStatistics(features)(images))
    rows = probe.predict(dataset.take(batches) if hasattr(dataset, "take") else dataset, verbose=0)
    for norm, mean, square in zip(norms, rows[0::2], rows[1::2]):
        weights = dict(zip([weight.path.rsplit("/", 1)[-1] for weight in norm.weights], norm.get_weights()))
        weights["moving_mean"], weights["moving_variance"] = pooled_statistics(mean, square)
        norm.set_weights([weights[weight.path.rsplit("/", 1)[-1]] for weight in norm.weights])
    return len(norms)
