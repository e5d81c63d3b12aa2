"""`inception-keras latency SPEC|MODEL`: the latency of a network's inference model in a deployment runtime, measured
and predicted (`inception_keras.export.latency`).

TensorFlow is imported once the arguments are checked, so a refusal and `--help` stay fast.
"""

from __future__ import annotations

import argparse
import json

from inception_keras.cli.common import CommandError, import_tensorflow_quietly, int_between

RUNTIME_NAMES = ("onnxruntime", "openvino", "litert", "keras")  # export.latency.RUNTIMES, without TensorFlow
MAX_BATCH = 1024


def cmd_latency(args) -> int:
    from inception_keras.presets import resolve_spec
    from inception_keras.serialize import RunFilesError, load_spec, run_files

    spec, model_file = None, None
    try:
        model_file, spec_file, _ = run_files(args.network)
        spec = load_spec(spec_file) if spec_file is not None else None
    except RunFilesError:
        spec = resolve_spec(args.network, "SPEC")  # not a run or .keras file: a spec name or file
    import_tensorflow_quietly()
    from inception_keras.export import ExportError
    from inception_keras.export import latency

    try:
        latency.check_runtime(args.runtime)
        model = spec
        if model_file is not None:
            from inception_keras.inherit import model_spec
            from inception_keras.pretrained import WeightsError
            from inception_keras.pretrained.convert import load_keras_model

            try:
                model = load_keras_model(model_file)
            except WeightsError as error:
                raise CommandError(str(error)) from None
            spec = spec or model_spec(model)
        measured = latency.measure(model, args.runtime, args.batch)
        predictor = latency.build_predictor(spec, args.runtime, args.batch, rebuild=args.rebuild,
                                            progress=None if args.json else print)
        predicted = predictor.predict(spec.without_aux())
    except ExportError as error:
        raise CommandError(str(error)) from None
    record = {"network": args.network, "spec": spec.name, "runtime": latency.runtime_version(args.runtime),
              "batch": args.batch, "measured_median_ms": measured.median_ms, "measured_p90_ms": measured.p90_ms,
              "calls": measured.calls, "predicted_ms": predicted,
              "predicted_error": predicted / measured.median_ms - 1, "predictor": str(latency.cache_path(
                  predictor.key)), "predictor_fit": predictor.fit_error}
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"{args.network} ({spec.name}) in {record['runtime']}, batch {args.batch}: measured median "
              f"{measured.median_ms:.3f} ms, p90 {measured.p90_ms:.3f} ms ({measured.calls} calls); predicted "
              f"{predicted:.3f} ms ({record['predicted_error']:+.1%}) by {record['predictor']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("latency", help="measured and predicted latency of a network in a deployment runtime")
    parser.add_argument("network", metavar="SPEC|MODEL", help="a registered spec name, a spec file, a training run "
                                                              "directory or a .keras file")
    parser.add_argument("--runtime", choices=RUNTIME_NAMES, default="onnxruntime",
                        help="where the exported inference model runs (default onnxruntime); keras: the Keras model "
                             "itself")
    parser.add_argument("--batch", type=int_between(1, MAX_BATCH), default=1, metavar="N",
                        help="images per call (default 1)")
    parser.add_argument("--rebuild", action="store_true", help="fit the predictor again, measuring its candidates "
                                                               "now, instead of reading it from the cache")
    parser.add_argument("--json", action="store_true", help="print one JSON record")
    parser.set_defaults(func=cmd_latency, needs_tensorflow=False)
