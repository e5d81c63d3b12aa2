"""Keras against torchvision on the same machine, in one run: GoogLeNet training and inference, float32 and bf16.

    make bench-peer                    # sets up the reference venv (.venv-ref, torch + torchvision) first
    python benchmarks/bench_peer.py [--batch 32] [--size 224] [--rounds 5] [--jit] [--memory]
    python benchmarks/bench_peer.py --device gpu --precisions bf16 --memory \
        --keras-python python3 --peer-python python3       # a GPU machine with torch and JAX, no TensorFlow

Same network (Keras `googlenet_torchvision` vs torchvision `googlenet`, aux heads on, loss weights
0.3), same batch and size, same optimizer (SGD momentum 0.9), synthetic data. The peer is set up as a
PyTorch expert would: channels_last, `torch.autocast("cpu", torch.bfloat16)` for bf16, all cores;
Keras uses `mixed_bfloat16`. Each framework runs in a long-lived process of its own
(`peer_worker.py`); rounds interleave the two so drift hits both; the figure is the median step
after warm-up. `--memory` also measures the peak RSS of a process that only trains (fresh process
per framework and precision), and the most tensor bytes one step allocates at once, as each framework's own
allocator counts them (TensorFlow's allocator statistics; torch's profiler): what a step needs, apart from how
each allocator holds memory. Only ratios measured in one run are comparable across machines.

The roofline columns put each speed against the machine's arithmetic ceiling, measured in the same
run: the fastest N×N matrix product (N = 2048, 4096) either framework computes in that precision
(oneDNN in both). Work per image is the cost model's multiply-adds × 2 (inference) and ≈ 3× that
with aux heads (training: forward, input and weight gradients). "ceiling" is that peak over
torch's speed: the most any implementation of the same arithmetic could beat torch by; a goal
above it cannot be met on this machine without doing less arithmetic.

`--device gpu` runs the same comparison on a GPU: torch on CUDA with `torch.autocast` bf16 and
channels_last, Keras on its JAX backend (`mixed_bfloat16`); the memory rows are then the device
allocators' peak of a step (RSS is host memory there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from benchlib import Results, cpu_name  # noqa: E402
GOALS = {("train", "float32"): 1.1, ("train", "bf16"): 1.0, ("infer", "float32"): 1.3, ("infer", "bf16"): 1.3,
         ("serve", "float32"): 1.3, ("serve", "bf16"): 1.3}
MODES = {"infer": "inference (Keras model)", "serve": "inference (exported: BN folded)", "train": "training"}
GEMM_SIZES = (2048, 4096)
GEMM_PROBE, GEMM_LIMIT_S = 1024, 10.0


class Worker:
    def __init__(self, framework: str, args: argparse.Namespace, jit: bool = False):
        python = args.keras_python if framework == "keras" else args.peer_python
        command = [python, str(HERE / "peer_worker.py"), framework, "--batch", str(args.batch),
                   "--size", str(args.size), "--device", args.device]
        env = {**os.environ, "KERAS_BACKEND": args.keras_backend} if framework == "keras" else None
        self.process = subprocess.Popen(command + (["--jit"] if jit else []), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"benchmark worker {self.process.args[2]} died (exit {self.process.wait()})")
        return json.loads(line)

    def _ask(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._read()

    def run(self, mode: str, precision: str, steps: int) -> dict:
        return self._ask(f"run {mode} {precision} {steps}")

    def step_tensors(self, mode: str, precision: str, steps: int) -> dict:
        return self._ask(f"tensors {mode} {precision} {steps}")

    def run_gemm(self, n: int, precision: str, steps: int) -> dict:
        return self._ask(f"gemm {n} {precision} {steps}")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def speed(workers: dict, configs: list, batch: int, rounds: int, steps: int, warmup: int) -> dict:
    """Images/s per (framework, mode, precision): median step time over interleaved rounds."""
    times = {(name, *config): [] for name in workers for config in configs}
    for config in configs:
        for worker in workers.values():
            worker.run(*config, warmup)
    for round_index in range(rounds):
        for config in configs:
            order = list(workers) if round_index % 2 == 0 else list(reversed(workers))
            for name in order:
                times[(name, *config)] += workers[name].run(*config, steps)["times"]
    return {key: batch / statistics.median(values) for key, values in times.items()}


def gemm_peak(workers: dict, precisions: list, steps: int = 5) -> dict:
    """precision -> (GFLOP/s, framework, N): the fastest N×N product any worker computes (median of `steps`).
    A size whose product would take over GEMM_LIMIT_S (extrapolated from a GEMM_PROBE product) is skipped for that
    worker: bf16 without native arithmetic can be pathological (torch on an AVX2 Zen 1: 106 s for one 2048²)."""
    best = {}
    for precision in precisions:
        candidates = []
        for name, worker in workers.items():
            probe = min(worker.run_gemm(GEMM_PROBE, precision, 2)["times"])
            candidates.append((2 * GEMM_PROBE**3 / probe / 1e9, name, GEMM_PROBE))
            for n in GEMM_SIZES:
                if probe * (n / GEMM_PROBE) ** 3 > GEMM_LIMIT_S:
                    break
                times = worker.run_gemm(n, precision, steps + 1)["times"][1:]
                candidates.append((2 * n**3 / statistics.median(times) / 1e9, name, n))
        best[precision] = max(candidates, key=lambda found: found[0])
    return best


def gflop_per_image(size: int) -> dict:
    """mode -> GFLOP per image of googlenet_torchvision at `size` px, from the cost model."""
    from inception_keras import cost, get_spec

    network = cost.network_cost(get_spec("googlenet_torchvision").with_input_size(size))
    forward = 2 * network.inference_macs / 1e9
    return {"infer": forward, "serve": forward, "train": 3 * 2 * network.total_macs / 1e9}


def peak_memory(framework: str, precision: str, args: argparse.Namespace, steps: int = 5) -> dict:
    """Of a fresh process training one model for `steps` steps: peak RSS, peak RSS above start-up, and then the
    most tensor bytes one step has allocated at once (its own allocator's count; 3 more steps, largest)."""
    worker = Worker(framework, args)
    try:
        answer = worker.run("train", precision, steps)
        tensors = worker.step_tensors("train", precision, 3)
    finally:
        worker.close()
    return {"peak": answer["peak_rss"], "delta": answer["peak_rss"] - worker.ready["rss"],
            "step_tensors": tensors["step_tensors"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per framework per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=["float32", "bf16"], choices=["float32", "bf16"])
    parser.add_argument("--modes", nargs="+", default=["infer", "serve", "train"], choices=list(MODES))
    parser.add_argument("--jit", action="store_true", help="add Keras with XLA (jit_compile=True)")
    parser.add_argument("--memory", action="store_true", help="also the peak memory of training (fresh processes)")
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-ref" / "bin" / "python"),
                        help="the Python with torch and torchvision")
    parser.add_argument("--keras-python", default=sys.executable, help="the Python with Keras and inception_keras")
    parser.add_argument("--keras-backend", choices=["tensorflow", "jax"],
                        help="default: tensorflow on a CPU, jax on a GPU (where TensorFlow may be missing)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: torch on CUDA (autocast bf16), Keras on JAX's default device")
    parser.add_argument("--json", type=Path, help="where to write the results (default: "
                                                  "benchmarks/results/bench_peer.json, bench_peer_gpu.json on a GPU)")
    args = parser.parse_args()
    args.keras_backend = args.keras_backend or ("jax" if args.device == "gpu" else "tensorflow")
    if args.jit and args.keras_backend != "tensorflow":
        parser.error("--jit compares TensorFlow with and without XLA; JAX always compiles with XLA")

    configs = [(mode, precision) for precision in args.precisions for mode in args.modes]
    workers = {"keras": Worker("keras", args), "torch": Worker("torch", args)}
    if args.jit:
        workers["keras_xla"] = Worker("keras", args, jit=True)
    devices = "; ".join(workers[name].ready["device"] for name in ("keras", "torch"))
    report = Results("bench_peer" if args.device == "cpu" else "bench_peer_gpu", "Against torchvision",
                     "bench-peer" if args.device == "cpu" else "bench-gpu",
                     f"`benchmarks/bench_peer.py`: Keras `googlenet_torchvision` against torchvision `googlenet` "
                     f"({devices}), batch {args.batch}, {args.size} px, same SGD momentum 0.9 and aux losses (0.3), "
                     f"each in a long-lived process of its own, {args.rounds} interleaved rounds of {args.steps} steps "
                     f"after {args.warmup} warm-up, median step, synthetic data. \"% of peak\" is a speed times the "
                     f"work per image (cost model) over the machine's arithmetic ceiling measured in the same run (the "
                     f"fastest 2048² or 4096² matrix product either framework computes in that precision); "
                     f"\"ceiling\" is that peak over torch's speed: the most any implementation of the same "
                     f"arithmetic could beat torch by.")
    print(f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores ({devices}); GoogLeNet batch {args.batch}, "
          f"{args.size} px; {args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warm-up")
    try:
        found = speed(workers, configs, args.batch, args.rounds, args.steps, args.warmup)
        ceiling = gemm_peak({name: workers[name] for name in ("keras", "torch")}, args.precisions)
    finally:
        for worker in workers.values():
            worker.close()

    work = gflop_per_image(args.size)
    lines = ["| images/s | Keras | torchvision (channels_last) | ratio | goal | Keras % of peak | torch % of peak "
             "| ceiling |" + (" Keras XLA | XLA ratio |" if args.jit else ""),
             "|---|---:|---:|---:|---|---:|---:|---:|" + ("---:|---:|" if args.jit else "")]
    results = []
    for mode, precision in configs:
        keras_speed, torch_speed = found[("keras", mode, precision)], found[("torch", mode, precision)]
        ratio, goal = keras_speed / torch_speed, GOALS[(mode, precision)]
        peak = ceiling[precision][0]
        keras_share, torch_share = (speed * work[mode] / peak for speed in (keras_speed, torch_speed))
        verdict = "met" if ratio >= goal else f"NOT met (needs {goal * torch_share:.0%} of the peak)"
        row = (f"| {precision} {MODES[mode]} | {keras_speed:.1f} | {torch_speed:.1f} | **{ratio:.2f}** | "
               f"≥ {goal} {verdict} | {keras_share:.0%} | {torch_share:.0%} | {1 / torch_share:.2f} |")
        if args.jit:
            xla = found[("keras_xla", mode, precision)]
            row += f" {xla:.1f} | {xla / torch_speed:.2f} |"
        lines.append(row)
        results.append({"mode": mode, "precision": precision, "keras": keras_speed, "torch": torch_speed,
                        "ratio": ratio, "goal": goal, "keras_share_of_peak": keras_share,
                        "torch_share_of_peak": torch_share})
    report.add(lines)
    lines = []
    for precision, (flops, name, n) in ceiling.items():
        lines.append(f"Arithmetic ceiling, {precision}: {flops:.0f} GFLOP/s ({n}×{n} product through {name}); "
                     f"GoogLeNet {work['infer']:.2f} GFLOP per image forward, ≈ {work['train']:.2f} training.")
        results.append({"gemm_peak": precision, "gflops": flops, "framework": name, "n": n})
    report.add(" ".join(lines))
    if args.memory:
        lines = ["| peak memory of training | Keras | torchvision | Keras / torch | goal: not above torch |",
                 "|---|---:|---:|---:|---|"]
        for precision in args.precisions:
            keras = peak_memory("keras", precision, args)
            torch = peak_memory("torch", precision, args)
            rows = (("tensors of one step (own allocator)", "step_tensors"),)
            if args.device == "cpu":  # on a GPU the host's RSS is not where the training step's memory is
                rows += (("process peak RSS (5 steps)", "peak"), ("RSS above start-up", "delta"))
            for label, key in rows:
                if keras[key] is None or torch[key] is None:
                    continue
                ratio = keras[key] / torch[key]
                lines.append(f"| {precision}: {label} | {keras[key] / 1e9:.2f} GB | {torch[key] / 1e9:.2f} GB | "
                             f"**{ratio:.2f}** | {'met' if ratio <= 1 else 'NOT met'} |")
            results.append({"memory": precision, "keras": keras, "torch": torch})
        report.add(lines)
    report.figures = {"devices": devices, "batch": args.batch, "size": args.size, "results": results}
    report.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
