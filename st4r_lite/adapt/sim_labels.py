"""Simulated pseudo-labels for synthetic videos: ground truth plus the errors real trackers and depth models make.

Dimension letters: T frames, H image rows, W image columns, N query points, M a subset of N.

The adaptation must be studied with pseudo-labels whose errors we know and can dial. Both providers start
from the exact ground truth of a synthetic clip (:class:`GroundTruthVideo`, from a ``world.Clip`` or a
WorldTrack sequence) and add, with strengths in a config dataclass (defaults in brackets):

:class:`SimulatedTracker` (like CoTracker on small videos), :class:`SimTrackerConfig`
  - jitter: i.i.d. Gaussian noise per frame [0.5 px];
  - drift: a Gaussian random walk, std growing as sqrt(t) [0.15 px per frame];
  - under occlusion (GT not visible but inside the image), each point either (prob. ``latch_prob`` [0.6])
    *latches onto the occluder*: its estimate follows the 3D motion of the surface visible at its position
    (static parts: exact camera-induced motion from depth; moving objects: the 3D displacement of the nearest
    anchor point of the same object), or *wanders*: a random walk [1.5 px per frame];
  - after re-emergence the error decays geometrically [x0.5 per frame] (the tracker re-acquires the point);
  - visibility errors: occluded marked visible [prob. 0.25], visible marked occluded [prob. 0.05].
  Frame 0 returns the queries exactly (valid). Out-of-view points keep the GT path (+ drift, jitter).

:class:`SimulatedMonoDepth` (like MoGe: scale only, or MiDaS/Depth Anything: scale and shift),
:class:`SimDepthConfig`: edges smeared by a Gaussian blur across occlusion boundaries [sigma 1 px]; a smooth
multiplicative warp exp(a g(x)), g a bicubically upsampled 3x4 Gaussian field [a = 0.05]; multiplicative
pixel noise [1 %]; then per frame an unknown scale s_t in [0.5, 2] (log-uniform) and, in "affine" mode, a shift
b_t = s_t c_t min(d_t) with c_t ~ U(-0.5, 1) (keeps depth > 0). Default mode "scale" (MoGe-like; the
adaptation's depth loss fits a per-frame scale). Everything is seeded with a ``torch.Generator``.

Error statistics at default strength (``studies.label_stats.pseudo_label_statistics``, written to
data/pseudo_label_stats.json by ``python -m st4r_lite.studies.label_stats``; 2 clips per domain, T=12, 48x64,
queries on a stride-4 grid, frame 0 left out):
  sim tracker  wild: median EPE visible 0.72 px, occluded 1.03 px; within 1/2/4/8 px 72/98/99/100 %;
               valid precision 94 %, recall 94 %.   pretrain: 0.72 / 0.89 px; 72/99/100/100 %; 98 % / 94 %.
  sim depth    AbsRel after the per-frame affine fit: 0.05 (wild), 0.046 (pretrain).
  (LK on the same clips, for comparison: wild 2.7 px median, 37 % recall; pretrain 0.96 px, 78 % recall.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from st4r_lite.adapt.pseudo_labels import (
    PseudoLabels,
    anchor_queries,
    check_query_pixels,
    check_video,
    inside_image,
)
from st4r_lite.errors import InputError
from st4r_lite.geometry.pinhole import intrinsics_matrix, invert_pose, project, transform_points, unproject

__all__ = ["GroundTruthVideo", "SimTrackerConfig", "SimDepthConfig", "SimulatedTracker", "SimulatedMonoDepth",
           "as_ground_truth", "gaussian_blur_masked", "smooth_field"]


# ----------------------------------------------------------------------------------------------- ground truth
@dataclass
class GroundTruthVideo:
    """Exact ground truth of one synthetic video (world = camera of frame 0).

    K: (3, 3); T_world_cam: (T, 4, 4); depth: (T, H, W) z-depth (0 = unknown) or None;
    track_world: dense (T, H, W, 3) (every anchor pixel, from a Clip) or sparse (T, N, 3) (from a sequence);
    track_visible: (T, H, W) or (T, N) bool; object_id: (T, H, W) int64 (0 = static) or None;
    queries: (N, 2) pixels of the sparse tracks in frame 0 (None when dense); dropped_tracks: how many tracks
    of the file broke ``pseudo_labels.ANCHOR_QUERY_RULE`` (not in the N).
    """

    K: Tensor
    T_world_cam: Tensor
    depth: Tensor | None
    track_world: Tensor
    track_visible: Tensor
    object_id: Tensor | None = None
    queries: Tensor | None = None
    height: int = 0
    width: int = 0
    dropped_tracks: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.T_world_cam.shape[0])

    @property
    def dense(self) -> bool:
        return self.queries is None

    @classmethod
    def from_clip(cls, clip, index: int = 0) -> GroundTruthVideo:
        """Clip b = ``index`` of a ``world.Clip`` (all tensors moved to CPU float32)."""
        if not 0 <= index < clip.track_world.shape[0]:
            raise ValueError(f"clip index {index} out of range: the Clip holds {clip.track_world.shape[0]} clips")
        H, W = clip.depth.shape[-2:]
        return cls(K=clip.K[index].float().cpu(), T_world_cam=clip.T_world_cam[index].float().cpu(),
                   depth=clip.depth[index].float().cpu(), track_world=clip.track_world[index].float().cpu(),
                   track_visible=clip.track_visible[index].bool().cpu(),
                   object_id=clip.object_id[index].cpu(), height=int(H), width=int(W))

    @classmethod
    def from_sequence(cls, seq, height: int | None = None, width: int | None = None) -> GroundTruthVideo:
        """A WorldTrack sequence (tracks_XYZ in each frame's camera, extrinsics_w2c, fx_fy_cx_cy, depth_map).

        The world is re-based on frame 0 (T_world_cam_t = E_0 E_t⁻¹); the queries are the frame-0 projections
        (or the stored frame-0 queries). Tracks off the anchor image are dropped, as ``evaluate`` drops them
        (``pseudo_labels.ANCHOR_QUERY_RULE``; their count in ``dropped_tracks``), so every tracker sees the same
        queries and the metrics score the same tracks as ``evaluate``.
        """
        xyz = torch.as_tensor(seq.tracks_XYZ).float()
        E = torch.as_tensor(seq.extrinsics_w2c).float()
        fx, fy, cx, cy = torch.as_tensor(seq.fx_fy_cx_cy).float().tolist()
        K = intrinsics_matrix(fx, cx, cy)
        K[1, 1] = fy
        T_world_cam = E[0] @ torch.linalg.inv(E)
        depth = None if getattr(seq, "depth_map", None) is None else torch.as_tensor(seq.depth_map).float()
        if height is None or width is None:
            if depth is not None:
                height, width = depth.shape[-2:]
            else:
                height, width = torch.as_tensor(seq.images).shape[1:3]
        q, keep = anchor_queries(xyz[0], K, int(height), int(width), getattr(seq, "queries_xyt", None))
        track_world = transform_points(T_world_cam, xyz[:, keep])
        return cls(K=K, T_world_cam=T_world_cam, depth=depth, track_world=track_world,
                   track_visible=torch.as_tensor(seq.visibility).bool()[:, keep], queries=q[keep],
                   height=int(height), width=int(width), dropped_tracks=int((~keep).sum()))

    def lookup(self, query_pixels: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """GT of the queries: (query_pixels (N, 2), track_world (T, N, 3), visible (T, N), anchor_object (N,)).

        Dense: queries are read at their nearest pixel centre. Sparse: they must be the stored queries (or None).
        """
        if not self.dense:
            if query_pixels is not None and (tuple(query_pixels.shape) != tuple(self.queries.shape) or
                                             (query_pixels - self.queries).abs().max() > 0.5):
                raise ValueError("a ground truth from a sequence only knows its own query points; pass "
                                 "query_pixels=None or GroundTruthVideo.queries")
            return self.queries, self.track_world, self.track_visible, None
        q = check_query_pixels(query_pixels, self.height, self.width)
        iu = q[:, 0].round().long().clamp(0, self.width - 1)
        iv = q[:, 1].round().long().clamp(0, self.height - 1)
        obj = None if self.object_id is None else self.object_id[0, iv, iu]
        return q, self.track_world[:, iv, iu], self.track_visible[:, iv, iu], obj

    def tracks_2d(self, query_pixels: Tensor | None) -> tuple[Tensor, Tensor]:
        """GT 2D tracks (T, N, 2) (projected with frame t's camera; NaN behind the camera) and visibility (T, N).

        Dense queries off pixel centres get their sub-pixel offset added to every frame (first-order exact).
        """
        q, tw, vis, _ = self.lookup(query_pixels)
        cam = transform_points(invert_pose(self.T_world_cam), tw)
        uv = project(cam, self.K)
        uv = torch.where(cam[..., 2:3] > 1e-6, uv, torch.full_like(uv, float("nan")))
        if self.dense:
            uv = uv + (q - q.round())[None]
        return uv, vis


def as_ground_truth(gt, index: int = 0) -> GroundTruthVideo:
    """A :class:`GroundTruthVideo` from itself, a ``world.Clip`` (clip ``index``) or a WorldTrack sequence."""
    if isinstance(gt, GroundTruthVideo):
        return gt
    if hasattr(gt, "track_world") and hasattr(gt, "T_world_cam"):
        return GroundTruthVideo.from_clip(gt, index)
    if hasattr(gt, "tracks_XYZ"):
        return GroundTruthVideo.from_sequence(gt)
    raise InputError(f"simulated pseudo-labels need ground truth (a world.Clip, a WorldTrack sequence or a "
                     f"GroundTruthVideo), got {type(gt).__name__}; for a real video use the LK tracker")


# ----------------------------------------------------------------------------------------------- tracker
@dataclass
class SimTrackerConfig:
    """Error strengths of :class:`SimulatedTracker` (pixels of the video; see the module docstring)."""

    jitter_px: float = 0.5
    drift_px_per_frame: float = 0.15
    latch_prob: float = 0.6
    wander_px_per_frame: float = 1.5
    recover_decay: float = 0.5
    occluded_marked_visible_prob: float = 0.25
    visible_marked_occluded_prob: float = 0.05

    def __post_init__(self) -> None:
        for name in ("jitter_px", "drift_px_per_frame", "wander_px_per_frame"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("latch_prob", "recover_decay", "occluded_marked_visible_prob",
                     "visible_marked_occluded_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} is a probability/factor in [0, 1], got {getattr(self, name)}")

    @classmethod
    def latching(cls) -> SimTrackerConfig:
        """The ablation's reference tracker ("sim-latch"): under occlusion every point latches onto the occluder
        and 90 % of them are still reported visible -- what real trackers do when something passes in front
        (they follow the texture they see). The failure the proposal's occlusion mask is meant to catch."""
        return cls(latch_prob=1.0, occluded_marked_visible_prob=0.9)

    @classmethod
    def perfect(cls) -> SimTrackerConfig:
        """No error at all (returns the ground truth): the oracle row of an ablation."""
        return cls(0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0)

    def scaled(self, strength: float) -> SimTrackerConfig:
        """Every error dialled by ``strength`` (0 = exactly the ground truth, 1 = this config, 2 = twice ...).

        Pixel magnitudes, the recovery decay and the flip probabilities are multiplied (capped at 1)."""
        if strength < 0:
            raise InputError(f"strength must be >= 0, got {strength}")
        if strength == 0:
            return SimTrackerConfig.perfect()
        s = float(strength)
        return SimTrackerConfig(self.jitter_px * s, self.drift_px_per_frame * s, self.latch_prob,
                                self.wander_px_per_frame * s, min(1.0, self.recover_decay * s),
                                min(1.0, self.occluded_marked_visible_prob * s),
                                min(1.0, self.visible_marked_occluded_prob * s))


class SimulatedTracker:
    """Ground-truth 2D tracks with realistic errors; a ``PseudoLabelProvider`` for synthetic videos.

    ``SimulatedTracker(clip, index=0, config=SimTrackerConfig(), seed=0)(video, query_pixels)``; the video is
    only checked against the ground truth's size. The same seed and queries always give the same labels.
    """

    name = "sim-track"

    def __init__(self, gt, index: int = 0, config: SimTrackerConfig | None = None, seed: int = 0,
                 max_anchor_candidates: int = 4096) -> None:
        self.gt = as_ground_truth(gt, index)
        self.config = config or SimTrackerConfig()
        self.seed, self.max_anchor_candidates = int(seed), int(max_anchor_candidates)

    def __call__(self, video: Tensor, query_pixels: Tensor | None) -> PseudoLabels:
        gt, cfg = self.gt, self.config
        T, H, W = check_video(video)
        if (T, H, W) != (gt.num_frames, gt.height, gt.width):
            raise InputError(f"video is {T}x{H}x{W} (T x H x W) but the ground truth is "
                             f"{gt.num_frames}x{gt.height}x{gt.width}; pass the clip the video came from")
        q, _, _, _ = gt.lookup(query_pixels)
        gt2d, vis = gt.tracks_2d(q if gt.dense else None)
        N = q.shape[0]
        g = torch.Generator().manual_seed(self.seed)
        jitter = cfg.jitter_px * torch.randn(T, N, 2, generator=g)
        drift = torch.cumsum(cfg.drift_px_per_frame * torch.randn(T, N, 2, generator=g), dim=0)
        wander = cfg.wander_px_per_frame * torch.randn(T, N, 2, generator=g)
        latch = torch.rand(N, generator=g) < cfg.latch_prob
        flip = torch.rand(T, N, generator=g)
        jitter[0], drift = 0.0, drift - drift[:1]
        base = torch.nan_to_num(gt2d, nan=0.0) + drift      # the GT path the tracker roughly follows
        occluded = ~vis & inside_image(gt2d, H, W)
        est = torch.empty(T, N, 2)
        est[0] = q
        for t in range(1, T):
            new = base[t] + cfg.recover_decay * (est[t - 1] - base[t - 1])
            occ = occluded[t]
            if occ.any():
                moved = est[t - 1] + wander[t]
                lat = occ & latch
                if lat.any():
                    moved[lat] = self._occluder_flow(est[t - 1][lat], t - 1, t)
                new = torch.where(occ[:, None], moved, new)
            est[t] = new
        tracks = est + jitter
        vis_pred = torch.where(vis, flip >= cfg.visible_marked_occluded_prob,
                               flip < cfg.occluded_marked_visible_prob)
        vis_pred &= inside_image(tracks, H, W)
        vis_pred[0] = True
        tracks[0] = q
        return PseudoLabels(tracks_2d=tracks, track_valid=vis_pred, depth=None, query_pixels=q.clone(),
                            source=f"sim-track(seed={self.seed})")

    def _occluder_flow(self, p: Tensor, t0: int, t1: int) -> Tensor:
        """Move pixels p (M, 2) of frame t0 with the surface visible there to frame t1 (latching)."""
        gt = self.gt
        if gt.depth is None:
            return p.clone()                                   # no geometry: freeze where it latched
        iu = p[:, 0].round().long().clamp(0, gt.width - 1)
        iv = p[:, 1].round().long().clamp(0, gt.height - 1)
        z = gt.depth[t0, iv, iu]
        X = transform_points(gt.T_world_cam[t0], unproject(p, z, gt.K))   # world point seen at p
        if gt.dense and gt.object_id is not None:
            obj = gt.object_id[t0, iv, iu]
            anchor_obj = gt.object_id[0].reshape(-1)
            for k in obj.unique().tolist():
                if k == 0:
                    continue                                   # the static room moves with the camera only
                cand = (anchor_obj == k).nonzero().squeeze(1)
                if cand.numel() == 0:
                    continue                                   # object unseen at the anchor: treat as static
                cand = cand[:: max(1, cand.numel() // self.max_anchor_candidates)]
                tw = gt.track_world.reshape(gt.num_frames, -1, 3)
                sel = obj == k
                nearest = torch.cdist(X[sel], tw[t0, cand]).argmin(dim=1)
                X[sel] = X[sel] + tw[t1, cand[nearest]] - tw[t0, cand[nearest]]
        cam = transform_points(invert_pose(gt.T_world_cam[t1]), X)
        out = project(cam, gt.K)
        ok = (z > 0) & (cam[:, 2] > 1e-6) & torch.isfinite(out).all(dim=-1)
        return torch.where(ok[:, None], out, p)


# ----------------------------------------------------------------------------------------------- depth
@dataclass
class SimDepthConfig:
    """Error strengths of :class:`SimulatedMonoDepth` (see the module docstring)."""

    mode: str = "scale"
    edge_sigma_px: float = 1.0
    warp_strength: float = 0.05
    warp_cells: tuple[int, int] = (3, 4)
    noise_rel: float = 0.01
    scale_range: tuple[float, float] = (0.5, 2.0)
    shift_range: tuple[float, float] = (-0.5, 1.0)

    def __post_init__(self) -> None:
        if self.mode not in ("scale", "affine"):
            raise InputError(f"mode must be 'scale' (MoGe-like) or 'affine' (MiDaS-like), got {self.mode!r}")
        if min(self.edge_sigma_px, self.warp_strength, self.noise_rel) < 0:
            raise InputError("edge_sigma_px, warp_strength and noise_rel must be >= 0")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise InputError(f"scale_range must be 0 < lo <= hi, got {self.scale_range}")
        if self.shift_range[0] <= -1:
            raise InputError(f"shift_range lower bound must be > -1 (keeps depth > 0), got {self.shift_range}")

    def scaled(self, strength: float) -> SimDepthConfig:
        """Every error dialled by ``strength``: blur, warp and noise multiplied; the unknown scale range
        [lo, hi] becomes [lo^s, hi^s] and the shift range is multiplied. Strength 0 returns the GT depth."""
        if strength < 0:
            raise InputError(f"strength must be >= 0, got {strength}")
        s = float(strength)
        return SimDepthConfig(self.mode, self.edge_sigma_px * s, self.warp_strength * s, self.warp_cells,
                              self.noise_rel * s, (self.scale_range[0] ** s, self.scale_range[1] ** s),
                              (max(-0.99, self.shift_range[0] * s), self.shift_range[1] * s))


def gaussian_blur_masked(x: Tensor, mask: Tensor, sigma: float) -> Tensor:
    """Normalised Gaussian blur of x (T, H, W) over mask (T, H, W): conv(x m) / conv(m); 0 where no support."""
    if sigma <= 0:
        return x.clone()
    r = max(1, int(round(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    m = mask.to(x.dtype)[:, None]
    num, den = (x[:, None] * m), m
    for kernel in (k.view(1, 1, 1, -1), k.view(1, 1, -1, 1)):
        pad = (r, r, 0, 0) if kernel.shape[-1] > 1 else (0, 0, r, r)
        num = F.conv2d(F.pad(num, pad, mode="replicate"), kernel)
        den = F.conv2d(F.pad(den, pad, mode="replicate"), kernel)
    return torch.where(den > 1e-6, num / den.clamp_min(1e-6), torch.zeros_like(num))[:, 0]


def smooth_field(T: int, H: int, W: int, cells: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Smooth unit-variance-ish random field (T, H, W): a (cells) Gaussian grid upsampled bicubically."""
    coarse = torch.randn(T, 1, max(2, cells[0]), max(2, cells[1]), generator=generator)
    return F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=True)[:, 0]


class SimulatedMonoDepth:
    """Ground-truth depth with the errors of a mono-depth model; a ``DepthProvider`` for synthetic videos."""

    def __init__(self, gt, index: int = 0, config: SimDepthConfig | None = None, seed: int = 0) -> None:
        self.gt = as_ground_truth(gt, index)
        if self.gt.depth is None:
            raise InputError("the ground truth has no depth map, so no mono-depth can be simulated; use --depth none")
        self.config = config or SimDepthConfig()
        self.seed = int(seed)
        self.name = f"sim-depth({self.config.mode})"

    def __call__(self, video: Tensor) -> Tensor:
        gt, cfg = self.gt, self.config
        T, H, W = check_video(video)
        if tuple(gt.depth.shape) != (T, H, W):
            raise InputError(f"video is {T}x{H}x{W} but the ground-truth depth is {tuple(gt.depth.shape)}")
        g = torch.Generator().manual_seed(self.seed)
        d = gt.depth.float()
        valid = torch.isfinite(d) & (d > 0)
        d = torch.where(valid, d, torch.zeros_like(d))
        d = gaussian_blur_masked(d, valid, cfg.edge_sigma_px)
        d = d * torch.exp(cfg.warp_strength * smooth_field(T, H, W, cfg.warp_cells, g))
        d = d * (1 + cfg.noise_rel * torch.randn(T, H, W, generator=g)).clamp_min(0.1)
        lo, hi = torch.tensor(cfg.scale_range).log()
        s = torch.exp(lo + (hi - lo) * torch.rand(T, generator=g))
        c = cfg.shift_range[0] + (cfg.shift_range[1] - cfg.shift_range[0]) * torch.rand(T, generator=g)
        out = s[:, None, None] * d
        if cfg.mode == "affine":
            dmin = torch.where(valid, d, torch.full_like(d, float("inf"))).amin(dim=(1, 2))
            dmin = torch.where(torch.isfinite(dmin), dmin, torch.zeros_like(dmin))
            out = out + (s * c * dmin)[:, None, None]
        return torch.where(valid, out.clamp_min(1e-6), torch.zeros_like(out))
