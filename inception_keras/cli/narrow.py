"""`inception-keras narrow`: a trained model's weights in a network of other module widths (`inception_keras.narrow`).

Keras and TensorFlow are imported inside the command once the arguments, the output path and what the specs allow
are checked, so a refusal takes a fraction of a second and `--help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inception_keras.cli.common import CommandError, check_output_file, import_tensorflow_quietly, int_between
from inception_keras.serialize import is_elastic_run
from inception_keras.utils.atomic import atomic_path


def cmd_narrow(args) -> int:
    from inception_keras.inherit_rules import NarrowError, check_inheritable
    from inception_keras.presets import resolve_spec
    from inception_keras.serialize import RunFilesError, load_spec, run_files

    out = check_output_file(args.out, args.overwrite)
    child_spec = resolve_spec(args.child_spec, "CHILD_SPEC")
    try:
        model_file, spec_file, _ = run_files(args.parent)
    except RunFilesError as error:
        raise CommandError(str(error)) from None
    if args.parent_spec:
        spec, spec_file = resolve_spec(args.parent_spec, "--parent-spec"), "--parent-spec"
    else:
        spec = load_spec(spec_file) if spec_file is not None else None
    try:
        if spec is not None:  # what the specs allow is checked before TensorFlow loads (seconds)
            check_inheritable(spec, _fitted(child_spec, spec, args.fit))
        import_tensorflow_quietly()
        return _narrow_model(args, out, model_file, spec, spec_file, child_spec)
    except NarrowError as error:
        raise CommandError(str(error)) from None


def _fitted(child_spec, spec, fit: bool):
    return child_spec.replace(input_shape=spec.input_shape, head=spec.head, aux_heads=spec.aux_heads) if fit \
        else child_spec


def _narrow_model(args, out: Path, model_file: Path, spec, spec_file, child_spec) -> int:
    import numpy as np

    from inception_keras.cost import network_cost
    from inception_keras.inherit import check_model_spec, model_spec, narrow
    from inception_keras.pretrained import WeightsError
    from inception_keras.pretrained.convert import load_keras_model

    try:
        parent = load_keras_model(model_file)
    except WeightsError as error:
        raise CommandError(str(error)) from None
    if spec is None:
        spec = model_spec(parent)
    else:
        check_model_spec(parent, spec, str(spec_file))
    child_spec = _fitted(child_spec, spec, args.fit)
    elastic = is_elastic_run(args.parent)
    child = narrow(parent, spec, child_spec, importance="first" if elastic else "l1")
    batches = args.recalibrate_batches if args.recalibrate_batches is not None else 20 if elastic else 0
    if batches and child_spec.normalization == "batch_norm":
        _recalibrate(child, child_spec, args, batches)
    images = np.random.default_rng(0).uniform(-1, 1, (2, *child_spec.input_shape)).astype("float32")
    try:
        with atomic_path(out, suffix=".keras") as tmp:
            child.save(tmp)
            before, after = child(images, training=False), load_keras_model(tmp)(images, training=False)
            if isinstance(before, dict):
                before, after = before["predictions"], after["predictions"]
            diff = float(np.abs(np.asarray(before) - np.asarray(after)).max())
            if not diff <= 1e-6:
                raise CommandError(f"{out}: the saved model reloads with different outputs (max abs diff {diff:.2e})")
    except OSError as error:
        raise CommandError(f"cannot write {out}: {error.strerror or error}") from None
    how = ("an elastic parent: the child is its first channels, usable as it is" if elastic else
           "each narrowed layer keeps its channels of largest L1 norm, widened ones start at zero in their consumers")
    print(f"{args.parent} ({spec.name}, {network_cost(spec).total_params:,} params) -> {out} ({child_spec.name}, "
          f"{network_cost(child_spec).total_params:,} params): {how}"
          f"{f'; batch norm recalibrated on {batches} training batches' if batches else ''}; "
          f"{'export it, or ' if elastic else ''}train it with `--weights {out}`")
    return 0


def _recalibrate(child, child_spec, args, batches: int) -> None:
    """Batch-norm statistics of `child` re-estimated on `batches` batches of 64 of the parent run's training data."""
    from inception_keras.data import DataError, load_data, make_pipeline
    from inception_keras.inherit import recalibrate_batch_norm
    from inception_keras.serialize import run_record_of
    from inception_keras.train import output_names

    dataset = args.dataset or (run_record_of(args.parent) or {}).get("dataset")
    if not isinstance(dataset, str):
        raise CommandError(f"{args.parent}: no run.json names its dataset; give --dataset to recalibrate batch norm "
                           f"on (or --recalibrate-batches 0)")
    try:
        data = load_data(dataset, args.data_dir)
    except DataError as error:
        raise CommandError(f"recalibrating batch norm: {error}") from None
    names = output_names(child_spec)
    images = make_pipeline(data.train, child_spec.input_shape, child_spec.head.classes, 64, names)
    recalibrate_batch_norm(child, images.map(lambda x, y: x), batches)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("narrow", help="a trained model's weights in a spec of other module widths")
    parser.add_argument("parent", metavar="MODEL", help="a training run directory or a .keras file (an imported "
                                                        "pretrained one too)")
    parser.add_argument("child_spec", metavar="CHILD_SPEC", help="a registered spec name or a YAML/JSON spec file "
                                                                 "that differs from the parent's in module widths only")
    parser.add_argument("--out", required=True, metavar="FILE.keras", help="where to write the child model")
    parser.add_argument("--parent-spec", metavar="SPEC", help="the parent's spec, when no spec.yaml is beside it and "
                                                              "it is not a registered spec's model")
    parser.add_argument("--fit", action="store_true", help="take the parent's input size, classes and aux heads for "
                                                           "the child (a registered spec of other widths)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it is a file")
    parser.add_argument("--recalibrate-batches", type=int_between(0, 10_000), metavar="N",
                        help="re-estimate batch norm on N batches of 64 training images (default: 20 from an elastic "
                             "run, whose child is then ready to export; 0 otherwise)")
    parser.add_argument("--dataset", help="the data to recalibrate on (default: the parent run's, from its run.json)")
    parser.add_argument("--data-dir", help="where that dataset is prepared (tfds data directory)")
    parser.set_defaults(func=cmd_narrow, needs_tensorflow=False)  # imported once the arguments are checked
