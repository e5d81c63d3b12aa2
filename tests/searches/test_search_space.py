import itertools
import random
import search.space as space_module

import pytest
import yaml

from inception_keras import SpecError, get_spec, network_cost
from search.budget import BudgetError, PointCost, check_feasible, cheapest, repair
from search.space import SearchSpace, Budget, get_space, list_spaces, load_space, parse_count, space_from_dict


@pytest.mark.parametrize("text, value", [("2.5M", 2_500_000), ("600M", 600_000_000), ("1.2G", 1_200_000_000),
                                         ("150k", 150_000), (42, 42), ("7", 7)])
def test_parse_count(text, value):
    assert parse_count(text) == value


def test_parse_count_errors():
    with pytest.raises(SpecError, match="budget: must be a count such as"):
        parse_count("lots")
    with pytest.raises(SpecError, match="must be > 0"):
        parse_count(0)


def test_spec_for_is_pure_and_sets_exactly_the_dimensions():
    space = get_space("mini_bottlenecks")
    values = {dim.name: dim.values[-1] for dim in space.dimensions}
    spec = space.spec_for(values)
    assert spec == space.spec_for(dict(values))
    module_4a = spec.stages[1].modules[0]
    assert (module_4a.ch3x3_reduce, module_4a.ch5x5_reduce, module_4a.pool_proj) == (32, 32, 32)
    assert (module_4a.ch1x1, module_4a.ch3x3, module_4a.ch5x5) == (32, 40, 16)  # not varied: as in the base
    assert space.base == get_spec("googlenet_mini")
    assert space.spec_for(space.base_values()).stages == space.base.stages


def test_space_file_with_defaults_ranges_and_errors(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"base": "googlenet_mini", "budget": {"max_params": "90k", "max_macs": "8M"},
                                    "vary": [{"modules": ["4a"], "widths": ["ch1x1"],
                                              "range": {"min": 16, "max": 48, "step": 16}}]}))
    space = load_space(path)
    assert [(d.name, d.values) for d in space.dimensions] == [("4a_ch1x1", (16, 32, 48))]
    assert space.budget == Budget(90_000, 8_000_000, "inference")
    default = space_from_dict({"base": "googlenet_mini"})
    assert len(default.dimensions) == 15 and default.dimensions[0].name == "3a_ch3x3_reduce"
    by_name = {d.name: d.values for d in default.dimensions}
    assert by_name["3a_ch3x3_reduce"] == (8, 16, 24, 32)  # base 16: multiples of 8 up to twice the base
    assert by_name["3a_pool_proj"] == (4, 8, 12, 16)  # base 8: multiples of 4

    def bad(vary, message):
        with pytest.raises(SpecError, match=message):
            space_from_dict({"base": "googlenet_mini", "vary": vary})
    bad([{"modules": ["9z"]}], r"^vary\[0\]\.modules\[0\]: no module '9z' in googlenet_mini")
    bad([{"widths": ["ch7x7"], "choices": [8]}], r"^vary\[0\]\.widths\[0\]: unknown width 'ch7x7'")
    bad([{"widths": ["pool_proj"], "choices": [0, 8]}], r"^vary\[0\]: pool_proj widths must be integers >= 1, got 0")
    bad([{"choices": [8], "range": {"min": 1, "max": 2}}], "give exactly one of choices")
    with pytest.raises(SpecError, match=r"budget.model: must be one of inference, training"):
        space_from_dict({"base": "googlenet_mini", "budget": {"model": "both"}})
    with pytest.raises(SpecError, match="neither a registered search space"):
        get_space("no_such_space")


def _random_points(space, count, seed=0):
    rng = random.Random(seed)
    return [{d.name: rng.choice(d.values) for d in space.dimensions} for _ in range(count)]


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("model", ["inference", "training"])
def test_point_cost_equals_the_cost_model(name, model):
    space = get_space(name)
    space = SearchSpace(space.name, space.base, space.dimensions, Budget(space.budget.max_params, None, model))
    cost = PointCost(space)
    for values in _random_points(space, 25) + [space.smallest(), space.base_values()]:
        exact = network_cost(space.spec_for(values))
        expected = ((exact.inference_params, exact.inference_macs) if model == "inference"
                    else (exact.total_params, exact.total_macs))
        assert cost(values) == expected


def test_cheapest_is_the_true_minimum_of_a_small_space():
    space = space_from_dict({"base": "googlenet_mini", "vary": [
        {"modules": ["3b", "4a"], "widths": ["ch3x3_reduce", "ch5x5_reduce"], "choices": [0, 4, 32]},
        {"modules": ["4a"], "widths": ["pool_proj", "ch1x1"], "choices": [4, 16]}]})
    cost = PointCost(space)
    names = [d.name for d in space.dimensions]
    points = [dict(zip(names, combo)) for combo in itertools.product(*(d.values for d in space.dimensions))]
    assert cost(cheapest(cost, (1.0, 0.0)))[0] == min(cost(p)[0] for p in points)
    assert cost(cheapest(cost, (0.0, 1.0)))[1] == min(cost(p)[1] for p in points)


def test_impossible_budget_names_the_smallest_achievable_cost():
    space = get_space("mini_bottlenecks").with_budget(max_params=30_000)
    with pytest.raises(BudgetError, match=r"impossible budget .* params <= 30,000 .* the smallest achievable is "
                                          r"37,298 params and 3,831,928 multiply-adds"):
        check_feasible(space)


def test_repair_lands_within_budget_moving_towards_the_cheapest_point():
    space = get_space("mini_bottlenecks").with_budget(max_params=60_000)
    cost = check_feasible(space)
    target = cheapest(cost)
    for values in _random_points(space, 20, seed=3):
        fixed = repair(values, cost)
        assert cost.within(fixed)
        for dim in space.dimensions:
            low, high = sorted((values[dim.name], target[dim.name]))
            assert low <= fixed[dim.name] <= high
        if cost.within(values):
            assert fixed == values


def test_widths_may_be_a_single_name_and_a_stemless_base_is_counted_exactly(tmp_path):
    space = space_from_dict({"base": "googlenet_mini", "vary": [{"widths": "pool_proj", "choices": [8, 16]}]})
    assert [d.name for d in space.dimensions][:2] == ["3a_pool_proj", "3b_pool_proj"]
    stemless = get_spec("googlenet_mini").replace(stem=())
    path = tmp_path / "stemless.yaml"
    from inception_keras import save_spec

    save_spec(stemless, path)
    space = space_from_dict({"base": str(path), "budget": {"max_params": "1M"}})
    cost = PointCost(space)
    for values in _random_points(space, 5):
        exact = network_cost(space.spec_for(values))
        assert cost(values) == (exact.inference_params, exact.inference_macs)


@pytest.mark.parametrize("value, message", [
    ("inf", "must be a count such as"), ("nan", "must be a count such as"), ("1e999", "must be a finite count"),
    (float("inf"), "must be a finite count, got inf"), (float("nan"), "must be a finite count, got nan"),
    (10**30, "must be at most 10^15"), ("9" * 30, "must be at most 10^15"), ("9" * 5000, "must be a count such as"),
    (10**5000, "must be at most 10^15, got an integer of"), ("-3", "must be a count"), (-3, "must be > 0"),
    (True, "must be a count"), ([1, 2], "must be a count such as"), (0.4, "must be > 0"),
], ids=lambda value: value[:12] if isinstance(value, str) else type(value).__name__)
def test_parse_count_refuses_non_finite_overflowing_and_odd_values(value, message):
    with pytest.raises(SpecError, match=r"^budget\.max_params: " + message.replace("^", r"\^")):
        parse_count(value, "budget.max_params")


@pytest.mark.parametrize("text, message", [
    ("budget: {max_params: .nan}", "budget.max_params: must be a finite count, got nan"),
    ("budget: {max_params: -.inf}", "budget.max_params: must be a finite count, got -inf"),
    ("budget: {max_macs: 1e999}", "budget.max_macs: must be a finite count, got inf"),
    ("budget: {max_macs: 99999999999999999999999}", "budget.max_macs: must be at most 10^15"),
    ("vary: [{widths: ch1x1, range: {min: 1, max: 1000000000000, step: 1}}]",
     "vary[0].range: would enumerate 1000000000000 widths; at most 10,000 per width"),
    ("vary: [{widths: ch1x1, range: {min: 1, max: 1e12, step: 1}}]", "vary[0].range: needs integers"),
    ("vary: [{widths: ch1x1, choices: [.inf]}]", "vary[0]: ch1x1 widths must be integers >= 1, got inf"),
    ("vary: [{widths: ch1x1, choices: [9223372036854775808]}]", "vary[0]: ch1x1 widths must be integers >= 1"),
    ("vary: [{widths: [], choices: [8]}]", "vary[0].widths: must name at least one width"),
    ("name: [1, 2]", "name: must be a name of 1 to 100 printable characters, got [1, 2]"),
    ("1: x\nzz: y", "1: unknown key; expected name, base, vary, budget"),
])
def test_space_files_refuse_bad_numbers_and_huge_ranges_with_one_line(tmp_path, monkeypatch, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(f"base: googlenet_mini\n{text}\n")
    made = []  # every range the loader builds, by length: one of 10**12 values is refused, never built

    def counted_range(*args):
        made.append(len(range(*args)))
        return range(*args)

    monkeypatch.setattr(space_module, "range", counted_range, raising=False)
    with pytest.raises(SpecError) as info:
        load_space(path)
    assert all(length <= space_module.MAX_VALUES for length in made), made
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_budget_arguments_on_the_command_line_are_one_line_errors():
    from inception_keras.cli import build_parser
    from inception_keras.cli.common import CommandError

    for value in ("inf", "nan", "1e999", "-1", "9" * 40):
        with pytest.raises(CommandError, match="argument --budget-params: must be"):
            build_parser().parse_args(["search", "--budget-params", value])
    with pytest.raises(SpecError, match=r"^budget\.max_macs: must be an integer count in 1\.\.10\^15, got inf"):
        Budget(max_macs=float("inf"))


def test_a_base_without_stages_is_refused_and_still_priced_exactly(tmp_path):
    from inception_keras import save_spec

    stageless = get_spec("googlenet_mini").replace(stages=(), aux_heads=())
    save_spec(stageless, tmp_path / "stageless.yaml")
    with pytest.raises(SpecError, match=r"^base: googlenet_mini has no stages, so no Inception module widths"):
        space_from_dict({"base": str(tmp_path / "stageless.yaml")})
    for base in (stageless, stageless.replace(stem=())):
        exact = network_cost(base)
        assert PointCost(SearchSpace("x", base, ()))({}) == (exact.inference_params, exact.inference_macs)


def test_long_base_names_still_give_valid_searched_specs():
    base = get_spec("googlenet_mini").replace(name="n" * 100)
    space = SearchSpace("long", base, space_from_dict({"base": "googlenet_mini"}).dimensions)
    assert space.spec_for(space.smallest()).name == "n" * 91 + "_searched"


def test_cluttered_widths_varies_every_width_around_the_base_and_inherits():
    import random

    from inception_keras import build_model, narrow, network_cost
    from inception_keras.inherit_rules import inheritable

    space = get_space("cluttered_widths")
    base = space.base
    assert len(space.dimensions) == 6 * len(base.module_names())  # googlenet_mini has no zero width
    modules = dict(zip(base.module_names(), (m for stage in base.stages for m in stage.modules)))
    for dim in space.dimensions:
        value = getattr(modules[dim.module], dim.width)
        assert value in dim.values and min(dim.values) == max(2, value // 2) and max(dim.values) >= value * 1.25
    cheapest = space.spec_for({dim.name: dim.values[0] for dim in space.dimensions})
    assert network_cost(cheapest).inference_macs <= space.budget.max_macs < network_cost(base).inference_macs
    rng = random.Random(0)
    point = space.spec_for({dim.name: rng.choice(dim.values) for dim in space.dimensions})
    assert inheritable(base, point)
    assert narrow(build_model(base), base, point).count_params() == network_cost(point).total_params
