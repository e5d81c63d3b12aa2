"""Latency where the model will run: measured in its deployment runtime, and predicted from the spec alone.

Measured: the inference model (no aux heads; fresh weights: latency does not depend on their values) exported as
`export --format` writes it (`formats.write_artifact`, traced op by op) and run in its runtime with every core as
the deploy benchmark runs it (ONNX Runtime, OpenVINO with the f32 hint, the LiteRT interpreter; `keras`: the
Keras model in a compiled TensorFlow function), batch `batch` of float32 images: the median and the 90th
percentile of at least MIN_CALLS calls and MIN_SECONDS seconds, after WARMUP_CALLS.

Predicted: a model fitted on measured candidates (NetAdapt and nn-Meter measure per layer or kernel on the device;
here whole networks are measured and the fit splits their time by layer kind): the latency of a network is a
non-negative combination of features the cost model gives without building anything (`features`): a fixed cost
per call, the multiply-adds of its convolutions (1x1 and larger apart) with their channels padded to the CPU's
vector width, apart for those whose channels are not whole blocks of it (ONNX Runtime's NCHWc and OpenVINO's
blocked layouts run those unblocked, with reorders around them: on an AVX2 Zen 3, googlenet_mini at 40 px with
every width x0.75 in multiples of 8 ran in 0.54 ms, x0.74 in multiples of 2, with a fifth fewer multiply-adds,
in 0.71 ms), the elements their outputs write, the count of unaligned ones, the pools' window reads, the
concatenations' copies, the classifier's multiply-adds, the input's elements and a per-layer dispatch cost. The
candidates are random width variants of the network's own structure (each module and stem width times a factor
in [0.35, 1.6], the structure otherwise the same) and, for a search, as many random points of the space it
searches (`fitting_candidates`): a linear fit extrapolates badly (fitted on the variants alone, googlenet's
predictor under-predicted every point of `googlenet_widths`, 2.5-5.7x its multiply-adds, by a median 18.5 %). A
predictor serves one structure (googlenet_mini at 32 px, googlenet at 224 px, ...) on one machine and runtime:
it is fitted once, with progress output, and cached in `~/.cache/inception_keras/latency/` (or
`$INCEPTION_KERAS_CACHE`) in a file keyed by the CPU model, runtime and its version, threads, batch, the structure
and the space whose points it was fitted on (`coverage`); any change of them, or `rebuild`, fits a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inception_keras.cost import network_cost
from inception_keras.export import ExportError
from inception_keras.scaling import scale_width
from inception_keras.spec import ConvSpec, NetworkSpec, StageSpec
from inception_keras.utils.atomic import atomic_write_text

RUNTIMES = {"onnxruntime": "onnx", "openvino": "openvino", "litert": "litert", "keras": None}
WARMUP_CALLS, WARMUP_SECONDS = 3, 0.1  # before each round: at least this many calls and seconds
MIN_CALLS, MAX_CALLS, MIN_SECONDS = 10, 5000, 0.6  # a round: at least MIN_CALLS and MIN_SECONDS, at most MAX_CALLS
ROUNDS = 5  # interleaved timing rounds; a latency is the median of their medians
CANDIDATES = 24  # random width variants measured to fit a predictor
FACTORS = (0.35, 1.6)  # their widths, as factors of the network's own
FEATURES = ("call", "input", "conv1_macs", "conv_k_macs", "unaligned_conv1_macs", "unaligned_conv_k_macs",
            "conv_outputs", "unaligned_conv_outputs", "unaligned_convs", "pool_reads", "concat_copies", "dense_macs",
            "layers")
PREDICTOR_FORMAT = 2
WIDTHS = ("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5", "pool_proj")


@dataclass(frozen=True)
class Timing:
    """What a measurement found: the median and 90th percentile of `calls` calls, in milliseconds."""

    median_ms: float
    p90_ms: float
    calls: int


def time_calls(run: Callable[[], object], min_calls: int | None = None, min_seconds: float | None = None,
               max_calls: int | None = None) -> Timing:
    """Time `run()` after at least WARMUP_CALLS calls and WARMUP_SECONDS seconds: at least `min_calls` calls and
    `min_seconds` seconds, at most `max_calls` (defaults MIN_CALLS, MIN_SECONDS, MAX_CALLS). A model of 0.5 ms is
    timed ~1,200 times a round, one of 100 ms 10 times."""
    min_calls = MIN_CALLS if min_calls is None else min_calls
    min_seconds = MIN_SECONDS if min_seconds is None else min_seconds
    max_calls = MAX_CALLS if max_calls is None else max_calls
    warmups, start = 0, time.perf_counter()
    while warmups < WARMUP_CALLS or (time.perf_counter() - start < WARMUP_SECONDS and warmups < max_calls):
        run()
        warmups += 1
    times, start = [], time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < min_seconds and len(times) < max_calls):
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    ms = np.asarray(times) * 1e3
    return Timing(float(np.median(ms)), float(np.percentile(ms, 90)), len(times))


def check_runtime(runtime: str) -> None:
    """An ExportError naming the runtimes unless `runtime` is one, and the extra to install unless it can run."""
    from inception_keras.export import formats

    if runtime not in RUNTIMES:
        raise ExportError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if RUNTIMES[runtime]:
        formats.require(RUNTIMES[runtime])


def runtime_version(runtime: str) -> str:
    """`onnxruntime 1.31.1`, `keras 3.15.1 (tensorflow 2.21.0)`."""
    from inception_keras.export import formats

    if RUNTIMES[runtime] is None:
        import keras
        import tensorflow as tf

        return f"keras {keras.__version__} (tensorflow {tf.__version__})"
    return formats.runtime_name(RUNTIMES[runtime])


def measure(model, runtime: str = "onnxruntime", batch: int = 1, **timing) -> Timing:
    """The latency of `model` (a Keras model; a spec is built with fresh weights) in `runtime` at `batch`.

    Raises:
        ExportError: the runtime is unknown or missing, or the model cannot be exported or run.
    """
    return measure_many([model], runtime, batch, rounds=1, **timing)[0]


def measure_many(models: list, runtime: str = "onnxruntime", batch: int = 1, rounds: int | None = None,
                 progress: Callable[[str], None] | None = None, **timing) -> list[Timing]:
    """The latencies of `models` (Keras models or specs), each exported and loaded first, then timed in `rounds`
    interleaved rounds (a machine's drift hits all alike): each one's median of its rounds' medians, its largest
    90th percentile and all its calls."""
    check_runtime(runtime)
    rounds = ROUNDS if rounds is None else rounds
    folder = Path(tempfile.mkdtemp(prefix="inception-keras-latency-"))
    try:
        runs = []
        for index, model in enumerate(models):
            runs.append(_runner(model, runtime, batch, folder / str(index)))
            if progress:
                progress(f"[latency] {runtime}: exported {index + 1}/{len(models)}")
        found = [[] for _ in models]
        for round_index in range(rounds):
            for run, timings in zip(runs, found):
                timings.append(time_calls(run, **timing))
            if progress:
                progress(f"[latency] {runtime}: timed round {round_index + 1}/{rounds} of {len(models)} models")
        return [Timing(float(np.median([t.median_ms for t in timings])), max(t.p90_ms for t in timings),
                       sum(t.calls for t in timings)) for timings in found]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _runner(model, runtime: str, batch: int, folder: Path) -> Callable[[], object]:
    """A function running `model`'s inference model on one fixed batch in `runtime` (exported into `folder`)."""
    import keras

    from inception_keras.builder import build_model, inference_model
    from inception_keras.export import formats, image_input_shape

    if isinstance(model, NetworkSpec):
        model = build_model(model.without_aux())
    elif "aux_1" in {layer.name for layer in model.layers}:
        model = inference_model(model)
    input_shape = image_input_shape(model, "latency")
    images = np.random.default_rng(0).uniform(-1, 1, (batch, *input_shape)).astype("float32")
    if RUNTIMES[runtime] is None:
        import tensorflow as tf

        forward = tf.function(lambda inputs: model(inputs, training=False))
        tensor = tf.constant(images)
        return lambda: keras.ops.convert_to_numpy(forward(tensor))
    folder.mkdir(parents=True)
    formats.write_artifact(model, RUNTIMES[runtime], folder, input_shape)
    run = formats.load_runner(folder, RUNTIMES[runtime])
    return lambda: run(images)


def vector_width() -> int:
    """The float32 lanes of this CPU's widest vectors: 16 with AVX-512, else 8."""
    from inception_keras.utils.cpu import cpu_flags

    return 16 if "avx512f" in cpu_flags() else 8


def features(spec: NetworkSpec, batch: int = 1, lanes: int | None = None) -> np.ndarray:
    """The predictor's features of `spec`'s inference model at `batch` (FEATURES, in that order), from the cost
    model alone."""
    lanes = lanes or vector_width()
    values = dict.fromkeys(FEATURES, 0.0)
    values["call"] = 1.0
    values["input"] = float(batch * np.prod(spec.input_shape))
    for index, layer in enumerate(network_cost(spec).layers(include_aux=False)):
        elements = batch * float(np.prod(layer.output_shape))
        if layer.type == "Conv2D":
            out = layer.output_shape[-1]
            padded = (-(-layer.in_channels // lanes) * lanes / layer.in_channels) * (-(-out // lanes) * lanes / out)
            # blocked layouts (ONNX Runtime's NCHWc, OpenVINO's) take a convolution whose channels are whole blocks;
            # another one runs unblocked, with reorders around it (the input's 3 channels excepted)
            aligned = out % lanes == 0 and (layer.in_channels % lanes == 0 or index == 0 or layer.in_channels <= 4)
            prefix = "" if aligned else "unaligned_"
            values[f"{prefix}{'conv1' if layer.kernel == 1 else 'conv_k'}_macs"] += batch * layer.macs * padded
            values[f"{prefix}conv_outputs"] += elements
            values["unaligned_convs"] += 0 if aligned else 1
            values["layers"] += 1
        elif layer.type in ("MaxPooling2D", "AveragePooling2D"):
            values["pool_reads"] += elements * layer.kernel ** 2
            values["layers"] += 1
        elif layer.type == "Concatenate":
            values["concat_copies"] += elements
            values["layers"] += 1
        elif layer.type == "Dense":
            values["dense_macs"] += batch * layer.macs
            values["layers"] += 1
        elif layer.type in ("GlobalAveragePooling2D", "LocalResponseNormalization", "InputConversion"):
            values["layers"] += 1
    return np.asarray([values[name] for name in FEATURES])


def structure_key(spec: NetworkSpec) -> str:
    """What a predictor is fitted for: the inference model's spec (no aux heads) without its name and widths (module
    widths, stem filters), hashed."""
    data = spec.without_aux().to_dict()
    data["name"] = None
    data["stem"] = [{kind: {key: value for key, value in fields.items() if key != "filters"}
                     for kind, fields in layer.items()} for layer in data["stem"]]
    data["stages"] = [{**stage, "modules": [{key: value for key, value in module.items() if key not in WIDTHS}
                                            for module in stage["modules"]]} for stage in data["stages"]]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def variant(spec: NetworkSpec, rng: random.Random, factors: tuple[float, float] = FACTORS) -> NetworkSpec:
    """`spec` with each module width and stem filter count times its own random factor in `factors` (0 stays 0)."""
    def scaled(width):
        return scale_width(width, rng.uniform(*factors))

    stem = tuple(dataclasses.replace(layer, filters=scaled(layer.filters)) if isinstance(layer, ConvSpec) else layer
                 for layer in spec.stem)
    stages = tuple(StageSpec(stage.name, tuple(dataclasses.replace(module, **{name: scaled(getattr(module, name))
                                                                              for name in WIDTHS})
                                               for module in stage.modules), stage.pool) for stage in spec.stages)
    return spec.replace(name=f"{spec.name[:90]}_variant", stem=stem, stages=stages)


@dataclass
class Predictor:
    """A fitted latency model: milliseconds = coefficients . features(spec), for one structure, machine and runtime."""

    key: dict
    coefficients: list[float]
    fit_error: dict

    def predict(self, spec: NetworkSpec) -> float:
        if structure_key(spec) != self.key["structure"]:
            raise ExportError(f"the latency predictor was fitted for another network structure than {spec.name}'s "
                              f"(the widths may differ; the layers, sizes and kinds may not)")
        return float(np.dot(self.coefficients, features(spec, self.key["batch"], self.key["lanes"])))

    def to_dict(self) -> dict:
        return {"format": PREDICTOR_FORMAT, "key": self.key, "features": list(FEATURES),
                "coefficients": self.coefficients, "fit_error": self.fit_error}


def fit(specs: list[NetworkSpec], measured_ms: list[float], batch: int, lanes: int) -> np.ndarray:
    """Non-negative coefficients of FEATURES that fit `measured_ms`, each sample weighted by 1/latency (so the fit
    minimises relative errors)."""
    from scipy.optimize import nnls

    matrix = np.stack([features(spec, batch, lanes) for spec in specs])
    target = np.asarray(measured_ms)
    scale = matrix.max(axis=0)
    scale[scale == 0] = 1.0
    weights = 1.0 / target
    solution, _ = nnls(matrix / scale * weights[:, None], target * weights)
    return solution / scale


def predictor_key(spec: NetworkSpec, runtime: str, batch: int, coverage: str | None = None) -> dict:
    from inception_keras.utils.cpu import cpu_model

    return {"cpu": cpu_model(), "runtime": runtime_version(runtime), "threads": os.cpu_count(), "batch": batch,
            "lanes": vector_width(), "structure": structure_key(spec), "coverage": coverage,
            "format": PREDICTOR_FORMAT}


def cache_dir() -> Path:
    root = os.environ.get("INCEPTION_KERAS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "inception_keras")
    return Path(root) / "latency"


def cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / f"{key['structure']}-{digest}.json"


def load_cached(key: dict) -> Predictor | None:
    """The cached predictor of `key`; None where there is none or it is damaged or of another key."""
    from inception_keras.serialize import load_document
    from inception_keras.spec import SpecError

    path = cache_path(key)
    if not path.is_file():
        return None
    try:
        data = load_document(path, "latency predictor")
        if not isinstance(data, dict) or data.get("key") != key or data.get("features") != list(FEATURES):
            return None
        coefficients = [float(value) for value in data["coefficients"]]
        if len(coefficients) != len(FEATURES) or not all(np.isfinite(coefficients)):
            return None
        return Predictor(key, coefficients, dict(data.get("fit_error") or {}))
    except (SpecError, KeyError, TypeError, ValueError):
        return None


def fitting_candidates(spec: NetworkSpec, count: int | None = None, seed: int = 0,
                       draw: Callable[[random.Random], NetworkSpec] | None = None) -> list[NetworkSpec]:
    """What a predictor of `spec`'s structure is fitted on: `spec` itself, then `count - 1` (default CANDIDATES)
    random width variants (`variant`), every second one drawn by `draw` instead where given (a search space's
    random point: a predictor extrapolates badly beyond its candidates, so the points it will predict should be
    among the kinds it was fitted on)."""
    spec = spec.without_aux()
    rng = random.Random(seed)
    return [spec] + [draw(rng).without_aux() if draw is not None and index % 2 else variant(spec, rng)
                     for index in range((count or CANDIDATES) - 1)]


def fitted(key: dict, specs: list[NetworkSpec], measured_ms: list[float]) -> Predictor:
    """The predictor of `key` fitted on `specs` measured at `measured_ms`, with its errors on them."""
    coefficients = fit(specs, measured_ms, key["batch"], key["lanes"])
    predicted = np.stack([features(s, key["batch"], key["lanes"]) for s in specs]) @ coefficients
    errors = np.abs(predicted / np.asarray(measured_ms) - 1)
    return Predictor(key, [float(c) for c in coefficients],
                     {"candidates": len(specs), "median": float(np.median(errors)), "max": float(errors.max()),
                      "within_10_percent": float((errors <= 0.10).mean())})


def build_predictor(spec: NetworkSpec, runtime: str = "onnxruntime", batch: int = 1, rebuild: bool = False,
                    candidates: int | None = None, seed: int = 0, progress: Callable[[str], None] | None = print,
                    draw: Callable[[random.Random], NetworkSpec] | None = None, coverage: str | None = None,
                    **timing) -> Predictor:
    """The latency predictor of `spec`'s structure on this machine and `runtime`: the cached one, or one fitted on
    `fitting_candidates` (`candidates` of them, half drawn by `draw` where given) measured now, then cached.
    `coverage` names what `draw` draws (a search space's `widths_digest`); it keys the cache beside the machine,
    runtime and structure, so a predictor fitted on one space's points is not used for another's.

    Raises:
        ExportError: the runtime is unknown or missing, or a candidate cannot be exported or run.
    """
    if draw is not None and not coverage:
        raise ValueError("a predictor fitted on drawn points needs `coverage`, the name of what they are drawn from")
    check_runtime(runtime)
    spec = spec.without_aux()
    key = predictor_key(spec, runtime, batch, coverage if draw is not None else None)
    cached = None if rebuild else load_cached(key)
    if cached is not None:
        return cached
    specs = fitting_candidates(spec, candidates, seed, draw)
    if progress:
        progress(f"[latency] fitting a latency predictor for {spec.name}'s structure in {runtime} on this machine: "
                 f"{len(specs)} width variants{' and points of the space' if draw else ''} exported, then timed in "
                 f"{ROUNDS} interleaved rounds (once; cached in {cache_dir()})")
    measured = [t.median_ms for t in measure_many(specs, runtime, batch, progress=progress, **timing)]
    predictor = fitted(key, specs, measured)
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_path(key), json.dumps(predictor.to_dict(), indent=1))
    except OSError as error:
        if progress:
            progress(f"[latency] note: cannot cache the predictor in {cache_dir()}: {error.strerror or error}")
    return predictor


def relative_errors(predicted: list[float], measured: list[float]) -> dict:
    """The distribution of predicted / measured - 1: median and 90th percentile of its size, the share within
    +-10 %."""
    errors = np.asarray(predicted) / np.asarray(measured) - 1
    return {"count": len(errors), "median_abs": float(np.median(np.abs(errors))),
            "p90_abs": float(np.percentile(np.abs(errors), 90)), "max_abs": float(np.abs(errors).max()),
            "within_10_percent": float((np.abs(errors) <= 0.10).mean()), "mean": float(statistics.fmean(errors))}
