"""Latency (`inception_keras.export.latency`, `inception-keras latency`): measured in the runtime, predicted from the
cost model's features by a predictor cached per machine, runtime and structure. Accuracy against measurement is a
benchmark's (`make bench-latency`), not a timed test's: here the fit, the cache and the command's behaviour."""

import json
import random

import numpy as np
import pytest

from inception_keras import get_spec, network_cost, scale_widths
from inception_keras.cli import main
from inception_keras.export import ExportError
from inception_keras.export import latency
from inception_keras.spec import NetworkSpec

TINY = NetworkSpec.from_dict({
    "name": "tiny_latency", "input_shape": [16, 16, 3], "normalization": "batch_norm",
    "stem": [{"conv": {"filters": 8, "kernel": 3}}, {"max_pool": {"size": 3, "stride": 2}}],
    "stages": [{"name": "3", "modules": [[4, 4, 4, 2, 2, 2]]}], "head": {"dropout": 0.0, "classes": 3}})


def test_features_are_the_cost_models_layer_sums():
    spec = get_spec("googlenet_mini").without_aux()
    layers = network_cost(spec).layers(include_aux=False)
    values = dict(zip(latency.FEATURES, latency.features(spec, batch=2, lanes=1)))
    convs = [layer for layer in layers if layer.type == "Conv2D"]
    names = ("conv1_macs", "conv_k_macs", "unaligned_conv1_macs", "unaligned_conv_k_macs")
    assert sum(values[name] for name in names) == 2 * sum(layer.macs for layer in convs)  # 1 lane: all aligned
    assert values["conv_k_macs"] == 2 * sum(layer.macs for layer in convs if layer.kernel > 1) > 0
    assert values["unaligned_convs"] == 0 and values["layers"] > len(convs)
    assert values["dense_macs"] == 2 * network_cost(spec).layers()[-1].macs and values["call"] == 1
    assert values["input"] == 2 * 32 * 32 * 3
    blocked = dict(zip(latency.FEATURES, latency.features(spec, batch=2, lanes=16)))
    unaligned = [layer for layer in convs[1:] if layer.output_shape[-1] % 16 or layer.in_channels % 16]
    assert blocked["unaligned_convs"] == len(unaligned) > 0  # e.g. 24 and 40 channels on 16 lanes
    assert blocked["unaligned_conv_outputs"] == 2 * sum(float(np.prod(layer.output_shape)) for layer in unaligned)
    assert sum(blocked[name] for name in names) > sum(values[name] for name in names)  # padded to whole blocks


def test_the_structure_key_ignores_widths_only():
    spec = get_spec("googlenet_mini")
    assert latency.structure_key(spec) == latency.structure_key(scale_widths(spec, 0.5))
    assert latency.structure_key(spec) == latency.structure_key(latency.variant(spec, random.Random(1)))
    assert latency.structure_key(spec) != latency.structure_key(spec.with_input_size(40))
    assert latency.structure_key(spec) == latency.structure_key(spec.without_aux())  # the inference model's
    assert latency.structure_key(spec) != latency.structure_key(spec.with_classes(3))


def test_the_fit_recovers_a_latency_that_is_a_sum_of_its_features():
    spec = get_spec("googlenet_mini").without_aux()
    rng = random.Random(0)
    specs = [latency.variant(spec, rng) for _ in range(24)]
    per = {"call": 0.05, "conv1_macs": 2e-8, "conv_k_macs": 1e-8, "conv_outputs": 3e-7, "unaligned_convs": 4e-3}
    truth = np.asarray([per.get(name, 0.0) for name in latency.FEATURES])
    measured = [float(latency.features(s, 1, 8) @ truth) for s in specs]
    coefficients = latency.fit(specs, measured, 1, 8)
    held_out = latency.variant(spec, random.Random(5))
    assert latency.features(held_out, 1, 8) @ coefficients == pytest.approx(latency.features(held_out, 1, 8) @ truth,
                                                                           rel=1e-3)
    errors = latency.relative_errors([1.05, 0.8, 1.0], [1.0, 1.0, 1.0])
    assert errors["within_10_percent"] == pytest.approx(2 / 3) and errors["max_abs"] == pytest.approx(0.2)


def _fake_ms(spec, batch=1):
    """A machine whose latency is 0.1 ms a call plus 1 ms per million (padded) multiply-adds of convolutions larger
    than 1x1, whole blocks or not."""
    values = dict(zip(latency.FEATURES, latency.features(spec, batch, latency.vector_width())))
    return 0.1 + (values["conv_k_macs"] + values["unaligned_conv_k_macs"]) * 1e-6


def _fake_measure(calls):
    def measure_many(models, runtime="onnxruntime", batch=1, rounds=3, progress=None, **timing):
        calls.append(len(models))
        return [latency.Timing(_fake_ms(m, batch), 0.2, 50) for m in models]

    return measure_many


def test_a_predictor_is_cached_by_machine_runtime_and_structure_and_rebuilt_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("INCEPTION_KERAS_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(latency, "measure_many", _fake_measure(calls))
    printed = []
    predictor = latency.build_predictor(TINY, candidates=6, progress=printed.append)
    assert calls == [6] and "fitting a latency predictor for tiny_latency's structure" in printed[0]
    path = latency.cache_path(predictor.key)
    assert path.parent == tmp_path / "latency" and path.is_file()
    stored = json.loads(path.read_text())
    assert stored["key"]["cpu"] and stored["key"]["runtime"].startswith("onnxruntime ") and \
        stored["key"]["structure"] == latency.structure_key(TINY)
    again = latency.build_predictor(TINY, candidates=6)
    assert calls == [6] and again.coefficients == predictor.coefficients  # read from the cache
    wider = scale_widths(TINY, 1.5)
    assert again.predict(wider) == pytest.approx(_fake_ms(wider), rel=1e-3)
    latency.build_predictor(TINY, candidates=6, rebuild=True)
    latency.build_predictor(TINY, batch=2, candidates=6)
    latency.build_predictor(TINY.with_input_size(24), candidates=6)
    assert calls == [6, 6, 6, 6]  # --rebuild, another batch, another structure: measured again
    monkeypatch.setattr(latency, "runtime_version", lambda runtime: "onnxruntime 99.0")
    latency.build_predictor(TINY, candidates=6)
    assert calls == [6] * 5  # another runtime version
    path.write_text("{damaged")
    monkeypatch.undo()
    monkeypatch.setenv("INCEPTION_KERAS_CACHE", str(tmp_path))
    monkeypatch.setattr(latency, "measure_many", _fake_measure(calls))
    latency.build_predictor(TINY, candidates=6)
    assert calls == [6] * 6  # a damaged cache file is fitted again
    with pytest.raises(ExportError, match="fitted for another network structure"):
        predictor.predict(TINY.with_input_size(24))


def test_a_predictor_for_a_space_is_fitted_on_its_points_too_and_cached_apart(tmp_path, monkeypatch):
    """`search` fits its predictor on width variants and points of the space it searches (a predictor extrapolates
    badly beyond what it was fitted on), keyed by the space's widths."""
    monkeypatch.setenv("INCEPTION_KERAS_CACHE", str(tmp_path))
    calls, measured = [], []
    fake = _fake_measure(calls)
    monkeypatch.setattr(latency, "measure_many", lambda specs, *args, **kwargs: measured.append(specs) or
                        fake(specs, *args, **kwargs))
    far = TINY.with_module_widths({"3a": {"ch1x1": 40, "ch3x3": 36}})  # beyond any variant's factors

    def draw(rng):
        return far.replace(name=f"drawn_{rng.random()}")

    assert latency.fitting_candidates(TINY, 6, draw=draw)[0] == TINY.without_aux()
    assert [spec.name.startswith("drawn_") for spec in latency.fitting_candidates(TINY, 6, draw=draw)] == \
        [False, False, True, False, True, False]  # the base, then variants and drawn points in turn
    plain = latency.build_predictor(TINY, candidates=6)
    spaced = latency.build_predictor(TINY, candidates=6, draw=draw, coverage="space-a")
    assert calls == [6, 6] and spaced.key["coverage"] == "space-a" and plain.key["coverage"] is None
    assert latency.cache_path(plain.key) != latency.cache_path(spaced.key)
    assert sum(spec.name.startswith("drawn_") for spec in measured[1]) == 2
    latency.build_predictor(TINY, candidates=6, draw=draw, coverage="space-a")
    latency.build_predictor(TINY, candidates=6, draw=draw, coverage="space-b")
    assert calls == [6, 6, 6]  # the same space's read from the cache; another space's fitted
    with pytest.raises(ValueError, match="needs `coverage`"):
        latency.build_predictor(TINY, candidates=6, draw=draw)


def test_a_measurement_runs_the_export_in_its_runtime():
    for runtime in ("onnxruntime", "keras"):
        timing = latency.measure(TINY, runtime, min_calls=20, min_seconds=0.0)
        assert 0 < timing.median_ms <= timing.p90_ms and timing.calls == 20
    with pytest.raises(ExportError, match="--runtime must be one of onnxruntime, openvino, litert, keras"):
        latency.measure(TINY, "tensorrt")


def test_the_command_measures_predicts_and_refuses_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    from inception_keras.serialize import save_spec

    monkeypatch.setenv("INCEPTION_KERAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(latency, "CANDIDATES", 4)
    monkeypatch.setattr(latency, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(latency, "ROUNDS", 1)
    monkeypatch.setattr(latency, "MIN_CALLS", 10)
    save_spec(TINY, tmp_path / "tiny.yaml")
    assert main(["latency", str(tmp_path / "tiny.yaml"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["spec"] == "tiny_latency" and record["batch"] == 1 and record["measured_median_ms"] > 0
    assert record["predicted_ms"] > 0 and record["predictor_fit"]["candidates"] == 4
    assert record["predictor"].startswith(str(tmp_path / "cache" / "latency"))
    for argv, message in ((["--runtime", "tensorrt"], "argument --runtime: invalid choice"),
                          (["--batch", "0"], "--batch: must be from 1 to 1,024"),
                          (["--runtime", "keras", "--batch", "x"], "--batch: must be an integer")):
        assert main(["latency", str(tmp_path / "tiny.yaml"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["latency", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
