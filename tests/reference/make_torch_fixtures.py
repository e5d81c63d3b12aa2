"""Write the torch ``.pth`` fixtures of tests/pretrained/test_pretrained_torch.py with real torch, and what they
should read as.

Run with a Python that has torch (not the project's venv)::

    /work/refvenv/bin/python tests/reference/make_torch_fixtures.py

Writes into tests/fixtures/torch/: ``small_zip.pth`` and ``small_legacy.pth`` (one state dict in both formats),
``small_zip_bigendian.pth`` (the zip file re-written as a big-endian machine would, checked with torch.load),
``wrapped_state_dict.pth`` (``{"epoch": 3, "state_dict": sd}``), ``wrapped_model_legacy.pth`` (``{"model": sd}``)
and ``expected.npz`` (every tensor as numpy, bfloat16 as float32, plus ``__names__`` giving the order).
"""

from __future__ import annotations

import io
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "torch"


def small_state_dict() -> OrderedDict:
    """A state dict covering every supported dtype, a BatchNorm group, views, a 0-d and an empty tensor."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(3) + 0.5)
        bn.bias.copy_(torch.randn(3))
    bn.running_mean.copy_(torch.randn(3))
    bn.running_var.copy_(torch.rand(3) + 0.1)
    bn.num_batches_tracked.fill_(7)
    sd = bn.state_dict(prefix="bn.")
    sd["conv.weight"] = torch.nn.Parameter(torch.randn(4, 3, 2, 2))
    sd["float64"] = torch.randn(2, 3, dtype=torch.float64)
    sd["float16"] = torch.randn(5).to(torch.float16)
    sd["bfloat16"] = torch.tensor([1.0, -2.5, 3.140625, 1e-3, 65280.0]).to(torch.bfloat16)
    sd["int64"] = torch.tensor([-(2**40), 0, 2**40 + 3])
    sd["int32"] = torch.tensor([-(2**31), 5, 2**31 - 1], dtype=torch.int32)
    sd["int16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["int8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    sd["uint8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["bool"] = torch.tensor([[True, False], [False, True]])
    sd["transposed"] = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    shared = torch.arange(10, dtype=torch.int32) * 3
    sd["shared.head"] = shared[1:4]
    sd["shared.tail"] = shared[5:9].view(2, 2)
    sd["expanded"] = torch.tensor([1.5, 2.5]).expand(3, 2)
    sd["scalar"] = torch.tensor(2.5)
    sd["empty"] = torch.zeros(0, 3)
    return sd


def expected_arrays(sd: OrderedDict) -> dict[str, np.ndarray]:
    """Numpy copies of the tensors (bfloat16 as float32) and ``__names__``, their order."""
    arrays = {name: (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy().copy() for name, t in sd.items()}
    return {"__names__": np.array(list(sd)), **arrays}


def to_big_endian(source: Path, target: Path) -> None:
    """Re-write a zip-format file as torch on a big-endian machine would: swapped storages, byteorder 'big'."""
    loaded = torch.load(source, weights_only=True)
    dtypes = storage_dtypes(source)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            name = info.filename.split("/", 1)[1]
            if name == "byteorder":
                data = b"big"
            elif name.startswith("data/"):
                data = np.frombuffer(data, dtype=dtypes[name[5:]]).byteswap().tobytes()
            dst.writestr(info.filename, data)
    reloaded = torch.load(target, weights_only=True)
    assert all(torch.equal(loaded[k], reloaded[k]) for k in loaded), "torch reads the big-endian file differently"


def storage_dtypes(path: Path) -> dict[str, np.dtype]:
    """Storage key to numpy dtype, found by loading with a pickle hook that records each storage's type."""
    found: dict[str, np.dtype] = {}
    names = {"FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "u2",
             "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
             "ByteStorage": "u1", "BoolStorage": "u1"}

    class Recorder(torch.serialization.pickle.Unpickler):
        def find_class(self, module, name):
            return (module, name) if name.endswith("Storage") else (lambda *args: {})

        def persistent_load(self, pid):
            found[pid[2]] = np.dtype(names[pid[1][1]])
            return None

    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        try:
            Recorder(io.BytesIO(archive.read(pkl))).load()
        except AttributeError:
            pass
    return found


def check(path: Path, expected: dict[str, np.ndarray], unwrap: str | None = None) -> None:
    """torch.load(weights_only=True) reads ``path`` as ``expected``."""
    loaded = torch.load(path, weights_only=True)
    loaded = loaded[unwrap] if unwrap else loaded
    assert list(loaded) == list(expected["__names__"]), path
    for name, tensor in loaded.items():
        value = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).detach().numpy()
        assert value.dtype == expected[name].dtype and np.array_equal(value, expected[name]), (path, name)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    sd = small_state_dict()
    expected = expected_arrays(sd)
    np.savez(OUT / "expected.npz", **expected)
    torch.save(sd, OUT / "small_zip.pth")
    torch.save(sd, OUT / "small_legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": sd}, OUT / "wrapped_state_dict.pth")
    torch.save({"model": sd}, OUT / "wrapped_model_legacy.pth", _use_new_zipfile_serialization=False)
    to_big_endian(OUT / "small_zip.pth", OUT / "small_zip_bigendian.pth")
    for name in ("small_zip.pth", "small_legacy.pth", "small_zip_bigendian.pth"):
        check(OUT / name, expected)
    check(OUT / "wrapped_state_dict.pth", expected, "state_dict")
    check(OUT / "wrapped_model_legacy.pth", expected, "model")
    sizes = {p.name: p.stat().st_size for p in sorted(OUT.iterdir())}
    print(f"torch {torch.__version__}: wrote {sizes} ({sum(sizes.values())} bytes)")


if __name__ == "__main__":
    main()
