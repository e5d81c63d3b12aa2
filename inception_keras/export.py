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
from inception_keras.serialize import CLASS_NAMES_FILE, load_spec, read_class_names, spec_to_yaml, write_class_names
from inception_keras.errors import UserError
from inception_keras.spec import NetworkSpec, SpecError

TOLERANCE = 1e-5
TMP_PREFIX = ".tmp-"


class ExportError(UserError, RuntimeError):
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


def reference_batch(input_shape: tuple, images=None, count: int = 2) -> np.ndarray:
    """uint8 RGB images for the reload check: given ones (grey ones made RGB), or a fixed random batch."""
    if images is not None:
        images = np.asarray(images, dtype=np.uint8)[:count]
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    h, w, _ = input_shape
    return np.random.default_rng(0).integers(0, 256, size=(count, h, w, 3), dtype=np.uint8)


def _archive(model: keras.Model, input_shape: tuple, classes: int, top_k: int) -> keras.export.ExportArchive:
    size, channels = tuple(input_shape[:2]), input_shape[2]
    k = min(top_k, classes)

    float_signature = [tf.TensorSpec([None, *input_shape], tf.float32)]

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


def _write_assets(folder: Path, spec: NetworkSpec | None, class_names: list[str], images: np.ndarray,
                  expected: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        (folder / "spec.yaml").write_text(spec_to_yaml(spec))
    write_class_names(folder / CLASS_NAMES_FILE, class_names)
    np.savez(folder / "check.npz", images=images, probabilities=expected)


def serving_input_shape(loaded) -> tuple:
    """(H, W, C) of a reloaded export's `serve_float` signature."""
    _, inputs = loaded.signatures["serve_float"].structured_input_signature
    return tuple(next(iter(inputs.values())).shape[1:])


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
    input_shape = serving_input_shape(loaded)
    float_inputs = to_model_input(images, tuple(input_shape[:2]), input_shape[2])
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


def export_saved_model(model: keras.Model, spec: NetworkSpec | None, class_names: list[str],
                       base_dir: str | Path = "saved_models", name: str | None = None, images=None,
                       top_k: int = 5) -> ExportResult:
    """Export the inference model of `model` to `base_dir/name/VERSION` and verify it.

    `spec` (written to `assets/spec.yaml`) may be None for a model whose spec is not known,
    e.g. a `.keras` file from `inception-keras weights import`; the name then defaults to the model's.
    """
    if "aux_1" in {layer.name for layer in model.layers}:
        model = inference_model(model)
    input_shape, classes = tuple(model.input_shape[1:]), output_classes(model)
    if input_shape[2] not in (1, 3):
        raise ExportError(f"the serving signature takes RGB images; a {input_shape[2]}-channel model "
                          f"cannot use it")
    if len(class_names) != classes:
        raise ExportError(f"{len(class_names)} class names for a {classes}-class model")
    root = Path(base_dir) / (name or (spec.name if spec is not None else model.name.removesuffix("_inference")))
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    version = next_version(root)
    tmp = root / f"{TMP_PREFIX}{version}-{os.getpid()}"
    try:
        batch = reference_batch(input_shape, images)
        inputs = to_model_input(batch, tuple(input_shape[:2]), input_shape[2])
        expected = np.asarray(model.predict(inputs, verbose=0))
        _archive(model, input_shape, classes, top_k).write_out(str(tmp), verbose=False)
        _write_assets(tmp / "assets", spec, class_names, batch, expected)
        diff = check_saved_model(tmp)
        final = root / str(version)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    weight_bytes = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
    return ExportResult(str(final), version, diff, weight_bytes, dir_bytes(final / "variables"), dir_bytes(final))


def load_run(run: str | Path) -> tuple[keras.Model, NetworkSpec | None, list[str]]:
    """The model, spec (None if not known) and class names of a training run directory or a `.keras` file.

    A run directory holds `best.keras`, `spec.yaml` and `class_names.txt`. A `.keras` file takes
    `spec.yaml` and `class_names.txt` from beside it when they are there; a 1000- or 1001-class
    model without them is taken to be an ImageNet classifier; otherwise classes are named 0, 1, ...
    """
    run = Path(run)
    if run.is_dir():
        missing = [f for f in ("best.keras", "spec.yaml", CLASS_NAMES_FILE) if not (run / f).exists()]
        if missing:
            raise ExportError(f"{run} is not a finished training run: missing {', '.join(missing)}")
        model_file, folder = run / "best.keras", run
    elif run.suffix == ".keras" and run.is_file():
        model_file, folder = run, run.parent
    else:
        raise ExportError(f"{run} is neither a training run directory nor a .keras file")
    from inception_keras.pretrained import WeightsError
    from inception_keras.pretrained.convert import load_keras_model

    try:
        model = load_keras_model(model_file)
        spec = load_spec(folder / "spec.yaml") if (folder / "spec.yaml").exists() else None
        names_file = folder / CLASS_NAMES_FILE
        names = read_class_names(names_file) if names_file.exists() else default_class_names(output_classes(model))
    except (WeightsError, SpecError, OSError, UnicodeDecodeError) as error:
        raise ExportError(str(error)) from None
    return model, spec, names


def output_classes(model: keras.Model) -> int:
    """The class count of the main classifier (`predictions`) of a model with or without aux heads."""
    names = {layer.name for layer in model.layers}
    return int((model.get_layer("predictions").output if "predictions" in names else model.outputs[0]).shape[-1])


def default_class_names(classes: int) -> list[str]:
    """ImageNet's names for a 1000- or 1001-class model (TF-slim: background first), else '0', '1', ..."""
    from inception_keras.applications import imagenet_class_names

    return imagenet_class_names(classes) or [str(i) for i in range(classes)]
