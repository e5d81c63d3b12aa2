"""GoogLeNet the way `keras.applications` models are made, with weights from torchvision, TF-slim or BVLC Caffe.

    model = GoogLeNet(weights="googlenet-1378be20.pth")             # torchvision's file, downloaded elsewhere
    preds = model.predict(preprocess_input(images))                  # RGB 0-255 -> [-1, 1]
    decode_predictions(preds, top=5)                                 # [[(wnid, name, score), ...], ...]

The file's source is detected and the matching spec chosen (`googlenet_torchvision`,
`googlenet_slim`, or the paper's `googlenet` with Caffe's input conversion). Every model takes
RGB in [-1, 1]. Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from inception_keras.spec import NetworkSpec

IMAGENET_CLASSES = 1000


def GoogLeNet(weights: str | Path | None = None, include_top: bool = True, pooling: str | None = None,
              classes: int = IMAGENET_CLASSES, input_shape: tuple[int, int, int] | None = None,
              classifier_activation: str | None = "softmax", aux_heads: bool = False,
              spec: str | NetworkSpec | None = None):
    """A GoogLeNet Keras model, optionally with pretrained weights.

    Args:
        weights: None (random initialization) or the path of a torchvision `.pth`, a TF-slim checkpoint,
            a BVLC `.caffemodel`, or a `.keras` file (then `spec` names its network).
        include_top: with the classifier(s); else the output is the last feature map or its pooling.
        pooling: with `include_top` False: None (7x7x1024 feature map at 224 px), `avg` or `max`.
        classes: with `include_top` and weights, must be the file's class count (TF-slim's 1001, whose
            index 0 is background, is accepted for 1000); to train for other classes, fine-tune
            (`inception-keras train SPEC --weights FILE`).
        input_shape: (height, width, 3); default (224, 224, 3).
        classifier_activation: `softmax`, or None for logits.
        aux_heads: also output the two auxiliary classifiers (`aux_1`, `aux_2`): torchvision and Caffe
            files have them, TF-slim's do not.
        spec: a registered spec name or a NetworkSpec; default: the file's, or the paper's `googlenet`.

    Returns:
        A `keras.Model`: outputs `predictions` (a dict with `aux_1`, `aux_2` when `aux_heads`).
    """
    from inception_keras.builder import build_model
    from inception_keras.presets import get_spec
    from inception_keras.pretrained import WeightsError
    from inception_keras.pretrained.convert import load_weights, read_source, source_spec

    if aux_heads and not include_top:
        raise ValueError("aux_heads=True needs include_top=True (the aux heads are classifiers)")
    source = read_source(weights) if weights is not None else None
    chosen = get_spec(spec) if isinstance(spec, str) else spec
    if source is not None and source.source != "keras":
        detected = source_spec(source)
        if chosen is not None and chosen.name != detected.name:
            raise ValueError(f"spec {chosen.name!r} does not match {weights}, which holds {detected.name!r}")
        chosen = detected
        file_classes = chosen.head.classes
        if include_top and classes not in (file_classes, file_classes - 1 if file_classes == 1001 else None):
            raise ValueError(f"classes={classes} with include_top=True, but {weights} has a {file_classes}-class "
                             f"classifier; use include_top=False, or fine-tune (inception-keras train SPEC --weights "
                             f"FILE --classes {classes})")
        if aux_heads and not chosen.aux_heads:
            raise ValueError(f"aux_heads=True, but {weights} has no aux heads (TF-slim's inception_v1 has none)")
    elif source is not None and chosen is None:
        raise ValueError(f"{weights} is a .keras model, which carries its own network: load it with "
                         f"keras.saving.load_model, or pass spec= to take its weights into a spec")
    else:
        chosen = chosen or get_spec("googlenet")
        if classes != chosen.head.classes:
            chosen = chosen.with_classes(classes)
    if input_shape is not None:
        chosen = chosen.replace(input_shape=tuple(input_shape))
    if not aux_heads:
        chosen = chosen.without_aux()
    model = build_model(chosen, include_top=include_top, pooling=pooling, classifier_activation=classifier_activation)
    if source is not None:
        try:
            load_weights(model, source)
        except WeightsError as error:
            raise ValueError(str(error)) from None
    return model


def preprocess_input(images) -> np.ndarray:
    """RGB images with values 0-255 (uint8 or float) -> float32 in [-1, 1], what every model here takes."""
    return np.asarray(images, dtype=np.float32) / 127.5 - 1.0


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1,000 ImageNet classes in the standard order: (WordNet id, name)."""
    text = resources.files("inception_keras").joinpath("imagenet_classes.tsv").read_text(encoding="utf-8")
    return tuple(tuple(line.split("\t")) for line in text.splitlines() if line and not line.startswith("#"))


def imagenet_class_names(classes: int) -> list[str] | None:
    """Names of an ImageNet classifier's outputs: 1000, or TF-slim's 1001 with background first; else None."""
    names = [name for _, name in imagenet_classes()]
    return {IMAGENET_CLASSES: names, IMAGENET_CLASSES + 1: ["background", *names]}.get(classes)


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """The `top` ImageNet classes of each row of `preds`: [(wnid, name, score), ...], best first.

    Rows of 1,001 scores (TF-slim) have the background class at index 0: it is reported as
    ("background", "background", score) and the rest shift by one.
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] not in (IMAGENET_CLASSES, IMAGENET_CLASSES + 1):
        raise ValueError(f"decode_predictions expects a batch of 1000 (or TF-slim's 1001) scores, "
                         f"got shape {preds.shape}")
    classes = imagenet_classes()
    if preds.shape[1] == IMAGENET_CLASSES + 1:
        classes = (("background", "background"),) + classes
    return [[(*classes[i], float(row[i])) for i in np.argsort(-row, kind="stable")[:top]] for row in preds]
