"""Exports in the TF Serving layout `BASE/NAME/VERSION`, each verified by running it: a TensorFlow SavedModel
(reloaded), or ONNX, LiteRT or OpenVINO (`export_model`; run in onnxruntime, the LiteRT interpreter, OpenVINO).

SavedModel endpoints: `serving_default` takes uint8 images `[batch, H, W, 3]` of any size, resizes and
normalizes inside, and returns `probabilities`, `top_k_ids` and `top_k_probabilities`;
`serve_float` takes the model's own float32 input. Only the inference model (no aux
heads) is exported, through `keras.export.ExportArchive` without `track()`, which stores
each variable once (`model.export` stores them twice, keras issue #23553). `assets/` holds
`spec.yaml`, `class_names.txt`, `check.npz` (a reference batch with the Keras model's
outputs, and the tolerance; for a mixed-precision model the outputs of its float32 copy) and `manifest.json`
(format, input signatures, preprocessing convention, checks passed). An ONNX, LiteRT or OpenVINO export holds the
same files beside its artifact (`inception_keras.export.formats`) and takes the float32 input.
Written to a temporary directory and renamed into place.

A model whose weights or outputs are not finite is not exported, and `check_export`
refuses such an export, a damaged or foreign directory, or a difference over the tolerance
(every comparison is `not diff <= TOLERANCE`, so nan fails), always with an ExportError.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from inception_keras.builder import float32_model, inference_model  # also registers the custom layers
from inception_keras.data import to_model_input
from inception_keras.export.folding import fold_batch_norm
from inception_keras.layers import xla
from inception_keras.serialize import (CLASS_NAMES_FILE, RunFilesError, load_spec, read_class_names, read_text_file,
                                       run_files, spec_to_yaml, write_class_names)
from inception_keras.spec import NetworkSpec, SpecError
from inception_keras.utils.atomic import atomic_write_bytes, atomic_write_text
from inception_keras.utils.errors import UserError, error_text, short_repr

if TYPE_CHECKING:
    from inception_keras.export.quantize import Int8Options

TOLERANCE = 1e-5
# A mixed-precision model computes in 16 bits, and its SavedModel (batch norm folded, `folding`) rounds otherwise
# than Keras' own run: both are compared with the same weights computing in float32, allowing MIXED_FACTOR times
# the distance the folded model has from that in Keras, and at least (a 16-bit compute type's):
TOLERANCE_BY_COMPUTE = {"bfloat16": 2e-2, "float16": 2e-3}
MIXED_FACTOR = 2.0
MAX_TOLERANCE = 0.5  # probabilities: anything wider would check nothing (a stored wider one is damage)
TMP_PREFIX = ".tmp-"
CHECK_FILE = "check.npz"
MANIFEST_FILE = "manifest.json"
FORMATS = ("saved_model", "onnx", "litert", "openvino")
# ONNX, LiteRT and OpenVINO exports compute in float32: the runtime's probabilities within RELATIVE_TOLERANCE of
# the spread of the Keras model's (max - min over the reference batch, at least MIN_SPREAD), the same top-1 classes
RELATIVE_TOLERANCE = 1e-4
MIN_SPREAD = 1e-2
MAX_INPUT_SIDE = 8192  # a manifest's input height or width (the check builds a batch of that size)
MAX_CHECK_IMAGES = 256  # images check.npz may hold (an export stores 2 to 64)
MAX_CHECK_BYTES = 64 << 20  # what check.npz's arrays may declare: 64 images of 224x224 RGB take 9.6 MB
SIGNATURES = ("serving_default", "serve_float")
VERSION_NAME = re.compile(r"[0-9]+")


class ExportError(UserError, RuntimeError):
    """An export failed its check or cannot be read."""


def tolerance_for(model: keras.Model) -> float:
    """The least reload-check tolerance: TOLERANCE, or a 16-bit compute type's (mixed precision)."""
    computes = {getattr(layer, "compute_dtype", "float32") for layer in model.layers}
    return max([TOLERANCE] + [TOLERANCE_BY_COMPUTE[dtype] for dtype in computes if dtype in TOLERANCE_BY_COMPUTE])


def _mixed(model: keras.Model) -> bool:
    return tolerance_for(model) > TOLERANCE


def _reference_outputs(model: keras.Model, served: keras.Model, inputs) -> tuple[np.ndarray, np.ndarray, float]:
    """What `model` computes on `inputs`, what its export `served` is checked against, and the tolerance.

    A float32 model is the reference itself, to TOLERANCE. A mixed-precision one is compared with its float32
    copy (`float32_model`: the exact function of its weights), within MIXED_FACTOR times the largest distance
    from it that the Keras model or its folded copy `served` shows on `inputs` (folding moves each batch norm's
    shift into a 16-bit bias: a rounding that global pooling does not average away, measured up to 2.4x the
    Keras model's distance on noise images, equal on real digits), and at least `tolerance_for(model)`."""
    outputs = np.asarray(model.predict(inputs, verbose=0))
    if not _mixed(model) or not np.isfinite(outputs).all():
        return outputs, outputs, TOLERANCE
    exact = np.asarray(float32_model(model).predict(inputs, verbose=0))
    folded = np.asarray(served.predict(inputs, verbose=0))
    distance = float(max(np.abs(outputs - exact).max(), np.abs(folded - exact).max()))
    return outputs, exact, min(max(tolerance_for(model), MIXED_FACTOR * distance), MAX_TOLERANCE)


@dataclass
class ExportResult:
    path: str
    version: int
    max_abs_diff: float
    weight_bytes: int
    variables_bytes: int
    total_bytes: int
    tolerance: float = TOLERANCE

    def describe(self) -> str:
        return (f"exported {self.path} (version {self.version}): reload check max abs diff {self.max_abs_diff:.2e} "
                f"(tolerance {self.tolerance:.0e}); weights {self.weight_bytes:,} B, variables/ "
                f"{self.variables_bytes:,} B ({self.variables_bytes / self.weight_bytes:.3f}x), whole SavedModel "
                f"{self.total_bytes:,} B ({self.total_bytes / self.weight_bytes:.3f}x)")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def next_version(root: Path) -> int:
    """One more than the highest version under `root`; every entry named by digits (a stray file too) is taken."""
    names = [p.name for p in root.iterdir()] if root.is_dir() else []
    return max((int(n) for n in names if VERSION_NAME.fullmatch(n)), default=0) + 1


_writing: set[str] = set()  # temporaries this process is writing now


def _process_alive(pid_text: str) -> bool:
    try:
        pid = int(pid_text)
        if pid <= 0 or pid == os.getpid():
            return False
        os.kill(pid, 0)
    except (ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(root: Path) -> None:
    """Temporaries of exports that were killed: their process is gone (or had this process's id)."""
    for path in root.glob(f"{TMP_PREFIX}*"):
        if str(path) in _writing or _process_alive(path.name.rsplit("-", 1)[-1]):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name.startswith(TMP_PREFIX):
        raise ExportError(f"export name {name!r} is not a plain directory name (exports go to BASE_DIR/NAME/VERSION)")
    return name


def _export_root(base_dir: Path, name: str) -> Path:
    """`base_dir/name`, created; a file in the way or a directory that cannot be made is an ExportError."""
    root = base_dir / name
    for path in (base_dir, root):
        if path.exists() and not path.is_dir():
            raise ExportError(f"{path} is a file, not a directory (exports go to BASE_DIR/NAME/VERSION)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"cannot create the export directory {root}: {error.strerror or error}") from None
    return root


def _finite_kind(values: np.ndarray) -> str:
    return " and ".join(kind for kind, found in (("nan", np.isnan(values).any()), ("inf", np.isinf(values).any()))
                        if found)


def non_finite_count(arrays) -> int:
    """How many values of the floating-point arrays in `arrays` are nan or inf."""
    count = 0
    for array in arrays:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            count += int(array.size - np.count_nonzero(np.isfinite(array)))
    return count


def _refuse_non_finite(model: keras.Model, outputs: np.ndarray, label: str) -> None:
    """An ExportError if the model's weights or its outputs on the reference batch hold nan or inf."""
    bad_weights = non_finite_count(keras.ops.convert_to_numpy(w) for w in model.weights)
    if np.isfinite(outputs).all() and not bad_weights:
        return
    if np.isfinite(outputs).all():
        raise ExportError(f"{label}: the model's weights hold {bad_weights:,} non-finite values (its outputs on the "
                          f"reference batch are finite)")
    raise ExportError(f"{label}: the model's outputs are not finite ({_finite_kind(outputs)}): the model's weights "
                      f"hold {bad_weights:,} non-finite values")


def reference_batch(input_shape: tuple, images=None, count: int = 2) -> np.ndarray:
    """uint8 RGB images for the reload check: given ones (grey ones made RGB), or a fixed random batch."""
    if images is not None:
        images = np.asarray(images, dtype=np.uint8)[:count]
        return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    h, w, _ = input_shape
    return np.random.default_rng(0).integers(0, 256, size=(count, h, w, 3), dtype=np.uint8)


def _archive(model: keras.Model, input_shape: tuple, classes: int, top_k: int) -> keras.export.ExportArchive:
    """The two endpoints around one copy of the network graph. On TensorFlow the graph is the model traced
    in a tf.function (not `track()`ed: variables stored once); on JAX it is the model converted by
    jax2tf (`track_and_add_endpoint`, which also leaves a `forward` signature: the bare model)."""
    size, channels = tuple(input_shape[:2]), input_shape[2]
    k = min(top_k, classes)
    float_signature = [tf.TensorSpec([None, *input_shape], tf.float32)]
    archive = keras.export.ExportArchive()
    if keras.backend.backend() == "tensorflow":
        forward = tf.function(lambda inputs: model(inputs, training=False), input_signature=float_signature)
    else:
        forward = archive.track_and_add_endpoint("forward", model, float_signature)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def serve_uint8(images):
        probabilities = forward(to_model_input(images, size, channels))
        top = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "top_k_ids": top.indices, "top_k_probabilities": top.values}

    @tf.function(input_signature=float_signature)
    def serve_float(inputs):
        return {"probabilities": forward(inputs)}

    archive.add_endpoint("serving_default", serve_uint8)
    archive.add_endpoint("serve_float", serve_float)
    return archive


def _write_assets(folder: Path, spec: NetworkSpec | None, class_names: list[str], images: np.ndarray,
                  expected: np.ndarray, tolerance: float = TOLERANCE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if spec is not None:
        atomic_write_text(folder / "spec.yaml", spec_to_yaml(spec))
    write_class_names(folder / CLASS_NAMES_FILE, class_names)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, probabilities=expected, tolerance=np.float64(tolerance))
    atomic_write_bytes(folder / CHECK_FILE, buffer.getvalue())


def serving_input_shape(loaded) -> tuple:
    """(H, W, C) of a reloaded export's `serve_float` signature."""
    _, inputs = loaded.signatures["serve_float"].structured_input_signature
    return tuple(next(iter(inputs.values())).shape[1:])


def _require_layout(path: Path) -> None:
    """An ExportError unless `path` is a directory holding `saved_model.pb` and `assets/check.npz` files."""
    if not path.exists():
        raise ExportError(f"{path} does not exist")
    if not path.is_dir():
        raise ExportError(f"{path} is not an inception_keras SavedModel: a file, not an export directory")
    missing = [name for name in ("saved_model.pb", f"assets/{CHECK_FILE}") if not (path / name).is_file()]
    if missing:
        versions = sorted((p.name for p in path.iterdir() if p.is_dir() and VERSION_NAME.fullmatch(p.name)), key=int)
        hint = f"; give a version directory such as {path / versions[-1]}" if versions else ""
        raise ExportError(f"{path} is not an inception_keras SavedModel (no {' or '.join(missing)}){hint}")


def _npz_headers(check: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """(shape, dtype) of each array of an `.npz` file, from the headers of its members, reading none of the data."""
    import zipfile

    headers = {}
    with zipfile.ZipFile(check) as archive:
        if len(archive.infolist()) > 16:
            raise ValueError(f"{len(archive.infolist())} members")
        for entry in archive.infolist():
            with archive.open(entry) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member, max_header_size=10_000)
            headers[entry.filename.removesuffix(".npy")] = (tuple(shape), dtype)
    return headers


def _check_headers(check: Path, headers: dict, input_size: tuple | None) -> None:
    """An ExportError unless `check.npz` declares a reference batch of uint8 images (at most MAX_CHECK_IMAGES, of
    `input_size` where the export's input has one, of at most MAX_CHECK_BYTES) and float outputs for them."""
    (images, image_type), (outputs, output_type) = headers["images"], headers["probabilities"]
    declared = int(np.prod(images, dtype=object)) * image_type.itemsize + \
        int(np.prod(outputs, dtype=object)) * output_type.itemsize
    if (image_type != np.uint8 or len(images) != 4 or images[-1] != 3 or not 0 < images[0] <= MAX_CHECK_IMAGES
            or declared > MAX_CHECK_BYTES or input_size is not None and images[1:3] != tuple(input_size)
            or len(outputs) != 2 or outputs[0] != images[0] or output_type.kind != "f"):
        size = f" of the export's {input_size[0]}x{input_size[1]} input" if input_size else ""
        raise ExportError(f"{check} is damaged: it declares images {image_type}{list(images)} and probabilities "
                          f"{output_type}{list(outputs)}, not a reference batch of at most {MAX_CHECK_IMAGES} uint8 "
                          f"RGB images{size} and their outputs in {MAX_CHECK_BYTES:,} bytes; nothing was read")
    if "tolerance" in headers and headers["tolerance"][0] != ():
        raise ExportError(f"{check} is damaged: tolerance of shape {list(headers['tolerance'][0])}")


def _read_reference(check: Path, input_size: tuple | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """The reference images (uint8, N x H x W x 3; H x W = `input_size` where given), the outputs stored with them
    at export, the tolerance; the members' headers are checked before any array is read."""
    try:
        headers = _npz_headers(check)
        if "images" in headers and "probabilities" in headers:
            _check_headers(check, headers, input_size)
        with np.load(check, allow_pickle=False) as stored:
            images, probabilities = stored["images"], stored["probabilities"]
            tolerance = float(stored["tolerance"]) if "tolerance" in stored.files else TOLERANCE
    except ExportError:
        raise
    except Exception as error:  # numpy raises zip, pickle, key and I/O errors for a damaged file
        raise ExportError(f"{check} is damaged ({error_text(error, 150)}): export the model again") from None
    if (images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images)
            or probabilities.ndim != 2 or len(probabilities) != len(images)
            or not np.issubdtype(probabilities.dtype, np.floating)):
        raise ExportError(f"{check} is damaged: images {images.dtype}{list(images.shape)} and probabilities "
                          f"{probabilities.dtype}{list(probabilities.shape)} are not a reference batch and its outputs")
    if not TOLERANCE <= tolerance <= MAX_TOLERANCE:
        raise ExportError(f"{check} is damaged: tolerance {tolerance!r}")
    return images, probabilities, tolerance


def _load(path: Path):
    """`tf.saved_model.load`, with our two signatures; a damaged or foreign export is an ExportError."""
    absl = logging.getLogger("absl")  # a JAX export warns that its functions' gradients were not saved
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TensorFlow raises many types (IndexError, OSError, OpError) for damaged files
        raise ExportError(f"{path}: the SavedModel cannot be loaded, it is damaged or incomplete "
                          f"({error_text(error, 200)}): export the model again") from None
    finally:
        absl.setLevel(level)
    missing = [name for name in SIGNATURES if name not in loaded.signatures]
    if missing:
        raise ExportError(f"{path} is not an inception_keras SavedModel (no {' or '.join(missing)} signature)")
    return loaded


def _serve(loaded, path: Path, images: np.ndarray, float_inputs) -> tuple[np.ndarray, np.ndarray]:
    try:
        served = loaded.signatures["serving_default"](tf.constant(images))["probabilities"].numpy()
        served_float = loaded.signatures["serve_float"](float_inputs)["probabilities"].numpy()
    except (tf.errors.OpError, ValueError, TypeError, KeyError) as error:
        raise ExportError(f"{path}: the SavedModel fails on its reference batch ({error_text(error, 200)}): "
                          f"export the model again") from None
    return served, served_float


def _variables_non_finite(path: Path) -> int:
    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    return non_finite_count(reader.get_tensor(name) for name, dtype in reader.get_variable_to_dtype_map().items()
                            if dtype.is_floating)


def _keras_outputs(keras_model: keras.Model | str | Path, float_inputs, input_shape: tuple) -> np.ndarray:
    if not isinstance(keras_model, keras.Model):
        from inception_keras.pretrained.convert import load_keras_model

        keras_model = load_keras_model(keras_model)
    if _mixed(keras_model):
        keras_model = float32_model(keras_model)  # the reference a mixed-precision export was checked against
    try:
        outputs = keras_model.predict(float_inputs, verbose=0)
    except (ValueError, TypeError, tf.errors.OpError) as error:
        raise ExportError(f"the Keras model cannot take the export's {'x'.join(map(str, input_shape))} input: "
                          f"{error_text(error, 200)}") from None
    outputs = np.asarray(outputs["predictions"] if isinstance(outputs, dict) else outputs)
    if not np.isfinite(outputs).all():
        bad = non_finite_count(keras.ops.convert_to_numpy(w) for w in keras_model.weights)
        raise ExportError(f"the Keras model's outputs are not finite ({_finite_kind(outputs)}): the model's weights "
                          f"hold {bad:,} non-finite values")
    return outputs


def check_saved_model(path: str | Path, keras_model: keras.Model | str | Path | None = None) -> float:
    """Reload with `tf.saved_model.load` and compare with the Keras outputs; return the max abs diff.

    Args:
        path: an export's version directory (`BASE/NAME/VERSION`).
        keras_model: a Keras model, or the path of a `.keras` file, to compare with (a mixed-precision
            one through its float32 copy); None compares with the outputs stored at export time
            (`assets/check.npz`).

    Raises:
        ExportError: the export is missing, damaged or not ours, an output is not finite, or the
            outputs differ by more than the stored tolerance (TOLERANCE, wider for mixed precision).
    """
    path = Path(path)
    _require_layout(path)
    check = path / "assets" / CHECK_FILE
    images, expected, tolerance = _read_reference(check)
    loaded = _load(path)
    input_shape = serving_input_shape(loaded)
    float_inputs = to_model_input(images, tuple(input_shape[:2]), input_shape[2])
    served, served_float = _serve(loaded, path, images, float_inputs)
    for outputs in (served, served_float):
        if not np.isfinite(outputs).all():
            raise ExportError(f"{path}: the SavedModel's outputs are not finite ({_finite_kind(outputs)}): its "
                              f"variables hold {_variables_non_finite(path):,} non-finite values")
    if keras_model is not None:
        expected = _keras_outputs(keras_model, float_inputs, input_shape)
    elif not np.isfinite(expected).all():
        raise ExportError(f"{check}: the stored Keras outputs are not finite ({_finite_kind(expected)}): the model "
                          f"was broken when exported; export a finite one")
    if served.shape != expected.shape:
        raise ExportError(f"{path}: the SavedModel gives outputs of shape {served.shape}, the Keras model "
                          f"{expected.shape}: they are not the same network")
    diff = float(max(np.abs(served - expected).max(), np.abs(served_float - expected).max()))
    if not diff <= tolerance:
        reference = "the Keras model" if tolerance <= TOLERANCE else "the Keras model computing in float32"
        raise ExportError(f"{path}: reloaded SavedModel differs from {reference} by {diff:.3e} "
                          f"(tolerance {tolerance:.0e})")
    return diff


def _publish(tmp: Path, root: Path) -> tuple[Path, int]:
    """Rename `tmp` to the next free version directory (another exporter may take one meanwhile)."""
    for _ in range(10):
        version = next_version(root)
        final = root / str(version)
        try:
            os.rename(tmp, final)
            return final, version
        except OSError:
            if not final.exists():
                raise
    raise ExportError(f"cannot find a free version number under {root}: other exports keep taking them")


def _prepare(model: keras.Model, spec: NetworkSpec | None, class_names: list[str], name: str | None,
             user: str) -> tuple[keras.Model, tuple, int, str]:
    """The inference model (aux heads dropped), its input shape, class count and the export's name."""
    input_shape = image_input_shape(model, user)
    if "aux_1" in {layer.name for layer in model.layers}:
        model = inference_model(model)
    classes = output_classes(model)
    if len(class_names) != classes:
        raise ExportError(f"{len(class_names)} class names for a {classes}-class model")
    name = _check_name(name or (spec.name if spec is not None else model.name.removesuffix("_inference")))
    return model, input_shape, classes, name


def _write_version(base_dir: str | Path, name: str, write: Callable[[Path], Any]) -> tuple[Path, int, Any]:
    """`write(tmp)` into a temporary directory under `base_dir/name`, renamed to the next version when it returns:
    the version directory, its number, and what `write` returned. Nothing is left behind when it raises."""
    root = _export_root(Path(base_dir), name)
    _remove_stale_temporaries(root)
    tmp = root / f"{TMP_PREFIX}{next_version(root)}-{os.getpid()}"
    _writing.add(str(tmp))
    try:
        tmp.mkdir()
        written = write(tmp)
        final, version = _publish(tmp, root)
    except (OSError, tf.errors.OpError) as error:
        raise ExportError(f"cannot write the export under {root}: {error_text(error, 200)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _writing.discard(str(tmp))
    return final, version, written


def _preprocessing(model: keras.Model, input_shape: tuple) -> str:
    h, w, c = input_shape
    text = (f"{'grey' if c == 1 else 'RGB'} images resized to {h}x{w} (bilinear), then x / 127.5 - 1: float32 "
            f"in [-1, 1], NHWC (inception_keras.data.to_model_input)")
    if "input_conversion" in {layer.name for layer in model.layers}:
        text += "; the model converts that to its original convention inside (its input_conversion layer)"
    return text


def _write_manifest(folder: Path, fmt: str, artifact: str, model: keras.Model, input_shape: tuple,
                    inputs: list[dict], classes: int, checks: list[dict], quantization: dict | None = None) -> None:
    """`folder/manifest.json`: format, artifact, input signature, preprocessing convention, quantization (int8
    exports) and checks passed."""
    manifest = {"format": fmt, "artifact": artifact, "inputs": inputs,
                **({"quantization": quantization} if quantization else {}),
                "output": {"name": "probabilities", "dtype": "float32", "shape": [None, classes]},
                "preprocessing": _preprocessing(model, input_shape), "class_names": CLASS_NAMES_FILE,
                "checks": checks, "exporter": {"inception_keras": _package_version(), "keras": keras.__version__,
                                               "tensorflow": tf.__version__}}
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")


def _package_version() -> str:
    from inception_keras import __version__

    return __version__


def export_saved_model(model: keras.Model, spec: NetworkSpec | None, class_names: list[str],
                       base_dir: str | Path = "saved_models", name: str | None = None, images=None,
                       top_k: int = 5) -> ExportResult:
    """Export the inference model of `model` to `base_dir/name/VERSION` and verify it.

    What is written is the inference model with each batch norm folded into its convolution
    (`inception_keras.export.folding`, 1.17x faster in bf16), traced op by op (`xla.op_by_op`: no XLA clusters,
    so TF Serving and converters run it without XLA's JIT); the check compares it with `model` itself, or, for
    a mixed-precision model, with its float32 copy (see `_reference_outputs`).

    `spec` (written to `assets/spec.yaml`) may be None for a model whose spec is not known,
    e.g. a `.keras` file from `inception-keras weights import`; the name then defaults to the model's.

    Raises:
        ExportError: the model cannot be served (channels, class names), its weights or outputs
            are not finite, the base directory cannot be written, or the reload check fails.
            Nothing is left under `base_dir/name` but what was there.
    """
    model, input_shape, classes, name = _prepare(model, spec, class_names, name, "the serving signature")
    batch = reference_batch(input_shape, images)
    inputs = to_model_input(batch, tuple(input_shape[:2]), input_shape[2])
    served = fold_batch_norm(model)
    outputs, expected, tolerance = _reference_outputs(model, served, inputs)
    _refuse_non_finite(model, outputs, f"cannot export {name}")

    def write(tmp: Path) -> float:
        with xla.op_by_op():  # no XLA clusters: TF Serving runs them only behind an experimental flag
            _archive(served, input_shape, classes, top_k).write_out(str(tmp), verbose=False)
        _write_assets(tmp / "assets", spec, class_names, batch, expected, tolerance)
        diff = check_saved_model(tmp)
        signatures = [{"signature": "serving_default", "name": "images", "dtype": "uint8",
                       "shape": [None, None, None, 3], "preprocessing": "inside"},
                      {"signature": "serve_float", "name": "inputs", "dtype": "float32",
                       "shape": [None, *input_shape]}]
        check = {"runtime": f"tensorflow {tf.__version__}", "images": len(batch), "max_abs_diff": diff,
                 "tolerance": tolerance}
        _write_manifest(tmp / "assets", "saved_model", "saved_model.pb", model, input_shape, signatures, classes,
                        [check])
        return diff

    final, version, diff = _write_version(base_dir, name, write)
    weight_bytes = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in served.weights)
    return ExportResult(str(final), version, diff, weight_bytes, dir_bytes(final / "variables"), dir_bytes(final),
                        tolerance)


@dataclass
class FormatExportResult:
    path: str
    version: int
    format: str
    check: dict
    artifact_bytes: int
    weight_bytes: int
    precision: str = "float32"

    def describe(self) -> str:
        kind = self.format if self.precision == "float32" else f"{self.format} {self.precision}"
        return (f"exported {self.path} (version {self.version}, {kind}): {describe_check(self.check)}; "
                f"{self.artifact_bytes:,} B on disk for {self.weight_bytes:,} B of float32 weights")


def describe_check(check: dict) -> str:
    """One line for a check record of a format export (see `check_format_export`, `quantize.accuracy_check`)."""
    if "validation_images" in check:  # an int8 export's accuracy check
        return (f"{check['runtime']}: int8 top-1 accuracy {check['int8_accuracy']:.2f} % against float32's "
                f"{check['float_accuracy']:.2f} % ({check['accuracy_change']:+.2f} points, at most "
                f"-{check['max_accuracy_drop']:g} allowed), top-1 agreement {check['top1_agreement']:.1%} on "
                f"{check['validation_images']} validation images")
    if "top1_agreement" in check:  # an int8 export's --check on its stored images
        return (f"{check['runtime']}: int8 top-1 agreement with float32 {check['top1_agreement']:.1%} on "
                f"{check['images']} stored validation images (at least {check['min_agreement']:.0%} needed)")
    return (f"{check['runtime']}: max abs diff {check['max_abs_diff']:.2e}, {check['of_spread']:.1e} of the "
            f"probabilities' spread (tolerance {check['tolerance_of_spread']:.0e}), top-1 identical on "
            f"{check['images']} images")


def export_model(model: keras.Model, spec: NetworkSpec | None, class_names: list[str],
                 base_dir: str | Path = "saved_models", name: str | None = None, format: str = "saved_model",
                 images=None, int8: Int8Options | None = None) -> ExportResult | FormatExportResult:
    """Export the inference model of `model` in `format` (FORMATS) to `base_dir/name/VERSION`, verified by running
    it in its own runtime: `export_saved_model` for "saved_model"; otherwise the model computing in float32
    (a mixed-precision one through its float32 copy) as `artifact`, `class_names.txt`, `spec.yaml` (when known),
    `check.npz` (the reference batch: `images` or noise images, and the Keras outputs) and `manifest.json`.

    `int8` (`inception_keras.export.quantize.Int8Options`: the data, calibration steps, allowed accuracy drop) writes
    the ONNX, LiteRT or OpenVINO model quantized to int8 instead (see `inception_keras.export.quantize`), checked on the
    data's validation images against the float model; `check.npz` then holds CHECK_IMAGES of them.

    Raises:
        ExportError: as `export_saved_model`; the format's packages are not installed (naming the extra), the
            converter fails, or the runtime's outputs differ from the Keras model's by more than
            RELATIVE_TOLERANCE of their spread, or in a top-1 class; int8: the accuracy drops by more than allowed.
    """
    if format == "saved_model" and int8 is None:
        return export_saved_model(model, spec, class_names, base_dir, name, images=images)
    from inception_keras.export import formats as export_formats

    if format not in export_formats.FORMATS:
        raise ExportError(f"unknown export format {format!r}: one of {', '.join(FORMATS)}"
                          if format not in FORMATS else f"--int8 is for {', '.join(export_formats.FORMATS)}, "
                                                        f"not {format}")
    export_formats.require(format)
    if int8 is not None:
        from inception_keras.export import quantize

        quantize.require(format)
    model, input_shape, classes, name = _prepare(model, spec, class_names, name, f"the {format} export")
    if _mixed(model):
        model = float32_model(model)  # what a mixed-precision model's export is checked against, as a SavedModel's
    inputs = [{"name": export_formats.INPUT_NAME, "dtype": "float32", "shape": [None, *input_shape]}]
    manifest = {"format": format, "inputs": inputs}
    if int8 is None:
        batch = reference_batch(input_shape, images)
        if batch.shape[1:3] != tuple(input_shape[:2]):  # stored at the input's size, which `--check` requires
            batch = np.asarray(tf.cast(tf.round(tf.image.resize(batch, input_shape[:2])), tf.uint8))
        write_artifact = functools.partial(export_formats.write_artifact, model, format)
    else:
        calibration = quantize.calibration_inputs(int8, input_shape, classes)
        validation, labels = quantize.validation_inputs(int8, input_shape, classes)
        float_probabilities = np.asarray(model.predict(validation, batch_size=64, verbose=0))
        _refuse_non_finite(model, float_probabilities, f"cannot export {name}")
        batch = reference_batch(input_shape, np.round((validation[:quantize.CHECK_IMAGES] + 1) * 127.5),
                                count=quantize.CHECK_IMAGES)
        write_artifact = functools.partial(quantize.write_int8, model, format, calibration=calibration,
                                           full_range=int8.full_range)
        manifest["quantization"] = {"weights": "int8, per output channel", "activations": "8-bit, per tensor",
                                    "calibration_images": len(calibration),
                                    **quantize.int8_assumptions(format, int8.full_range)}
    expected = np.asarray(model.predict(to_model_input(batch, tuple(input_shape[:2]), input_shape[2]), verbose=0))
    _refuse_non_finite(model, expected, f"cannot export {name}")

    def write(tmp: Path) -> dict:
        artifact = write_artifact(folder=tmp, input_shape=input_shape)
        _write_assets(tmp, spec, class_names, batch, expected)
        if int8 is None:
            checks = [check_format_export(tmp, manifest=manifest)]
        else:  # the accuracy on the validation images, then the agreement on the stored ones, which
            # `export --check` requires again (or MIN_CHECK_AGREEMENT if that is less)
            runtime = export_formats.runtime_name(format)
            served = export_formats.run_artifact(tmp, format, validation)
            accuracy = quantize.accuracy_check(float_probabilities, served, labels, int8.max_accuracy_drop,
                                               f"{name}: {runtime}")
            measuring = {**manifest, "quantization": {**manifest["quantization"], "check_agreement": 0.0}}
            check = check_format_export(tmp, manifest=measuring)
            required = min(quantize.MIN_CHECK_AGREEMENT, math.floor(check["top1_agreement"] * 100) / 100)
            manifest["quantization"]["check_agreement"] = check["min_agreement"] = required
            checks = [{"runtime": runtime, **accuracy}, check]
        _write_manifest(tmp, format, artifact.name, model, input_shape, inputs, classes, checks,
                        manifest.get("quantization"))
        return checks[0]

    final, version, check = _write_version(base_dir, name, write)
    artifact_bytes = sum(f.stat().st_size for f in final.iterdir() if f.name.startswith("model."))
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    return FormatExportResult(str(final), version, format, check, artifact_bytes, weight_bytes,
                              "int8" if int8 is not None else "float32")


def _read_manifest(path: Path) -> dict:
    """The manifest of a format export: its format, input shape and artifact (the format's file name, in `path`, a
    regular file whose first bytes are of the format) checked; a damaged one is an ExportError."""
    from inception_keras.export import formats as export_formats

    try:
        manifest = json.loads(read_text_file(path / MANIFEST_FILE, "export manifest"))
        fmt, shape = manifest["format"], manifest["inputs"][0]["shape"]
    except SpecError as error:
        raise ExportError(str(error)) from None
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ExportError(f"{path / MANIFEST_FILE} is damaged ({error_text(error, 100)}): export the model again") \
            from None
    if (fmt not in export_formats.FORMATS or not isinstance(shape, list) or len(shape) != 4
            or not all(type(n) is int and 0 < n <= MAX_INPUT_SIDE for n in shape[1:]) or shape[3] not in (1, 3)):
        raise ExportError(f"{path / MANIFEST_FILE} is damaged: format {fmt!r}, input shape {shape!r}")
    expected = export_formats.ARTIFACTS[fmt]
    if manifest.get("artifact") != expected:
        raise ExportError(f"{path / MANIFEST_FILE} is damaged: its artifact is {short_repr(manifest.get('artifact'))}, "
                          f"the {fmt} format's is {expected!r}, in the export's directory")
    problem = export_formats.artifact_problem(path / expected, fmt)
    if problem is not None:
        raise ExportError(f"{problem}: {path} is not a complete {fmt} export; export the model again")
    return manifest


def check_format_export(path: str | Path, keras_model: keras.Model | str | Path | None = None,
                        manifest: dict | None = None) -> dict:
    """Run an ONNX, LiteRT or OpenVINO export in its own runtime on its reference batch and compare with the
    Keras outputs; return the check's record (runtime, images, max_abs_diff, of_spread, ...).

    Args:
        path: the export's version directory.
        keras_model: a Keras model or `.keras` file to compare with (a mixed-precision one through its float32
            copy); None compares with the outputs stored at export (`check.npz`).
        manifest: the manifest's format and input shape, when it is not written yet (the export's own check).

    Raises:
        ExportError: the export is damaged or not ours, its runtime is missing or fails, an output is not
            finite, the outputs differ by more than RELATIVE_TOLERANCE of their spread, or a top-1 class differs.
    """
    from inception_keras.export import formats as export_formats

    path = Path(path)
    manifest = manifest or _read_manifest(path)
    fmt, input_shape = manifest["format"], tuple(manifest["inputs"][0]["shape"][1:])
    images, expected, _ = _read_reference(path / CHECK_FILE, input_shape[:2])
    float_inputs = to_model_input(images, tuple(input_shape[:2]), input_shape[2]).numpy()
    served = export_formats.run_artifact(path, fmt, float_inputs)
    runtime = export_formats.runtime_name(fmt)
    if keras_model is not None:
        expected = _keras_outputs(keras_model, float_inputs, input_shape)
    elif not np.isfinite(expected).all():
        raise ExportError(f"{path / CHECK_FILE}: the stored Keras outputs are not finite "
                          f"({_finite_kind(expected)}): the model was broken when exported; export a finite one")
    if manifest.get("quantization"):
        from inception_keras.export.quantize import agreement_check

        quantization = manifest["quantization"] if isinstance(manifest["quantization"], dict) else {}
        return {"runtime": runtime, **agreement_check(served, expected, f"{path}: {runtime}",
                                                      quantization.get("check_agreement"), quantization)}
    return {"runtime": runtime, "images": len(images), **compare_with_spread(served, expected, f"{path}: {runtime}")}


def compare_with_spread(served: np.ndarray, expected: np.ndarray, what: str) -> dict:
    """max_abs_diff and of_spread (that over the spread of `expected`, at least MIN_SPREAD) of `served`, which
    must be within RELATIVE_TOLERANCE of the spread and name the same top-1 classes; else an ExportError."""
    if served.shape != expected.shape:
        raise ExportError(f"{what} gives outputs of shape {served.shape}, the Keras model {expected.shape}: they "
                          f"are not the same network")
    if not np.isfinite(served).all():
        raise ExportError(f"{what}: the export's outputs are not finite ({_finite_kind(served)})")
    diff = float(np.abs(served - expected).max())
    of_spread = diff / max(float(np.ptp(expected)), MIN_SPREAD)
    if not of_spread <= RELATIVE_TOLERANCE:
        raise ExportError(f"{what} differs from the Keras model by {diff:.3e}, {of_spread:.1e} of the "
                          f"probabilities' spread (tolerance {RELATIVE_TOLERANCE:.0e})")
    flipped = np.flatnonzero(served.argmax(axis=1) != expected.argmax(axis=1))
    if flipped.size:
        raise ExportError(f"{what} names another top-1 class than the Keras model on {flipped.size} of "
                          f"{len(expected)} images (the first: image {flipped[0]})")
    return {"max_abs_diff": diff, "of_spread": of_spread, "tolerance_of_spread": RELATIVE_TOLERANCE,
            "top1_identical": True}


def check_export(path: str | Path, keras_model: keras.Model | str | Path | None = None) -> str:
    """`check_format_export` for a directory with a `manifest.json` (ONNX, LiteRT, OpenVINO), else
    `check_saved_model`; returns what was measured, in words."""
    path = Path(path)
    if (path / MANIFEST_FILE).exists() or (path / MANIFEST_FILE).is_symlink():
        return describe_check(check_format_export(path, keras_model))
    return f"max abs diff {check_saved_model(path, keras_model):.2e}"


def load_run(run: str | Path) -> tuple[keras.Model, NetworkSpec | None, list[str]]:
    """The model, spec (None if not known) and class names of a training run directory or a `.keras` file.

    A run directory holds `best.keras`, `spec.yaml` and `class_names.txt`. A `.keras` file takes
    `spec.yaml` and `class_names.txt` from beside it when they are there; a 1000- or 1001-class
    model without them is taken to be an ImageNet classifier; otherwise classes are named 0, 1, ...
    A spec is checked against the model it is found with (`inherit.check_model_spec`: an ExportError naming the
    first layer that differs).
    """
    from inception_keras.inherit import NarrowError, check_model_spec
    from inception_keras.pretrained import WeightsError
    from inception_keras.pretrained.convert import load_keras_model

    try:
        model_file, spec_file, names_file = run_files(run)
        spec = load_spec(spec_file) if spec_file is not None else None
        model = load_keras_model(model_file)
        if spec is not None:
            check_model_spec(model, spec, str(spec_file))
        names = read_class_names(names_file) if names_file else default_class_names(output_classes(model))
    except (RunFilesError, WeightsError, SpecError, NarrowError, OSError, UnicodeDecodeError) as error:
        raise ExportError(str(error)) from None
    classes = output_classes(model)
    if len(names) != classes:
        raise ExportError(f"{names_file}: {len(names)} class name{'' if len(names) == 1 else 's'} for the "
                          f"{classes}-class model {model_file}: one name a line, in label order")
    return model, spec, names


def image_input_shape(model: keras.Model, user: str) -> tuple[int, int, int]:
    """(H, W, C) of a model that takes one batch of images of a fixed size with 1 or 3 channels, as `user` (the
    serving signature, `predict`) feeds it.

    Raises:
        ExportError: the model takes several inputs, or one of another kind (a vector, images of any size).
    """
    shapes = [tuple(tensor.shape[1:]) for tensor in model.inputs]
    if len(shapes) == 1 and len(shapes[0]) == 3 and None not in shapes[0] and shapes[0][2] in (1, 3):
        return shapes[0]
    given = ", ".join("(" + ", ".join(map(str, shape)) + ")" for shape in shapes)
    noun = "input of shape" if len(shapes) == 1 else "inputs of shapes"
    raise ExportError(f"{user} needs a model with one image input (height, width, 1 or 3 channels: RGB or "
                      f"grayscale); this model takes {len(shapes)} {noun} {given}")


def output_classes(model: keras.Model) -> int:
    """The class count of the main classifier (`predictions`) of a model with or without aux heads."""
    names = {layer.name for layer in model.layers}
    return int((model.get_layer("predictions").output if "predictions" in names else model.outputs[0]).shape[-1])


def default_class_names(classes: int) -> list[str]:
    """ImageNet's names for a 1000- or 1001-class model (TF-slim: background first), else '0', '1', ..."""
    from inception_keras.applications import imagenet_class_names

    return imagenet_class_names(classes) or [str(i) for i in range(classes)]
