"""Keras functional models from specs: stock layers plus the registered LRN layer.

Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015). No `tf.*` calls and no
`keras.Model` subclass, so models run on any Keras backend and load from `.keras`
files with `safe_mode=True`. Layer names match `inception_keras.cost` row by row.
"""

from __future__ import annotations

import keras
from keras import layers

from inception_keras.cost import validate
from inception_keras.lrn import LocalResponseNormalization
from inception_keras.spec import AuxHeadSpec, ConvSpec, InceptionSpec, LRNSpec, NetworkSpec, PoolSpec

OUTPUT_NAMES = ("predictions", "aux_1", "aux_2")


def conv_block(x, spec: NetworkSpec, filters: int, kernel: int, stride: int = 1, padding="same", name: str = ""):
    """Conv (bias only without batch norm) -> optional batch norm -> activation."""
    if isinstance(padding, int):
        if padding:
            x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
        padding = "valid"
    batch_norm = spec.normalization == "batch_norm"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=not batch_norm,
                      name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=spec.bn_momentum, epsilon=spec.bn_epsilon, name=f"{name}_bn")(x)
    return layers.Activation(spec.activation, name=f"{name}_{spec.activation}")(x)


def pool_layer(pool: PoolSpec, name: str):
    pooling = layers.MaxPooling2D if pool.kind == "max" else layers.AveragePooling2D
    return pooling(pool.size, strides=pool.stride, padding=pool.padding, name=name)


def inception_module(x, module: InceptionSpec, spec: NetworkSpec, name: str):
    """Four branches concatenated: 1x1 | reduce -> 3x3 | reduce -> "5x5" | pool -> proj."""
    prefix = f"inception_{name}"
    branches = [conv_block(x, spec, module.ch1x1, 1, name=f"{prefix}_1x1")]
    for label, reduce, width, kernel in (("3x3", module.ch3x3_reduce, module.ch3x3, 3),
                                         ("5x5", module.ch5x5_reduce, module.ch5x5, module.ch5x5_kernel)):
        branch = conv_block(x, spec, reduce, 1, name=f"{prefix}_{label}_reduce") if reduce else x
        branches.append(conv_block(branch, spec, width, kernel, name=f"{prefix}_{label}"))
    pooled = pool_layer(PoolSpec(module.pool, module.pool_size, 1, "same"), f"{prefix}_pool")(x)
    branches.append(conv_block(pooled, spec, module.pool_proj, 1, name=f"{prefix}_pool_proj"))
    return layers.Concatenate(name=f"{prefix}_concat")(branches)


def aux_head(x, aux: AuxHeadSpec, spec: NetworkSpec, index: int):
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
    return layers.Dense(spec.head.classes, activation="softmax", name=prefix)(x)


def stem(x, spec: NetworkSpec):
    counts = {"conv": 0, "pool": 0, "lrn": 0}
    for layer in spec.stem:
        if isinstance(layer, ConvSpec):
            counts["conv"] += 1
            x = conv_block(x, spec, layer.filters, layer.kernel, layer.stride, layer.padding,
                           name=f"conv{counts['conv']}")
        elif isinstance(layer, PoolSpec):
            counts["pool"] += 1
            x = pool_layer(layer, f"pool_{counts['pool']}")(x)
        elif isinstance(layer, LRNSpec):
            counts["lrn"] += 1
            x = LocalResponseNormalization(layer.size, layer.alpha, layer.beta, layer.bias,
                                           name=f"lrn_{counts['lrn']}")(x)
    return x, counts["pool"]


def build_model(spec: NetworkSpec) -> keras.Model:
    """The training model: outputs `{"predictions", "aux_1", ...}` with aux heads, else one output."""
    validate(spec)
    inputs = keras.Input(shape=spec.input_shape, name="image")
    x, pools = stem(inputs, spec)
    outputs = {}
    for stage in spec.stages:
        if stage.pool is not None:
            pools += 1
            x = pool_layer(stage.pool, f"pool_{pools}")(x)
        for name, module in zip(stage.module_names(), stage.modules):
            x = inception_module(x, module, spec, name)
            for index, aux in enumerate(spec.aux_heads, start=1):
                if aux.after == name:
                    outputs[f"aux_{index}"] = aux_head(x, aux, spec, index)
    x = layers.GlobalAveragePooling2D(name=f"pool_{pools + 1}")(x)
    x = layers.Dropout(spec.head.dropout, name="dropout")(x)
    predictions = layers.Dense(spec.head.classes, activation="softmax", name="predictions")(x)
    if not outputs:
        return keras.Model(inputs, predictions, name=spec.name)
    return keras.Model(inputs, {"predictions": predictions, **outputs}, name=spec.name)


def inference_model(model: keras.Model) -> keras.Model:
    """The same network without aux heads, sharing the weights of `model`."""
    return keras.Model(model.inputs[0], model.get_layer("predictions").output, name=f"{model.name}_inference")
