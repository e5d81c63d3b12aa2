import numpy as np
import pytest

from inception_keras import build_model, get_spec, inference_model, network_cost
from inception_keras.export.folding import fold_batch_norm


def randomized(model, seed=0):
    """Batch-norm statistics and affine terms away from their initial values, so folding has work to do."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if w.path.endswith(("variance", "gamma"))
                               else rng.normal(0, 0.2, w.shape) for w in layer.weights])
    return model


@pytest.mark.parametrize("name", ["googlenet_mini", "googlenet_slim"])
def test_folded_model_computes_the_same_with_no_batch_norm(name):
    spec = get_spec(name).with_input_size(64) if name != "googlenet_mini" else get_spec(name)
    model = inference_model(randomized(build_model(spec)))
    folded = fold_batch_norm(model)
    x = np.random.default_rng(1).uniform(-1, 1, (3, *spec.input_shape)).astype("float32")
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-6)
    assert not [layer for layer in folded.layers if type(layer).__name__ == "BatchNormalization"]
    cost = network_cost(spec)
    norms = sum(layer.params for layer in cost.layers(include_aux=False) if layer.type == "BatchNormalization")
    convs = sum(1 for layer in cost.layers(include_aux=False) if layer.type == "Conv2D")
    channels = sum(layer.output_shape[-1] for layer in cost.layers(include_aux=False) if layer.type == "Conv2D")
    assert convs and folded.count_params() == cost.inference_params - norms + channels  # one bias per channel


def test_a_model_without_batch_norm_is_returned_as_is():
    model = inference_model(build_model(get_spec("googlenet").with_input_size(79).with_classes(3)))
    assert fold_batch_norm(model) is model
