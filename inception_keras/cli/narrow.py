"""`inception-keras narrow`: a trained model's weights in a network of other module widths (`inception_keras.narrow`).

Keras and TensorFlow are imported inside the command, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inception_keras.cli.common import CommandError
from inception_keras.utils.atomic import atomic_path


def cmd_narrow(args) -> int:
    import numpy as np

    from inception_keras.cost import network_cost
    from inception_keras.export import ExportError, load_run
    from inception_keras.inherit import model_spec, narrow
    from inception_keras.presets import resolve_spec
    from inception_keras.pretrained.convert import load_keras_model

    out = Path(args.out)
    if out.suffix != ".keras":
        raise CommandError(f"--out {out}: the file name must end in .keras")
    if out.exists() and not out.is_file():
        raise CommandError(f"--out {out} exists and is not a file")
    if out.exists() and not args.overwrite:
        raise CommandError(f"{out} exists; give another --out, or --overwrite")
    child_spec = resolve_spec(args.child_spec, "CHILD_SPEC")
    try:
        parent, spec, _ = load_run(args.parent)
    except ExportError as error:
        raise CommandError(str(error)) from None
    if args.parent_spec:
        spec = resolve_spec(args.parent_spec, "--parent-spec")
    spec = spec or model_spec(parent)
    child_spec = child_spec.replace(input_shape=spec.input_shape, head=spec.head, aux_heads=spec.aux_heads) \
        if args.fit else child_spec
    child = narrow(parent, spec, child_spec)
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
    print(f"{args.parent} ({spec.name}, {network_cost(spec).total_params:,} params) -> {out} ({child_spec.name}, "
          f"{network_cost(child_spec).total_params:,} params): each narrowed layer keeps its channels of largest "
          f"L1 norm, widened ones start at zero in their consumers; train it with `--weights {out}`")
    return 0


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
    parser.set_defaults(func=cmd_narrow)
