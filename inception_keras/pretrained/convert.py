"""Detect a weights file's source, choose the matching spec, and load its weights into a Keras model.

Every layer's tensors are found, transformed and shape-checked before the first one is
assigned: a file for another network, a truncated file or a missing tensor is an error
naming the tensor, never a half-loaded model.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inception_keras.pretrained import WeightsError
from inception_keras.pretrained.sources import SOURCES, Source
from inception_keras.spec import NetworkSpec
from inception_keras.utils.files import mode_problem

TF_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")  # last 8 bytes of a TF checkpoint table (V1 file, V2 .index)
CLASSIFIERS = ("predictions", "aux_1", "aux_2")
IGNORED = ("num_batches_tracked", "global_step", "ExponentialMovingAverage", "Momentum", "RMSProp")
SOURCE_NAMES = {"torchvision": "a torchvision .pth", "slim": "a TF-slim checkpoint", "caffe": "a BVLC .caffemodel",
                "keras": "a .keras model"}


@dataclass
class SourceWeights:
    """The tensors of one file, by the file's own names, and which source wrote it."""

    path: str
    source: str
    tensors: dict[str, np.ndarray]


@dataclass
class LoadReport:
    """What `load_weights` did."""

    source: str
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"loaded {len(self.loaded)} layers from {SOURCE_NAMES[self.source]}"
        if self.fresh:
            text += f"; newly initialised: {', '.join(self.fresh)}"
        if self.unused:
            text += f"; {len(self.unused)} tensors of the file unused"
        return text


def detect_source(path: str | Path) -> str:
    """`torchvision`, `slim`, `caffe` or `keras`, from the file's first and last bytes (and name)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() or name.endswith(".index") or Path(f"{path}.index").exists() or ".data-" in name:
        return "slim"
    try:
        problem = mode_problem(path.stat().st_mode)
    except OSError as error:
        raise WeightsError(f"{path}: {'no such file' if not path.exists() else error.strerror}") from None
    if problem:
        raise WeightsError(f"{path}: {problem}")
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(max(path.stat().st_size - 8, 0))
        tail = handle.read(8)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.namelist()
        except zipfile.BadZipFile:
            raise WeightsError(f"{path}: a damaged zip file (neither a torch .pth nor a .keras model can be read)") \
                from None
        if "config.json" in members:
            return "keras"
        if any(member.endswith("data.pkl") for member in members):
            return "torchvision"
        raise WeightsError(f"{path}: a zip file that is neither a torch .pth (no data.pkl) nor a .keras model")
    if head[:1] == b"\x80" or name.endswith((".pth", ".pt")):
        return "torchvision"
    if tail == TF_TABLE_MAGIC or name.endswith(".ckpt"):
        return "slim"
    if name.endswith(".caffemodel") or head[:1] in (b"\x0a", b"\x12") or head[:2] == b"\xa2\x06":
        return "caffe"
    raise WeightsError(f"{path}: cannot tell what this file is; expected a torchvision .pth, a TF-slim checkpoint "
                       f"(.ckpt), a BVLC .caffemodel or a .keras model")


def read_source(path: str | Path) -> SourceWeights:
    """Read any supported weights file into named numpy arrays."""
    source = detect_source(path)
    if source == "keras":
        model = load_keras_model(path)
        tensors = {f"{layer.name}.weights[{i}]": np.asarray(w) for layer in model.layers
                   for i, w in enumerate(layer.get_weights())}
    else:
        tensors = SOURCES[source].read(path)
    return SourceWeights(str(path), source, tensors)


def load_keras_model(path: str | Path):
    """A `.keras` file, loaded with `safe_mode=True` once it is within the bounds of
    `inception_keras.utils.keras_archive` (checked before Keras reads it), its batch norms computed with our fused
    kernel (importing Keras registers our layers: see `inception_keras`)."""
    from inception_keras.utils.keras_archive import KerasFileError, check_keras_file

    try:
        check_keras_file(path)
    except KerasFileError as error:
        raise WeightsError(str(error)) from None
    import keras

    from inception_keras.layers.batch_norm import use_fused_kernel

    try:
        with warnings.catch_warnings():  # a mixed_float16 model's loss-scaling state is not needed to use it
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return use_fused_kernel(keras.saving.load_model(path, safe_mode=True))
    except Exception as error:  # Keras raises many types for damaged or foreign files
        text = " ".join(str(error).split())
        if "safe_mode=False" in text:  # Keras' advice is for its own API; our loaders never turn safe mode off
            raise WeightsError(f"{path}: refused: the model holds a layer that would run Python code stored in the "
                               f"file ({text.split('. ')[0].removeprefix('Requested the deserialization of ')}); "
                               f"inception_keras loads .keras files in Keras' safe mode only") from None
        raise WeightsError(f"{path}: cannot load this .keras model: {text[:300]}") from None


def source_spec(weights: SourceWeights) -> NetworkSpec:
    """The registered spec that matches a torchvision, TF-slim or Caffe file: classes and aux heads as the file has."""
    from inception_keras.presets import get_spec

    if weights.source == "keras":
        raise WeightsError(f"{weights.path}: a .keras model carries its own network; load it with keras.saving")
    source = SOURCES[weights.source]
    spec = get_spec(source.spec_name)
    classes = source.classes(weights.tensors)
    if classes != spec.head.classes:
        spec = spec.with_classes(classes)
    if not source.has_aux(weights.tensors):
        spec = spec.without_aux()
    if weights.source == "caffe":
        spec = spec.replace(input_conversion="caffe")
    return spec


def _layer_tensors(model, layer, source: Source) -> list[tuple[str, object]]:
    kind = type(layer).__name__
    if kind == "Conv2D":
        return source.conv(layer.name.removesuffix("_conv"))
    if kind == "BatchNormalization":
        return source.batch_norm(layer.name.removesuffix("_bn"), layer.scale)
    if kind == "Dense":
        flatten = None
        if layer.name.endswith("_fc"):
            flatten = tuple(model.get_layer(layer.name.removesuffix("_fc") + "_flatten").input.shape[1:])
        return source.dense(layer.name, flatten)
    raise WeightsError(f"layer {layer.name} ({kind}) has weights but no known counterpart in a GoogLeNet file")


def _is_head(name: str) -> bool:
    return name in CLASSIFIERS or name.startswith("aux_")


def load_weights(model, weights: SourceWeights | str | Path, fresh_heads: bool = False) -> LoadReport:
    """Fill every weighted layer of `model` from a file, checking all shapes before assigning any.

    Args:
        model: a model built by `inception_keras.build_model` (layer names are the contract).
        weights: a file path, or what `read_source` returned.
        fresh_heads: fine-tuning: a classifier whose class count differs from the file's, and aux heads
            the file lacks, keep their fresh initial values (listed in the report) instead of being errors.

    Returns:
        A LoadReport naming the loaded, newly initialised and unused parts.
    """
    if not isinstance(weights, SourceWeights):
        weights = read_source(weights)
    report = LoadReport(weights.source)
    tensors, used = weights.tensors, set()
    arrays: dict[str, list[np.ndarray]] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        try:
            found = _found_arrays(model, layer, weights)
        except WeightsError as error:
            if fresh_heads and _is_head(layer.name):
                report.fresh.append(layer.name)
                continue
            raise WeightsError(f"{weights.path}: {error}") from None
        shapes = [tuple(array.shape) for _, array in found]
        if shapes != expected and fresh_heads and _is_head(layer.name):
            report.fresh.append(layer.name)  # another class count, or another input size for an aux head
            used.update(name for name, _ in found)
            continue
        if shapes != expected:
            detail = "; ".join(f"{name} gives {shape}" for (name, _), shape in zip(found, shapes))
            raise WeightsError(f"{weights.path}: layer {layer.name} needs weights of shapes {expected}, but {detail}; "
                               f"is this file for another network or input size?")
        arrays[layer.name] = [array for _, array in found]
        used.update(name for name, _ in found)
    for name, values in arrays.items():
        model.get_layer(name).set_weights(values)
    report.loaded = list(arrays)
    report.unused = [name for name in tensors if name not in used and not any(word in name for word in IGNORED)]
    return report


def _found_arrays(model, layer, weights: SourceWeights) -> list[tuple[str, np.ndarray]]:
    if weights.source == "keras":
        names = [f"{layer.name}.weights[{i}]" for i in range(len(layer.weights))]
        missing = [name for name in names if name not in weights.tensors]
        if missing:
            raise WeightsError(f"no layer {layer.name!r} with {len(names)} weights in the .keras model")
        return [(name, weights.tensors[name]) for name in names]
    source = SOURCES[weights.source]
    found = []
    for name, transform in _layer_tensors(model, layer, source):
        if name not in weights.tensors:
            raise WeightsError(f"no tensor {name!r} (for layer {layer.name}); is this {SOURCE_NAMES[weights.source]} "
                               f"of GoogLeNet?")
        found.append((name, np.asarray(transform(weights.tensors[name]), dtype=np.float32)))
    return found
