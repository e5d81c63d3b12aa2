"""int8 post-training quantization of the ONNX, LiteRT and OpenVINO exports, and the accuracy check that guards it.

Weights are quantized per output channel (symmetric int8), activations per tensor, their ranges calibrated on
batches of training images preprocessed as in training (`make_pipeline`, shuffled with a fixed seed):

- LiteRT: the TFLite converter's full-integer quantization (`Optimize.DEFAULT`, a representative dataset,
  `TFLITE_BUILTINS_INT8` only); float32 input and output, quantized inside.
- ONNX: onnxruntime's `quantize_static` on the float export (QDQ format, int8 weights per channel, uint8
  activations, min-max calibration), after its `quant_pre_process` graph optimization.
- OpenVINO: NNCF's `quantize` on the float IR (int8 weights per channel, activations per tensor).

Weights in 7 bits by default (ONNX and OpenVINO). x86 CPUs without VNNI (AVX2-only: AMD Zen 1-3, Intel before
Cascade Lake) multiply u8 activations by s8 weights with `vpmaddubsw`, which sums pairs in 16 bits and
saturates: with full-range 8-bit weights an int8 model loses accuracy there, silently, though it was exported and
checked on a VNNI machine (measured on an AMD EPYC Zen 3: googlenet_mini on the embedded digits, ONNX Runtime,
95.28 % against float32's 99.17 %). Weights within [-64, 63] cannot saturate: onnxruntime's `reduce_range`, NNCF's
`overflow_fix`. `Int8Options.full_range` (`--int8-full-range`) keeps the 8-bit range, for a target known to have
VNNI or AMX (or an ARM CPU). LiteRT's int8 kernels (XNNPACK) widen to 16 bits before they multiply, on every CPU:
its weights keep the full range either way. The manifest records which, and the CPU the export was verified on
(`int8_assumptions`); `export --check` on another CPU says so when its agreement falls short.

Then the quantized artifact and the float Keras model classify the same validation images: the export is refused,
with both numbers, when its accuracy falls more than `max_accuracy_drop` points below the float model's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from inception_keras.data import DataSplits, make_pipeline
from inception_keras.export import ExportError
from inception_keras.export import formats as export_formats
from inception_keras.layers import xla
from inception_keras.utils.errors import error_text

DEFAULT_CALIBRATION_STEPS = 20
CALIBRATION_BATCH = 32
DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of top-1 accuracy
DEFAULT_VALIDATION_IMAGES = 2000
CHECK_IMAGES = 64  # validation images stored with the export for `export --check`
MIN_CHECK_AGREEMENT = 0.9  # top-1 agreement on them `export --check` requires (or what the export measured, if less)
NEEDS = {"onnx": (), "litert": (), "openvino": (("nncf", "nncf"),)}  # beyond the float export's packages


@dataclass(frozen=True)
class Int8Options:
    """What to calibrate on and how much accuracy the int8 export may lose."""

    data: DataSplits
    calibration_steps: int = DEFAULT_CALIBRATION_STEPS
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    validation_images: int = DEFAULT_VALIDATION_IMAGES
    full_range: bool = False  # 8-bit weights: only for a target CPU with VNNI or AMX (see the module docstring)

    def __post_init__(self):
        if not 1 <= self.calibration_steps <= 10_000:
            raise ExportError(f"--calibration-steps must be 1 to 10000, got {self.calibration_steps}")
        if not 0 <= self.max_accuracy_drop <= 100:
            raise ExportError(f"--max-accuracy-drop must be 0 to 100 points, got {self.max_accuracy_drop}")
        if self.validation_images < 1:
            raise ExportError(f"validation_images must be at least 1, got {self.validation_images}")


def require(fmt: str) -> None:
    """An ExportError naming what to install unless `fmt`'s int8 path can run (ONNX and LiteRT need nothing more)."""
    if fmt not in NEEDS:
        raise ExportError(f"--int8 is for {', '.join(NEEDS)}, not {fmt}")
    export_formats.require(fmt)
    missing = [dist for module, dist in NEEDS[fmt] if importlib.util.find_spec(module) is None]
    if missing:
        raise ExportError(f"--format {fmt} --int8 needs {', '.join(missing)} (not installed): "
                          f"pip install inception-keras[{fmt}]")


def _batches(data, input_shape: tuple, classes: int, count: int, training: bool, num_examples: int):
    """Up to `count` preprocessed float32 images of `data` and their labels, in CALIBRATION_BATCH batches."""
    pipeline = make_pipeline(data, tuple(input_shape), classes, CALIBRATION_BATCH, training=training, seed=0,
                             num_examples=num_examples)
    inputs, labels = [], []
    for images, onehot in pipeline.take(-(-count // CALIBRATION_BATCH)):
        inputs.append(images.numpy())
        labels.append(onehot.numpy().argmax(axis=-1))
    if not inputs:
        raise ExportError("--int8: the dataset has no images to calibrate and check on")
    return np.concatenate(inputs)[:count], np.concatenate(labels)[:count]


def calibration_inputs(options: Int8Options, input_shape: tuple, classes: int) -> np.ndarray:
    """`calibration_steps` batches of shuffled (seed 0) training images, preprocessed as in training."""
    data = options.data
    inputs, _ = _batches(data.train, input_shape, classes, options.calibration_steps * CALIBRATION_BATCH, True,
                         data.train_size)
    return inputs


def validation_inputs(options: Int8Options, input_shape: tuple, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `validation_images` validation images, preprocessed, and their labels."""
    data = options.data
    return _batches(data.validation, input_shape, classes, options.validation_images, False, data.validation_size)


def weight_range(fmt: str, full_range: bool) -> str:
    """The range of the int8 weights `fmt`'s export writes."""
    return "8-bit [-128, 127]" if full_range or fmt == "litert" else "7-bit [-64, 63]"


def int8_assumptions(fmt: str, full_range: bool, flags: frozenset[str] | None = None) -> dict:
    """What an int8 export of `fmt` assumes of the CPU it runs on, and the CPU it is verified on (this one)."""
    from inception_keras.utils.cpu import cpu_flags, cpu_model, int8_dot_product_flags

    flags = cpu_flags() if flags is None else flags
    saturates = full_range and fmt != "litert"
    return {"weights_range": weight_range(fmt, full_range),
            "assumes": "a CPU with VNNI or AMX, or an ARM CPU (8-bit dot products saturate on x86 without VNNI)"
                       if saturates else "any CPU (no 8-bit dot product can saturate)",
            "verified_on": {"cpu": cpu_model(), "int8_dot_product": sorted(int8_dot_product_flags(flags)) or None}}


def write_int8(model: keras.Model, fmt: str, folder: Path, input_shape: tuple, calibration: np.ndarray,
               full_range: bool = False) -> Path:
    """`model` quantized to int8 as `folder/ARTIFACTS[fmt]`, its activation ranges calibrated on `calibration`;
    weights in 7 bits unless `full_range` (or LiteRT).

    Raises:
        ExportError: the converter or quantizer fails (its message, shortened).
    """
    require(fmt)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the quantizers print progress bars
            return _WRITERS[fmt](model, folder, input_shape, calibration, full_range)
    except (OSError, ExportError):
        raise
    except Exception as error:  # tflite, onnxruntime and nncf raise many types
        raise ExportError(f"cannot quantize {model.name} to int8 {fmt}: {error_text(error, 200)}") from None


@contextlib.contextmanager
def _float_export(model: keras.Model, fmt: str, folder: Path, input_shape: tuple):
    """The float32 artifact of `model` in `fmt`, written in `folder/float` for the quantizer to read; removed after."""
    work = folder / "float"
    work.mkdir()
    try:
        yield export_formats.write_artifact(model, fmt, work, input_shape)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _litert(model: keras.Model, folder: Path, input_shape: tuple, calibration: np.ndarray, full_range: bool) \
        -> Path:
    import tensorflow as tf

    path = folder / export_formats.ARTIFACTS["litert"]

    def representative():
        for image in calibration:
            yield [image[None]]

    signature = [tf.TensorSpec([None, *input_shape], tf.float32, name=export_formats.INPUT_NAME)]
    with xla.op_by_op():
        model.export(str(path), format="litert", input_signature=signature, verbose=False,
                     optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative,
                     target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]})
    return path


def _onnx(model: keras.Model, folder: Path, input_shape: tuple, calibration: np.ndarray, full_range: bool) \
        -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.split(calibration, range(CALIBRATION_BATCH, len(calibration), CALIBRATION_BATCH)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {export_formats.INPUT_NAME: batch}

    path = folder / export_formats.ARTIFACTS["onnx"]
    with _float_export(model, "onnx", folder, input_shape) as float_path:
        optimized = float_path.with_name("optimized.onnx")
        quant_pre_process(str(float_path), str(optimized), skip_symbolic_shape=True)
        quantize_static(str(optimized), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, reduce_range=not full_range)
    return path


def _openvino(model: keras.Model, folder: Path, input_shape: tuple, calibration: np.ndarray, full_range: bool) \
        -> Path:
    import nncf
    import openvino

    path = folder / export_formats.ARTIFACTS["openvino"]
    with _float_export(model, "openvino", folder, input_shape) as float_path:
        float_model = openvino.Core().read_model(str(float_path))
        overflow_fix = nncf.OverflowFix.DISABLE if full_range else nncf.OverflowFix.ENABLE
        quantized = nncf.quantize(float_model, nncf.Dataset(list(calibration[:, None])), subset_size=len(calibration),
                                  advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=overflow_fix))
        openvino.save_model(quantized, str(path), compress_to_fp16=False)
    return path


_WRITERS = {"litert": _litert, "onnx": _onnx, "openvino": _openvino}


def accuracy_check(float_probabilities: np.ndarray, int8_probabilities: np.ndarray, labels: np.ndarray,
                   max_accuracy_drop: float, what: str) -> dict:
    """Top-1 agreement and the accuracy change (points) of the int8 outputs against the float ones on labelled
    images; an ExportError with both accuracies when the int8 model loses more than `max_accuracy_drop` points."""
    if not np.isfinite(int8_probabilities).all():
        raise ExportError(f"{what}: the int8 export's outputs are not finite")
    float_top1, int8_top1 = float_probabilities.argmax(axis=1), int8_probabilities.argmax(axis=1)
    float_accuracy = float((float_top1 == labels).mean()) * 100
    int8_accuracy = float((int8_top1 == labels).mean()) * 100
    record = {"validation_images": len(labels), "top1_agreement": float((float_top1 == int8_top1).mean()),
              "float_accuracy": round(float_accuracy, 2), "int8_accuracy": round(int8_accuracy, 2),
              "accuracy_change": round(int8_accuracy - float_accuracy, 2), "max_accuracy_drop": max_accuracy_drop}
    if float_accuracy - int8_accuracy > max_accuracy_drop:
        raise ExportError(f"{what}: refused: int8 top-1 accuracy {int8_accuracy:.2f} % against the float model's "
                          f"{float_accuracy:.2f} % on {len(labels)} validation images, a drop of "
                          f"{float_accuracy - int8_accuracy:.2f} points (--max-accuracy-drop {max_accuracy_drop:g})")
    return record


def cpu_note(quantization, flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """Where an int8 export was verified, against this CPU, in words for a failed check: with 8-bit weights on an
    x86 CPU without VNNI or AMX, that its dot products saturate here."""
    import platform

    from inception_keras.utils.cpu import X86_64, cpu_model, int8_dot_product_flags

    verified = quantization.get("verified_on") if isinstance(quantization, dict) else None
    if not isinstance(verified, dict):
        return ""
    here, cpu = int8_dot_product_flags(flags), cpu_model()
    text = f"; it was exported and verified on {verified.get('cpu')!s:.120}"
    if str(quantization.get("weights_range", "")).startswith("8-bit") and not here \
            and (machine or platform.machine()).lower() in X86_64:
        return (f"{text}, and its 8-bit weights assume VNNI or AMX, which this CPU ({cpu}) lacks: its 8-bit dot "
                f"products saturate here; export it again without --int8-full-range (7-bit weights run alike "
                f"everywhere)")
    return text if verified.get("cpu") == cpu else f"{text}, not on this CPU ({cpu})"


def agreement_check(served: np.ndarray, expected: np.ndarray, what: str, required: float | None = None,
                    quantization: dict | None = None) -> dict:
    """`export --check` of an int8 export: top-1 agreement with the float model's stored outputs on the stored
    validation images, at least `required` (the manifest's: what the export measured, at most
    MIN_CHECK_AGREEMENT; a damaged or missing value means MIN_CHECK_AGREEMENT); else an ExportError, which says
    on which CPU the export was verified (`quantization`: the manifest's record) where that is another."""
    if not (isinstance(required, (int, float)) and 0 <= required <= MIN_CHECK_AGREEMENT):
        required = MIN_CHECK_AGREEMENT
    if served.shape != expected.shape:
        raise ExportError(f"{what} gives outputs of shape {served.shape}, the Keras model {expected.shape}: they "
                          f"are not the same network")
    if not np.isfinite(served).all():
        raise ExportError(f"{what}: the export's outputs are not finite")
    agreement = float((served.argmax(axis=1) == expected.argmax(axis=1)).mean())
    if agreement < required:
        raise ExportError(f"{what} agrees with the float model on the top-1 class of {agreement:.1%} of "
                          f"{len(expected)} stored validation images (at least {required:.0%} needed)"
                          f"{cpu_note(quantization)}")
    return {"images": len(expected), "top1_agreement": agreement, "min_agreement": required}
