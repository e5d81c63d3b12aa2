"""Subcommands that need Keras: `train`, `export`, `demo`.

Keras and TensorFlow are imported inside each command, so `inception-keras --help`,
`summary` and `specs` stay fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inception_keras.cli.common import (CommandError, add_spec_arguments, fraction, host_port,
                                        import_tensorflow_quietly, int_between, non_negative_float, non_negative_int,
                                        positive_float, positive_float_at_most, positive_int, spec_from_args)
from inception_keras.training.distribute import (BACKENDS, DEFAULT_COORDINATOR, DEFAULT_PORT, MAX_COORDINATOR_TIMEOUT,
                                                 cluster_in_environment)
from inception_keras.serialize import RUN_RECORD_FILE
from inception_keras.utils.atomic import blocking_file
from inception_keras.utils.image_header import MAX_IMAGE_PIXELS

EXPORT_FORMATS = ("saved_model", "onnx", "litert", "openvino")  # export.FORMATS, without importing TensorFlow
DEMO_DATASET = "cluttered_digits"  # the embedded target where widths matter: the demo's search inherits from this run
DEMO_EPOCHS = 4
DEMO_LEARNING_RATE = 0.003
# export.quantize's defaults and bound, known here without importing TensorFlow
DEFAULT_CALIBRATION_STEPS, DEFAULT_MAX_ACCURACY_DROP, MAX_CALIBRATION_STEPS = 20, 1.0, 10_000


def add_data_arguments(parser, default: str | None = "sklearn_digits",
                       default_help: str = "the embedded, offline sklearn_digits") -> None:
    parser.add_argument("--dataset", default=default,
                        help=f"tfds name, or folder:PATH (PATH/split/label/*.png|jpg); default: {default_help}")
    parser.add_argument("--data-dir", help="tfds data directory (default: tfds' own, ~/tensorflow_datasets)")
    parser.add_argument("--no-download", action="store_true", help="never download; fail at once if not prepared")
    parser.add_argument("--max-image-pixels", type=positive_int, default=MAX_IMAGE_PIXELS, metavar="N",
                        help="folder:PATH: refuse, before decoding, an image of more pixels (default %(default)s, "
                             "Pillow's decompression-bomb bound)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--epochs", type=positive_int, default=30)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="sgd: the paper's recipe (momentum 0.9, lr x0.96 every 8 epochs); adam")
    parser.add_argument("--learning-rate", type=positive_float, help="default 0.01 (sgd), 0.001 (adam)")
    parser.add_argument("--no-ema", action="store_true", help="turn off Polyak averaging (EMA of weights)")
    parser.add_argument("--label-smoothing", type=fraction, default=0.0)
    parser.add_argument("--augment", action="store_true", help="the paper's random crops (8-100%% area) and flips")
    parser.add_argument("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"), default="float32",
                        help="Keras mixed precision: 16-bit compute, float32 weights, LRN, softmax and losses "
                             "(mixed_bfloat16 pays on CPUs with AMX or AVX512-BF16 and recent GPUs; mixed_float16 "
                             "on GPUs, with loss scaling)")
    parser.add_argument("--jit", action="store_true", help="compile the training step with XLA (jit_compile)")


def train_config_from_args(args):
    from inception_keras.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                       learning_rate=args.learning_rate, ema=not args.no_ema, label_smoothing=args.label_smoothing,
                       augment=args.augment, early_stopping_patience=getattr(args, "early_stopping", 0) or 0,
                       precision=args.precision, jit=args.jit, elastic=getattr(args, "elastic_widths", None),
                       elastic_samples=getattr(args, "elastic_samples", 2))


def load_data_or_exit(dataset: str, data_dir: str | None, download: bool = True,
                      max_image_pixels: int = MAX_IMAGE_PIXELS):
    from inception_keras.data import DataError, load_data

    try:
        return load_data(dataset, data_dir, download=download, max_image_pixels=max_image_pixels)
    except DataError as error:
        raise CommandError(str(error)) from None


def fit_classes(spec, data, keep: bool = False):
    """`spec` with the dataset's number of classes (unless `keep`: then they must agree)."""
    from inception_keras.data import require_classes

    if keep:
        require_classes(spec.head.classes, data, f"--classes {spec.head.classes}",
                        "leave --classes out to use the dataset's")
    if spec.head.classes != len(data.class_names):
        print(f"{data.name} has {len(data.class_names)} classes: using a {len(data.class_names)}-class head")
        spec = spec.with_classes(len(data.class_names))
    return spec


def run_training(spec, data, out: Path, config, overwrite: bool = False, weights: str | None = None,
                 freeze: bool = False, fine_tune_epochs: int = 0, fine_tune_learning_rate: float | None = None,
                 distribution=None):
    from inception_keras.train import fine_tune, summary_line, train

    if freeze:
        model, result = fine_tune(spec, data, out, config, weights, fine_tune_epochs, fine_tune_learning_rate,
                                  overwrite=overwrite)
    else:
        model, result = train(spec, data, out, config, overwrite=overwrite, weights=weights,
                              distribution=distribution)
    if distribution is not None and not distribution.is_chief:
        print(f"process {distribution.process_id}: {summary_line(result)} (process 0 writes {out})")
        return model, result
    print(summary_line(result))
    print(f"best model: {result.best_model}; history: {out / 'history.csv'}; "
          f"TensorBoard logs: {out / 'logs'} (tensorboard --logdir {out / 'logs'})")
    return model, result


def export_run(run: Path, base_dir: str, name: str | None = None, images=None, format: str = "saved_model",
               int8_args: argparse.Namespace | None = None) -> None:
    """Export the best model of a run directory (or a `.keras` file); `int8_args` (the `export` command's): int8."""
    from inception_keras.export import ExportError, export_model, load_run

    try:
        dataset = _int8_dataset(int8_args, run, format) if int8_args is not None else None
        model, spec, class_names = load_run(run)
        int8 = _int8_options(int8_args, dataset, format) if int8_args is not None else None
        result = export_model(model, spec, class_names, base_dir, name, format=format, images=images, int8=int8)
    except ExportError as error:
        raise CommandError(str(error)) from None
    print(result.describe())


def _int8_dataset(args: argparse.Namespace, run: Path, format: str) -> str:
    """The dataset `export --int8` calibrates and checks on: --dataset, else the one the run trained on."""
    if format not in EXPORT_FORMATS[1:]:
        raise CommandError(f"--int8 is for {', '.join(EXPORT_FORMATS[1:])}, not {format}")
    dataset = args.dataset or _run_dataset(run)
    if dataset is None:
        raise CommandError(f"--int8 calibrates on training images and checks on validation ones: give --dataset "
                           f"(a .keras file does not record what it was trained on: {run})")
    return dataset


def _int8_options(args: argparse.Namespace, dataset: str, format: str):
    """The calibration and validation data of `export --int8`."""
    from inception_keras.export.quantize import Int8Options, require

    require(format)  # before the data is loaded
    print(f"int8: calibrating on {args.calibration_steps} batches of {dataset}'s training images")
    data = load_data_or_exit(dataset, args.data_dir, download=not args.no_download,
                             max_image_pixels=args.max_image_pixels)
    return Int8Options(data, args.calibration_steps, args.max_accuracy_drop, full_range=args.int8_full_range)


def _run_dataset(run: Path) -> str | None:
    """The dataset recorded in a run directory's run.json; None for a `.keras` file or an older run."""
    from inception_keras.serialize import RUN_RECORD_FILE, load_document
    from inception_keras.spec import SpecError

    if not (run / RUN_RECORD_FILE).is_file():
        return None
    try:
        record = load_document(run / RUN_RECORD_FILE, "run record")
    except SpecError as error:
        raise CommandError(str(error)) from None
    dataset = record.get("dataset") if isinstance(record, dict) else None
    return dataset if isinstance(dataset, str) and dataset else None


def cmd_train(args) -> int:
    from inception_keras.training.distribute import exit_on_sigterm

    exit_on_sigterm()
    spec = spec_from_args(args)
    if args.no_aux:
        spec = spec.without_aux()
    if args.elastic:
        from inception_keras.cost import network_cost
        from inception_keras.elastic import resolve_elastic

        if args.freeze or args.distribute not in ("none", "mirrored") or _cluster_flags_given(args) or \
                cluster_in_environment():
            raise CommandError("--elastic trains every weight on one device or under --distribute mirrored; leave out "
                               "--freeze, --distribute data_parallel and the cluster options")
        if args.precision == "mixed_float16":
            raise CommandError("--elastic is not tested with mixed_float16's loss scaling: use --precision float32 or "
                               "mixed_bfloat16")
        args.elastic_widths = resolve_elastic(args.elastic)
        if getattr(args, "elastic_stem", False):
            args.elastic_widths = args.elastic_widths.with_stem(spec)
        if getattr(args, "elastic_every_width", False):
            args.elastic_widths = args.elastic_widths.every_width()
        spec = args.elastic_widths.largest(spec)
        print(f"elastic training: {spec.name} at the largest widths of {args.elastic} "
              f"({network_cost(spec).total_params:,} params); each step also trains the smallest child and "
              f"{args.elastic_samples} random {'one' if args.elastic_samples == 1 else 'ones'} on its predictions")
    else:
        for option in ("elastic_every_width", "elastic_stem"):
            if getattr(args, option, False):
                raise CommandError(f"--{option.replace('_', '-')} goes with --elastic SPACE")
    if (args.freeze or args.fine_tune_epochs) and not args.weights:
        raise CommandError("--freeze and --fine-tune-epochs need --weights FILE (the pretrained base)")
    if args.fine_tune_epochs and not args.freeze:
        raise CommandError("--fine-tune-epochs is the second phase after --freeze; without --freeze everything "
                           "trains from the start")
    if args.freeze and distribution_requested(args):
        raise CommandError("--freeze runs on one device; leave out --distribute / --coordinator / --num-processes "
                           "and unset the KERAS_DISTRIBUTION_* variables")
    blocked = blocking_file(Path(args.out) / RUN_RECORD_FILE) if args.out else None
    if blocked is not None:
        raise CommandError(f"--out {args.out}: {blocked} is a file, not a directory")
    if args.weights:
        from inception_keras.pretrained import WeightsError
        from inception_keras.pretrained.convert import detect_source

        try:
            detect_source(args.weights)
        except WeightsError as error:
            raise CommandError(f"--weights: {error}") from None
    distribution = distribution_from_args(args)
    if distribution.kind != "none":
        print(f"distributed training: {distribution.describe()}; batch size {args.batch_size} is the global batch")
    if not distribution.is_chief:
        distribution.barrier("data prepared")  # process 0 prepares a tfds dataset first
    data = load_data_or_exit(args.dataset, args.data_dir, download=not args.no_download,
                             max_image_pixels=args.max_image_pixels)
    if distribution.is_chief:
        distribution.barrier("data prepared")
    spec = fit_classes(spec, data, keep=bool(args.classes))
    out = Path(args.out or Path("runs") / spec.name)
    _, result = run_training(spec, data, out, train_config_from_args(args), overwrite=args.overwrite,
                             weights=args.weights, freeze=args.freeze, fine_tune_epochs=args.fine_tune_epochs,
                             fine_tune_learning_rate=args.fine_tune_learning_rate, distribution=distribution)
    if args.export and distribution.is_chief:
        export_run(Path(result.out_dir), args.export_dir)
    return 0


def _cluster_flags_given(args) -> bool:
    return bool(args.coordinator or args.num_processes) or args.process_id is not None


def distribution_requested(args) -> bool:
    """Whether `train` is asked to go beyond one device: --distribute, a cluster flag, or any of Keras'
    KERAS_DISTRIBUTION_* variables (which describe a cluster as the flags do)."""
    return args.distribute != "none" or _cluster_flags_given(args) or cluster_in_environment()


def distribution_from_args(args):
    """--distribute, and for several processes --coordinator / --num-processes / --process-id (or Keras'
    KERAS_DISTRIBUTION_* variables): a Distribution (one device by default)."""
    from inception_keras.training.distribute import Cluster, Distribution

    if not distribution_requested(args):
        return Distribution()
    if _cluster_flags_given(args):
        if not args.num_processes or args.process_id is None:
            raise CommandError("several processes need --num-processes N and --process-id I (0 to N-1), and "
                               f"--coordinator HOST:PORT of process 0 (default {DEFAULT_COORDINATOR})")
        cluster = Cluster(args.coordinator or DEFAULT_COORDINATOR, args.num_processes, args.process_id,
                          args.coordinator_bind, args.coordinator_timeout)
    else:
        cluster = Cluster.from_environment(args.coordinator_bind, args.coordinator_timeout)
    if cluster is not None:
        if args.distribute == "mirrored":
            raise CommandError("--distribute mirrored is one process (TensorFlow); several processes use the JAX "
                               "backend's data parallelism (--backend jax)")
        return Distribution.data_parallel(cluster)
    if args.distribute == "mirrored":
        return Distribution.mirrored()
    return Distribution.data_parallel()


def cmd_export(args) -> int:
    if args.check:
        import_tensorflow_quietly()
        from inception_keras.export import check_export

        try:
            measured = check_export(args.check, args.model)
        except OSError as error:
            raise CommandError(f"{args.check}: {error}") from None
        against = args.model or "the Keras outputs stored at export"
        print(f"{args.check}: OK, {measured} against {against}")
        return 0
    if not args.run:
        raise CommandError("inception-keras export: give a training run directory, or --check DIR")
    if not args.int8 and (args.calibration_steps is not None or args.max_accuracy_drop is not None
                          or args.int8_full_range):
        raise CommandError("--calibration-steps, --max-accuracy-drop and --int8-full-range go with --int8")
    if args.int8:
        args.calibration_steps = args.calibration_steps or DEFAULT_CALIBRATION_STEPS
        if args.max_accuracy_drop is None:
            args.max_accuracy_drop = DEFAULT_MAX_ACCURACY_DROP
        _int8_dataset(args, Path(args.run), args.format)  # refused before TensorFlow loads
    if not Path(args.run).exists():
        raise CommandError(f"{args.run} does not exist: give a training run directory or a .keras file")
    import_tensorflow_quietly()
    export_run(Path(args.run), args.base_dir, args.name, format=args.format, int8_args=args if args.int8 else None)
    return 0


def cmd_demo(args) -> int:
    from inception_keras.cost import network_cost
    from inception_keras.examples import bottleneck_text
    from inception_keras.presets import get_spec
    from inception_keras.report import summary_text

    print("== 1. GoogLeNet, exactly as in the paper (cost model, no Keras)")
    print(summary_text(network_cost(get_spec("googlenet"))))
    print("\n== 2. the bottleneck example, through specs")
    print(bottleneck_text())
    print(f"\n== 3. training googlenet_mini on the embedded {DEMO_DATASET} (digits among clutter, where widths "
          f"matter; {DEMO_EPOCHS} epochs, Adam lr {DEMO_LEARNING_RATE})")
    from inception_keras.train import TrainConfig

    data = load_data_or_exit(DEMO_DATASET, args.data_dir)
    spec = fit_classes(get_spec("googlenet_mini"), data)
    config = TrainConfig(epochs=DEMO_EPOCHS, optimizer="adam", learning_rate=DEMO_LEARNING_RATE, ema=False)
    _, result = run_training(spec, data, Path(args.out), config, overwrite=True)  # the demo starts afresh
    print(f"\n== 4. export to {args.export_dir}/ and reload check")
    import numpy as np

    images = np.stack([image.numpy() for image, _ in data.validation.take(4)])
    export_run(Path(result.out_dir), args.export_dir, images=images)
    return 0


def add_distribution_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("beyond one device (see docs/scale.md)")
    group.add_argument("--backend", choices=BACKENDS, help="Keras backend (default: $KERAS_BACKEND, "
                       "else tensorflow); set before Keras loads")
    group.add_argument("--distribute", choices=("none", "mirrored", "data_parallel"), default="none",
                       help="mirrored: tf.distribute.MirroredStrategy over all local devices (TensorFlow); "
                            "data_parallel: keras.distribution.DataParallel (JAX). --batch-size is the global batch; "
                            "the learning rate is not rescaled")
    group.add_argument("--coordinator", type=host_port, metavar="HOST:PORT",
                       help="several processes (JAX): process 0's address, "
                       f"which it serves (default {DEFAULT_COORDINATOR}; the same in every process)")
    group.add_argument("--num-processes", type=positive_int, metavar="N")
    group.add_argument("--process-id", type=non_negative_int, metavar="I", help="0 to N-1; 0 writes the run directory")
    group.add_argument("--coordinator-bind", type=host_port, metavar="HOST:PORT",
                       help="where process 0 listens (default: "
                       f"--coordinator itself, so 127.0.0.1 stays local); e.g. 0.0.0.0:{DEFAULT_PORT} for other hosts")
    group.add_argument("--coordinator-timeout", type=positive_float_at_most(MAX_COORDINATOR_TIMEOUT), default=60.0,
                       metavar="SECONDS", help="how long to wait for the coordinator and the other processes "
                       f"(default 60, at most {MAX_COORDINATOR_TIMEOUT:g})")


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a spec with model.fit and the standard Keras callbacks")
    add_spec_arguments(train)
    add_train_arguments(train)
    train.add_argument("--early-stopping", type=positive_int, metavar="PATIENCE", help="stop after PATIENCE "
                       "epochs without a better validation accuracy")
    train.add_argument("--weights", metavar="FILE", help="start from these weights: a torchvision .pth, TF-slim "
                       "checkpoint, BVLC .caffemodel or .keras file; a classifier for another class count starts "
                       "fresh")
    train.add_argument("--freeze", action="store_true", help="with --weights: train only the new head(s), the base "
                       "frozen (batch norm in inference mode)")
    train.add_argument("--fine-tune-epochs", type=positive_int, default=0, metavar="N", help="after --freeze: N more "
                       "epochs training everything but batch norm, from the head phase's best model (written to "
                       "OUT/head)")
    train.add_argument("--fine-tune-learning-rate", type=positive_float, metavar="LR",
                       help="learning rate of the --fine-tune-epochs phase (default: a tenth of --learning-rate)")
    train.add_argument("--no-aux", action="store_true", help="train without the spec's aux heads")
    train.add_argument("--elastic", metavar="SPACE", help="train the largest network of a search space (registered "
                       "name or YAML file) so that every point of it, its first channels, is a model as it is "
                       "(sandwich rule, in-place distillation; one device or --distribute mirrored; see "
                       "docs/search.md)")
    train.add_argument("--elastic-samples", type=int_between(0, 16), default=2, metavar="N",
                       help="random children trained each step besides the largest and the smallest (default 2)")
    train.add_argument("--elastic-every-width", action="store_true",
                       help="draw the children's widths from every width between each one's smallest and largest "
                            "choice in the space, not from its choices alone")
    train.add_argument("--elastic-stem", action="store_true",
                       help="the stem's convolutions elastic too, at 1/2, 3/4 and 1 of their filters (every width "
                            "between with --elastic-every-width): a width multiplier narrows the stem, so train so "
                            "to take width-multiplier children (see docs/search.md)")
    add_distribution_arguments(train)
    train.add_argument("--out", help="run directory (default runs/SPEC_NAME); run again to resume")
    train.add_argument("--overwrite", action="store_true", help="start afresh: remove the run in --out, finished or "
                       "interrupted (only a run's own files; anything else there is refused)")
    train.add_argument("--export", action="store_true", help="export the best model when training ends")
    train.add_argument("--export-dir", default="saved_models")
    train.set_defaults(func=cmd_train)

    export = sub.add_parser("export", help="export a training run as a SavedModel, ONNX, LiteRT or OpenVINO model, "
                                           "verified in its runtime, or --check an export")
    export.add_argument("run", nargs="?", help="training run directory (holds best.keras, spec.yaml), or a .keras file")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="saved_model",
                        help="saved_model (TF Serving), onnx (onnxruntime), litert (TFLite interpreter), openvino; "
                             "all but saved_model need their extra: pip install inception-keras[FORMAT]")
    export.add_argument("--name", help="model name under the base directory (default: the spec's name)")
    export.add_argument("--base-dir", default="saved_models")
    export.add_argument("--check", metavar="DIR", help="reload an existing export and compare with Keras")
    export.add_argument("--model", help="with --check: a .keras model to compare with (default: stored outputs)")
    int8 = export.add_argument_group("int8 (onnx, litert, openvino; see docs/export.md)")
    int8.add_argument("--int8", action="store_true",
                      help="post-training quantization: int8 weights per channel, activations calibrated on "
                           "training images; refused if validation accuracy drops more than --max-accuracy-drop")
    int8.add_argument("--calibration-steps", type=int_between(1, MAX_CALIBRATION_STEPS), metavar="N",
                      help=f"batches of 32 training images to calibrate activation ranges on, 1 to "
                           f"{MAX_CALIBRATION_STEPS:,} (default 20)")
    int8.add_argument("--max-accuracy-drop", type=non_negative_float, metavar="POINTS",
                      help="refuse the export if its top-1 accuracy is more than POINTS below float32's (default 1)")
    int8.add_argument("--int8-full-range", action="store_true",
                      help="onnx, openvino: 8-bit weights instead of 7-bit, only for a target CPU with VNNI or AMX "
                           "(or ARM): on x86 without them (AVX2 only) 8-bit dot products saturate and lose accuracy")
    add_data_arguments(int8, None, "the dataset the run trained on (its run.json)")
    export.set_defaults(func=cmd_export, needs_tensorflow=False)  # imported once the arguments are checked

    demo = sub.add_parser("demo", help="the README's main job: train googlenet_mini on the embedded "
                                       "cluttered_digits, export, check")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--data-dir", help="tfds data directory for the embedded data")
    demo.add_argument("--export-dir", default="saved_models")
    demo.set_defaults(func=cmd_demo)
