"""Elastic training: a child is the first channels of the parent, computed through the parent's own layers; the
sandwich step trains the largest network, the smallest child and N sampled children on the largest's predictions."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from inception_keras import get_spec
from inception_keras.builder import build_model
from inception_keras.elastic import ElasticTrainer, ElasticWidths, child_forward, distillation_loss, sliced_forward
from inception_keras.inherit import narrow
from inception_keras.spec import SpecError

from test_narrow import assert_close, images, trained_like  # noqa: E402  (tests/models is on sys.path)


def mini_widths():
    return ElasticWidths.from_choices({("3a", "ch1x1"): (8, 12, 16), ("3a", "ch3x3_reduce"): (10, 16),
                                       ("3a", "ch5x5"): (4, 8), ("3b", "pool_proj"): (6, 16), ("5a", "ch1x1"): (9, 48),
                                       ("stem", "conv1"): (20, 32)})  # the stem's too (`with_stem`)


def child_of(spec, widths, pick):
    return widths._with(spec, pick)


@pytest.mark.parametrize("training", [False, True])
def test_a_masked_child_computes_what_its_first_channels_narrowed_out_compute(training):
    spec = get_spec("googlenet_mini")
    spec = spec.replace(head=dataclasses.replace(spec.head, dropout=0.0))  # training mode: no random dropout
    widths = mini_widths()
    largest = widths.largest(spec)
    parent = trained_like(largest)
    trainer = ElasticTrainer(parent, widths, samples=2, seed=3)
    x = images(spec, 4)
    for index in (0, 1, 2):
        masks = trainer.child_masks(tf.constant(7, tf.int64), index)
        kept = {name: int(np.asarray(mask).sum()) for name, mask in masks.items()}
        for (name, values, _), k in zip(trainer.masked, kept.values()):
            assert k in values, name  # a sampled width is one of the choices
        chosen = iter(kept.values())
        child_spec = child_of(spec, widths, lambda values: next(chosen))
        child = narrow(parent, largest, child_spec, importance="first")
        expected = child(x, training=training)["predictions"]
        assert_close({"p": np.asarray(child_forward(parent, x, masks, training=training))},
                     {"p": np.asarray(expected)}, 1e-5)
        # the same child with its weights cut to its widths (a random child's widths are tensors)
        widths_now = trainer.child_widths(tf.constant(7, tf.int64), index)
        assert [int(w) for w in widths_now.values()] == list(kept.values())
        assert_close({"p": np.asarray(sliced_forward(parent, tf.constant(x), widths_now, training=training))},
                     {"p": np.asarray(expected)}, 1e-5)
    smallest = {name: int(np.asarray(mask).sum()) for name, mask in trainer.child_masks(0, 0).items()}
    assert list(smallest.values()) == [values[0] for _, values, _ in trainer.masked]
    again = ElasticTrainer(parent, widths, samples=2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(trainer.child_masks(5, 1).values(),
                                                    again.child_masks(5, 1).values()))  # (seed, step, index) alone


def test_a_child_in_training_mode_leaves_the_moving_statistics_alone():
    spec = get_spec("googlenet_mini")
    widths = mini_widths()
    parent = trained_like(widths.largest(spec))
    before = [np.asarray(w) for w in parent.non_trainable_weights]
    child_forward(parent, images(spec, 4), ElasticTrainer(parent, widths).child_masks(0, 1), training=True)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, parent.non_trainable_weights))


def test_every_width_draws_the_widths_between_the_choices_too():
    widths = mini_widths().every_width()
    assert widths.choices[0] == ("3a", "ch1x1", tuple(range(8, 17))) and widths.choices[4][2] == tuple(range(9, 49))
    spec = get_spec("googlenet_mini")
    assert widths.smallest(spec) == mini_widths().smallest(spec) and widths.largest(spec) == mini_widths().largest(spec)
    trainer = ElasticTrainer(build_model(widths.largest(spec)), widths, seed=1)
    drawn = [int(np.asarray(trainer.child_masks(step, 1)["inception_5a_1x1_bn"]).sum()) for step in range(40)]
    assert all(9 <= width <= 48 for width in drawn) and len(set(drawn) - {9, 48}) > 10  # not the choices alone


def test_distillation_targets_carry_no_gradient():
    teacher = tf.Variable([[0.2, 0.8], [0.6, 0.4]])
    student = tf.Variable([[0.5, 0.5], [0.1, 0.9]])
    with tf.GradientTape(persistent=True) as tape:
        loss = distillation_loss(teacher, student)
    assert tape.gradient(loss, teacher) is None and tape.gradient(loss, student) is not None


@pytest.mark.parametrize("slicing", [True, False], ids=["sliced", "masked"])
def test_the_sandwich_step_trains_the_largest_the_smallest_and_n_sampled_children(monkeypatch, slicing):
    import inception_keras.elastic as elastic
    from inception_keras.train import TrainConfig, compile_model

    spec = get_spec("googlenet_mini")
    widths = mini_widths()
    largest = widths.largest(spec)
    trainer = ElasticTrainer(build_model(largest), widths, samples=2, seed=0, slicing=slicing)
    compile_model(trainer, largest, TrainConfig(epochs=1, optimizer="adam", ema=False), 3)
    trainer.run_eagerly = True
    calls = []
    name = "sliced_forward" if slicing else "child_forward"
    real = getattr(elastic, name)
    monkeypatch.setattr(elastic, name, lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    x = images(spec, 8)
    y = tf.one_hot(np.arange(8) % 10, 10)
    before = [np.asarray(w) for w in trainer.net.trainable_weights]
    logs = trainer.fit(x, {"predictions": y, "aux_1": y, "aux_2": y}, epochs=1, batch_size=4, verbose=0).history
    assert len(calls) == 2 * 3 and trainer.children_trained == 6  # two steps, the smallest and 2 sampled each
    assert "loss" in logs and "predictions_accuracy" in logs
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, trainer.net.trainable_weights))
    with pytest.raises(NotImplementedError, match="save the trained network"):
        trainer.get_config()


def test_a_sliced_step_updates_the_weights_as_a_masked_step_does():
    """Cutting the weights to a child's widths is the same training as masking its channels: a step each from the
    same weights on the same batch (the smallest child and two random ones) ends at the same weights (no dropout;
    both draw the same children)."""
    from inception_keras.train import TrainConfig, compile_model

    spec = get_spec("googlenet_mini")
    spec = spec.replace(head=dataclasses.replace(spec.head, dropout=0.0),
                        aux_heads=tuple(dataclasses.replace(aux, dropout=0.0) for aux in spec.aux_heads))
    widths = mini_widths()
    largest = widths.largest(spec)
    x = images(spec, 8)
    y = tf.one_hot(np.arange(8) % 10, 10)
    found = []
    for slicing in (True, False):
        trainer = ElasticTrainer(trained_like(largest), widths, samples=2, seed=1, slicing=slicing)
        compile_model(trainer, largest, TrainConfig(epochs=1, optimizer="sgd", learning_rate=0.1, ema=False), 1)
        trainer.run_eagerly = True  # one step: cheaper than tracing it
        trainer.fit(x, {"predictions": y, "aux_1": y, "aux_2": y}, epochs=1, batch_size=8, verbose=0)
        found.append([np.asarray(w) for w in trainer.net.weights])
    sliced, masked = found
    start = [np.asarray(w) for w in trained_like(largest).weights]
    moved = max(float(np.abs(b - s).max()) for b, s in zip(masked, start))
    # equal to float rounding: oneDNN's gradient sums run in another order from call to call (about 1e-5 of the
    # update here); a wrong channel anywhere moves a weight by the update's own size
    assert max(float(np.abs(a - b).max()) for a, b in zip(sliced, masked)) < 2e-3 * moved
    assert sum(not np.allclose(a, b) for a, b in zip(sliced, start)) > len(start) // 2  # trained, not unchanged


def test_widths_are_checked_naming_the_field():
    with pytest.raises(SpecError, match=r"elastic\.3a\.ch3x3_reduce.*at least 1"):
        ElasticWidths.from_choices({("3a", "ch3x3_reduce"): (0, 8)})
    with pytest.raises(SpecError, match=r"elastic\.3a\.ch2x2"):
        ElasticWidths.from_choices({("3a", "ch2x2"): (4, 8)})
    spec = get_spec("googlenet_mini")
    with pytest.raises(SpecError, match="train the largest network"):
        ElasticTrainer(build_model(spec), ElasticWidths.from_choices({("3a", "ch1x1"): (8, 64)}))
    with pytest.raises(SpecError, match="no module '9z'"):
        ElasticWidths.from_choices({("9z", "ch1x1"): (8, 64)}).largest(spec)
    with pytest.raises(SpecError, match=r"elastic\.stem\.pool_1.*stem convolution"):
        ElasticWidths.from_choices({("stem", "pool_1"): (8, 16)})
    with pytest.raises(SpecError, match=r"elastic\.stem\.conv2.*has conv1"):
        ElasticWidths.from_choices({("stem", "conv2"): (8, 16)}).smallest(spec)


def test_with_stem_makes_every_stem_convolution_elastic_at_its_fractions():
    mini, faithful = get_spec("googlenet_mini"), get_spec("googlenet")
    widths = ElasticWidths.from_choices({("3a", "ch1x1"): (8, 16)}).with_stem(mini)
    assert widths.choices == (("3a", "ch1x1", (8, 16)), ("stem", "conv1", (16, 24, 32)))
    assert widths.largest(mini) == mini and widths.smallest(mini).stem[0].filters == 16
    assert widths.with_stem(mini) == widths  # made again, not added twice
    stem = ElasticWidths(()).with_stem(faithful).choices  # conv1 7x7/2, conv2 1x1 reduce, conv3 3x3: 64, 64, 192
    assert stem == (("stem", "conv1", (32, 48, 64)), ("stem", "conv2", (32, 48, 64)), ("stem", "conv3", (96, 144, 192)))
    child = ElasticWidths(stem).every_width()._with(faithful, lambda values: values[len(values) // 2])
    assert [layer.filters for layer in child.stem if hasattr(layer, "filters")] == [48, 48, 144]



def quarter_to_full(spec):
    """Every module width of `spec` at 1/4, 1/2, 3/4 and 1 of its value (at least 1): {(module, width): values}."""
    choices = {}
    for name, module in zip(spec.module_names(), [m for stage in spec.stages for m in stage.modules]):
        for field, width in zip(("ch1x1", "ch3x3_reduce", "ch3x3", "ch5x5_reduce", "ch5x5", "pool_proj"),
                                module.widths):
            choices[(name, field)] = sorted({max(1, width * q // 4) for q in (1, 2, 3, 4)})
    return choices


@pytest.fixture(scope="module")
def elastic_run(digits_dir, tmp_path_factory):
    """`inception-keras train googlenet_mini --elastic SPACE` (every module width at 1/4 to 1 of googlenet_mini's),
    2 epochs, 1 random child a step, on the embedded digits: (run directory, space file)."""
    import yaml

    from inception_keras.cli import main

    base = tmp_path_factory.mktemp("elastic")
    space = base / "quarters.yaml"
    vary = [{"modules": [module], "widths": [width], "choices": values}
            for (module, width), values in quarter_to_full(get_spec("googlenet_mini")).items()]
    space.write_text(yaml.safe_dump({"name": "quarters", "base": "googlenet_mini", "vary": vary,
                                     "budget": {"max_macs": "4M"}}))
    assert main(["train", "googlenet_mini", "--elastic", str(space), "--elastic-samples", "1", "--dataset",
                 "sklearn_digits", "--data-dir", digits_dir, "--epochs", "2", "--optimizer", "adam",
                 "--learning-rate", "0.003", "--no-ema", "--out", str(base / "run")]) == 0
    return base / "run", space


def validation(digits_dir, spec):
    from inception_keras.data import load_data, make_pipeline
    from inception_keras.train import output_names

    data = load_data("sklearn_digits", digits_dir)
    x, y = next(iter(make_pipeline(data.validation, spec.input_shape, 10, 400, output_names(spec))))
    return x, np.argmax(y["predictions"], axis=-1)


def test_an_elastic_run_saves_the_network_whose_smallest_child_works_after_recalibration_alone(
        elastic_run, digits_dir, digits_run, tmp_path, capsys):
    """The benchmark's claim, tiny: after 2 elastic epochs on the embedded digits the quarter-width child from
    `inception-keras narrow` (batch norm recalibrated, nothing trained) scores far above the quarter-width child
    of a normally trained parent (digits_run: 4 epochs)."""
    import json

    import keras

    from inception_keras.cli import main
    from inception_keras.inherit import check_model_spec, recalibrate_batch_norm
    from inception_keras.serialize import save_spec
    from inception_keras.data import load_data, make_pipeline
    from inception_keras.train import output_names

    run, _ = elastic_run
    spec = get_spec("googlenet_mini")
    saved = keras.saving.load_model(run / "best.keras", safe_mode=True)
    assert type(saved).__name__ == "Functional"
    check_model_spec(saved, spec)  # the network, not the trainer
    recipe = json.loads((run / "run.json").read_text())["recipe"]
    assert recipe["elastic_samples"] == 1 and len(recipe["elastic"]["choices"]) == 30
    smallest = ElasticWidths.from_choices(quarter_to_full(spec)).smallest(spec)
    save_spec(smallest, tmp_path / "smallest.yaml")
    capsys.readouterr()
    assert main(["narrow", str(run), str(tmp_path / "smallest.yaml"), "--out", str(tmp_path / "child.keras"),
                 "--data-dir", digits_dir]) == 0
    assert "an elastic parent: the child is its first channels" in capsys.readouterr().out
    x, truth = validation(digits_dir, spec)

    def accuracy(model):
        return float(np.mean(np.argmax(model(x, training=False)["predictions"], axis=-1) == truth))

    elastic = accuracy(keras.saving.load_model(tmp_path / "child.keras", safe_mode=True))
    normal_child = narrow(keras.saving.load_model(digits_run / "best.keras", safe_mode=True), spec, smallest)
    data = load_data("sklearn_digits", digits_dir)
    recalibrate_batch_norm(normal_child, make_pipeline(data.train, spec.input_shape, 10, 64, output_names(spec))
                           .map(lambda image, label: image), 20)
    normal = accuracy(normal_child)
    assert elastic >= 0.6 and elastic >= normal + 0.3, (elastic, normal)


def test_a_search_on_an_elastic_parent_scores_its_first_channels_without_training(elastic_run, digits_dir, tmp_path):
    import json

    from inception_keras.data import load_data
    from inception_keras.train import TrainConfig
    from search.driver import run_search
    from search.space import get_space

    run, space_file = elastic_run
    outcome = run_search(get_space(str(space_file)), load_data("sklearn_digits", digits_dir), tmp_path / "search",
                         max_trials=2, epochs=1, parent=run,
                         config=TrainConfig(epochs=1, optimizer="adam", learning_rate=1e-3, ema=False))
    parent = json.loads((tmp_path / "search" / "space.json").read_text())["parent"]
    assert parent["importance"] == "first" and parent["steps"] == 0  # no training steps by default
    assert len(outcome.records) == 2
    assert all(record["val_accuracy"] >= 0.5 for record in outcome.records), outcome.records


def test_train_elastic_stem_trains_the_stem_from_half_its_filters(monkeypatch, digits_dir, tmp_path):
    from types import SimpleNamespace

    import inception_keras.cli.commands as commands
    from inception_keras.cli import main
    from inception_keras.elastic import resolve_elastic

    found = {}
    monkeypatch.setattr(commands, "run_training", lambda spec, data, out, config, **kwargs: found.update(
        spec=spec, config=config) or (None, SimpleNamespace(out_dir=str(out))))
    assert main(["train", "googlenet_mini", "--elastic", "cluttered_widths", "--elastic-stem", "--elastic-every-width",
                 "--dataset", "sklearn_digits", "--data-dir", digits_dir, "--out", str(tmp_path / "run")]) == 0
    widths = found["config"].elastic
    assert [entry for entry in widths.choices if entry[0] == "stem"] == [("stem", "conv1", tuple(range(16, 33)))]
    assert len(widths.choices) == 1 + len(resolve_elastic("cluttered_widths").choices)
    assert found["spec"].stem == get_spec("googlenet_mini").stem  # the largest network: the stem at its own width


def test_bad_elastic_arguments_are_one_line_with_exit_2(tmp_path, capsys):
    import yaml

    from inception_keras.cli import main

    zero = tmp_path / "zero.yaml"
    zero.write_text(yaml.safe_dump({"name": "zero", "base": "googlenet_mini",
                                    "vary": [{"modules": ["3a"], "widths": ["ch3x3_reduce"], "choices": [0, 8]}]}))
    cases = [(["--elastic", "no_such_space"], "no_such_space"),
             (["--elastic", str(zero)], "elastic.3a.ch3x3_reduce"),
             (["--elastic", "cluttered_widths", "--precision", "mixed_float16"], "loss scaling"),
             (["--elastic", "cluttered_widths", "--elastic-samples", "99"], "--elastic-samples"),
             (["--elastic", "cluttered_widths", "--distribute", "data_parallel"], "--distribute data_parallel"),
             (["--elastic", "cluttered_widths", "--num-processes", "2", "--process-id", "1"], "cluster options"),
             (["--elastic-every-width"], "--elastic-every-width goes with --elastic"),
             (["--elastic-stem"], "--elastic-stem goes with --elastic")]
    for extra, named in cases:
        capsys.readouterr()
        assert main(["train", "googlenet_mini", "--out", str(tmp_path / "run"), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert named in err and err.count("\n") == 0, (extra, err)
    assert not (tmp_path / "run").exists()



def test_a_search_on_an_elastic_parent_leaves_out_the_widths_it_was_not_trained_at(elastic_run, digits_dir,
                                                                                   tmp_path, capsys):
    import json

    import yaml

    from inception_keras.data import load_data
    from inception_keras.train import TrainConfig
    from search.driver import SearchError, run_search
    from search.space import get_space

    run, _ = elastic_run  # every module width at 1/4, 1/2, 3/4 and 1 of googlenet_mini's: 3a ch1x1 at 4, 8, 12, 16
    data = load_data("sklearn_digits", digits_dir)
    config = TrainConfig(epochs=1, optimizer="adam", learning_rate=1e-3, ema=False)
    space = tmp_path / "odd.yaml"
    space.write_text(yaml.safe_dump({"name": "odd", "base": "googlenet_mini", "vary": [
        {"modules": ["3a"], "widths": ["ch1x1"], "choices": [5, 8, 16]},  # 5: no child of the parent
        {"modules": ["3b"], "widths": ["ch3x3"], "choices": [16, 32]}]}))  # 3b ch3x3 (32) trained at 8-32
    run_search(get_space(str(space)), data, tmp_path / "search", max_trials=1, epochs=1, parent=run, config=config)
    assert json.loads((tmp_path / "search" / "space.json").read_text())["dimensions"] == {
        "3a_ch1x1": [8, 16], "3b_ch3x3": [16, 32]}
    assert "2 points of the space cannot inherit" in capsys.readouterr().out
    space.write_text(yaml.safe_dump({"name": "odd", "base": "googlenet_mini", "vary": [
        {"modules": ["3a"], "widths": ["ch1x1"], "choices": [5, 7]}]}))
    with pytest.raises(SearchError, match=r"3a_ch1x1.*elastic parent.*\[5, 7\].*\[4, 8, 12, 16\]"):
        run_search(get_space(str(space)), data, tmp_path / "search2", max_trials=1, epochs=1, parent=run,
                   config=config)


def test_an_elastic_step_in_mixed_bfloat16_updates_every_weight():
    import keras

    from inception_keras.train import TrainConfig, compile_model

    spec = get_spec("googlenet_mini")
    widths = ElasticWidths.from_choices({("3a", "ch1x1"): (4, 16), ("4a", "ch3x3"): (8, 48)})
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trainer = ElasticTrainer(build_model(widths.largest(spec)), widths, samples=1)
        compile_model(trainer, spec, TrainConfig(epochs=1, optimizer="adam", ema=False, precision="mixed_bfloat16"),
                      1)
        before = [np.asarray(w) for w in trainer.net.trainable_weights]
        y = tf.one_hot(np.arange(4) % 10, 10)
        loss = trainer.fit(images(spec, 4), {"predictions": y, "aux_1": y, "aux_2": y}, batch_size=4,
                           verbose=0).history["loss"]
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(loss[0]) and int(trainer.drawn.value) == 1
    assert all(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, trainer.net.trainable_weights))


def test_an_elastic_runs_widths_are_read_from_run_json_defensively(tmp_path):
    import json

    from inception_keras.serialize import elastic_choices, is_elastic_run

    cases = [({"recipe": {"elastic": {"choices": [["3a", "ch1x1", [2, 4]]]}}}, True, {("3a", "ch1x1"): (2, 4)}),
             ({"recipe": {"elastic": {"choices": [["3a", "ch1x1", ["2"]]]}}}, True, None),  # not as written
             ({"recipe": {"elastic": None}}, False, None), ({"recipe": [1]}, False, None), ([], False, None)]
    for record, elastic, choices in cases:
        (tmp_path / "run.json").write_text(json.dumps(record))
        assert (is_elastic_run(tmp_path), elastic_choices(tmp_path)) == (elastic, choices), record


@pytest.mark.parametrize("importance", ["first", "l1"])
def test_children_scored_through_masks_are_the_narrowed_children_recalibrated_and_evaluated(importance,
                                                                                            monkeypatch, tmp_path):
    """`ChildScorer`: per child, the same batch-norm statistics as `recalibrate_batch_norm` on the narrowed child
    (same batches), the same loss and accuracy as evaluating it, from two models traced once for all children; a
    widened child (l1: the demo's case) scores as narrowing gives it, its new channels' statistics left fresh; the
    statistics, saved and loaded (a search trial's checkpoint), set on the narrowed child."""
    import inception_keras.child_scoring as child_scoring
    from inception_keras.child_scoring import ChildScorer, load_statistics, save_statistics, set_statistics
    from inception_keras.inherit import recalibrate_batch_norm

    passes = []  # the masked forward runs in Python once per trace
    monkeypatch.setattr(child_scoring, "child_forward", lambda *args, **kwargs: passes.append(1) or
                        child_forward(*args, **kwargs))
    from inception_keras.train import TrainConfig, compile_model, output_names

    spec = get_spec("googlenet_mini")
    widths = mini_widths()
    largest = widths.largest(spec)
    parent = trained_like(largest)
    rng = np.random.default_rng(4)
    recalibration = tf.data.Dataset.from_tensor_slices(rng.uniform(-1, 1, (24, *spec.input_shape))
                                                       .astype("float32")).batch(8)
    x = rng.uniform(-1, 1, (20, *spec.input_shape)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, 20)]
    # batches of one size: Keras averages a multi-output model's per-output losses over batches unweighted
    validation = tf.data.Dataset.from_tensor_slices((x, {name: y for name in output_names(spec)})).batch(5)
    config = TrainConfig(epochs=1)
    scorer = ChildScorer(parent, largest, recalibration, 3, validation, config.label_smoothing, importance)
    children = [widths.smallest(spec), child_of(spec, widths, lambda values: values[len(values) // 2])
                if importance == "first" else widths.smallest(spec).with_module_widths({"4b": {"ch3x3": 80,
                                                                                              "pool_proj": 40}})]
    norms = [layer.name for layer in parent.layers if isinstance(layer, keras.layers.BatchNormalization)
             and not layer.name.startswith("aux_")]
    traced = []
    for index, child_spec in enumerate(children):
        assert scorer.supports(child_spec)
        scores = scorer.score(child_spec)
        traced.append(len(passes))
        child = narrow(parent, largest, child_spec, importance=importance)
        expected = narrow(parent, largest, child_spec, importance=importance)
        assert recalibrate_batch_norm(expected, recalibration, 3) > 0
        save_statistics(tmp_path / f"{index}.npz", scorer.statistics())
        set_statistics(child, load_statistics(tmp_path / f"{index}.npz"))
        for name in norms:
            kept = parent.get_layer(name).moving_mean.shape[0]  # a widened layer's new channels: fresh
            for got, want in zip(child.get_layer(name).non_trainable_weights,
                                 expected.get_layer(name).non_trainable_weights):
                np.testing.assert_allclose(np.asarray(got)[:kept], np.asarray(want)[:kept], rtol=1e-4, atol=1e-5,
                                           err_msg=name)
        compile_model(expected, child_spec, config, 1)
        evaluated = expected.evaluate(validation, verbose=0, return_dict=True)
        assert scores["accuracy"] == pytest.approx(evaluated["predictions_accuracy"], abs=1e-6), child_spec.name
        assert scores["loss"] == pytest.approx(evaluated["predictions_loss"], rel=1e-4)
    assert traced[0] > 2 and traced == traced[:1] * len(children)  # traced for the first child, never again
    other = largest.with_module_widths({"3a": {"ch3x3_reduce": 0}})
    assert not scorer.supports(other) and not scorer.supports(largest.with_input_size(40))
    with pytest.raises(ValueError, match="not a child"):
        scorer.score(other)
