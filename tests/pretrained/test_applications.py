import numpy as np
import pytest

from inception_keras.applications import GoogLeNet, decode_predictions, imagenet_classes, preprocess_input


def test_googlenet_from_a_slim_checkpoint_equals_tf_slim(slim_checkpoint):
    """The whole path: a checkpoint written by TensorFlow, detected, read, mapped, equal to TF-slim's outputs."""
    from helpers import EVAL_IMAGES, FIXTURES, relative_difference, synthetic, top5

    model = GoogLeNet(weights=slim_checkpoint, classifier_activation=None)
    assert model.name == "googlenet_slim" and model.output_shape == (None, 1001)
    reference = np.load(FIXTURES / "slim.npz")["logits"]
    logits = model.predict(synthetic.images(**EVAL_IMAGES), verbose=0)
    assert relative_difference(logits, reference) <= 2e-4
    np.testing.assert_array_equal(top5(logits), top5(reference))

    features = GoogLeNet(weights=slim_checkpoint + ".index", include_top=False, pooling="avg")
    assert features.output_shape == (None, 1024)
    feature_map = GoogLeNet(weights=slim_checkpoint, include_top=False, input_shape=(160, 160, 3))
    assert feature_map.output_shape == (None, 5, 5, 1024)


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=10), "classes=10 with include_top=True, but .* has a 1001-class classifier"),
    (dict(aux_heads=True), "has no aux heads"),
    (dict(spec="googlenet_torchvision"), "spec 'googlenet_torchvision' does not match"),
    (dict(aux_heads=True, include_top=False), "aux_heads=True needs include_top=True"),
    (dict(include_top=False, pooling="mean"), "pooling must be one of None, 'avg', 'max'"),
])
def test_bad_arguments_are_clear_errors(slim_checkpoint, kwargs, message):
    with pytest.raises(ValueError, match=message):
        GoogLeNet(weights=slim_checkpoint, **kwargs)


def test_without_weights_the_paper_network_and_a_keras_file_needs_a_spec(tmp_path):
    model = GoogLeNet(classes=10, input_shape=(96, 96, 3), include_top=True)
    assert model.name == "googlenet" and model.output_shape == (None, 10)
    with_aux = GoogLeNet(aux_heads=True, classes=10, input_shape=(96, 96, 3))
    assert sorted(with_aux.output_names) == ["aux_1", "aux_2", "predictions"]
    path = tmp_path / "ours.keras"
    model.save(path)
    with pytest.raises(ValueError, match="carries its own network"):
        GoogLeNet(weights=path)
    again = GoogLeNet(weights=path, spec="googlenet", classes=10, input_shape=(96, 96, 3))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_preprocess_and_decode():
    np.testing.assert_allclose(preprocess_input(np.array([[0, 127.5, 255]])), [[-1, 0, 1]])
    classes = imagenet_classes()
    assert len(classes) == 1000 and classes[0] == ("n01440764", "tench") and classes[-1][0] == "n15075141"
    preds = np.zeros((2, 1000))
    preds[0, [1, 7]] = [0.7, 0.2]
    preds[1, 999] = 1.0
    decoded = decode_predictions(preds, top=2)
    assert decoded[0] == [("n01443537", "goldfish", 0.7), ("n01514668", "cock", 0.2)]
    assert decoded[1][0][:2] == classes[999]
    slim = np.zeros((1, 1001))
    slim[0, [0, 2]] = [0.6, 0.3]  # TF-slim: index 0 is background, i is ImageNet class i - 1
    assert decode_predictions(slim, top=2)[0] == [("background", "background", 0.6), (*classes[1], 0.3)]
    with pytest.raises(ValueError, match="expects a batch of 1000"):
        decode_predictions(np.zeros((1, 10)))
