"""The `inception-keras` command line.

Spec and cost commands import no Keras, so they answer in well under a second.
Other packages add subcommands through the `inception_keras.commands` entry-point
group (a function taking the subparsers object); `search/` adds `search` that way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import entry_points

from inception_keras.cost import network_cost, validate
from inception_keras.presets import get_spec, list_specs, resolve_spec
from inception_keras.serialize import spec_to_yaml
from inception_keras.spec import SpecError


class CommandError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CommandError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="registered spec name (see `specs`) or a .yaml/.json file")
    parser.add_argument("--input-size", type=positive_int, metavar="N", help="square input size in pixels")
    parser.add_argument("--classes", type=positive_int, metavar="N", help="number of classes")


def spec_from_args(args: argparse.Namespace):
    spec = resolve_spec(args.spec)
    if args.input_size:
        spec = spec.with_input_size(args.input_size)
    if args.classes:
        spec = spec.with_classes(args.classes)
    return validate(spec)


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
    from inception_keras.report import summary_text

    cost = network_cost(spec_from_args(args))
    print(json.dumps(cost.to_dict(), indent=2) if args.json else summary_text(cost))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="inception-keras", description="Declarative Inception networks for Keras 3.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)
    sub.add_parser("specs", help="list the registered specs").set_defaults(func=cmd_specs)
    spec = sub.add_parser("spec", help="print a registered spec as YAML, to start a custom one from")
    spec.add_argument("name", metavar="NAME")
    spec.set_defaults(func=cmd_spec)
    summary = sub.add_parser("summary", help="Table 1-style layer table with exact params and multiply-adds")
    add_spec_arguments(summary)
    summary.add_argument("--json", action="store_true", help="print the per-layer costs as JSON")
    summary.set_defaults(func=cmd_summary)
    from inception_keras import commands

    commands.register(sub)
    for entry in entry_points(group="inception_keras.commands"):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (SpecError, CommandError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
