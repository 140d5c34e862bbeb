"""Test-time adaptation to "real" video with pseudo-labels (DESIGN §6), baseline and the course's proposal.

Dimension letters: T frames (pair (anchor 0, j) for j = 0..T-1), H image rows, W image columns, N query
points p_n (anchor pixels), C channels.

Per video the network predicts, for every pair (0, j), ``track_j`` = ¹X¹_j and ``recon_j`` = ¹Xʲ_j. The
cameras come from the predictions themselves (DESIGN §5): K from the anchor pair (``camera.focal_from_anchor``),
T_world_cam_j by PnP on recon_j (RANSAC + LM without gradient; optionally one differentiable Gauss–Newton step,
``pose_grad``). With pseudo 2D tracks x̃_{j,n} and pseudo mono-depth d̃_j (``pseudo_labels``):

    x̂_{j,n} = π(K · T_cam_j_world · track_j(p_n))                         (reprojected anchor pixel)
    L_traj  = sqrt( mean_{(j,n) used} ‖x̂_{j,n} − x̃_{j,n}‖² )              (pixel RMSE, weight 0.5)
    L_depth = mean_j mean_p (s_j d̃_j − ẑ_j)²,  ẑ_j = z^rec_j / mean(z^rec_j),  s_j = Σ d̃ ẑ / Σ d̃²
              (recon depth seen from camera j, per-frame least-squares scale; weight 10)
    L_align = mean_{(j,n) used} ‖track_j(p_n) − recon_j(x̃_{j,n})‖ / s̄,  s̄ = mean_n ‖track_0(p_n)‖
              (recon read at the tracked pixel; s̄ keeps it scale-invariant; weight 5)
    L       = 0.5 L_traj + 10 L_depth + 5 L_align               (computed in ``st4r_lite.adapt.losses``).

"used" = the provider says the label is valid (``track_valid``) and x̂ is in front of the camera. The proposal
(``st4r_lite.adapt.occlusion``) adds the occlusion mask m_{j,n} to "used" and replaces L_traj and L_align by the
σ²-weighted  mean m·(ρ(r)/σ² + log σ²)  with r = ‖x̂ − x̃‖ (pixels) and r = f·‖Δ‖/s̄ (the 3D error in
pixel-equivalents at the anchor's mean distance, so that one σ² in pixels² serves both), σ² from the
``log_sigma2_track`` head at p_n; the align term is divided by f (Laplace; f² Gaussian) so that at σ² = 1 it
equals L_align (Laplace) and only σ², not a change of units, changes its weight. L_depth is unchanged.
Variants (ablation rows, DESIGN §6): see ``VARIANTS``.

Only the chosen parameters change (``params``: "track" = decoder stack 1, head 1, sigma head 1, the paper's
choice; "all_but_encoder"). The encoder is frozen in both, so its tokens are computed once per video.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from st4r_lite.adapt.config import PARAM_SETS, AdaptConfig
from st4r_lite.adapt.losses import adaptation_losses
from st4r_lite.adapt.occlusion import mask_quality, sample_map
from st4r_lite.adapt.pseudo_labels import PseudoLabels, check_video, grid_query_pixels, validate_pseudo_labels
from st4r_lite.adapt.sim_labels import GroundTruthVideo
from st4r_lite.geometry.camera import focal_from_anchor, solve_poses
from st4r_lite.geometry.pinhole import intrinsics_matrix
from st4r_lite.geometry.track_metrics import tracking_metrics
from st4r_lite.runtime import atomic_write
from st4r_lite.world import worldtrack

__all__ = ["AdaptVideo", "AdaptResult", "adapt_video", "select_parameters", "PairRunner",
           "cameras_from_prediction", "evaluate_tracks", "jsonable"]

ENCODER_MODULES = ("patch_embed", "enc_blocks", "enc_norm")


@dataclass
class AdaptVideo:
    """One video to adapt on: frames (T, 3, H, W) float in [0, 1], and ground truth for evaluation if known."""

    name: str
    video: Tensor
    gt: GroundTruthVideo | None = None

    @classmethod
    def from_clip(cls, clip, index: int = 0, name: str | None = None) -> AdaptVideo:
        """Clip ``index`` of a ``world.Clip`` (dense ground truth)."""
        seed = clip.seeds[index] if getattr(clip, "seeds", None) else index
        return cls(name or f"{clip.domain}-{seed}", clip.rgb[index].float().cpu(),
                   GroundTruthVideo.from_clip(clip, index))

    @classmethod
    def from_npz(cls, path: str | Path) -> AdaptVideo:
        """A WorldTrack / TAPVid-3D style .npz (``worldtrack.load_npz``); ground truth at its query points."""
        seq = worldtrack.load_npz(path)
        images = torch.as_tensor(np.asarray(seq.images))
        video = images.permute(0, 3, 1, 2).float() / 255.0
        gt = GroundTruthVideo.from_sequence(seq, height=video.shape[2], width=video.shape[3])
        return cls(Path(path).stem, video, gt)

    def queries(self, stride: int = 4) -> Tensor:
        """Query pixels (N, 2): the ground truth's own queries when sparse, else a regular grid."""
        if self.gt is not None and not self.gt.dense:
            return self.gt.queries.float()
        return grid_query_pixels(self.video.shape[2], self.video.shape[3], stride)


@dataclass
class AdaptResult:
    """Outcome of :func:`adapt_video`: adapted track / recon (T, H, W, 3), cameras K (3, 3) and T_world_cam
    (T, 4, 4), query_pixels (N, 2), the occlusion mask (T, N) from the final prediction, used (T, N) (what the
    losses used), log_sigma2 (T, N), the per-step loss log, metrics (dict, empty without ground truth)."""

    name: str
    config: AdaptConfig
    track: Tensor
    recon: Tensor
    K: Tensor
    T_world_cam: Tensor
    query_pixels: Tensor
    mask: Tensor
    used: Tensor
    log_sigma2: Tensor
    loss_log: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    source: str = ""
    seconds: float = 0.0
    model: object = None            # the adapted network, only with adapt_video(..., keep_model=True)

    def summary(self) -> dict:
        """JSON-ready: name, config, pseudo-label source, metrics, loss log, timing."""
        return {"name": self.name, "config": asdict(self.config), "source": self.source,
                "metrics": self.metrics, "loss_log": self.loss_log, "seconds": round(self.seconds, 2)}

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``<name>_<variant>.npz`` (arrays) and ``.json`` (summary) atomically into out_dir."""
        out = Path(out_dir)
        stem = f"{self.name}_{self.config.variant}"
        arrays = {f.name: getattr(self, f.name).detach().cpu().numpy() for f in fields(self)
                  if isinstance(getattr(self, f.name), Tensor)}
        with atomic_write(out / f"{stem}.npz", "wb") as fh:
            np.savez_compressed(fh, **arrays)
        with atomic_write(out / f"{stem}.json", "w") as fh:
            json.dump(jsonable(self.summary()), fh, indent=1)
        return out / f"{stem}.npz", out / f"{stem}.json"


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ----------------------------------------------------------------------------------------------- the loop
def select_parameters(model, which: str = "track") -> list[torch.nn.Parameter]:
    """Parameters adapted: "track" = ``model.branch_parameters('track')``; "all_but_encoder" = everything but
    patch_embed, enc_blocks and enc_norm."""
    if which == "track":
        return list(model.branch_parameters("track"))
    if which == "all_but_encoder":
        return [p for n, p in model.named_parameters() if n.split(".")[0] not in ENCODER_MODULES]
    raise ValueError(f"params must be one of {PARAM_SETS}, got {which!r}")


class PairRunner:
    """Runs all pairs (0, j) with the frozen encoder's tokens computed once."""

    def __init__(self, model, video01: Tensor) -> None:
        self.model = model
        images = (video01 * 2 - 1).to(next(model.parameters()).device)
        self.hw = tuple(images.shape[-2:])
        with torch.no_grad():
            enc, pos = zip(*(model.encode(images[s:s + 8]) for s in range(0, images.shape[0], 8)))
        self.enc, self.pos = torch.cat(enc), torch.cat(pos)

    def __call__(self, idx: Tensor | None = None):
        """PairOutput of the pairs (0, j), j in ``idx`` (default all frames)."""
        enc, pos = (self.enc, self.pos) if idx is None else (self.enc[idx], self.pos[idx])
        n = enc.shape[0]
        dec1, dec2 = self.model.decode(self.enc[:1].expand(n, -1, -1), self.pos[:1].expand(n, -1, -1), enc, pos)
        return self.model.predict_heads(dec1, dec2, self.hw)[0]


def _pick_pairs(T: int, k: int | None, gen: torch.Generator) -> Tensor | None:
    """Pairs of one step: None (all) or [0] + k-1 other frames drawn without replacement, sorted."""
    if k is None or k >= T:
        return None
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(T - 1, generator=gen)[: k - 1].sort()[0] + 1])


def _subset(labels: PseudoLabels, idx: Tensor | None) -> PseudoLabels:
    if idx is None:
        return labels
    return replace(labels, tracks_2d=labels.tracks_2d[idx], track_valid=labels.track_valid[idx],
                   depth=None if labels.depth is None else labels.depth[idx])


def cameras_from_prediction(out, cfg: AdaptConfig, step: int = 0, differentiable: bool = False
                            ) -> tuple[Tensor, Tensor, list[str]]:
    """K (3, 3) from the anchor pair's track map (pair (0, 0)), then T_world_cam (T, 4, 4) by PnP on recon
    read every ``pose_stride``-th pixel (pixel u of the subsampled grid is pixel s·u: K_sub = diag(1/s, 1/s, 1) K,
    the same pose at s² times fewer points). Returns (K, T_world_cam, per-frame status)."""
    s = cfg.pose_stride
    recon = out.recon if differentiable else out.recon.detach()
    conf = out.conf_recon if differentiable else out.conf_recon.detach()
    H, W = recon.shape[1:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # a fallback focal is recorded in the status instead
        f = focal_from_anchor(out.track[0].detach(), out.conf_track[0].detach(),
                              pp=recon.new_tensor([(W - 1) / 2, (H - 1) / 2]))
    K = intrinsics_matrix(f, torch.as_tensor((W - 1) / 2).to(f), torch.as_tensor((H - 1) / 2).to(f))
    K_sub = torch.cat([K[:2] / s, K[2:]])
    sol = solve_poses(recon[:, ::s, ::s], K_sub, conf[:, ::s, ::s], differentiable=differentiable,
                      num_hypotheses=cfg.pose_hypotheses, seed=cfg.seed + step, warn=False)
    return K, sol.T_world_cam, sol.status


def _gt_cameras(out, gt: GroundTruthVideo | None, q: Tensor) -> tuple[Tensor, Tensor]:
    """True K and poses, translations brought to the prediction's scale (median ‖track_0‖ ratio at q)."""
    if gt is None:
        raise ValueError("cameras='gt' (a diagnostic) needs ground truth")
    T = out.track.shape[0]
    pred0 = sample_map(out.track[:1], q[None].to(out.track))[0]
    gt0 = gt.lookup(q if gt.dense else None)[1][0].to(pred0)
    ok = torch.isfinite(gt0).all(-1) & torch.isfinite(pred0).all(-1)
    s = pred0[ok].norm(dim=-1).median() / gt0[ok].norm(dim=-1).median()
    T_wc = gt.T_world_cam[:T].clone().to(pred0)
    T_wc[:, :3, 3] *= s
    return gt.K.to(pred0), T_wc


def adapt_video(model, data: AdaptVideo, labels: PseudoLabels, config: AdaptConfig | None = None,
                progress=None, keep_model: bool = False) -> AdaptResult:
    """Adapt a copy of ``model`` to one video with pseudo-labels; ``model`` itself is never changed.

    data: the video (T, 3, H, W) in [0, 1] (+ ground truth for metrics / the oracle); labels: (T, N) pseudo-
    labels at ``labels.query_pixels`` (cleaned with ``validate_pseudo_labels``: NaNs -> invalid; negative depth
    -> ValueError). Returns an :class:`AdaptResult` (metrics filled when ground truth exists; the adapted
    network in ``.model`` with ``keep_model``). ``progress``: called with each step's loss record.
    """
    cfg = config or AdaptConfig()
    start = time.perf_counter()
    T, H, W = check_video(data.video)
    if labels.num_frames != T:
        raise ValueError(f"pseudo-labels cover {labels.num_frames} frames but the video has {T}; compute them "
                         "on the same video")
    labels, _ = validate_pseudo_labels(labels, (H, W))
    gt_vis = None
    if data.gt is not None:
        gt_vis = data.gt.lookup(labels.query_pixels if data.gt.dense else None)[2]
    model = copy.deepcopy(model).float().eval()
    params = select_parameters(model, cfg.params)
    for p in model.parameters():
        p.requires_grad_(False)
    sigma_ids = {id(p) for p in getattr(model, "sigma_head1", torch.nn.Module()).parameters()}
    groups = [{"params": [p for p in params if id(p) not in sigma_ids], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in sigma_ids], "lr": cfg.lr * cfg.sigma_lr_mult}]
    groups = [g for g in groups if g["params"]]
    for p in params:
        p.requires_grad_(True)
    runner = PairRunner(model, data.video)
    steps = 0 if cfg.variant == "none" else cfg.steps
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)

    def factor(i: int) -> float:
        if i < cfg.warmup:
            return (i + 1) / (cfg.warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (i - cfg.warmup) / max(1, steps - cfg.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    log, gen = [], torch.Generator().manual_seed(cfg.seed)
    if steps:
        with torch.no_grad():
            first = runner()
            K, T_world_cam, status = cameras_from_prediction(first, cfg)    # all frames; refreshed below
            if cfg.cameras == "gt":
                K, T_world_cam = _gt_cameras(first, data.gt, labels.query_pixels)
    for step in range(steps):
        idx = _pick_pairs(T, cfg.pairs_per_step, gen)
        out = runner(idx)
        rows = slice(None) if idx is None else idx.to(T_world_cam.device)
        if cfg.cameras == "pred" and (cfg.pose_grad or (step and step % cfg.pose_every == 0)):
            K, T_sub, _ = cameras_from_prediction(out, cfg, step, cfg.pose_grad)   # pair 0 is in idx: K defined
            T_world_cam = T_world_cam.detach().clone() if idx is not None else T_sub
            if idx is not None:
                T_world_cam[rows] = T_sub
        vis = None if gt_vis is None else gt_vis[rows]
        terms = adaptation_losses(out, K, T_world_cam[rows], _subset(labels, idx), cfg, vis)
        if not torch.isfinite(terms.total):
            raise FloatingPointError(f"adaptation loss became {float(terms.total)} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        rec = {"step": step, **{k: float(getattr(terms, k).detach()) for k in ("total", "traj", "depth", "align")},
               "used": float(terms.used.float().mean()), "kept_by_mask": float(terms.mask.float().mean()),
               "log_sigma2": float(terms.log_sigma2.detach().mean())}
        log.append(rec)
        if progress is not None:
            progress(rec)
    with torch.no_grad():
        out = runner()
        K, T_world_cam, status = cameras_from_prediction(out, cfg, steps, False)
        terms = adaptation_losses(out, K, T_world_cam, labels, cfg, gt_vis)
    res = AdaptResult(data.name, cfg, out.track, out.recon, K, T_world_cam, labels.query_pixels,
                      terms.mask, terms.used, terms.log_sigma2, log, source=labels.source)
    res.metrics = {"final_loss": {k: float(getattr(terms, k)) for k in ("total", "traj", "depth", "align")},
                   "camera_status": status}
    if data.gt is not None:
        res.metrics["tracking"] = evaluate_tracks(out.track, data.gt)
        res.metrics["mask"] = mask_quality(terms.mask, gt_vis)
        res.metrics["pseudo_valid"] = mask_quality(labels.track_valid, gt_vis)
        res.metrics["used"] = mask_quality(terms.used, gt_vis)
    res.seconds = time.perf_counter() - start
    res.model = model if keep_model else None
    return res


def evaluate_tracks(track: Tensor, gt: GroundTruthVideo) -> dict:
    """Tracking APD / EPE (all, dynamic; median and sim3 alignment) of predicted track maps (T, H, W, 3).

    Dense ground truth: every anchor pixel; sparse: the track maps read (bilinearly) at the GT's queries.
    """
    T = track.shape[0]
    if gt.dense:
        pred, ref = track.reshape(T, -1, 3), gt.track_world.reshape(T, -1, 3)
    else:
        pred = sample_map(track, gt.queries.to(track)[None].expand(T, -1, -1))
        ref = gt.track_world
    valid = torch.isfinite(ref).all(-1)
    return {al: asdict(tracking_metrics(pred.detach().cpu(), ref.cpu(), alignment=al, valid=valid.cpu()))
            for al in ("median", "sim3")}
