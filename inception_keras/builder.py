"""Keras functional models from specs: stock layers plus the registered LRN layer.

Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015). No `tf.*` calls and no
`keras.Model` subclass, so models run on any Keras backend and load from `.keras`
files with `safe_mode=True`. Layer names match `inception_keras.cost` row by row.
"""

from __future__ import annotations

import keras
from keras import layers

from inception_keras import memory
from inception_keras.cost import keras_pool_padding, network_cost
from inception_keras.layers.batch_norm import BatchNormalization
from inception_keras.layers.input_conversion import InputConversion
from inception_keras.layers.lrn import LocalResponseNormalization
from inception_keras.spec import AuxHeadSpec, ConvSpec, InceptionSpec, LRNSpec, NetworkSpec, PoolSpec

OUTPUT_NAMES = ("predictions", "aux_1", "aux_2")
POOLINGS = (None, "avg", "max")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def float32_under_mixed_precision() -> str | None:
    """`float32` for the layers that must not compute in 16 bits (LRN, the classifiers and their softmax, the
    input conversion) while a mixed policy is in force; else None (the global policy, e.g. float64)."""
    return "float32" if keras.config.dtype_policy().name.startswith("mixed") else None


def conv_block(x, spec: NetworkSpec, filters: int, kernel: int, stride: int = 1, padding="same", name: str = "",
               activate: bool = True):
    """Conv (bias only without batch norm) -> optional batch norm -> activation (unless `activate` is False)."""
    if isinstance(padding, int):
        if padding:
            x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        padding = "valid"
    batch_norm = spec.normalization == "batch_norm"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=not batch_norm,
                      name=f"{name}_conv")(x)
    if batch_norm:
        x = BatchNormalization(momentum=spec.bn_momentum, epsilon=spec.bn_epsilon, scale=spec.bn_scale,
                               name=f"{name}_bn")(x)
    return layers.Activation(spec.activation, name=f"{name}_{spec.activation}")(x) if activate else x


def pool(x, pool_spec: PoolSpec, name: str):
    """Max or average pooling; `ceil` padding becomes the Keras padding equal to it on this feature map."""
    pooling = layers.MaxPooling2D if pool_spec.kind == "max" else layers.AveragePooling2D
    padding = keras_pool_padding(tuple(x.shape[1:]), pool_spec.size, pool_spec.stride, pool_spec.padding, name)
    return pooling(pool_spec.size, strides=pool_spec.stride, padding=padding, name=name)(x)


def inception_module(x, module: InceptionSpec, spec: NetworkSpec, name: str):
    """Four branches concatenated: 1x1 | reduce -> 3x3 | reduce -> "5x5" | pool -> proj.

    The branches' last activation is applied once, after the concatenation: the same function (the
    activation is elementwise), but training keeps one activated copy of the module's output instead of
    two (each branch's, for its activation's gradient, and the concatenation, for the next convolutions'):
    10-13 % less tensor memory at the peak of a googlenet_torchvision training step.
    """
    prefix = f"inception_{name}"
    branches = [conv_block(x, spec, module.ch1x1, 1, name=f"{prefix}_1x1", activate=False)]
    for label, reduce, width, kernel in (("3x3", module.ch3x3_reduce, module.ch3x3, 3),
                                         ("5x5", module.ch5x5_reduce, module.ch5x5, module.ch5x5_kernel)):
        branch = conv_block(x, spec, reduce, 1, name=f"{prefix}_{label}_reduce") if reduce else x
        branches.append(conv_block(branch, spec, width, kernel, name=f"{prefix}_{label}", activate=False))
    pooled = pool(x, PoolSpec(module.pool, module.pool_size, 1, "same"), f"{prefix}_pool")
    branches.append(conv_block(pooled, spec, module.pool_proj, 1, name=f"{prefix}_pool_proj", activate=False))
    x = layers.Concatenate(name=f"{prefix}_concat")(branches)
    return layers.Activation(spec.activation, name=f"{prefix}_{spec.activation}")(x)


def aux_head(x, aux: AuxHeadSpec, spec: NetworkSpec, index: int, activation: str | None = "softmax"):
    """Pool -> 1x1 conv -> flatten -> dense -> dropout -> softmax classifier `aux_{index}`."""
    prefix = f"aux_{index}"
    if aux.pool == "avg":
        x = layers.AveragePooling2D(aux.pool_size, strides=aux.pool_stride, padding="valid", name=f"{prefix}_pool")(x)
    else:
        x = layers.AdaptiveAveragePooling2D((aux.pool_size, aux.pool_size), name=f"{prefix}_pool")(x)
    x = conv_block(x, spec, aux.conv_width, 1, name=f"{prefix}_proj")
    x = layers.Flatten(name=f"{prefix}_flatten")(x)
    x = layers.Dense(aux.dense_width, activation=spec.activation, name=f"{prefix}_fc")(x)
    x = layers.Dropout(aux.dropout, name=f"{prefix}_dropout")(x)
    return layers.Dense(spec.head.classes, activation=activation, name=prefix, dtype=float32_under_mixed_precision())(x)


def stem(x, spec: NetworkSpec):
    if spec.input_conversion != "none":
        x = InputConversion(spec.input_conversion, name="input_conversion", dtype=float32_under_mixed_precision())(x)
    counts = {"conv": 0, "pool": 0, "lrn": 0}
    for layer in spec.stem:
        if isinstance(layer, ConvSpec):
            counts["conv"] += 1
            x = conv_block(x, spec, layer.filters, layer.kernel, layer.stride, layer.padding,
                           name=f"conv{counts['conv']}")
        elif isinstance(layer, PoolSpec):
            counts["pool"] += 1
            x = pool(x, layer, f"pool_{counts['pool']}")
        elif isinstance(layer, LRNSpec):
            counts["lrn"] += 1
            x = LocalResponseNormalization(layer.size, layer.alpha, layer.beta, layer.bias,
                                           name=f"lrn_{counts['lrn']}", dtype=float32_under_mixed_precision())(x)
    return x, counts["pool"]


def build_model(spec: NetworkSpec, include_top: bool = True, pooling: str | None = None,
                classifier_activation: str | None = "softmax", precision: str | None = None) -> keras.Model:
    """The training model: outputs `{"predictions", "aux_1", ...}` with aux heads, else one output.

    Args:
        spec: the network.
        include_top: with the classifiers (`predictions` and the aux heads); without them the
            output is the last feature map, or its global pooling (`pooling`), as in `keras.applications`.
        pooling: with `include_top` False: None (the feature map), `avg` or `max`.
        classifier_activation: of every classifier: `softmax`, or None for logits.
        precision: `float32`, `mixed_bfloat16` or `mixed_float16` (Keras mixed precision: 16-bit compute,
            float32 weights; LRN, the classifiers and the input conversion stay float32, so the model takes
            and returns float32); None: Keras' global dtype policy.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of None, 'avg', 'max'; got {pooling!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    cost = network_cost(spec)
    memory.check(cost, "building it", memory.estimate(cost).weights + memory.RUNTIME_BYTES)
    if precision is None:
        return _build(spec, include_top, pooling, classifier_activation)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return _build(spec, include_top, pooling, classifier_activation)
    finally:
        keras.config.set_dtype_policy(previous)


def _build(spec: NetworkSpec, include_top: bool, pooling: str | None, classifier_activation: str | None):
    inputs = keras.Input(shape=spec.input_shape, name="image")
    x, pools = stem(inputs, spec)
    outputs = {}
    for stage in spec.stages:
        if stage.pool is not None:
            pools += 1
            x = pool(x, stage.pool, f"pool_{pools}")
        for name, module in zip(stage.module_names(), stage.modules):
            x = inception_module(x, module, spec, name)
            for index, aux in enumerate(spec.aux_heads, start=1):
                if aux.after == name and include_top:
                    outputs[f"aux_{index}"] = aux_head(x, aux, spec, index, classifier_activation)
    if not include_top:
        if pooling is not None:
            global_pool = layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D
            x = global_pool(name=f"pool_{pools + 1}")(x)
        return keras.Model(inputs, x, name=spec.name)
    x = layers.GlobalAveragePooling2D(name=f"pool_{pools + 1}")(x)
    x = layers.Dropout(spec.head.dropout, name="dropout")(x)
    predictions = layers.Dense(spec.head.classes, activation=classifier_activation, name="predictions",
                               dtype=float32_under_mixed_precision())(x)
    if not outputs:
        return keras.Model(inputs, predictions, name=spec.name)
    return keras.Model(inputs, {"predictions": predictions, **outputs}, name=spec.name)


def float32_model(model: keras.Model) -> keras.Model:
    """A copy of `model` with the same weights that computes in float32 throughout: a mixed-precision
    model's exact function, the reference its 16-bit runs are measured against."""
    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def inference_model(model: keras.Model) -> keras.Model:
    """The same network without aux heads, sharing the weights of `model`."""
    return keras.Model(model.inputs[0], model.get_layer("predictions").output, name=f"{model.name}_inference")
