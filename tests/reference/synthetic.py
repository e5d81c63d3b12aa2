"""Deterministic GoogLeNet weights and images for the cross-framework equivalence checks (numpy only).

Shared by the reference script (run in the reference venv with torch, TF-slim and OpenCV) and
the tests (main venv): both make the same arrays from the same seed and the same manifest
(tensor names and shapes, as the reference framework itself lists them). Batch-norm statistics
are not generated: the reference framework calibrates them on images, and the fixture records them.
"""

from __future__ import annotations

import numpy as np

# Tensor names of each source that hold batch-norm statistics (filled by calibration, not generated)
STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "moving_mean", "moving_variance")


def images(count: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Smooth random RGB images in [-1, 1], NHWC float32: coarse colour blobs upsampled, plus fine noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(count, 8, 8, 3))
    grid = (np.arange(size) + 0.5) * 8 / size - 0.5
    low = np.clip(np.floor(grid).astype(int), 0, 6)
    frac = np.clip(grid - low, 0, 1)[None, :, None, None]
    rows = coarse[:, low] * (1 - frac) + coarse[:, low + 1] * frac
    frac = frac.reshape(1, 1, size, 1)
    smooth = rows[:, :, low] * (1 - frac) + rows[:, :, low + 1] * frac
    noise = rng.normal(0, 0.15, size=(count, size, size, 3))
    return np.clip(smooth * 0.8 + noise, -1, 1).astype(np.float32)


def pooling_input(kind: str, size: int, stride: int, n: int) -> np.ndarray:
    """A (1, n, n, 2) float32 map for the ceil-mode pooling case (kind, size, stride, n)."""
    return np.random.default_rng([n, size, stride, kind == "max"]).normal(size=(1, n, n, 2)).astype(np.float32)


def is_stat(name: str) -> bool:
    return name.endswith(STAT_SUFFIXES)


def generate(names: list[str], shapes: list[tuple], layout: str, seed: int, classifier_gain: float) -> dict:
    """Weights for every non-statistic tensor, in manifest order, from one seeded generator.

    Args:
        names, shapes: the manifest, as the reference framework lists its tensors.
        layout: `oihw` (torch, Caffe) or `hwio` (TF-slim) for 4-D kernels; 2-D kernels are (out, in).
        seed: the generator's seed.
        classifier_gain: scale of the last classifier's weights, so that logits spread over a few units.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in zip(names, shapes):
        if is_stat(name):
            continue
        shape = tuple(shape)
        gain = classifier_gain if _is_classifier(name) else np.sqrt(2.0)
        if len(shape) == 4:
            fan_in = int(np.prod(shape[1:])) if layout == "oihw" else int(np.prod(shape[:3]))
            value = rng.normal(0, gain / np.sqrt(fan_in), size=shape)
        elif len(shape) == 2:
            value = rng.normal(0, gain / np.sqrt(shape[1]), size=shape)
        elif _is_scale(name):
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.normal(0, 0.1, size=shape)
        out[name] = value.astype(np.float32)
    return out


def _is_classifier(name: str) -> bool:
    return any(key in name for key in ("fc.weight", "fc2.weight", "classifier", "Logits/"))


def _is_scale(name: str) -> bool:
    return name.endswith(("bn.weight", "BatchNorm/gamma"))


def scaled_kernel(kernel: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """An (out, ...) kernel with each output's weights times `scale[out]`, in float32."""
    return (kernel * scale.reshape((-1,) + (1,) * (kernel.ndim - 1))).astype(np.float32)


def standardized(weights: dict, stats: dict) -> dict:
    """Caffe's calibration (no batch norm): `{layer}.scale` rescales `{layer}.blobs[0]`, `{layer}.blobs[1]` is given."""
    out = dict(weights)
    for key, value in stats.items():
        if key.endswith(".scale"):
            layer = key[:-len(".scale")]
            out[f"{layer}.blobs[0]"] = scaled_kernel(weights[f"{layer}.blobs[0]"], value)
        else:
            out[key] = value
    return out


def manifest_arrays(names: list[str], shapes: list[tuple]) -> dict:
    """The manifest as npz-storable arrays (names, shapes padded with -1)."""
    padded = np.full((len(shapes), 4), -1, dtype=np.int64)
    for i, shape in enumerate(shapes):
        padded[i, :len(shape)] = shape
    return {"names": np.array(names), "shapes": padded}


def manifest_from(arrays) -> tuple[list[str], list[tuple]]:
    names = [str(name) for name in arrays["names"]]
    shapes = [tuple(int(d) for d in row if d >= 0) for row in arrays["shapes"]]
    return names, shapes
