"""`.keras` files load where the README says: with Keras alone where every layer is stock (batch norm too), after
`import inception_keras` where a layer is ours (LRN, input conversion), and files of earlier versions still do."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from inception_keras import build_model
from inception_keras.layers.batch_norm import BatchNormalization
from inception_keras.pretrained.convert import load_keras_model
from inception_keras.spec import ConvSpec, HeadSpec, InceptionSpec, LRNSpec, NetworkSpec, PoolSpec, StageSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "keras" / "tiny_bn_lrn"  # written by the previous file format


def tiny_spec(with_our_layers: bool) -> NetworkSpec:
    """The fixture's network (README there); without LRN and input conversion, every layer is stock Keras."""
    lrn = (LRNSpec(size=3, alpha=1e-2),) if with_our_layers else ()
    return NetworkSpec(
        name="tiny_bn_lrn", input_shape=(16, 16, 3), input_conversion="caffe" if with_our_layers else "none",
        normalization="batch_norm", stem=(ConvSpec(4, 3, 2), *lrn, PoolSpec("max", 3, 2)),
        stages=(StageSpec("3", (InceptionSpec(2, 0, 3, 0, 3, 2),)),), head=HeadSpec(dropout=0.0, classes=3))


def saved_with_outputs(spec: NetworkSpec, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Save a freshly built model of `spec` (batch-norm statistics away from 0 and 1); its inputs and outputs."""
    model = build_model(spec)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.name.endswith("_bn"):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape) for w in layer.weights])
    model.save(path)
    inputs = rng.uniform(-1, 1, (2, *spec.input_shape)).astype("float32")
    return inputs, np.asarray(model(inputs, training=False))


def run_child(code: str, *args) -> None:
    """`code` in a fresh interpreter, with `args` as sys.argv[1:]; fails the test with its stderr's tail."""
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


LOAD_AND_PREDICT = """
import numpy as np
def predict(model_path, inputs_path, out_path):
    model = keras.saving.load_model(model_path, safe_mode=True)
    np.save(out_path, np.asarray(model(np.load(inputs_path), training=False)))
    return model
"""


def test_a_stock_layer_model_loads_with_keras_alone(tmp_path):
    inputs, expected = saved_with_outputs(tiny_spec(with_our_layers=False), tmp_path / "bn.keras")
    np.save(tmp_path / "inputs.npy", inputs)
    run_child("import sys\nsys.modules['inception_keras'] = None  # importing it would fail\nimport keras\n"
              + LOAD_AND_PREDICT + "model = predict(*sys.argv[1:])\n"
              "assert type(model.get_layer('conv1_bn')) is keras.layers.BatchNormalization\n",
              tmp_path / "bn.keras", tmp_path / "inputs.npy", tmp_path / "out.npy")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-6)


def test_our_layers_load_after_importing_the_package_and_so_do_earlier_files(tmp_path):
    inputs, expected = saved_with_outputs(tiny_spec(with_our_layers=True), tmp_path / "lrn.keras")
    np.save(tmp_path / "inputs.npy", inputs)
    recorded = np.load(f"{FIXTURE}.npz")
    np.save(tmp_path / "fixture_inputs.npy", recorded["inputs"])
    run_child("import sys\nimport inception_keras\nassert 'keras' not in sys.modules\nimport keras\n"
              + LOAD_AND_PREDICT + "predict(*sys.argv[1:4])\npredict(*sys.argv[4:])\n",
              tmp_path / "lrn.keras", tmp_path / "inputs.npy", tmp_path / "out.npy",
              f"{FIXTURE}.keras", tmp_path / "fixture_inputs.npy", tmp_path / "fixture_out.npy")
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "fixture_out.npy"), recorded["predictions"], rtol=1e-5, atol=1e-6)


def test_an_earlier_file_loads_with_its_recorded_outputs_and_the_fused_kernel():
    recorded = np.load(f"{FIXTURE}.npz")
    for model in (load_keras_model(f"{FIXTURE}.keras"), keras.saving.load_model(f"{FIXTURE}.keras", safe_mode=True)):
        assert type(model.get_layer("conv1_bn")) is BatchNormalization
        np.testing.assert_allclose(model(recorded["inputs"], training=False), recorded["predictions"],
                                   rtol=1e-5, atol=1e-6)


IMPORT_ORDERS = {
    "the package alone, then keras": "import inception_keras\nimport keras",
    "the package, then tensorflow, then keras": "import inception_keras\nimport tensorflow\nimport keras",
    "keras first": "import keras\nimport inception_keras",
    "tensorflow first": "import tensorflow\nimport inception_keras\nimport keras",
}
LOAD_IN_EVERY_WAY = """
import sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
{imports}
import numpy as np
from inception_keras.pretrained.convert import load_keras_model
from inception_keras.export import load_run
assert keras.saving.get_registered_object("inception_keras>LocalResponseNormalization") is not None
inputs, expected = np.load(sys.argv[2])["inputs"], np.load(sys.argv[2])["predictions"]
for model in (keras.saving.load_model(sys.argv[1], safe_mode=True), load_keras_model(sys.argv[1]),
              load_run(sys.argv[1])[0]):
    np.testing.assert_allclose(model(inputs, training=False), expected, rtol=1e-5, atol=1e-6)
print("warned" if any(w.category.__name__ == "OneDNNOffWarning" for w in caught) else "quiet")
"""


def test_files_with_our_layers_load_whatever_the_import_order():
    """In fresh interpreters, in the orders users write: `keras.saving.load_model(safe_mode=True)` and our loaders
    read a file with LRN and input conversion; importing the package after TensorFlow warns where oneDNN is off."""
    from inception_keras.utils.cpu import ONEDNN_DEFAULT_FLAGS, ONEDNN_VARIABLE, X86_64, cpu_flags

    environ = {key: value for key, value in os.environ.items() if key != ONEDNN_VARIABLE}
    children = {}
    for order, imports in IMPORT_ORDERS.items():
        code = LOAD_IN_EVERY_WAY.format(imports="\n".join("    " + line for line in imports.splitlines()))
        children[order] = subprocess.Popen([sys.executable, "-c", code, f"{FIXTURE}.keras", f"{FIXTURE}.npz"],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
    onednn_off = os.uname().machine.lower() in X86_64 and not cpu_flags() & set(ONEDNN_DEFAULT_FLAGS)
    for order, child in children.items():
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, (order, err[-2000:])
        package_first = IMPORT_ORDERS[order].startswith("import inception_keras")
        assert out.split() == ["warned" if onednn_off and not package_first else "quiet"], (order, out)
