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
import math
import os
import sys
from importlib.metadata import entry_points

from inception_keras.cli.common import (CommandError, Parser, add_spec_arguments, import_tensorflow_quietly,
                                        positive_int, spec_from_args)
from inception_keras.utils.errors import UserError, error_text
from inception_keras.cost import network_cost
from inception_keras.presets import list_specs, resolve_spec
from inception_keras.scaling import DIVISOR
from inception_keras.serialize import parse_count, spec_to_yaml

BUILT_IN = ("inception_keras.cli.commands", "inception_keras.cli.weights", "inception_keras.cli.narrow",
            "inception_keras.cli.latency")
MESSAGE_LIMIT = 600  # characters of an error line; longer ones (an absurd argument echoed) are cut


def cmd_specs(args) -> int:
    for name in list_specs():
        cost = network_cost(resolve_spec(name))
        h, w, c = cost.input_shape
        print(f"{name:<24} input {h}x{w}x{c:<4} inference {cost.inference_params:>12,} params "
              f"{cost.inference_macs:>16,} multiply-adds")
    return 0


def cmd_spec(args) -> int:
    from inception_keras.scaling import scale_to_budget, scale_widths

    spec = resolve_spec(args.name)
    if args.width_multiplier is not None and args.fit_budget is not None:
        raise CommandError("give --width-multiplier or --fit-budget, not both")
    if args.width_multiplier is not None:
        spec = scale_widths(spec, args.width_multiplier, args.divisor)
        print(f"# {args.name} with every module and stem width scaled by {args.width_multiplier:g} (multiples of "
              f"{args.divisor})")
    elif args.fit_budget is not None:
        spec, multiplier = scale_to_budget(spec, **args.fit_budget, model=args.budget_model, divisor=args.divisor)
        cost = network_cost(spec)
        params, macs = (cost.inference_params, cost.inference_macs) if args.budget_model == "inference" else \
            (cost.total_params, cost.total_macs)
        print(f"# {args.name} scaled by {multiplier:g}, the largest width multiplier within the budget "
              f"({params:,} params, {macs:,} multiply-adds, {args.budget_model} model)")
    elif args.divisor != DIVISOR:
        raise CommandError("--divisor goes with --width-multiplier or --fit-budget")
    print(spec_to_yaml(spec), end="")
    return 0


def fit_budget(text: str) -> dict:
    """`params=60k,macs=20M`: the bounds of `spec --fit-budget`, as `scale_to_budget`'s keywords."""
    from inception_keras.spec import SpecError

    keys = {"params": "max_params", "macs": "max_macs"}
    bounds = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in keys or not value.strip():
            raise argparse.ArgumentTypeError(f"must be params=N and/or macs=N, comma-separated (e.g. params=60k), "
                                             f"got {text!r}")
        try:
            bounds[keys[key.strip()]] = parse_count(value.strip(), key.strip())
        except SpecError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return bounds


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
    spec = sub.add_parser("spec", help="print a registered spec as YAML, to start a custom one from (or scaled by a "
                                       "width multiplier)")
    spec.add_argument("name", metavar="NAME", help="a registered spec name or a YAML/JSON spec file")
    spec.add_argument("--width-multiplier", type=multiplier, metavar="A",
                      help="scale every Inception-module width and stem convolution by A (0.01 to 8), MobileNet's "
                           "width multiplier; a reduce width of 0 stays 0")
    spec.add_argument("--fit-budget", type=fit_budget, metavar="params=N,macs=N",
                      help="the largest width multiplier whose network is within these bounds, e.g. params=60k")
    spec.add_argument("--budget-model", choices=("inference", "training"), default="inference",
                      help="what --fit-budget counts: the inference model (default) or the training one (aux heads)")
    spec.add_argument("--divisor", type=positive_int, default=DIVISOR, metavar="N",
                      help=f"round scaled widths to multiples of N, at least N (default {DIVISOR}: every registered "
                           f"spec is itself at A = 1)")
    spec.set_defaults(func=cmd_spec, needs_tensorflow=False)
    summary = sub.add_parser("summary", help="Table 1-style layer table with exact params and multiply-adds")
    add_spec_arguments(summary)
    summary.add_argument("--json", action="store_true", help="print the per-layer costs as JSON")
    summary.add_argument("--batch-size", type=positive_int, default=64, help="batch of the training-memory estimate")
    summary.set_defaults(func=cmd_summary, needs_tensorflow=False)


def multiplier(text: str) -> float:
    from inception_keras.scaling import MAX_MULTIPLIER, MIN_MULTIPLIER

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not MIN_MULTIPLIER <= value <= MAX_MULTIPLIER:
        raise argparse.ArgumentTypeError(f"must be a number from {MIN_MULTIPLIER} to {MAX_MULTIPLIER:g}, got {text!r}")
    return value


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
