"""Named specs: GoogLeNet as in the paper, and its well-known variants.

Reference: Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015), Table 1;
the BVLC Caffe GoogLeNet for the LRN settings; torchvision's `googlenet` for
`googlenet_torchvision`.
"""

from __future__ import annotations

from typing import Callable

from inception_keras.cost import validate
from inception_keras.serialize import load_spec, name_or_file
from inception_keras.spec import (AuxHeadSpec, ConvSpec, HeadSpec, InceptionSpec, LRNSpec, NetworkSpec, PoolSpec,
                                  SpecError, StageSpec)
from inception_keras.utils.errors import short_repr

# Table 1: module, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
GOOGLENET_TABLE1 = (
    ("3a", 64, 96, 128, 16, 32, 32),     # 28 x 28 x 256
    ("3b", 128, 128, 192, 32, 96, 64),   # 28 x 28 x 480
    ("4a", 192, 96, 208, 16, 48, 64),    # 14 x 14 x 512
    ("4b", 160, 112, 224, 24, 64, 64),   # 14 x 14 x 512
    ("4c", 128, 128, 256, 24, 64, 64),   # 14 x 14 x 512
    ("4d", 112, 144, 288, 32, 64, 64),   # 14 x 14 x 528
    ("4e", 256, 160, 320, 32, 128, 128), # 14 x 14 x 832
    ("5a", 256, 160, 320, 32, 128, 128), # 7 x 7 x 832
    ("5b", 384, 192, 384, 48, 128, 128), # 7 x 7 x 1024
)

# googlenet_mini: the same layout, about a tenth of the widths, for 32-64 px inputs
MINI_TABLE = (
    ("3a", 16, 16, 24, 4, 8, 8),      # 16 x 16 x 56
    ("3b", 24, 24, 32, 8, 16, 16),    # 16 x 16 x 88
    ("4a", 32, 24, 40, 8, 16, 16),    # 8 x 8 x 104
    ("4b", 40, 32, 48, 8, 16, 16),    # 8 x 8 x 120
    ("5a", 48, 32, 64, 8, 24, 24),    # 4 x 4 x 160
)

MAX_POOL = PoolSpec("max", 3, 2)
CEIL_MAX_POOL = PoolSpec("max", 3, 2, "ceil")  # Caffe's and torch's ceil mode; equals 'same' on even maps


def stages_from_table(table, ch5x5_kernel: int = 5, pools: dict | None = None) -> tuple[StageSpec, ...]:
    """Group table rows into stages by the module name's prefix ("4a" -> stage "4")."""
    pools = {} if pools is None else pools
    order: list[str] = []
    rows: dict[str, list[InceptionSpec]] = {}
    for name, *widths in table:
        stage = name.rstrip("abcdefghijklmnopqrstuvwxyz")
        if stage not in rows:
            order.append(stage)
            rows[stage] = []
        rows[stage].append(InceptionSpec(*widths, ch5x5_kernel=ch5x5_kernel))
    return tuple(StageSpec(stage, tuple(rows[stage]), pools.get(stage)) for stage in order)


def googlenet() -> NetworkSpec:
    lrn = LRNSpec(size=5, alpha=1e-4, beta=0.75)
    # BVLC Caffe: conv1 pads 3 on every side (Keras 'same' at stride 2 would pad 2 and 3); pools in ceil mode
    stem = (ConvSpec(64, 7, 2, padding=3), CEIL_MAX_POOL, lrn,            # 56 x 56 x 64
            ConvSpec(64, 1), ConvSpec(192, 3), lrn, CEIL_MAX_POOL)        # 28 x 28 x 192
    aux = AuxHeadSpec("4a", "avg", 5, 3, 128, 1024, 0.7, 0.3)
    return NetworkSpec(
        name="googlenet", input_shape=(224, 224, 3), stem=stem,
        stages=stages_from_table(GOOGLENET_TABLE1, pools={"4": CEIL_MAX_POOL, "5": CEIL_MAX_POOL}),
        aux_heads=(aux, AuxHeadSpec("4d", "avg", 5, 3, 128, 1024, 0.7, 0.3)),
        head=HeadSpec(dropout=0.4, classes=1000), normalization="none")


def googlenet_bn() -> NetworkSpec:
    stem = (ConvSpec(64, 7, 2), MAX_POOL, ConvSpec(64, 1), ConvSpec(192, 3), MAX_POOL)
    base = googlenet()
    stages = stages_from_table(GOOGLENET_TABLE1, pools={"4": MAX_POOL, "5": MAX_POOL})
    return base.replace(name="googlenet_bn", stem=stem, stages=stages, normalization="batch_norm")


def googlenet_torchvision() -> NetworkSpec:
    # torchvision: every MaxPool2d has ceil_mode=True; the "5x5" branch is 3x3 (a known bug, torchvision #906)
    stem = (ConvSpec(64, 7, 2, padding=3), CEIL_MAX_POOL, ConvSpec(64, 1), ConvSpec(192, 3), CEIL_MAX_POOL)
    aux = dict(pool="adaptive_avg", pool_size=4, conv_width=128, dense_width=1024, dropout=0.7, loss_weight=0.3)
    return NetworkSpec(
        name="googlenet_torchvision", input_shape=(224, 224, 3), stem=stem,
        stages=stages_from_table(GOOGLENET_TABLE1, ch5x5_kernel=3,
                                 pools={"4": CEIL_MAX_POOL, "5": PoolSpec("max", 2, 2, "ceil")}),
        aux_heads=(AuxHeadSpec("4a", **aux), AuxHeadSpec("4d", **aux)),
        head=HeadSpec(dropout=0.2, classes=1000), normalization="batch_norm", bn_epsilon=1e-3,
        bn_momentum=0.9)  # torch's BatchNorm2d momentum 0.1


def googlenet_slim() -> NetworkSpec:
    """TF-slim's `inception_v1` (models/research/slim/nets/inception_v1.py): padding SAME everywhere, 3x3 in the
    "5x5" branch, batch norm without gamma (scale=False, epsilon 1e-3, decay 0.9997), MaxPool_5a 2x2/2, no aux
    heads, dropout keep 0.8, 1001 classes (index 0 is background)."""
    stem = (ConvSpec(64, 7, 2), MAX_POOL, ConvSpec(64, 1), ConvSpec(192, 3), MAX_POOL)
    return NetworkSpec(
        name="googlenet_slim", input_shape=(224, 224, 3), stem=stem,
        stages=stages_from_table(GOOGLENET_TABLE1, ch5x5_kernel=3, pools={"4": MAX_POOL, "5": PoolSpec("max", 2, 2)}),
        head=HeadSpec(dropout=0.2, classes=1001), normalization="batch_norm", bn_epsilon=1e-3, bn_momentum=0.9997,
        bn_scale=False)


def googlenet_mini() -> NetworkSpec:
    aux = dict(pool="avg", pool_size=5, pool_stride=3, conv_width=32, dense_width=128, dropout=0.5, loss_weight=0.3)
    return NetworkSpec(
        name="googlenet_mini", input_shape=(32, 32, 3),
        stem=(ConvSpec(32, 3), MAX_POOL),  # 16 x 16 x 32
        stages=stages_from_table(MINI_TABLE, pools={"4": MAX_POOL, "5": MAX_POOL}),
        aux_heads=(AuxHeadSpec("4a", **aux), AuxHeadSpec("4b", **aux)),
        head=HeadSpec(dropout=0.2, classes=10), normalization="batch_norm", bn_momentum=0.9)


_REGISTRY: dict[str, Callable[[], NetworkSpec]] = {
    "googlenet": googlenet,
    "googlenet_bn": googlenet_bn,
    "googlenet_torchvision": googlenet_torchvision,
    "googlenet_slim": googlenet_slim,
    "googlenet_mini": googlenet_mini,
}


def list_specs() -> list[str]:
    """Names of the registered specs."""
    return list(_REGISTRY)


def get_spec(name: str) -> NetworkSpec:
    """A registered spec by name, validated."""
    if name not in _REGISTRY:
        raise SpecError("spec", f"unknown spec {short_repr(name)}; registered: {', '.join(_REGISTRY)}")
    return validate(_REGISTRY[name]())


def resolve_spec(name_or_path: str, field: str = "spec") -> NetworkSpec:
    """A registered name, or a path to a YAML/JSON spec file; an error names `field` when it is neither."""
    found = name_or_file(name_or_path, _REGISTRY, field, "spec")
    return get_spec(found) if isinstance(found, str) else load_spec(found)
