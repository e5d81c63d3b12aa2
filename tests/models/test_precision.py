"""Mixed precision (`TrainConfig.precision`, `--precision`): bf16 compute, float32 where it matters, float32 I/O."""

import numpy as np
import pytest
import tensorflow as tf

from inception_keras import build_model, get_spec
from inception_keras.builder import float32_model
from inception_keras.data import load_data, to_model_input
from inception_keras.export import check_saved_model, export_saved_model
from inception_keras.train import TrainConfig, train
from inception_keras.utils.cpu import native_bf16


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_sensitive_layers_stay_float32_and_the_model_takes_and_returns_float32(precision):
    import keras

    spec = get_spec("googlenet").with_input_size(96).with_classes(10).replace(input_conversion="caffe")
    model = build_model(spec, precision=precision)
    compute = "bfloat16" if precision == "mixed_bfloat16" else "float16"
    assert model.get_layer("conv1_conv").compute_dtype == compute
    assert model.get_layer("conv1_conv").kernel.dtype == "float32"  # weights stay float32
    for name in ("lrn_1", "lrn_2", "predictions", "aux_1", "aux_2", "input_conversion"):
        assert model.get_layer(name).compute_dtype == "float32", name
    outputs = model(np.zeros((1, 96, 96, 3), "float32"))
    assert all(value.dtype == "float32" for value in outputs.values())
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    exact = float32_model(model)  # the reference a mixed-precision export is checked against
    assert {layer.compute_dtype for layer in exact.layers} == {"float32"}
    twin = build_model(spec, precision="float32")
    twin.set_weights(model.get_weights())
    images = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    for name, value in exact(images).items():
        np.testing.assert_array_equal(value, twin(images)[name])


NATIVE_BF16 = native_bf16() is not False  # AVX512-BF16 or AMX (or not x86): elsewhere bf16 is emulated, ~4x slower


@pytest.mark.parametrize("epochs, accuracy", [
    pytest.param(6, 0.95, marks=() if NATIVE_BF16 else pytest.mark.slow),
    pytest.param(2, 0.8, marks=pytest.mark.skipif(NATIVE_BF16, reason="the 6-epoch run checks it on this CPU"))])
def test_bf16_trains_the_mini_and_exports_float32(epochs, accuracy, digits_dir, tmp_path):
    """6 epochs reach 95 %; where bf16 is emulated (2.2 min for them on a 2-core Zen 3), `make test` checks the same
    properties after 2 epochs (91 % measured) and `make test-slow` runs the 6."""
    data = load_data("sklearn_digits", digits_dir)
    config = TrainConfig(epochs=epochs, optimizer="adam", learning_rate=3e-3, ema=False, precision="mixed_bfloat16")
    model, result = train(get_spec("googlenet_mini"), data, tmp_path / "run", config, verbose=0)
    assert model.get_layer("inception_4a_3x3_conv").compute_dtype == "bfloat16"
    assert result.best_val_accuracy >= accuracy
    export = export_saved_model(model, get_spec("googlenet_mini"), [str(i) for i in range(10)], tmp_path / "models")
    # compared with the float32 copy of the same weights, within twice the bf16 models' own distance from it
    assert 2e-2 <= export.tolerance <= 0.5 and export.max_abs_diff <= export.tolerance
    assert check_saved_model(export.path) == pytest.approx(export.max_abs_diff)
    assert check_saved_model(export.path, model) == pytest.approx(export.max_abs_diff)
    loaded = tf.saved_model.load(export.path)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 1), dtype=np.uint8).repeat(3, axis=-1)
    served = loaded.signatures["serve_float"](to_model_input(images, (32, 32), 3))["probabilities"]
    assert served.dtype == tf.float32


def test_a_note_says_when_bf16_would_be_emulated(monkeypatch):
    from inception_keras import train as train_module

    monkeypatch.setattr(train_module, "native_bf16", lambda: False)
    note = train_module.precision_note("mixed_bfloat16")
    assert note.startswith("this CPU has no bf16 arithmetic") and "--precision float32" in note
    assert train_module.precision_note("float32") is None and train_module.precision_note("mixed_float16") is None
    monkeypatch.setattr(train_module.keras.distribution, "list_devices", lambda: ["gpu:0", "cpu:0"])
    assert train_module.precision_note("mixed_bfloat16") is None  # a GPU computes it
    monkeypatch.setattr(train_module.keras.distribution, "list_devices", lambda: ["cpu:0"])
    for native in (True, None):  # AVX512-BF16 or AMX; or not known
        monkeypatch.setattr(train_module, "native_bf16", lambda native=native: native)
        assert train_module.precision_note("mixed_bfloat16") is None
