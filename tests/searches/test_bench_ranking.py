"""The pure parts of benchmarks/bench_ranking.py: candidate drawing, rank correlations, the JSON it writes.

No test runs the benchmark (it trains models for an hour)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from search.budget import PointCost
from search.space import get_space

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_ranking.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_ranking", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ranking"] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def test_candidates_same_seed_same_points_within_budget_and_spread():
    space = get_space("cluttered_bottlenecks")
    cost = PointCost(space)
    first = bench.draw_candidates(space, 10, seed=0)
    assert first == bench.draw_candidates(space, 10, seed=0)
    assert first != bench.draw_candidates(space, 10, seed=1)
    assert len({tuple(values.values()) for values in first}) == 10
    assert all(cost.within(values) for values in first)
    params = [bench.point_params(space, values) for values in first]
    assert params == sorted(params)
    narrowest, limit = bench.point_params(space, space.smallest()), space.budget.max_params
    assert params[-1] - params[0] >= 0.6 * (limit - narrowest)  # the FACTS probe's 46k-79k spanned 40 %


def test_rank_correlation_is_scipys_kendall_and_spearman():
    from scipy import stats

    proxy, reference = [0.1, 0.4, 0.3, 0.9, 0.5], [0.2, 0.5, 0.6, 0.8, 0.4]
    found = bench.rank_correlation(proxy, reference)
    assert found["kendall_tau"] == pytest.approx(stats.kendalltau(proxy, reference).statistic, abs=1e-4)
    assert found["spearman_rho"] == pytest.approx(stats.spearmanr(proxy, reference).statistic, abs=1e-4)
    assert found == {"kendall_tau": 0.4, "spearman_rho": 0.6}  # by hand: 7 concordant of 10 pairs; sum d^2 = 8
    assert bench.rank_correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == {"kendall_tau": -1.0, "spearman_rho": -1.0}
    assert bench.rank_correlation([0.5, 0.5, 0.5], [1.0, 2.0, 3.0]) == {"kendall_tau": None, "spearman_rho": None}


def test_write_results_creates_the_folder_and_refuses_nan(tmp_path):
    path = tmp_path / "results" / "bench_ranking.json"
    payload = {"candidates": [{"params": 31_118, "reference": 0.75}], "summary": {"tau": None}}
    bench.write_results(path, payload)
    assert json.loads(path.read_text()) == payload
    with pytest.raises(ValueError):
        bench.write_results(path, {"score": float("nan")})
    assert json.loads(path.read_text()) == payload
    assert sorted(p.name for p in path.parent.iterdir()) == ["bench_ranking.json"]


def test_summary_and_table_from_per_candidate_figures():
    candidates = [{"params": p, "reference": r, "reference_repeat": r2,
                   "scratch": {"mean": s, "seconds": 50.0},
                   "inherited": {"20:0:0.001": {"score": i, "seconds": 2.5}}}
                  for p, r, r2, s, i in [(30_000, 0.60, 0.61, 0.50, 0.40), (60_000, 0.70, 0.69, 0.52, 0.55),
                                         (90_000, 0.80, 0.82, 0.51, 0.70)]]
    results = {"candidates": candidates, "settings": {"20:0:0.001": "inherited: 20 BN batches, no step"},
               "args": {"proxy_epochs": 3, "proxy_seeds": [0, 1]}}
    results["summary"] = summary = bench.summarize(results)
    assert summary["proxies"]["20:0:0.001"] == {"seconds_per_candidate": 2.5,
                                                "vs_reference": {"kendall_tau": 1.0, "spearman_rho": 1.0}}
    assert summary["proxies"]["scratch"]["vs_reference"]["kendall_tau"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["reference_ceiling"] == {"kendall_tau": 1.0, "spearman_rho": 1.0}
    text = bench.table(results)
    assert "inherited: 20 BN batches, no step" in text and "0.050" in text  # 2.5 s of the scratch proxy's 50 s
    assert bench.goals(results, bench.parse_setting("20:0:0.001")).count(" met") == 3


def test_settings_parse_and_repeats_spread():
    assert bench.parse_setting("100:50:0.001") == bench.Setting(100, 50, 0.001)
    with pytest.raises(ValueError):
        bench.parse_setting("100:-1:0.001")
    assert bench.repeat_indices(10, 4) == [0, 3, 6, 9]
    assert bench.repeat_indices(3, 5) == [0, 1, 2]


def test_the_report_table_has_a_row_per_proxy_and_marks_the_default():
    results = json.loads((SCRIPT.parent / "results" / "bench_ranking.json").read_text(encoding="utf-8"))
    report = bench.markdown(results)
    table = next(section for section in report["sections"] if section.startswith("| proxy |")).splitlines()
    assert len(table) == 2 + len(results["summary"]["proxies"])
    assert [line for line in table if "(the default)" in line] == [table[4]]  # parameter count, scratch, default
    assert report["title"] and report["make"] == "bench-ranking"


def test_target_notes_judge_the_three_criteria():
    def results(base, narrow, long):
        return {"target": {"train_images": 12_000, "epochs": 3, "seeds": [0, 1],
                           "long": {"epochs": 30, "accuracy": long, "seconds": 300},
                           "base": {"params": 107_738, "scores": base, "mean": sum(base) / 2,
                                    "seed_std": abs(base[0] - base[1]) / 2},
                           "narrowest": {"params": 26_904, "scores": narrow, "mean": sum(narrow) / 2,
                                         "seed_std": abs(narrow[0] - narrow[1]) / 2}}}

    text = bench.target_notes(results([0.70, 0.72], [0.50, 0.52], 0.90))
    assert "70.0 / 72.0 %" in text and "(seeds 0 / 1," in text and "90.0 % after 30" in text and "+19.0 points" in text
    assert "mean 71.0 %" in text and "20.0 points below the base, 20.0× the larger seed std (1.0 points" in text
    assert text.count("NOT met") == 0 and text.count(": met") == 2
    assert bench.target_notes(results([0.93, 0.95], [0.90, 0.92], 0.97)).count("NOT met") == 2  # too easy, too close
    assert bench.target_notes({}) == ""
