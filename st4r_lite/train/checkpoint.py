"""The training checkpoint's file: its format tag and its reader (written by ``train.loop.save_train_checkpoint``).

The reader never runs code from the file (``torch.load(weights_only=True)``: tensors and plain containers only)
and checks what resuming and exporting read, so that a truncated file, another format, a pickle or a file with
missing keys is one :class:`~st4r_lite.errors.InputError` line instead of a traceback mid-way.
"""

from __future__ import annotations

import pickle  # only for its exception type: nothing here calls pickle
from pathlib import Path

import torch

from st4r_lite.errors import InputError

__all__ = ["TRAIN_FORMAT", "REQUIRED", "load_train_checkpoint"]

TRAIN_FORMAT = "st4r_lite-train-v1"
# key -> the type its value must have (what resume and export read)
REQUIRED = {"config": dict, "model": dict, "train_config": dict, "optimizer": dict, "scheduler": dict,
            "state": dict, "rng": dict}


def load_train_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint written by :func:`save_train_checkpoint` (on CPU), checked.

    Raises FileNotFoundError when there is no file, InputError when it is not a complete training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {str(path)!r}; drop --resume to start a new run")
    hint = "expected the file written by `st4r-lite pretrain --out`"
    try:
        # TorchVersion (a str subclass) is allowed: early checkpoints stored torch.__version__ unconverted
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if "unsupported global" in ln.lower()]
        if not lines:  # not a pickle of objects at all: another format, or garbage
            raise InputError(f"{str(path)!r} is not a readable training checkpoint (another format, or damaged); "
                             f"{hint}") from None
        first = lines[0]
        raise InputError(f"{str(path)!r} holds objects other than tensors and plain values, which st4r-lite "
                         f"never loads (a pickle can run code): {first[:200]}; {hint}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"{str(path)!r} is not a readable training checkpoint (truncated, or another format: "
                         f"{first[:200]}); {hint}") from None
    if not isinstance(blob, dict) or blob.get("format") != TRAIN_FORMAT:
        raise InputError(f"{str(path)!r} is not a st4r_lite training checkpoint (no format tag {TRAIN_FORMAT!r}: "
                         f"a model file has no optimiser state); {hint}")
    wrong = [k for k, kind in REQUIRED.items() if not isinstance(blob.get(k), kind)]
    if wrong:
        raise InputError(f"{str(path)!r} is an incomplete training checkpoint: missing or malformed "
                         f"{', '.join(wrong)}; {hint}")
    if not isinstance(blob["state"].get("step"), int) or not isinstance(blob["rng"].get("torch"), torch.Tensor):
        raise InputError(f"{str(path)!r} is an incomplete training checkpoint (state.step or rng.torch); {hint}")
    return blob
