"""The JAX backend end to end, for tests/training/test_jax_backend.py (which runs on TensorFlow and compares).

    python jax_end_to_end.py DATA_DIR OUT

Prints one `CHECK [name, value]` line (JSON) per result. Writes OUT/run (a training of a two-module network with
batch norm and two aux heads, interrupted after epoch 1 and resumed), OUT/saved (its SavedModel export, checked),
OUT/search (one budget-screened trial of a space over that network). The small network keeps XLA's compile
times (a third of this script's time with googlenet_mini) short; the cost model is checked on the full specs.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dataclasses  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from inception_keras import NetworkSpec, build_model, get_spec, network_cost  # noqa: E402

from inception_keras.layers import xla
from inception_keras.data import load_data  # noqa: E402
from inception_keras.export import check_saved_model, export_saved_model, load_run  # noqa: E402
from inception_keras.layers.lrn import LocalResponseNormalization  # noqa: E402
from inception_keras.serialize import save_spec  # noqa: E402
from inception_keras.train import TrainConfig, train  # noqa: E402

data_dir, out = sys.argv[1], Path(sys.argv[2])


def check(name, value):
    print("CHECK", json.dumps([name, value]), flush=True)


check("backend", keras.backend.backend())

# cost model == count_params, in total and layer by layer, with and without aux heads (googlenet: LRN;
# mini: batch norm)
for name in ("googlenet", "googlenet_mini"):
    for spec in (get_spec(name), get_spec(name).without_aux()):
        cost, model = network_cost(spec), build_model(spec)
        layers = {layer.name: layer for layer in model.layers}
        differ = [row.name for row in cost.layers() if layers[row.name].count_params() != row.params]
        check(f"params {spec.name} aux={bool(spec.aux_heads)}", [cost.total_params, model.count_params(), differ])

# LRN: the XLA form (sliced window, written-out gradient) against JAX's own gradient of the op-by-op form
rng = np.random.default_rng(3)
lrn_x, lrn_upstream = (rng.normal(size=(2, 4, 4, 11)).astype("float32") * s for s in (10, 1))
lrn = LocalResponseNormalization(5, 1e-2, 0.75, 2.0)


def lrn_op_by_op(inputs):
    with xla.op_by_op():
        return lrn(inputs)


(compiled, compiled_vjp), (op_by_op, op_by_op_vjp) = (jax.vjp(f, lrn_x) for f in (jax.jit(lrn), lrn_op_by_op))
check("lrn xla vs op by op", [float(np.abs(np.asarray(compiled) - np.asarray(op_by_op)).max()),
                              float(np.abs(np.asarray(compiled_vjp(lrn_upstream)[0])
                                           - np.asarray(op_by_op_vjp(lrn_upstream)[0])).max()),
                              float(np.abs(np.asarray(op_by_op_vjp(lrn_upstream)[0])).max())])


class Interrupt(Exception):
    pass


class InterruptAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise Interrupt()


spec = NetworkSpec.from_dict({  # batch norm (googlenet_mini's normalization) and two aux heads
    "name": "tiny_jax_bn", "input_shape": [32, 32, 3], "normalization": "batch_norm", "bn_momentum": 0.9,
    "stem": [{"conv": {"filters": 8, "kernel": 3}}, {"max_pool": {"size": 3, "stride": 2}}],
    "stages": [{"name": "3", "modules": [[8, 8, 8, 4, 4, 4], [8, 8, 8, 4, 4, 4]]},
               {"name": "4", "modules": [[8, 8, 8, 4, 4, 4]], "pool": {"max_pool": {"size": 3, "stride": 2}}}],
    "aux_heads": [{"after": "3a", "pool_size": 3, "pool_stride": 2, "conv_width": 8, "dense_width": 16},
                  {"after": "3b", "pool_size": 3, "pool_stride": 2, "conv_width": 8, "dense_width": 16}],
    "head": {"dropout": 0.2, "classes": 10}})
data = load_data("sklearn_digits", data_dir)
data = dataclasses.replace(data, train=data.train.take(1024), train_size=1024, validation=data.validation.take(64),
                           validation_size=64)
config = TrainConfig(epochs=3, batch_size=32, optimizer="adam", learning_rate=1e-2, ema=True, ema_momentum=0.5,
                     jit=True)  # XLA-compiled steps: 60 s for 3 epochs here, 160 s op by op on a 2-core Zen 3
try:  # callbacks run after the standard ones: the first epoch is backed up before the interrupt
    train(spec, data, out / "run", config, callbacks=[InterruptAfterFirstEpoch()], verbose=0)
except Interrupt:
    check("interrupted", json.loads((out / "run" / "backup" / "training_metadata.json").read_text())["epoch"])
model, result = train(spec, data, out / "run", config, verbose=0)
check("resumed", [result.resumed_from_epoch, result.epochs_this_run, result.epochs_total])
check("history", result.history["val_predictions_accuracy"])
check("aux losses", sorted(key for key in result.history if key.startswith("aux_") and key.endswith("loss")))

best, best_spec, names = load_run(out / "run")
exported = export_saved_model(best, best_spec, names, out / "saved")
check("export", [exported.path, exported.max_abs_diff])
check("export check", check_saved_model(exported.path, out / "run" / "best.keras"))

from search.driver import run_search  # noqa: E402
from search.space import space_from_dict  # noqa: E402

save_spec(spec, out / "tiny.yaml")
space = space_from_dict({"name": "tiny_bottlenecks", "base": str(out / "tiny.yaml"),
                         "vary": [{"widths": ["ch3x3_reduce", "ch5x5_reduce"], "choices": [0, 2, 4, 8]}],
                         "budget": {"max_params": 6_000}})
outcome = run_search(space, dataclasses.replace(data, train=data.train.take(64), train_size=64), out / "search",
                     max_trials=1, epochs=1, config=dataclasses.replace(config, epochs=1, ema=False))
check("search", [len(outcome.records), outcome.records[0]["params"] <= space.budget.max_params])

# elastic training (the sandwich rule through Keras' own JAX training step): interrupted after epoch 1 and resumed,
# the sampler going on from the steps drawn; then a sampled child computed through the masks equals the network
# narrowed to its first channels
from inception_keras.elastic import ElasticTrainer, ElasticWidths, child_forward  # noqa: E402
from inception_keras.inherit import narrow  # noqa: E402

widths = ElasticWidths.from_choices({("3a", "ch1x1"): (2, 4, 8), ("3b", "ch3x3"): (4, 8), ("4a", "pool_proj"): (1, 4)})
drawn = []


class Drawn(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        drawn.append(int(self.model.drawn.value))


small = dataclasses.replace(data, train=data.train.take(256), train_size=256)
elastic_config = dataclasses.replace(config, epochs=2, ema=False, elastic=widths, elastic_samples=1)
try:
    train(spec, small, out / "elastic", elastic_config, callbacks=[Drawn(), InterruptAfterFirstEpoch()], verbose=0)
except Interrupt:
    pass
net, result = train(spec, small, out / "elastic", elastic_config, callbacks=[Drawn()], verbose=0)
check("elastic", [drawn, result.resumed_from_epoch, result.history["loss"]])
trainer = ElasticTrainer(net, widths, samples=2, seed=5)
masks = trainer.child_masks(3, 2)
kept = iter([int(np.asarray(mask).sum()) for mask in masks.values()])
child = narrow(net, spec, widths._with(spec, lambda values: next(kept)), importance="first")
x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
check("elastic child", [sorted(int(np.asarray(mask).sum()) for mask in masks.values()),
                        float(np.abs(np.asarray(child_forward(net, x, masks)) -
                                     np.asarray(child(x)["predictions"])).max())])
