"""Keras against torchvision on the same machine, in one run: GoogLeNet training and inference, float32 and bf16.

    make bench-peer                    # sets up the reference venv (.venv-ref, torch + torchvision) first
    python benchmarks/bench_peer.py [--batch 32] [--size 224] [--rounds 5] [--jit] [--memory]

Same network (Keras `googlenet_torchvision` vs torchvision `googlenet`, aux heads on, loss weights
0.3), same batch and size, same optimizer (SGD momentum 0.9), synthetic data. The peer is set up as a
PyTorch expert would: channels_last, `torch.autocast("cpu", torch.bfloat16)` for bf16, all cores;
Keras uses `mixed_bfloat16`. Each framework runs in a long-lived process of its own
(`peer_worker.py`); rounds interleave the two so drift hits both; the figure is the median step
after warm-up. `--memory` also measures the peak RSS of a process that only trains (fresh process
per framework and precision). Only ratios measured in one run are comparable across machines.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GOALS = {("train", "float32"): 1.1, ("train", "bf16"): 1.0, ("infer", "float32"): 1.3, ("infer", "bf16"): 1.3,
         ("serve", "float32"): 1.3, ("serve", "bf16"): 1.3}
MODES = {"infer": "inference (Keras model)", "serve": "inference (exported: BN folded)", "train": "training"}


class Worker:
    def __init__(self, python: str, framework: str, batch: int, size: int, jit: bool = False):
        command = [python, str(HERE / "peer_worker.py"), framework, "--batch", str(batch), "--size", str(size)]
        self.process = subprocess.Popen(command + (["--jit"] if jit else []), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"benchmark worker {self.process.args[2]} died (exit {self.process.wait()})")
        return json.loads(line)

    def run(self, mode: str, precision: str, steps: int) -> dict:
        self.process.stdin.write(f"run {mode} {precision} {steps}\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def cpu_name() -> str:
    """The CPU's model name and family, and the instruction sets that matter for bf16 (AVX-512 BF16, AMX)."""
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    sets = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                    ("amx_bf16", "AMX-BF16")) if flag in flags]
    if "amx_bf16" not in flags:
        sets.append("no AMX")
    return (f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}; {', '.join(sets)})")


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


def peak_memory(python: str, framework: str, precision: str, batch: int, size: int) -> tuple[int, int]:
    """(peak RSS, peak RSS minus RSS after start-up) of a fresh process training one model for 3 steps."""
    worker = Worker(python, framework, batch, size)
    try:
        peak = worker.run("train", precision, 3)["peak_rss"]
    finally:
        worker.close()
    return peak, peak - worker.ready["rss"]


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
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-ref" / "bin" / "python"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    configs = [(mode, precision) for precision in args.precisions for mode in args.modes]
    print(f"{cpu_name()}, {len(__import__('os').sched_getaffinity(0))} cores; GoogLeNet batch {args.batch}, "
          f"{args.size} px; {args.rounds} interleaved rounds of {args.steps} steps after {args.warmup} warm-up")
    workers = {"keras": Worker(sys.executable, "keras", args.batch, args.size),
               "torch": Worker(args.peer_python, "torch", args.batch, args.size)}
    if args.jit:
        workers["keras_xla"] = Worker(sys.executable, "keras", args.batch, args.size, jit=True)
    try:
        found = speed(workers, configs, args.batch, args.rounds, args.steps, args.warmup)
    finally:
        for worker in workers.values():
            worker.close()

    lines = ["| images/s | Keras | torchvision (channels_last) | ratio | goal |" +
             (" Keras XLA | XLA ratio |" if args.jit else ""),
             "|---|---:|---:|---:|---|" + ("---:|---:|" if args.jit else "")]
    results = []
    for mode, precision in configs:
        keras_speed, torch_speed = found[("keras", mode, precision)], found[("torch", mode, precision)]
        ratio, goal = keras_speed / torch_speed, GOALS[(mode, precision)]
        row = (f"| {precision} {MODES[mode]} | {keras_speed:.1f} | "
               f"{torch_speed:.1f} | **{ratio:.2f}** | ≥ {goal} {'met' if ratio >= goal else 'NOT met'} |")
        if args.jit:
            xla = found[("keras_xla", mode, precision)]
            row += f" {xla:.1f} | {xla / torch_speed:.2f} |"
        lines.append(row)
        results.append({"mode": mode, "precision": precision, "keras": keras_speed, "torch": torch_speed,
                        "ratio": ratio, "goal": goal})
    print("\n".join(lines))
    if args.memory:
        print("\n| peak memory of training | Keras | torchvision | Keras / torch |\n|---|---:|---:|---:|")
        for precision in args.precisions:
            keras_peak, keras_delta = peak_memory(sys.executable, "keras", precision, args.batch, args.size)
            torch_peak, torch_delta = peak_memory(args.peer_python, "torch", precision, args.batch, args.size)
            print(f"| {precision}: process peak RSS | {keras_peak / 1e9:.2f} GB | {torch_peak / 1e9:.2f} GB | "
                  f"{keras_peak / torch_peak:.2f} |")
            print(f"| {precision}: above start-up | {keras_delta / 1e9:.2f} GB | {torch_delta / 1e9:.2f} GB | "
                  f"{keras_delta / torch_delta:.2f} |")
            results.append({"memory": precision, "keras_peak": keras_peak, "torch_peak": torch_peak,
                            "keras_delta": keras_delta, "torch_delta": torch_delta})
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "batch": args.batch, "size": args.size,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
