"""Subcommands for pretrained weights: `weights import` (convert once to `.keras`) and `predict`.

Keras and TensorFlow are imported inside each command, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inception_keras.cli.common import CommandError, check_output_file, error_text, positive_int
from inception_keras.utils.atomic import atomic_path
from inception_keras.utils.files import file_problem
from inception_keras.utils.image_header import MAX_IMAGE_PIXELS, image_problem

IMAGENET_CROP = 0.875  # 224 of 256: the central crop torchvision, TF-slim and Caffe evaluate on


def cmd_weights_import(args) -> int:
    from inception_keras.builder import build_model
    from inception_keras.cost import network_cost
    from inception_keras.pretrained import WeightsError
    from inception_keras.pretrained.convert import SOURCE_NAMES, load_weights, read_source
    from inception_keras.pretrained.convert import source_spec

    out = check_output_file(args.out, args.overwrite)
    try:
        weights = read_source(args.path)
        if weights.source == "keras":
            raise CommandError(f"{args.path} is already a .keras model")
        spec = source_spec(weights)
        if args.no_aux:
            spec = spec.without_aux()
        print(f"{args.path}: {SOURCE_NAMES[weights.source]} with {len(weights.tensors)} tensors -> spec {spec.name} "
              f"({spec.head.classes} classes, {'with' if spec.aux_heads else 'without'} aux heads"
              f"{', Caffe input conversion' if spec.input_conversion == 'caffe' else ''})")
        model = build_model(spec)
        report = load_weights(model, weights)
    except WeightsError as error:
        raise CommandError(str(error)) from None
    print(report.describe())
    try:
        diff = _save_checked(model, spec, out)
    except OSError as error:
        raise CommandError(f"cannot write {out}: {error.strerror or error_text(error)}") from None
    cost = network_cost(spec)
    print(f"wrote {out} ({out.stat().st_size:,} bytes; {cost.total_params:,} params); reloaded with "
          f"safe_mode=True: max abs diff {diff:.1e}. It takes RGB in [-1, 1] "
          f"(inception_keras.applications.preprocess_input); try `inception-keras predict {out} IMAGE`")
    return 0


def _save_checked(model, spec, out: Path) -> float:
    """Save `model` to `out` (atomically) once a reload of the saved file gives its outputs; the max abs diff."""
    import numpy as np

    from inception_keras.pretrained.convert import load_keras_model

    with atomic_path(out, suffix=".keras") as tmp:
        model.save(tmp)
        x = np.random.default_rng(0).uniform(-1, 1, size=(2, *spec.input_shape)).astype("float32")
        reloaded = load_keras_model(tmp)
        before, after = model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
        if isinstance(before, dict):
            before, after = before["predictions"], after["predictions"]
        diff = float(np.abs(np.asarray(before) - np.asarray(after)).max())
        if not diff <= 1e-6:
            raise CommandError(f"{out}: the saved model reloads with different outputs (max abs diff {diff:.2e})")
    return diff


def load_image(path: str, crop: float, max_pixels: int):
    """An image file as uint8 RGB [1, H, W, 3], centrally cropped to `crop` of each side; refused before it is
    read when it is not a regular file (a FIFO would block, /dev/zero never end), and before it is decoded when
    its header is not read or claims more than `max_pixels` pixels."""
    import tensorflow as tf

    if file_problem(path):
        raise CommandError(f"{path}: cannot read this image: {file_problem(path)}")
    try:
        data = tf.io.read_file(path)
        problem = image_problem(data.numpy(), max_pixels)
        image = None if problem else tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as error:
        problem = error_text(error)
    if problem is not None:
        raise CommandError(f"{path}: cannot read this image: {problem}")
    if crop < 1.0:
        image = tf.image.central_crop(image, crop)
    return image[None]


def cmd_predict(args) -> int:
    import numpy as np

    from inception_keras.data import to_model_input
    from inception_keras.export import ExportError, image_input_shape, load_run

    try:
        model, _, class_names = load_run(args.model)
    except ExportError as error:
        raise CommandError(str(error)) from None
    try:
        height, width, channels = image_input_shape(model, "predict")
    except ExportError as error:
        raise CommandError(f"{args.model}: {error}") from None
    crop = args.crop if args.crop is not None else (IMAGENET_CROP if len(class_names) in (1000, 1001) else 1.0)
    for path in args.images:
        image = load_image(path, crop, args.max_image_pixels)
        scores = model.predict(to_model_input(image, (height, width), channels), verbose=0)
        scores = np.asarray(scores["predictions"] if isinstance(scores, dict) else scores)[0]
        print(path)
        for rank, index in enumerate(np.argsort(-scores, kind="stable")[:args.top], start=1):
            print(f"  {rank}. {scores[index]:.4f}  {class_names[index]}")
    return 0


def _crop(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1], got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser("weights", help="pretrained weights: `weights import FILE --out MODEL.keras`")
    actions = weights.add_subparsers(dest="action", metavar="ACTION", required=True)
    convert = actions.add_parser(
        "import", help="convert a torchvision .pth, TF-slim checkpoint or BVLC .caffemodel to a .keras model",
        description="Reads the file (no torch or Caffe needed), picks the matching spec (googlenet_torchvision, "
                    "googlenet_slim, or googlenet with Caffe's input conversion), checks every tensor's shape, "
                    "and writes a .keras model that loads with safe_mode=True.")
    convert.add_argument("path", metavar="FILE")
    convert.add_argument("--out", required=True, help="the .keras file to write")
    convert.add_argument("--no-aux", action="store_true", help="leave out the aux heads")
    convert.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    convert.set_defaults(func=cmd_weights_import)

    predict = sub.add_parser("predict", help="top classes of images for a model (.keras file, training run)")
    predict.add_argument("model", metavar="MODEL", help="a .keras file or a training run directory")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="JPEG, PNG, GIF or BMP files")
    predict.add_argument("--top", type=positive_int, default=5)
    predict.add_argument("--crop", type=_crop, help="central crop before resizing (default 0.875 for ImageNet "
                                                     "classifiers, else 1: the whole image)")
    predict.add_argument("--max-image-pixels", type=positive_int, default=MAX_IMAGE_PIXELS, metavar="N",
                         help="refuse, before decoding, an image of more pixels (default %(default)s, Pillow's "
                              "decompression-bomb bound)")
    predict.set_defaults(func=cmd_predict)
