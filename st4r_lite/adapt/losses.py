"""The adaptation losses (docs/method.md §6): St4RTrack's L_traj, L_depth, L_align and the proposal's robust forms.

Dimension letters: T frames (pairs (anchor 0, j)), H image rows, W image columns, N query points p_n.

    x̂_{j,n} = π(K · T_cam_j_world · track_j(p_n))                         (reprojected anchor pixel)
    L_traj  = sqrt( mean_{(j,n) used} ‖x̂_{j,n} − x̃_{j,n}‖² )              (pixel RMSE, weight w_traj: 0 by default, 0.5 released)
    L_depth = mean_j mean_p (s_j d̃_j − ẑ_j)²,  ẑ_j = z^rec_j / mean(z^rec_j),  s_j = Σ d̃ ẑ / Σ d̃²   (weight 10)
    L_align = mean_{(j,n) used} ‖track_j(p_n) − recon_j(x̃_{j,n})‖ / s̄,  s̄ = mean_n ‖track_0(p_n)‖   (weight 5)

"used" = the provider marks the label valid and x̂ is in front of camera j (with ``align_where="recon_confident"``
also C_recon(x̃_{j,n}) > C_track_j(p_n): the recon read at the label is the more confident branch); the proposal's variants also need
the occlusion mask m_{j,n} (or, for the oracle, ground-truth visibility), and replace L_traj / L_align by the
σ²-weighted ``occlusion.nll_loss`` (see ``adapt`` for the units). Every term is independent of the scene's
scale, so the network cannot lower a loss by shrinking the world.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.adapt.occlusion import nll_loss, occlusion_mask, sample_map
from st4r_lite.adapt.pseudo_labels import PseudoLabels
from st4r_lite.adapt.variants import ROBUST_TERMS, VARIANTS
from st4r_lite.errors import InputError
from st4r_lite.geometry.pinhole import invert_pose, project, transform_points

__all__ = ["LossTerms", "traj_loss", "depth_loss", "align_loss", "adaptation_losses"]


@dataclass
class LossTerms:
    """One evaluation of the adaptation losses. total, traj, depth, align: scalars; used, mask: (T, N) bool;
    x_hat: (T, N, 2) reprojected tracks; log_sigma2: (T, N) the σ² used (0 without σ²)."""

    total: Tensor
    traj: Tensor
    depth: Tensor
    align: Tensor
    used: Tensor
    mask: Tensor
    x_hat: Tensor
    log_sigma2: Tensor


def traj_loss(x_hat: Tensor, x_tilde: Tensor, used: Tensor) -> Tensor:
    """L_traj = sqrt(mean_used ‖x̂ − x̃‖²): pixel RMSE. x_hat, x_tilde: (T, N, 2); used: (T, N) bool."""
    r2 = ((x_hat - x_tilde) ** 2).sum(-1)
    r2 = torch.where(used, r2, torch.zeros_like(r2))
    return torch.sqrt(r2.sum() / used.sum().clamp_min(1) + 1e-8)


def depth_loss(depth_recon: Tensor, mono: Tensor) -> Tensor:
    """L_depth = mean_j mean_p (s_j d̃ − ẑ)², ẑ = z / mean z, s_j = Σ d̃ ẑ / Σ d̃² (scale-invariant, per frame).

    depth_recon: (T, H, W) recon depth seen from camera j; mono: (T, H, W) pseudo-depth, 0 = missing.
    Pixels where either is <= 0 or non-finite are left out; frames with < 16 such pixels too.
    """
    if depth_recon.shape != mono.shape:
        raise ValueError(f"mono-depth {tuple(mono.shape)} must match the recon depth {tuple(depth_recon.shape)}")
    ok = torch.isfinite(depth_recon) & (depth_recon > 0) & torch.isfinite(mono) & (mono > 0)
    w = ok.to(depth_recon.dtype)
    z = torch.where(ok, depth_recon, torch.zeros_like(depth_recon))
    d = torch.where(ok, mono, torch.zeros_like(mono)).to(z.dtype)
    n = w.sum((1, 2))
    z_hat = z / (z.sum((1, 2)) / n.clamp_min(1)).clamp_min(1e-8)[:, None, None]
    s = (d * z_hat).sum((1, 2)) / (d * d).sum((1, 2)).clamp_min(1e-12)
    per_frame = (w * (s[:, None, None] * d - z_hat) ** 2).sum((1, 2)) / n.clamp_min(1)
    frames = n >= 16
    return (per_frame * frames).sum() / frames.sum().clamp_min(1)


def align_loss(track_q: Tensor, recon_at_tilde: Tensor, used: Tensor, scale: Tensor) -> Tensor:
    """L_align = mean_used ‖track_j(p_n) − recon_j(x̃_{j,n})‖ / s̄. track_q, recon_at_tilde: (T, N, 3)."""
    dist = (track_q - recon_at_tilde).norm(dim=-1)
    dist = torch.where(used, dist, torch.zeros_like(dist))
    return dist.sum() / used.sum().clamp_min(1) / scale


def adaptation_losses(out, K: Tensor, T_world_cam: Tensor, labels: PseudoLabels, cfg: AdaptConfig,
                      gt_visible: Tensor | None = None) -> LossTerms:
    """All terms for one forward pass ``out`` (a PairOutput with B = T pairs) and cameras (K, T_world_cam).

    labels: validated pseudo-labels (T, N); gt_visible: (T, N) bool, needed by ``oracle_mask`` only.
    """
    variant = VARIANTS[cfg.variant]
    q = labels.query_pixels.to(out.track)
    T = out.track.shape[0]
    qq = q[None].expand(T, -1, -1)
    track_q = sample_map(out.track, qq)                                       # (T, N, 3) track_j(p_n)
    T_cam_world = invert_pose(T_world_cam.to(out.track))
    cam_pts = transform_points(T_cam_world, track_q)
    z_trk = cam_pts[..., 2]
    front = torch.isfinite(cam_pts).all(-1) & (z_trk > 1e-6)
    safe = torch.where(front[..., None], cam_pts, torch.ones_like(cam_pts))
    x_hat = project(safe, K.to(safe))
    depth_recon = transform_points(T_cam_world, out.recon)[..., 2]           # (T, H, W) z^rec_j
    mask = occlusion_mask(z_trk.detach(), x_hat.detach(), depth_recon.detach(), cfg.tau)
    valid = labels.track_valid.to(front.device) & front
    x_tilde = labels.tracks_2d.to(x_hat)
    if cfg.align_where == "recon_confident":        # trust the recon only where it is the more confident branch
        valid = valid & (sample_map(out.conf_recon.detach(), x_tilde) > sample_map(out.conf_track.detach(), qq))
    used = valid
    if variant.mask == "pred":
        used = valid & mask
    elif variant.mask == "gt":
        if gt_visible is None:
            raise InputError(f"variant {variant.name!r} needs ground-truth visibility (a synthetic clip or a "
                             "WorldTrack file with visibility)")
        used = valid & gt_visible.to(valid.device)
    used_by = {t: used if t in variant.mask_terms else valid for t in ROBUST_TERMS}
    scale = track_q[0].norm(dim=-1).mean().clamp_min(1e-6)                   # s̄, with gradient
    recon_tilde = sample_map(out.recon, x_tilde)
    if variant.sigma is None:
        log_s2 = torch.zeros_like(z_trk)
    else:
        log_s2 = (sample_map(out.log_sigma2_track, qq) if variant.sigma == "head"
                  else -torch.log(sample_map(out.conf_track, qq)))
    f = K[0, 0].to(x_hat).detach()                    # σ² is in pixels²: the 3D error as pixel-equivalents
    power = 1 if cfg.sigma_form == "laplace" else 2   # back to L_align's units: at σ² = 1 (Laplace) = L_align
    if "traj" in variant.sigma_terms:
        l_traj = nll_loss((x_hat - x_tilde).norm(dim=-1), log_s2, used_by["traj"], cfg.sigma_form)
    else:
        l_traj = traj_loss(x_hat, x_tilde, used_by["traj"])
    if "align" in variant.sigma_terms:
        l_align = nll_loss(f * (track_q - recon_tilde).norm(dim=-1) / scale, log_s2, used_by["align"],
                           cfg.sigma_form) / f**power
    else:
        l_align = align_loss(track_q, recon_tilde, used_by["align"], scale)
    l_depth = (depth_loss(depth_recon, labels.depth.to(depth_recon)) if labels.depth is not None
               else depth_recon.sum() * 0)
    total = cfg.w_traj * l_traj + cfg.w_depth * l_depth + cfg.w_align * l_align
    return LossTerms(total, l_traj, l_depth, l_align, used, mask, x_hat, log_s2)


