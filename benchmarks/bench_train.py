"""Training and inference images/s (XLA off and on), and SavedModel serving latency vs Keras.

    python benchmarks/bench_train.py            # googlenet at 224 px and googlenet_mini (several minutes on CPU)
    python benchmarks/bench_train.py --quick    # googlenet_mini only

Synthetic data, batch 32 (googlenet) / 64 (googlenet_mini); the first steps (tracing,
XLA compilation) are excluded. Serving: median latency of the exported SavedModel's
`serve_float` signature over the in-memory Keras inference model (in a tf.function) on
the same batch, calls interleaved; goal <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from inception_keras import build_model, get_spec, inference_model  # noqa: E402
from inception_keras.export import export_saved_model  # noqa: E402
from inception_keras.train import TrainConfig, compile_model, output_names  # noqa: E402


def timed(fn, warmup: int, steps: int) -> float:
    """Seconds per call after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def throughput(spec, batch: int, steps: int, jit: bool) -> tuple[float, float]:
    """(training, inference) images/s."""
    model = build_model(spec)
    compile_model(model, spec, TrainConfig(optimizer="adam", ema=False), steps_per_epoch=100)
    model.jit_compile = jit
    rng = np.random.default_rng(0)
    x = rng.random((batch, *spec.input_shape), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, spec.head.classes, batch), spec.head.classes)
    targets = {name: y for name in output_names(spec)} or y
    train_s = timed(lambda: model.train_on_batch(x, targets), warmup=2, steps=steps)
    infer = inference_model(model)
    infer.compile(jit_compile=jit)
    infer_s = timed(lambda: infer.predict_on_batch(x), warmup=2, steps=steps)
    return batch / train_s, batch / infer_s


def serving_ratio(spec, batch: int, repeats: int) -> tuple[float, float]:
    """Median latency (ms) of the SavedModel and of the in-memory Keras model, same batch."""
    model = inference_model(build_model(spec))
    with tempfile.TemporaryDirectory() as tmp:
        result = export_saved_model(model, spec, [str(i) for i in range(spec.head.classes)], base_dir=tmp)
        loaded = tf.saved_model.load(result.path)
        serve = loaded.signatures["serve_float"]
        x = tf.constant(np.random.default_rng(1).random((batch, *spec.input_shape), dtype=np.float32))
        forward = tf.function(lambda inputs: model(inputs, training=False))

        def keras_call():
            forward(x).numpy()

        def saved_call():
            serve(x)["probabilities"].numpy()

        keras_call(), saved_call()
        samples = {keras_call: [], saved_call: []}
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for call in samples:
                start = time.perf_counter()
                call()
                samples[call].append(time.perf_counter() - start)
        keras_ms, saved_ms = (1000 * statistics.median(samples[call]) for call in (keras_call, saved_call))
    return saved_ms, keras_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="googlenet_mini only")
    args = parser.parse_args()
    cases = [("googlenet_mini", get_spec("googlenet_mini"), 64, 20)]
    if not args.quick:
        cases.insert(0, ("googlenet 224px", get_spec("googlenet"), 32, 3))
    print(f"{'model':<18}{'XLA':>5}{'train img/s':>14}{'infer img/s':>14}")
    for label, spec, batch, steps in cases:
        for jit in (False, True):
            train_ips, infer_ips = throughput(spec, batch, steps, jit)
            print(f"{label:<18}{'on' if jit else 'off':>5}{train_ips:>14.1f}{infer_ips:>14.1f}", flush=True)
    print(f"\n{'model':<18}{'batch':>6}{'SavedModel ms':>15}{'Keras ms':>10}{'ratio':>8}  (goal <= 1.05)")
    for label, spec, _, _ in cases:
        for batch in (1, 32):
            saved_ms, keras_ms = serving_ratio(spec, batch, repeats=200 if "mini" in label else 10)
            print(f"{label:<18}{batch:>6}{saved_ms:>15.2f}{keras_ms:>10.2f}{saved_ms / keras_ms:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
