"""Small runtime helpers shared by the library, the CLI and the notebooks.

- ``quick_mode()``: the notebooks' and demos' fast path (``ST4R_QUICK=1``, also on when ``CI`` is set).
- ``pick_device()``: "cuda" when available, else "cpu" (or what the user asked for, checked).
- ``repo_data_dir()``: where the shipped artefacts (``data/``) live.
- ``atomic_write(path)``: write to a temporary file beside the target and rename it into place only when the
  writer finished, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def quick_mode() -> bool:
    """True when ``ST4R_QUICK`` is set to a true value, or when ``CI`` is set and ``ST4R_QUICK`` is not.

    >>> import os; os.environ["ST4R_QUICK"] = "0"; quick_mode()
    False
    """
    flag = os.environ.get("ST4R_QUICK")
    if flag is not None:
        return flag.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(os.environ.get("CI"))


def pick_device(requested: str | None = None) -> torch.device:
    """The device to run on: ``requested`` if given (checked), else CUDA when available, else CPU."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {requested!r} was asked for, but torch sees no CUDA GPU on this machine; "
            "use --device cpu (or leave --device out to pick automatically)"
        )
    return device


def repo_data_dir() -> Path:
    """The folder of shipped artefacts: ``$ST4R_DATA`` if set, else ``data/`` at the repository root."""
    env = os.environ.get("ST4R_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data"


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) if needed and check that files can be written there.

    Raises ``ValueError`` with a clear message when it exists as a file or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {str(path)!r} exists and is not a folder; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"cannot write to output folder {str(path)!r}: {err.strerror or err}") from err
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; on success rename it to ``path``, on error delete it.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "a.txt", "w") as f:
    ...     _ = f.write("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (and numpy's, if used) and return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
