"""Writing files so that a reader never sees half of one: a temporary file beside the target, then a rename.

A process killed mid-write (SIGKILL included) leaves the old file, or none, plus a `.NAME.*`
temporary that the next write of the same file ignores. Files get the permissions of a plain
`open()` under the process's umask (mkstemp alone would leave 0600).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `path` to write to; on success it replaces `path`, on error it is removed.

    `suffix` keeps writers that look at the extension happy (`model.save` wants `.keras`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def blocking_file(path: str | os.PathLike) -> Path | None:
    """The nearest existing path above `path` when it is not a directory (a file: `atomic_path` cannot create
    `path` under it), found before any work is done; else None."""
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return None if parent.is_dir() else parent


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
