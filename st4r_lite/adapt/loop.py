"""Test-time adaptation to "real" video with pseudo-labels (docs/method.md §6), baseline and the course's proposal.

Dimension letters: T frames (pair (anchor 0, j) for j = 0..T-1), H image rows, W image columns, N query
points p_n (anchor pixels), C channels.

Per video the network predicts, for every pair (0, j), ``track_j`` = ¹X¹_j and ``recon_j`` = ¹Xʲ_j. The
cameras come from the predictions themselves (docs/method.md §5): K from the anchor pair (``camera.focal_from_anchor``),
T_world_cam_j by PnP on recon_j (RANSAC + LM without gradient; optionally one differentiable Gauss–Newton step,
``pose_grad``). With pseudo 2D tracks x̃_{j,n} and pseudo mono-depth d̃_j (``pseudo_labels``):

    x̂_{j,n} = π(K · T_cam_j_world · track_j(p_n))                         (reprojected anchor pixel)
    L_traj  = sqrt( mean_{(j,n) used} ‖x̂_{j,n} − x̃_{j,n}‖² )              (pixel RMSE, weight w_traj: 0 by default, 0.5 released)
    L_depth = mean_j mean_p (s_j d̃_j − ẑ_j)²,  ẑ_j = z^rec_j / mean(z^rec_j),  s_j = Σ d̃ ẑ / Σ d̃²
              (recon depth seen from camera j, per-frame least-squares scale; weight 10)
    L_align = mean_{(j,n) used} ‖track_j(p_n) − recon_j(x̃_{j,n})‖ / s̄,  s̄ = mean_n ‖track_0(p_n)‖
              (recon read at the tracked pixel; s̄ keeps it scale-invariant; weight 5)
    L       = w_traj L_traj + 10 L_depth + 5 L_align            (computed in ``st4r_lite.adapt.losses``).

After the steps, when the labels carry a mono-depth and ``reanchor`` is on (the default), the track maps are
re-anchored (``st4r_lite.adapt.reanchor``): each anchor point whose depth disagrees with the mono-depth by more
than ``reanchor_tau`` moves along its ray to the mono-depth's distance (one median scale per video) and every
frame's track moves with it, keeping the network's own motion. The result's cameras, mask and final losses are
those of the network's own prediction (re-anchoring keeps its scale).

"used" = the provider says the label is valid (``track_valid``) and x̂ is in front of the camera. The proposal
(``st4r_lite.adapt.occlusion``) adds the occlusion mask m_{j,n} to "used" and replaces L_traj and L_align by the
σ²-weighted  mean m·(ρ(r)/σ² + log σ²)  with r = ‖x̂ − x̃‖ (pixels) and r = f·‖Δ‖/s̄ (the 3D error in
pixel-equivalents at the anchor's mean distance, so that one σ² in pixels² serves both), σ² from the
``log_sigma2_track`` head at p_n; the align term is divided by f (Laplace; f² Gaussian) so that at σ² = 1 it
equals L_align (Laplace) and only σ², not a change of units, changes its weight. L_depth is unchanged.
Variants (ablation rows, docs/method.md §6): see ``VARIANTS``.

Only the chosen parameters change (``params``: "all_but_encoder", the default, or "track" = decoder stack 1,
head 1, sigma head 1, the paper's choice). The encoder is frozen in both, so its tokens are computed once per
video.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from st4r_lite.adapt.config import PARAM_SETS, AdaptConfig
from st4r_lite.adapt.losses import adaptation_losses
from st4r_lite.adapt.occlusion import sample_map
from st4r_lite.adapt.pseudo_labels import PseudoLabels, check_video, validate_pseudo_labels
from st4r_lite.adapt.reanchor import reanchor_tracks
from st4r_lite.adapt.variants import VARIANTS
from st4r_lite.errors import InputError
from st4r_lite.geometry.camera import cameras_for_video
from st4r_lite.geometry.pinhole import grid_query_pixels
from st4r_lite.model.pairs import PairRunner
from st4r_lite.runtime import atomic_write, to_jsonable
from st4r_lite.train.schedule import WarmupCosine

__all__ = ["AdaptVideo", "AdaptResult", "KnownCameras", "adapt_video", "select_parameters",
           "cameras_from_prediction"]

ENCODER_MODULES = ("patch_embed", "enc_blocks", "enc_norm")


@dataclass
class AdaptVideo:
    """One video to adapt on: frames (T, 3, H, W) float in [0, 1]. (``eval.adaptation.VideoWithTruth`` adds the
    ground truth that scores the result; the adaptation itself never reads it.)"""

    name: str
    video: Tensor

    def queries(self, stride: int = 4) -> Tensor:
        """Query pixels (N, 2) on a regular grid of the anchor frame."""
        return grid_query_pixels(self.video.shape[2], self.video.shape[3], stride)


@dataclass
class KnownCameras:
    """True cameras, an input of the ``cameras="gt"`` diagnostic only: K (3, 3), T_world_cam (T, 4, 4) and
    anchor_points (N, 3), the true world points of the queries at frame 0, whose median distance brings the true
    translations to the prediction's scale."""

    K: Tensor
    T_world_cam: Tensor
    anchor_points: Tensor


@dataclass
class AdaptResult:
    """Outcome of :func:`adapt_video`: adapted track / recon (T, H, W, 3), cameras K (3, 3) and T_world_cam
    (T, 4, 4), query_pixels (N, 2), the occlusion mask (T, N) from the final prediction, used (T, N) (what the
    losses used), log_sigma2 (T, N), the per-step loss log, metrics (the loop's own: final loss terms and camera
    status; ``eval.adaptation.score_adaptation`` adds the scores against ground truth)."""

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
            json.dump(to_jsonable(self.summary()), fh, indent=1)
        return out / f"{stem}.npz", out / f"{stem}.json"


# ----------------------------------------------------------------------------------------------- the loop
def select_parameters(model, which: str = "track") -> list[torch.nn.Parameter]:
    """Parameters adapted: "track" = ``model.branch_parameters('track')``; "all_but_encoder" = everything but
    patch_embed, enc_blocks and enc_norm."""
    if which == "track":
        return list(model.branch_parameters("track"))
    if which == "all_but_encoder":
        return [p for n, p in model.named_parameters() if n.split(".")[0] not in ENCODER_MODULES]
    raise InputError(f"params must be one of {PARAM_SETS}, got {which!r}")


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
    """K (3, 3) from the anchor pair's track map (pair (0, 0)), then T_world_cam (T, 4, 4) by PnP on recon read
    every ``pose_stride``-th pixel (``geometry.camera.cameras_for_video``). Returns (K, T_world_cam, status)."""
    recon = out.recon if differentiable else out.recon.detach()
    conf = out.conf_recon if differentiable else out.conf_recon.detach()
    sol = cameras_for_video(recon, conf, anchor=out.track[0], anchor_conf=out.conf_track[0],
                            pose_stride=cfg.pose_stride, seed=cfg.seed + step, differentiable=differentiable,
                            num_hypotheses=cfg.pose_hypotheses, warn=False)
    return sol.K, sol.T_world_cam, sol.status


def _cameras_at_scale(out, known: KnownCameras | None, q: Tensor) -> tuple[Tensor, Tensor]:
    """Known K and poses, translations brought to the prediction's scale (median ‖track_0‖ ratio at q)."""
    if known is None:
        raise ValueError("cameras='gt' (a diagnostic) needs the true cameras: pass true_cameras= (a KnownCameras; "
                         "eval.adaptation.adapt_and_score builds it from the ground truth)")
    T = out.track.shape[0]
    pred0 = sample_map(out.track[:1], q[None].to(out.track))[0]
    gt0 = known.anchor_points.to(pred0)
    ok = torch.isfinite(gt0).all(-1) & torch.isfinite(pred0).all(-1)
    s = pred0[ok].norm(dim=-1).median() / gt0[ok].norm(dim=-1).median()
    T_wc = known.T_world_cam[:T].clone().to(pred0)
    T_wc[:, :3, 3] *= s
    return known.K.to(pred0), T_wc


def adapt_video(model, data: AdaptVideo, labels: PseudoLabels, config: AdaptConfig | None = None,
                progress=None, keep_model: bool = False, *, oracle_visible: Tensor | None = None,
                true_cameras: KnownCameras | None = None, chunk: int = 8) -> AdaptResult:
    """Adapt a copy of ``model`` to one video with pseudo-labels; ``model`` itself is never changed.

    data: the video (T, 3, H, W) in [0, 1]; labels: (T, N) pseudo-labels at ``labels.query_pixels`` (cleaned
    with ``validate_pseudo_labels``: NaNs -> invalid; negative depth -> ValueError). Inputs of the upper-bound
    and diagnostic variants only: oracle_visible (T, N) bool, the true visibility of the queries (the
    ``oracle_mask`` variant's mask); true_cameras (``cameras="gt"``). chunk: frames per encoder pass and pairs
    per decoder pass (memory, not results). Returns an :class:`AdaptResult` (the adapted network in ``.model``
    with ``keep_model``; scores against ground truth: ``eval.adaptation``). ``progress``: called with each
    step's loss record.
    """
    cfg = config or AdaptConfig()
    start = time.perf_counter()
    T, H, W = check_video(data.video)
    if labels.num_frames != T:
        raise ValueError(f"pseudo-labels cover {labels.num_frames} frames but the video has {T}; compute them "
                         "on the same video")
    labels, _ = validate_pseudo_labels(labels, (H, W))
    if oracle_visible is not None and tuple(oracle_visible.shape) != tuple(labels.track_valid.shape):
        raise ValueError(f"oracle_visible must be (T, N) = {tuple(labels.track_valid.shape)} like the labels, "
                         f"got {tuple(oracle_visible.shape)}")
    gt_vis = oracle_visible
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
    runner = PairRunner(model, chunk=chunk)
    with torch.no_grad():                      # the encoder is frozen: every frame's tokens once per video
        tokens = runner.encode(data.video * 2 - 1)
    steps = cfg.steps if VARIANTS[cfg.variant].adapts else 0
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)

    total = max(steps, 1)                      # after warm-up: cosine to 0, or constant (min_ratio 1)
    factor = WarmupCosine(total, min(cfg.warmup, total), min_ratio=1.0 if cfg.schedule == "constant" else 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    log, gen = [], torch.Generator().manual_seed(cfg.seed)
    if steps:
        with torch.no_grad():
            first = runner(tokens=tokens)
            K, T_world_cam, status = cameras_from_prediction(first, cfg)    # all frames; refreshed below
            if cfg.cameras == "gt":
                K, T_world_cam = _cameras_at_scale(first, true_cameras, labels.query_pixels)
    for step in range(steps):
        idx = _pick_pairs(T, cfg.pairs_per_step, gen)
        out = runner(idx=idx, tokens=tokens)
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
        out = runner(tokens=tokens)
        K, T_world_cam, status = cameras_from_prediction(out, cfg, steps, False)
        terms = adaptation_losses(out, K, T_world_cam, labels, cfg, gt_vis)
    track, reanchor = out.track, "off"
    if VARIANTS[cfg.variant].adapts and cfg.reanchor:
        if labels.depth is None:
            reanchor = "skipped: the pseudo-labels have no mono-depth"
        else:
            track, reanchor = reanchor_tracks(out.track, labels.depth[0], cfg.reanchor_tau)
    res = AdaptResult(data.name, cfg, track, out.recon, K, T_world_cam, labels.query_pixels,
                      terms.mask, terms.used, terms.log_sigma2, log, source=labels.source)
    res.metrics = {"final_loss": {k: float(getattr(terms, k)) for k in ("total", "traj", "depth", "align")},
                   "camera_status": status, "reanchor": reanchor}
    res.seconds = time.perf_counter() - start
    res.model = model if keep_model else None
    return res

