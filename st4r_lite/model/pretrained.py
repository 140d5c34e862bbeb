"""Released DUSt3R-family weights: where they live, how they are cached, how they load into ``full``.

Glossary: "name" = one of :data:`PRETRAINED`'s keys; "cache" = ``$ST4R_CACHE`` or ``~/.cache/st4r_lite``.

All released weights of this family are licensed CC BY-NC-SA 4.0 (non-commercial use only; DUSt3R's
licence, inherited by MonST3R and St4RTrack). We print that notice every time they are loaded.

Where the names come from (checked in public sources, not guessed; the repositories may change):
  - St4RTrack: the authors' README points to the Hugging Face repo ``yupengchengg147/St4RTrack``; their
    inference script loads the root with ``from_pretrained`` (seq mode) and downloads ``Pair/model.safetensors``
    (pair mode). The root file name ``model.safetensors`` is what huggingface_hub's mixin writes: inferred.
  - MonST3R: ``Junyi42/MonST3R_PO-TA-S-W_ViTLarge_BaseDecoder_512_dpt`` (README + model card: config.json,
    model.safetensors, licence cc-by-nc-sa-4.0).
  - DUSt3R: ``naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt`` (model card: config.json, model.safetensors).
When the expected file is not found online, the repository's folder is searched for its single checkpoint
file. A file placed by hand in ``<cache>/<name>/`` (any ``.pth``/``.pt``/``.safetensors`` name, e.g. the
Google-Drive ``St4RTrack_Seqmode_reweightMax5.pth``) is used as is. Nothing is downloaded when
``allow_download=False`` or when ``$HF_HUB_OFFLINE`` / ``$ST4R_OFFLINE`` is set.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from st4r_lite.errors import InputError
from st4r_lite.model.checkpoint import LoadReport, build_model_on, load_weights, read_state_dict
from st4r_lite.model.config import PRESETS, ModelConfig
from st4r_lite.model.network import St4RTrack
from st4r_lite.runtime import atomic_write

LICENCE = ("weights licence: CC BY-NC-SA 4.0 (non-commercial use only; "
           "https://creativecommons.org/licenses/by-nc-sa/4.0/)")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


@dataclass(frozen=True)
class PretrainedSpec:
    """One released checkpoint: Hugging Face repo, file inside it (may include a folder), what it is."""

    repo: str
    filename: str  # see the module docstring for where it comes from and the fallback
    description: str
    folder: str = ""  # the folder inside the repo the checkpoint lives in ("" = root)


PRETRAINED: dict[str, PretrainedSpec] = {
    # St4RTrack, sequence-mode checkpoint (the authors recommend it): repo root. The released inference script
    # loads the root with huggingface_hub's model mixin (files model.safetensors + config.json).
    "st4rtrack_seq": PretrainedSpec("yupengchengg147/St4RTrack", "model.safetensors",
                                    "St4RTrack (sequence mode): head 1 = track, head 2 = recon"),
    # St4RTrack, pair-mode checkpoint: the repo's Pair/ folder (the released script fetches Pair/model.safetensors).
    "st4rtrack_pair": PretrainedSpec("yupengchengg147/St4RTrack", "Pair/model.safetensors",
                                     "St4RTrack (pair mode)", folder="Pair"),
    # MonST3R (dynamic-scene DUSt3R fine-tune), pushed with huggingface_hub's model mixin (its model card
    # lists config.json + model.safetensors; licence cc-by-nc-sa-4.0).
    "monst3r": PretrainedSpec("Junyi42/MonST3R_PO-TA-S-W_ViTLarge_BaseDecoder_512_dpt", "model.safetensors",
                              "MonST3R: both heads = reconstruction (head 1 = the anchor's own points)"),
    # DUSt3R 512 DPT (static scenes), the architecture's original weights (NAVER's hub repo: model.safetensors).
    "dust3r": PretrainedSpec("naver/DUSt3R_ViTLarge_BaseDecoder_512_dpt", "model.safetensors",
                             "DUSt3R ViT-L/ViT-B 512 DPT (static scenes)"),
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$ST4R_CACHE``, else ``~/.cache/st4r_lite``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("ST4R_CACHE") or Path.home() / ".cache" / "st4r_lite")


def file_url(spec: PretrainedSpec, filename: str | None = None) -> str:
    """Direct download address of a file in the spec's Hugging Face repo."""
    return f"https://huggingface.co/{spec.repo}/resolve/main/{filename or spec.filename}"


def find_cached(name: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached checkpoint of ``name``: the assumed file name, else the one weights file in its folder."""
    spec = _spec(name)
    folder = cache_root(cache_dir) / name
    exact = folder / spec.filename
    if exact.is_file():
        return exact
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return found[0] if len(found) == 1 else None


def download(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Download ``name``'s checkpoint into ``<cache>/<name>/`` and return its path (needs network)."""
    spec = _spec(name)
    folder = cache_root(cache_dir) / name
    try:
        return _fetch(spec, spec.filename, folder)
    except FileNotFoundError:  # the assumed name is wrong: look for the one checkpoint in the repo folder
        candidates = [f for f in _list_repo_files(spec.repo)
                      if f.endswith(_WEIGHT_SUFFIXES) and os.path.dirname(f) == spec.folder]
        if len(candidates) != 1:
            raise RuntimeError(f"{spec.repo} has no single checkpoint in folder {spec.folder or '/'!r}: "
                               f"{candidates}; download one by hand into {folder}") from None
        return _fetch(spec, candidates[0], folder)


def _fetch(spec: PretrainedSpec, filename: str, folder: Path) -> Path:
    """One file, with huggingface_hub when installed, else plain HTTPS. FileNotFoundError on 404."""
    target = folder / filename
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import EntryNotFoundError
    except ImportError:
        hf_hub_download = None
    if hf_hub_download is not None:
        try:
            return Path(hf_hub_download(spec.repo, filename, local_dir=str(folder)))
        except EntryNotFoundError as err:
            raise FileNotFoundError(filename) from err
    try:
        with urllib.request.urlopen(file_url(spec, filename), timeout=60) as response:  # noqa: S310
            with atomic_write(target, "wb") as out:
                while chunk := response.read(1 << 22):
                    out.write(chunk)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise FileNotFoundError(filename) from err
        raise
    return target


def _list_repo_files(repo: str) -> list[str]:
    try:
        from huggingface_hub import list_repo_files

        return list(list_repo_files(repo))
    except ImportError:
        with urllib.request.urlopen(f"https://huggingface.co/api/models/{repo}", timeout=60) as r:  # noqa: S310
            return [s["rfilename"] for s in json.load(r).get("siblings", [])]


def offline() -> bool:
    """True when ``$ST4R_OFFLINE`` or ``$HF_HUB_OFFLINE`` is set to a true value: never try the network."""
    return any(os.environ.get(k, "").strip().lower() not in ("", "0", "false", "no", "off")
               for k in ("ST4R_OFFLINE", "HF_HUB_OFFLINE"))


def load_pretrained(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    config: ModelConfig | None = None,
    allow_download: bool = True,
) -> St4RTrack:
    """Released weights ``name`` (see :data:`PRETRAINED`) in a ``full``-preset model on ``device``.

    Looks in the cache first (``cache_dir``, else ``$ST4R_CACHE``, else ``~/.cache/st4r_lite``), downloads when
    missing and allowed (huggingface_hub if installed, else urllib), and otherwise fails with a RuntimeError
    naming the file to download and where to put it. ``config`` overrides the architecture (default:
    ``PRESETS['full']``). The released files lack our sigma heads: they start at zero (sigma^2 = 1). What the
    loader did is kept in ``model.load_report``. Prints the weights' non-commercial licence.
    """
    spec = _spec(name)
    path = find_cached(name, cache_dir)
    if path is None:
        target = cache_root(cache_dir) / name / spec.filename
        advice = (f"Download {file_url(spec)} (Hugging Face repo {spec.repo}, file {spec.filename}) and place it "
                  f"at {target} (or any single .pth/.safetensors file in {target.parent}; set $ST4R_CACHE or pass "
                  "cache_dir to use another folder)")
        if not allow_download or offline():
            raise RuntimeError(f"pretrained weights {name!r} are not cached and downloading is off. {advice}")
        try:
            path = download(name, cache_dir)
        except Exception as err:  # noqa: BLE001 - offline, proxy, 404 ...: the same advice applies
            raise RuntimeError(f"pretrained weights {name!r} are not cached and could not be downloaded "
                               f"({type(err).__name__}: {err}). {advice}") from err
    print(f"loading {name} ({spec.description}) from {path}\n{LICENCE}")
    sd, _ = read_state_dict(path)
    model = build_model_on(config or PRESETS["full"], device)
    model.load_report = load_weights(model, sd, strict=True)  # what the file lacked / what was copied
    return model


def _spec(name: str) -> PretrainedSpec:
    if name not in PRETRAINED:
        raise InputError(f"unknown pretrained weights {name!r}; choose one of {sorted(PRETRAINED)}")
    return PRETRAINED[name]


__all__ = ["PRETRAINED", "PretrainedSpec", "LICENCE", "load_pretrained", "download", "find_cached", "offline",
           "cache_root", "file_url", "LoadReport"]
