"""What every `inception-keras` subcommand shares: the user-error type, the parser, argument types.

Both `inception_keras.cli` (the entry point) and the modules that add subcommands
(`commands`, `commands_weights`, `search.cli`) import this module; none imports `cli`, so
`python -m inception_keras.cli` and the installed script raise and catch the same classes.
"""

from __future__ import annotations

import argparse
import math

from inception_keras.utils.errors import UserError, error_text  # noqa: F401  (error_text: re-exported for commands)


class CommandError(UserError):
    """A user error: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CommandError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def int_between(low: int, high: int):
    """An argument type: an integer from `low` to `high`, both included."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high:,}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high:,}, got {text!r}")
        return value

    return parse


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a seed, a process id)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _number(text: str) -> float:
    """`text` as a float; nan when it is not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def positive_float(text: str) -> float:
    """A finite number > 0 (`inf` and `nan` are refused)."""
    value = _number(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_float_at_most(maximum: float):
    """An argument type: a finite number in (0, `maximum`]."""

    def parse(text: str) -> float:
        value = positive_float(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text!r}")
        return value

    return parse


def host_port(text: str) -> str:
    """An argument type: HOST:PORT (an IPv6 host in brackets), the port 1 to 65535; the text as given."""
    from inception_keras.training.distribute import parse_host_port

    try:
        parse_host_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}, got {text!r}") from None
    return text


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def check_output_file(out: str, overwrite: bool, suffix: str = ".keras", flag: str = "--out"):
    """`out` as a Path once it can be written, checked before any work: the suffix; a file, not a directory, above
    it; nothing there (a symbolic link counts, even a dangling one) unless `overwrite`, and then only a file."""
    import os
    from pathlib import Path

    from inception_keras.utils.atomic import blocking_file

    path = Path(out)
    if path.suffix != suffix:
        raise CommandError(f"{flag} {path}: the file name must end in {suffix}")
    blocked = blocking_file(path)
    if blocked is not None:
        raise CommandError(f"{flag} {path}: {blocked} is a file, not a directory")
    if os.path.lexists(path):
        if path.is_symlink() and not overwrite:
            raise CommandError(f"{path} exists (a symbolic link{'' if path.exists() else ' to nothing'}); give "
                               f"another {flag}, or --overwrite to replace the link")
        if path.exists() and not path.is_file():
            raise CommandError(f"{flag} {path} exists and is not a file; --overwrite replaces only a file")
        if not overwrite:
            raise CommandError(f"{path} exists; give another {flag}, or --overwrite")
    return path


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process's stderr (fd 2) closed, once.

    TensorFlow's C++ runtime prints an absl warning and a oneDNN notice while it loads, which
    neither TF_CPP_MIN_LOG_LEVEL nor TF_ENABLE_ONEDNN_OPTS silence; the CLI's output stays what
    the user asked for. A missing TensorFlow is a UserError saying how to install it.
    """
    import os
    import sys

    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import tensorflow  # noqa: F401
    except ImportError as error:
        raise CommandError(f"TensorFlow cannot be imported ({error}); install it with "
                           f"`pip install inception-keras[cpu]` (or [gpu])") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="registered spec name (see `specs`) or a .yaml/.json file")
    parser.add_argument("--input-size", type=positive_int, metavar="N", help="square input size in pixels")
    parser.add_argument("--classes", type=positive_int, metavar="N", help="number of classes")


def spec_from_args(args: argparse.Namespace):
    from inception_keras.cost import validate
    from inception_keras.presets import resolve_spec

    spec = resolve_spec(args.spec)
    if args.input_size:
        spec = spec.with_input_size(args.input_size)
    if args.classes:
        spec = spec.with_classes(args.classes)
    return validate(spec)
