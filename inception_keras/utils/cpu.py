"""The CPU this process runs on: its instruction sets, and the TensorFlow setting that follows from them.

TensorFlow's x86-64 wheels carry oneDNN kernels but turn them on by default only on CPUs with
AVX512-VNNI, AVX512-BF16 or AMX (TensorFlow RFC 400, "Enabling oneDNN operations for x86 CPUs");
on older x86 CPUs (AVX2 only: AMD Zen 1-3, Intel before Cascade Lake) Eigen's kernels run instead.
There oneDNN is much faster for these networks: measured on an AMD EPYC (Zen 1, AVX2, 2 cores),
googlenet_mini trains 2.1x and googlenet_torchvision 1.4x faster in float32. So importing
`inception_keras` turns oneDNN on (`TF_ENABLE_ONEDNN_OPTS=1`) unless the variable is set already
(`TF_ENABLE_ONEDNN_OPTS=0` keeps Eigen) or TensorFlow was imported first (then it cannot change: Keras imports
TensorFlow, so `import keras` first does that too). In that last case, with oneDNN off on such a CPU, the import
warns once (`warn_if_onednn_off`): on an AMD EPYC Zen 3 (2 cores, batch 32, 224 px, googlenet_torchvision float32)
training runs at 8.1 images/s instead of 12.95 (1.6x slower), inference at 42.1 instead of 50.1.

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
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # u8 x s8 dot products in 32 bits, no saturation
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")  # TF turns it on


class OneDNNOffWarning(UserWarning):
    """TensorFlow was imported before this package with its faster oneDNN kernels off."""


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


def int8_dot_product_flags(flags: frozenset[str] | None = None) -> frozenset[str]:
    """The flags among INT8_DOT_PRODUCT_FLAGS this CPU has: x86 without them sums u8 x s8 products in 16 bits."""
    return (cpu_flags() if flags is None else flags) & frozenset(INT8_DOT_PRODUCT_FLAGS)


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and family, and the instruction sets that matter here: e.g. 'AMD EPYC (family 25 model
    1; AVX2, no AMX)'."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            info = file.read().split("\n\n")[0]
    except OSError:
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = cpu_flags(cpuinfo)
    sets = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"),
                                    ("avx_vnni", "AVX-VNNI"), ("avx512_bf16", "AVX512-BF16"),
                                    ("amx_bf16", "AMX-BF16")) if flag in flags]
    if "amx_bf16" not in flags:
        sets.append("no AMX")
    return (f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')} model "
            f"{fields.get('model', '?')}; {', '.join(sets)})")


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


def tensorflow_onednn_enabled() -> bool | None:
    """Whether the TensorFlow imported in this process runs its oneDNN kernels; None when not known."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def warn_if_onednn_off(environ: Mapping[str, str] = os.environ, modules: Mapping = sys.modules,
                       machine: str | None = None, flags: frozenset[str] | None = None, enabled=None) -> bool:
    """Warn (once: an OneDNNOffWarning) where TensorFlow was imported before this package on an x86-64 CPU on which
    it leaves oneDNN off (no AVX512-VNNI, AVX512-BF16, AVX-VNNI or AMX) and nobody chose that with
    TF_ENABLE_ONEDNN_OPTS. `enabled`: a function telling whether oneDNN is on (default: TensorFlow's own answer).
    Returns whether it warned."""
    if (machine or platform.machine()).lower() not in X86_64 or "tensorflow" not in modules \
            or ONEDNN_VARIABLE in environ:
        return False
    flags = cpu_flags() if flags is None else flags
    if any(flag in flags for flag in ONEDNN_DEFAULT_FLAGS):
        return False
    if (enabled or tensorflow_onednn_enabled)() is not False:
        return False
    import warnings

    warnings.warn("TensorFlow was imported before inception_keras, with its oneDNN kernels off on this CPU (no "
                  "AVX512-VNNI/BF16 or AMX): training runs about 1.6x slower here. Set TF_ENABLE_ONEDNN_OPTS=1 "
                  "before Python starts, or import inception_keras before keras and tensorflow "
                  "(docs/performance.md)", OneDNNOffWarning, stacklevel=3)
    return True
