"""Subcommands that need Keras: `demo` (more join as training and export land).

Keras is imported inside each command, so `inception-keras --help`, `summary` and
`specs` stay fast.
"""

from __future__ import annotations

import argparse


def cmd_demo(args) -> int:
    from inception_keras.cost import network_cost
    from inception_keras.examples import bottleneck_text
    from inception_keras.presets import get_spec
    from inception_keras.report import summary_text

    spec = get_spec("googlenet")
    cost = network_cost(spec)
    print(summary_text(cost))
    print("\n== building googlenet with Keras")
    from inception_keras.builder import build_model, inference_model

    model = build_model(spec)
    inference = inference_model(model)
    print(f"training model:  {model.count_params():,} params, outputs {sorted(model.output)} "
          f"(cost model: {cost.total_params:,})")
    print(f"inference model: {inference.count_params():,} params (cost model: {cost.inference_params:,})")
    if (model.count_params(), inference.count_params()) != (cost.total_params, cost.inference_params):
        print("MISMATCH between Keras and the cost model")
        return 1
    print("\n== the bottleneck example")
    print(bottleneck_text())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the README's main job on the embedded default")
    demo.set_defaults(func=cmd_demo)
