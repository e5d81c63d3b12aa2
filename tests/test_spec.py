import dataclasses
import json

import pytest

from inception_keras import (AuxHeadSpec, ConvSpec, InceptionSpec, NetworkSpec, SpecError, get_spec, list_specs,
                             load_spec, save_spec, spec_to_yaml)
from inception_keras.presets import GOOGLENET_TABLE1
from inception_keras.serialize import spec_from_text, spec_to_json


@pytest.mark.parametrize("name", list_specs())
def test_round_trip_dict_json_yaml(name, tmp_path):
    spec = get_spec(name)
    assert NetworkSpec.from_dict(spec.to_dict()) == spec
    assert NetworkSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    for suffix in (".yaml", ".json"):
        path = save_spec(spec, tmp_path / f"spec{suffix}")
        assert load_spec(path) == spec
    assert spec_to_yaml(load_spec(tmp_path / "spec.yaml")) == spec_to_yaml(spec)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_googlenet_widths_are_table1_in_column_order():
    spec = get_spec("googlenet")
    rows = [(name, *module.widths) for stage in spec.stages
            for name, module in zip(stage.module_names(), stage.modules)]
    assert rows == list(GOOGLENET_TABLE1)
    assert all(module.ch5x5_kernel == 5 for stage in spec.stages for module in stage.modules)
    assert [aux.after for aux in spec.aux_heads] == ["4a", "4d"]
    assert spec.normalization == "none" and spec.head.dropout == 0.4


def test_torchvision_variant_uses_3x3_in_the_5x5_branch():
    spec = get_spec("googlenet_torchvision")
    assert {module.ch5x5_kernel for stage in spec.stages for module in stage.modules} == {3}
    assert spec.stages[-1].pool.size == 2


def test_module_list_shorthand_and_yaml_float_exponent():
    data = get_spec("googlenet_mini").to_dict()
    data["stages"][0]["modules"][0] = [16, 16, 24, 4, 8, 8]
    assert NetworkSpec.from_dict(data) == get_spec("googlenet_mini")
    text = spec_to_yaml(get_spec("googlenet")).replace("alpha: 0.0001", "alpha: 1e-4")
    assert "alpha: 1e-4" in text
    assert spec_from_text(text) == get_spec("googlenet")


def _bad(mutate, base="googlenet_mini"):
    data = get_spec(base).to_dict()
    mutate(data)
    with pytest.raises(SpecError) as info:
        NetworkSpec.from_dict(data)
    return str(info.value)


def test_errors_name_the_field_path():
    def negative(d):
        d["stages"][1]["modules"][0]["ch3x3"] = -4
    assert _bad(negative) == "stages[1].modules[0].ch3x3: must be > 0, got -4"

    def unknown(d):
        d["stages"][0]["modules"][1]["ch7x7"] = 3
    assert _bad(unknown).startswith("stages[0].modules[1].ch7x7: unknown key")

    def wrong_type(d):
        d["stem"][0]["conv"]["filters"] = "wide"
    assert _bad(wrong_type) == "stem[0].conv.filters: must be an integer, got 'wide'"

    def float_width(d):
        d["stages"][0]["modules"][0]["pool_proj"] = 8.0
    assert _bad(float_width) == "stages[0].modules[0].pool_proj: must be an integer, got 8.0"

    def bool_width(d):
        d["stages"][0]["modules"][0]["ch1x1"] = True
    assert "stages[0].modules[0].ch1x1: must be an integer" in _bad(bool_width)

    def missing_aux_target(d):
        d["aux_heads"][1]["after"] = "4z"
    assert _bad(missing_aux_target).startswith("aux_heads[1].after: no module named '4z'; modules are 3a, 3b")

    def one_class(d):
        d["head"]["classes"] = 1
    assert _bad(one_class) == "head.classes: must be >= 2, got 1"

    def unknown_layer(d):
        d["stem"][1] = {"min_pool": {}}
    assert _bad(unknown_layer).startswith("stem[1]: unknown layer type 'min_pool'")

    def top_level(d):
        d["widths"] = 3
    assert _bad(top_level).startswith("widths: unknown key")

    def dropout(d):
        d["aux_heads"][0]["dropout"] = 1.5
    assert _bad(dropout) == "aux_heads[0].dropout: must be in [0.0, 1.0), got 1.5"


def test_reduce_width_zero_means_no_bottleneck_but_other_widths_must_be_positive():
    assert InceptionSpec(8, 0, 8, 0, 8, 8).ch3x3_reduce == 0
    with pytest.raises(SpecError, match="ch1x1: must be > 0, got 0"):
        InceptionSpec(0, 8, 8, 8, 8, 8)
    with pytest.raises(SpecError, match="ch5x5_reduce: must be >= 0, got -1"):
        InceptionSpec(8, 8, 8, -1, 8, 8)


def test_paper_googlenet_at_64px_is_refused_naming_aux_head_and_smallest_input():
    with pytest.raises(SpecError) as info:
        spec_from_text(spec_to_json(get_spec("googlenet").with_input_size(64)), fmt="json")
    message = str(info.value)
    assert message.startswith("aux_heads[0] (after 4a):")
    assert "got 4x4 at input 64x64" in message
    assert message.endswith("the smallest input that works is 79x79")  # Caffe geometry: ceil-mode pools


def test_smallest_input_is_exact():
    from inception_keras.cost import smallest_input_size, network_cost

    assert smallest_input_size(get_spec("googlenet")) == 79
    network_cost(get_spec("googlenet").with_input_size(79))
    with pytest.raises(SpecError):
        network_cost(get_spec("googlenet").with_input_size(78))
    assert smallest_input_size(get_spec("googlenet").without_aux()) == 31  # a 3x3 ceil-mode pool needs 2x2


def test_spec_is_frozen_and_python_construction_validates():
    spec = get_spec("googlenet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(SpecError, match="stem\\[0\\]: must be one of"):
        NetworkSpec("x", stem=("conv",))
    with pytest.raises(SpecError, match="padding: must be one of same, valid; got 'full'"):
        ConvSpec(8, 3, padding="full")
    with pytest.raises(SpecError, match="pool: must be one of avg, adaptive_avg"):
        AuxHeadSpec("4a", pool="max")


def test_spec_files_report_their_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages: [\n")
    with pytest.raises(SpecError, match=f"^{bad}: not valid YAML"):
        load_spec(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match=f"^{bad}: must be a mapping"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "missing.yaml")


def test_non_finite_wrong_typed_and_unusable_fields_are_refused(tmp_path):
    def bad(mutate):
        data = get_spec("googlenet_mini").to_dict()
        mutate(data)
        with pytest.raises(SpecError) as info:
            NetworkSpec.from_dict(data)
        return str(info.value)

    assert bad(lambda d: d["head"].update(dropout=float("nan"))) == "head.dropout: must be in [0.0, 1.0), got nan"
    assert bad(lambda d: d["aux_heads"][0].update(loss_weight=float("inf"))).startswith("aux_heads[0].loss_weight")
    assert bad(lambda d: d["stages"][1].update(pool={"lrn": {}})).startswith(
        "stages[1].pool: must be a max_pool or avg_pool")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match="not a UTF-8 text file"):
        load_spec(binary)


def test_strings_that_look_like_floats_survive_yaml():
    spec = get_spec("googlenet_mini")
    renamed = spec.replace(stages=(dataclasses.replace(spec.stages[0], name="1e5"),) + spec.stages[1:], aux_heads=())
    assert spec_from_text(spec_to_yaml(renamed)) == renamed
