"""The one check every reader of the package makes before it reads a file: a regular file, not a directory, a
device (/dev/zero never ends), a FIFO (blocks without a writer) or a socket. Symbolic links are followed."""

from __future__ import annotations

import os
import stat

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def mode_problem(mode: int) -> str | None:
    """'not a regular file (a FIFO)' and the like for a file of `mode` (an `os.stat` result's) that is not a regular
    file; None for a regular one."""
    if stat.S_ISREG(mode):
        return None
    kind = next((kind for test, kind in _KINDS if test(mode)), "not a plain file")
    return f"not a regular file ({kind})"


def file_problem(path: str | os.PathLike) -> str | None:
    """`mode_problem` of what `path` names; None for a regular file, or for a path that cannot be looked at (the
    reader's own open then says why)."""
    try:
        return mode_problem(os.stat(path).st_mode)
    except (OSError, ValueError):
        return None
