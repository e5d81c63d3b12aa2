"""inception_keras: declarative Inception networks (GoogLeNet and variants) for Keras 3.

Spec -> cost | builder -> model -> train | export. Importing this package does not
import Keras (5-9 s; the package alone takes 0.1 s); `build_model` and `inference_model` load it on first
use. It registers its layers with Keras as soon as Keras is loaded, before or after this package, so
`keras.saving.load_model` reads every `.keras` file of ours. It also sets
TF_ENABLE_ONEDNN_OPTS=1 where that is unset and TensorFlow not yet imported: on x86 CPUs without
AVX-512 VNNI/BF16 or AMX, TensorFlow would run its slower Eigen kernels (`inception_keras.utils.cpu`); imported
after TensorFlow (or Keras) on such a CPU, it warns once that oneDNN is off.
"""

import importlib
import importlib.util
import sys

from inception_keras.cost import network_cost, validate
from inception_keras.presets import get_spec, list_specs, resolve_spec
from inception_keras.scaling import scale_to_budget, scale_widths
from inception_keras.serialize import load_spec, save_spec, spec_to_yaml
from inception_keras.spec import (AuxHeadSpec, ConvSpec, HeadSpec, InceptionSpec, LRNSpec, NetworkSpec, PoolSpec,
                                  SpecError, StageSpec)
from inception_keras.utils.cpu import prefer_onednn, warn_if_onednn_off

if not prefer_onednn():  # before anything imports TensorFlow
    warn_if_onednn_off()

LAYER_MODULES = ("inception_keras.layers.batch_norm", "inception_keras.layers.lrn",
                 "inception_keras.layers.input_conversion")


def _register_layers() -> None:
    for module in LAYER_MODULES:
        importlib.import_module(module)


class _RegisterAfterKeras:
    """A `sys.meta_path` finder that lets the other finders locate `keras` and registers our layers right after
    Keras' own module has run (Keras looks custom layers up in its registry only, so they must be registered
    before a file is loaded; there is no lazy lookup to hook). It stays in place until Keras has actually run:
    TensorFlow's import asks `importlib.util.find_spec("keras")` for the folder alone, without loading it."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                _register_layers()

            spec.loader.exec_module = exec_module
        return spec


def _register_with_keras() -> None:
    """Register LocalResponseNormalization, InputConversion and the former batch-norm name with Keras: now if
    Keras is loaded, else the moment it is (without importing it: that costs seconds)."""
    if "keras" in sys.modules:
        _register_layers()
    elif not any(isinstance(finder, _RegisterAfterKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterKeras())


_register_with_keras()

__version__ = "0.1.0"

_LAZY = {"build_model": "inception_keras.builder", "inference_model": "inception_keras.builder",
         "LocalResponseNormalization": "inception_keras.layers.lrn", "narrow": "inception_keras.inherit"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'inception_keras' has no attribute {name!r}")


__all__ = ["AuxHeadSpec", "ConvSpec", "HeadSpec", "InceptionSpec", "LRNSpec", "NetworkSpec", "PoolSpec", "SpecError",
           "StageSpec", "build_model", "get_spec", "inference_model", "list_specs", "load_spec", "network_cost",
           "narrow", "resolve_spec", "save_spec", "scale_to_budget", "scale_widths", "spec_to_yaml", "validate",
           "LocalResponseNormalization"]
