"""The cost of LRN in the faithful GoogLeNet: `googlenet` against the same network without its two LRN layers.

    python benchmarks/bench_lrn.py [--batch 32] [--size 224] [--rounds 5]

Goal: with LRN >= 0.85x the speed without, in training and inference. Also times the layer traced
op by op (`inception_keras.layers.xla.op_by_op`: the banded-matrix window and automatic gradient, which
is what it was before the XLA-fused form and what an export holds) for comparison. Interleaved
rounds, median step after warm-up (and one untimed step each time the model or mode changes),
synthetic data, SGD momentum 0.9 with the aux losses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import inception_keras  # noqa: E402,F401  first: turns oneDNN on where TensorFlow would not (cpu.py)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from inception_keras import build_model, get_spec, inference_model  # noqa: E402
from inception_keras.layers import xla  # noqa: E402
from inception_keras.spec import LRNSpec  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import Results  # noqa: E402


def variant(spec, batch: int):
    model = build_model(spec)
    loss = keras.losses.CategoricalCrossentropy()
    names = ("predictions", "aux_1", "aux_2")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss={n: loss for n in names},
                  loss_weights={"predictions": 1.0, "aux_1": 0.3, "aux_2": 0.3})
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (batch, *spec.input_shape)).astype("float32"))
    y = {n: tf.constant(keras.utils.to_categorical(rng.integers(0, 1000, batch), 1000)) for n in names}
    inference = inference_model(model)
    forward = tf.function(lambda inputs: inference(inputs, training=False))
    return {"train": lambda: model.train_on_batch(x, y), "infer": lambda: forward(x).numpy()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    spec = get_spec("googlenet").with_input_size(args.size)
    without = spec.replace(stem=tuple(layer for layer in spec.stem if not isinstance(layer, LRNSpec)))
    variants = {"googlenet (LRN)": variant(spec, args.batch), "without LRN": variant(without, args.batch)}
    previous = variant(spec, args.batch)
    with xla.op_by_op():  # the steps are traced on their first call
        for step in previous.values():
            step()
    variants["op by op"] = previous
    times = {(name, mode): [] for name in variants for mode in ("train", "infer")}
    for steps in variants.values():
        for step in steps.values():
            step(), step()
    for round_index in range(args.rounds):
        for name, steps in (variants.items() if round_index % 2 == 0 else reversed(list(variants.items()))):
            for mode, step in steps.items():
                step()  # untimed: the first step after another model or mode pays for cold caches
                for _ in range(args.steps):
                    start = time.perf_counter()
                    step()
                    times[(name, mode)].append(time.perf_counter() - start)
    speed = {key: args.batch / statistics.median(values) for key, values in times.items()}
    results = Results("bench_lrn", "The cost of LRN", "bench-peer",
                      f"`benchmarks/bench_lrn.py`: the faithful `googlenet` against the same network without its two "
                      f"LRN layers, batch {args.batch}, {args.size} px, {args.rounds} interleaved rounds, SGD with the "
                      f"aux losses; \"op by op\" is the same layer traced under `xla.op_by_op()` (the banded matrix "
                      f"product and automatic gradient: what an export holds).")
    rows = ["| images/s | googlenet (LRN) | without LRN | ratio (goal ≥ 0.85) | LRN op by op | its ratio |",
            "|---|---:|---:|---:|---:|---:|"]
    for mode in ("infer", "train"):
        lrn, bare, old = (speed[(name, mode)] for name in ("googlenet (LRN)", "without LRN", "op by op"))
        rows.append(f"| {'inference' if mode == 'infer' else 'training'} | {lrn:.1f} | {bare:.1f} | "
                    f"**{lrn / bare:.2f}** | {old:.1f} | {old / bare:.2f} |")
    results.add(rows)
    results.figures = {f"{name} {mode}": value for (name, mode), value in speed.items()}
    results.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
