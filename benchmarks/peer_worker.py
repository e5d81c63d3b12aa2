"""One side of `bench_peer.py`: a long-lived process that times training and inference steps on command.

    python peer_worker.py keras|torch --batch 32 --size 224 [--jit]

Reads lines `run train|infer|serve float32|bf16 STEPS` on stdin and answers one JSON line with the
seconds of each step and the process's peak RSS so far; `gemm N float32|bf16 STEPS` times an N×N
matrix product instead (the machine's arithmetic ceiling, measured through the same framework);
`tensors train float32|bf16 STEPS` also answers `step_tensors`: the most bytes of tensors a step had
allocated above what was allocated when it began, as each framework's own allocator counts them
(TensorFlow's allocator statistics; torch's profiler with `profile_memory`), the largest over STEPS.
The Keras side runs in the project's venv, the torch side in the reference venv (torch +
torchvision only; no inception_keras import there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time

CLASSES = 1000
LEARNING_RATE, MOMENTUM, AUX_WEIGHT = 0.01, 0.9, 0.3


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 to /dev/null (torch's profiler logs each start and stop from C++, whatever its level)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class KerasSide:
    """googlenet_torchvision (aux heads, loss weights 0.3), SGD momentum 0.9, no metrics, no EMA."""

    def __init__(self, batch: int, size: int, jit: bool):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from inception_keras.cli_common import import_tensorflow_quietly

        import_tensorflow_quietly()
        import keras
        import numpy as np
        import tensorflow as tf

        from inception_keras import build_model, get_spec, inference_model

        self.tf, self.keras = tf, keras
        self.spec = get_spec("googlenet_torchvision").with_input_size(size)
        rng = np.random.default_rng(0)
        self.x = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
        labels = keras.utils.to_categorical(rng.integers(0, CLASSES, batch), CLASSES)
        self.y = {name: tf.constant(labels) for name in ("predictions", "aux_1", "aux_2")}
        self.models, self.forwards, self.jit = {}, {}, jit
        self.build, self.inference_model = build_model, inference_model

    def _model(self, precision: str):
        if precision not in self.models:
            keras = self.keras
            model = self.build(self.spec, precision="mixed_bfloat16" if precision == "bf16" else "float32")
            loss = keras.losses.CategoricalCrossentropy()
            model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                          loss={name: loss for name in self.y},
                          loss_weights={"predictions": 1.0, "aux_1": AUX_WEIGHT, "aux_2": AUX_WEIGHT},
                          jit_compile=self.jit)
            self.models[precision] = model
        return self.models[precision]

    def _forward(self, mode: str, precision: str):
        """The inference function, built on first use (a process that only trains builds none)."""
        if (mode, precision) not in self.forwards:
            model = self.inference_model(self._model(precision))
            if mode == "serve":
                from inception_keras.folding import fold_batch_norm

                model = fold_batch_norm(model)  # what `inception-keras export` writes
            self.forwards[(mode, precision)] = self.tf.function(lambda x: model(x, training=False),
                                                                jit_compile=self.jit)
        return self.forwards[(mode, precision)]

    def step(self, mode: str, precision: str) -> None:
        if mode == "train":
            self._model(precision).train_on_batch(self.x, self.y)
        else:
            self._forward(mode, precision)(self.x).numpy()

    def allocator_peak(self) -> int | None:
        """Peak bytes TensorFlow's CPU allocator had in use (the oneDNN build's BFC allocator keeps stats)."""
        try:
            return self.tf.config.experimental.get_memory_info("CPU:0")["peak"]
        except ValueError:
            return None

    def step_tensors(self, mode: str, precision: str) -> int | None:
        """Peak bytes of tensors during one step above those in use when it began (weights, optimizer state)."""
        memory = self.tf.config.experimental
        try:
            before = memory.get_memory_info("CPU:0")["current"]
            memory.reset_memory_stats("CPU:0")
        except ValueError:
            return None
        self.step(mode, precision)
        return memory.get_memory_info("CPU:0")["peak"] - before

    def gemm(self, n: int, precision: str):
        """A function running one n×n matrix product in `precision` (oneDNN, like the convolutions)."""
        tf = self.tf
        dtype = tf.bfloat16 if precision == "bf16" else tf.float32
        a, b = (tf.cast(tf.random.stateless_uniform((n, n), (seed, 0)), dtype) for seed in (1, 2))
        product = tf.function(tf.matmul)
        return lambda: product(a, b).numpy()


class TorchSide:
    """torchvision googlenet (aux heads), channels_last, SGD momentum 0.9; bf16 through torch.autocast.
    `serve` is the same eval-mode forward as `infer` (the peer of Keras' exported graph)."""

    def __init__(self, batch: int, size: int, jit: bool):
        import torch
        import torchvision

        torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        torch.manual_seed(0)
        self.x = torch.rand(batch, 3, size, size).mul(2).sub(1).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, CLASSES, (batch,))
        self.model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True,
                                                  transform_input=False).to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        self.loss = torch.nn.CrossEntropyLoss()

    def step(self, mode: str, precision: str) -> None:
        torch = self.torch
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        if mode == "train":
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits, aux2, aux1 = self.model(self.x)
                loss = self.loss(logits, self.y) + AUX_WEIGHT * (self.loss(aux1, self.y) + self.loss(aux2, self.y))
            loss.backward()
            self.optimizer.step()
        else:
            self.model.eval()
            with torch.inference_mode(), autocast:
                self.model(self.x)

    def allocator_peak(self) -> None:
        return None  # torch's CPU allocator keeps no statistics

    def step_tensors(self, mode: str, precision: str) -> int:
        """Peak bytes of tensors during one step above those allocated when it began: the running sum of the
        profiler's memory events (blocks allocated before it started and freed during the step do not count)."""
        from torch.profiler import ProfilerActivity, profile

        self.optimizer.zero_grad(set_to_none=True)  # the last step's gradients: freed before, not during, the step
        with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as trace:
            self.step(mode, precision)
        events = sorted((event.start_ns(), event.nbytes()) for event in trace.profiler.kineto_results.events()
                        if event.name() == "[memory]")
        allocated = peak = 0
        for _, size in events:
            allocated += size
            peak = max(peak, allocated)
        return peak

    def gemm(self, n: int, precision: str):
        torch = self.torch
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
        return lambda: torch.mm(a, b)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=("keras", "torch"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--jit", action="store_true")
    args = parser.parse_args()
    side = (KerasSide if args.framework == "keras" else TorchSide)(args.batch, args.size, args.jit)
    print(json.dumps({"ready": True, "rss": peak_rss_bytes()}), flush=True)
    for line in sys.stdin:
        command, mode, precision, steps = line.split()
        if command == "tensors":
            peaks = [side.step_tensors(mode, precision) for _ in range(int(steps))]
            print(json.dumps({"step_tensors": None if None in peaks else max(peaks), "peak_rss": peak_rss_bytes()}),
                  flush=True)
            continue
        work = side.gemm(int(mode), precision) if command == "gemm" else lambda: side.step(mode, precision)
        times = []
        for _ in range(int(steps)):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times, "peak_rss": peak_rss_bytes(), "allocator_peak": side.allocator_peak()}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
