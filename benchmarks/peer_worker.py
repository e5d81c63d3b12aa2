"""One side of `bench_peer.py`: a long-lived process that times training and inference steps on command.

    python peer_worker.py keras|torch --batch 32 --size 224 [--jit] [--device cpu|gpu]

Reads lines `run train|infer|serve float32|bf16 STEPS` on stdin and answers one JSON line with the
seconds of each step and the process's peak RSS so far; `gemm N float32|bf16 STEPS` times an N×N
matrix product instead (the machine's arithmetic ceiling, measured through the same framework);
`tensors train float32|bf16 STEPS` answers `step_tensors` instead: the most bytes of tensors a step had
allocated above what was allocated when it began, as each framework's own allocator counts them
(TensorFlow's allocator statistics; torch's profiler with `profile_memory`), the largest over STEPS.
The Keras side runs in the project's venv, the torch side in the reference venv (torch +
torchvision only; no inception_keras import there). The Keras side runs on the backend that
`KERAS_BACKEND` names (TensorFlow by default; JAX for a GPU machine without TensorFlow). With
`--device gpu` torch runs on CUDA (autocast bf16 there) and JAX on its default device, each step
waits for the device, and memory figures are the device allocators' instead of the process's RSS.
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
        self._import_backend()
        import keras
        import numpy as np

        from inception_keras import build_model, get_spec, inference_model

        self.keras = keras
        self.spec = get_spec("googlenet_torchvision").with_input_size(size)
        rng = np.random.default_rng(0)
        self.x = self._place(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
        labels = keras.utils.to_categorical(rng.integers(0, CLASSES, batch), CLASSES)
        self.y = {name: self._place(labels) for name in ("predictions", "aux_1", "aux_2")}
        self.models, self.forwards, self.jit = {}, {}, jit
        self.build, self.inference_model = build_model, inference_model

    def _import_backend(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from inception_keras.cli.common import import_tensorflow_quietly

        import_tensorflow_quietly()
        import tensorflow as tf

        self.tf = tf

    def _place(self, array):
        return self.tf.constant(array)

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

    def _inference(self, mode: str, precision: str):
        """The inference model of `mode`: `infer` the Keras model's, `serve` what `inception-keras export` writes."""
        model = self.inference_model(self._model(precision))
        if mode == "serve":
            from inception_keras.export.folding import fold_batch_norm

            model = fold_batch_norm(model)
        return model

    def _forward(self, mode: str, precision: str):
        """The inference function, built on first use (a process that only trains builds none)."""
        if (mode, precision) not in self.forwards:
            model = self._inference(mode, precision)
            self.forwards[(mode, precision)] = self.tf.function(lambda x: model(x, training=False),
                                                                jit_compile=self.jit)
        return self.forwards[(mode, precision)]

    def step(self, mode: str, precision: str) -> None:
        if mode == "train":
            self._model(precision).train_on_batch(self.x, self.y)
        else:
            self._forward(mode, precision)(self.x).numpy()

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

    def describe(self) -> str:
        return "CPU, Keras on TensorFlow"


class KerasJaxSide(KerasSide):
    """The same model and training on Keras' JAX backend (no TensorFlow): inputs placed on JAX's default device
    (a GPU where there is one), inference as one `jax.jit` of the model's `stateless_call`, memory from the
    device allocator's statistics (GPUs keep them; JAX on a CPU does not)."""

    def __init__(self, batch: int, size: int, jit: bool):
        super().__init__(batch, size, jit=True)  # jit_compile=False would run JAX op by op

    def _import_backend(self) -> None:
        import jax

        self.jax, self.device = jax, jax.devices()[0]

    def _place(self, array):
        return self.jax.device_put(array)

    def _forward(self, mode: str, precision: str):
        if (mode, precision) not in self.forwards:
            model = self._inference(mode, precision)
            call = self.jax.jit(lambda weights, state, x: model.stateless_call(weights, state, x, training=False)[0])
            weights, state = ([v.value for v in variables] for variables in (model.trainable_variables,
                                                                              model.non_trainable_variables))
            self.forwards[(mode, precision)] = lambda x: call(weights, state, x).block_until_ready()
        return self.forwards[(mode, precision)]

    def step(self, mode: str, precision: str) -> None:
        if mode == "train":
            self._model(precision).train_on_batch(self.x, self.y)  # returns host values: waits for the device
        else:
            self._forward(mode, precision)(self.x)

    def _stats(self) -> dict:
        return self.device.memory_stats() or {}

    def step_tensors(self, mode: str, precision: str) -> int | None:
        """The device's peak bytes in use during one step above those in use before it (XLA's allocator keeps
        one peak per process: this is exact once a step has run, as the memory rows do before asking)."""
        before = self._stats().get("bytes_in_use")
        self.step(mode, precision)
        peak = self._stats().get("peak_bytes_in_use")
        return None if before is None or peak is None else peak - before

    def gemm(self, n: int, precision: str):
        jax = self.jax
        dtype = "bfloat16" if precision == "bf16" else "float32"
        a, b = (jax.random.uniform(jax.random.key(seed), (n, n)).astype(dtype) for seed in (1, 2))
        product = jax.jit(jax.numpy.matmul)
        return lambda: product(a, b).block_until_ready()

    def describe(self) -> str:
        return f"{self.device.device_kind}, Keras on JAX"


class TorchSide:
    """torchvision googlenet (aux heads), channels_last, SGD momentum 0.9; bf16 through torch.autocast.
    `serve` is the same eval-mode forward as `infer` (the peer of Keras' exported graph)."""

    def __init__(self, batch: int, size: int, jit: bool, device: str = "cpu"):
        import torch
        import torchvision

        torch.set_num_threads(os.cpu_count() or 1)
        self.torch, self.device = torch, device
        torch.manual_seed(0)
        self.x = torch.rand(batch, 3, size, size).mul(2).sub(1).to(device).contiguous(
            memory_format=torch.channels_last)
        self.y = torch.randint(0, CLASSES, (batch,)).to(device)
        self.model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True,
                                                  transform_input=False).to(device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
        self.loss = torch.nn.CrossEntropyLoss()

    def _wait(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def step(self, mode: str, precision: str) -> None:
        self._step(mode, precision)
        self._wait()

    def _step(self, mode: str, precision: str) -> None:
        torch = self.torch
        autocast = torch.autocast(self.device, dtype=torch.bfloat16, enabled=precision == "bf16")
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

    def step_tensors(self, mode: str, precision: str) -> int:
        """Peak bytes of tensors during one step above those allocated when it began: on CUDA the caching
        allocator's statistics; on a CPU the running sum of the profiler's memory events (blocks allocated before
        it started and freed during the step do not count)."""
        from torch.profiler import ProfilerActivity, profile

        self.optimizer.zero_grad(set_to_none=True)  # the last step's gradients: freed before, not during, the step
        if self.device == "cuda":
            cuda = self.torch.cuda
            before = cuda.memory_allocated()
            cuda.reset_peak_memory_stats()
            self.step(mode, precision)
            return cuda.max_memory_allocated() - before
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
        a, b = (torch.rand(n, n, dtype=dtype, device=self.device) for _ in range(2))

        def product():
            torch.mm(a, b)
            self._wait()
        return product

    def describe(self) -> str:
        return f"{self.torch.cuda.get_device_name() if self.device == 'cuda' else 'CPU'}, torch"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=("keras", "torch"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--jit", action="store_true")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args()
    if args.framework == "torch":
        side = TorchSide(args.batch, args.size, args.jit, "cuda" if args.device == "gpu" else "cpu")
    elif os.environ.get("KERAS_BACKEND", "tensorflow") == "jax":
        side = KerasJaxSide(args.batch, args.size, args.jit)
    else:
        side = KerasSide(args.batch, args.size, args.jit)
    print(json.dumps({"ready": True, "rss": peak_rss_bytes(), "device": side.describe()}), flush=True)
    for line in sys.stdin:
        command, mode, precision, steps = line.split()
        if command == "tensors":
            peaks = [side.step_tensors(mode, precision) for _ in range(int(steps))]
            print(json.dumps({"step_tensors": None if None in peaks else max(peaks)}), flush=True)
            continue
        work = side.gemm(int(mode), precision) if command == "gemm" else lambda: side.step(mode, precision)
        times = []
        for _ in range(int(steps)):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times, "peak_rss": peak_rss_bytes()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
