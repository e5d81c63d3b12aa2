import dataclasses
import json
import random

import pytest

from inception_keras import (AuxHeadSpec, ConvSpec, HeadSpec, InceptionSpec, NetworkSpec, PoolSpec, SpecError,
                             StageSpec, get_spec, list_specs, load_spec, network_cost, save_spec, spec_to_yaml)
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


def _deep(stages: int, pool) -> NetworkSpec:
    module = InceptionSpec(4, 4, 4, 4, 4, 4)
    return NetworkSpec("deep", input_shape=(64, 64, 3),
                       stages=tuple(StageSpec(f"s{i}", (module,), pool) for i in range(stages)))


@pytest.mark.parametrize("stages, pool, hint", [
    (5000, PoolSpec("max", 3, 2, "ceil"), "; no input size up to 4096 works"),
    (3000, PoolSpec("max", 2, 1, "valid"), "; the smallest input that works is 3001x3001"),
])
def test_collapse_hint_takes_work_linear_in_the_depth_for_thousands_of_stages(stages, pool, hint, tmp_path,
                                                                            monkeypatch):
    from inception_keras import cost

    steps = []
    axis_size = cost._axis_size
    monkeypatch.setattr(cost, "_axis_size", lambda *args, **kwargs: steps.append(1) or axis_size(*args, **kwargs))
    spec = _deep(stages, pool)
    with pytest.raises(SpecError) as info:
        network_cost(spec)
    assert str(info.value).endswith(f"at input 64x64{hint}")
    # a binary search over sizes (13 passes over the windows), then a scan of at most 200,000 window steps: a
    # quadratic search would take stages**2 = 9-25 million
    assert len(steps) <= 13 * 2 * stages + 200_000 + 2 * stages
    data = spec.to_dict()
    for stage in data["stages"][:3000]:
        stage["modules"] = [[4] * 6]
    data["stages"] = data["stages"][:3000]
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(data))
    steps.clear()
    with pytest.raises(SpecError, match=f"^{path}: stages\\[\\d+\\]\\.pool: .*{hint}$"):
        load_spec(path)
    assert len(steps) <= 13 * 2 * 3000 + 200_000 + 2 * 3000


def _random_spec(rng: random.Random) -> NetworkSpec:
    def pool():
        return PoolSpec(rng.choice(["max", "avg"]), rng.randint(1, 5), rng.randint(1, 4),
                        rng.choice(["same", "valid", "ceil", "ceil"]))

    stem = tuple(ConvSpec(4, rng.randint(1, 7), rng.randint(1, 3), rng.choice(["same", "valid", 0, 1, 3]))
                 if rng.random() < 0.5 else pool() for _ in range(rng.randint(0, 4)))
    module = InceptionSpec(2, 2, 2, 2, 2, 2)
    stages = tuple(StageSpec(f"s{i}", (module, module), pool() if rng.random() < 0.7 else None)
                   for i in range(rng.randint(0, 4)))
    names = [name for stage in stages for name in stage.module_names()]
    aux = tuple(AuxHeadSpec(rng.choice(names), rng.choice(["avg", "adaptive_avg"]), rng.randint(1, 5),
                            rng.randint(1, 3), 2, 2) for _ in range(rng.randint(0, 2) if names else 0))
    return NetworkSpec("r", input_shape=(8, 8, 3), stem=stem, stages=stages, aux_heads=aux)


def test_smallest_input_equals_a_scan_of_every_size():
    from inception_keras.cost import _ceil_mode_size, _traces, smallest_input_size

    assert all(_ceil_mode_size(n + 1, k, s) >= _ceil_mode_size(n, k, s)  # what the binary search relies on
               for k in range(1, 9) for s in range(1, 9) for n in range(1, 100))
    rng = random.Random(0)
    for _ in range(150):
        spec = _random_spec(rng)
        scanned = next((size for size in range(1, 121) if _traces(spec.with_input_size(size))), None)
        assert smallest_input_size(spec, 120) == scanned, spec


@pytest.mark.parametrize("name, field", [
    ("a/b", "name"), ("a b", "name"), ("é", "name"), ("-a", "name"), (".a", "name"), ("..", "name"),
    ("x" * 101, "name"), ("", "name"), ("a\nb", "name"), ("a:b", "name"),
])
def test_network_names_keras_or_a_directory_cannot_take_are_refused(name, field):
    with pytest.raises(SpecError, match=f"^{field}: must be 1 to 100 ASCII letters, digits, '_', '.' or '-'"):
        get_spec("googlenet_mini").replace(name=name)


@pytest.mark.parametrize("name", ["é", "²", "٣", "模型", "a_b", "x" * 65, "4-a", ""])
def test_stage_names_keras_cannot_take_are_refused(name):
    spec = get_spec("googlenet_mini").to_dict()
    spec["stages"][0]["name"] = name
    with pytest.raises(SpecError, match=r"^stages\[0\]\.name: must be 1 to 64 ASCII letters and digits"):
        NetworkSpec.from_dict(spec)


def test_odd_but_valid_names_build_and_run():
    import numpy as np

    from inception_keras import build_model

    stage = StageSpec("X" * 64, (InceptionSpec(2, 2, 2, 2, 2, 2),))
    spec = NetworkSpec("My-net.v2_1", input_shape=(8, 8, 3), stages=(stage,), head=HeadSpec(classes=3))
    model = build_model(spec)  # predict traces a graph: TensorFlow checks every name scope
    assert model.predict(np.zeros((1, 8, 8, 3), "float32"), verbose=0).shape == (1, 3)
    assert all(NetworkSpec.from_dict(get_spec(name).to_dict()).name == name for name in list_specs())


def test_error_messages_stay_short_for_huge_values():
    def message(mutate):
        data = get_spec("googlenet_mini").to_dict()
        mutate(data)
        with pytest.raises(SpecError) as info:
            NetworkSpec.from_dict(data)
        assert len(str(info.value)) < 300
        return str(info.value)

    assert message(lambda d: d["head"].update(classes=10**5000)) == "head.classes: must be < 2**63, got an integer " \
                                                                   "of 16610 bits"
    assert message(lambda d: d["head"].update(dropout=10**5000)).startswith("head.dropout: must be in [0.0, 1.0)")
    assert message(lambda d: d.update(activation=["relu"] * 10**6)).startswith(
        "activation: must be one of relu, relu6, elu")
    assert message(lambda d: d["stages"][0].update({"x" * 10**5: 1})).startswith("stages[0].'xxxx")
    many = _deep(900, None).to_dict()
    many["aux_heads"] = [{"after": "nowhere"}]
    with pytest.raises(SpecError, match=r"modules are s0a, s1a, .*, s11a, \.\.\. \(900 in all\)$"):
        NetworkSpec.from_dict(many)


def test_adaptive_aux_pools_keras_cannot_run_are_refused():
    import numpy as np

    from inception_keras import build_model

    stage = StageSpec("3", (InceptionSpec(2, 2, 2, 2, 2, 2),))

    def spec(size, pool_size):
        return NetworkSpec("adaptive", input_shape=(size, size, 3), stages=(stage,), head=HeadSpec(classes=3),
                           aux_heads=(AuxHeadSpec("3a", "adaptive_avg", pool_size, conv_width=2, dense_width=2),))

    with pytest.raises(SpecError, match=r"^aux_heads\[0\]\.pool_size: an adaptive_avg pool to 1x1 fails in Keras"):
        network_cost(spec(8, 1))
    with pytest.raises(SpecError, match=r"^aux_heads\[0\] \(after 3a\): an adaptive average pool needs a feature map "
                                        r"of at least 2x2 .* got 1x1 at input 1x1; the smallest input that works is "
                                        r"2x2$"):
        network_cost(spec(1, 4))
    outputs = build_model(spec(2, 4)).predict(np.zeros((1, 2, 2, 3), "float32"), verbose=0)
    assert outputs["aux_1"].shape == (1, 3)
