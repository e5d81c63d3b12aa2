"""One process at a time in a directory: a lock file that names its holder.

```python
with DirectoryLock("runs/x", what="training run"):
    ...  # nobody else holds runs/x until the block ends, by return or exception
```

The lock is `DIR/.lock`, created with O_CREAT|O_EXCL (only one process can create it) and
holding JSON: `{"pid", "host", "started", "what", "token"}`. A second process gets a
`DirectoryInUseError` naming the holder. A lock left by a process that no longer runs on this
host (killed, SIGKILL included) is taken over with a note; one from another host cannot be
checked, so the message says which file to delete once that host's process is gone. Two
processes taking over the same stale lock at once cannot both win: the removal happens under
`flock` and only if the file still is the stale one.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from inception_keras.utils.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: stale locks are still taken over, without the guard against a race
    fcntl = None

LOCK_FILE = ".lock"
UNREADABLE_STALE_SECONDS = 60  # an unreadable lock file this old was left by a writer that died mid-write

_held_tokens: set[str] = set()


class LockError(UserError):
    """The directory cannot be locked (it cannot be created or written)."""


class DirectoryInUseError(LockError):
    """Another running process holds the directory's lock."""


def _describe(holder: dict) -> str:
    started = datetime.fromtimestamp(holder.get("started", 0))
    when = started.strftime("%H:%M:%S" if started.date() == datetime.now().date() else "%Y-%m-%d %H:%M:%S")
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {when}"


def _read(path: Path) -> dict | None:
    """The holder a lock file names; {} when it cannot be read; None when there is no lock file."""
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}


def _create(path: Path, holder: dict) -> bool:
    """Create the lock file holding `holder`; False if one exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(holder))
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _is_stale(path: Path, holder: dict) -> bool:
    """True when the holder cannot be running: a dead pid on this host, or an unreadable file left long ago."""
    if not holder:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_STALE_SECONDS
        except FileNotFoundError:
            return True
    if holder.get("host") != socket.gethostname():
        return False
    if holder["pid"] == os.getpid():
        return holder.get("token") not in _held_tokens
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _remove_if_unchanged(path: Path, stale: dict) -> bool:
    """Delete the lock file if it still is the one judged stale; True if this call deleted it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino or _read(path) != stale:
                return False
        except FileNotFoundError:
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)


class DirectoryLock:
    """An exclusive, cross-process lock on a directory (created if missing), as a context manager.

    Args:
        path: the directory.
        what: what the directory is, for messages ("training run", "search").
        note: where the note about taking over a stale lock goes (default: print).

    Raises:
        DirectoryInUseError: on entering, when another running process holds the lock.
        LockError: on entering, when the directory or its lock file cannot be created.
    """

    def __init__(self, path: str | os.PathLike, what: str = "directory", note: Callable[[str], None] = print):
        self.path = Path(path)
        self.file = self.path / LOCK_FILE
        self.what = what
        self.note = note
        self.holder: dict | None = None

    def acquire(self) -> "DirectoryLock":
        """Take the lock, or raise DirectoryInUseError naming the holder (LockError if it cannot be written)."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3),
              "what": self.what, "token": secrets.token_hex(8)}
        for _ in range(5):
            if self._create(me):
                self.holder = me
                _held_tokens.add(me["token"])
                return self
            found = _read(self.file)
            if found is None:
                continue
            if not _is_stale(self.file, found):
                raise DirectoryInUseError(self._in_use(found))
            if _remove_if_unchanged(self.file, found):
                held = f"was locked by {_describe(found)}, which no longer runs" if found else \
                    "held an old, unreadable lock file"
                self.note(f"note: {self.path} {held}: taking the lock over")
        raise DirectoryInUseError(f"{self.path}: could not take the lock {self.file} (other processes keep "
                                  f"taking it); try again")

    def _create(self, holder: dict) -> bool:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            return _create(self.file, holder)
        except OSError as error:
            raise LockError(f"{self.path}: cannot create the lock file {self.file} ({error.strerror or error})") \
                from None

    def release(self) -> None:
        """Give the lock back (a no-op when not held, or when someone else has taken the file over)."""
        if self.holder is None:
            return
        token = self.holder["token"]
        _held_tokens.discard(token)
        self.holder = None
        if (_read(self.file) or {}).get("token") == token:
            self.file.unlink(missing_ok=True)

    def _in_use(self, holder: dict) -> str:
        if not holder:
            return (f"{self.path} is locked by another process ({self.file} is being written or is damaged); "
                    f"if no process uses {self.path}, delete {self.file}")
        what = holder.get("what") or "another process"
        if holder.get("host") != socket.gethostname():
            return (f"{self.path} is in use by {_describe(holder)} ({what}); if no process there uses it any "
                    f"more, delete {self.file}")
        return (f"{self.path} is in use by {_describe(holder)} ({what}); wait for it to finish or stop it, or "
                f"use another directory")

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
