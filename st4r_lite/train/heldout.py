"""Held-out evaluation of a pretrained model: tracking and reconstruction APD against the static baseline.

Dimension letters: B clips, T frames, H, W image rows / columns, N tracked points (queries).

Two sources of held-out data, both never seen in training (training clip seeds start at
``train.TRAIN_SEED_BASE``):
- :func:`heldout_clips`: a few `pretrain`-domain clips with fixed seeds (``HELDOUT_SEED``), used during
  training every ``--eval-every`` steps (dense: every anchor pixel is a query);
- :func:`evaluate_benchmark`: a named WorldTrack benchmark (``worldtrack.BENCHMARKS``, e.g.
  "worldtrack-lite") read through its ``.npz`` files, queries as the files give them.

Per sequence the model runs every pair (0, t) (``model.pairs.predict_video``); the predicted tracks are the track
maps at the query pixels, the reconstruction is the recon maps. The static baseline uses the track map of
pair (0, 0) (the anchor's own reconstruction) for every frame. Metrics come from :mod:`st4r_lite.geometry.track_metrics`
(mean over sequences).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from einops import rearrange

from st4r_lite.errors import InputError
from st4r_lite.geometry import track_metrics
from st4r_lite.model import resolve
from st4r_lite.model.match_track import register_onto
from st4r_lite.model.pairs import predict_video
from st4r_lite.runtime import atomic_write, command_line
from st4r_lite.train.checkpoint import load_train_checkpoint
from st4r_lite.world.render import generate_clips

HELDOUT_SEED = 900_000
HELDOUT_CLIPS = 4
HELDOUT_FRAMES = 8
REPORT_CLIPS = 16  # the shipped evaluation (data/tiny_eval.json) uses more and longer clips than the
REPORT_FRAMES = 16  # in-training check (16 frames: objects move ~0.6 m, enough for motion to show)
QUALITY_MARGIN = 15.0  # the project's bar: dynamic tracking APD ≥ static baseline + 15 points (median alignment)


def heldout_clips(config, num_clips: int = HELDOUT_CLIPS, frames: int = HELDOUT_FRAMES,
                  domain: str = "pretrain", seed: int = HELDOUT_SEED, frame_gap: float = 1.0, device="cpu",
                  shift: dict | None = None):
    """The fixed held-out clips at the model's input size (config.img_size): a ``world.Clip``; ``shift``: a
    candidate world's changed DomainConfig fields (the run's ``TrainConfig.world_shift``)."""
    H, W = config.img_size
    return generate_clips(num_clips, frames=frames, height=H, width=W, domain=domain, seed=seed,
                          frame_gap=frame_gap, device=device, shift=shift)


def _flat_metrics(m) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in asdict(m).items()
            if k != "alignment"}


def evaluate_predictions(pred_tracks: list[torch.Tensor], static_tracks: list[torch.Tensor],
                         gt_tracks: list[torch.Tensor], recon: list[tuple] | None = None,
                         alignments: tuple[str, ...] = ("median", "sim3")) -> dict:
    """Mean metrics over sequences. Per sequence: pred/static/gt tracks (T, N, 3) in the world frame;
    recon: (pred_points (T, H, W, 3), gt_points (T, H, W, 3), valid (T, H, W)) per sequence or None.

    Returns {"track": {alignment: {...}}, "static": {alignment: {...}}, "recon": {alignment: {...}},
    "oracle_motion": {"median": {...}}, "num_sequences": S} with APD in % and EPE in metres.
    "oracle_motion" is a diagnostic: the anchor reconstruction plus the *true* motion
    (:func:`oracle_motion_tracks`), i.e. the best a perfect motion estimate could do on top of this
    reconstruction. When it is no better than "static", reconstruction error, not motion, limits tracking.
    """
    res: dict = {"track": {}, "static": {}, "num_sequences": len(gt_tracks)}
    for al in alignments:
        res["track"][al] = _flat_metrics(track_metrics.mean_metrics(
            [track_metrics.tracking_metrics(p, g, alignment=al) for p, g in zip(pred_tracks, gt_tracks)]))
        res["static"][al] = _flat_metrics(track_metrics.mean_metrics(
            [track_metrics.tracking_metrics(p, g, alignment=al) for p, g in zip(static_tracks, gt_tracks)]))
    if "median" in alignments:
        res["oracle_motion"] = {"median": _flat_metrics(track_metrics.mean_metrics(
            [track_metrics.tracking_metrics(oracle_motion_tracks(s[0], g), g, alignment="median")
             for s, g in zip(static_tracks, gt_tracks)]))}
    if recon:
        res["recon"] = {al: _flat_metrics(track_metrics.mean_metrics(
            [track_metrics.recon_metrics(p, g, v, alignment=al) for p, g, v in recon])) for al in alignments}
    return res


def oracle_motion_tracks(anchor_points: torch.Tensor, gt_tracks: torch.Tensor) -> torch.Tensor:
    """Diagnostic tracks: predicted anchor points (N, 3) moved by the true motion, in the prediction's scale.

    track_t = a + (gt_t − gt_0) / s, s = median-scale(a → gt_0). anchor_points (N, 3), gt_tracks (T, N, 3)
    -> (T, N, 3).
    """
    s = track_metrics.median_scale(anchor_points, gt_tracks[0])
    return anchor_points.double()[None] + (gt_tracks.double() - gt_tracks[:1].double()) / s


def anchor_points(anchor: torch.Tensor, gt_anchor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predicted and true anchor points (N, 3) as float64 on the CPU, and which are usable (N,): finite, in front."""
    assert anchor.shape == gt_anchor.shape and anchor.shape[-1] == 3, (tuple(anchor.shape), tuple(gt_anchor.shape))
    pred, gt = anchor.detach().double().cpu(), gt_anchor.detach().double().cpu()
    return pred, gt, torch.isfinite(pred).all(-1) & torch.isfinite(gt).all(-1) & (pred[:, 2] > 0) & (gt[:, 2] > 0)


def oracle_placed_tracks(pred_tracks: torch.Tensor, gt_tracks: torch.Tensor, object_id: torch.Tensor,
                         true_motion: bool = False) -> torch.Tensor:
    """Diagnostic tracks: every object of the anchor frame moved to its true depth, one number per object.

    With s the median scale of the anchor points a = track_0 onto gt_0 (all queries) and, for each object o,

        δ_o = median over o's queries of  log(s · z_a) − log z_gt0       (> 0: o is placed too far)
        a'  = a · exp(−δ_o)  on o's queries (along the anchor camera's rays: the world is camera 0), a elsewhere,

    the tracks are the model's own, shifted with their anchor (track'_t = track_t + a' − a: its motion and its
    shapes kept, only each object's placement made right), or, with ``true_motion``, ``oracle_motion_tracks`` on
    a' (perfect placement and perfect motion; what is left is the objects' shape and the room). Together with
    ``oracle_motion_tracks`` this splits what the anchor geometry costs the moving points into placement and
    the rest. pred_tracks (T, N, 3), gt_tracks (T, N, 3), object_id (N,) int (0 = room, never moved) ->
    (T, N, 3) float64.

    >>> gt = torch.tensor([[[0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 4.0], [0.0, 0.0, 6.0]]]).repeat(2, 1, 1)
    >>> gt[1, 3, 0] += 0.5                                   # the object (query 3) moves sideways
    >>> oid = torch.tensor([0, 0, 0, 1])
    >>> pred = gt.clone(); pred[:, 3] += 0.2 * gt[0, 3]      # placed 20 % too far, its motion right
    >>> bool(torch.allclose(oracle_placed_tracks(pred, gt, oid), gt.double()))
    True
    >>> pred[1, 3, 0] -= 0.5                                 # ... and now it does not move
    >>> bool(torch.allclose(oracle_placed_tracks(pred, gt, oid), gt.double()))
    False
    >>> bool(torch.allclose(oracle_placed_tracks(pred, gt, oid, true_motion=True), gt.double()))
    True
    """
    T, N, _ = pred_tracks.shape
    assert gt_tracks.shape == pred_tracks.shape and object_id.shape == (N,), (
        tuple(pred_tracks.shape), tuple(gt_tracks.shape), tuple(object_id.shape))
    a, g0, ok = anchor_points(pred_tracks[0], gt_tracks[0])
    s = track_metrics.median_scale(a, g0, ok)
    err = torch.log(s * a[:, 2].clamp_min(1e-12)) - torch.log(g0[:, 2].clamp_min(1e-12))
    factor = torch.ones(N, dtype=torch.float64)
    oid = object_id.detach().cpu()
    for o in oid[ok & (oid > 0)].unique().tolist():
        m = oid == o
        factor[m] = torch.exp(-err[m & ok].median())
    placed = a * factor[:, None]
    if true_motion:
        return oracle_motion_tracks(placed, gt_tracks.detach().cpu())
    return pred_tracks.detach().double().cpu() + (placed - a)[None]


def oracle_match_tracks(pred_tracks: torch.Tensor, pred_recon: torch.Tensor, gt_tracks: torch.Tensor,
                        gt_visible: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor,
                        register: bool = False) -> torch.Tensor:
    """Diagnostic tracks: each query's point at time t read from the model's *own* frame-t reconstruction at the
    pixel where the query truly is in frame t (a perfect lookup), the model's own track where it is hidden there.

        uv_t = π(K, T_world_cam[t]⁻¹ · gt_t)       (nearest pixel)
        track_t = recon_t[uv_t] if visible_t else pred_track_t

    The ceiling of a tracker that finds each point in frame t and reads frame t's geometry there
    (``model.match_track``): no motion is estimated, only found. With ``register``, each frame's found points are
    first brought onto the model's own track_t by one trimmed similarity (``model.match_track.register_onto``: no
    ground truth in the fit), as ``ModelConfig.match_register`` does. pred_tracks (T, N, 3), pred_recon (T, H, W, 3),
    gt_tracks (T, N, 3) world, gt_visible (T, N) bool, K (3, 3), T_world_cam (T, 4, 4) -> (T, N, 3) float64.
    """
    T, H, W, _ = pred_recon.shape
    assert pred_tracks.shape == gt_tracks.shape and gt_visible.shape == gt_tracks.shape[:2], (
        tuple(pred_tracks.shape), tuple(gt_tracks.shape), tuple(gt_visible.shape))
    T_cam_world = torch.linalg.inv(T_world_cam.double())
    X = torch.einsum("tij,tnj->tni", T_cam_world[:, :3, :3], gt_tracks.double()) + T_cam_world[:, None, :3, 3]
    z = X[..., 2].clamp_min(1e-6)
    K = K.double()
    u = torch.round(K[0, 0] * X[..., 0] / z + K[0, 2]).long()   # pixel centres at integers (geometry.pinhole)
    v = torch.round(K[1, 1] * X[..., 1] / z + K[1, 2]).long()
    found = gt_visible & (X[..., 2] > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    t = torch.arange(T)[:, None].expand_as(u)
    read = pred_recon.double()[t, v.clamp(0, H - 1), u.clamp(0, W - 1)]
    if register:
        read = register_onto(read, pred_tracks.double(), found.double())
    return torch.where(found[..., None], read, pred_tracks.double())


@torch.no_grad()
def evaluate_clips(model, clip, chunk: int = 8, alignments: tuple[str, ...] = ("median", "sim3")) -> dict:
    """Evaluate ``model`` on a ``world.Clip`` (dense queries: every anchor pixel). See evaluate_predictions."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, statics, gts, recons = [], [], [], []
    for b in range(clip.num_clips):
        video = (clip.rgb[b] * 2 - 1).to(device)
        out = predict_video(model, video, chunk=chunk, out_device="cpu")
        T = video.shape[0]
        preds.append(rearrange(out.track, "t h w c -> t (h w) c"))
        statics.append(track_metrics.static_tracks(out.track[0], T))
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
    if alignment in result.get("oracle_motion", {}):
        out["oracle_motion_apd_dyn"] = result["oracle_motion"][alignment]["apd_dynamic"]
    return out


def quality_bar(head: dict, margin: float = QUALITY_MARGIN) -> dict:
    """The project's pretraining bar from a :func:`headline` (median alignment): is dynamic tracking APD at
    least ``margin`` points above the static baseline's? Returns {"required", "apd_dyn", "static_apd_dyn",
    "gap_points", "met", "ceiling"}; "ceiling" says where the analysis of how high any model can get lives.

    >>> quality_bar({"apd_dyn": 36.0, "static_apd_dyn": 20.0})["met"]
    True
    """
    gap = head["apd_dyn"] - head["static_apd_dyn"]
    return {"required": f"tracking APD on dynamic points >= static baseline + {margin:g} points (median alignment)",
            "apd_dyn": head["apd_dyn"], "static_apd_dyn": head["static_apd_dyn"], "gap_points": round(gap, 2),
            "met": bool(gap >= margin),
            "ceiling": "how far any model can beat static here: python -m st4r_lite.studies.ceiling (data/quality_ceiling.json)"}


def evaluate_checkpoint(path, *, train_ckpt=None, num_clips: int = REPORT_CLIPS, frames: int = REPORT_FRAMES,
                        seed: int = HELDOUT_SEED, device: str = "cpu") -> dict:
    """Held-out report of a model (``path``: any ``model.resolve`` spec), evaluated in float32 on ``num_clips``
    pretrain-domain clips of ``frames`` frames (seeds ``seed``…, never used in training).

    Returns {"checkpoint", "heldout": settings, "headline": {median, sim3}, "quality_bar": quality_bar(...),
    "result": evaluate_clips(...), "training": steps / wall time / pairs per second / command / hardware (from ``train_ckpt`` if given)}.
    """
    model = resolve.load(path, device=device)
    path = Path(path) if isinstance(path, (str, Path)) else None
    clips = heldout_clips(model.config, num_clips=num_clips, frames=frames, seed=seed, device=device)
    t0 = time.perf_counter()
    result = evaluate_clips(model, clips)
    heads = {al: headline(result, al) for al in result["track"]}
    report = {
        "checkpoint": resolve.describe(path) if path is None or not path.is_file() else str(path),
        "size_mib": round(path.stat().st_size / 2**20, 2) if path is not None and path.is_file() else None,
        "heldout": {"domain": "pretrain", "num_clips": num_clips, "frames": frames, "seed": seed,
                    "frame_gap": 1.0, "image_hw": list(model.config.img_size), "queries": "every anchor pixel",
                    "dynamic": f"max_t |gt_t - gt_0| > {track_metrics.DYNAMIC_MIN_MOTION} m",
                    "static_baseline": "track := the model's anchor reconstruction (pair (0,0)) for every frame"},
        "headline": heads, "quality_bar": quality_bar(heads["median"]),
        "result": result, "eval_wall_s": round(time.perf_counter() - t0, 2),
    }
    if train_ckpt is not None:
        report["training"] = training_record(train_ckpt)
    return report


def training_record(train_ckpt, max_stages: int = 8) -> dict:
    """Steps, wall time, pairs seen, config and meta of a training checkpoint. A run that fine-tuned another
    (``TrainConfig.init`` naming a training checkpoint that is here) also gets "stages" (earliest first) and the
    totals over them, "total_wall_s" and "total_pairs_seen"."""
    def one(path) -> dict:
        blob = load_train_checkpoint(path)
        st, cfg = blob["state"], blob["train_config"]
        meta = dict(blob.get("meta", {}))
        if isinstance(meta.get("command"), str):   # runs made with python -m st4r_lite.cli stored a path
            meta["command"] = command_line(meta["command"].split(" "))
        return {"steps": st["step"], "wall_s": round(st["elapsed_s"], 1),
                "pairs_per_s": round(st["clip_counter"] * cfg["frames"] / max(st["elapsed_s"], 1e-9), 2),
                "pairs_seen": st["clip_counter"] * cfg["frames"], "config": cfg, **meta}

    record = one(train_ckpt)
    stages, current = [record], record
    while current["config"].get("init") and len(stages) < max_stages:
        parent = Path(current["config"]["init"])
        if not parent.is_file():
            break
        try:
            current = one(parent)
        except InputError:   # a model file (data/tiny.pt), not a training run: the chain ends here
            break
        stages.insert(0, current)
    if len(stages) > 1:
        record["stages"] = [dict(st) for st in stages]   # copies: record is the last stage itself
        record["total_wall_s"] = round(sum(st["wall_s"] for st in stages), 1)
        record["total_pairs_seen"] = sum(st["pairs_seen"] for st in stages)
    return record


def write_eval_json(report: dict, path) -> Path:
    """Write a report of :func:`evaluate_checkpoint` as indented JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write(json.dumps(report, indent=1) + "\n")
    return path
