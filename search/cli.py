"""`inception-keras search ...` and `inception-keras search report DIR`, added through the
`inception_keras.cli.commands` entry point (inception_keras never imports search)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from inception_keras.cli.common import (CommandError, import_tensorflow_quietly, int_between, non_negative_int,
                                        positive_float, positive_int)
from inception_keras.cli.commands import add_train_arguments, fit_classes, load_data_or_exit
from inception_keras.cli.commands import train_config_from_args

DEFAULT_PORT = 8000
MAX_STEPS = 100_000  # a trial's training steps with --parent: 100 epochs of 60,000 images at batch 64
MAX_RECALIBRATE_BATCHES = 10_000
MAX_PORT = 65535


def _count(text: str) -> int:
    from inception_keras.spec import SpecError

    from search.space import parse_count

    try:
        return parse_count(text)
    except SpecError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    except (OverflowError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a finite count such as 2500000, 2.5M or 600M; "
                                         f"got {text!r}") from None


def _milliseconds(text: str) -> float | tuple[str, float]:
    """1.2ms -> 1.2; 0.6x -> ("x", 0.6): a fraction of the base network's predicted latency."""
    from inception_keras.spec import SpecError

    from search.space import parse_milliseconds

    if text.strip().endswith("x"):
        try:
            fraction = float(text.strip()[:-1])
        except ValueError:
            fraction = 0.0
        if not 0 < fraction <= 1:
            raise argparse.ArgumentTypeError(f"a fraction of the base's latency must be in (0, 1], e.g. 0.6x; got "
                                             f"{text!r}")
        return "x", fraction
    try:
        return parse_milliseconds(text, "--budget-latency")
    except SpecError as error:
        raise argparse.ArgumentTypeError(error.message) from None


def _port(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be a port number 1-{MAX_PORT}, got {text!r}")
    return value


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def cmd_search(args) -> int:
    if args.action:
        if args.action[0] != "report" or len(args.action) != 2:
            raise CommandError("usage: inception-keras search [options] | inception-keras search report DIR [--export]")
        return cmd_report(Path(args.action[1]), args)  # JSON and matplotlib: no TensorFlow unless --export
    import_tensorflow_quietly()
    from search.budget import BudgetError
    from search.driver import DEFAULT_RECALIBRATE_BATCHES, configure_distributed, run_search
    from search.space import get_space

    if not args.space:
        raise CommandError("inception-keras search: --space FILE|NAME is required (registered: see `search --help`)")
    try:
        configure_distributed(args.role, args.tuner_id, args.oracle_ip, args.oracle_port)
    except ValueError as error:
        raise CommandError(str(error)) from None
    absolute = args.budget_latency if not isinstance(args.budget_latency, tuple) else None
    space = get_space(args.space).with_budget(args.budget_params, args.budget_macs, absolute, args.runtime)
    latency_fraction = args.budget_latency[1] if isinstance(args.budget_latency, tuple) else None
    if args.runtime and space.budget.max_latency_ms is None and latency_fraction is None:
        raise CommandError("--runtime is where a latency budget is measured: give --budget-latency too (or a space "
                           "whose budget has max_latency_ms)")
    base = space.base.with_input_size(args.input_size) if args.input_size else space.base
    data = load_data_or_exit(args.dataset, args.data_dir, download=not args.no_download,
                             max_image_pixels=args.max_image_pixels)
    space = space.with_base(fit_classes(base, data))
    if not args.parent and (args.steps is not None or args.recalibrate_batches is not None):
        raise CommandError("--steps and --recalibrate-batches go with --parent (a model every trial inherits from)")
    inherit = {} if not args.parent else {"parent": args.parent, "steps": args.steps, "recalibrate_batches":
                                          DEFAULT_RECALIBRATE_BATCHES if args.recalibrate_batches is None
                                          else args.recalibrate_batches}
    try:
        run_search(space, data, args.dir, tuner=args.tuner, max_trials=args.max_trials, epochs=args.epochs,
                   config=train_config_from_args(args), overwrite=args.overwrite, seed=args.seed,
                   initial_points=args.initial_points, mirrored=args.distribute == "mirrored", timeout=args.timeout,
                   verbose=2 if args.verbose else 0, executions_per_trial=args.executions_per_trial,
                   latency_fraction=latency_fraction, **inherit)
    except BudgetError as error:
        raise CommandError(str(error)) from None
    if args.export and "KERASTUNER_ORACLE_IP" not in os.environ:
        return cmd_report(Path(args.dir), args, print_table=False)
    return 0


def cmd_report(directory: Path, args, print_table: bool = True) -> int:
    """Print and write the results of a search directory (and export its best model with --export).

    A damaged trial record is skipped with a warning; a directory with no finished trial yet is
    an error (exit 2) and nothing is written.
    """
    from search.report import read_baseline, read_budget, read_parent, read_records, report_text, write_results

    if not (directory / "records").is_dir():
        raise CommandError(f"{directory} holds no search (no records/ directory)")
    records = read_records(directory)
    written = write_results(directory, records)
    if print_table:
        print(report_text(records, read_budget(directory), read_parent(directory, warn_damaged=False),
                          read_baseline(directory, warn_damaged=False)))
        print(f"written: {', '.join(str(path) for path in written)}")
    if args.export:
        import_tensorflow_quietly()
        from search.budget import BudgetError
        from search.driver import export_best

        from inception_keras.export import ExportError

        try:
            print(export_best(directory, args.export_dir).describe())
        except (BudgetError, ExportError, OSError, ValueError) as error:
            raise CommandError(f"cannot export the best trial of {directory}: {error}") from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from search.space import LATENCY_RUNTIMES, list_spaces

    parser = sub.add_parser(
        "search", help="budgeted architecture search over bottleneck widths (KerasTuner); `search report DIR`",
        description="Search widths under a params / multiply-adds budget, screened by the exact cost model "
                    "before any trial. `inception-keras search report DIR [--export]` prints and writes the "
                    "results of a search directory (a damaged trial record is skipped with a warning; with no "
                    "finished trial yet it exits 2 and writes nothing).")
    parser.add_argument("action", nargs="*", help="`report DIR` to report on an existing search")
    parser.add_argument("--space", help=f"search space: a YAML/JSON file or one of {', '.join(list_spaces())}")
    parser.add_argument("--budget-params", type=_count, metavar="N", help="max parameters, e.g. 2.5M")
    parser.add_argument("--budget-macs", type=_count, metavar="N", help="max multiply-adds, e.g. 600M")
    parser.add_argument("--budget-latency", type=_milliseconds, metavar="MS",
                        help="max latency of the inference model at batch 1 in --runtime on this machine, e.g. 1.2ms, "
                             "or 0.6x: that fraction of the base network's predicted latency here; candidates are "
                             "screened by a predictor fitted once per machine and runtime, each trial's latency is "
                             "then measured")
    parser.add_argument("--runtime", choices=LATENCY_RUNTIMES, help="where --budget-latency is measured "
                                                                    "(default onnxruntime)")
    parser.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="random")
    parser.add_argument("--max-trials", type=positive_int, default=10)
    parser.add_argument("--initial-points", type=positive_int, help="bayesian: random trials before the GP")
    parser.add_argument("--input-size", type=positive_int, metavar="N", help="square input size of the base spec")
    add_train_arguments(parser)
    parser.set_defaults(epochs=3)
    parser.add_argument("--dir", type=_non_empty, default="runs/search", help="search directory (run again to resume)")
    parser.add_argument("--overwrite", action="store_true", help="start afresh, deleting the search in --dir (only a "
                        "search's own files; anything else there is refused)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--distribute", choices=("none", "mirrored"), default="none",
                        help="mirrored: train each trial with tf.distribute.MirroredStrategy over all local devices "
                             "(--batch-size is the global batch); more machines: --role chief/worker")
    parser.add_argument("--mirrored", action="store_const", const="mirrored", dest="distribute",
                        help=argparse.SUPPRESS)  # the flag's earlier name
    parser.add_argument("--role", choices=("chief", "worker"), help="distributed search: this process's role")
    parser.add_argument("--tuner-id", help="worker id, unique per worker (restart a dead worker with the same id)")
    parser.add_argument("--oracle-ip", type=_non_empty, default=os.environ.get("KERASTUNER_ORACLE_IP", "127.0.0.1"),
                        help="chief address; the chief binds to it (default 127.0.0.1)")
    parser.add_argument("--oracle-port", type=_port,
                        default=os.environ.get("KERASTUNER_ORACLE_PORT", str(DEFAULT_PORT)))
    parser.add_argument("--timeout", type=positive_float, metavar="SECONDS",
                        help="give up (exit 124) if not done by then; a worker waits that long (at most "
                             "5 minutes) for its chief")
    parser.add_argument("--parent", metavar="RUN_DIR|MODEL.keras",
                        help="every trial inherits the weights of this trained model of the space's base spec "
                             "(narrowed by channel importance), recalibrates batch norm, then trains")
    parser.add_argument("--recalibrate-batches", type=int_between(0, MAX_RECALIBRATE_BATCHES), default=None,
                        metavar="N", help="with --parent: training batches to re-estimate batch-norm statistics on, "
                        f"0 to {MAX_RECALIBRATE_BATCHES:,} (default 20; none for specs without batch norm)")
    parser.add_argument("--steps", type=int_between(0, MAX_STEPS), metavar="N",
                        help=f"with --parent: train each trial N steps (0 to {MAX_STEPS:,}) instead of --epochs "
                             "epochs; 0: score it after recalibration alone (ranked best and cheapest in make "
                             "bench-ranking)")
    parser.add_argument("--executions-per-trial", type=positive_int, default=1, metavar="N",
                        help="train each trial N times; its score is the mean (records keep the std)")
    parser.add_argument("--export", action="store_true", help="export the best model when done (or with report)")
    parser.add_argument("--export-dir", type=_non_empty, default="saved_models")
    parser.add_argument("--verbose", action="store_true", help="Keras progress lines inside each trial")
    parser.set_defaults(func=cmd_search, needs_tensorflow=False)  # `search report` needs none
