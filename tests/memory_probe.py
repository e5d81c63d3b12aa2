"""Peak memory of a reader refusing hostile files, against its normal read, each in a forked child of one fresh
interpreter (no TensorFlow unless the reader imports it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import importlib, json, os, sys
from inception_keras.utils.errors import UserError
module, name = sys.argv[1].split(":")
read = getattr(importlib.import_module(module), name)
for path in sys.argv[2:]:
    pid = os.fork()
    if pid == 0:
        try:
            read(path)
            os._exit(0)
        except UserError:
            os._exit(2)
        except BaseException:
            os._exit(3)
    _, status, usage = os.wait4(pid, 0)
    print(json.dumps([path, os.waitstatus_to_exitcode(status), usage.ru_maxrss]))
"""


def peak_rss(reader: str, paths: list[Path]) -> list[tuple[str, int, int]]:
    """(path, exit code, peak RSS in KiB) of `reader` ("module:function") reading each path: 0 read, 2 a
    UserError (a WeightsError, an ExportError, ...), 3 anything else."""
    done = subprocess.run([sys.executable, "-c", CHILD, reader, *map(str, paths)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    results = [tuple(json.loads(line)) for line in done.stdout.splitlines()]
    assert len(results) == len(paths), done.stderr
    return results


def assert_refused_within_twice(reader: str, normal: Path, hostile: list[Path]) -> None:
    """`reader` reads `normal`, and refuses every `hostile` file (a UserError) within twice that read's peak."""
    (_, normal_code, normal_rss), *refusals = peak_rss(reader, [normal, *hostile])
    assert normal_code == 0
    for path, code, rss in refusals:
        assert code == 2 and rss < 2 * normal_rss, (path, code, rss, normal_rss)
