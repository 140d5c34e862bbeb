"""The course's contribution to test-time adaptation (docs/method.md §6): an occlusion mask and σ²-weighted losses.

Dimension letters: T frames (= pairs (anchor 0, j)), H image rows, W image columns, N query points
(anchor pixels p_n), C channels of a sampled map.

Pseudo-labels are wrong exactly where adaptation needs them most: under occlusion a 2D tracker latches onto
the occluder or wanders off. The network's own two pointmaps can tell when an anchor point is hidden in frame j:

    x̂_{j,n}   = π(K · T_cam_j_world · track_j(p_n))              (where the tracked point should appear)
    z^trk_{j,n} = depth of track_j(p_n) seen from camera j
    z^rec_j(x̂) = depth of the reconstruction of frame j at pixel x̂ (what camera j actually sees there)
    m_{j,n}   = 1[ z^trk_{j,n} ≤ z^rec_j(x̂_{j,n}) + τ · z^rec_j(x̂_{j,n}) ]   and 0 when x̂ is outside the image,

computed without gradient (τ relative to depth, so it works at any scene scale). A point farther than the
visible surface is behind it: occluded, so its pseudo-label must not teach.

The second half is a per-point uncertainty σ²_{j,n} (the network's ``log_sigma2_track`` head): each residual
r ≥ 0 costs

    ℓ(r, σ²) = ρ(r) / σ² + log σ²,      ρ(r) = r²/2 ("gaussian", the 2D Gaussian NLL)  or  ρ(r) = r ("laplace"),

minimised over σ² at σ² = ρ(r): a point the network cannot fit gets a large σ² and so a small weight 1/σ²,
and the log σ² term stops σ² from growing without reason. With σ² := 1/C (C the DUSt3R confidence) the same
formula is DUSt3R's confidence loss C·ρ(r) − log C (the ``conf_sigma`` ablation row).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

__all__ = ["SIGMA_FORMS", "OCCLUSION_TAU", "sample_map", "inside_image", "occlusion_mask", "robust_penalty", "nll_loss",
           "mask_quality"]

SIGMA_FORMS = ("gaussian", "laplace")
OCCLUSION_TAU = 0.1   # τ: the occlusion test's depth tolerance, relative to the reconstruction's depth


def inside_image(pixels: Tensor, H: int, W: int) -> Tensor:
    """(..., 2) pixels (u, v) -> (...) bool: u in [-0.5, W - 0.5] and v in [-0.5, H - 0.5] (NaN -> False)."""
    u, v = pixels[..., 0], pixels[..., 1]
    return (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5)


def sample_map(maps: Tensor, pixels: Tensor, mode: str = "bilinear") -> Tensor:
    """Read per-pixel maps at sub-pixel positions, differentiably with respect to the maps' values.

    maps: (T, H, W) or (T, H, W, C); pixels: (T, N, 2) (u, v), pixel centres at integer coordinates
    (align_corners=True: u = 0 is the centre of column 0). Outside the image the border value is used
    (check :func:`inside_image` yourself). mode: "bilinear" or "nearest". Returns (T, N) or (T, N, C).
    """
    if maps.ndim not in (3, 4):
        raise ValueError(f"maps must be (T, H, W) or (T, H, W, C), got {tuple(maps.shape)}")
    if pixels.ndim != 3 or pixels.shape[-1] != 2 or pixels.shape[0] != maps.shape[0]:
        raise ValueError(f"pixels must be (T, N, 2) with T = {maps.shape[0]}, got {tuple(pixels.shape)}")
    squeeze = maps.ndim == 3
    x = maps[..., None] if squeeze else maps
    H, W = x.shape[1:3]
    grid = torch.stack([pixels[..., 0] / max(W - 1, 1), pixels[..., 1] / max(H - 1, 1)], dim=-1) * 2 - 1
    grid = torch.nan_to_num(grid, nan=0.0).clamp(-2, 2).to(x.dtype)
    out = F.grid_sample(rearrange(x, "t h w c -> t c h w"), grid[:, None], mode=mode, padding_mode="border",
                        align_corners=True)                                   # (T, C, 1, N)
    out = rearrange(out[:, :, 0], "t c n -> t n c")
    return out[..., 0] if squeeze else out


@torch.no_grad()
def occlusion_mask(z_track: Tensor, pixels_hat: Tensor, depth_recon: Tensor, tau: float = OCCLUSION_TAU) -> Tensor:
    """The proposal's occlusion mask m = 1[z^trk ≤ z^rec(x̂) + τ·z^rec(x̂)], 0 outside the image (no gradient).

    z_track: (T, N) depth of each tracked point seen from camera j; pixels_hat: (T, N, 2) its reprojection x̂;
    depth_recon: (T, H, W) depth of frame j's reconstruction seen from camera j (<= 0 or NaN = unknown).
    The reconstruction depth is read at the nearest pixel (no blending across depth edges). Also 0 where
    z^trk ≤ 0 (behind the camera), where anything is non-finite, or where z^rec is unknown. Returns (T, N) bool.
    """
    if tau < 0:
        raise ValueError(f"tau is a relative depth tolerance and must be >= 0, got {tau}")
    if z_track.shape != pixels_hat.shape[:-1] or depth_recon.shape[0] != z_track.shape[0]:
        raise ValueError(f"shapes disagree: z_track {tuple(z_track.shape)}, pixels_hat {tuple(pixels_hat.shape)}, "
                         f"depth_recon {tuple(depth_recon.shape)}; expected (T, N), (T, N, 2), (T, H, W)")
    H, W = depth_recon.shape[-2:]
    z_rec = sample_map(depth_recon, pixels_hat, mode="nearest")
    ok = inside_image(pixels_hat, H, W) & torch.isfinite(z_track) & (z_track > 0)
    ok &= torch.isfinite(z_rec) & (z_rec > 0)
    return ok & (z_track <= z_rec * (1 + tau))


def robust_penalty(r: Tensor, form: str = "laplace") -> Tensor:
    """ρ(r) for residual norms r ≥ 0: r²/2 ("gaussian") or r ("laplace")."""
    if form == "gaussian":
        return 0.5 * r * r
    if form == "laplace":
        return r
    raise ValueError(f"sigma form must be one of {SIGMA_FORMS}, got {form!r}")


def nll_loss(r: Tensor, log_sigma2: Tensor, weight: Tensor, form: str = "laplace",
             min_log_sigma2: float = -10.0, max_log_sigma2: float = 10.0) -> Tensor:
    """Mean σ²-weighted loss  Σ w·(ρ(r)/σ² + log σ²) / Σ w  over the used entries.

    r: (...) residual norms; log_sigma2: (...) (clamped to [min, max] to keep exp finite); weight: (...) bool or
    float (0 = not used, e.g. invalid pseudo-label or occluded). Returns a scalar (0 when nothing is used,
    still connected to the graph).
    """
    w = weight.to(r.dtype)
    s = log_sigma2.clamp(min_log_sigma2, max_log_sigma2)
    r = torch.where(w > 0, r, torch.zeros_like(r))            # no NaN/inf from unused entries (0 * inf = nan)
    per_point = robust_penalty(r, form) * torch.exp(-s) + s
    return (w * per_point).sum() / w.sum().clamp_min(1.0)


def mask_quality(mask: Tensor, gt_visible: Tensor, skip_first: bool = True) -> dict[str, float]:
    """How well a visibility mask (m = 1: kept as visible) matches ground-truth visibility; the one place the
    project counts mask hits, for both classes, with the class in every name (fractions in [0, 1]):

        visible_precision  = P(visible | m = 1)     visible_recall  = P(m = 1 | visible)
        occluded_precision = P(occluded | m = 0)    occluded_recall = P(m = 0 | occluded)
        accuracy = P(m = visible),  kept_fraction = P(m = 1),  gt_visible_fraction = P(visible)

    mask, gt_visible: (T, N) bool (any equal shape when ``skip_first`` is False). ``skip_first`` leaves out
    frame 0 (the queries, visible by definition). NaN where a ratio has no denominator.
    ``eval.benchmark_metrics.occlusion_metrics`` reports the occluded class of this in percent.
    """
    if mask.shape != gt_visible.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and gt_visible {tuple(gt_visible.shape)} must match")
    m, g = (mask[1:], gt_visible[1:]) if skip_first else (mask, gt_visible)
    m, g = m.bool(), g.bool()
    tp, fp, fn, tn = (m & g).sum(), (m & ~g).sum(), (~m & g).sum(), (~m & ~g).sum()

    def ratio(a, b) -> float:
        return float(a) / float(b) if int(b) > 0 else math.nan

    return {"visible_precision": ratio(tp, tp + fp), "visible_recall": ratio(tp, tp + fn),
            "occluded_precision": ratio(tn, tn + fn), "occluded_recall": ratio(tn, tn + fp),
            "accuracy": ratio(tp + tn, m.numel()), "kept_fraction": ratio(tp + fp, m.numel()),
            "gt_visible_fraction": ratio(tp + fn, m.numel())}
