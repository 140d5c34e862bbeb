"""World-frame evaluation metrics (docs/method.md §7): tracking APD / EPE, reconstruction APD / EPE, depth errors.

Dimension letters: T frames, N tracked points (queries), H, W image rows / columns, `...` any leading shape.

All 3D quantities are in metres in the world frame (= camera of the anchor frame 0). A prediction is first
aligned to the ground truth, once per sequence, with one of

- ``"median"``: one scale s = median‖gt‖ / median‖pred‖ over all points (norms measured from the world
  origin = anchor camera centre), then pred ← s · pred;
- ``"sim3"``: the closed-form Sim(3) (Umeyama) over all points, pred ← s R pred + t;
- ``"none"``: no alignment.

Then, over all (t, n) — occluded points count —

    APD = 100 · mean_{δ ∈ {0.1, 0.3, 0.5, 1.0} m}  fraction of (t, n) with ‖pred − gt‖ < δ      (in %)
    EPE = mean ‖pred − gt‖                                                                    (in m)

The dynamic subset keeps the tracks whose ground truth moves: max_t ‖gt_t − gt_0‖ > 0.05 m (robust to
jitter). The alignment is always computed on *all* points and reused for the subset.

Depth: pred ← s · pred with s = median(gt) / median(pred) per sequence; Abs Rel = mean |pred − gt| / gt and
δ<1.25 = 100 · fraction with max(pred/gt, gt/pred) < 1.25.

The static baseline (:func:`static_tracks`) predicts that nothing moves: every frame's track is the anchor's
own reconstruction (the track map of pair (0, 0)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from einops import rearrange, repeat

from st4r_lite.errors import InputError
from st4r_lite.geometry.pinhole import umeyama_sim3

THRESHOLDS = (0.1, 0.3, 0.5, 1.0)
DYNAMIC_MIN_MOTION = 0.05   # metres: a track is dynamic if its ground truth moves farther than this from frame 0
ALIGNMENTS = ("median", "sim3", "none")


def _points_and_valid(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten (..., 3) to (M, 3) in float64 and build the validity mask (finite pred and gt, and ``valid``)."""
    if pred.shape != gt.shape or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be (..., 3) with the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(gt.shape)}")
    if valid is not None and valid.shape != pred.shape[:-1]:
        raise ValueError(f"valid must have shape {tuple(pred.shape[:-1])}, got {tuple(valid.shape)}")
    p = pred.detach().reshape(-1, 3).double()
    g = gt.detach().reshape(-1, 3).double()
    ok = torch.isfinite(p).all(-1) & torch.isfinite(g).all(-1)
    if valid is not None:
        ok = ok & valid.reshape(-1).to(ok.device)
    return p, g, ok


def median_scale(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """s = median‖gt‖ / median‖pred‖ over the valid points. pred, gt: (..., 3); valid: (...) bool or None."""
    p, g, ok = _points_and_valid(pred, gt, valid)
    if not ok.any():
        raise ValueError("no valid point to align: every prediction or ground-truth point is masked or NaN")
    med_p = p[ok].norm(dim=-1).median()
    med_g = g[ok].norm(dim=-1).median()
    if med_p <= 0:
        raise ValueError("the prediction's median distance to the origin is 0; cannot fit a median scale")
    return float(med_g / med_p)


def align(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None,
          alignment: str = "median") -> torch.Tensor:
    """Align pred (..., 3) to gt (..., 3) over the valid points; returns the aligned pred (same shape, float64).

    alignment: "median" (one scale), "sim3" (Umeyama s, R, t via ``geometry.umeyama_sim3``) or "none".
    """
    if alignment not in ALIGNMENTS:
        raise InputError(f"unknown alignment {alignment!r}; use one of {ALIGNMENTS}")
    p, g, ok = _points_and_valid(pred, gt, valid)
    if alignment == "none":
        out = p
    elif alignment == "median":
        out = p * median_scale(pred, gt, valid)
    else:
        if int(ok.sum()) < 3:
            raise ValueError(f"sim3 alignment needs at least 3 valid points, got {int(ok.sum())}")
        s, R, t = umeyama_sim3(p[ok], g[ok])
        out = s * p @ R.T + t
    return out.reshape(pred.shape)


def apd(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None,
        thresholds: tuple[float, ...] = THRESHOLDS) -> float:
    """Average percent of points within δ: 100 · mean_δ mean_points 1[‖pred − gt‖ < δ]. NaN if none valid.

    pred, gt: (..., 3) already aligned; valid: (...) bool or None.
    """
    p, g, ok = _points_and_valid(pred, gt, valid)
    if not ok.any():
        return math.nan
    dist = (p[ok] - g[ok]).norm(dim=-1)
    deltas = torch.tensor(thresholds, dtype=dist.dtype, device=dist.device)
    return float(100.0 * (dist[:, None] < deltas).double().mean())


def epe(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """End-point error: mean ‖pred − gt‖ over valid points (metres). NaN if none valid."""
    p, g, ok = _points_and_valid(pred, gt, valid)
    if not ok.any():
        return math.nan
    return float((p[ok] - g[ok]).norm(dim=-1).mean())


def dynamic_tracks(gt_tracks: torch.Tensor, min_displacement: float = DYNAMIC_MIN_MOTION
                   ) -> torch.Tensor:
    """Which tracks move: max_t ‖gt_t − gt_0‖ > min_displacement. gt_tracks: (T, N, 3) -> (N,) bool.

    Frames where the track is NaN count as no displacement.
    """
    if gt_tracks.ndim != 3 or gt_tracks.shape[-1] != 3:
        raise ValueError(f"gt_tracks must be (T, N, 3), got {tuple(gt_tracks.shape)}")
    disp = (gt_tracks - gt_tracks[:1]).norm(dim=-1).nan_to_num(0.0)
    return disp.amax(dim=0) > min_displacement


@dataclass
class TrackingMetrics:
    """Tracking scores of one sequence (or their mean). APD in %, EPE in metres; *_dynamic on moving tracks."""

    apd: float
    epe: float
    apd_dynamic: float
    epe_dynamic: float
    num_tracks: int
    num_dynamic: int
    alignment: str


@dataclass
class ReconMetrics:
    """Reconstruction scores of one sequence (or their mean): APD in %, EPE in metres."""

    apd: float
    epe: float
    num_points: int
    alignment: str


@dataclass
class DepthMetrics:
    """Depth scores after per-sequence median scaling: Abs Rel (fraction) and δ<1.25 (in %)."""

    abs_rel: float
    delta_1_25: float
    num_pixels: int


def tracking_metrics(pred_tracks: torch.Tensor, gt_tracks: torch.Tensor, *, alignment: str = "median",
                     dynamic: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> TrackingMetrics:
    """APD / EPE of world-frame tracks, on all tracks and on the moving ones.

    pred_tracks, gt_tracks: (T, N, 3) world frame; dynamic: (N,) bool or None (then from
    :func:`dynamic_tracks` on gt); valid: (T, N) bool or None (which ground-truth entries exist — *not*
    visibility: occluded points count).
    """
    if pred_tracks.ndim != 3:
        raise ValueError(f"pred_tracks must be (T, N, 3), got {tuple(pred_tracks.shape)}")
    if dynamic is None:
        dynamic = dynamic_tracks(gt_tracks)
    if dynamic.shape != pred_tracks.shape[1:2]:
        raise ValueError(f"dynamic must be (N,) = {tuple(pred_tracks.shape[1:2])}, got {tuple(dynamic.shape)}")
    aligned = align(pred_tracks, gt_tracks, valid, alignment)
    gt = gt_tracks.double()
    ok = torch.ones(pred_tracks.shape[:2], dtype=torch.bool, device=gt.device) if valid is None else valid
    dyn = ok & repeat(dynamic.to(gt.device), "n -> t n", t=pred_tracks.shape[0])
    return TrackingMetrics(
        apd=apd(aligned, gt, ok), epe=epe(aligned, gt, ok),
        apd_dynamic=apd(aligned, gt, dyn), epe_dynamic=epe(aligned, gt, dyn),
        num_tracks=int(pred_tracks.shape[1]), num_dynamic=int(dynamic.sum()), alignment=alignment,
    )


def recon_metrics(pred_points: torch.Tensor, gt_points: torch.Tensor, valid: torch.Tensor | None = None, *,
                  alignment: str = "median") -> ReconMetrics:
    """APD / EPE of reconstructed pointmaps of one sequence, aligned once over all its valid points.

    pred_points, gt_points: (..., 3), e.g. (T, H, W, 3) recon maps in the world frame; valid: (...) bool.
    """
    aligned = align(pred_points, gt_points, valid, alignment)
    _, _, ok = _points_and_valid(pred_points, gt_points, valid)
    return ReconMetrics(apd=apd(aligned, gt_points, valid), epe=epe(aligned, gt_points, valid),
                        num_points=int(ok.sum()), alignment=alignment)


def depth_metrics(pred_depth: torch.Tensor, gt_depth: torch.Tensor, valid: torch.Tensor | None = None
                  ) -> DepthMetrics:
    """Abs Rel and δ<1.25 (%) after one median scale per sequence, s = median(gt) / median(pred).

    pred_depth, gt_depth: (...) e.g. (T, H, W) z-depths; valid: (...) bool or None. Pixels with gt ≤ 0,
    pred ≤ 0 or non-finite values are ignored.
    """
    if pred_depth.shape != gt_depth.shape:
        raise ValueError(f"pred_depth {tuple(pred_depth.shape)} and gt_depth {tuple(gt_depth.shape)} differ")
    p, g = pred_depth.detach().double().flatten(), gt_depth.detach().double().flatten()
    ok = torch.isfinite(p) & torch.isfinite(g) & (g > 0) & (p > 0)
    if valid is not None:
        if valid.shape != pred_depth.shape:
            raise ValueError(f"valid must have shape {tuple(pred_depth.shape)}, got {tuple(valid.shape)}")
        ok = ok & valid.flatten().to(ok.device)
    if not ok.any():
        return DepthMetrics(abs_rel=math.nan, delta_1_25=math.nan, num_pixels=0)
    p, g = p[ok], g[ok]
    p = p * (g.median() / p.median())
    ratio = torch.maximum(p / g, g / p)
    return DepthMetrics(abs_rel=float(((p - g).abs() / g).mean()),
                        delta_1_25=float(100.0 * (ratio < 1.25).double().mean()), num_pixels=int(ok.sum()))


def static_tracks(anchor_points: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The static baseline: the anchor's own 3D points repeated for every frame (nothing moves).

    anchor_points: (N, 3) or a pointmap (H, W, 3) (e.g. the track map of pair (0, 0)) -> (T, N, 3).
    """
    if anchor_points.shape[-1] != 3 or anchor_points.ndim not in (2, 3):
        raise ValueError(f"anchor_points must be (N, 3) or (H, W, 3), got {tuple(anchor_points.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
    pts = anchor_points if anchor_points.ndim == 2 else rearrange(anchor_points, "h w c -> (h w) c")
    return repeat(pts, "n c -> t n c", t=num_frames)


def mean_metrics(items: list):
    """Mean of a list of metric dataclasses of one type (NaNs ignored; counts summed; strings kept)."""
    if not items:
        raise ValueError("mean_metrics needs at least one item")
    cls = type(items[0])
    values = {}
    for f in fields(cls):
        vals = [getattr(it, f.name) for it in items]
        if isinstance(vals[0], str):
            values[f.name] = vals[0]
        elif isinstance(vals[0], int):
            values[f.name] = int(sum(vals))
        else:
            finite = [v for v in vals if not math.isnan(v)]
            values[f.name] = float(sum(finite) / len(finite)) if finite else math.nan
    return cls(**values)
