"""inception_keras: declarative Inception networks (GoogLeNet and variants) for Keras 3.

Spec -> cost | builder -> model -> train | export. Importing this package does not
import Keras; `build_model` and `inference_model` load it on first use. It does set
TF_ENABLE_ONEDNN_OPTS=1 where that is unset and TensorFlow not yet imported: on x86 CPUs without
AVX-512 VNNI/BF16 or AMX, TensorFlow would run its slower Eigen kernels (`inception_keras.cpu`).
"""

from inception_keras.cost import network_cost, validate
from inception_keras.cpu import prefer_onednn
from inception_keras.presets import get_spec, list_specs, resolve_spec
from inception_keras.serialize import load_spec, save_spec, spec_to_yaml
from inception_keras.spec import (AuxHeadSpec, ConvSpec, HeadSpec, InceptionSpec, LRNSpec, NetworkSpec, PoolSpec,
                                  SpecError, StageSpec)

prefer_onednn()  # before anything imports TensorFlow

__version__ = "0.1.0"

_LAZY = {"build_model": "inception_keras.builder", "inference_model": "inception_keras.builder",
         "LocalResponseNormalization": "inception_keras.lrn"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'inception_keras' has no attribute {name!r}")


__all__ = ["AuxHeadSpec", "ConvSpec", "HeadSpec", "InceptionSpec", "LRNSpec", "NetworkSpec", "PoolSpec", "SpecError",
           "StageSpec", "build_model", "get_spec", "inference_model", "list_specs", "load_spec", "network_cost",
           "resolve_spec", "save_spec", "spec_to_yaml", "validate", "LocalResponseNormalization"]
