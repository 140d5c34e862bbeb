"""Saving and loading weights: our own checkpoints (with their config) and released DUSt3R-layout files.

Glossary: L decoder depth; "key" = a state_dict name such as ``dec_blocks.3.cross_attn.projq.weight``.

- ``save_checkpoint(path, model, **extra)``: ``{'config': dict, 'model': state_dict, **extra}`` written
  atomically; ``.safetensors`` paths store the config (and JSON-able extras) in the file's metadata.
- ``load_model(path, device)``: rebuild the model from the stored config, then load its weights.
- ``load_weights(model, file_or_state_dict, strict)``: load any DUSt3R-family state_dict (released DUSt3R,
  MonST3R, St4RTrack, or ours) and return a :class:`LoadReport` saying what was missing, unexpected, aliased
  or copied. Loading never runs pickled code: ``torch.load(weights_only=True)`` (only tensors and plain
  containers; ``argparse.Namespace``, which the released files carry as ``args``, is allowed) or safetensors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from st4r_lite.errors import InputError
from st4r_lite.model.config import PRESETS, ModelConfig
from st4r_lite.model.network import St4RTrack
from st4r_lite.runtime import atomic_write

# ``...dpt.scratch.layer_rn.{i}`` is the reference's second name for ``...dpt.scratch.layer{i+1}_rn``.
_ALIAS = re.compile(r"^(.*\.dpt\.scratch\.)layer_rn\.(\d)\.(.*)$")
_SIGMA = ("sigma_head1.", "sigma_head2.")


@dataclass
class LoadReport:
    """What :func:`load_weights` did. All lists hold state_dict keys of the model.

    missing: model keys the file did not provide (an error when strict);
    unexpected: file keys the model does not have (an error when strict);
    expected_missing: keys absent from released checkpoints by design (our sigma heads: they stay zero, sigma^2 = 1);
    aliased: duplicate-name keys (``dpt.scratch.layer_rn.i`` = ``layer{i+1}_rn``) filled from their twin;
    copied: keys filled by copying the other branch (``dec_blocks2`` <- ``dec_blocks`` when absent, likewise
    ``downstream_head2`` <- ``downstream_head1``).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    expected_missing: list[str] = field(default_factory=list)
    aliased: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" + (f" (e.g. {v[0]})" if v else "") for k, v in vars(self).items() if v]
        return "loaded all keys" if not parts else "; ".join(parts)


# ----------------------------------------------------------------------------------------------- reading
def read_state_dict(source: str | os.PathLike | dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A file (or dict) -> (state_dict, everything else in the file). Unwraps ``{'model': state_dict}``.

    ``.safetensors`` files: the metadata's ``config``/``extra`` JSON come back in the second dict.
    Raises ValueError for unreadable or malformed files (never executes pickled code).
    """
    if isinstance(source, dict):
        blob, where = source, "the given dict"
    else:
        path, where = Path(source), f"checkpoint {str(source)!r}"
        if not path.is_file():
            raise InputError(f"{where} does not exist or is not a file")
        blob = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    if not isinstance(blob, dict):
        raise InputError(f"{where} holds a {type(blob).__name__}, not a state_dict or {{'model': state_dict}}")
    rest: dict = {}
    if isinstance(blob.get("model"), dict):
        rest = {k: v for k, v in blob.items() if k != "model"}
        blob = blob["model"]
    bad = [k for k, v in blob.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad or not blob:
        raise InputError(f"{where} is not a state_dict (name -> tensor): " +
                         (f"entries {bad[:3]} are not tensors" if bad else "it is empty"))
    # Checkpoints saved from DistributedDataParallel prefix every key with 'module.'.
    if all(k.startswith("module.") for k in blob):
        blob = {k[len("module."):]: v for k, v in blob.items()}
    return dict(blob), rest


def _read_torch(path: Path):
    # Released DUSt3R-family files carry their training arguments as an argparse.Namespace: allow only that.
    allow = getattr(torch.serialization, "safe_globals", None)
    context = allow([argparse.Namespace]) if allow else contextlib.nullcontext()
    with context:
        try:  # memory-mapped: a 2 GB checkpoint is not copied into RAM twice
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - old (non-zip) files cannot be mapped: retry plainly below
            pass
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - every failure means the same to the user
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise InputError(
                f"could not read checkpoint {str(path)!r} as a weights-only torch file ({type(err).__name__}: "
                f"{first}). Files that need arbitrary pickled objects are refused for safety; re-save only "
                "the state_dict (or convert it to .safetensors) with code you trust"
            ) from err


def _read_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001
        raise InputError(f"could not read {str(path)!r} as a safetensors file: {err}") from err
    blob: dict = {"model": tensors}
    for key in ("config", "extra"):
        if key in meta:
            blob[key] = json.loads(meta[key])
    return blob


# ---------------------------------------------------------------------------------------------- inferring
def describe_state_dict(sd: dict[str, torch.Tensor]) -> str:
    """A short description of the architecture a state_dict belongs to, naming a preset when one matches."""
    try:
        pw = sd["patch_embed.proj.weight"]
        enc_depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("enc_blocks."))
        dec_depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("dec_blocks."))
        dec_dim = sd["decoder_embed.weight"].shape[0]
    except (KeyError, ValueError):
        return "an unknown layout (no patch_embed / enc_blocks / dec_blocks keys)"
    head = "dpt" if any(".dpt." in k for k in sd) else "linear"
    dims = dict(patch_size=pw.shape[-1], enc_dim=pw.shape[0], enc_depth=enc_depth, dec_dim=dec_dim,
                dec_depth=dec_depth, head_type=head)
    text = (f"patch {dims['patch_size']}, encoder {dims['enc_dim']}x{enc_depth}, decoder {dec_dim}x{dec_depth}, "
            f"{head} heads")
    names = [n for n, c in PRESETS.items() if all(getattr(c, k) == v for k, v in dims.items())]
    return f"preset {names[0]!r} ({text})" if names else f"no preset ({text})"


# ----------------------------------------------------------------------------------------------- loading
def load_weights(model: St4RTrack, source: str | os.PathLike | dict, strict: bool = True) -> LoadReport:
    """Load DUSt3R-layout weights into ``model`` (in place) and report what happened.

    source: a path (.pth/.pt/.ckpt via weights-only torch.load, or .safetensors), a state_dict, or a
    ``{'model': state_dict, ...}`` dict. Shape mismatches always raise ValueError naming the first
    mismatching keys and the presets involved. With ``strict``, missing or unexpected keys raise too
    (except the sigma heads' keys, which released checkpoints lack by design: those heads are reset to
    zero, i.e. sigma^2 = 1, since any previous values belonged to other weights).
    """
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("the model is on the meta device: allocate it first (model.to_empty(device='cpu'))")
    sd, _ = read_state_dict(source)
    own = model.state_dict()
    report = LoadReport()
    sd = dict(sd)
    # 1. Duplicate names: keep one, refill the alias from its twin (they are one tensor in the model).
    for key in [k for k in sd if _ALIAS.match(k)]:
        m = _ALIAS.match(key)
        twin = f"{m.group(1)}layer{int(m.group(2)) + 1}_rn.{m.group(3)}"
        if twin not in sd:
            sd[twin] = sd[key]
        del sd[key]
    for key in own:
        m = _ALIAS.match(key)
        if m and f"{m.group(1)}layer{int(m.group(2)) + 1}_rn.{m.group(3)}" in sd:
            report.aliased.append(key)
    # 2. A missing second branch (e.g. a CroCo / single-branch file): start it as a copy of the first.
    for dst, src in (("dec_blocks2.", "dec_blocks."), ("downstream_head2.", "downstream_head1.")):
        if not any(k.startswith(dst) for k in sd) and any(k.startswith(src) for k in sd):
            for k in [k for k in sd if k.startswith(src)]:
                new = dst + k[len(src):]
                if new in own:
                    sd[new] = sd[k].clone()
                    report.copied.append(new)
    # 3. Compare key sets and shapes.
    mismatched = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if mismatched:
        first = "; ".join(f"{k}: file {a} vs model {b}" for k, a, b in mismatched[:3])
        raise InputError(
            f"checkpoint does not fit this model: {len(mismatched)} shape mismatches, first: {first}. The file is "
            f"{describe_state_dict(sd)}; the model is {model.config.name!r} ({describe_state_dict(own)}). "
            "Build the model with the matching preset (or use load_model for st4r_lite checkpoints)")
    absent = [k for k in own if k not in sd and k not in report.aliased]
    report.expected_missing = [k for k in absent if k.startswith(_SIGMA)]
    report.missing = [k for k in absent if not k.startswith(_SIGMA)]
    report.unexpected = [k for k in sd if k not in own]
    if strict and not report.ok:
        raise InputError(
            f"checkpoint keys do not match the model {model.config.name!r}: "
            f"{len(report.missing)} missing {report.missing[:5]}, {len(report.unexpected)} unexpected "
            f"{report.unexpected[:5]}. The file is {describe_state_dict(sd)}. Use strict=False to load the rest")
    params = dict(model.named_parameters())
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
        for key in report.expected_missing:  # heads the file knows nothing of restart at sigma^2 = 1
            params[key].zero_()
    return report


def save_checkpoint(path: str | os.PathLike, model: St4RTrack, **extra) -> Path:
    """Write ``{'config': dict, 'model': state_dict, **extra}`` atomically; returns the path.

    ``.safetensors``: tensors in the file, config and extras (must be JSON-serialisable) in its metadata;
    the DPT alias keys are left out (safetensors refuses shared tensors; loading refills them).
    Otherwise ``torch.save``; extras must be plain data (tensors, numbers, strings, lists, dicts) so that
    the file loads with ``weights_only=True``.
    """
    path = Path(path)
    clash = {"config", "model"} & set(extra)
    if clash:
        raise ValueError(f"extra entries {sorted(clash)} would overwrite the checkpoint's own fields")
    config = model.config.to_dict()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        tensors = {k: v.contiguous().clone() for k, v in state.items() if not _ALIAS.match(k)}
        try:
            meta = {"format": "st4r_lite", "config": json.dumps(config), "extra": json.dumps(extra)}
        except TypeError as err:
            raise ValueError(f"safetensors checkpoints can only carry JSON-serialisable extras: {err}") from err
        data = save(tensors, metadata=meta)
        with atomic_write(path, "wb") as f:
            f.write(data)
    else:
        with atomic_write(path, "wb") as f:
            torch.save({"config": config, "model": state, **extra}, f)
    return path


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> St4RTrack:
    """Rebuild a model saved by :func:`save_checkpoint` (its config is in the file) and load its weights."""
    sd, rest = read_state_dict(path)
    if not isinstance(rest.get("config"), dict):
        raise InputError(
            f"{str(path)!r} carries no st4r_lite config (a released checkpoint?): use "
            "st4r_lite.model.pretrained.load_pretrained, or build_model('full') followed by load_weights(model, path)")
    config = ModelConfig.from_dict(rest["config"])
    model = build_model_on(config, device)
    load_weights(model, sd, strict=True)
    return model


def build_model_on(config: ModelConfig, device: torch.device | str) -> St4RTrack:
    """Allocate an uninitialised model on ``device`` (fast: weights come from a file next)."""
    with torch.device("meta"):
        model = St4RTrack(config)
    return model.to_empty(device=device)


__all__ = ["LoadReport", "load_weights", "save_checkpoint", "load_model", "read_state_dict",
           "describe_state_dict", "build_model_on"]
