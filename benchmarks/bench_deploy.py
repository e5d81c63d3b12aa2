"""Inference speed of googlenet_torchvision at 224 px in each deployment runtime, against torchvision, in one run.

    make bench-deploy        # sets up the reference venv (.venv-ref, torch + torchvision) first
    python benchmarks/bench_deploy.py [--rounds 3] [--latency-calls 20] [--throughput-calls 3]

What `inception-keras export` writes, run as a user deploys it: the Keras model in process and the SavedModel
(each in a `peer_worker.py` process of its own, as `bench_peer.py` runs them), the ONNX, LiteRT and OpenVINO
exports in float32 and int8 (`export_model`, verified as on export, then run with every core: onnxruntime's
default, the LiteRT interpreter with `num_threads`, OpenVINO's CPU plugin with the f32 precision hint the export
is checked with), and torchvision's googlenet (channels_last, eval, `torch.inference_mode`, from the reference
venv), each process doing inference only, as a server does: a torch process that has taken one or two training
steps first (as `bench_peer.py`'s warm-up does) infers 1.3-1.7x faster at batch 32 (78-104 against 53-67 images/s
on 2 Zen 5 cores; flushing denormals changes nothing), so its ratios here are against torch's inference-only
speed. Weights are the deterministic initialization. int8 is calibrated on noise images, so its accuracy here
means nothing: the accuracy of int8 exports is measured on the embedded targets (docs/export.md,
tests/exports/test_quantize.py).

Batch 1: the median and 90th percentile of single-image calls (latency); batch 32: images/s of the median call
(throughput). Rounds interleave the runtimes so drift hits all alike. Writes benchmarks/results/bench_deploy.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_peer import Worker  # noqa: E402
from benchlib import Results, cpu_name  # noqa: E402

SIZE, BATCH = 224, 32
SPEC = "googlenet_torchvision"
GOALS = {"float_vs_torch": 1.3, "int8_vs_float": 2.0}


def export_all(out: Path) -> dict:
    """Every format's export of googlenet_torchvision (float32, and int8 where there is one) under `out`."""
    import numpy as np
    import tensorflow as tf

    from inception_keras import build_model, get_spec
    from inception_keras.data import DataSplits
    from inception_keras.export import export_model
    from inception_keras.export.quantize import Int8Options

    spec = get_spec(SPEC)
    model = build_model(spec.without_aux())
    names = [str(i) for i in range(spec.head.classes)]
    rng = np.random.default_rng(0)

    def noise(count):
        return tf.data.Dataset.from_tensor_slices((rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8),
                                                   rng.integers(0, spec.head.classes, count)))

    data = DataSplits("noise", noise(64), noise(32), names, 64, 32, (SIZE, SIZE, 3))
    int8 = Int8Options(data, calibration_steps=2, max_accuracy_drop=100.0, validation_images=32)
    exports = {}
    for fmt in ("onnx", "litert", "openvino"):
        for precision in ("float32", "int8"):
            start = time.perf_counter()
            result = export_model(model, spec, names, out, name=f"{fmt}_{precision}", format=fmt,
                                  int8=int8 if precision == "int8" else None)
            exports[(fmt, precision)] = (Path(result.path), result.artifact_bytes)
            print(f"  {fmt} {precision}: exported and verified in {time.perf_counter() - start:.0f} s, "
                  f"{result.artifact_bytes / 1e6:.1f} MB", flush=True)
    return exports


def time_calls(run, x, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return times


def summarize(single: list[float], batched: list[float]) -> dict:
    single = sorted(single)
    return {"batch1_median_ms": round(statistics.median(single) * 1e3, 2),
            "batch1_p90_ms": round(single[min(len(single) - 1, int(0.9 * len(single)))] * 1e3, 2),
            "batch32_images_per_s": round(BATCH / statistics.median(batched), 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-calls", type=int, default=20, help="batch-1 calls per runtime and round")
    parser.add_argument("--throughput-calls", type=int, default=3, help="batch-32 calls per runtime and round")
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    parser.add_argument("--out", default=str(HERE / "results" / "bench_deploy.json"))
    args = parser.parse_args(argv)
    import numpy as np

    print(f"{SPEC} at {SIZE} px; {cpu_name()}, {os.cpu_count()} cores", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_deploy_"))
    print("exporting (each export is run and checked in its runtime):", flush=True)
    exports = export_all(work)
    rng = np.random.default_rng(1)
    inputs = {1: rng.uniform(-1, 1, (1, SIZE, SIZE, 3)).astype("float32"),
              BATCH: rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype("float32")}
    from inception_keras.export.formats import load_runner

    calls = {("in process", fmt, precision): load_runner(path, fmt) for (fmt, precision), (path, _) in exports.items()}
    peers = {}
    for framework, mode in (("keras", "infer"), ("keras", "serve"), ("torch", "infer")):
        for batch in (1, BATCH):
            worker_args = argparse.Namespace(keras_python=sys.executable, peer_python=args.peer_python, batch=batch,
                                             size=SIZE, device="cpu", keras_backend="tensorflow")
            peers[(framework, mode, batch)] = Worker(framework, worker_args)
    timings: dict = {}
    for round_index in range(args.rounds + 1):  # round 0 warms up every runtime and is not counted
        for key, run in calls.items():
            for batch, count in ((1, args.latency_calls), (BATCH, args.throughput_calls)):
                measured = time_calls(run, inputs[batch], count if round_index else 2)
                if round_index:
                    timings.setdefault((key[1], key[2]), {}).setdefault(batch, []).extend(measured)
        for (framework, mode, batch), worker in peers.items():
            count = (args.latency_calls if batch == 1 else args.throughput_calls) if round_index else 2
            measured = worker.run(mode, "float32", count)["times"]
            if round_index:
                timings.setdefault((framework, mode), {}).setdefault(batch, []).extend(measured)
        print(f"round {round_index} done" + (" (warm-up)" if not round_index else ""), flush=True)
    for worker in peers.values():
        worker.close()

    labels = {("keras", "infer"): "Keras (in process, TensorFlow)", ("keras", "serve"): "SavedModel (BN folded)",
              ("torch", "infer"): "torchvision (channels_last)"}
    rows = []
    for key, times in timings.items():
        label = labels.get(key) or f"{dict(onnx='ONNX Runtime', litert='LiteRT', openvino='OpenVINO')[key[0]]} {key[1]}"
        size = exports[key][1] if key in exports else None
        rows.append({"runtime": label, "format": key[0], "precision": key[1] if key in exports else "float32",
                     "export": key != ("keras", "infer") and key[0] != "torch", "artifact_bytes": size,
                     **summarize(times[1], times[BATCH])})
    torch_row = next(row for row in rows if row["format"] == "torch")
    for row in rows:
        row["batch32_vs_torchvision"] = round(row["batch32_images_per_s"] / torch_row["batch32_images_per_s"], 2)
        row["batch1_vs_torchvision"] = round(torch_row["batch1_median_ms"] / row["batch1_median_ms"], 2)
        if row["precision"] == "int8":
            float_row = next(r for r in rows if r["format"] == row["format"] and r["precision"] == "float32")
            row["int8_vs_float32"] = round(row["batch32_images_per_s"] / float_row["batch32_images_per_s"], 2)
    fastest_float = max((r for r in rows if r["precision"] == "float32" and r["export"]),
                        key=lambda r: r["batch32_images_per_s"])
    summary = {"fastest_float": fastest_float["runtime"],
               "fastest_float_vs_torchvision": fastest_float["batch32_vs_torchvision"],
               "goal_float_vs_torchvision": GOALS["float_vs_torch"],
               "best_int8_vs_float32": max(r.get("int8_vs_float32", 0) for r in rows),
               "goal_int8_vs_float32": GOALS["int8_vs_float"]}
    results = Results("bench_deploy", "Deployment runtimes", "bench-deploy",
                      f"`benchmarks/bench_deploy.py`: `{SPEC}` at {SIZE} px, float32 input, in every runtime "
                      f"`inception-keras export` writes for, float32 and int8, each export written and verified by "
                      f"`export_model` (int8 calibrated on noise images: its speed only; the accuracy of int8 "
                      f"exports on the embedded targets is in [Export](export.md#int8)), run with every core "
                      f"(ONNX Runtime's default, LiteRT's `num_threads`, OpenVINO's CPU plugin with the f32 "
                      f"precision hint the export is checked with); the Keras model and the SavedModel in processes "
                      f"of their own, torchvision's googlenet (channels_last, eval, `torch.inference_mode`) from the "
                      f"reference venv; every process does inference only (a torch process that took training steps "
                      f"first, as in `make bench-peer`, infers 1.3-1.7× faster at batch {BATCH}: compare the "
                      f"torchvision inference speed there). {args.rounds} rounds interleave all runtimes after a "
                      f"warm-up round; batch 1: "
                      f"{args.rounds * args.latency_calls} calls each (median and 90th percentile), batch {BATCH}: "
                      f"{args.rounds * args.throughput_calls} calls each (images/s of the median call).")
    lines = [f"| runtime | batch 1 median (p90) ms | batch {BATCH} images/s | × torchvision (batch {BATCH}) | "
             f"int8 × float32 | file MB |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        size = f"{row['artifact_bytes'] / 1e6:.1f}" if row["artifact_bytes"] else ""
        lines.append(f"| {row['runtime']} | {row['batch1_median_ms']:.1f} ({row['batch1_p90_ms']:.1f}) | "
                     f"{row['batch32_images_per_s']:.1f} | {row['batch32_vs_torchvision']:.2f} | "
                     f"{row.get('int8_vs_float32', '')} | {size} |")
    results.add(lines)
    keras_row = next(row for row in rows if not row["export"] and row["format"] == "keras")
    best_int8 = max((r for r in rows if "int8_vs_float32" in r), key=lambda r: r["int8_vs_float32"])
    vs_keras = fastest_float["batch32_images_per_s"] / keras_row["batch32_images_per_s"]
    results.add(f"Fastest float32 export: {summary['fastest_float']}, "
                f"**{summary['fastest_float_vs_torchvision']:.2f}×** torchvision at batch {BATCH} (goal ≥ "
                f"{GOALS['float_vs_torch']}×; {vs_keras:.2f}× "
                f"the Keras model in the same run). Best int8 speed-up over the same runtime's float32: "
                f"{best_int8['runtime']}, **{best_int8['int8_vs_float32']:.2f}×** "
                f"(goal ≥ {GOALS['int8_vs_float']}×).")
    results.figures = {"model": SPEC, "size": SIZE, "batch": BATCH, "args": vars(args), "rows": rows,
                       "summary": summary}
    results.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
