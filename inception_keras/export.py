"""TensorFlow SavedModel export in the TF Serving layout `BASE/NAME/VERSION`, verified by reloading.

Endpoints: `serving_default` takes uint8 images `[batch, H, W, 3]` of any size, resizes and
normalizes inside, and returns `probabilities`, `top_k_ids` and `top_k_probabilities`;
`serve_float` takes the model's own float32 input. Only the inference model (no aux
heads) is exported, through `keras.export.ExportArchive` without `track()`, which stores
each variable once (`model.export` stores them twice, keras issue #23553). `assets/` holds
`spec.yaml`, `class_names.txt` and `check.npz` (a reference batch with the Keras model's
outputs). Written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from inception_keras.builder import inference_model  # also registers LocalResponseNormalization
from inception_keras.data import to_model_input
from inception_keras.serialize import load_spec, spec_to_yaml
from inception_keras.spec import NetworkSpec

TOLERANCE = 1e-5
TMP_PREFIX = ".tmp-"


class ExportError(RuntimeError):
    """An export failed its check or cannot be read."""


@dataclass
class ExportResult:
    path: str
    version: int
    max_abs_diff: float
    weight_bytes: int
    variables_bytes: int
    total_bytes: int

    def describe(self) -> str:
        return (f"exported {self.path} (version {self.version}): reload check max abs diff {self.max_abs_diff:.2e} "
                f"(tolerance {TOLERANCE:.0e}); weights {self.weight_bytes:,} B, variables/ "
                f"{self.variables_bytes:,} B ({self.variables_bytes / self.weight_bytes:.3f}x), whole SavedModel "
                f"{self.total_bytes:,} B ({self.total_bytes / self.weight_bytes:.3f}x)")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def next_version(root: Path) -> int:
    versions = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.exists() else []
    return max(versions, default=0) + 1


def _remove_stale_temporaries(root: Path) -> None:
    """Temporary directories of exports that were killed (their process is gone)."""
    for path in root.glob(f"{TMP_PREFIX}*"):
        pid = path.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def reference_batch(spec: NetworkSpec, images=None, count: int = 2) -> np.ndarray:
    """uint8 RGB images for the reload check: given ones (grey ones made RGB), or a fixed random batch."""
    if images is not None:
        images = np.asarray(images, dtype=np.uint8)[:count]
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    h, w, _ = spec.input_shape
    return np.random.default_rng(0).integers(0, 256, size=(count, h, w, 3), dtype=np.uint8)


def _archive(model: keras.Model, spec: NetworkSpec, top_k: int) -> keras.export.ExportArchive:
    size, channels = tuple(spec.input_shape[:2]), spec.input_shape[2]
    k = min(top_k, spec.head.classes)

    float_signature = [tf.TensorSpec([None, *spec.input_shape], tf.float32)]

    @tf.function(input_signature=float_signature)
    def forward(inputs):  # one copy of the network graph, called by both endpoints
        return model(inputs, training=False)

    def serve_uint8(images):
        probabilities = forward(to_model_input(images, size, channels))
        top = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "top_k_ids": top.indices, "top_k_probabilities": top.values}

    def serve_float(inputs):
        return {"probabilities": forward(inputs)}

    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", serve_uint8, [tf.TensorSpec([None, None, None, 3], tf.uint8)])
    archive.add_endpoint("serve_float", serve_float, float_signature)
    return archive


def _write_assets(folder: Path, spec: NetworkSpec, class_names: list[str], images: np.ndarray,
                  expected: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(spec_to_yaml(spec))
    (folder / "class_names.txt").write_text("\n".join(class_names) + "\n")
    np.savez(folder / "check.npz", images=images, probabilities=expected)


def check_saved_model(path: str | Path, keras_model: keras.Model | None = None) -> float:
    """Reload with `tf.saved_model.load` and compare with the Keras outputs; return the max abs diff.

    Without `keras_model`, compares with the Keras outputs stored at export time.
    """
    path = Path(path)
    check = path / "assets" / "check.npz"
    if not (path / "saved_model.pb").exists() or not check.exists():
        raise ExportError(f"{path} is not an inception_keras SavedModel (no saved_model.pb or assets/check.npz)")
    with np.load(check) as stored:
        images, expected = stored["images"], stored["probabilities"]
    loaded = tf.saved_model.load(str(path))
    spec = load_spec(path / "assets" / "spec.yaml")
    float_inputs = to_model_input(images, tuple(spec.input_shape[:2]), spec.input_shape[2])
    if keras_model is not None:
        expected = keras_model.predict(float_inputs, verbose=0)
        expected = np.asarray(expected["predictions"] if isinstance(expected, dict) else expected)
    served = loaded.signatures["serving_default"](tf.constant(images))["probabilities"].numpy()
    served_float = loaded.signatures["serve_float"](float_inputs)["probabilities"].numpy()
    diff = float(max(np.abs(served - expected).max(), np.abs(served_float - expected).max()))
    if diff > TOLERANCE:
        raise ExportError(f"{path}: reloaded SavedModel differs from the Keras model by {diff:.3e} "
                          f"(tolerance {TOLERANCE:.0e})")
    return diff


def export_saved_model(model: keras.Model, spec: NetworkSpec, class_names: list[str],
                       base_dir: str | Path = "saved_models", name: str | None = None, images=None,
                       top_k: int = 5) -> ExportResult:
    """Export the inference model of `model` to `base_dir/name/VERSION` and verify it."""
    if spec.input_shape[2] not in (1, 3):
        raise ExportError(f"the serving signature takes RGB images; a {spec.input_shape[2]}-channel model "
                          f"cannot use it")
    if len(class_names) != spec.head.classes:
        raise ExportError(f"{len(class_names)} class names for a {spec.head.classes}-class model")
    if "aux_1" in {layer.name for layer in model.layers}:
        model = inference_model(model)
    root = Path(base_dir) / (name or spec.name)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    version = next_version(root)
    tmp = root / f"{TMP_PREFIX}{version}-{os.getpid()}"
    try:
        batch = reference_batch(spec, images)
        inputs = to_model_input(batch, tuple(spec.input_shape[:2]), spec.input_shape[2])
        expected = np.asarray(model.predict(inputs, verbose=0))
        _archive(model, spec, top_k).write_out(str(tmp), verbose=False)
        _write_assets(tmp / "assets", spec, class_names, batch, expected)
        diff = check_saved_model(tmp)
        final = root / str(version)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    weight_bytes = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
    return ExportResult(str(final), version, diff, weight_bytes, dir_bytes(final / "variables"), dir_bytes(final))


def load_run(run: str | Path) -> tuple[keras.Model, NetworkSpec, list[str]]:
    """The best model, spec and class names of a training run directory."""
    run = Path(run)
    missing = [f for f in ("best.keras", "spec.yaml", "class_names.txt") if not (run / f).exists()]
    if missing:
        raise ExportError(f"{run} is not a finished training run: missing {', '.join(missing)}")
    model = keras.saving.load_model(run / "best.keras", safe_mode=True)
    class_names = (run / "class_names.txt").read_text().splitlines()
    return model, load_spec(run / "spec.yaml"), class_names
