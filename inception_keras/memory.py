"""How much memory building, training and running a spec takes, from the cost model alone (no Keras).

Measured on a 2-core CPU machine with TensorFlow 2.21 (peak RSS in one `fit`): googlenet_torchvision at
224 px, batch 32, 2.78 GB (estimate 3.6 GB); batch 8, 1.70 GB (1.9 GB); googlenet, batch 32, 2.46 GB
(3.2 GB); googlenet_mini at 32 px, batch 64, 0.99 GB (1.2 GB). The estimate is meant to be above the
truth, so that a request refused is one that cannot fit, not one that might.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from inception_keras.cost import NetworkCost
from inception_keras.utils.errors import UserError

RUNTIME_BYTES = 1 << 30  # TensorFlow, Keras, the traced step functions
ACTIVATION_FACTOR = 1.5  # outputs kept for the backward pass, plus the gradients being formed
SLOTS = {"sgd": 1, "adam": 2}  # optimizer variables per trainable weight (momentum; Adam's two moments)


class ResourceError(UserError):
    """The estimate does not fit in the memory available."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes that one model needs, by part; `training` and `inference` add them up."""

    weights: int
    optimizer: int
    activations_per_image: int
    batch_size: int

    @property
    def training(self) -> int:
        per_batch = self.activations_per_image * self.batch_size * ACTIVATION_FACTOR
        return RUNTIME_BYTES + 2 * self.weights + self.optimizer + int(per_batch)  # weights + their gradients

    @property
    def inference(self) -> int:
        return RUNTIME_BYTES + self.weights + self.activations_per_image

    def describe(self) -> str:
        return (f"weights {human(self.weights)}; training at batch {self.batch_size} ~{human(self.training)} "
                f"(activations {human(self.activations_per_image * self.batch_size)}, optimizer state "
                f"{human(self.optimizer)}, runtime {human(RUNTIME_BYTES)}); inference ~{human(self.inference)}")


def estimate(cost: NetworkCost, batch_size: int = 64, optimizer: str = "sgd", ema: bool = True,
             dtype_bytes: int = 4) -> MemoryEstimate:
    """The memory estimate of the training model (aux heads included) described by `cost`."""
    activations = sum(math.prod(layer.output_shape) for layer in cost.layers())
    slots = SLOTS.get(optimizer, 2) + (1 if ema else 0)
    return MemoryEstimate(weights=cost.total_params * dtype_bytes,
                          optimizer=cost.total_trainable_params * dtype_bytes * slots,
                          activations_per_image=activations * dtype_bytes, batch_size=batch_size)


def available() -> int:
    """Bytes this process can still use: MemAvailable, or the cgroup's limit less its usage if smaller."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(found) if found else 1 << 62


def check(cost: NetworkCost, what: str, needed: int, advice: str = "use a smaller input size or narrower widths") \
        -> None:
    """Raise a UserError giving both numbers, and `advice`, if `needed` bytes are more than this machine has
    available."""
    free = available()
    if needed > free:
        raise ResourceError(f"{cost.spec_name} at input {'x'.join(map(str, cost.input_shape))}: {what} needs about "
                           f"{human(needed)} (estimated from the spec), but only {human(free)} of memory is "
                           f"available; {advice}")


def human(size: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size} B"
