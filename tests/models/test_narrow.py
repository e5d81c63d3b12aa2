"""Narrowing and widening a trained model to other module widths: exact equalities on small inputs."""

import dataclasses
import re

import numpy as np
import pytest

from inception_keras import get_spec
from inception_keras.builder import build_model
from inception_keras.cost import network_cost
from inception_keras import narrow
from inception_keras.inherit import NarrowError

BRANCH_WIDTHS = {"1x1": "ch1x1", "3x3_reduce": "ch3x3_reduce", "3x3": "ch3x3", "5x5": "ch5x5", "pool_proj": "pool_proj"}


def with_widths(spec, changes):
    """`spec` with module widths replaced: {module name: {width: value}}."""
    names = iter(spec.module_names())
    stages = [dataclasses.replace(stage, modules=tuple(dataclasses.replace(module, **changes.get(next(names), {}))
                                                       for module in stage.modules)) for stage in spec.stages]
    return spec.replace(stages=tuple(stages))


def specs():
    mini = get_spec("googlenet_mini")
    bn = get_spec("googlenet_bn").with_input_size(96).with_classes(5)
    faithful = get_spec("googlenet").with_input_size(96).with_classes(5)
    return {"googlenet_mini": mini, "googlenet_bn": bn, "googlenet": faithful}


def trained_like(spec, seed=0):
    """A model of `spec` with random weights and batch-norm statistics (as after training)."""
    model = build_model(spec)
    rng = np.random.default_rng(seed)
    weights = []
    for weight, value in zip(model.weights, model.get_weights()):
        if weight.path.endswith("moving_variance"):
            weights.append(rng.uniform(0.5, 2.0, value.shape).astype(value.dtype))
        else:
            weights.append(rng.normal(0, 0.1 if "kernel" in weight.path else 0.5, value.shape).astype(value.dtype))
    model.set_weights(weights)
    return model


def outputs(model, images):
    result = model(images, training=False)
    return {key: np.asarray(value) for key, value in result.items()} if isinstance(result, dict) else \
        {"predictions": np.asarray(result)}


def assert_close(a, b, tolerance):
    for key in a:
        spread = np.abs(a[key]).max()
        assert np.abs(a[key] - b[key]).max() <= tolerance * spread, key


def images(spec, count=2):
    return np.random.default_rng(1).uniform(-1, 1, (count, *spec.input_shape)).astype("float32")


def zero_channels(model, prefix, channels):
    """Zero the filters (and batch-norm gamma and beta, or the bias) of output channels of layer `prefix`."""
    conv = model.get_layer(f"{prefix}_conv")
    weights = conv.get_weights()
    weights[0][..., channels] = 0
    if len(weights) > 1:
        weights[1][channels] = 0
    conv.set_weights(weights)
    if f"{prefix}_bn" in [layer.name for layer in model.layers]:
        norm = model.get_layer(f"{prefix}_bn")
        values = norm.get_weights()
        for i, weight in enumerate(norm.weights):
            if weight.path.endswith(("gamma", "beta")):
                values[i][channels] = 0
        norm.set_weights(values)


def test_the_same_widths_give_the_same_weights_and_outputs():
    spec = get_spec("googlenet_mini")
    parent = trained_like(spec)
    child = narrow(parent, spec, spec)
    assert all(np.array_equal(a, b) for a, b in zip(parent.get_weights(), child.get_weights()))
    assert_close(outputs(parent, images(spec)), outputs(child, images(spec)), 1e-6)


@pytest.mark.parametrize("name", ["googlenet_mini", "googlenet_bn", "googlenet"])
def test_narrowing_removes_exactly_the_dead_channels_through_the_concatenations(name):
    spec = specs()[name]
    first, second = spec.module_names()[:2]
    last = spec.module_names()[-1]
    parent = trained_like(spec)
    module = spec.stages[0].modules[0]
    dead = {  # layer prefix -> channels zeroed, a bottleneck and every branch end (concatenation offsets)
        f"inception_{first}_3x3_reduce": [0, 3], f"inception_{first}_1x1": [1, module.ch1x1 - 1],
        f"inception_{first}_3x3": [2], f"inception_{first}_5x5": [0], f"inception_{first}_pool_proj": [1, 2],
        f"inception_{last}_1x1": [0, 5],  # feeds the classifier through the global pooling
    }
    aux_module = spec.aux_heads[0].after if spec.aux_heads else None
    if aux_module:
        dead[f"inception_{aux_module}_3x3"] = [4]  # feeds an aux head's 1x1 projection
    for prefix, channels in dead.items():
        zero_channels(parent, prefix, channels)
    modules = dict(zip(spec.module_names(), [module for stage in spec.stages for module in stage.modules]))
    changes = {}
    for prefix, channels in dead.items():
        module_name, branch = prefix.removeprefix("inception_").split("_", 1)
        width = BRANCH_WIDTHS[branch]
        changes.setdefault(module_name, {})[width] = getattr(modules[module_name], width) - len(channels)
    child_spec = with_widths(spec, changes)
    child = narrow(parent, spec, child_spec)
    assert child.count_params() == network_cost(child_spec).total_params
    for branch in ("1x1", "5x5", "pool_proj"):  # their inputs are not narrowed: only the dead outputs go
        prefix = f"inception_{first}_{branch}"
        np.testing.assert_array_equal(child.get_layer(f"{prefix}_conv").get_weights()[0],
                                      np.delete(parent.get_layer(f"{prefix}_conv").get_weights()[0],
                                                dead[prefix], axis=-1))
    three = parent.get_layer(f"inception_{first}_3x3_conv").get_weights()[0]
    expected = np.delete(np.delete(three, dead[f"inception_{first}_3x3"], axis=3),
                         dead[f"inception_{first}_3x3_reduce"], axis=2)
    np.testing.assert_array_equal(child.get_layer(f"inception_{first}_3x3_conv").get_weights()[0], expected)
    consumer = child.get_layer(f"inception_{second}_1x1_conv").get_weights()[0]
    assert consumer.shape[2] == sum(getattr(child_spec.stages[0].modules[0], w)
                                    for w in ("ch1x1", "ch3x3", "ch5x5", "pool_proj"))
    assert_close(outputs(parent, images(spec)), outputs(child, images(spec)), 1e-5)


@pytest.mark.parametrize("name", ["googlenet_mini", "googlenet"])
def test_widening_preserves_the_function(name):
    spec = specs()[name]
    parent = trained_like(spec)
    widths = ("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5", "pool_proj")
    wider = {module: {width: getattr(m, width) + 3 for width in widths}
             for module, m in zip(spec.module_names(), [m for s in spec.stages for m in s.modules])}
    child_spec = with_widths(spec, wider)
    child = narrow(parent, spec, child_spec)
    assert child.count_params() == network_cost(child_spec).total_params > parent.count_params()
    assert_close(outputs(parent, images(spec)), outputs(child, images(spec)), 1e-5)
    first = spec.module_names()[0]
    new = child.get_layer(f"inception_{first}_1x1_conv").get_weights()[0][..., -3:]
    assert np.abs(new).sum() > 0  # the new channels start from fresh filters, not zeros


@pytest.mark.parametrize("name", ["googlenet_mini", "googlenet"])
def test_sorted_channels_compute_the_same_and_the_first_k_are_what_l1_keeps(name):
    from inception_keras.inherit import channel_importance, sort_channels

    spec = specs()[name]
    parent = trained_like(spec)
    ordered = sort_channels(parent, spec)
    assert_close(outputs(parent, images(spec)), outputs(ordered, images(spec)), 1e-5)
    first = spec.module_names()[0]
    order = {}
    for branch, source in (("1x1", None), ("5x5_reduce", None), ("5x5", "5x5_reduce")):
        layer = f"inception_{first}_{branch}_conv"
        importance = channel_importance(ordered.get_layer(layer), ordered)
        assert np.all(np.diff(importance) <= 0), layer  # the most important first
        order[branch] = np.argsort(-channel_importance(parent.get_layer(layer), parent), kind="stable")
        kernel = parent.get_layer(layer).get_weights()[0][..., order[branch]]
        if source:  # its input channels come in its bottleneck's new order
            kernel = kernel[:, :, order[source]]
        np.testing.assert_array_equal(ordered.get_layer(layer).get_weights()[0], kernel)
    stem = ordered.get_layer("conv1_conv").get_weights()[0]
    np.testing.assert_array_equal(stem, parent.get_layer("conv1_conv").get_weights()[0])  # before an LRN: as it was
    # a child by importance="first" of the sorted parent: exactly the first k of each layer, computing what
    # the l1-narrowed child of the unsorted parent computes
    module = spec.stages[0].modules[0]
    changes = {first: {"ch1x1": module.ch1x1 - 3, "ch3x3_reduce": module.ch3x3_reduce - 2, "ch3x3": module.ch3x3 - 4}}
    child_spec = with_widths(spec, changes)
    child = narrow(ordered, spec, child_spec, importance="first")
    three = ordered.get_layer(f"inception_{first}_3x3_conv").get_weights()[0]
    np.testing.assert_array_equal(child.get_layer(f"inception_{first}_3x3_conv").get_weights()[0],
                                  three[:, :, :module.ch3x3_reduce - 2, :module.ch3x3 - 4])
    second = spec.module_names()[1]
    consumer = ordered.get_layer(f"inception_{second}_1x1_conv").get_weights()[0]
    c1, c3 = module.ch1x1, module.ch3x3  # the concatenation's segments: the first k of each, at its offset
    rows = np.r_[0:c1 - 3, c1:c1 + c3 - 4, c1 + c3:consumer.shape[2]]
    np.testing.assert_array_equal(child.get_layer(f"inception_{second}_1x1_conv").get_weights()[0],
                                  consumer[:, :, rows])
    assert_close(outputs(narrow(parent, spec, child_spec), images(spec)), outputs(child, images(spec)), 1e-5)
    with pytest.raises(ValueError, match="importance must be one of l1, first"):
        narrow(parent, spec, child_spec, importance="sorted")


def test_specs_that_cannot_inherit_are_refused_naming_the_field():
    spec = get_spec("googlenet_mini")
    parent = build_model(spec)
    with pytest.raises(NarrowError, match=r"child spec input_shape\[0\]: 48, the parent's is 32"):
        narrow(parent, spec, spec.with_input_size(48))
    with pytest.raises(NarrowError, match=r"child spec stages\[0\]\.modules\[1\]\.ch5x5_kernel: 3, the parent's is 5"):
        narrow(parent, spec, with_widths(spec, {"3b": {"ch5x5_kernel": 3}}))
    with pytest.raises(NarrowError, match=r"child spec head\.classes: 4"):
        narrow(parent, spec, spec.with_classes(4))
    with pytest.raises(NarrowError, match=r"^inception_3b: ch3x3_reduce is 0 in the child spec and 24 in the "
                                          r"parent's: a branch without a bottleneck cannot inherit"):
        narrow(parent, spec, with_widths(spec, {"3b": {"ch3x3_reduce": 0}}))


def test_the_command_narrows_a_keras_file_and_an_imported_one_by_its_registered_name(tmp_path, capsys):
    from inception_keras.cli import main
    from inception_keras.pretrained.convert import load_keras_model
    from inception_keras.serialize import save_spec

    spec = get_spec("googlenet_mini")
    parent = trained_like(spec)
    parent.save(tmp_path / "imported.keras")  # no spec.yaml beside it: the registered spec of its name
    child_spec = with_widths(spec, {"3a": {"ch1x1": 9, "ch3x3": 12}, "5a": {"pool_proj": 20}})
    save_spec(child_spec, tmp_path / "child.yaml")
    out = tmp_path / "child.keras"
    assert main(["narrow", str(tmp_path / "imported.keras"), str(tmp_path / "child.yaml"), "--out", str(out)]) == 0
    assert f"-> {out} (googlenet_mini, {network_cost(child_spec).total_params:,} params)" in capsys.readouterr().out
    expected = narrow(parent, spec, child_spec)
    assert all(np.array_equal(a, b) for a, b in zip(expected.get_weights(), load_keras_model(out).get_weights()))
    assert main(["narrow", str(tmp_path / "imported.keras"), str(tmp_path / "child.yaml"), "--out", str(out)]) == 2
    assert "child.keras exists; give another --out, or --overwrite" in capsys.readouterr().err
    save_spec(child_spec.with_input_size(40), tmp_path / "other.yaml")
    assert main(["narrow", str(tmp_path / "imported.keras"), str(tmp_path / "other.yaml"), "--out",
                 str(tmp_path / "x.keras")]) == 2
    assert "error: child spec input_shape[0]: 40, the parent's is 32" in capsys.readouterr().err
    assert not (tmp_path / "x.keras").exists()
    save_spec(child_spec.with_input_size(40).with_classes(4), tmp_path / "other.yaml")
    assert main(["narrow", str(tmp_path / "imported.keras"), str(tmp_path / "other.yaml"), "--out",
                 str(tmp_path / "x.keras"), "--fit"]) == 0  # the parent's input size and classes
    fitted = load_keras_model(tmp_path / "x.keras")
    assert fitted.input_shape == (None, 32, 32, 3) and fitted.get_layer("predictions").units == 10


def test_fresh_heads_take_another_class_count_and_input_size():
    spec = get_spec("googlenet_mini")
    parent = trained_like(spec)
    child_spec = with_widths(spec, {"4a": {"ch1x1": 20}}).with_classes(3).with_input_size(40)
    with pytest.raises(NarrowError, match=r"child spec input_shape\[0\]: 40"):
        narrow(parent, spec, child_spec)
    child = narrow(parent, spec, child_spec, fresh_heads=True)
    assert child.count_params() == network_cost(child_spec).total_params
    for name in ("conv1_conv", "inception_3a_3x3_conv", "aux_2_proj_conv"):
        assert all(np.array_equal(a, b) for a, b in zip(parent.get_layer(name).get_weights(),
                                                         child.get_layer(name).get_weights()))
    last = spec.stages[-1].modules[-1]
    assert child.get_layer("predictions").get_weights()[0].shape == (last.ch1x1 + last.ch3x3 + last.ch5x5
                                                                     + last.pool_proj, 3)


def test_recalibration_sets_each_batch_norm_to_its_input_statistics_in_training_mode():
    import tensorflow as tf

    from inception_keras.inherit import recalibrate_batch_norm

    spec = get_spec("googlenet_mini")
    model = trained_like(spec)
    features = keras_model(model, "inception_5a_relu")
    batch = images(spec, 16)
    before = np.abs(np.asarray(features(batch, training=False)) - np.asarray(features(batch, training=True))).max()
    assert recalibrate_batch_norm(model, tf.data.Dataset.from_tensors((batch, batch[:, 0, 0, 0])), 1) == \
        sum(layer.name.endswith("_bn") for layer in model.layers)
    after = np.abs(np.asarray(features(batch, training=False)) - np.asarray(features(batch, training=True))).max()
    assert after <= 1e-3 * before


def keras_model(model, layer):
    import keras

    return keras.Model(model.inputs[0], model.get_layer(layer).output)


@pytest.fixture(scope="module")
def mini_file(tmp_path_factory):
    """googlenet_mini saved with trained-like weights, in a folder of its own (no spec.yaml beside it)."""
    folder = tmp_path_factory.mktemp("mini")
    trained_like(get_spec("googlenet_mini")).save(folder / "mini.keras")
    return folder / "mini.keras"


def _beside(model_file, tmp_path, spec):
    """A copy of `model_file` with `spec` as the spec.yaml beside it."""
    import shutil

    from inception_keras.serialize import save_spec

    shutil.copy(model_file, tmp_path / "model.keras")
    save_spec(spec, tmp_path / "spec.yaml")
    return tmp_path / "model.keras"


def test_a_spec_that_describes_another_network_is_refused_naming_the_first_layer(mini_file, tmp_path, capsys):
    from inception_keras.cli import main
    from inception_keras.inherit import SpecMismatchError, check_model_spec
    from inception_keras.pretrained.convert import load_keras_model
    from inception_keras.serialize import save_spec

    spec = get_spec("googlenet_mini")
    model = load_keras_model(mini_file)
    check_model_spec(model, spec)
    narrower = with_widths(spec, {"3b": {"ch1x1": 8}})
    other_kernel = with_widths(spec, {"3a": {"ch5x5_kernel": 3}})
    cases = {
        narrower: "layer inception_3b_1x1_conv: the model's is a Conv2D of ",
        spec.without_aux(): "the model's layer aux_1_pool (AveragePooling2D) is not in the spec",
        other_kernel: "layer inception_3a_5x5_conv: the model's is a Conv2D of ",
        spec.with_input_size(40): "the model takes 32x32x3 inputs, the spec 40x40x3",
    }
    for wrong, problem in cases.items():
        with pytest.raises(SpecMismatchError, match=re.escape(f"does not describe the model: {problem}")):
            check_model_spec(model, wrong)
        with pytest.raises(NarrowError, match=re.escape(problem)):  # Python's narrow() too, not a numpy ValueError
            narrow(model, wrong, wrong)
        model_file = _beside(mini_file, tmp_path, wrong)
        out = tmp_path / "child.keras"
        for argv in (["narrow", str(model_file), str(tmp_path / "spec.yaml"), "--out", str(out)],
                     ["export", str(model_file), "--base-dir", str(tmp_path / "exports")],
                     ["predict", str(model_file), str(tmp_path / "missing.png")]):
            assert main(argv) == 2, argv
            line = capsys.readouterr().err.strip()
            assert line.startswith(f"error: {tmp_path / 'spec.yaml'} ('googlenet_mini') does not describe the "
                                   f"model: {problem}"), (argv, line)
        assert not out.exists() and not (tmp_path / "exports").exists()
    save_spec(other_kernel, tmp_path / "other.yaml")
    (tmp_path / "spec.yaml").unlink()
    assert main(["narrow", str(tmp_path / "model.keras"), str(tmp_path / "other.yaml"), "--out",
                 str(tmp_path / "c.keras"), "--parent-spec", str(tmp_path / "other.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: --parent-spec ('googlenet_mini') does not describe the model: "
                                              "layer inception_3a_5x5_conv")


def test_narrow_checks_its_output_and_the_specs_before_loading_tensorflow(mini_file, tmp_path):
    import subprocess
    import sys

    from inception_keras.serialize import save_spec

    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling.keras").symlink_to(tmp_path / "nowhere")
    model_file = _beside(mini_file, tmp_path, get_spec("googlenet_mini"))
    save_spec(get_spec("googlenet_mini").with_input_size(40), tmp_path / "big.yaml")
    cases = [(["--out", str(tmp_path / "afile" / "x.keras")], f"--out {tmp_path / 'afile' / 'x.keras'}: "
                                                                f"{tmp_path / 'afile'} is a file, not a directory"),
             (["--out", str(tmp_path / "dangling.keras")],
              f"{tmp_path / 'dangling.keras'} exists (a symbolic link to nothing); give another --out, or --overwrite "
              f"to replace the link"),
             (["--out", str(tmp_path / "c.keras"), str(tmp_path / "big.yaml")],
              "child spec input_shape[0]: 40, the parent's is 32")]
    code = ("import sys\nfrom inception_keras.cli import main\ncode = main(sys.argv[1:])\n"
            "print(code, 'tensorflow' in sys.modules)")
    for extra, message in cases:
        argv = ["narrow", str(model_file), *(extra[2:] or ["googlenet_mini"]), *extra[:2]]
        run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert run.stdout.split() == ["2", "False"], (argv, run.stdout, run.stderr)
        assert run.stderr.strip().startswith(f"error: {message}"), run.stderr
    assert (tmp_path / "dangling.keras").is_symlink() and not (tmp_path / "c.keras").exists()


def test_width_multiplier_networks_inherit_through_the_stem():
    """A spec scaled by a width multiplier (stem convolutions included) narrows and widens from its base: widening
    by 1.5 computes what the parent computes; narrowing by 0.5 keeps the parent's most important stem channels."""
    from inception_keras import scale_widths

    spec = get_spec("googlenet_bn").with_input_size(96).with_classes(5)
    parent = trained_like(spec)
    wider = narrow(parent, spec, scale_widths(spec, 1.5))
    assert wider.get_layer("conv1_conv").get_weights()[0].shape[-1] == 96
    assert_close(outputs(parent, images(spec)), outputs(wider, images(spec)), 1e-4)
    half = scale_widths(spec, 0.5)
    child = narrow(parent, spec, half)
    assert child.count_params() == network_cost(half).total_params
    kept = np.sort(np.argsort(-_importance(parent, "conv1"), kind="stable")[:32])  # 64 stem filters -> 32
    np.testing.assert_array_equal(child.get_layer("conv1_conv").get_weights()[0],
                                  parent.get_layer("conv1_conv").get_weights()[0][..., kept])


def _importance(model, prefix):
    from inception_keras.inherit import channel_importance

    return channel_importance(model.get_layer(f"{prefix}_conv"), model)
