"""Pseudo-labels for test-time adaptation (docs/method.md §6): one interface, several providers, their error statistics.

Dimension letters: T frames, H image rows, W image columns, N query points (anchor pixels), M a subset of N.

Test-time adaptation needs, for a video (T, 3, H, W) in [0, 1] and N query pixels of the anchor frame 0:
  - 2D tracks x̃_{t,n} (T, N, 2) in pixels, and the provider's own guess of which are usable (``track_valid``);
  - optionally a mono-depth map per frame (T, H, W), known only up to scale (and shift), as real models give.
Every provider returns a :class:`PseudoLabels`. Trackers follow :class:`PseudoLabelProvider`
(``provider(video, query_pixels) -> PseudoLabels``), depth models follow :class:`DepthProvider`
(``depth(video) -> (T, H, W)``), and :class:`CombinedProvider` joins one of each. The providers:
  - simulated (this package, synthetic videos only, built from ground truth): ``sim_labels.SimulatedTracker``,
    ``sim_labels.SimulatedMonoDepth`` (documented error models and their measured error statistics there);
  - classical: ``lk_tracker.LKTracker`` (pyramidal Lucas–Kanade + forward–backward check, any video);
  - learned, online only: ``online.CoTrackerProvider`` (CoTracker3) and ``online.MonoDepthProvider`` (MoGe);
  - ``online.make_provider(tracker=..., depth=...)`` builds any combination and says what it fell back to.

Validation policy (:func:`validate_pseudo_labels`), applied before labels reach a loss:
  - non-finite track coordinates (NaN/inf): marked invalid and replaced by the query pixel (finite, harmless);
  - tracks outside the image [-0.5, W - 0.5] x [-0.5, H - 0.5]: marked invalid (coordinates kept);
  - tracks farther than ``far_px`` (default max(H, W)) outside the image: also clamped to that band, so that
    no loss ever sees huge numbers (0 * inf = nan even under a mask);
  - depth: negative values are rejected with a ValueError (a disparity map or a bug, not a depth);
    NaN/inf/zero depth is set to 0, which means "missing" for every consumer (losses mask depth <= 0).

Queries off the anchor image (:data:`ANCHOR_QUERY_RULE`, applied by :func:`anchor_queries`): the one rule of
``evaluate``, ``adapt --tracker sim`` and ``adapt --tracker lk`` for the tracks of a WorldTrack / TAPVid-3D file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from st4r_lite.errors import InputError
from st4r_lite.geometry.pinhole import project

__all__ = [
    "PseudoLabels", "PseudoLabelProvider", "DepthProvider", "CombinedProvider", "ValidationReport",
    "PseudoLabelErrorStats", "check_video", "check_query_pixels", "inside_image",
    "validate_pseudo_labels", "pseudo_label_error_stats", "fit_depth", "WITHIN_PX", "ANCHOR_QUERY_RULE",
    "anchor_queries",
]

WITHIN_PX = (1, 2, 4, 8)
ANCHOR_QUERY_RULE = (
    "A track of a file is used only when its frame-0 point is finite, in front of camera 0 (z > 1e-6) and its "
    "query pixel lies inside the anchor image, -0.5 <= u <= W - 0.5 and -0.5 <= v <= H - 0.5 (the query is the "
    "stored frame-0 query when the file has one for every track, else the projection of the frame-0 point). "
    "Any other track names no anchor pixel, so St4RTrack has no prediction for it: it is dropped (and counted) "
    "before evaluation and before adaptation with any tracker, never clamped to the border. Query pixels given "
    "directly to a provider must already be inside (check_query_pixels refuses others).")


# ----------------------------------------------------------------------------------------------- data
@dataclass
class PseudoLabels:
    """What a provider gives for one video.

    tracks_2d: (T, N, 2) float pixels (u, v) of the N query points in every frame (frame 0 = the queries);
    track_valid: (T, N) bool, the provider's own guess that the track is visible and right (e.g. from a
        forward–backward check); losses should use only valid entries;
    depth: (T, H, W) float mono-depth, up to an unknown scale (and shift), 0 = missing; or None;
    query_pixels: (N, 2) float pixels in the anchor frame 0;
    source: which provider made them and what it fell back to (e.g. "lk(opencv)+sim-depth(scale)").
    """

    tracks_2d: Tensor
    track_valid: Tensor
    depth: Tensor | None
    query_pixels: Tensor
    source: str = "unknown"

    def __post_init__(self) -> None:
        t, q = self.tracks_2d, self.query_pixels
        if t.ndim != 3 or t.shape[-1] != 2:
            raise ValueError(f"tracks_2d must have shape (T, N, 2), got {tuple(t.shape)}")
        if tuple(self.track_valid.shape) != tuple(t.shape[:2]):
            raise ValueError(f"track_valid must have shape (T, N) = {tuple(t.shape[:2])}, "
                             f"got {tuple(self.track_valid.shape)}")
        if self.track_valid.dtype != torch.bool:
            raise ValueError(f"track_valid must be a bool tensor, got {self.track_valid.dtype}; "
                             "threshold confidences first (e.g. conf > 0.5)")
        if tuple(q.shape) != (t.shape[1], 2):
            raise ValueError(f"query_pixels must have shape (N, 2) = ({t.shape[1]}, 2), got {tuple(q.shape)}")
        if self.depth is not None and (self.depth.ndim != 3 or self.depth.shape[0] != t.shape[0]):
            raise ValueError(f"depth must have shape (T, H, W) with T = {t.shape[0]}, "
                             f"got {tuple(self.depth.shape)}")

    @property
    def num_frames(self) -> int:
        return int(self.tracks_2d.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.tracks_2d.shape[1])

    def to(self, device) -> PseudoLabels:
        """A copy with every tensor on ``device``."""
        depth = None if self.depth is None else self.depth.to(device)
        return replace(self, tracks_2d=self.tracks_2d.to(device), track_valid=self.track_valid.to(device),
                       depth=depth, query_pixels=self.query_pixels.to(device))


@runtime_checkable
class PseudoLabelProvider(Protocol):
    """A 2D tracker: ``provider(video (T, 3, H, W) in [0, 1], query_pixels (N, 2)) -> PseudoLabels``."""

    name: str

    def __call__(self, video: Tensor, query_pixels: Tensor) -> PseudoLabels: ...


@runtime_checkable
class DepthProvider(Protocol):
    """A mono-depth model: ``depth(video (T, 3, H, W) in [0, 1]) -> (T, H, W)`` up to scale (0 = missing)."""

    name: str

    def __call__(self, video: Tensor) -> Tensor: ...


class CombinedProvider:
    """A tracker plus an optional depth model, itself a :class:`PseudoLabelProvider`.

    Its output is validated (:func:`validate_pseudo_labels`); ``last_report`` keeps what was cleaned.
    """

    def __init__(self, tracker: PseudoLabelProvider, depth: DepthProvider | None = None,
                 note: str = "") -> None:
        self.tracker, self.depth_model, self.note = tracker, depth, note
        self.name = tracker.name + ("" if depth is None else "+" + depth.name)
        self.last_report: ValidationReport | None = None

    def __call__(self, video: Tensor, query_pixels: Tensor) -> PseudoLabels:
        labels = self.tracker(video, query_pixels)
        depth = None if self.depth_model is None else self.depth_model(video)
        source = labels.source + ("" if depth is None else "+" + self.depth_model.name)
        labels = replace(labels, depth=depth, source=source + (f" [{self.note}]" if self.note else ""))
        labels, self.last_report = validate_pseudo_labels(labels, image_size=tuple(video.shape[-2:]))
        return labels


# ----------------------------------------------------------------------------------------------- checks
def check_video(video: Tensor) -> tuple[int, int, int]:
    """Check a video (T, 3, H, W) float in [0, 1]; return (T, H, W). Raises ValueError saying what is wrong."""
    if not isinstance(video, Tensor):
        raise ValueError(f"video must be a torch.Tensor (T, 3, H, W), got {type(video).__name__}")
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"video must have shape (T, 3, H, W), got {tuple(video.shape)}; "
                         "channel-last frames need video.permute(0, 3, 1, 2)")
    if not video.is_floating_point():
        raise ValueError(f"video must be float in [0, 1], got dtype {video.dtype}; divide uint8 frames by 255")
    if video.numel() and (not torch.isfinite(video).all() or video.min() < -1e-3 or video.max() > 1 + 1e-3):
        raise ValueError(f"video values must be finite and in [0, 1], got range "
                         f"[{video.min().item():.3g}, {video.max().item():.3g}]; network images in [-1, 1] "
                         "convert back with (x + 1) / 2")
    return int(video.shape[0]), int(video.shape[2]), int(video.shape[3])


def check_query_pixels(query_pixels: Tensor, H: int, W: int) -> Tensor:
    """Check query pixels (N, 2) (u, v) inside the anchor frame; return them as float32."""
    q = torch.as_tensor(query_pixels)
    if q.ndim != 2 or q.shape[-1] != 2:
        raise ValueError(f"query_pixels must have shape (N, 2) as (u, v) = (column, row), got {tuple(q.shape)}")
    q = q.float()
    if not torch.isfinite(q).all():
        raise ValueError("query_pixels contain NaN or inf")
    if q.numel() and not inside_image(q, H, W).all():
        raise ValueError(f"query_pixels must lie inside the {H}x{W} anchor frame (u in [-0.5, {W - 0.5}], "
                         f"v in [-0.5, {H - 0.5}]); got u in [{q[:, 0].min():.1f}, {q[:, 0].max():.1f}], "
                         f"v in [{q[:, 1].min():.1f}, {q[:, 1].max():.1f}]")
    return q


def anchor_queries(xyz0: Tensor, K: Tensor, H: int, W: int,
                   queries_xyt: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:data:`ANCHOR_QUERY_RULE` on one file's tracks -> (query pixels (N, 2), keep (N,) bool).

    xyz0 (N, 3): the tracks' frame-0 points in camera 0; K (3, 3); queries_xyt (N, 3) (u, v, t) or None, used
    when every t is 0. The pixels have xyz0's dtype; callers keep ``[keep]``. Raises InputError when N > 0 and
    no track is kept (the file's tracks do not belong to this H x W image)."""
    xyz0 = torch.as_tensor(xyz0)
    assert xyz0.ndim == 2 and xyz0.shape[-1] == 3, f"xyz0 must be (N, 3), got {tuple(xyz0.shape)}"
    q = project(xyz0, torch.as_tensor(K).to(xyz0.dtype))
    if queries_xyt is not None:
        stored = torch.as_tensor(queries_xyt).to(xyz0.dtype)
        if stored.shape == (xyz0.shape[0], 3) and bool((stored[:, 2] == 0).all()):
            q = stored[:, :2].clone()                  # anchor-frame queries as stored (exact pixels)
    keep = torch.isfinite(xyz0).all(-1) & (xyz0[:, 2] > 1e-6) & inside_image(q, H, W)
    if keep.numel() and not bool(keep.any()):
        raise InputError(f"none of the {keep.numel()} tracks has its frame-0 point inside the {H}x{W} anchor "
                         "image (in front of the camera, -0.5 <= u <= W - 0.5, -0.5 <= v <= H - 0.5); check "
                         "that tracks_XYZ, fx_fy_cx_cy and the images belong to the same sequence")
    return q, keep


def inside_image(pixels: Tensor, H: int, W: int) -> Tensor:
    """(..., 2) pixels -> (...) bool: -0.5 <= u <= W - 0.5 and -0.5 <= v <= H - 0.5 (NaN -> False)."""
    u, v = pixels[..., 0], pixels[..., 1]
    return (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5)


# ----------------------------------------------------------------------------------------------- validation
@dataclass
class ValidationReport:
    """Counts of what :func:`validate_pseudo_labels` cleaned (see the module docstring for the policy)."""

    nonfinite_tracks: int = 0
    outside_image: int = 0
    far_outside: int = 0
    invalid_depth_pixels: int = 0

    @property
    def clean(self) -> bool:
        return not (self.nonfinite_tracks or self.far_outside or self.invalid_depth_pixels)

    def summary(self) -> str:
        return (f"{self.nonfinite_tracks} non-finite track entries, {self.outside_image} outside the image, "
                f"{self.far_outside} far outside (clamped), {self.invalid_depth_pixels} invalid depth pixels")


def validate_pseudo_labels(labels: PseudoLabels, image_size: tuple[int, int],
                           far_px: float | None = None) -> tuple[PseudoLabels, ValidationReport]:
    """Clean labels by the module's policy; returns (cleaned copy, report). image_size = (H, W).

    Raises ValueError for negative depth, a depth of the wrong size, or non-finite query pixels.
    """
    H, W = int(image_size[0]), int(image_size[1])
    far = float(max(H, W) if far_px is None else far_px)
    if not torch.isfinite(labels.query_pixels).all():
        raise ValueError("query_pixels contain NaN or inf; the queries must be real anchor pixels")
    report = ValidationReport()
    tracks, valid = labels.tracks_2d.clone(), labels.track_valid.clone()
    bad = ~torch.isfinite(tracks).all(dim=-1)
    report.nonfinite_tracks = int(bad.sum())
    tracks = torch.where(bad[..., None], labels.query_pixels.to(tracks)[None].expand_as(tracks), tracks)
    valid &= ~bad
    outside = ~inside_image(tracks, H, W)
    report.outside_image = int((outside & valid).sum())
    valid &= ~outside
    lo = tracks.new_tensor([-0.5 - far, -0.5 - far])
    hi = tracks.new_tensor([W - 0.5 + far, H - 0.5 + far])
    clamped = torch.maximum(torch.minimum(tracks, hi), lo)
    report.far_outside = int((clamped != tracks).any(dim=-1).sum())
    depth = labels.depth
    if depth is not None:
        if tuple(depth.shape[-2:]) != (H, W):
            raise ValueError(f"depth must be (T, {H}, {W}) like the video, got {tuple(depth.shape)}; "
                             "resize the mono-depth to the video resolution first")
        if (depth < 0).any():
            raise ValueError(f"depth has {int((depth < 0).sum())} negative values (min {depth.min():.3g}); "
                             "a depth must be >= 0 (0 = missing). Is it a disparity or a signed output? "
                             "Convert it to depth, or use --depth none")
        finite = torch.isfinite(depth) & (depth > 0)
        report.invalid_depth_pixels = int((~finite).sum())
        depth = torch.where(finite, depth, torch.zeros_like(depth))
    cleaned = replace(labels, tracks_2d=clamped, track_valid=valid, depth=depth)
    return cleaned, report


# ----------------------------------------------------------------------------------------------- statistics
@dataclass
class PseudoLabelErrorStats:
    """Errors of pseudo-labels against ground truth (frame 0, the query frame, is left out).

    epe_visible / epe_occluded: mean 2D end-point error (px) where the GT point is visible / not visible
    (occluded or out of view); median_visible / median_occluded: the medians; within[d]: fraction of GT-visible
    entries with EPE < d px; visibility_accuracy: fraction of entries where track_valid == GT visibility;
    valid_precision: of the entries the provider marks valid (e.g. passed its forward–backward check), the
    fraction that are GT-visible; valid_accurate: ... that are GT-visible *and* within 4 px; valid_recall: of the
    GT-visible entries, the fraction marked valid;
    depth_absrel: mean |fit(d) - d_gt| / d_gt after the best per-frame affine (or scale) fit, or None.
    """

    epe_visible: float
    epe_occluded: float
    within: dict[int, float] = field(default_factory=dict)
    visibility_accuracy: float = float("nan")
    depth_absrel: float | None = None
    num_visible: int = 0
    num_occluded: int = 0
    median_visible: float = float("nan")
    median_occluded: float = float("nan")
    valid_precision: float = float("nan")
    valid_accurate: float = float("nan")
    valid_recall: float = float("nan")

    def summary(self) -> str:
        w = " ".join(f"<{d}px {100 * f:.0f}%" for d, f in self.within.items())
        depth = "n/a" if self.depth_absrel is None else f"{self.depth_absrel:.3f}"
        return (f"median EPE vis {self.median_visible:.2f}px occ {self.median_occluded:.2f}px (mean "
                f"{self.epe_visible:.2f}/{self.epe_occluded:.2f}) | {w} | valid: precision "
                f"{100 * self.valid_precision:.0f}% (<4px {100 * self.valid_accurate:.0f}%) recall "
                f"{100 * self.valid_recall:.0f}% | depth AbsRel {depth}")

    def as_dict(self) -> dict:
        """Plain JSON-ready numbers (NaN -> None)."""
        def num(x):
            return None if x is None or x != x else round(float(x), 4)
        out = {k: num(getattr(self, k)) for k in (
            "median_visible", "median_occluded", "epe_visible", "epe_occluded", "visibility_accuracy",
            "valid_precision", "valid_accurate", "valid_recall", "depth_absrel")}
        out["within_px"] = {str(d): num(f) for d, f in self.within.items()}
        out["num_visible"], out["num_occluded"] = self.num_visible, self.num_occluded
        return out


def fit_depth(pred: Tensor, gt: Tensor, mask: Tensor, mode: str = "affine") -> Tensor:
    """Per-frame least-squares fit of pred to gt on mask: s_t pred + b_t ("affine") or s_t pred ("scale").

    pred, gt: (T, H, W); mask: (T, H, W) bool. Returns the fitted pred (T, H, W).
    Scale only: s = Σ pred·gt / Σ pred²; affine: solve the 2x2 normal equations per frame.
    """
    if mode not in ("affine", "scale"):
        raise ValueError(f"depth fit mode must be 'affine' or 'scale', got {mode!r}")
    m = mask.to(pred.dtype)
    p, g = pred * m, gt * m
    spp, spg = (p * p).sum((1, 2)), (p * g).sum((1, 2))
    if mode == "scale":
        s = spg / spp.clamp_min(1e-12)
        return s[:, None, None] * pred
    n, sp, sg = m.sum((1, 2)), p.sum((1, 2)), g.sum((1, 2))
    det = (spp * n - sp * sp).clamp_min(1e-12)
    s = (spg * n - sp * sg) / det
    b = (spp * sg - sp * spg) / det
    return s[:, None, None] * pred + b[:, None, None]


def pseudo_label_error_stats(labels: PseudoLabels, gt_tracks_2d: Tensor, gt_visible: Tensor,
                             gt_depth: Tensor | None = None, depth_fit: str = "affine") -> PseudoLabelErrorStats:
    """Compare labels with ground truth. gt_tracks_2d: (T, N, 2); gt_visible: (T, N) bool; gt_depth: (T, H, W).

    Non-finite GT entries (points behind the camera) are left out of the EPE. Depth AbsRel is measured on
    pixels where both depths are > 0 after :func:`fit_depth` (``depth_fit`` = "affine" or "scale").
    """
    if tuple(gt_tracks_2d.shape) != tuple(labels.tracks_2d.shape):
        raise ValueError(f"gt_tracks_2d {tuple(gt_tracks_2d.shape)} must match tracks_2d "
                         f"{tuple(labels.tracks_2d.shape)}")
    if tuple(gt_visible.shape) != tuple(labels.track_valid.shape):
        raise ValueError(f"gt_visible {tuple(gt_visible.shape)} must match track_valid "
                         f"{tuple(labels.track_valid.shape)}")
    pred, gt = labels.tracks_2d[1:].float(), gt_tracks_2d[1:].float()
    vis, valid = gt_visible[1:].bool(), labels.track_valid[1:]
    epe = (pred - gt).norm(dim=-1)
    ok = torch.isfinite(epe)
    ev, eo = epe[vis & ok], epe[~vis & ok]
    nan = float("nan")

    def frac(num: Tensor, den: Tensor) -> float:
        return (num & den).sum().item() / den.sum().item() if den.any() else nan

    stats = PseudoLabelErrorStats(
        epe_visible=ev.mean().item() if ev.numel() else nan,
        epe_occluded=eo.mean().item() if eo.numel() else nan,
        within={d: ((ev < d).float().mean().item() if ev.numel() else nan) for d in WITHIN_PX},
        visibility_accuracy=(valid == vis).float().mean().item() if vis.numel() else nan,
        num_visible=int(ev.numel()), num_occluded=int(eo.numel()),
        median_visible=ev.median().item() if ev.numel() else nan,
        median_occluded=eo.median().item() if eo.numel() else nan,
        valid_precision=frac(vis, valid), valid_accurate=frac(vis & ok & (epe < 4), valid),
        valid_recall=frac(valid, vis),
    )
    if labels.depth is not None and gt_depth is not None:
        d, dg = labels.depth.float(), gt_depth.float().to(labels.depth.device)
        if tuple(d.shape) != tuple(dg.shape):
            raise ValueError(f"gt_depth {tuple(dg.shape)} must match depth {tuple(d.shape)}")
        mask = torch.isfinite(d) & torch.isfinite(dg) & (d > 0) & (dg > 0)
        fitted = fit_depth(torch.where(mask, d, 0), torch.where(mask, dg, 0), mask, depth_fit)
        rel = ((fitted - dg).abs() / dg.clamp_min(1e-9))[mask]
        stats.depth_absrel = rel.mean().item() if rel.numel() else nan
    return stats


# ----------------------------------------------------------------------------------------------- report
