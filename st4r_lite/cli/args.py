"""What every command group shares: argument types (user errors are ``st4r_lite.errors.InputError``)."""

from __future__ import annotations

import argparse


def _whole_number(text: str, minimum: int) -> int:
    """``text`` as an int >= ``minimum``, or argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (counts of steps, frames, clips)."""
    return _whole_number(text, 1)


def nonneg_int(text: str) -> int:
    """A whole number >= 0 (0 usually means "off")."""
    return _whole_number(text, 0)
