import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from inception_keras import (AuxHeadSpec, ConvSpec, HeadSpec, InceptionSpec, NetworkSpec, PoolSpec, SpecError,
                             StageSpec, get_spec, list_specs, network_cost)
from inception_keras.examples import bottleneck_example


def test_googlenet_pinned_counts():
    cost = network_cost(get_spec("googlenet"))
    assert cost.inference_params == 6_998_552
    assert cost.total_params == 13_378_280
    assert cost.inference_macs == 1_582_671_872
    assert cost.total_macs == 1_591_044_096


def test_torchvision_variant_matches_torchvision_published_count():
    # torchvision's GoogLeNet_Weights.IMAGENET1K_V1 publishes num_params 6,624,904 (aux heads dropped);
    # with aux_logits=True its parameters() total 13,004,888.
    cost = network_cost(get_spec("googlenet_torchvision"))
    assert cost.inference_trainable_params == 6_624_904
    assert cost.total_trainable_params == 13_004_888


def test_slim_variant_matches_tf_slim_variables():
    # tf_slim's inception_v1(num_classes=1001) creates 230 variables holding 6,633,209 values (no gamma in its
    # batch norm); 6,618,649 of them trainable (all but moving mean / variance)
    cost = network_cost(get_spec("googlenet_slim"))
    assert (cost.total_params, cost.total_trainable_params) == (6_633_209, 6_618_649)
    assert cost.inference_macs == 1_498_377_216


def test_caffe_geometry_keeps_the_paper_parameters():
    spec = get_spec("googlenet")
    assert spec.stem[0].padding == 3 and spec.stem[1].padding == "ceil"
    cost = network_cost(spec.replace(input_conversion="caffe"))
    assert cost.inference_params == 6_998_552 and cost.layers()[0].name == "input_conversion"


def test_bottleneck_example():
    assert bottleneck_example() == (346_816_512, 125_239_296)


def _compare_with_keras(spec):
    from inception_keras import build_model, inference_model

    cost = network_cost(spec)
    model = build_model(spec)
    assert model.count_params() == cost.total_params
    assert inference_model(model).count_params() == cost.inference_params
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == cost.total_trainable_params
    layers = {layer.name: layer for layer in model.layers}
    rows = cost.layers()
    assert {row.name for row in rows} == set(layers) - {"image"}
    for row in rows:
        assert layers[row.name].count_params() == row.params, row.name
        assert tuple(layers[row.name].output.shape[1:]) == tuple(row.output_shape), row.name
        assert type(layers[row.name]).__name__ == row.type, row.name


@pytest.mark.parametrize("name", list_specs())
def test_cost_model_equals_keras_for_every_preset(name):
    _compare_with_keras(get_spec(name))
    _compare_with_keras(get_spec(name).without_aux())


widths = st.integers(1, 6)


@st.composite
def random_specs(draw):
    stem = []
    for _ in range(draw(st.integers(0, 2))):
        padding = draw(st.sampled_from(["same", "valid", 0, 1, 2]))
        stem.append(ConvSpec(draw(widths), draw(st.sampled_from([1, 3, 5])), draw(st.integers(1, 2)), padding))
        if draw(st.booleans()):
            stem.append(PoolSpec(draw(st.sampled_from(["max", "avg"])), draw(st.integers(1, 3)),
                                 draw(st.integers(1, 2)), draw(st.sampled_from(["same", "valid", "ceil"]))))
    stages = []
    for s in range(draw(st.integers(1, 2))):
        modules = tuple(InceptionSpec(draw(widths), draw(st.integers(0, 4)), draw(widths), draw(st.integers(0, 4)),
                                      draw(widths), draw(widths), ch5x5_kernel=draw(st.sampled_from([3, 5])),
                                      pool=draw(st.sampled_from(["max", "avg"])), pool_size=draw(st.integers(1, 3)))
                        for _ in range(draw(st.integers(1, 2))))
        pool = PoolSpec("max", draw(st.integers(2, 3)), 2, draw(st.sampled_from(["same", "ceil"]))) \
            if s and draw(st.booleans()) else None
        stages.append(StageSpec(str(s + 3), modules, pool))
    names = [f"{stage.name}{chr(97 + i)}" for stage in stages for i in range(len(stage.modules))]
    aux = tuple(AuxHeadSpec(draw(st.sampled_from(names)), draw(st.sampled_from(["avg", "adaptive_avg"])),
                            draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(widths), draw(widths))
                for _ in range(draw(st.integers(0, 2))))
    size, channels = draw(st.integers(8, 24)), draw(st.integers(1, 3))
    return NetworkSpec("random", input_shape=(size, size, channels),
                       input_conversion=draw(st.sampled_from(["none", "caffe"])) if channels == 3 else "none",
                       normalization=draw(st.sampled_from(["none", "batch_norm"])), bn_scale=draw(st.booleans()),
                       stem=tuple(stem),
                       stages=tuple(stages), aux_heads=aux, head=HeadSpec(0.1, draw(st.integers(2, 5))))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(random_specs())
def test_cost_model_equals_keras_for_random_specs(spec):
    try:
        network_cost(spec)
    except SpecError:
        assume(False)
    _compare_with_keras(spec)


def test_collapsing_stem_is_refused_with_smallest_input():
    spec = NetworkSpec("tiny", input_shape=(4, 4, 3), stem=(ConvSpec(4, 7, padding="valid"),),
                       stages=(StageSpec("3", (InceptionSpec(1, 0, 1, 0, 1, 1),)),))
    with pytest.raises(SpecError, match=r"^stem\[0\]: a 7x7 window .* got 4x4 at input 4x4; "
                                        r"the smallest input that works is 7x7$"):
        network_cost(spec)


def test_ceil_pooling_without_an_exact_keras_padding_is_refused():
    stem = (ConvSpec(4, 1), PoolSpec("max", 3, 3, "ceil"))
    stages = (StageSpec("3", (InceptionSpec(1, 0, 1, 0, 1, 1),)),)
    spec = NetworkSpec("ceil", input_shape=(10, 10, 3), stem=stem, stages=stages)
    with pytest.raises(SpecError, match=r"^stem\[1\]: ceil-mode 3x3/3 pooling of a 10x10 feature map has no exact "
                                        r"Keras equivalent"):
        network_cost(spec)
    assert network_cost(spec.with_input_size(12)).blocks[1].output_shape == (4, 4, 4)  # 'valid' is exact there
