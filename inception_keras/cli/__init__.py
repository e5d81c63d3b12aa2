"""The `inception-keras` command line.

Spec and cost commands import no Keras, so they answer in well under a second.
Subcommands register themselves: a module's `register(subparsers)` adds its parsers,
for the built-in modules listed in BUILT_IN and for every entry point of the
`inception_keras.commands` group (`search/` adds `search` that way).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from importlib.metadata import entry_points

from inception_keras.cli.common import (Parser, add_spec_arguments, import_tensorflow_quietly, positive_int,
                                        spec_from_args)
from inception_keras.utils.errors import UserError, error_text
from inception_keras.cost import network_cost
from inception_keras.presets import get_spec, list_specs, resolve_spec
from inception_keras.serialize import spec_to_yaml

BUILT_IN = ("inception_keras.cli.commands", "inception_keras.cli.weights", "inception_keras.cli.narrow")
MESSAGE_LIMIT = 600  # characters of an error line; longer ones (an absurd argument echoed) are cut


def cmd_specs(args) -> int:
    for name in list_specs():
        cost = network_cost(resolve_spec(name))
        h, w, c = cost.input_shape
        print(f"{name:<24} input {h}x{w}x{c:<4} inference {cost.inference_params:>12,} params "
              f"{cost.inference_macs:>16,} multiply-adds")
    return 0


def cmd_spec(args) -> int:
    print(spec_to_yaml(get_spec(args.name)), end="")
    return 0


def cmd_summary(args) -> int:
    from inception_keras.memory import estimate
    from inception_keras.report import summary_text

    cost = network_cost(spec_from_args(args))
    memory = estimate(cost, args.batch_size)
    if args.json:
        print(json.dumps({**cost.to_dict(), "memory_bytes": {
            "weights": memory.weights, "training": memory.training, "inference": memory.inference,
            "batch_size": memory.batch_size}}, indent=2))
    else:
        print(summary_text(cost))
        print(f"memory (estimated): {memory.describe()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("specs", help="list the registered specs").set_defaults(func=cmd_specs, needs_tensorflow=False)
    spec = sub.add_parser("spec", help="print a registered spec as YAML, to start a custom one from")
    spec.add_argument("name", metavar="NAME")
    spec.set_defaults(func=cmd_spec, needs_tensorflow=False)
    summary = sub.add_parser("summary", help="Table 1-style layer table with exact params and multiply-adds")
    add_spec_arguments(summary)
    summary.add_argument("--json", action="store_true", help="print the per-layer costs as JSON")
    summary.add_argument("--batch-size", type=positive_int, default=64, help="batch of the training-memory estimate")
    summary.set_defaults(func=cmd_summary, needs_tensorflow=False)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="inception-keras", description="Declarative Inception networks for Keras 3.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, required=True)
    register(sub)
    for module in BUILT_IN:
        importlib.import_module(module).register(sub)
    for entry in entry_points(group="inception_keras.commands"):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command: 0 on success, 2 and one line on bad input (any UserError), 130 on Ctrl-C.

    Anything else is a bug: one line too, exit 1, and the traceback with INCEPTION_KERAS_DEBUG=1.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "backend", None) or os.environ.get("KERAS_BACKEND"):
            from inception_keras.training.distribute import select_backend

            select_backend(getattr(args, "backend", None))
        if getattr(args, "needs_tensorflow", True):
            import_tensorflow_quietly()
        return args.func(args)
    except UserError as error:
        print(f"error: {error_text(error, MESSAGE_LIMIT)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not bad input
        if os.environ.get("INCEPTION_KERAS_DEBUG"):
            raise
        print(f"internal error: {type(error).__name__}: {error_text(error)} (rerun with INCEPTION_KERAS_DEBUG=1 "
              f"for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
