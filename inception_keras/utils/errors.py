"""The project's error base and message helpers (imports nothing).

Every error caused by what a user gave (a spec, a file, a dataset, an argument) derives from
`UserError`; the CLI prints it as one line and exits with code 2.
"""

from __future__ import annotations

import re


class UserError(Exception):
    """Bad input or state the user can fix; the message says what and where, on one line."""


def error_text(error: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, without TensorFlow's `{{function_node ...}}` and `[Op:...]` noise."""
    text = str(error) or str(getattr(error, "message", "")) or type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:[^\]]*\]( name:\S*)?", "", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def short_repr(value, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, without building the whole repr of a huge or aliased structure."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, limit, limit
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 6
    try:
        text = shortener.repr(value)
    except ValueError:  # an int beyond Python's 4300-digit conversion limit
        text = f"<an integer of about {value.bit_length() * 0.30103:,.0f} digits>" if isinstance(value, int) else \
            f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."
