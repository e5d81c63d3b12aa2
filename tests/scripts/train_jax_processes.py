"""One process of a JAX data-parallel training, or the single-process reference; used by
tests/training/test_distribute.py.

    python train_jax_processes.py OUT process PORT PROCESS_ID NUM_PROCESSES
    python train_jax_processes.py OUT reference NUM_PROCESSES

`process`: `train()` with `Distribution.data_parallel` over the cluster, then this process's copy of
every weight into OUT/weights_PROCESS_ID.npz. `reference`: one process, no distribution, fed the global
batches the processes make together (process p's local batch j, concatenated over p), into
OUT/weights_reference.npz. Same seed, spec (a two-module network without batch norm: batch norm's sums are
chaotic in their order, see the test), recipe and data (noise images: see noise_data).
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

out, mode = sys.argv[1], sys.argv[2]
SPEC_CHANGES = dict(normalization="none")
CONFIG = dict(epochs=1, batch_size=32, optimizer="sgd", learning_rate=0.02, ema=False, jit=True)  # XLA: 25 % less time
STEPS = 6


def spec():
    """Two one-module stages and an aux head: the cluster's mechanics at a fraction of googlenet_mini's XLA compile
    time, three times over (two processes and the reference)."""
    from inception_keras import NetworkSpec

    return NetworkSpec.from_dict({
        "name": "tiny_jax", "input_shape": [32, 32, 3], **SPEC_CHANGES,
        "stem": [{"conv": {"filters": 8, "kernel": 3}}, {"max_pool": {"size": 3, "stride": 2}}],
        "stages": [{"name": "3", "modules": [[8, 8, 8, 4, 4, 4]]},
                   {"name": "4", "modules": [[8, 8, 8, 4, 4, 4]], "pool": {"max_pool": {"size": 3, "stride": 2}}}],
        "aux_heads": [{"after": "3a", "pool_size": 3, "pool_stride": 2, "conv_width": 8, "dense_width": 16}],
        "head": {"dropout": 0.2, "classes": 10}})


def few_steps():
    """STEPS global batches of noise images (sharded by `shard`'s every-n-th path)."""
    from noise_data import noise_data

    return noise_data(STEPS * CONFIG["batch_size"])


def dump(model, name):
    from inception_keras.training.distribute import _local

    np.savez(os.path.join(out, name), *[_local(v) for v in model.weights])


if mode == "process":
    port, process_id, count = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    from inception_keras.training.distribute import Cluster, Distribution

    distribution = Distribution.data_parallel(Cluster(f"127.0.0.1:{port}", count, process_id, timeout=60))
    from inception_keras.train import TrainConfig, train

    data = few_steps()
    model, result = train(spec(), data, os.path.join(out, "run"), TrainConfig(**CONFIG), distribution=distribution,
                          verbose=0)
    dump(model, f"weights_{process_id}.npz")
    print(f"process {process_id}: done, {result.epochs_total} epoch(s)", flush=True)
else:
    count = int(sys.argv[3])
    import keras
    import tensorflow as tf

    from inception_keras import build_model
    from inception_keras.data import shard, training_pipelines
    from inception_keras.train import TrainConfig, compile_model, output_names

    config = TrainConfig(**CONFIG)
    keras.utils.set_random_seed(config.seed)
    data = few_steps()
    local = config.batch_size // count
    parts = [training_pipelines(shard(data, count, p), spec().input_shape, 10, local, output_names(spec()),
                                seed=config.seed, drop_remainder=True)[0] for p in range(count)]

    def concatenate(*batches):
        return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *batches)

    steps = min(shard(data, count, p).train_size for p in range(count)) // local
    model = build_model(spec())
    compile_model(model, spec(), config, steps)
    model.fit(tf.data.Dataset.zip(tuple(parts)).map(concatenate), epochs=1, verbose=0)
    dump(model, "weights_reference.npz")
    print("reference: done", flush=True)
