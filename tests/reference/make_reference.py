"""Reference outputs of the original frameworks for GoogLeNet with deterministic, input-sensitive weights.

Run in the reference venv (`make verify-weights` makes it: torch + torchvision, tf_slim, OpenCV):

    .venv-ref/bin/python tests/reference/make_reference.py OUT [--fixtures tests/fixtures/pretrained]

For each source it makes weights from a seed (`synthetic.py`, shared with the tests), lets the
framework itself calibrate batch-norm statistics on images (so outputs depend on the input),
writes the weights in the framework's own file formats, and records the framework's own forward
pass on a fixed batch: classifier logits, pooled 1024-d features and aux-head logits.

  OUT/torchvision_zip.pth, torchvision_legacy.pth   torch.save, zip and pre-1.6 formats
  OUT/slim_v1.ckpt, slim_v2/model.ckpt.*            tf.compat.v1.train.Saver, V1 and V2
  OUT/caffe.caffemodel, caffe_v1.caffemodel         BVLC's caffe.proto, `layer` and V1 `layers`
  OUT/{source}.npz                                  manifest, statistics, outputs, seed, gain
--fixtures also writes {source}.npz there: the same record (kilobytes), which `make test` checks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import synthetic  # noqa: E402

EVAL_IMAGES = dict(count=3, size=224, seed=100)
CALIBRATION_IMAGES = dict(count=16, size=224, seed=200)
SEEDS = {"torchvision": 1, "slim": 2, "caffe": 3}
GAINS = {"torchvision": 4.0, "slim": 4.0, "caffe": 0.05}  # caffe: x40 after calibration


def record(names, shapes, stats: dict, outputs: dict, source: str) -> dict:
    """What the tests need: the manifest, the calibrated statistics (the reference itself used them rounded to
    float16, so the fixture holds them exactly), the outputs, the seed and the gain."""
    return {**synthetic.manifest_arrays(names, shapes),
            **{f"stat:{k}": np.asarray(v, np.float16) for k, v in stats.items()},
            **outputs, "seed": np.int64(SEEDS[source]), "gain": np.float64(GAINS[source])}


def compact(result: dict) -> dict:
    """The fixture: float64 outputs rounded to float32 (kilobytes; they still pin agreement to ~1e-7)."""
    return {key: value.astype(np.float32) if value.dtype == np.float64 and value.ndim else value
            for key, value in result.items()}


def torchvision_reference(out: Path) -> dict:
    import torch
    import torchvision

    torch.set_num_threads(2)
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    state = model.state_dict()
    names, shapes = list(state), [tuple(value.shape) for value in state.values()]
    weights = synthetic.generate(names, shapes, "oihw", SEEDS["torchvision"], GAINS["torchvision"])
    model.load_state_dict({**state, **{name: torch.from_numpy(value) for name, value in weights.items()}})
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batch_norms:  # a cumulative average of batch statistics over the calibration images
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    calibration = torch.from_numpy(synthetic.images(**CALIBRATION_IMAGES).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        for start in range(0, len(calibration), 8):
            model(calibration[start:start + 8])
    for bn in batch_norms:
        bn.momentum = 0.1
        bn.running_mean.copy_(bn.running_mean.half().float())  # the values the fixture can hold
        bn.running_var.copy_(bn.running_var.half().float())
    model.eval()
    torch.save(model.state_dict(), out / "torchvision_zip.pth")
    torch.save(model.state_dict(), out / "torchvision_legacy.pth", _use_new_zipfile_serialization=False)

    captured = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
             for name in ("inception4a", "inception4d", "avgpool")]
    x = torch.from_numpy(synthetic.images(**EVAL_IMAGES).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        logits = model(x)
        features32 = torch.flatten(captured["avgpool"], 1)
        aux1, aux2 = model.aux1(captured["inception4a"]), model.aux2(captured["inception4d"])
        model.double()  # float64: the same network without float32 rounding, to compare exactly
        logits64 = model(x.double())
        features64 = torch.flatten(captured["avgpool"], 1)
        model.float()
    for hook in hooks:
        hook.remove()
    final = model.state_dict()
    stats = {name: final[name].numpy() for name in names if synthetic.is_stat(name)
             and not name.endswith("num_batches_tracked")}
    outputs = {"logits": logits.numpy(), "features": features32.numpy(), "aux_1": aux1.numpy(),
               "aux_2": aux2.numpy(), "logits_float64": logits64.numpy(), "features_float64": features64.numpy()}
    return record(names, shapes, stats, outputs, "torchvision")


POOLING_CASES = [(kind, k, s, n) for kind in ("max", "avg") for k, s in ((3, 2), (2, 2), (3, 1)) for n in range(2, 14)]


def pooling_reference(out: Path) -> dict:
    """torch's ceil-mode pooling (as torchvision's GoogLeNet and Caffe pool) on maps of every size from 2 to 13."""
    import torch

    found = {}
    for kind, k, s, n in POOLING_CASES:
        x = synthetic.pooling_input(kind, k, s, n).transpose(0, 3, 1, 2)
        pool = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
        try:
            y = pool(torch.from_numpy(x), k, s, ceil_mode=True).numpy()
        except RuntimeError:  # torch refuses maps smaller than the window
            continue
        found[f"{kind}_{k}_{s}_{n}"] = y.transpose(0, 2, 3, 1)
    return found


def _slim_import_shim():
    """tf_slim 1.1 imports `tf_keras.legacy_tf_layers`, which tf_keras 2.21 keeps under `tf_keras.src`."""
    import importlib

    import tf_keras.src.legacy_tf_layers as legacy

    sys.modules["tf_keras.legacy_tf_layers"] = legacy
    for sub in ("base", "convolutional", "core", "normalization", "pooling"):
        module = importlib.import_module(f"tf_keras.src.legacy_tf_layers.{sub}")
        sys.modules[f"tf_keras.legacy_tf_layers.{sub}"] = module


def slim_reference(out: Path) -> dict:
    import tensorflow as tf

    _slim_import_shim()
    import tf_slim as slim
    from tf_slim.nets import inception_v1

    tf.compat.v1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 224, 224, 3])
        calibrate = {"decay": 0.0, "epsilon": 0.001, "updates_collections": tf.compat.v1.GraphKeys.UPDATE_OPS}
        with slim.arg_scope(inception_v1.inception_v1_arg_scope()):
            with slim.arg_scope([slim.conv2d], normalizer_params=calibrate):  # moving stats := this batch's
                inception_v1.inception_v1(x, num_classes=1001, is_training=True)
            logits, end_points = inception_v1.inception_v1(x, num_classes=1001, is_training=False, reuse=True)
        features = graph.get_tensor_by_name("InceptionV1_1/Logits/MaxPool_0a_7x7/AvgPool:0")
        variables = tf.compat.v1.global_variables()
        names = [v.op.name for v in variables]
        shapes = [tuple(v.shape.as_list()) for v in variables]
        weights = synthetic.generate(names, shapes, "hwio", SEEDS["slim"], GAINS["slim"])
        updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for variable, name in zip(variables, names):
                if name in weights:
                    variable.load(weights[name], session)
            session.run(updates, {x: synthetic.images(**CALIBRATION_IMAGES)})
            for variable, name in zip(variables, names):
                if synthetic.is_stat(name):  # the values the fixture can hold
                    variable.load(session.run(variable).astype(np.float16).astype(np.float32), session)
            saver_v1 = tf.compat.v1.train.Saver(variables, write_version=tf.compat.v1.train.SaverDef.V1)
            saver_v1.save(session, str(out / "slim_v1.ckpt"), write_meta_graph=False)
            tf.compat.v1.train.Saver(variables).save(session, str(out / "slim_v2" / "model.ckpt"),
                                                     write_meta_graph=False)
            logits_value, features_value = session.run([logits, features], {x: synthetic.images(**EVAL_IMAGES)})
            values = dict(zip(names, session.run(variables)))
    stats = {name: values[name] for name in names if synthetic.is_stat(name)}
    outputs = {"logits": logits_value, "features": features_value.reshape(len(features_value), -1)}
    outputs.update({f"{key}_float64": value for key, value in _slim_float64(values).items()})
    return record(names, shapes, stats, outputs, "slim")


def _slim_float64(values: dict) -> dict:
    """The same slim network in float64 (its variables take the input's dtype), loaded with `values`."""
    import tensorflow as tf
    import tf_slim as slim
    from tf_slim.nets import inception_v1

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float64, [None, 224, 224, 3])
        with slim.arg_scope(inception_v1.inception_v1_arg_scope()):
            logits, _ = inception_v1.inception_v1(x, num_classes=1001, is_training=False)
        features = graph.get_tensor_by_name("InceptionV1/Logits/MaxPool_0a_7x7/AvgPool:0")
        with tf.compat.v1.Session(graph=graph) as session:
            for variable in tf.compat.v1.global_variables():
                variable.load(values[variable.op.name].astype(np.float64), session)
            found = session.run([logits, features], {x: synthetic.images(**EVAL_IMAGES).astype(np.float64)})
    return {"logits": found[0], "features": found[1].reshape(len(found[1]), -1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--fixtures", type=Path, help="also write the small records the tests use here")
    parser.add_argument("--sources", nargs="+", default=[*SEEDS, "pooling"], choices=[*SEEDS, "pooling"])
    args = parser.parse_args()
    (args.out / "slim_v2").mkdir(parents=True, exist_ok=True)
    if len(args.sources) > 1:  # one process per framework: OpenCV's Caffe reader crashes after TensorFlow ran
        import subprocess

        for source in args.sources:
            command = [sys.executable, __file__, str(args.out), "--sources", source]
            command += ["--fixtures", str(args.fixtures)] if args.fixtures else []
            if subprocess.run(command).returncode != 0:
                return 1
        return 0
    makers = {"torchvision": torchvision_reference, "slim": slim_reference, "caffe": caffe_reference,
              "pooling": pooling_reference}
    for source in args.sources:
        start = time.perf_counter()
        result = makers[source](args.out)
        if source == "pooling":
            np.savez(args.out / "pooling.npz", **result)
            if args.fixtures:
                args.fixtures.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(args.fixtures / "pooling.npz", **result)
            print(f"pooling: {len(result)} ceil-mode cases")
            continue
        np.savez(args.out / f"{source}.npz", **result)
        if args.fixtures:
            args.fixtures.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.fixtures / f"{source}.npz", **compact(result))
        logits = result["logits"]
        print(f"{source}: logits {logits.shape}, spread (std) {logits.std():.3f}, top-1 {logits.argmax(1)}, "
              f"{time.perf_counter() - start:.1f} s")
    return 0


BVLC = Path(__file__).parent / "bvlc"
V1_TYPES = {"Convolution": "CONVOLUTION", "ReLU": "RELU", "Pooling": "POOLING", "LRN": "LRN", "Concat": "CONCAT",
            "InnerProduct": "INNER_PRODUCT", "Dropout": "DROPOUT", "Softmax": "SOFTMAX"}
V1_PARAMS = ("convolution_param", "pooling_param", "lrn_param", "inner_product_param", "dropout_param",
             "concat_param")


def caffe_deploy_with_aux(pb):
    """BVLC's deploy.prototxt plus the aux heads (`loss1/*`, `loss2/*`) of its train_val.prototxt, losses left out."""
    from google.protobuf import text_format

    deploy = text_format.Parse((BVLC / "deploy.prototxt").read_text(), pb.NetParameter())
    train = text_format.Parse((BVLC / "train_val.prototxt").read_text(), pb.NetParameter())
    for layer in train.layer:
        if layer.name.startswith(("loss1/", "loss2/")) and layer.type not in ("SoftmaxWithLoss", "Accuracy"):
            deploy.layer.add().CopyFrom(layer)
    return deploy


def caffe_blob_shapes(net) -> dict[str, list[tuple]]:
    """Blob shapes of every layer with weights, from the prototxt, with Caffe's own size rules (OpenCV checks them
    when it loads the weights)."""
    shapes, tops = {}, {}
    for layer in net.layer:
        if layer.type == "Input":
            tops[layer.top[0]] = tuple(layer.input_param.shape[0].dim[1:])
            continue
        c, h, w = tops[layer.bottom[0]]
        if layer.type == "Convolution":
            p = layer.convolution_param
            k, s, pad = p.kernel_size[0], (p.stride or [1])[0], (p.pad or [0])[0]
            shapes[layer.name] = [(p.num_output, c, k, k), (p.num_output,)]
            out = (p.num_output, (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1)
        elif layer.type == "Pooling":
            p = layer.pooling_param
            size = lambda n: -(-(n + 2 * p.pad - p.kernel_size) // p.stride) + 1  # noqa: E731  (ceil mode)
            out = (c, size(h), size(w))
        elif layer.type == "Concat":
            out = (sum(tops[bottom][0] for bottom in layer.bottom), h, w)
        elif layer.type == "InnerProduct":
            units = layer.inner_product_param.num_output
            shapes[layer.name] = [(units, c * h * w), (units,)]
            out = (units, 1, 1)
        else:
            out = (c, h, w)
        tops[layer.top[0]] = out
    return shapes


def caffe_reference(out: Path) -> dict:
    import tempfile

    import cv2
    from google.protobuf import text_format

    from make_caffe_fixtures import compile_schema

    pb = compile_schema(Path(tempfile.mkdtemp()))
    net = caffe_deploy_with_aux(pb)
    prototxt = out / "caffe_deploy_with_aux.prototxt"
    prototxt.write_text(text_format.MessageToString(net))
    blob_shapes = caffe_blob_shapes(net)
    names = [f"{layer}.blobs[{i}]" for layer, shapes in blob_shapes.items() for i in range(len(shapes))]
    shapes = [shape for layer_shapes in blob_shapes.values() for shape in layer_shapes]
    weights = synthetic.generate(names, shapes, "oihw", SEEDS["caffe"], GAINS["caffe"])

    model = pb.NetParameter(name=net.name)
    v1 = pb.NetParameter(name=net.name, input=["data"], input_dim=[1, 3, 224, 224])
    for layer in net.layer:
        if layer.type == "Input":
            continue
        entry = model.layer.add(name=layer.name, type=layer.type, bottom=layer.bottom, top=layer.top)
        old = v1.layers.add(name=layer.name, type=getattr(pb.V1LayerParameter, V1_TYPES[layer.type]),
                            bottom=layer.bottom, top=layer.top)
        for field in V1_PARAMS:
            if layer.HasField(field):
                getattr(old, field).CopyFrom(getattr(layer, field))
        for i in range(len(blob_shapes.get(layer.name, []))):
            array = weights[f"{layer.name}.blobs[{i}]"]
            blob = entry.blobs.add(data=array.ravel().tolist())
            blob.shape.dim.extend(array.shape)
            num, channels, height, width = (1,) * (4 - array.ndim) + array.shape
            old.blobs.add(num=num, channels=channels, height=height, width=width, data=array.ravel().tolist())
    stats = caffe_calibrate(prototxt, model, weights, blob_shapes)
    weights = synthetic.standardized(weights, stats)
    for entries in (model.layer, v1.layers):
        for layer in entries:
            for i, blob in enumerate(layer.blobs):
                blob.ClearField("data")
                blob.data.extend(weights[f"{layer.name}.blobs[{i}]"].ravel().tolist())
    (out / "caffe.caffemodel").write_bytes(model.SerializeToString())
    (out / "caffe_v1.caffemodel").write_bytes(v1.SerializeToString())

    outputs = {}
    for name in ("caffe.caffemodel", "caffe_v1.caffemodel"):
        reference = cv2.dnn.readNetFromCaffe(str(prototxt), str(out / name))
        reference.enableWinograd(False)  # OpenCV's Winograd 3x3 convolutions round ~4x more than direct ones
        images = synthetic.images(**EVAL_IMAGES)
        caffe_input = (images[..., ::-1] + 1) * 127.5 - np.array([104.0, 117.0, 123.0])  # BGR, 0-255, minus mean
        reference.setInput(np.ascontiguousarray(caffe_input.transpose(0, 3, 1, 2), dtype=np.float32))
        logits, features, aux1, aux2 = reference.forward(["loss3/classifier", "pool5/7x7_s1", "loss1/classifier",
                                                          "loss2/classifier"])
        found = {"logits": logits, "features": features.reshape(len(features), -1), "aux_1": aux1, "aux_2": aux2}
        for key, value in outputs.items():
            if not np.array_equal(value, found[key]):
                raise SystemExit(f"OpenCV gives different {key} for the V1 and the new-format caffemodel")
        outputs = found
    return record(names, shapes, stats, outputs, "caffe")


CAFFE_GAINS = {"conv1/7x7_s2": 100.0, "conv2/3x3": 100.0}  # they feed the LRNs: large enough to matter there


def caffe_input(images: np.ndarray) -> np.ndarray:
    """Our RGB [-1, 1] NHWC -> BVLC Caffe's input: BGR, 0-255, minus the mean, NCHW."""
    caffe = (images[..., ::-1] + 1) * 127.5 - np.array([104.0, 117.0, 123.0])
    return np.ascontiguousarray(caffe.transpose(0, 3, 1, 2), dtype=np.float32)


def caffe_calibrate(prototxt: Path, model, weights: dict, blob_shapes: dict) -> dict:
    """Caffe's GoogLeNet has no batch norm: like a data-dependent initialization, OpenCV's own forward pass gives
    each weighted layer's outputs on calibration images, and the layer is rescaled so each output channel has
    mean 0 and a set spread over them (CAFFE_GAINS; classifiers GAINS['caffe'] * 40). Returns, per layer, the
    per-channel scale of its weights and its new bias, which `synthetic.standardized` applies."""
    import cv2

    prototxt_bytes = np.frombuffer(prototxt.read_bytes(), np.uint8)
    model_bytes = np.frombuffer(model.SerializeToString(), np.uint8)
    calibration = caffe_input(synthetic.images(**CALIBRATION_IMAGES))
    stats, done = {}, {}
    for layer in blob_shapes:  # OpenCV takes setParam only before a net's first forward: a fresh net each time
        net = cv2.dnn.readNetFromCaffe(prototxt_bytes, model_bytes)
        net.enableFusion(False)  # the outputs before each in-place ReLU
        net.enableWinograd(False)
        for name, blobs in done.items():
            for i, blob in enumerate(blobs):
                net.setParam(net.getLayerId(name), i, blob)
        net.setInput(calibration)
        value = net.forward(layer).astype(np.float64)
        axes = (0, 2, 3) if value.ndim == 4 else (0,)
        target = GAINS["caffe"] * 40 if "classifier" in layer else CAFFE_GAINS.get(layer, 1.0)
        scale = (target / (value.std(axis=axes) + 1e-6)).astype(np.float16).astype(np.float32)
        bias = ((weights[f"{layer}.blobs[1]"] - value.mean(axis=axes)) * scale).astype(np.float16).astype(np.float32)
        stats[f"{layer}.scale"], stats[f"{layer}.blobs[1]"] = scale, bias
        done[layer] = (synthetic.scaled_kernel(weights[f"{layer}.blobs[0]"], scale), bias)
    return stats


if __name__ == "__main__":
    sys.exit(main())
