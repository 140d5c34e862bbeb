"""Evaluation metrics beyond ``metrics.py``: cameras (ATE / RPE), occlusion masks, TAPVid-3D style scores.

Dimension letters: T frames, N tracked points, ``...`` any leading shape.

Cameras (docs/method.md §7). Predicted cameras live in the prediction's own world (scale and gauge unknown), so the
predicted camera centres c_t = T_world_cam_t[:3, 3] are first aligned to the ground-truth centres by a
closed-form Sim(3) (Umeyama): c_t ← s R c_t + t. Then

    ATE      = sqrt( mean_t ‖s R c_t + t − c*_t‖² )                      (absolute trajectory error, metres)
    RPE_t    = mean_t ‖s Δt_t − Δt*_t‖,   Δ = T_{t}⁻¹ T_{t+1}             (relative translation error, metres)
    RPE_rot  = mean_t angle(ΔR_tᵀ ΔR*_t)                                  (relative rotation error, degrees)

The relative poses do not depend on the world's rotation or origin, only on its scale s (from the Sim(3)).

Occlusion masks. A mask says per (t, n) "visible, trust this point" (True) or "occluded" (False). Against the
ground-truth visibility we report accuracy and, for the *occluded* class (the one the mask exists to find),
precision = |pred occl ∧ gt occl| / |pred occl| and recall = |pred occl ∧ gt occl| / |gt occl|
(counted by ``adapt.occlusion.mask_quality``: its ``occluded_precision`` / ``occluded_recall``, here in %).

TAPVid-3D (optional, Koppula et al. 2024), following the official protocol of google-deepmind/tapnet
(``tapvid3d/evaluation``: ``compute_tapvid3d_metrics`` with ``scaling='median'`` as called by
``evaluate_model.py``), re-implemented here:
  - tracks are compared in each frame's own camera (x, y, z), not in a shared world;
  - one global scale per sequence, s = median ‖X*‖ / median ‖X̂‖ over the (t, n) that are visible in both the
    ground truth and the prediction (norms = distances from the frame's camera); X̂ ← s X̂ (no shift);
  - K is rescaled to a 256-pixel short side first (f ← f · 256 / min(H, W): the metric resolution of the paper,
    whatever the evaluation resolution) and the focal is the mean √(fx fy);
  - thresholds grow with depth: δ_3D = δ_px · z* / f₂₅₆ for δ_px ∈ {1, 2, 4, 8, 16};
  - per threshold, APD = fraction of gt-visible points within δ_3D (visibility prediction ignored) and
    Jaccard = TP / (gt visible + FP), TP = gt visible ∧ pred visible ∧ within, FP = pred visible ∧ (gt occluded
    ∨ not within); 3D-AJ and APD_3D are their means; occlusion accuracy over every (t, n).
Before this protocol the module used K at the evaluation resolution and world-frame distances (4x looser
thresholds at 64x96); those numbers are not comparable with published ones and are no longer computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from st4r_lite.adapt.occlusion import mask_quality
from st4r_lite.geometry.pinhole import rotation_angle_deg, umeyama_sim3

TAPVID3D_PIXEL_THRESHOLDS = (1.0, 2.0, 4.0, 8.0, 16.0)
TAPVID3D_METRIC_SHORT_SIDE = 256  # the official metric resolution: K is rescaled to this short side
TAPVID3D_PROTOCOL = "tapnet tapvid3d official: camera-frame tracks, median scaling, K at 256-px short side"

__all__ = ["CameraMetrics", "OcclusionMetrics", "TapVid3DMetrics", "camera_metrics", "occlusion_metrics",
           "tapvid3d_metrics", "TAPVID3D_PIXEL_THRESHOLDS",
           "TAPVID3D_METRIC_SHORT_SIDE", "TAPVID3D_PROTOCOL"]


@dataclass
class CameraMetrics:
    """ATE (m), RPE translation (m) and rotation (degrees) after Sim(3) alignment of the camera centres."""

    ate: float
    rpe_trans: float
    rpe_rot_deg: float
    scale: float
    num_frames: int


@dataclass
class OcclusionMetrics:
    """Occlusion-mask quality: accuracy (%), occluded-class precision and recall (%), counts."""

    accuracy: float
    occluded_precision: float
    occluded_recall: float
    num_entries: int
    num_gt_occluded: int


@dataclass
class TapVid3DMetrics:
    """TAPVid-3D scores (%) under the official protocol (:data:`TAPVID3D_PROTOCOL`): depth-adaptive APD,
    occlusion accuracy, 3D average Jaccard; ``scale`` the median scale applied, ``focal_256`` the focal used."""

    apd_3d: float
    occlusion_accuracy: float
    average_jaccard: float
    scale: float = math.nan
    focal_256: float = math.nan
    protocol: str = TAPVID3D_PROTOCOL


def _check_poses(T: torch.Tensor, name: str) -> torch.Tensor:
    if T.ndim != 3 or tuple(T.shape[-2:]) != (4, 4):
        raise ValueError(f"{name} must be camera poses (T, 4, 4), got {tuple(T.shape)}")
    return T.detach().double().cpu()


def camera_metrics(pred_T_world_cam: torch.Tensor, gt_T_world_cam: torch.Tensor) -> CameraMetrics:
    """ATE / RPE of predicted cameras against ground truth after a Sim(3) fit of the centres (see module doc).

    pred_T_world_cam, gt_T_world_cam: (T, 4, 4) camera -> world. With fewer than 3 frames, or when the
    ground-truth centres (or the predicted ones) barely move (spread < 1e-6 m), no rotation can be fitted:
    only the centroid is matched and the scale is taken as 1.
    """
    P, G = _check_poses(pred_T_world_cam, "pred_T_world_cam"), _check_poses(gt_T_world_cam, "gt_T_world_cam")
    if P.shape != G.shape:
        raise ValueError(f"pred and gt cameras differ in shape: {tuple(P.shape)} vs {tuple(G.shape)}")
    if not (torch.isfinite(P).all() and torch.isfinite(G).all()):
        return CameraMetrics(math.nan, math.nan, math.nan, math.nan, int(P.shape[0]))
    c_p, c_g = P[:, :3, 3], G[:, :3, 3]
    spread = min(float((c_p - c_p.mean(0)).norm(dim=-1).max()), float((c_g - c_g.mean(0)).norm(dim=-1).max()))
    if P.shape[0] >= 3 and spread > 1e-6:
        s, R, t = umeyama_sim3(c_p, c_g)
        s = float(s)
        aligned = s * c_p @ R.T + t
    else:
        s = 1.0
        aligned = c_p - c_p.mean(0) + c_g.mean(0)
    ate = float(((aligned - c_g) ** 2).sum(-1).mean().sqrt())
    if P.shape[0] < 2:
        return CameraMetrics(ate, math.nan, math.nan, s, int(P.shape[0]))
    dP = torch.linalg.inv(P[:-1]) @ P[1:]
    dG = torch.linalg.inv(G[:-1]) @ G[1:]
    rpe_t = float((s * dP[:, :3, 3] - dG[:, :3, 3]).norm(dim=-1).mean())
    rpe_r = float(rotation_angle_deg(dP[:, :3, :3], dG[:, :3, :3]).mean())
    return CameraMetrics(ate=ate, rpe_trans=rpe_t, rpe_rot_deg=rpe_r, scale=s, num_frames=int(P.shape[0]))


def occlusion_metrics(pred_visible: torch.Tensor, gt_visible: torch.Tensor,
                      valid: torch.Tensor | None = None) -> OcclusionMetrics:
    """Quality of a visibility / occlusion mask. pred_visible, gt_visible: (T, N) (or any equal shape) bool;
    valid: same shape bool or None (entries to score). Precision / recall are NaN when undefined (0 / 0).
    """
    if pred_visible.shape != gt_visible.shape:
        raise ValueError(f"pred_visible {tuple(pred_visible.shape)} and gt_visible {tuple(gt_visible.shape)} "
                         "must have the same shape")
    p, g = pred_visible.bool().flatten().cpu(), gt_visible.bool().flatten().cpu()
    ok = torch.ones_like(p) if valid is None else valid.bool().flatten().cpu()
    p, g = p[ok], g[ok]
    if p.numel() == 0:
        return OcclusionMetrics(math.nan, math.nan, math.nan, 0, 0)
    q = mask_quality(p, g, skip_first=False)
    return OcclusionMetrics(accuracy=100.0 * q["accuracy"], occluded_precision=100.0 * q["occluded_precision"],
                            occluded_recall=100.0 * q["occluded_recall"], num_entries=int(p.numel()),
                            num_gt_occluded=int((~g).sum()))


def tapvid3d_metrics(pred_tracks_cam: torch.Tensor, gt_tracks_cam: torch.Tensor, pred_visible: torch.Tensor,
                     gt_visible: torch.Tensor, fx_fy: tuple[float, float], image_hw: tuple[int, int],
                     pixel_thresholds: tuple[float, ...] = TAPVID3D_PIXEL_THRESHOLDS) -> TapVid3DMetrics:
    """TAPVid-3D scores under the official protocol (module doc) of tracks in each frame's own camera.

    pred_tracks_cam, gt_tracks_cam: (T, N, 3), each frame's points in that frame's camera (the prediction in
    its own scale: the median scaling happens here); pred_visible, gt_visible: (T, N) bool; fx_fy: focal
    lengths (pixels) of K at ``image_hw`` = (H, W), the resolution K belongs to (it is rescaled to a 256-pixel
    short side). Non-finite predictions count as misses and are left out of the scale.
    """
    if pred_tracks_cam.shape != gt_tracks_cam.shape or pred_tracks_cam.ndim != 3:
        raise ValueError(f"pred and gt tracks must both be (T, N, 3), got {tuple(pred_tracks_cam.shape)} and "
                         f"{tuple(gt_tracks_cam.shape)}")
    if pred_visible.shape != pred_tracks_cam.shape[:2] or gt_visible.shape != pred_tracks_cam.shape[:2]:
        raise ValueError("pred_visible and gt_visible must be (T, N) like the tracks")
    fx, fy = (float(f) for f in fx_fy)
    if not (fx > 0 and fy > 0 and min(image_hw) > 0):
        raise ValueError(f"need positive focal lengths and image size, got fx_fy={fx_fy}, image_hw={image_hw}")
    focal = math.sqrt(fx * fy) * TAPVID3D_METRIC_SHORT_SIDE / min(image_hw)
    p, g = pred_tracks_cam.detach().double().cpu(), gt_tracks_cam.detach().double().cpu()
    pv, gv = pred_visible.bool().cpu(), gt_visible.bool().cpu()
    finite = torch.isfinite(p).all(-1)
    both = pv & gv & finite
    scale = math.nan
    if both.any():
        pn, gn = p.norm(dim=-1)[both].clamp(min=1e-6), g.norm(dim=-1)[both].clamp(min=1e-6)
        scale = float(gn.quantile(0.5) / pn.quantile(0.5))  # the mean of the middle two when even
    dist = (p * (scale if math.isfinite(scale) else 1.0) - g).norm(dim=-1).nan_to_num(math.inf)
    apds, ajs = [], []
    for d_px in pixel_thresholds:
        within = dist < d_px * g[..., 2] / focal
        if gv.any():
            apds.append(float(within[gv].double().mean()))
        tp = int((pv & gv & within).sum())
        fp = int((pv & ~(gv & within)).sum())
        denom = int(gv.sum()) + fp
        ajs.append(tp / denom if denom else math.nan)
    apd3 = 100.0 * sum(apds) / len(apds) if apds else math.nan
    aj = 100.0 * sum(ajs) / len(ajs) if not any(math.isnan(a) for a in ajs) else math.nan
    return TapVid3DMetrics(apd_3d=apd3, occlusion_accuracy=100.0 * float((pv == gv).double().mean()),
                           average_jaccard=aj, scale=scale, focal_256=focal)
