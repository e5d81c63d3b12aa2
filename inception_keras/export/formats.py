"""What is particular to each deployment format beside the SavedModel: ONNX, LiteRT (TFLite) and OpenVINO IR.

Each artifact is written by Keras' own exporter (`model.export(path, format=...)`: tf2onnx, the TFLite converter,
OpenVINO's `convert_model`) from the float32 inference model traced op by op (`xla.op_by_op`: LRN as the banded
matrix product, no XLA cluster that a converter would keep as an opaque call), and is run in its own runtime:
onnxruntime, the LiteRT interpreter, OpenVINO's CPU plugin with the f32 precision hint (by default it computes
in bf16 on CPUs with AVX512-BF16 or AMX). The layout, the reference batch, the manifest and the comparison with
Keras are shared with the SavedModel (`inception_keras.export`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import os
from pathlib import Path

import keras
import numpy as np

from inception_keras.export import ExportError
from inception_keras.layers import xla
from inception_keras.utils.errors import error_text

FORMATS = ("onnx", "litert", "openvino")
ARTIFACTS = {"onnx": "model.onnx", "litert": "model.tflite", "openvino": "model.xml"}
INPUT_NAME = "images"
RUN_BATCH = 32  # images a runtime is given at once
# (module, distribution) each format needs to be written and run; the last is the runtime that checks it
NEEDS = {"onnx": (("tf2onnx", "tf2onnx"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")),
         "litert": (("ai_edge_litert", "ai-edge-litert"),),
         "openvino": (("openvino", "openvino"),)}


def artifact_problem(path: Path, fmt: str) -> str | None:
    """What makes `path` not an artifact of `fmt`, from its first bytes (an ONNX ModelProto begins with its IR
    version, field 1; a TFLite flatbuffer has the identifier TFL3 at byte 4; an OpenVINO IR is XML with a <net>
    element and a model.bin beside it); None where it looks like one."""
    if path.is_symlink() or not path.is_file():
        return f"{path} is missing or not a regular file"
    with path.open("rb") as handle:
        head = handle.read(1024)
    looks = {"onnx": head[:1] == b"\x08", "litert": head[4:8] == b"TFL3",
             "openvino": head.lstrip().startswith(b"<?xml") and b"<net" in head}[fmt]
    if not looks:
        return f"{path} is not {'an' if fmt == 'onnx' else 'a'} {fmt} model (its first bytes say otherwise)"
    if fmt == "openvino" and not path.with_suffix(".bin").is_file():
        return f"{path.with_suffix('.bin')} (the IR's weights) is missing"
    return None


def require(fmt: str, runtime_only: bool = False) -> None:
    """An ExportError naming the extra to install unless the packages `fmt` needs (or only its runtime) import."""
    needed = NEEDS[fmt][-1:] if runtime_only else NEEDS[fmt]
    missing = [dist for module, dist in needed if importlib.util.find_spec(module) is None]
    if missing:
        raise ExportError(f"--format {fmt} needs {', '.join(missing)} (not installed): "
                          f"pip install inception-keras[{fmt}]")


def runtime_name(fmt: str) -> str:
    """The runtime that checks `fmt`, with its version: e.g. 'onnxruntime 1.31.1'."""
    dist = NEEDS[fmt][-1][1]
    return f"{dist} {importlib.metadata.version(dist)}"


def write_artifact(model: keras.Model, fmt: str, folder: Path, input_shape: tuple) -> Path:
    """`model` written as `folder/ARTIFACTS[fmt]` (OpenVINO: and `model.bin`) by Keras' exporter, traced op by op.

    Raises:
        ExportError: the converter fails (its message, shortened).
    """
    import tensorflow as tf

    require(fmt)
    path = folder / ARTIFACTS[fmt]
    signature = [tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)]
    try:
        with xla.op_by_op(), contextlib.redirect_stdout(io.StringIO()):  # tf2onnx prints its progress
            model.export(str(path), format=fmt, input_signature=signature, verbose=False)
    except OSError:
        raise
    except Exception as error:  # the converters raise many types (ValueError, ConverterError, RuntimeError)
        raise ExportError(f"cannot convert {model.name} to {fmt}: {error_text(error, 200)}") from None
    return path


def run_artifact(folder: Path, fmt: str, inputs: np.ndarray, batch_size: int = RUN_BATCH) -> np.ndarray:
    """The probabilities the artifact in `folder` computes on float32 `inputs` in its own runtime, loaded once and
    run `batch_size` images at a time.

    Raises:
        ExportError: the runtime is not installed, or cannot load or run the artifact.
    """
    require(fmt, runtime_only=True)
    path = folder / ARTIFACTS[fmt]
    try:
        run = load_runner(folder, fmt)
        return np.concatenate([np.asarray(run(np.ascontiguousarray(inputs[i:i + batch_size], dtype=np.float32)))
                               for i in range(0, len(inputs), batch_size)])
    except Exception as error:  # runtimes raise their own types (onnxruntime's Fail, RuntimeError, ValueError)
        raise ExportError(f"{path}: {NEEDS[fmt][-1][1]} cannot run the export ({error_text(error, 200)}): "
                          f"export the model again") from None


def load_runner(folder: Path, fmt: str):
    """A function running float32 NHWC batches through the artifact in `folder` in its runtime, with every core
    (onnxruntime's and OpenVINO's default; the LiteRT interpreter's `num_threads`), loaded once."""
    return _RUNNERS[fmt](folder / ARTIFACTS[fmt])


def _onnx_runner(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda inputs: session.run(None, {name: inputs})[0]


def _litert_runner(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
    (entry,) = interpreter.get_input_details()
    output = interpreter.get_output_details()[0]["index"]
    allocated = []  # the input shape the interpreter's tensors are allocated for

    def run(inputs):
        if allocated != [inputs.shape]:
            interpreter.resize_tensor_input(entry["index"], inputs.shape)
            interpreter.allocate_tensors()
            allocated[:] = [inputs.shape]
        interpreter.set_tensor(entry["index"], inputs)
        interpreter.invoke()
        return interpreter.get_tensor(output).copy()

    return run


def _openvino_runner(path: Path):
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda inputs: compiled(inputs)[compiled.outputs[0]]


_RUNNERS = {"onnx": _onnx_runner, "litert": _litert_runner, "openvino": _openvino_runner}
