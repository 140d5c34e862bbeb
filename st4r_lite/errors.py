"""The one error type for input a user can fix: a bad file, size, name, path or option.

The library raises :class:`InputError` (a ``ValueError``, so plain ``except ValueError`` still catches it) when
what it was given is wrong, with a message that says what was wrong and what to do. The command line prints it
as one line, ``error: ...``, and exits with status 2; every other exception is a bug and keeps its traceback.

>>> try:
...     raise InputError("--frames must be >= 2, got 1: give a longer clip")
... except ValueError as err:
...     print(err)
--frames must be >= 2, got 1: give a longer clip
"""

from __future__ import annotations


class InputError(ValueError):
    """Input the user can fix (printed as ``error: <message>``, exit status 2, no traceback)."""


__all__ = ["InputError"]
