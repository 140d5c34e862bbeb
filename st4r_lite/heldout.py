"""Held-out evaluation of a pretrained model: tracking and reconstruction APD against the static baseline.

Dimension letters: B clips, T frames, H, W image rows / columns, N tracked points (queries).

Two sources of held-out data, both never seen in training (training clip seeds start at
``train.TRAIN_SEED_BASE``):
- :func:`heldout_clips`: a few `pretrain`-domain clips with fixed seeds (``HELDOUT_SEED``), used during
  training every ``--eval-every`` steps (dense: every anchor pixel is a query);
- :func:`evaluate_benchmark`: a named WorldTrack benchmark (``worldtrack.BENCHMARKS``, e.g.
  "worldtrack-lite") read through its ``.npz`` files, queries as the files give them.

Per sequence the model runs every pair (0, t) (``model.predict_video``); the predicted tracks are the track
maps at the query pixels, the reconstruction is the recon maps. The static baseline uses the track map of
pair (0, 0) (the anchor's own reconstruction) for every frame. Metrics come from :mod:`st4r_lite.metrics`
(mean over sequences).
"""

from __future__ import annotations

import math
from dataclasses import asdict

import torch
from einops import rearrange

from st4r_lite import metrics

HELDOUT_SEED = 900_000
HELDOUT_CLIPS = 4
HELDOUT_FRAMES = 8


def heldout_clips(config, num_clips: int = HELDOUT_CLIPS, frames: int = HELDOUT_FRAMES,
                  domain: str = "pretrain", seed: int = HELDOUT_SEED, frame_gap: float = 1.0, device="cpu"):
    """The fixed held-out clips at the model's input size (config.img_size): a ``world.Clip``."""
    from st4r_lite.world import generate_clips

    H, W = config.img_size
    return generate_clips(num_clips, frames=frames, height=H, width=W, domain=domain, seed=seed,
                          frame_gap=frame_gap, device=device)


def _flat_metrics(m) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(m).items()
            if k != "alignment"}


def evaluate_predictions(pred_tracks: list[torch.Tensor], static_tracks: list[torch.Tensor],
                         gt_tracks: list[torch.Tensor], recon: list[tuple] | None = None,
                         alignments: tuple[str, ...] = ("median", "sim3")) -> dict:
    """Mean metrics over sequences. Per sequence: pred/static/gt tracks (T, N, 3) in the world frame;
    recon: (pred_points (T, H, W, 3), gt_points (T, H, W, 3), valid (T, H, W)) per sequence or None.

    Returns {"track": {alignment: {...}}, "static": {alignment: {...}}, "recon": {alignment: {...}},
    "num_sequences": S} with APD in % and EPE in metres.
    """
    res: dict = {"track": {}, "static": {}, "num_sequences": len(gt_tracks)}
    for al in alignments:
        res["track"][al] = _flat_metrics(metrics.mean_metrics(
            [metrics.tracking_metrics(p, g, alignment=al) for p, g in zip(pred_tracks, gt_tracks)]))
        res["static"][al] = _flat_metrics(metrics.mean_metrics(
            [metrics.tracking_metrics(p, g, alignment=al) for p, g in zip(static_tracks, gt_tracks)]))
    if recon:
        res["recon"] = {al: _flat_metrics(metrics.mean_metrics(
            [metrics.recon_metrics(p, g, v, alignment=al) for p, g, v in recon])) for al in alignments}
    return res


@torch.no_grad()
def evaluate_clips(model, clip, chunk: int = 8, alignments: tuple[str, ...] = ("median", "sim3")) -> dict:
    """Evaluate ``model`` on a ``world.Clip`` (dense queries: every anchor pixel). See evaluate_predictions."""
    from st4r_lite.model import predict_video

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, statics, gts, recons = [], [], [], []
    for b in range(clip.num_clips):
        video = (clip.rgb[b] * 2 - 1).to(device)
        out = predict_video(model, video, chunk=chunk, out_device="cpu")
        T = video.shape[0]
        preds.append(rearrange(out.track, "t h w c -> t (h w) c"))
        statics.append(metrics.static_tracks(out.track[0], T))
        gts.append(rearrange(clip.track_world[b].cpu(), "t h w c -> t (h w) c"))
        gt_pts = clip.points_world[b].cpu()
        recons.append((out.recon, gt_pts, torch.isfinite(gt_pts).all(-1)))
    model.train(was_training)
    return evaluate_predictions(preds, statics, gts, recons, alignments)


def headline(result: dict, alignment: str = "median") -> dict:
    """The numbers a log line or a report needs: tracking APD all / dynamic vs static, EPE, recon APD."""
    tr, st = result["track"][alignment], result["static"][alignment]
    out = {"apd": tr["apd"], "apd_dyn": tr["apd_dynamic"], "static_apd": st["apd"],
           "static_apd_dyn": st["apd_dynamic"], "epe": tr["epe"], "epe_dyn": tr["epe_dynamic"]}
    if "recon" in result:
        out["recon_apd"] = result["recon"][alignment]["apd"]
    return out
