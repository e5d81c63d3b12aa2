"""The CPU this process runs on: its instruction sets, and the TensorFlow setting that follows from them.

TensorFlow's x86-64 wheels carry oneDNN kernels but turn them on by default only on CPUs with
AVX512-VNNI, AVX512-BF16 or AMX (TensorFlow RFC 400, "Enabling oneDNN operations for x86 CPUs");
on older x86 CPUs (AVX2 only: AMD Zen 1-3, Intel before Cascade Lake) Eigen's kernels run instead.
There oneDNN is much faster for these networks: measured on an AMD EPYC (Zen 1, AVX2, 2 cores),
googlenet_mini trains 2.1x and googlenet_torchvision 1.4x faster in float32. So importing
`inception_keras` turns oneDNN on (`TF_ENABLE_ONEDNN_OPTS=1`) unless the variable is set already
(`TF_ENABLE_ONEDNN_OPTS=0` keeps Eigen) or TensorFlow was imported first (then it cannot change).

bfloat16 arithmetic is native only with AVX512-BF16 (AMD Zen 4+, Intel Cooper Lake) or AMX (Intel
Sapphire Rapids+); elsewhere it is emulated and slower than float32 (`native_bf16`).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, MutableMapping

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_64 = ("x86_64", "amd64")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first processor in `cpuinfo`; empty where there is none (not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86, ARM
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16(flags: frozenset[str] | None = None, machine: str | None = None) -> bool | None:
    """Whether this x86-64 CPU computes bfloat16 natively (AVX512-BF16 or AMX); None when not known."""
    flags = cpu_flags() if flags is None else flags
    if (machine or platform.machine()).lower() not in X86_64 or not flags:
        return None
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def prefer_onednn(environ: MutableMapping[str, str] = os.environ, modules: Mapping = sys.modules,
                  machine: str | None = None) -> bool:
    """Turn on TensorFlow's oneDNN kernels for this process where TensorFlow would pick them itself only on
    newer CPUs: on x86-64, before TensorFlow is imported, unless TF_ENABLE_ONEDNN_OPTS is set. Where TensorFlow
    enables oneDNN anyway this changes nothing. Returns whether it set the variable."""
    if (machine or platform.machine()).lower() not in X86_64 or "tensorflow" in modules or ONEDNN_VARIABLE in environ:
        return False
    environ[ONEDNN_VARIABLE] = "1"
    return True
