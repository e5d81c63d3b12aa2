"""What `--overwrite` may remove: only the files a run or a search of ours wrote, recognised by its record.

A directory's own files are described as a tree of name patterns (`fnmatch`): a pattern maps to
None for a file, or to the tree of a folder. `clear_owned` removes a directory's entries only after
`check_owned` has found that every entry in it, folders walked to the bottom, is one of them and
that the directory holds its record (`run.json`, `space.json`): a file of any other name, a
symbolic link, or our files without their record make it refuse, naming the file. Nothing is
ever removed because of a folder's name alone.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

from inception_keras.training.locking import LOCK_FILE
from inception_keras.utils.errors import UserError

Tree = dict  # name pattern -> None (a file) or a Tree (a folder)


class NotOursError(UserError):
    """`--overwrite` was asked to clear a directory holding files that are not ours."""


def temporaries(*names: str) -> dict:
    """The patterns of `inception_keras.utils.atomic`'s temporary files for `names` (`.best.keras.1a2b.keras`)."""
    return {f".{name}.*": None for name in names}


def _match(name: str, tree: Tree):
    """The pattern of `tree` that `name` matches, or None."""
    return next((pattern for pattern in tree if fnmatch.fnmatchcase(name, pattern)), None)


def foreign_entry(folder: Path, tree: Tree) -> Path | None:
    """The first entry under `folder` (sorted by name, depth first) that `tree` does not describe; None if none."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return folder
    for entry in entries:
        pattern = _match(entry.name, tree)
        if pattern is None or entry.is_symlink():
            return Path(entry.path)
        subtree = tree[pattern]
        if subtree is None:
            if not entry.is_file(follow_symlinks=False):
                return Path(entry.path)
        elif not entry.is_dir(follow_symlinks=False):
            return Path(entry.path)
        else:
            found = foreign_entry(Path(entry.path), subtree)
            if found is not None:
                return found
    return None


def check_owned(folder: Path, tree: Tree, record: str, what: str, nested: tuple[str, ...] = ()) -> None:
    """Raise NotOursError unless everything in `folder` is what a `what` writes, with its `record` beside it.

    `nested` names folders inside `folder` that hold a `what` of their own (a fine-tuning run's
    `head/`): each is checked the same way, and `folder` itself then needs no record when it
    holds nothing else.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    tree = {LOCK_FILE: None, **tree}
    foreign = foreign_entry(folder, {**tree, **{name: tree for name in nested}})
    if foreign is not None:
        raise NotOursError(f"--overwrite refused: {folder} holds {foreign}, which no {what} writes; --overwrite "
                           f"removes only what a {what} wrote there, so move that away or use another directory")
    for name in nested:
        check_owned(folder / name, tree, record, what)
    ours = [name for name in sorted(os.listdir(folder)) if name != LOCK_FILE and name not in nested]
    if ours and not (folder / record).is_file():
        raise NotOursError(f"--overwrite refused: {folder} holds {folder / ours[0]} but no {record}, so it cannot be "
                           f"told to be a {what}'s directory; delete what it holds yourself, or use another directory")


def clear_owned(folder: Path, tree: Tree, record: str, what: str, nested: tuple[str, ...] = ()) -> None:
    """`check_owned`, then remove every entry of `folder` (and of `nested`) but the lock file."""
    check_owned(folder, tree, record, what, nested)
    folder = Path(folder)
    if not folder.is_dir():
        return
    for name in os.listdir(folder):
        path = folder / name
        if name == LOCK_FILE:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
