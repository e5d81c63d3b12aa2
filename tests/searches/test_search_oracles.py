"""Oracle behaviour without training: every trial the oracles create is within budget."""

import keras_tuner as kt
import pytest

from inception_keras.train import TrainConfig
from search.budget import BudgetError, PointCost, check_feasible, cheapest
from search.space import get_space
from search.tuner import (BudgetBayesianOracle, BudgetHyperbandOracle, BudgetRandomSearchOracle,
                          InceptionHyperModel)

OBJECTIVE = kt.Objective("val_predictions_accuracy", "max")


def make_oracle(cls, space, tmp_path, point_cost=None, **kwargs):
    hp = kt.HyperParameters()
    InceptionHyperModel(space, TrainConfig(), 10, cheapest(point_cost or PointCost(space))).declare(hp)
    oracle = cls(objective=OBJECTIVE, hyperparameters=hp, tune_new_entries=False, space=space, seed=1,
                 point_cost=point_cost, **kwargs)
    oracle._set_project_dir(str(tmp_path), "oracle")
    return oracle


def run_trials(oracle, count, score=lambda values: 0.5):
    created = []
    for _ in range(count):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            break
        created.append(dict(trial.hyperparameters.values))
        oracle.update_trial(trial.trial_id, {"val_predictions_accuracy": score(trial.hyperparameters.values)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    return created


@pytest.mark.parametrize("cls, kwargs", [(BudgetRandomSearchOracle, {"max_trials": 12}),
                                         (BudgetHyperbandOracle, {"max_epochs": 9})])
def test_random_and_hyperband_only_create_trials_within_budget(cls, kwargs, tmp_path):
    space = get_space("mini_bottlenecks").with_budget(max_params=80_000)
    oracle = make_oracle(cls, space, tmp_path, **kwargs)
    cost = PointCost(space)
    created = run_trials(oracle, 12)
    assert len(created) == 12
    assert all(cost.within(values) for values in created)
    new_points = [values for values in created if values.get("tuner/round", 0) == 0]  # Hyperband also promotes
    # every draw over the budget was shrunk onto it (or drawn again where that point was tried already)
    assert oracle.rejected > 0 and oracle.screened == len(new_points) + oracle.rejected - oracle.repaired
    assert 0 < oracle.repaired <= oracle.rejected
    assert len(oracle.trials) == 12  # rejections took no trial slot


def test_draws_over_a_tight_budget_are_shrunk_onto_it_at_random_allocations(tmp_path):
    space = get_space("cluttered_widths")
    cost = PointCost(space)
    low, high = cost(cheapest(cost, (0.0, 1.0)))[1], cost({dim.name: dim.values[-1] for dim in space.dimensions})[1]
    budget = round(low + 0.2 * (high - low))  # uniform draws fall under it about never
    space = space.with_budget(max_macs=budget)
    cost = PointCost(space)
    oracle = make_oracle(BudgetRandomSearchOracle, space, tmp_path, max_trials=8, max_attempts=50)
    created = run_trials(oracle, 8)
    macs = [cost(values)[1] for values in created]
    assert len(created) == 8 and all(m <= budget for m in macs)
    assert oracle.repaired == oracle.rejected == oracle.screened == 8  # each draw was over, each was shrunk
    # just under the budget: one step of the costliest width is at most ~4 % of this budget
    assert min(macs) > 0.9 * budget
    assert len({tuple(sorted(values.items())) for values in created}) == 8  # eight different allocations
    again = make_oracle(BudgetRandomSearchOracle, space, tmp_path / "again", max_trials=8, max_attempts=50)
    assert run_trials(again, 8) == created  # the steps follow the oracle's seed


def test_sampling_that_finds_nothing_new_stops_and_says_so(tmp_path):
    space = get_space("mini_bottlenecks")
    cost = check_feasible(space)
    space = space.with_budget(max_params=cost(cheapest(cost))[0])  # only the cheapest point fits
    oracle = make_oracle(BudgetRandomSearchOracle, space, tmp_path, max_trials=5, max_attempts=300)
    assert run_trials(oracle, 5) == [cheapest(PointCost(space))]  # every draw shrinks onto it; once is new
    assert oracle.exhausted and oracle.repaired == 1 and len(oracle.trials) == 1


def test_bayesian_proposals_over_budget_are_repaired_not_resampled(tmp_path):
    space = get_space("mini_bottlenecks").with_budget(max_params=70_000)
    oracle = make_oracle(BudgetBayesianOracle, space, tmp_path, max_trials=10, num_initial_points=3)
    cost = PointCost(space)
    wider_is_better = lambda values: sum(values[d.name] for d in space.dimensions) / 500  # pushes GP over budget
    created = run_trials(oracle, 6, wider_is_better)
    assert len(created) == 6 and all(cost.within(values) for values in created)
    assert oracle.repaired >= 1
    assert oracle.screened == 3  # only the initial points were random draws


def test_a_latency_budget_screens_by_the_predicted_latency_before_any_trial(tmp_path):
    from inception_keras import network_cost

    def predicted_ms(spec):  # a stand-in predictor: 0.1 ms per million multiply-adds, plus 0.2 ms
        return 0.2 + network_cost(spec).inference_macs * 1e-7

    space = get_space("cluttered_widths").with_budget(max_latency_ms=0.85)
    space = space.with_budget(max_macs=10**12)  # the latency is the bound that matters
    cost = PointCost(space, predicted_ms)
    oracle = make_oracle(BudgetRandomSearchOracle, space, tmp_path, max_trials=6, point_cost=cost)
    created = run_trials(oracle, 6)
    assert len(created) == 6 and all(predicted_ms(space.spec_for(values)) <= 0.85 for values in created)
    assert oracle.rejected > 0
    with pytest.raises(ValueError, match="a latency budget needs a latency predictor"):
        PointCost(space)
    with pytest.raises(BudgetError, match=r"latency <= 0.2 ms on onnxruntime .* and 0\.\d+ ms predicted"):
        check_feasible(space.with_budget(max_latency_ms=0.2), PointCost(space.with_budget(max_latency_ms=0.2),
                                                                        predicted_ms))


def test_a_search_seeded_0_draws_the_same_points_every_run(tmp_path):
    """KerasTuner's oracle takes a seed of 0 for none; `make_tuner`'s seed 0 (the default) is reproducible."""
    from search.tuner import make_tuner

    space = get_space("mini_bottlenecks").with_budget(max_params=80_000)
    drawn = []
    for run in ("a", "b"):
        tuner = make_tuner("random", space, TrainConfig(), 10, tmp_path / run, max_trials=4, epochs=1, seed=0)
        assert tuner.oracle.seed == 1
        drawn.append(run_trials(tuner.oracle, 4))
    assert drawn[0] == drawn[1] and len(drawn[0]) == 4
