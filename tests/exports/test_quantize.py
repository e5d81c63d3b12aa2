"""int8 exports (`export --int8`): quantized in each runtime's own tool, checked against the float model on the
validation images, refused when accuracy drops more than allowed."""

import json
from pathlib import Path

import numpy as np
import pytest

from inception_keras.export import formats as export_formats, quantize
from inception_keras.cli import main
from inception_keras.export import ExportError, export_model, load_run
from inception_keras.utils.cpu import cpu_model


def int8_weights(folder, fmt: str) -> list[np.ndarray]:
    """The int8 weight tensors the artifact in `folder` holds (each runtime's own reader)."""
    path = folder / export_formats.ARTIFACTS[fmt]
    if fmt == "onnx":
        import onnx
        from onnx import numpy_helper

        return [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
                if t.data_type == onnx.TensorProto.INT8]
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(str(path))  # constant tensors hold data before allocation; activations do not
        found = []
        for detail in interpreter.get_tensor_details():
            if detail["dtype"] == np.int8 and len(detail["shape"]) == 4:
                try:
                    found.append(interpreter.get_tensor(detail["index"]))
                except ValueError:
                    continue
        return found
    import openvino

    return [op.get_data() for op in openvino.Core().read_model(str(path)).get_ops()
            if op.get_type_name() == "Constant" and op.get_element_type() == openvino.Type.i8]


@pytest.mark.parametrize("fmt", export_formats.FORMATS)
def test_an_int8_export_of_a_trained_model_agrees_with_float32_and_checks_from_the_cli(fmt, digits_run, digits_dir,
                                                                                      tmp_path, capsys):
    args = ["export", str(digits_run), "--format", fmt, "--int8", "--data-dir",
            digits_dir, "--base-dir", str(tmp_path)]
    assert main(args) == 0
    assert f"(version 1, {fmt} int8): " in capsys.readouterr().out
    exported = tmp_path / "googlenet_mini" / "1"
    manifest = json.loads((exported / "manifest.json").read_text())
    calibration_images = quantize.DEFAULT_CALIBRATION_STEPS * quantize.CALIBRATION_BATCH
    assert manifest["quantization"]["calibration_images"] == calibration_images
    accuracy, stored = manifest["checks"]
    assert accuracy["validation_images"] == 360  # the embedded digits' whole validation split
    assert accuracy["top1_agreement"] >= 0.98 and accuracy["accuracy_change"] >= -1.0
    assert stored["images"] == quantize.CHECK_IMAGES and stored["top1_agreement"] >= quantize.MIN_CHECK_AGREEMENT
    weights = int8_weights(exported, fmt)
    assert len(weights) >= 10  # googlenet_mini's convolutions hold int8 weights, not float32
    widest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    # 7 bits where 8-bit dot products saturate on x86 without VNNI (ONNX Runtime, OpenVINO); LiteRT widens first
    assert widest > 64 if fmt == "litert" else widest <= 64, widest
    quantization = manifest["quantization"]
    assert quantization["weights_range"] == ("8-bit [-128, 127]" if fmt == "litert" else "7-bit [-64, 63]")
    assert quantization["assumes"].startswith("any CPU") and quantization["verified_on"]["cpu"] == cpu_model()
    model, _, _ = load_run(digits_run)
    float_bytes = sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    assert (exported / export_formats.ARTIFACTS[fmt]).stat().st_size < 0.7 * float_bytes

    assert main(["export", "--check", str(exported)]) == 0
    assert "int8 top-1 agreement with float32" in capsys.readouterr().out

    with np.load(exported / "check.npz") as stored:  # the stored float outputs shifted by one image: wrong
        images, probabilities = stored["images"], stored["probabilities"]
    np.savez(exported / "check.npz", images=images, probabilities=np.roll(probabilities, 1, axis=0),
             tolerance=np.float64(1e-5))
    assert main(["export", "--check", str(exported)]) == 2
    assert "agrees with the float model on the top-1 class of" in capsys.readouterr().err


def test_an_int8_export_that_loses_accuracy_is_refused_and_nothing_is_written(digits_run, digits_dir, tmp_path,
                                                                              monkeypatch):
    from inception_keras.data import load_data

    model, spec, names = load_run(digits_run)
    run = export_formats.run_artifact
    monkeypatch.setattr(export_formats, "run_artifact",  # the runtime's answers shifted by one image: wrong
                        lambda folder, fmt, inputs: np.roll(run(folder, fmt, inputs), 1, axis=0))
    options = quantize.Int8Options(load_data("sklearn_digits", digits_dir), calibration_steps=2)
    with pytest.raises(ExportError, match=r"refused: int8 top-1 accuracy \d+\.\d\d % against the float model's "
                                          r"\d+\.\d\d % on 360 validation images, a drop of"):
        export_model(model, spec, names, tmp_path, format="onnx", int8=options)
    assert list((tmp_path / "googlenet_mini").iterdir()) == []


def test_the_accuracy_check_counts_agreement_and_the_drop_in_points():
    labels = np.arange(10) % 2
    float_probabilities = np.eye(2)[labels]  # all 10 right
    int8_probabilities = float_probabilities.copy()
    int8_probabilities[:1] = int8_probabilities[:1, ::-1]  # one wrong: 90 %
    record = quantize.accuracy_check(float_probabilities, int8_probabilities, labels, 10.0, "m")
    assert record["top1_agreement"] == 0.9 and record["accuracy_change"] == -10.0
    with pytest.raises(ExportError, match="int8 top-1 accuracy 90.00 % against the float model's 100.00 % on 10 "
                                          "validation images, a drop of 10.00 points"):
        quantize.accuracy_check(float_probabilities, int8_probabilities, labels, 9.99, "m")


@pytest.mark.parametrize("args, message", [
    (["--format", "saved_model", "--int8"], "--int8 is for onnx, litert, openvino, not saved_model"),
    (["--format", "onnx", "--calibration-steps", "3"], "--calibration-steps, --max-accuracy-drop and "
                                                        "--int8-full-range go with --int8"),
    (["--format", "onnx", "--int8-full-range"], "--int8-full-range go with --int8"),
    (["--format", "onnx", "--int8", "--calibration-steps", "10001"], "--calibration-steps: must be from 1 to 10,000"),
    (["--format", "onnx", "--int8", "--max-accuracy-drop", "-1"], "must be a finite number >= 0"),
])
def test_int8_arguments_are_checked_with_one_line(args, message, digits_run, tmp_path, capsys):
    assert exit_code(["export", str(digits_run), *args, "--base-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not (tmp_path / "googlenet_mini").exists()


def test_a_keras_file_needs_a_dataset_to_calibrate_on(digits_run, tmp_path, capsys):
    assert exit_code(["export", str(digits_run / "best.keras"), "--format", "onnx", "--int8"]) == 2
    assert capsys.readouterr().err.startswith("error: --int8 calibrates on training images and checks on "
                                              "validation ones: give --dataset")


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_info:  # argparse's own errors
        return exit_info.code


def test_onnx_runtimes_int8_kernels_compute_the_7_bit_export_exactly_on_this_cpu(digits_run, digits_dir, tmp_path):
    """The saturation of 8-bit dot products on x86 without VNNI, shown by ONNX Runtime's own kernels: the QDQ graph
    run op by op (no graph optimization: DequantizeLinear, a float convolution, QuantizeLinear) is the exact
    integer model, which its fused int8 kernels must match; with 7-bit weights they do, on every CPU."""
    import onnxruntime

    from inception_keras.data import load_data

    model, spec, names = load_run(digits_run)
    options = quantize.Int8Options(load_data("sklearn_digits", digits_dir), calibration_steps=4)
    exported = Path(export_model(model, spec, names, tmp_path, format="onnx", int8=options).path)
    images, _ = quantize.validation_inputs(options, spec.input_shape, spec.head.classes)
    exact_options = onnxruntime.SessionOptions()
    exact_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    exact = onnxruntime.InferenceSession(str(exported / "model.onnx"), exact_options,
                                         providers=["CPUExecutionProvider"])
    fused = export_formats.run_artifact(exported, "onnx", images)
    reference = np.concatenate([exact.run(None, {"images": images[i:i + 64]})[0] for i in range(0, len(images), 64)])
    assert (fused.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.99


def test_a_failed_check_names_the_cpu_the_export_was_verified_on():
    vnni = {"weights_range": "8-bit [-128, 127]", "verified_on": {"cpu": "Xeon (AVX512-VNNI)",
                                                                  "int8_dot_product": ["avx512_vnni"]}}
    assert "its 8-bit weights assume VNNI or AMX, which this CPU" in quantize.cpu_note(vnni, frozenset(), "x86_64")
    assert "without --int8-full-range" in quantize.cpu_note(vnni, frozenset(), "x86_64")
    assert "assume" not in quantize.cpu_note(vnni, frozenset({"avx512_vnni"}), "x86_64")
    assert "assume" not in quantize.cpu_note(vnni, frozenset(), "aarch64")
    seven = {**vnni, "weights_range": "7-bit [-64, 63]"}
    assert quantize.cpu_note(seven, frozenset(), "x86_64") == \
        f"; it was exported and verified on Xeon (AVX512-VNNI), not on this CPU ({cpu_model()})"
    assert quantize.cpu_note({}, frozenset(), "x86_64") == ""
    with pytest.raises(ExportError, match=r"of 50.0% of 2 stored validation images \(at least 90% needed\); it was "
                                          r"exported and verified on Xeon"):
        quantize.agreement_check(np.eye(2)[[0, 0]], np.eye(2), "m", None, vnni)  # one of two images agrees


def test_full_range_weights_are_a_choice_recorded_in_the_manifest():
    assert quantize.int8_assumptions("onnx", True, frozenset())["assumes"].startswith("a CPU with VNNI or AMX")
    assert quantize.int8_assumptions("openvino", False, frozenset())["weights_range"] == "7-bit [-64, 63]"
    litert = quantize.int8_assumptions("litert", True, frozenset({"avx512_vnni"}))
    assert litert["assumes"].startswith("any CPU") and litert["verified_on"]["int8_dot_product"] == ["avx512_vnni"]
