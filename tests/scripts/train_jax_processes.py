"""One process of a JAX data-parallel training, or the single-process reference; used by tests/test_distribute.py.

    python train_jax_processes.py OUT process PORT PROCESS_ID NUM_PROCESSES
    python train_jax_processes.py OUT reference NUM_PROCESSES

`process`: `train()` with `Distribution.data_parallel` over the cluster, then this process's copy of
every weight into OUT/weights_PROCESS_ID.npz. `reference`: one process, no distribution, fed the global
batches the processes make together (process p's local batch j, concatenated over p), into
OUT/weights_reference.npz. Same seed, spec (googlenet_mini without batch norm: batch norm's sums are
chaotic in their order, see the test), recipe and data (noise images: see noise_data).
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

out, mode = sys.argv[1], sys.argv[2]
SPEC_CHANGES = dict(normalization="none")
CONFIG = dict(epochs=1, batch_size=32, optimizer="sgd", learning_rate=0.02, ema=False)
STEPS = 6


def spec():
    from inception_keras import get_spec

    return get_spec("googlenet_mini").replace(**SPEC_CHANGES)


def few_steps():
    """STEPS global batches of noise images (sharded by `shard`'s every-n-th path)."""
    from noise_data import noise_data

    return noise_data(STEPS * CONFIG["batch_size"])


def dump(model, name):
    from inception_keras.distribute import _local

    np.savez(os.path.join(out, name), *[_local(v) for v in model.weights])


if mode == "process":
    port, process_id, count = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    from inception_keras.distribute import Cluster, Distribution

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
