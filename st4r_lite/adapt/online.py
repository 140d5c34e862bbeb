"""Learned pseudo-label models, downloaded when online (CoTracker3, MoGe), and the provider factory.

Dimension letters: B batch (always 1 here), T frames, H image rows, W image columns, N query points.

Models and their exact entry points (nothing is downloaded before one of them is asked for):
  - CoTracker3 offline (Karaev et al. 2024), ``torch.hub.load("facebookresearch/co-tracker",
    "cotracker3_offline")``: code from GitHub, weights ``scaled_offline.pth`` from huggingface.co/facebook/
    cotracker3 (needs ``einops``, ``timm``). Call ``model(video (B, T, 3, H, W) float in 0..255,
    queries=(B, N, 3) as (t, x, y) pixels)`` -> ``tracks (B, T, N, 2)`` pixels, ``visibility (B, T, N)``
    bool (thresholded at 0.9 inside). Licence: CC BY-NC 4.0 (code and weights; non-commercial).
  - MoGe (Wang et al. 2025), primary mono-depth: ``pip install git+https://github.com/microsoft/MoGe.git``,
    ``from moge.model.v2 import MoGeModel; MoGeModel.from_pretrained("Ruicheng/moge-2-vits-normal")``
    (small ViT-S model; ``Ruicheng/moge-vitl`` uses ``moge.model.v1``). ``model.infer(images (B, 3, H, W) in
    [0, 1])`` -> dict with ``depth`` (B, H, W) and ``mask`` (B, H, W); MoGe-1 depth is scale-invariant,
    MoGe-2 metric, and both fit the adaptation's per-frame scale-invariant depth loss. Licence: MIT
    (repository; check the model card of the weights you pick), DINOv2 backbone Apache-2.0.
    Depth Anything V2 was not wired in: it predicts affine-invariant *disparity*, which is not an affine
    function of depth.

Offline, loading fails with :class:`OnlineModelUnavailable`, whose message says what could not be fetched and
which fallback to use (``--tracker lk``, ``--depth none``, or ``sim`` on synthetic clips).
:func:`make_provider` builds any tracker + depth combination; with ``fallback=True`` it falls back instead of
failing (CoTracker -> LK, MoGe -> no depth), warns, and records the fallback in the labels' ``source``.
"""

from __future__ import annotations

import importlib
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from st4r_lite.adapt.lk_tracker import LKTracker
from st4r_lite.adapt.pseudo_labels import (
    CombinedProvider,
    PseudoLabels,
    check_query_pixels,
    check_video,
)
from st4r_lite.adapt.sim_labels import SimDepthConfig, SimTrackerConfig, SimulatedMonoDepth, SimulatedTracker
from st4r_lite.errors import InputError

__all__ = ["OnlineModelUnavailable", "CoTrackerProvider", "MonoDepthProvider", "make_provider",
           "load_cotracker", "load_moge", "COTRACKER_HUB", "MOGE_DEFAULT", "TRACKERS", "DEPTHS"]

COTRACKER_HUB = ("facebookresearch/co-tracker", "cotracker3_offline")
MOGE_DEFAULT = "Ruicheng/moge-2-vits-normal"
MOGE_INSTALL = "pip install git+https://github.com/microsoft/MoGe.git"
TRACKERS = ("lk", "cotracker", "sim", "sim-latch")  # sim-latch: SimTrackerConfig.latching()
DEPTHS = ("none", "sim", "sim-affine", "moge")


class OnlineModelUnavailable(RuntimeError):
    """A learned model could not be loaded (no network, missing package); the message names the fallback."""


# ----------------------------------------------------------------------------------------------- CoTracker3
def load_cotracker(device: str | torch.device = "cpu", repo: str = COTRACKER_HUB[0],
                   entry: str = COTRACKER_HUB[1]) -> torch.nn.Module:
    """CoTracker3 through torch.hub (downloads code and weights the first time, then uses the hub cache)."""
    try:
        model = torch.hub.load(repo, entry, trust_repo=True)
    except Exception as err:  # noqa: BLE001 - any failure here means "not available", explained below
        raise OnlineModelUnavailable(
            f"could not load CoTracker3 via torch.hub.load({repo!r}, {entry!r}): {type(err).__name__}: {err}. "
            "It needs internet access the first time (code from github.com, weights from huggingface.co) "
            "and the packages einops and timm. Offline, use the classical tracker instead: --tracker lk "
            "(or --tracker sim on synthetic clips)") from err
    return model.to(device).eval()


class CoTrackerProvider:
    """CoTracker3 as a ``PseudoLabelProvider``: queries in frame 0, tracks through the whole video at once.

    ``model``: an already loaded CoTracker predictor (else :func:`load_cotracker` is called now).
    """

    name = "cotracker3"

    def __init__(self, model: torch.nn.Module | None = None, *, device: str | torch.device = "cpu",
                 repo: str = COTRACKER_HUB[0], entry: str = COTRACKER_HUB[1]) -> None:
        self.device = torch.device(device)
        self.entry = entry
        self.model = model if model is not None else load_cotracker(self.device, repo, entry)

    def __call__(self, video: Tensor, query_pixels: Tensor) -> PseudoLabels:
        T, H, W = check_video(video)
        q = check_query_pixels(query_pixels, H, W)
        N = q.shape[0]
        frames = (video.detach().float() * 255.0)[None].to(self.device)              # (1, T, 3, H, W) 0..255
        queries = torch.cat([torch.zeros(N, 1), q], dim=-1)[None].to(self.device)    # (1, N, 3) (t, x, y)
        with torch.no_grad():
            out = self.model(frames, queries=queries)
        if not isinstance(out, (tuple, list)) or len(out) < 2:
            raise RuntimeError(f"CoTracker returned {type(out).__name__}; expected (tracks, visibility)")
        tracks, vis = out[0].detach().float().cpu(), out[1].detach().cpu()
        if vis.ndim == 4 and vis.shape[-1] == 1:
            vis = vis[..., 0]
        if tuple(tracks.shape) != (1, T, N, 2) or tuple(vis.shape) != (1, T, N):
            raise RuntimeError(f"CoTracker returned tracks {tuple(tracks.shape)} and visibility "
                               f"{tuple(vis.shape)}; expected (1, {T}, {N}, 2) and (1, {T}, {N})")
        valid = vis[0] if vis.dtype == torch.bool else vis[0] > 0.5
        tracks = tracks[0].clone()
        tracks[0], valid[0] = q, True                    # the query frame is exact by definition
        return PseudoLabels(tracks_2d=tracks, track_valid=valid.clone(), depth=None, query_pixels=q,
                            source=f"cotracker3({self.entry})")


# ----------------------------------------------------------------------------------------------- MoGe
def load_moge(model_id: str = MOGE_DEFAULT, device: str | torch.device = "cpu") -> torch.nn.Module:
    """MoGe from its pip package (``moge.model.v2`` for "moge-2" ids, else ``moge.model.v1``), weights from HF."""
    module = "moge.model.v2" if "moge-2" in model_id else "moge.model.v1"
    try:
        MoGeModel = importlib.import_module(module).MoGeModel
    except ImportError as err:
        raise OnlineModelUnavailable(
            f"the MoGe package is not installed (import {module} failed: {err}). Install it with "
            f"`{MOGE_INSTALL}`, or train without mono-depth: --depth none (or --depth sim on synthetic clips)"
        ) from err
    try:
        model = MoGeModel.from_pretrained(model_id)
    except Exception as err:  # noqa: BLE001
        raise OnlineModelUnavailable(
            f"could not download the MoGe weights {model_id!r} from huggingface.co: {type(err).__name__}: "
            f"{err}. Offline, use --depth none (or --depth sim on synthetic clips)") from err
    return model.to(device).eval()


class MonoDepthProvider:
    """MoGe mono-depth as a ``DepthProvider``: (T, 3, H, W) in [0, 1] -> (T, H, W), 0 where MoGe has no depth."""

    def __init__(self, model: torch.nn.Module | None = None, *, model_id: str = MOGE_DEFAULT,
                 device: str | torch.device = "cpu", chunk: int = 8) -> None:
        if chunk < 1:
            raise InputError(f"chunk must be >= 1, got {chunk}")
        self.device, self.chunk, self.model_id = torch.device(device), int(chunk), model_id
        self.model = model if model is not None else load_moge(model_id, self.device)
        self.name = f"moge({model_id.split('/')[-1]})"

    def __call__(self, video: Tensor) -> Tensor:
        T, H, W = check_video(video)
        out = []
        for start in range(0, T, self.chunk):
            frames = video[start:start + self.chunk].detach().float().to(self.device)   # (b, 3, H, W) [0, 1]
            with torch.no_grad():
                pred = self.model.infer(frames)
            if not isinstance(pred, dict) or "depth" not in pred:
                raise RuntimeError("MoGe infer() returned no 'depth'; is this a MoGe model?")
            depth = pred["depth"].detach().float().cpu().reshape(-1, *pred["depth"].shape[-2:])
            mask = pred.get("mask")
            ok = torch.isfinite(depth) & (depth > 0)
            if mask is not None:
                ok &= mask.detach().cpu().bool().reshape(depth.shape)
            depth = torch.where(ok, depth, torch.zeros_like(depth))
            if tuple(depth.shape[-2:]) != (H, W):          # keep 0 = missing: resize with nearest
                depth = F.interpolate(depth[:, None], size=(H, W), mode="nearest")[:, 0]
            if depth.shape[0] != frames.shape[0]:
                raise RuntimeError(f"MoGe returned {depth.shape[0]} depth maps for {frames.shape[0]} frames")
            out.append(depth)
        return torch.cat(out, dim=0)


# ----------------------------------------------------------------------------------------------- factory
def make_provider(tracker: str = "lk", depth: str = "none", *, ground_truth=None, clip_index: int = 0,
                  seed: int = 0, device: str | torch.device = "cpu", fallback: bool = False,
                  lk_config=None, sim_tracker_config=None, sim_depth_config=None) -> CombinedProvider:
    """Build pseudo-label providers by name: tracker in TRACKERS, depth in DEPTHS.

    "sim" and "sim-affine" need ``ground_truth`` (a world.Clip with ``clip_index``, a WorldTrack sequence or a
    GroundTruthVideo). When a learned model cannot be loaded: raise :class:`OnlineModelUnavailable`, or with
    ``fallback=True`` warn and use LK (tracker) / no depth (depth); the fallback is recorded in ``.note`` and
    in every label's ``source``.
    """
    if tracker not in TRACKERS:
        raise InputError(f"unknown tracker {tracker!r}; choose one of {TRACKERS}")
    if depth not in DEPTHS:
        raise InputError(f"unknown depth {depth!r}; choose one of {DEPTHS}")
    if (tracker.startswith("sim") or depth.startswith("sim")) and ground_truth is None:
        raise InputError("tracker/depth 'sim' simulate pseudo-labels from ground truth, so they need "
                         "ground_truth= (the synthetic Clip); for a real video use --tracker lk and "
                         "--depth none or moge")
    notes = []

    if tracker.startswith("sim"):
        latch = tracker == "sim-latch" and sim_tracker_config is None
        track = SimulatedTracker(ground_truth, clip_index, SimTrackerConfig.latching() if latch else sim_tracker_config,
                                 seed=seed)
    elif tracker == "cotracker":
        try:
            track = CoTrackerProvider(device=device)
        except OnlineModelUnavailable as err:
            if not fallback:
                raise
            track = LKTracker(lk_config)
            notes.append("cotracker unavailable, fell back to lk")
            warnings.warn(f"{err} -- falling back to the LK tracker", stacklevel=2)
    else:
        track = LKTracker(lk_config)

    depth_model = None
    if depth.startswith("sim"):
        cfg = sim_depth_config or SimDepthConfig(mode="affine" if depth == "sim-affine" else "scale")
        depth_model = SimulatedMonoDepth(ground_truth, clip_index, cfg, seed=seed + 1)
    elif depth == "moge":
        try:
            depth_model = MonoDepthProvider(device=device)
        except OnlineModelUnavailable as err:
            if not fallback:
                raise
            notes.append("moge unavailable, fell back to no depth")
            warnings.warn(f"{err} -- continuing without mono-depth (the depth loss is off)", stacklevel=2)
    return CombinedProvider(track, depth_model, note="; ".join(notes))
