"""The training checkpoint's file: its format tag and its reader (written by ``train.loop.save_train_checkpoint``)."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["TRAIN_FORMAT", "load_train_checkpoint"]

TRAIN_FORMAT = "st4r_lite-train-v1"


def load_train_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint written by :func:`save_train_checkpoint` (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training checkpoint at {str(path)!r}; drop --resume to start a new run")
    # TorchVersion (a str subclass) is allowed: early checkpoints stored torch.__version__ unconverted
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != TRAIN_FORMAT:
        raise ValueError(f"{str(path)!r} is not a st4r_lite training checkpoint (no optimiser state); "
                         "resume needs the file written by `st4r-lite pretrain --out`")
    return blob
