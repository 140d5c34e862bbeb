"""One way to name a model, used by every ``--checkpoint`` / ``--model`` of every command: :func:`load`.

A model spec is one of
  - None: the shipped ``data/tiny.pt`` (``runtime.repo_data_dir``); when it is missing, an untrained tiny model
    with a warning (numbers are then meaningless, but the plumbing runs);
  - a path to a file written by ``save_checkpoint`` / ``st4r-lite export`` (its config is inside);
  - a released name (``st4rtrack_seq``, ``st4rtrack_pair``, ``monst3r``, ``dust3r``: ``pretrained.PRETRAINED``),
    loaded from the cache or downloaded (fails with what to download, offline);
  - ``fresh:PRESET`` (e.g. ``fresh:tiny``): an untrained model, seed 0, for plumbing tests and memory measurements;
  - an ``St4RTrack`` already built (returned as it is, moved to the device).
:func:`load` returns the model in float32 and eval mode; :func:`describe` says where it came from (for
result files: a file's sha256 prefix).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from st4r_lite.errors import InputError
from st4r_lite.model import pretrained
from st4r_lite.model.checkpoint import load_model
from st4r_lite.model.network import St4RTrack, build_model
from st4r_lite.runtime import repo_data_dir

__all__ = ["load", "describe", "default_checkpoint", "FRESH_PREFIX", "SPEC_HELP"]

FRESH_PREFIX = "fresh:"
SPEC_HELP = ("model: a file from `st4r-lite export`, a released name (" + ", ".join(sorted(pretrained.PRETRAINED))
             + ") or fresh:PRESET (untrained); default data/tiny.pt")


def default_checkpoint() -> Path:
    """The shipped tiny model's path (``data/tiny.pt``; may be missing in a bare checkout)."""
    return repo_data_dir() / "tiny.pt"


def _spec_name(spec) -> str | None:
    if spec is None or isinstance(spec, St4RTrack):
        return None
    return str(spec)


def load(spec=None, device: str | torch.device = "cpu", log: Callable[[str], None] = print) -> St4RTrack:
    """The model named by ``spec`` (see the module docstring) on ``device``, float32, eval mode.

    Raises FileNotFoundError for a path that does not exist, :class:`~st4r_lite.errors.InputError` for a file
    that is not a model of ours or a released name that is not cached offline, each saying what to do.
    """
    if isinstance(spec, St4RTrack):
        return spec.to(device).float().eval()
    if spec is None:
        path = default_checkpoint()
        if path.is_file():
            return load(path, device, log)
        log(f"warning: {path} is missing; using an UNTRAINED tiny model (fresh:tiny): numbers are meaningless. "
            "Make data/tiny.pt with the commands in README.md (st4r-lite pretrain ... && st4r-lite export ...)")
        return load(f"{FRESH_PREFIX}tiny", device, log=lambda s: None)
    name = str(spec)
    if name.startswith(FRESH_PREFIX):
        preset = name[len(FRESH_PREFIX):] or "tiny"
        log(f"warning: using an UNTRAINED {preset} model ({name}); outputs are meaningless except for testing")
        try:
            return build_model(preset, device=device, seed=0).eval()
        except (ValueError, KeyError) as err:
            raise InputError(f"{name!r}: {err}") from None
    if name in pretrained.PRETRAINED:
        try:
            return pretrained.load_pretrained(name, device=device).float().eval()
        except RuntimeError as err:
            raise InputError(str(err)) from None
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {name!r} does not exist (neither a file nor a known name); give a model file (e.g. data/tiny.pt from "
            f"`st4r-lite export`), one of {sorted(pretrained.PRETRAINED)}, or fresh:tiny (untrained)")
    try:
        return load_model(path, device=device).float().eval()
    except (ValueError, RuntimeError, KeyError) as err:
        raise InputError(f"cannot load checkpoint {name!r}: {err}") from None


def describe(spec=None) -> str:
    """Where the model of ``spec`` comes from, for result files: ``data/tiny.pt (sha256 d3b16ac72781db32)``
    (a file: the path as given, default ``data/tiny.pt``, and its sha256 prefix), ``st4rtrack_seq (released)``,
    ``fresh tiny model (untrained)`` or ``model object``."""
    if isinstance(spec, St4RTrack):
        return "model object"
    name = _spec_name(spec)
    if name is None:
        path = default_checkpoint()
        return describe(path).replace(str(path), "data/tiny.pt", 1) if path.is_file() \
            else "fresh tiny model (untrained)"
    if name.startswith(FRESH_PREFIX):
        return f"fresh {name[len(FRESH_PREFIX):] or 'tiny'} model (untrained)"
    if name in pretrained.PRETRAINED:
        return f"{name} (released)"
    path = Path(name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
    return f"{name} (sha256 {digest})"
