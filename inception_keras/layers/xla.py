"""Compile a small `keras.ops` function with XLA on TensorFlow, so its elementwise ops run as one loop.

TensorFlow's graph executor runs each op over the whole tensor and writes it out before the next
op reads it; a chain of cheap elementwise ops (LRN: a square, a channel window, rsqrt, products)
is then bound by memory traffic. XLA fuses such a chain into one loop over the data. JAX already
compiles whole steps with XLA, and other backends have no such compiler, so there the function
runs as it is.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import keras

_op_by_op = contextvars.ContextVar("op_by_op", default=False)  # per thread: an export does not slow a training


def compiles() -> bool:
    """Whether code traced now runs under XLA (on TensorFlow through `fused`), unless `op_by_op()` is active."""
    return keras.backend.backend() in ("tensorflow", "jax") and not _op_by_op.get()


def fused(function: Callable) -> Callable:
    """`function` compiled by XLA on TensorFlow (one compilation per input shape and dtype); itself elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return function
    import tensorflow as tf

    return tf.function(function, jit_compile=True, autograph=False)


@contextlib.contextmanager
def op_by_op() -> Iterator[None]:
    """Trace the op-by-op formulations: for a SavedModel that TF Serving or a converter runs without XLA's JIT."""
    token = _op_by_op.set(True)
    try:
        yield
    finally:
        _op_by_op.reset(token)
