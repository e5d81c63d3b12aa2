"""The width multiplier (`inception_keras.scaling`): rounding, identity at 1, exact costs, the largest multiplier
within a budget, and the CLI."""

import pytest
import yaml

from inception_keras import NetworkSpec, get_spec, list_specs, network_cost, scale_to_budget, scale_widths
from inception_keras.cli import main
from inception_keras.scaling import WIDTHS, scale_width
from inception_keras.spec import ConvSpec, SpecError


def widths(spec):
    stem = [layer.filters for layer in spec.stem if isinstance(layer, ConvSpec)]
    return stem + [getattr(module, name) for stage in spec.stages for module in stage.modules for name in WIDTHS]


@pytest.mark.parametrize("width, multiplier, divisor, expected", [
    (0, 2.0, 2, 0), (4, 0.1, 2, 2), (5, 1.0, 2, 6), (6, 0.5, 2, 4), (10, 0.5, 2, 6), (24, 0.5, 8, 16),
    (4, 0.5, 8, 8), (64, 1.25, 8, 80), (7, 1.0, 1, 7), (3, 0.5, 1, 2)])
def test_a_width_rounds_to_the_nearest_multiple_halves_up_at_least_the_divisor(width, multiplier, divisor, expected):
    assert scale_width(width, multiplier, divisor) == expected


@pytest.mark.parametrize("name", list_specs())
def test_every_registered_spec_is_itself_at_one(name):
    spec = get_spec(name)
    assert scale_widths(spec, 1.0) == spec.replace(name=f"{name}_x1")


def test_every_module_and_stem_width_scales_and_nothing_else():
    spec = get_spec("googlenet")
    half = scale_widths(spec, 0.5)
    assert widths(half) == [scale_width(w, 0.5) for w in widths(spec)]
    assert half.name == "googlenet_x0.5" and half.aux_heads == spec.aux_heads and half.head == spec.head
    no_bottleneck = spec.replace(stages=tuple(stage.__class__(stage.name, tuple(
        module.__class__(*module.widths[:1], 0, *module.widths[2:3], 0, *module.widths[4:]) for module in
        stage.modules), stage.pool) for stage in spec.stages))
    assert all(m.ch3x3_reduce == m.ch5x5_reduce == 0 for stage in scale_widths(no_bottleneck, 2.0).stages
               for m in stage.modules)
    for bad in (0, -1, 9, float("nan"), True, "1"):
        with pytest.raises(SpecError, match="width multiplier: must be a number from 0.01 to 8"):
            scale_widths(spec, bad)


def test_a_scaled_network_builds_with_exactly_the_counted_parameters():
    from inception_keras import build_model

    spec = scale_widths(get_spec("googlenet_mini"), 0.62, divisor=4)
    assert build_model(spec).count_params() == network_cost(spec).total_params


@pytest.mark.parametrize("bounds", [{"max_params": 60_000}, {"max_macs": 4_000_000},
                                    {"max_params": 80_000, "max_macs": 3_000_000},
                                    {"max_params": 9_000_000, "model": "training"}])
def test_the_largest_multiplier_within_a_budget(bounds):
    spec = get_spec("googlenet_mini") if "model" not in bounds else get_spec("googlenet_bn")
    scaled, multiplier = scale_to_budget(spec, **bounds)
    inference = bounds.get("model", "inference") == "inference"

    def fits(candidate):
        cost = network_cost(candidate)
        params, macs = (cost.inference_params, cost.inference_macs) if inference else (cost.total_params,
                                                                                       cost.total_macs)
        return params <= bounds.get("max_params", params) and macs <= bounds.get("max_macs", macs)

    assert scaled == scale_widths(spec, multiplier) and fits(scaled)
    assert not fits(scale_widths(spec, multiplier + 1e-4))  # the next multiplier is over


def test_a_latency_budget_takes_a_predictor_and_an_impossible_budget_says_what_it_exceeds():
    spec = get_spec("googlenet_mini")
    per_mac = 1e-6  # a predictor of 1 ms per million multiply-adds: the same answer as a multiply-add budget
    scaled, multiplier = scale_to_budget(spec, max_latency_ms=3.0,
                                         latency=lambda s: network_cost(s).inference_macs * per_mac)
    assert (scaled, multiplier) == scale_to_budget(spec, max_macs=3_000_000)
    with pytest.raises(SpecError, match="budget: even googlenet_mini scaled by 0.01 does not fit: 1,344 params > 100"):
        scale_to_budget(spec, max_params=100)
    with pytest.raises(SpecError, match="give at least one bound"):
        scale_to_budget(spec)


def test_the_spec_command_scales_and_fits_with_one_line_errors(tmp_path, capsys):
    assert main(["spec", "googlenet_mini", "--width-multiplier", "0.5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# googlenet_mini with every module and stem width scaled by 0.5")
    assert NetworkSpec.from_dict(yaml.safe_load(out)) == scale_widths(get_spec("googlenet_mini"), 0.5)
    assert main(["spec", "googlenet_mini", "--fit-budget", "params=60k", "--divisor", "4"]) == 0
    out = capsys.readouterr().out
    expected, multiplier = scale_to_budget(get_spec("googlenet_mini"), max_params=60_000, divisor=4)
    assert NetworkSpec.from_dict(yaml.safe_load(out)) == expected and f"scaled by {multiplier:g}," in out
    for argv, message in ((["--fit-budget", "watts=3"], "must be params=N and/or macs=N"),
                          (["--fit-budget", "params=-1"], "params: must be a count such as"),
                          (["--width-multiplier", "0"], "must be a number from 0.01 to 8"),
                          (["--width-multiplier", "1", "--fit-budget", "params=1M"], "not both"),
                          (["--divisor", "4"], "--divisor goes with --width-multiplier or --fit-budget"),
                          (["--fit-budget", "macs=10"], "does not fit: ")):
        assert main(["spec", "googlenet_mini", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
