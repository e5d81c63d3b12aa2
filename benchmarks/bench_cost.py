"""Cost model vs building the Keras model and calling count_params(), for `googlenet`.

Goal: the cost model is >= 1000x faster. Prints a table; run with `make bench`.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    print(f"{'method':<36}{'seconds':>12}")
    print(f"{'cost model (network_cost)':<36}{cost_s:>12.6f}")
    print(f"{'build_model + count_params()':<36}{keras_s:>12.6f}")
    ratio = keras_s / cost_s
    print(f"speed-up: {ratio:,.0f}x (goal >= 1000x: {'met' if ratio >= 1000 else 'NOT met'})")


if __name__ == "__main__":
    main()
