"""Where each layer's weights live in a torchvision, TF-slim or BVLC Caffe GoogLeNet file.

Our layer names (`inception_keras.builder`): conv blocks `{block}_conv` / `{block}_bn` with
blocks `conv1`..`conv3`, `inception_{module}_{branch}` and `aux_{i}_proj`; dense layers
`aux_{i}_fc`, `aux_{i}` and `predictions`. A source names, for each block or dense layer,
its own tensors, in Keras' weight order, with the transform from its layout to Keras'.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from inception_keras.pretrained import WeightsError

Transform = Callable[[np.ndarray], np.ndarray]
Tensors = list[tuple[str, Transform]]

_BLOCK = re.compile(r"^(?:(?P<stem>conv\d+)|inception_(?P<module>[0-9a-z]+?)_(?P<branch>1x1|3x3_reduce|3x3|5x5_reduce"
                    r"|5x5|pool_proj)|aux_(?P<aux>\d+)_proj)$")
_DENSE = re.compile(r"^(?:predictions|aux_(?P<aux>\d+)(?P<fc>_fc)?)$")


def keep(array: np.ndarray) -> np.ndarray:
    return array


def oihw_to_hwio(array: np.ndarray) -> np.ndarray:
    return np.transpose(array, (2, 3, 1, 0))


def out_in_to_in_out(array: np.ndarray) -> np.ndarray:
    return np.transpose(array)


class Source:
    """A file format and its GoogLeNet naming. Subclasses fill the tables and `read`."""

    name = ""
    spec_name = ""
    stem: dict[str, str] = {}
    branches: dict[str, str] = {}

    def read(self, path: str | Path) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def block(self, block: str) -> str:
        """The source's name for one of our conv blocks."""
        match = _BLOCK.match(block)
        if not match:
            raise WeightsError(f"no {self.name} counterpart for layer block {block!r}")
        if match["stem"]:
            if match["stem"] not in self.stem:
                raise WeightsError(f"no {self.name} counterpart for {block!r} (its stem has {', '.join(self.stem)})")
            return self.stem[match["stem"]]
        if match["aux"]:
            return self.aux_name(int(match["aux"]), "proj")
        return self.module_name(match["module"], match["branch"])

    def module_name(self, module: str, branch: str) -> str:
        raise NotImplementedError

    def aux_name(self, index: int, part: str) -> str:
        raise WeightsError(f"a {self.name} GoogLeNet has no aux heads")

    def conv(self, block: str) -> Tensors:
        raise NotImplementedError

    def batch_norm(self, block: str, scale: bool) -> Tensors:
        raise WeightsError(f"a {self.name} GoogLeNet has no batch norm (layer {block}_bn)")

    def dense(self, layer: str, flatten_shape: tuple | None) -> Tensors:
        raise NotImplementedError

    def classes(self, tensors: dict[str, np.ndarray]) -> int:
        raise NotImplementedError

    def has_aux(self, tensors: dict[str, np.ndarray]) -> bool:
        return False

    def dense_parts(self, layer: str) -> tuple[int | None, str]:
        """(aux index or None, 'fc' | 'classifier') of one of our dense layers."""
        match = _DENSE.match(layer)
        if not match:
            raise WeightsError(f"no {self.name} counterpart for dense layer {layer!r}")
        return (int(match["aux"]) if match["aux"] else None), ("fc" if match["fc"] else "classifier")


def chw_rows_to_hwc(flatten_shape: tuple) -> Transform:
    """Reorders a (C*H*W, units) dense kernel, flattened channels first (torch, Caffe), to Keras' H, W, C."""
    h, w, c = flatten_shape

    def transform(kernel: np.ndarray) -> np.ndarray:
        if kernel.shape[0] != h * w * c:
            return kernel  # the shape check names the mismatch
        return kernel.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * c, -1)

    return transform


class Torchvision(Source):
    """torchvision `models/googlenet.py`: BasicConv2d (`.conv`, `.bn`) and Linear modules."""

    name, spec_name = "torchvision", "googlenet_torchvision"
    stem = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3"}
    branches = {"1x1": "branch1", "3x3_reduce": "branch2.0", "3x3": "branch2.1", "5x5_reduce": "branch3.0",
                "5x5": "branch3.1", "pool_proj": "branch4.1"}
    aux_parts = {"proj": "aux{i}.conv", "fc": "aux{i}.fc1", "classifier": "aux{i}.fc2"}
    classifier = "fc"

    def read(self, path):
        from inception_keras.pretrained.torch_file import read_torch_state_dict

        return read_torch_state_dict(path)

    def module_name(self, module, branch):
        return f"inception{module}.{self.branches[branch]}"

    def aux_name(self, index, part):
        return self.aux_parts[part].format(i=index)

    def conv(self, block):
        return [(f"{self.block(block)}.conv.weight", oihw_to_hwio)]

    def batch_norm(self, block, scale):
        prefix = f"{self.block(block)}.bn"
        return [(f"{prefix}.{name}", keep) for name in ("weight", "bias", "running_mean", "running_var")]

    def dense(self, layer, flatten_shape):
        aux, part = self.dense_parts(layer)
        prefix = self.classifier if aux is None else self.aux_name(aux, part)
        kernel = out_in_to_in_out if part != "fc" else lambda a: chw_rows_to_hwc(flatten_shape)(a.T)
        return [(f"{prefix}.weight", kernel), (f"{prefix}.bias", keep)]

    def classes(self, tensors):
        return _shape_of(tensors, "fc.weight", self)[0]

    def has_aux(self, tensors):
        return "aux1.fc2.weight" in tensors


class Slim(Source):
    """TF-slim `nets/inception_v1.py` under the scope `InceptionV1/`; batch norm without gamma."""

    name, spec_name = "TF-slim", "googlenet_slim"
    scope = "InceptionV1"
    stem = {"conv1": "Conv2d_1a_7x7", "conv2": "Conv2d_2b_1x1", "conv3": "Conv2d_2c_3x3"}
    modules = {"3a": "Mixed_3b", "3b": "Mixed_3c", "4a": "Mixed_4b", "4b": "Mixed_4c", "4c": "Mixed_4d",
               "4d": "Mixed_4e", "4e": "Mixed_4f", "5a": "Mixed_5b", "5b": "Mixed_5c"}
    branches = {"1x1": "Branch_0/Conv2d_0a_1x1", "3x3_reduce": "Branch_1/Conv2d_0a_1x1",
                "3x3": "Branch_1/Conv2d_0b_3x3", "5x5_reduce": "Branch_2/Conv2d_0a_1x1",
                "5x5": "Branch_2/Conv2d_0b_3x3", "pool_proj": "Branch_3/Conv2d_0b_1x1"}
    renamed = {("5a", "5x5"): "Branch_2/Conv2d_0a_3x3"}  # so named in slim's inception_v1.py
    classifier = "Logits/Conv2d_0c_1x1"

    def read(self, path):
        from inception_keras.pretrained.slim_file import read_slim_checkpoint

        return read_slim_checkpoint(path)

    def block(self, block):
        return f"{self.scope}/{super().block(block)}"

    def module_name(self, module, branch):
        if module not in self.modules:
            raise WeightsError(f"no TF-slim counterpart for module {module!r} (it has {', '.join(self.modules)})")
        return f"{self.modules[module]}/{self.renamed.get((module, branch), self.branches[branch])}"

    def conv(self, block):
        return [(f"{self.block(block)}/weights", keep)]

    def batch_norm(self, block, scale):
        names = ("gamma", "beta", "moving_mean", "moving_variance") if scale else ("beta", "moving_mean",
                                                                                  "moving_variance")
        return [(f"{self.block(block)}/BatchNorm/{name}", keep) for name in names]

    def dense(self, layer, flatten_shape):
        aux, _ = self.dense_parts(layer)
        if aux is not None:
            self.aux_name(aux, "classifier")
        prefix = f"{self.scope}/{self.classifier}"
        return [(f"{prefix}/weights", lambda a: a.reshape(a.shape[-2], a.shape[-1]) if a.ndim == 4 else a),
                (f"{prefix}/biases", keep)]

    def classes(self, tensors):
        return _shape_of(tensors, f"{self.scope}/{self.classifier}/weights", self)[-1]


class Caffe(Source):
    """BVLC Caffe `models/bvlc_googlenet`: layers named as in its prototxt, blobs [weights, bias]."""

    name, spec_name = "BVLC Caffe", "googlenet"
    stem = {"conv1": "conv1/7x7_s2", "conv2": "conv2/3x3_reduce", "conv3": "conv2/3x3"}
    aux_parts = {"proj": "loss{i}/conv", "fc": "loss{i}/fc", "classifier": "loss{i}/classifier"}
    classifier = "loss3/classifier"

    def read(self, path):
        from inception_keras.pretrained.caffe_file import read_caffemodel

        return {f"{layer}.blobs[{i}]": blob for layer, blobs in read_caffemodel(path).items()
                for i, blob in enumerate(blobs)}

    def module_name(self, module, branch):
        return f"inception_{module}/{branch}"

    def aux_name(self, index, part):
        return self.aux_parts[part].format(i=index)

    def conv(self, block):
        name = self.block(block)
        return [(f"{name}.blobs[0]", oihw_to_hwio), (f"{name}.blobs[1]", keep)]

    def dense(self, layer, flatten_shape):
        aux, part = self.dense_parts(layer)
        name = self.classifier if aux is None else self.aux_name(aux, part)
        kernel = out_in_to_in_out if part != "fc" else lambda a: chw_rows_to_hwc(flatten_shape)(a.T)
        return [(f"{name}.blobs[0]", kernel), (f"{name}.blobs[1]", keep)]

    def classes(self, tensors):
        return _shape_of(tensors, f"{self.classifier}.blobs[0]", self)[0]

    def has_aux(self, tensors):
        return "loss1/classifier.blobs[0]" in tensors


def _shape_of(tensors: dict, name: str, source: Source) -> tuple:
    if name not in tensors:
        sample = ", ".join(list(tensors)[:4])
        raise WeightsError(f"not a {source.name} GoogLeNet: no tensor {name!r} (it has {len(tensors)} tensors: "
                           f"{sample}{', ...' if len(tensors) > 4 else ''})")
    return tuple(tensors[name].shape)


SOURCES = {"torchvision": Torchvision(), "slim": Slim(), "caffe": Caffe()}
