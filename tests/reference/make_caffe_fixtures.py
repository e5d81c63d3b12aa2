"""Write the tiny ``.caffemodel`` fixtures of tests/pretrained/test_pretrained_caffe.py with BVLC's official schema.

Run with the reference venv (protobuf, grpcio-tools, opencv-python-headless, numpy)::

    /work/refvenv/bin/python tests/reference/make_caffe_fixtures.py

It compiles tests/reference/bvlc/caffe.proto (BVLC/caffe src/caffe/proto/caffe.proto) with
``grpc_tools.protoc`` into a temporary directory, writes into tests/fixtures/caffe/:

* ``tiny_layer.caffemodel``: new format (``layer``, type strings, blobs with ``shape``);
* ``tiny_v1_layers.caffemodel``: the same weights in the deprecated V1 format (``layers``, enum types, legacy
  num/channels/height/width blobs), as bvlc_googlenet.caffemodel (2014) stores them;
* ``tiny_double_data.caffemodel``: new format with the classifier weight in ``double_data``;
* ``tiny_deploy.prototxt``: the matching deploy net;
* ``expected.npz``: the arrays each layer should read as,

then loads the first two with OpenCV's ``cv2.dnn.readNetFromCaffe``, runs a forward pass on a fixed input and
checks it against a numpy forward pass with the expected weights.
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import tempfile

import cv2
import numpy as np
from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE / "bvlc" / "caffe.proto"
OUT = HERE.parent / "fixtures" / "caffe"
NET_NAME = "TinyGoogLeNet"
CONV, RELU, FC = "conv1/7x7_s2", "conv1/relu_7x7", "loss3/classifier"
IN_SHAPE = (1, 3, 8, 8)
CONV_OUT, KERNEL, STRIDE, PAD = 4, 3, 2, 1
CLASSES = 5

DEPLOY = f"""name: "{NET_NAME}"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape: {{ dim: 1 dim: 3 dim: 8 dim: 8 }} }} }}
layer {{
  name: "{CONV}" type: "Convolution" bottom: "data" top: "{CONV}"
  convolution_param {{ num_output: {CONV_OUT} kernel_size: {KERNEL} stride: {STRIDE} pad: {PAD} }}
}}
layer {{ name: "{RELU}" type: "ReLU" bottom: "{CONV}" top: "{CONV}" }}
layer {{
  name: "{FC}" type: "InnerProduct" bottom: "{CONV}" top: "{FC}"
  inner_product_param {{ num_output: {CLASSES} }}
}}
"""


def compile_schema(tmp: pathlib.Path):
    """Compiles BVLC's caffe.proto into ``tmp`` and imports the generated ``caffe_pb2``."""
    args = ["protoc", f"-I{PROTO.parent}", f"--python_out={tmp}", str(PROTO)]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {PROTO}")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("caffe_pb2")


def expected_weights() -> dict[str, list[np.ndarray]]:
    """Fixed random float32 weights of the tiny net, in layer order."""
    rng = np.random.default_rng(20141201)
    flat = CONV_OUT * (IN_SHAPE[2] // STRIDE) * (IN_SHAPE[3] // STRIDE)
    shapes = {CONV: [(CONV_OUT, IN_SHAPE[1], KERNEL, KERNEL), (CONV_OUT,)], FC: [(CLASSES, flat), (CLASSES,)]}
    return {name: [rng.normal(0, 0.5, s).astype(np.float32) for s in blob_shapes]
            for name, blob_shapes in shapes.items()}


def new_format_net(pb, weights, double_names=()):
    """NetParameter with ``layer`` entries and blobs with ``shape``; ``double_names`` blob 0 in double_data."""
    net = pb.NetParameter(name=NET_NAME)
    conv = net.layer.add(name=CONV, type="Convolution", bottom=["data"], top=[CONV])
    conv.param.add(lr_mult=1, decay_mult=1)
    conv.param.add(lr_mult=2, decay_mult=0)
    conv.convolution_param.num_output = CONV_OUT
    conv.convolution_param.kernel_size.append(KERNEL)
    conv.convolution_param.stride.append(STRIDE)
    conv.convolution_param.pad.append(PAD)
    conv.convolution_param.weight_filler.type = "xavier"
    net.layer.add(name=RELU, type="ReLU", bottom=[CONV], top=[CONV])
    fc = net.layer.add(name=FC, type="InnerProduct", bottom=[CONV], top=[FC])
    fc.inner_product_param.num_output = CLASSES
    for layer in (conv, fc):
        for index, array in enumerate(weights[layer.name]):
            blob = layer.blobs.add()
            blob.shape.dim.extend(array.shape)
            values = blob.double_data if (layer.name in double_names and index == 0) else blob.data
            values.extend(array.ravel().tolist())
    return net


def v1_net(pb, weights):
    """NetParameter with deprecated V1 ``layers`` and legacy 4-D blob dims, as Caffe wrote them in 2014."""
    v1 = pb.V1LayerParameter
    net = pb.NetParameter(name=NET_NAME)
    conv = net.layers.add(name=CONV, type=v1.CONVOLUTION, bottom=["data"], top=[CONV], blobs_lr=[1, 2])
    conv.convolution_param.num_output = CONV_OUT
    conv.convolution_param.kernel_size.append(KERNEL)
    conv.convolution_param.stride.append(STRIDE)
    conv.convolution_param.pad.append(PAD)
    net.layers.add(name=RELU, type=v1.RELU, bottom=[CONV], top=[CONV])
    fc = net.layers.add(name=FC, type=v1.INNER_PRODUCT, bottom=[CONV], top=[FC], weight_decay=[1, 0])
    fc.inner_product_param.num_output = CLASSES
    for layer in (conv, fc):
        for array in weights[layer.name]:
            num, channels, height, width = (1,) * (4 - array.ndim) + array.shape
            layer.blobs.add(num=num, channels=channels, height=height, width=width, data=array.ravel().tolist())
    net.layers.add(name="loss3/loss3", type=v1.SOFTMAX_LOSS, bottom=[FC, "label"], top=["loss3/loss3"])
    return net


def numpy_forward(x: np.ndarray, weights) -> np.ndarray:
    """Convolution (pad, stride) -> ReLU -> InnerProduct over Caffe's (C, H, W) flattening, in float64."""
    w, b = (a.astype(np.float64) for a in weights[CONV])
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    out_h = (xp.shape[2] - KERNEL) // STRIDE + 1
    out_w = (xp.shape[3] - KERNEL) // STRIDE + 1
    y = np.empty((x.shape[0], CONV_OUT, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, :, i * STRIDE:i * STRIDE + KERNEL, j * STRIDE:j * STRIDE + KERNEL]
            y[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    y = np.maximum(y, 0).reshape(x.shape[0], -1)
    fc_w, fc_b = (a.astype(np.float64) for a in weights[FC])
    return y @ fc_w.T + fc_b


def opencv_check(prototxt: pathlib.Path, model: pathlib.Path, weights, x: np.ndarray) -> float:
    """Loads ``model`` with OpenCV, compares its parameters and forward pass with numpy; returns the max diff."""
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(model))
    for name, arrays in weights.items():
        layer_id = net.getLayerId(name)
        for index, array in enumerate(arrays):
            got = net.getParam(layer_id, index)
            if not np.array_equal(np.asarray(got).reshape(array.shape), array):
                sys.exit(f"OpenCV reads {model.name} {name} blob {index} differently")
    net.setInput(x)
    got = net.forward(FC)
    diff = float(np.max(np.abs(got.astype(np.float64) - numpy_forward(x, weights))))
    print(f"OpenCV {cv2.__version__} readNetFromCaffe({model.name}): forward {got.shape}, "
          f"max |OpenCV - numpy| = {diff:.3g}")
    if diff > 1e-4:
        sys.exit(f"OpenCV forward of {model.name} differs from numpy by {diff}")
    return diff


def main() -> None:
    """Writes the fixtures and checks them with OpenCV."""
    weights = expected_weights()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pb = compile_schema(pathlib.Path(tmp))
        nets = {"tiny_layer.caffemodel": new_format_net(pb, weights),
                "tiny_v1_layers.caffemodel": v1_net(pb, weights),
                "tiny_double_data.caffemodel": new_format_net(pb, weights, double_names=(FC,))}
        for filename, net in nets.items():
            (OUT / filename).write_bytes(net.SerializeToString())
            print(f"wrote {OUT / filename} ({(OUT / filename).stat().st_size} bytes)")
    (OUT / "tiny_deploy.prototxt").write_text(DEPLOY)
    arrays = {f"{name}:{i}": a for name, blobs in weights.items() for i, a in enumerate(blobs)}
    np.savez(OUT / "expected.npz", net_name=np.array(NET_NAME), layer_names=np.array(list(weights)), **arrays)
    print(f"wrote {OUT / 'expected.npz'}: {sorted(arrays)}")
    x = np.random.default_rng(7).uniform(-1, 1, IN_SHAPE).astype(np.float32)
    for filename in ("tiny_layer.caffemodel", "tiny_v1_layers.caffemodel"):
        opencv_check(OUT / "tiny_deploy.prototxt", OUT / filename, weights, x)


if __name__ == "__main__":
    main()
