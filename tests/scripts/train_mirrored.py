"""MirroredStrategy over two logical CPU devices against one device, same data and seed; used by
tests/training/test_distribute.py.  python train_mirrored.py OUT [elastic]

Writes OUT/weights_mirrored.npz and OUT/weights_single.npz. The spec has neither batch norm (per
replica under MirroredStrategy, as in Keras) nor dropout (each replica draws its own masks), so both
must end equal to float rounding; the images are noise (see noise_data). The training split is one
global batch, so every epoch is one step on the same 64 images whatever order the shuffle gives
(tf.data's seeded shuffle yields another order under MirroredStrategy than on one device).
With `elastic`, both train elastic (the widths of the first and the last module varied, 2 random children a step): the replicas
must draw the same children and weigh their distillation losses as the one device does.
"""

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from inception_keras import get_spec  # noqa: E402
from inception_keras.training.distribute import Distribution  # noqa: E402
from inception_keras.train import TrainConfig, train  # noqa: E402
from noise_data import noise_data  # noqa: E402

out = sys.argv[1]
spec = get_spec("googlenet_mini").replace(normalization="none")
spec = spec.replace(head=dataclasses.replace(spec.head, dropout=0.0),
                    aux_heads=tuple(dataclasses.replace(aux, dropout=0.0) for aux in spec.aux_heads))
data = noise_data(64)
config = TrainConfig(epochs=4, batch_size=64, optimizer="sgd", learning_rate=0.02, ema=True)
if sys.argv[2:] == ["elastic"]:
    from inception_keras.elastic import ElasticWidths

    modules = dict(zip(spec.module_names(), [module for stage in spec.stages for module in stage.modules]))
    choices = {(name, width): (max(1, getattr(modules[name], width) // 2), getattr(modules[name], width))
               for name in (spec.module_names()[0], spec.module_names()[-1]) for width in ("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5", "pool_proj")}
    config = dataclasses.replace(config, elastic=ElasticWidths.from_choices(choices), elastic_samples=2, seed=0)
mirrored = Distribution.mirrored()
assert mirrored.strategy.num_replicas_in_sync == 2, mirrored.describe()
for name, distribution in (("mirrored", mirrored), ("single", None)):
    model, _ = train(spec, data, os.path.join(out, name), config, distribution=distribution, verbose=0)
    np.savez(os.path.join(out, f"weights_{name}.npz"), *[np.asarray(w) for w in model.weights])
    print(f"{name}: done", flush=True)
