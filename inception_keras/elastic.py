"""Elastic (once-for-all) training: one network whose children, the first k channels of each varied module width
(and stem convolution, `ElasticWidths.with_stem`), are usable models as they are (batch norm recalibrated per child).

BigNAS (Yu et al., ECCV 2020): each step trains the largest network on the labels, then the smallest child and
`samples` random children on the largest's predictions (in-place distillation, the targets carry no gradient),
the gradients summed into the shared weights and applied once (the sandwich rule). A child is the parent with
every channel past its width zeroed where the channel leaves its batch norm (or its convolution, without batch
norm): each consumer then sees exactly what the child network computes, through the concatenations, so a child
trained here is `narrow(parent, spec, child_spec, importance="first")` (tested equal). A child's batch norm
normalises with its own batch statistics and leaves the moving statistics alone: they stay the largest
network's, and `recalibrate_batch_norm` sets a child's own after extraction.

```python
widths = ElasticWidths.from_choices({("3a", "ch1x1"): (8, 12, 16), ...})
trainer = ElasticTrainer(build_model(widths.largest(spec)), widths, samples=2, seed=0)
compile_model(trainer, widths.largest(spec), config, steps); trainer.fit(...)
child = narrow(trainer.net, widths.largest(spec), child_spec, importance="first")
```

The TensorFlow and JAX backends, through Keras' own training step (`compute_loss`), on one device or under
MirroredStrategy (the replicas draw the same children). A child is masked (`child_forward`): each costs a full
forward and backward pass, with static shapes. On TensorFlow `ElasticTrainer(slicing=True)` cuts a child's
weights to its widths instead (`sliced_forward`: its shapes are known only when the step runs, which a
TensorFlow graph allows, and JAX's compiled steps do not): the same children and the same step (tested), fewer
multiply-adds, but gathers and shapes that change from step to step; on a 2-core CPU neither was faster in every
sitting (`make bench-elastic`'s cost), so masks are the default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras
from keras import ops

from inception_keras.inherit import inbound_names
from inception_keras.inherit_rules import WIDTHS
from inception_keras.spec import NetworkSpec, SpecError

DEFAULT_SAMPLES = 2
STEM = "stem"  # an ElasticWidths entry (STEM, "conv1", values): the filters of the stem's first convolution
STEM_FRACTIONS = (0.5, 0.75, 1.0)  # `with_stem`: of each stem convolution's filters


@dataclass(frozen=True)
class ElasticWidths:
    """The widths that vary and their choices: ((module, width field, (values, ascending)), ...); a stem
    convolution's filters as (STEM, its name "conv1", "conv2", ..., values) (`with_stem`)."""

    choices: tuple[tuple[str, str, tuple[int, ...]], ...]

    @classmethod
    def from_choices(cls, choices: dict) -> "ElasticWidths":
        """From {(module, width field): values} (a stem convolution's: {("stem", "conv1"): values}); every value at
        least 1 (a width of 0 is another network)."""
        found = []
        for (module, width), values in choices.items():
            where = f"elastic.{module}.{width}"
            if module == STEM and not re.fullmatch(r"conv[1-9][0-9]*", width):
                raise SpecError(where, "a stem width names a stem convolution: conv1, conv2, ...")
            if module != STEM and width not in WIDTHS:
                raise SpecError(where, f"must be one of {', '.join(WIDTHS)}")
            values = tuple(sorted(set(int(v) for v in values)))
            if not values or values[0] < 1:
                raise SpecError(where, f"elastic widths are at least 1 (a width of 0 removes a bottleneck: another "
                                       f"network, not a child); got {list(values)}")
            found.append((module, width, values))
        return cls(tuple(found))

    def to_dict(self) -> dict:
        return {f"{module}.{width}": list(values) for module, width, values in self.choices}

    def every_width(self) -> "ElasticWidths":
        """Every width from each one's smallest choice to its largest (BigNAS draws widths so): the children
        between a space's choices, e.g. a width multiplier's rounded widths, are trained too."""
        return ElasticWidths(tuple((module, width, tuple(range(values[0], values[-1] + 1)))
                                   for module, width, values in self.choices))

    def with_stem(self, spec: NetworkSpec, fractions=STEM_FRACTIONS) -> "ElasticWidths":
        """These widths and every stem convolution of `spec` at `fractions` of its filters (rounded, at least 1).
        A width multiplier scales the stem too (`scale_widths`): a parent whose stem was trained at one width alone
        gives its multiplier children a stem of channels that were never trained to stand without the others."""
        stem = tuple((STEM, name, tuple(sorted({max(1, round(filters * f)) for f in fractions})))
                     for name, filters in spec.stem_filters().items())
        return ElasticWidths(tuple(entry for entry in self.choices if entry[0] != STEM) + stem)

    def _with(self, spec: NetworkSpec, pick) -> NetworkSpec:
        changes, stem = {}, {}
        for module, width, values in self.choices:
            if module == STEM:
                stem[width] = pick(values)
            else:
                changes.setdefault(module, {})[width] = pick(values)
        return spec.with_module_widths(changes, "elastic").with_stem_filters(stem, f"elastic.{STEM}")

    def largest(self, spec: NetworkSpec) -> NetworkSpec:
        """`spec` with every elastic width at its largest choice: the network that is trained."""
        return self._with(spec, max)

    def smallest(self, spec: NetworkSpec) -> NetworkSpec:
        return self._with(spec, min)


def resolve_elastic(name: str) -> ElasticWidths:
    """The widths of a search space (a registered name or a YAML file) as ElasticWidths, through the
    `inception_keras.spaces` entry point that `search/` installs (`search.space.elastic_widths`)."""
    from importlib.metadata import entry_points

    from inception_keras.utils.errors import UserError

    for point in entry_points(group="inception_keras.spaces"):
        return point.load()(name)
    raise UserError("elastic training takes its widths from a search space, and no package provides spaces "
                    "(install this project with pip install -e .)")


def masked_layers(model: keras.Model, widths: ElasticWidths) -> list[tuple[str, tuple[int, ...], int]]:
    """Per elastic width: the layer whose output is masked (the branch's batch norm, else its convolution), the
    choices, and the channels it has."""
    names = {layer.name for layer in model.layers}
    found = []
    for module, width, values in widths.choices:
        name = masked_layer(names, module, width)
        if name is None:
            raise SpecError(f"elastic.{module}.{width}", f"the model has no layer "
                                                          f"{_prefix(module, width) + '_conv'!r}")
        channels = model.get_layer(name).output.shape[-1]
        if values[-1] > channels:
            raise SpecError(f"elastic.{module}.{width}", f"choices up to {values[-1]} in a layer of {channels} "
                                                          f"channels: train the largest network")
        found.append((name, values, channels))
    return found


def _prefix(module: str, width: str) -> str:
    """What its convolution's and batch norm's names start with: conv1 (a stem's), inception_3a_3x3_reduce."""
    return width if module == STEM else f"inception_{module}_{width.removeprefix('ch')}"


def masked_layer(names: set, module: str, width: str) -> str | None:
    """The layer among `names` whose output carries module `module`'s `width` channels (the stem convolution
    `width`'s where `module` is STEM): its batch norm, else its convolution; None where the model has neither (a
    reduce width of 0)."""
    prefix = _prefix(module, width)
    return next((name for name in (f"{prefix}_bn", f"{prefix}_conv") if name in names), None)


def child_forward(model: keras.Model, x, masks: dict, training: bool = False, statistics: dict | None = None,
                  taps: dict | None = None):
    """The predictions of `model`'s child whose masked layers' outputs are multiplied by `masks` (layer name ->
    a 0/1 vector of its channels), computed through `model`'s own layers (the aux heads skipped). In training
    mode a batch norm normalises with the batch's statistics without updating its moving ones; in inference mode
    with `statistics[name]` (mean, variance) where given instead of its moving ones. `taps`, a dict, receives each
    batch norm's input by name."""
    outputs = {}
    for layer in model.layers:
        if layer.name.startswith("aux_"):
            continue
        if isinstance(layer, keras.layers.InputLayer):
            outputs[layer.name] = x
            continue
        inputs = [outputs[name] for name in inbound_names(layer)]
        inputs = inputs[0] if len(inputs) == 1 else inputs
        if isinstance(layer, keras.layers.BatchNormalization) and taps is not None:
            taps[layer.name] = inputs
        if training and isinstance(layer, keras.layers.BatchNormalization):
            value = _batch_norm(layer, inputs)
        elif statistics and layer.name in statistics:
            value = _batch_norm(layer, inputs, statistics=statistics[layer.name])
        else:
            value = layer(inputs, training=training)
        if layer.name in masks:
            value = value * ops.cast(masks[layer.name], value.dtype)
        outputs[layer.name] = value
    return outputs["predictions"]


def sliced_forward(model: keras.Model, x, widths: dict, training: bool = True):
    """What `child_forward` computes, with each layer's weights cut to the child's channels instead of masks
    (TensorFlow only: a random child's widths are tensors, so its shapes are known only when the step runs).
    `widths`: masked layer name (`masked_layers`) -> the child's width there (an int or a scalar int tensor).
    A tensor carries the indices of its parent's channels it has: all, the first k (after a varied convolution),
    or a gathered set (after a concatenation of cut branches). Convolutions, batch norm, dense layers,
    concatenations and channel-wise layers (activations, pools, dropout) take cut channels: what the builder
    puts after a varied width.

    Raises:
        NotImplementedError: another kind of layer takes a varied width.
    """
    import tensorflow as tf

    cut = {_conv_of(name): width for name, width in widths.items()}
    values, kept = {}, {}
    for layer in model.layers:
        if layer.name.startswith("aux_"):
            continue
        if isinstance(layer, keras.layers.InputLayer):
            values[layer.name], kept[layer.name] = x, None
            continue
        names = inbound_names(layer)
        if isinstance(layer, keras.layers.Concatenate):
            values[layer.name] = tf.concat([values[name] for name in names], axis=-1)
            if all(kept[name] is None for name in names):
                kept[layer.name] = None
                continue
            parts, offset = [], 0
            for name in names:
                channels = model.get_layer(name).output.shape[-1]
                parts.append(_indices(kept[name], channels) + offset)
                offset += channels
            kept[layer.name] = ("gather", tf.concat(parts, 0))
            continue
        (name,) = names
        value, index = values[name], kept[name]
        dtype = layer.compute_dtype
        if isinstance(layer, keras.layers.Conv2D):
            out = None if layer.name not in cut else ("first", cut[layer.name])
            kernel = _cut(_cut(layer.kernel, index, 2), out, 3)
            value = tf.nn.convolution(ops.cast(value, dtype), ops.cast(kernel, dtype), strides=layer.strides,
                                      padding=layer.padding.upper(), dilations=layer.dilation_rate)
            if layer.use_bias:
                value = value + ops.cast(_cut(layer.bias, out, 0), dtype)
            values[layer.name], kept[layer.name] = layer.activation(value), out
        elif isinstance(layer, keras.layers.BatchNormalization):
            statistics = None if training else (_cut(layer.moving_mean, index, 0),
                                                _cut(layer.moving_variance, index, 0))
            values[layer.name] = _batch_norm(layer, value, _cut(layer.gamma, index, 0) if layer.scale else None,
                                             _cut(layer.beta, index, 0) if layer.center else None, statistics)
            kept[layer.name] = index
        elif isinstance(layer, keras.layers.Dense) and index is not None:
            value = ops.matmul(ops.cast(value, dtype), ops.cast(_cut(layer.kernel, index, 0), dtype))
            if layer.use_bias:
                value = value + ops.cast(layer.bias, dtype)
            values[layer.name], kept[layer.name] = layer.activation(value), None
        elif isinstance(layer, CHANNELWISE):
            values[layer.name], kept[layer.name] = layer(value, training=training), index
        elif index is None:
            values[layer.name], kept[layer.name] = layer(value, training=training), None
        else:
            raise NotImplementedError(f"{layer.name} ({type(layer).__name__}) takes channels of varied widths: "
                                      f"train with masked children (ElasticTrainer(slicing=False))")
    return values["predictions"]


CHANNELWISE = (keras.layers.Activation, keras.layers.ReLU, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
               keras.layers.GlobalAveragePooling2D, keras.layers.Dropout, keras.layers.ZeroPadding2D)


def _conv_of(masked: str) -> str:
    """The convolution whose output channels a masked layer (`prefix_bn` or `prefix_conv`) carries."""
    return masked.removesuffix("_bn").removesuffix("_conv") + "_conv"


def _indices(index, channels: int):
    import tensorflow as tf

    if index is None:
        return tf.range(channels)
    kind, value = index
    return tf.range(value) if kind == "first" else value


def _cut(weight, index, axis: int):
    """`weight` along `axis` at the channels `index` says: None (all), ("first", k), ("gather", indices)."""
    import tensorflow as tf

    if index is None:
        return weight
    kind, value = index
    if kind == "gather":
        return tf.gather(weight, value, axis=axis)
    size = [-1] * len(weight.shape)
    size[axis] = value
    return tf.slice(weight, [0] * len(weight.shape), size)


def _batch_norm(layer, x, gamma=None, beta=None, statistics=None):
    """What a Keras BatchNormalization computes in training mode, without updating its moving statistics (`gamma`,
    `beta`: the layer's own unless given, e.g. cut to a child's channels; `statistics`: (mean, variance) to
    normalise with instead of the batch's, as in inference)."""
    if statistics is None:
        mean, variance = ops.moments(ops.cast(x, "float32"), axes=tuple(range(len(x.shape) - 1)))
    else:
        mean, variance = (ops.cast(value, "float32") for value in statistics)
    out = (ops.cast(x, "float32") - mean) * ops.rsqrt(variance + layer.epsilon)
    if layer.scale:
        out = out * ops.cast(layer.gamma if gamma is None else gamma, "float32")
    if layer.center:
        out = out + ops.cast(layer.beta if beta is None else beta, "float32")
    return ops.cast(out, x.dtype)


def distillation_loss(teacher, student):
    """Cross-entropy of the student's predictions against the teacher's, the teacher's carrying no gradient: the
    batch's mean, divided by the replicas in sync under a tf.distribute strategy as Keras' own losses are (their
    gradients are summed across replicas)."""
    return keras.losses.CategoricalCrossentropy()(ops.stop_gradient(teacher), student)


class ElasticTrainer(keras.Model):
    """Trains `net` (a model of the largest network) with the sandwich rule; `net` is what a run saves.

    Keras' own training step does the work on every backend: `call` runs the largest network (and counts the
    training steps), `compute_loss` adds to its loss the children's distillation losses, so one gradient of the
    sum (the sum of the gradients) is applied once. The training `loss` a run logs is that sum; validation runs
    the largest network alone. Children are drawn from (seed, `drawn` steps, index), `drawn` a variable of the
    trainer, saved and restored with the run's backup."""

    def __init__(self, net: keras.Model, widths: ElasticWidths, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                 slicing: bool = False, **kwargs):
        super().__init__(**kwargs)
        if samples < 0:
            raise ValueError(f"samples must be >= 0, got {samples}")
        if slicing and keras.backend.backend() != "tensorflow":
            raise ValueError(f"sliced children need the TensorFlow backend, not {keras.backend.backend()}")
        self.net, self.widths, self.samples, self.seed = net, widths, samples, seed
        # masked children (`child_forward`), or with `slicing` their weights cut to their widths (`sliced_forward`)
        self.slicing = slicing
        self.masked = masked_layers(net, widths)
        # under MirroredStrategy every replica counts the step; the first replica's count is kept
        self.drawn = keras.Variable(0, dtype="int32", trainable=False, name="elastic_steps_drawn",
                                    aggregation="only_first_replica")
        self.children_trained = 0  # child passes traced or run: counted in eager mode, once per trace in a graph
        self.built = True  # its network is

    @property
    def saved_network(self) -> keras.Model:
        """What a run's checkpoint saves: the network, not the trainer."""
        return self.net

    def call(self, x, training=None):
        if training:
            self.drawn.assign_add(1)  # a training step: compute_loss draws this step's children from the count
        return self.net(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The largest network's loss and, in training, the distillation losses of the smallest child and
        `samples` random ones, computed here rather than in `call` (inside another layer's call Keras makes
        the children's passes twice as slow on TensorFlow)."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if not training:
            return loss
        teacher = y_pred["predictions"] if isinstance(y_pred, dict) else y_pred
        step = self.drawn.value - 1  # `call` has counted this step
        for index in range(1 + self.samples):
            if self.slicing:
                child = sliced_forward(self.net, x, self.child_widths(step, index), training=True)
            else:
                child = child_forward(self.net, x, self.child_masks(step, index), training=True)
            self.children_trained += 1
            loss = loss + distillation_loss(teacher, child)
        return loss

    def child_widths(self, step, index: int) -> dict:
        """The widths of child `index` (0: the smallest, then the random ones) at step `step`, per masked layer:
        a function of (seed, step, index) alone, so a resumed run draws what the interrupted one would have."""
        widths = {}
        for number, (name, values, _) in enumerate(self.masked):
            widths[name] = values[0] if index == 0 else ops.take(
                ops.convert_to_tensor(values, "int32"), _draw(self.seed, step, index * 10_007 + number, len(values)))
        return widths

    def child_masks(self, step, index: int) -> dict:
        """`child_widths` as masks: per masked layer, 1 for the child's channels, 0 for the others."""
        return {name: ops.cast(ops.arange(channels) < width, "float32")
                for (name, _, channels), width in zip(self.masked, self.child_widths(step, index).values())}

    def get_config(self):
        raise NotImplementedError("save the trained network, ElasticTrainer.net, not the trainer")


def _draw(seed: int, step, salt: int, count: int):
    """An integer in [0, count) that depends on (seed, step, salt) alone: the backend's stateless generator."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        pair = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(step, tf.int64), tf.constant(salt, tf.int64)])
        return tf.random.stateless_uniform([], seed=pair, maxval=count, dtype=tf.int32)
    if backend == "jax":
        import jax

        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), ops.cast(step, "int32")), salt)
        return jax.random.randint(key, (), 0, count)
    raise NotImplementedError(f"elastic training runs on the TensorFlow and JAX backends, not {backend}")
