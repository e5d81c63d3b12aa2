"""Cost model vs building the Keras model and calling count_params(), for `googlenet`.

Goal: the cost model is >= 1000x faster. Prints a table and writes benchmarks/results/bench_cost.json; run with
`make bench`.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import Results  # noqa: E402
from inception_keras import get_spec, network_cost  # noqa: E402


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    from inception_keras import build_model

    spec = get_spec("googlenet")
    build_model(spec)  # warm-up: imports, first-graph costs
    cost_s = best_of(lambda: network_cost(spec).total_params, 200)
    keras_s = best_of(lambda: build_model(spec).count_params(), 3)
    assert network_cost(spec).total_params == build_model(spec).count_params()
    ratio = keras_s / cost_s
    results = Results("bench_cost", "The cost model against building and counting", "bench",
                      "`benchmarks/bench_cost.py`: `network_cost(googlenet).total_params` (best of 200) against "
                      "`build_model(googlenet).count_params()` (best of 3), equal counts asserted.")
    results.add(["| method | seconds |", "|---|---:|", f"| cost model (`network_cost`) | {cost_s:.6f} |",
                 f"| `build_model` + `count_params()` | {keras_s:.4f} |"])
    results.add(f"Speed-up: **{ratio:,.0f}×** (goal ≥ 1000×: {'met' if ratio >= 1000 else 'not met'}).")
    results.figures = {"cost_model_s": cost_s, "keras_s": keras_s, "ratio": ratio}
    results.write()


if __name__ == "__main__":
    main()
