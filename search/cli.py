"""`inception-keras search ...` and `inception-keras search report DIR`, added through the
`inception_keras.commands` entry point (inception_keras never imports search)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from inception_keras.cli_common import CommandError, positive_int
from inception_keras.commands import add_train_arguments, fit_classes, load_data_or_exit
from inception_keras.commands import train_config_from_args

DEFAULT_PORT = 8000


def _count(text: str) -> int:
    from inception_keras.spec import SpecError

    from search.space import parse_count

    try:
        return parse_count(text)
    except SpecError as error:
        raise argparse.ArgumentTypeError(error.message) from None


def cmd_search(args) -> int:
    if args.action:
        if args.action[0] != "report" or len(args.action) != 2:
            raise CommandError("usage: inception-keras search [options] | inception-keras search report DIR [--export]")
        return cmd_report(Path(args.action[1]), args)
    from search.budget import BudgetError
    from search.driver import configure_distributed, run_search
    from search.space import get_space

    if not args.space:
        raise CommandError("inception-keras search: --space FILE|NAME is required (registered: see `search --help`)")
    try:
        configure_distributed(args.role, args.tuner_id, args.oracle_ip, args.oracle_port)
    except ValueError as error:
        raise CommandError(str(error)) from None
    space = get_space(args.space).with_budget(args.budget_params, args.budget_macs)
    base = space.base.with_input_size(args.input_size) if args.input_size else space.base
    data = load_data_or_exit(args.dataset, args.data_dir, download=not args.no_download)
    space = space.with_base(fit_classes(base, data))
    try:
        run_search(space, data, args.dir, tuner=args.tuner, max_trials=args.max_trials, epochs=args.epochs,
                   config=train_config_from_args(args), overwrite=args.overwrite, seed=args.seed,
                   initial_points=args.initial_points, mirrored=args.mirrored, timeout=args.timeout,
                   verbose=2 if args.verbose else 0)
    except BudgetError as error:
        raise CommandError(str(error)) from None
    if args.export and "KERASTUNER_ORACLE_IP" not in os.environ:
        return cmd_report(Path(args.dir), args, print_table=False)
    return 0


def cmd_report(directory: Path, args, print_table: bool = True) -> int:
    import json

    from search.report import report_text, write_results

    if not (directory / "records").is_dir():
        raise CommandError(f"{directory} holds no search (no records/ directory)")
    records = write_results(directory)
    if print_table:
        space_file = directory / "space.json"
        budget = json.loads(space_file.read_text())["budget"] if space_file.exists() else ""
        print(report_text(records, budget))
        print(f"written: {directory}/results.json, results.csv, pareto.png, best_spec.yaml")
    if args.export:
        from search.budget import BudgetError
        from search.driver import export_best

        from inception_keras.export import ExportError

        try:
            print(export_best(directory, args.export_dir).describe())
        except (BudgetError, ExportError, OSError, ValueError) as error:
            raise CommandError(f"cannot export the best trial of {directory}: {error}") from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from search.space import list_spaces

    parser = sub.add_parser(
        "search", help="budgeted architecture search over bottleneck widths (KerasTuner); `search report DIR`",
        description="Search widths under a params / multiply-adds budget, screened by the exact cost model "
                    "before any trial. `inception-keras search report DIR [--export]` prints and writes the "
                    "results of a search directory.")
    parser.add_argument("action", nargs="*", help="`report DIR` to report on an existing search")
    parser.add_argument("--space", help=f"search space: a YAML/JSON file or one of {', '.join(list_spaces())}")
    parser.add_argument("--budget-params", type=_count, metavar="N", help="max parameters, e.g. 2.5M")
    parser.add_argument("--budget-macs", type=_count, metavar="N", help="max multiply-adds, e.g. 600M")
    parser.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="random")
    parser.add_argument("--max-trials", type=positive_int, default=10)
    parser.add_argument("--initial-points", type=positive_int, help="bayesian: random trials before the GP")
    parser.add_argument("--input-size", type=positive_int, metavar="N", help="square input size of the base spec")
    add_train_arguments(parser)
    parser.set_defaults(epochs=3)
    parser.add_argument("--dir", default="runs/search", help="search directory (run again to resume)")
    parser.add_argument("--overwrite", action="store_true", help="start afresh, deleting the search in --dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mirrored", action="store_true", help="train each trial with tf.distribute.MirroredStrategy")
    parser.add_argument("--role", choices=("chief", "worker"), help="distributed search: this process's role")
    parser.add_argument("--tuner-id", help="worker id, unique per worker (restart a dead worker with the same id)")
    parser.add_argument("--oracle-ip", default=os.environ.get("KERASTUNER_ORACLE_IP", "127.0.0.1"),
                        help="chief address; the chief binds to it (default 127.0.0.1)")
    parser.add_argument("--oracle-port", type=positive_int,
                        default=os.environ.get("KERASTUNER_ORACLE_PORT", str(DEFAULT_PORT)))
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="give up (exit 124) if not done by then")
    parser.add_argument("--export", action="store_true", help="export the best model when done (or with report)")
    parser.add_argument("--export-dir", default="saved_models")
    parser.add_argument("--verbose", action="store_true", help="Keras progress lines inside each trial")
    parser.set_defaults(func=cmd_search)
