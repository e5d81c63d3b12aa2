"""Many children of one parent scored fast: what a search scores per trial when it trains nothing (`--steps 0`).

A child narrowed from its parent and recalibrated (`narrow`, `recalibrate_batch_norm`), then evaluated, is a new
Keras model each time, and each one traces its own graphs: on a 2-core CPU that tracing was most of a trial's
6.7-7.6 s on an elastic googlenet_mini. Here every child runs through the parent's own layers with the channels
it does not keep masked (`elastic.child_forward`, tested equal to the narrowed child: the first ones of an elastic
parent, `importance="first"`, or those of largest L1 norm, `"l1"`), the masks and the batch-norm statistics being
variables of two models built once: one gives the per-batch statistics of every batch norm's input in training
mode (the recalibration), the other evaluates with them. Setting a child is assigning those variables; nothing is
traced again. A child's model is then its spec, the parent and its batch-norm statistics (`statistics`, kilobytes):
a search saves those alone per trial (`save_statistics`), and `set_statistics` gives them to the narrowed model
when one is wanted (the best trial's, exported), so no trial builds a model.

The same result as narrowing, recalibrating on the same batches and evaluating (tested), for a child that differs
from the parent in module widths and stem filters alone (`supports`; a reduce width 0 exactly where the parent's
is). A width above the parent's scores as the parent's: a widened child's new channels reach nothing (`narrow`
gives their consumers zero weights).
"""

from __future__ import annotations

import os

import keras
import numpy as np

from inception_keras.elastic import STEM, _conv_of, child_forward, masked_layer
from inception_keras.inherit import _choose, channel_importance, pooled_statistics
from inception_keras.inherit_rules import WIDTHS
from inception_keras.spec import NetworkSpec, SpecError
from inception_keras.utils.atomic import atomic_path

STATISTICS_FILE = "child_statistics.npz"  # a search trial's checkpoint when scored through masks (`save_statistics`)


class _MaskedChild(keras.layers.Layer):
    """The scorer's child through the parent's layers: in `statistics` mode, per batch, each batch norm input's
    mean and mean square over (batch, height, width) as rows (training mode); else its predictions with the
    scorer's statistics."""

    def __init__(self, scorer: "ChildScorer", statistics: bool, **kwargs):
        super().__init__(**kwargs)
        self.net, self.statistics = scorer.net, statistics
        self.masks, self.means, self.variances = scorer.masks, scorer.means, scorer.variances

    def call(self, images):
        if not self.statistics:
            return child_forward(self.net, images, self.masks, training=False,
                                 statistics={name: (self.means[name], self.variances[name]) for name in self.means})
        taps = {}
        child_forward(self.net, images, self.masks, training=True, taps=taps)
        rows = []
        for name in self.means:
            tensor = keras.ops.cast(taps[name], "float32")
            rows += [keras.ops.mean(tensor, axis=(0, 1, 2))[None], keras.ops.mean(tensor * tensor, axis=(0, 1, 2))[None]]
        return rows


class ChildScorer:
    """Scores children of `net` (a model of `spec`), each keeping the channels `narrow` keeps with `importance`
    ("first": an elastic parent's; "l1"): recalibrated on the first
    `batches` batches of `recalibration` (images, or (images, targets) pairs), evaluated on `validation`
    ((images, one-hot targets) batches; a dict of targets per output is read at "predictions") with the loss
    and metrics `compile_model` gives the predictions output.

    ```python
    scorer = ChildScorer(parent, parent_spec, train_ds, 10, val_ds)
    scores = scorer.score(child_spec)            # {"loss": ..., "accuracy": ..., "top5": ...}
    child = narrow(parent, parent_spec, child_spec, importance="first")
    set_statistics(child, scorer.statistics())   # its batch norms recalibrated as `score` found them
    ```
    """

    def __init__(self, net: keras.Model, spec: NetworkSpec, recalibration, batches: int, validation,
                 label_smoothing: float = 0.0, importance: str = "first"):
        from inception_keras.train import output_metrics

        if importance not in ("first", "l1"):
            raise ValueError(f"importance must be first or l1, got {importance!r}")
        self.net, self.spec, self.batches, self.importance = net, spec, batches, importance
        names = {layer.name for layer in net.layers}
        # (module, width field) -> the masked layer: the branch's batch norm, else its convolution; (STEM, "conv1")
        # -> a stem convolution's
        self.layers = {(module, width): name for module in spec.module_names() for width in WIDTHS
                       if (name := masked_layer(names, module, width)) is not None}
        self.layers.update({(STEM, conv): name for conv in spec.stem_filters()
                            if (name := masked_layer(names, STEM, conv)) is not None})
        # per masked layer: the parent's channel importance (`narrow`'s `l1`), and the last scored child's channels
        self.ranks = {name: channel_importance(net.get_layer(_conv_of(name)), net) for name in self.layers.values()}
        self.kept = {}
        self.masks = {name: keras.Variable(np.ones(net.get_layer(name).output.shape[-1], "float32"), trainable=False,
                                           name=f"mask_{name}") for name in self.layers.values()}
        norms = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)
                 and not layer.name.startswith("aux_")]
        self.means = {norm.name: keras.Variable(norm.moving_mean, trainable=False, name=f"mean_{norm.name}")
                      for norm in norms}
        self.variances = {norm.name: keras.Variable(norm.moving_variance, trainable=False,
                                                    name=f"variance_{norm.name}") for norm in norms}
        images = keras.Input(net.inputs[0].shape[1:], dtype=net.inputs[0].dtype)
        self.probe = keras.Model(images, _MaskedChild(self, statistics=True)(images)) if norms else None
        self.evaluator = keras.Model(images, _MaskedChild(self, statistics=False)(images))
        self.evaluator.compile(loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                               metrics=output_metrics(spec))
        self.recalibration = recalibration.take(batches).cache() if hasattr(recalibration, "take") else recalibration
        self.validation = validation.map(_predictions_targets) if hasattr(validation, "map") else validation

    def supports(self, child: NetworkSpec) -> bool:
        """Whether `child` differs from the parent's spec in module widths and stem convolutions' filters alone (a
        reduce width 0 exactly where the parent's is)."""
        parent = self.spec.modules_by_name()
        try:
            widened = child.with_module_widths({name: dict(zip(WIDTHS, module.widths))
                                                for name, module in parent.items()}).with_stem_filters(
                self.spec.stem_filters())
        except SpecError:
            return False
        if widened.replace(name=self.spec.name) != self.spec:
            return False
        children = child.modules_by_name()
        return all((a > 0) == (b > 0) for name, module in parent.items()
                   for a, b in zip(module.widths, children[name].widths))

    def score(self, child: NetworkSpec) -> dict:
        """`child`'s validation loss and metrics (names as `compile_model` gives them, without output prefix) after
        its batch-norm statistics are recalibrated; `statistics` then gives them, for its narrowed model."""
        if not self.supports(child):
            raise ValueError(f"{child.name} is not a child of {self.spec.name} that masks can give (module widths "
                             f"and stem filters alone, reduce widths 0 where the parent's are)")
        modules, stem = child.modules_by_name(), child.stem_filters()
        for (module, width), name in self.layers.items():
            ranks = self.ranks[name]
            value = stem[width] if module == STEM else getattr(modules[module], width)
            # a width above the parent's keeps all its channels: a widened child's new channels reach nothing
            self.kept[name] = _choose(ranks, min(value, len(ranks)), self.importance)
            mask = np.zeros(len(ranks), "float32")
            mask[self.kept[name]] = 1.0
            self.masks[name].assign(mask)
        if self.probe is not None and self.batches > 0:  # else the parent's own statistics, set at construction
            rows = self.probe.predict(self.recalibration, verbose=0)
            for name, mean, square in zip(self.means, rows[0::2], rows[1::2]):
                mean, variance = pooled_statistics(mean, square)
                self.means[name].assign(mean)
                self.variances[name].assign(variance)
        return self.evaluator.evaluate(self.validation, verbose=0, return_dict=True)

    def statistics(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The last scored child's batch-norm statistics, for its narrowed model: per batch norm (aux heads' have
        none), the (mean, variance) of the channels it kept, in order."""
        found = {}
        for name in self.means:
            kept = self.kept.get(name, np.arange(self.means[name].shape[0]))
            found[name] = tuple(keras.ops.convert_to_numpy(variable)[kept]
                                for variable in (self.means[name], self.variances[name]))
        return found


def set_statistics(model: keras.Model, statistics: dict) -> None:
    """A child's batch-norm `statistics` (`ChildScorer.statistics`) into `model`, its narrowed (or widened) model: the
    first channels of each batch norm named; a widened one's new channels keep their fresh statistics (their outputs
    reach nothing: their consumers' weights are zero); a batch norm not named (an aux head's) keeps its own."""
    for name, found in statistics.items():
        norm = model.get_layer(name)
        for variable, values in zip((norm.moving_mean, norm.moving_variance), found):
            current = keras.ops.convert_to_numpy(variable).copy()
            current[:len(values)] = values
            variable.assign(current)


def save_statistics(path: str | os.PathLike, statistics: dict) -> None:
    """`statistics` (`ChildScorer.statistics`) as an `.npz` file at `path`, written atomically."""
    arrays = {f"{kind}:{name}": values for name, found in statistics.items()
              for kind, values in zip(("mean", "variance"), found)}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def load_statistics(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What `save_statistics` wrote at `path` (arrays only: nothing in it is executed)."""
    with np.load(path, allow_pickle=False) as arrays:
        names = [key.removeprefix("mean:") for key in arrays.files if key.startswith("mean:")]
        return {name: (arrays[f"mean:{name}"], arrays[f"variance:{name}"]) for name in names}


def _predictions_targets(images, targets):
    return images, targets["predictions"] if isinstance(targets, dict) else targets
