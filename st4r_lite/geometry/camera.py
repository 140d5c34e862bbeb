"""Cameras from pointmaps (docs/method.md §5): the focal from the anchor pair, then every frame's pose by PnP.

Dimension letters: B batch, T frames, H image rows, W image columns, N = H·W pixels of a frame.

The network gives, for each pair (anchor 0, frame j), ``recon_j`` = ¹Xʲ_j (H, W, 3): the 3D point seen at each
pixel p of frame j, in the world (= anchor camera) frame. With the intrinsics K, frame j's camera is the pose
T_world_cam_j that makes those points land back on their pixels:

    π(K · T_cam_world_j · X_p) ≈ p   for every pixel p,    T_cam_world_j = T_world_cam_j⁻¹,

a Perspective-n-Point problem with N known 2D–3D correspondences, solved in ``st4r_lite.geometry.pnp``
(RANSAC over P3P minimal solutions with a linear DLT / plane-homography refit, then confidence-weighted
Levenberg–Marquardt, then one differentiable Gauss–Newton step). The focal comes first, from the anchor's own pointmap in its own camera
frame (DUSt3R's Weiszfeld, ``geometry.estimate_focal``).

Nothing here raises on bad data (NaNs, a plane, 3 valid pixels): such frames are flagged in
``CameraSolution.status``, their pose falls back to the previous frame's (identity for the first), and one
warning per call says so.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import roma
import torch
import torch.nn.functional as F
from torch import Tensor

from st4r_lite.geometry import pnp
from st4r_lite.geometry.pinhole import (
    depth_to_pointmap,
    estimate_focal,
    intrinsics_matrix,
    invert_pose,
    make_pose,
    pixel_grid,
    transform_points,
)

__all__ = ["CameraSolution", "focal_from_anchor", "solve_poses", "cameras_for_video", "synthetic_pointmaps",
           "time_solve", "STATUSES", "PLAUSIBLE_FOCAL"]

STATUSES = ("ok", "planar", "few_points", "degenerate")
PLAUSIBLE_FOCAL = (1 / 20, 20.0)  # focal / image width outside this (field of view beyond ~3°..175°) is rejected


@dataclass
class CameraSolution:
    """Cameras of a video. T_world_cam (T, 4, 4) (differentiable w.r.t. recon and conf for solved frames);
    K (3, 3) or (T, 3, 3); inlier_ratio (T,) inliers / valid pixels; reproj_error_px (T,) RMS reprojection error
    over the inliers (NaN when a frame has none); num_valid (T,) valid pixels; inliers (T, H, W) bool;
    status: per frame one of STATUSES ("ok"; "planar": solved with a plane homography start, trustworthy;
    "few_points" / "degenerate": not solved, pose copied from the previous frame); messages: per frame, why;
    notes: what fell back for the whole video (e.g. the focal)."""

    T_world_cam: Tensor
    K: Tensor
    inlier_ratio: Tensor
    reproj_error_px: Tensor
    num_valid: Tensor
    inliers: Tensor
    status: list[str]
    messages: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> Tensor:
        """(T,) bool: the frame's pose was actually solved ("ok" or "planar")."""
        return torch.tensor([s in ("ok", "planar") for s in self.status], device=self.T_world_cam.device)

    @property
    def T_cam_world(self) -> Tensor:
        """(T, 4, 4) world -> camera, the pose that projects: p = π(K T_cam_world X)."""
        return invert_pose(self.T_world_cam)

    @property
    def focal(self) -> Tensor:
        """Focal length(s) in pixels, K[..., 0, 0]."""
        return self.K[..., 0, 0]


def focal_from_anchor(anchor: Tensor, conf: Tensor | None = None, *, conf_quantile: float = 0.25,
                      min_conf: float | None = None, pp: Tensor | None = None, iters: int = 10,
                      default_fov_deg: float = 60.0) -> Tensor:
    """Focal length (pixels) of the anchor camera from its own pointmap (DUSt3R's Weiszfeld, docs/method.md §5).

    With pp the principal point (default image centre), d_p = (u_p, v_p) − pp and q_p = (x_p / z_p, y_p / z_p):
        f = argmin_f Σ_p ‖d_p − f q_p‖,  least squares start f = Σ⟨d, q⟩ / Σ‖q‖², then ~10 reweightings 1/‖d − f q‖.
    anchor: (H, W, 3) or (B, H, W, 3), the anchor's pointmap in its own camera frame (pair (0, 0));
    conf: (H, W) / (B, H, W) or None. Pixels used: finite, z > 0, conf >= ``min_conf`` and within the top
    (1 − conf_quantile) of the image's confidences. If that leaves < 16 pixels the confidence filter is dropped.
    The one fallback: if nothing usable remains or f is implausible (outside ``PLAUSIBLE_FOCAL`` · W, e.g. from
    an untrained model), f = (W / 2) / tan(default_fov_deg / 2) with a warning. Returns f: () or (B,).
    """
    if anchor.ndim not in (3, 4) or anchor.shape[-1] != 3:
        raise ValueError(f"anchor must be a pointmap (H, W, 3) or (B, H, W, 3), got {tuple(anchor.shape)}")
    if not 0.0 <= conf_quantile < 1.0:
        raise ValueError(f"conf_quantile must be in [0, 1), got {conf_quantile}")
    single = anchor.ndim == 3
    pts = anchor[None] if single else anchor
    B, H, W, _ = pts.shape
    geometric = torch.isfinite(pts).all(-1) & (pts[..., 2] > 0)
    valid = geometric
    if conf is not None:
        c = conf[None] if single else conf
        if tuple(c.shape) != (B, H, W):
            raise ValueError(f"conf must have shape {tuple(anchor.shape[:-1])} (the anchor's H, W), "
                             f"got {tuple(conf.shape)}")
        c = c.detach()
        usable = geometric & torch.isfinite(c)
        if min_conf is not None:
            usable = usable & (c >= min_conf)
        if conf_quantile > 0:
            masked = torch.where(usable, c, torch.full_like(c, float("nan"))).flatten(1).float()
            thresh = torch.nanquantile(masked, conf_quantile, dim=1).to(c.dtype)
            usable = usable & (c >= thresh[:, None, None])
        enough = usable.flatten(1).sum(1) >= 16
        valid = torch.where(enough[:, None, None], usable, geometric)
    f = estimate_focal(pts, valid, pp=pp, iters=iters)
    missing = ~torch.isfinite(f) | (f <= 0)
    implausible = ~missing & ((f < PLAUSIBLE_FOCAL[0] * W) | (f > PLAUSIBLE_FOCAL[1] * W))
    if bool((missing | implausible).any()):
        default = (W / 2) / math.tan(math.radians(default_fov_deg) / 2)
        why = []
        if bool(missing.any()):
            why.append(f"no usable pixel in {int(missing.sum())} anchor pointmap(s) (NaNs, z <= 0 or low confidence)")
        if bool(implausible.any()):
            shown = ", ".join(f"{float(x):.3g}" for x in f[implausible][:3])
            why.append(f"focal from the anchor pointmap ({shown} px) is implausible for a {W} px wide image")
        warnings.warn(f"focal_from_anchor: {'; '.join(why)}; using f = {default:.1f} px ({default_fov_deg:.0f}° "
                      "field of view)", stacklevel=2)
        f = torch.where(missing | implausible, torch.full_like(f, default), f)
    return f[0] if single else f


def _check_inputs(recon: Tensor, K: Tensor, conf: Tensor | None, valid: Tensor | None) -> None:
    if recon.ndim != 4 or recon.shape[-1] != 3:
        raise ValueError(f"recon must be pointmaps (T, H, W, 3) in the world frame, got {tuple(recon.shape)}; "
                         "for one frame use recon[None]")
    T = recon.shape[0]
    if tuple(K.shape) not in ((3, 3), (T, 3, 3)):
        raise ValueError(f"K must be (3, 3) or (T, 3, 3) = ({T}, 3, 3), got {tuple(K.shape)}")
    for name, m in (("conf", conf), ("valid", valid)):
        if m is not None and tuple(m.shape) != tuple(recon.shape[:-1]):
            raise ValueError(f"{name} must have shape recon.shape[:-1] = {tuple(recon.shape[:-1])}, "
                             f"got {tuple(m.shape)}")


def solve_poses(recon: Tensor, K: Tensor, conf: Tensor | None = None, valid: Tensor | None = None, *,
                num_hypotheses: int = 128, inlier_px: float = 3.0, lm_iters: int = 10, rounds: int = 2,
                robust: str | None = "huber", robust_px: float | None = None, min_points: int = 6,
                min_inlier_ratio: float = 0.1, planar_tol: float = 1e-3, score_points: int = 1024,
                differentiable: bool = True, seed: int = 0, generator: torch.Generator | None = None,
                warn: bool = True) -> CameraSolution:
    """T_world_cam of every frame from its reconstruction pointmap (PnP, docs/method.md §5): π(K T_cam_world X_p) ≈ p.

    recon: (T, H, W, 3) world-frame points seen at each pixel of frame t; K: (3, 3) or (T, 3, 3);
    conf: (T, H, W) > 0 per-pixel weights (DUSt3R confidences) or None (all 1); valid: (T, H, W) bool or None.
    Non-finite points/confidences are invalid. Per frame (batched over frames, computed in float64):
      1. RANSAC: ``num_hypotheses`` 3-point sets drawn ∝ conf, each solved by P3P (up to 4 poses), MSAC score
         with threshold ``inlier_px`` (set it to ~3x the pixel noise), linear refit on the inliers (DLT, or a
         plane homography when the valid points are flat: σ_min/σ_max < ``planar_tol``);  2. ``rounds`` x (``lm_iters`` Levenberg–Marquardt steps on Σ_inliers conf·ρ(‖r‖), then
         inliers := {‖r‖ < inlier_px}), ρ = ``robust`` loss (None, "huber", "cauchy") of scale ``robust_px``
         (default inlier_px / 2): the re-classification fixes inlier sets taken from a noisy minimal fit;
      3. if ``differentiable``: one Gauss–Newton step with autograd, so T_world_cam carries gradients to recon
         and conf (the implicit-function gradient at the LM optimum; see ``st4r_lite.geometry.pnp``).
    Frames with < ``min_points`` valid pixels ("few_points"), or whose best pose has fewer than
    max(min_points, min_inlier_ratio · valid) inliers or is not finite ("degenerate"), take the previous frame's
    pose (identity for frame 0). ``seed``/``generator`` make the sampling deterministic. Returns CameraSolution.
    """
    _check_inputs(recon, K, conf, valid)
    if robust not in pnp.ROBUST_LOSSES:
        raise ValueError(f"robust must be one of {pnp.ROBUST_LOSSES}, got {robust!r}")
    if num_hypotheses < 1 or inlier_px <= 0 or min_points < 4:
        raise ValueError(f"need num_hypotheses >= 1, inlier_px > 0 and min_points >= 4; got {num_hypotheses}, "
                         f"{inlier_px}, {min_points}")
    T, H, W, _ = recon.shape
    out_dtype = recon.dtype if recon.dtype in (torch.float32, torch.float64) else torch.float32
    dt, dev = torch.float64, recon.device
    delta = inlier_px / 2 if robust_px is None else robust_px
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(seed)

    points = recon.to(dt).flatten(1, 2)  # (T, N, 3)
    ok_mask = torch.isfinite(points).all(-1)
    weights = torch.ones_like(points[..., 0]) if conf is None else conf.to(dt).flatten(1)
    ok_mask &= torch.isfinite(weights) & (weights > 0)
    if valid is not None:
        ok_mask &= valid.flatten(1).bool()
    points = torch.where(ok_mask[..., None], points, torch.zeros_like(points))  # NaN-free values and gradients
    weights = torch.where(ok_mask, weights, torch.zeros_like(weights))
    pixels = pixel_grid(H, W, device=dev, dtype=dt).flatten(0, 1).expand(T, -1, -1)
    K_t = K.to(device=dev, dtype=dt).expand(T, 3, 3)
    num_valid = ok_mask.sum(-1)

    with torch.no_grad():
        w0, X0 = weights.detach(), points.detach()
        w_norm = w0 / w0.sum(-1, keepdim=True).clamp_min(1e-300) * num_valid[:, None].clamp_min(1)
        planar = pnp.frame_normalization(X0, w_norm)[3] < planar_tol
        R, t, inl = pnp.ransac_pose(X0, pixels, K_t, w_norm, planar, num_hypotheses=num_hypotheses,
                                    inlier_px=inlier_px, score_points=score_points, generator=generator)
        err = pnp.reprojection(R, t, X0, pixels, K_t)[0].norm(dim=-1)  # (rounds = 0: the RANSAC pose's)
        for _ in range(rounds):  # LM on the inliers, then re-classify the points with the better pose
            R, t = pnp.lm_refine(R, t, X0, pixels, K_t, w_norm * inl, iters=lm_iters, robust=robust,
                                 delta=delta)
            r, z, _ = pnp.reprojection(R, t, X0, pixels, K_t)
            err = r.norm(dim=-1)
            inl = (w_norm > 0) & (err < inlier_px) & (z > 0)
        inliers = ok_mask & inl
    n_in = inliers.sum(-1)
    finite = torch.isfinite(R).all((-2, -1)) & torch.isfinite(t).all(-1)
    need = torch.maximum(torch.full_like(num_valid, min_points), (min_inlier_ratio * num_valid).ceil().long())
    solved = (num_valid >= min_points) & finite & (n_in >= need)

    T_cw = make_pose(R, t)
    if differentiable and bool(solved.any()):
        sel = solved.nonzero()[:, 0]
        w_grad = weights[sel] / w0[sel].sum(-1, keepdim=True) * num_valid[sel, None] * inliers[sel]
        R_g, t_g = pnp.gauss_newton_step(R[sel], t[sel], points[sel], pixels[sel], K_t[sel], w_grad,
                                         robust=robust, delta=delta)
        T_cw = T_cw.detach().clone()
        T_cw[sel] = make_pose(R_g, t_g)
    T_wc = invert_pose(T_cw)

    status, messages, outputs = [], [], []
    eye = torch.eye(4, dtype=dt, device=dev)
    for i in range(T):
        nv, ni = int(num_valid[i]), int(n_in[i])
        if bool(solved[i]):
            outputs.append(T_wc[i])
            status.append("planar" if bool(planar[i]) else "ok")
            messages.append(f"{ni}/{nv} inliers" + (" (flat scene: plane-homography start)" if planar[i] else ""))
            continue
        outputs.append(outputs[-1].detach() if outputs else eye)
        source = "previous frame's pose" if i else "identity"
        if nv < min_points:
            status.append("few_points")
            messages.append(f"only {nv} valid pixel(s) (need {min_points}); used the {source}")
        else:
            status.append("degenerate")
            why = "non-finite pose" if not bool(finite[i]) else f"only {ni}/{nv} inliers (need {int(need[i])})"
            messages.append(f"{why}; used the {source}")
    bad = [i for i, s in enumerate(status) if s not in ("ok", "planar")]
    if warn and bad:
        listed = "; ".join(f"frame {i}: {status[i]} ({messages[i]})" for i in bad[:5])
        warnings.warn(f"solve_poses: {len(bad)} of {T} frame(s) not solved, see CameraSolution.status: {listed}"
                      + (" ..." if len(bad) > 5 else ""), stacklevel=2)
    with torch.no_grad():
        sq = torch.where(inliers, err**2, torch.zeros_like(err)).sum(-1)
        rms = (sq / n_in.clamp_min(1)).sqrt()
        rms = torch.where(n_in > 0, rms, torch.full_like(rms, float("nan")))
    return CameraSolution(
        T_world_cam=torch.stack(outputs).to(out_dtype), K=K.to(out_dtype),
        inlier_ratio=(n_in / num_valid.clamp_min(1)).to(out_dtype), reproj_error_px=rms.to(out_dtype),
        num_valid=num_valid, inliers=inliers.view(T, H, W), status=status, messages=messages)


def cameras_for_video(recon: Tensor, conf: Tensor | None = None, *, anchor: Tensor | None = None,
                      anchor_conf: Tensor | None = None, valid: Tensor | None = None,
                      focal: float | Tensor | None = None, pp: tuple[float, float] | None = None,
                      conf_quantile: float = 0.25, pose_stride: int = 1, chunk: int | None = None, seed: int = 0,
                      **pose_options) -> CameraSolution:
    """The cameras of a video (docs/method.md §5): K from the anchor pair, then every frame's pose from its recon map.

    recon: (T, H, W, 3), pair (0, t)'s reconstruction of frame t in the world frame; conf: (T, H, W) or None;
    anchor: (H, W, 3), the anchor's pointmap in its own frame (default recon[0]; the track of pair (0, 0) works
    too), anchor_conf: (H, W) (default conf[0] with the default anchor); focal: skip the estimate and use this f;
    pp: (cx, cy), default ((W−1)/2, (H−1)/2). The focal falls back to a 60° field of view where the anchor gives
    none or an implausible one (``focal_from_anchor``; said in ``notes``, no warning).
    pose_stride s: PnP on every s-th pixel in each direction; pixel u' of that grid is pixel s·u', so its
    intrinsics are diag(1/s, 1/s, 1) K (the same pose from s² times fewer points).
    chunk: frames per PnP call (memory bounded; None = all at once); the chunk starting at frame c uses seed
    ``seed + c``; an unsolved frame takes the previous frame's pose across chunk borders too.
    ``pose_options`` go to ``solve_poses`` (e.g. differentiable, num_hypotheses, warn).
    Returns a CameraSolution with K (3, 3) at full resolution (inliers on the pose_stride grid).
    """
    if recon.ndim != 4 or recon.shape[-1] != 3:
        raise ValueError(f"recon must be pointmaps (T, H, W, 3), got {tuple(recon.shape)}")
    if pose_stride < 1 or (chunk is not None and chunk < 1):
        raise ValueError(f"pose_stride and chunk must be >= 1, got {pose_stride} and {chunk}")
    T, H, W, _ = recon.shape
    cx, cy = ((W - 1) / 2, (H - 1) / 2) if pp is None else pp
    notes = []
    if focal is None:
        if anchor is None:
            anchor = recon[0]
            anchor_conf = conf[0] if anchor_conf is None and conf is not None else anchor_conf
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            f = focal_from_anchor(anchor.detach(), None if anchor_conf is None else anchor_conf.detach(),
                                  conf_quantile=conf_quantile, pp=recon.new_tensor([cx, cy]))
        notes += [str(w.message) for w in caught]
    else:
        f = torch.as_tensor(focal, dtype=recon.dtype, device=recon.device)
    K = intrinsics_matrix(f, torch.as_tensor(cx).to(f), torch.as_tensor(cy).to(f))
    s = pose_stride
    K_sub = K if s == 1 else torch.cat([K[:2] / s, K[2:]])
    sub = (lambda x: x) if s == 1 else (lambda x: None if x is None else x[:, ::s, ::s])  # noqa: E731
    step = T if chunk is None else chunk
    parts = [solve_poses(sub(recon[c:c + step]), K_sub, sub(None if conf is None else conf[c:c + step]),
                         sub(None if valid is None else valid[c:c + step]), seed=seed + c, **pose_options)
             for c in range(0, T, step)]
    if len(parts) == 1:
        sol = parts[0]
    else:
        sol = CameraSolution(
            T_world_cam=torch.cat([p.T_world_cam for p in parts]), K=K_sub,
            inlier_ratio=torch.cat([p.inlier_ratio for p in parts]),
            reproj_error_px=torch.cat([p.reproj_error_px for p in parts]),
            num_valid=torch.cat([p.num_valid for p in parts]), inliers=torch.cat([p.inliers for p in parts]),
            status=[x for p in parts for x in p.status], messages=[x for p in parts for x in p.messages])
        poses = list(sol.T_world_cam.unbind(0))
        for t in range(1, T):
            if sol.status[t] not in ("ok", "planar"):
                poses[t] = poses[t - 1].detach()
        sol.T_world_cam = torch.stack(poses)
    sol.K, sol.notes = K.to(sol.T_world_cam.dtype), notes
    return sol


def synthetic_pointmaps(T: int, H: int, W: int, *, seed: int = 0, focal: float | None = None,
                        max_angle_deg: float = 10.0, max_translation: float = 0.3,
                        dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """A clean PnP test problem: smooth random depth (2–5 m) seen by T known cameras.

    Frame 0 is the world (identity); the others get random rotations up to ``max_angle_deg`` and translations up
    to ``max_translation`` metres per axis. recon_t = T_world_cam_t · unproject(depth_t, K).
    Returns recon (T, H, W, 3), K (3, 3) (default f = 1.2 · max(H, W)), T_world_cam (T, 4, 4).
    """
    g = torch.Generator().manual_seed(seed)
    f = 1.2 * max(H, W) if focal is None else focal
    K = intrinsics_matrix(torch.tensor(f, dtype=dtype), torch.tensor((W - 1) / 2, dtype=dtype),
                          torch.tensor((H - 1) / 2, dtype=dtype))
    coarse = 2.0 + 3.0 * torch.rand(T, 1, 4, 6, generator=g, dtype=dtype)
    depth = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True)[:, 0].clamp_min(1.0)
    axis = torch.randn(T, 3, generator=g, dtype=dtype)
    angle = torch.deg2rad(max_angle_deg * torch.rand(T, 1, generator=g, dtype=dtype))
    R = roma.rotvec_to_rotmat(axis / axis.norm(dim=-1, keepdim=True) * angle)
    t = max_translation * (2 * torch.rand(T, 3, generator=g, dtype=dtype) - 1)
    R[0], t[0] = torch.eye(3, dtype=dtype), 0.0
    T_world_cam = make_pose(R, t)
    recon = transform_points(T_world_cam, depth_to_pointmap(depth, K))
    return recon, K, T_world_cam


def time_solve(T: int = 16, H: int = 64, W: int = 96, repeats: int = 3, **pose_options) -> float:
    """Median wall time (seconds) of ``solve_poses`` on a clean synthetic problem of T frames at H x W."""
    recon, K, _ = synthetic_pointmaps(T, H, W)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        solve_poses(recon, K, **pose_options)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
