"""Training and inference images/s (XLA off and on), and SavedModel serving latency vs Keras.

    python benchmarks/bench_train.py            # googlenet at 224 px and googlenet_mini (several minutes on CPU)
    python benchmarks/bench_train.py --quick    # googlenet_mini only

Synthetic data, batch 32 (googlenet) / 64 (googlenet_mini); the first steps (tracing,
XLA compilation) are excluded. Serving: median latency of the reloaded SavedModel's
`serve_float` (as a restored function, and through its signature, the path TF Serving
takes) over the in-memory Keras inference model in a tf.function, same batch, calls
interleaved; goal <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import inception_keras  # noqa: E402,F401  first: turns oneDNN on where TensorFlow would not (cpu.py)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchlib import Results  # noqa: E402
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


def serving_latency(spec, batch: int, repeats: int) -> dict[str, float]:
    """Median latency (ms) on one batch: in-memory Keras (tf.function), the reloaded SavedModel's
    `serve_float` function, and its `serve_float` signature (the path TF Serving uses), calls interleaved."""
    model = inference_model(build_model(spec))
    with tempfile.TemporaryDirectory() as tmp:
        result = export_saved_model(model, spec, [str(i) for i in range(spec.head.classes)], base_dir=tmp)
        loaded = tf.saved_model.load(result.path)
        x = tf.constant(np.random.default_rng(1).random((batch, *spec.input_shape), dtype=np.float32))
        forward = tf.function(lambda inputs: model(inputs, training=False))
        signature = loaded.signatures["serve_float"]
        calls = {"keras": lambda: forward(x).numpy(),
                 "function": lambda: loaded.serve_float(x)["probabilities"].numpy(),
                 "signature": lambda: signature(x)["probabilities"].numpy()}
        samples = {name: [] for name in calls}
        for call in calls.values():
            call()
        for _ in range(repeats):  # interleaved, so all see the same machine load
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="googlenet_mini only")
    args = parser.parse_args()
    cases = [("googlenet_mini", get_spec("googlenet_mini"), 64, 20)]
    if not args.quick:
        cases.insert(0, ("googlenet 224px", get_spec("googlenet"), 32, 3))
    results = Results("bench_train", "Training, inference and serving in process", "bench",
                      "`benchmarks/bench_train.py`: training and inference images/s with XLA off and on (synthetic "
                      "data, Adam, the first steps excluded), then the median latency of the reloaded SavedModel's "
                      "`serve_float` (as a restored function, and through its signature, the path TF Serving takes) "
                      "over the in-memory Keras inference model in a `tf.function`, calls interleaved; goal ≤ 1.05.")
    rows = ["| model | batch | XLA | training images/s | inference images/s |", "|---|---:|---|---:|---:|"]
    for label, spec, batch, steps in cases:
        for jit in (False, True):
            train_ips, infer_ips = throughput(spec, batch, steps, jit)
            rows.append(f"| {label} | {batch} | {'on' if jit else 'off'} | {train_ips:.1f} | {infer_ips:.1f} |")
    results.add(rows)
    rows = ["| model | batch | Keras ms | SavedModel function ms | ratio | signature ms | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for label, spec, _, _ in cases:
        for batch in (1, 32):
            ms = serving_latency(spec, batch, repeats=200 if "mini" in label else 10)
            rows.append(f"| {label} | {batch} | {ms['keras']:.2f} | {ms['function']:.2f} | "
                        f"**{ms['function'] / ms['keras']:.3f}** | {ms['signature']:.2f} | "
                        f"{ms['signature'] / ms['keras']:.3f} |")
    results.add(rows)
    results.write()


if __name__ == "__main__":
    main()
