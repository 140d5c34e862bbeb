"""The shipped checkpoint's scorecard: held-out clips, the model next to its peers, and the project's targets.

Dimension letters: T frames, N tracked points (queries), H, W image rows / columns.

What a "tiny checkpoint that works" means here, measured on clips never seen in training (pretrain domain,
world v2, seeds from ``HELDOUT_SEED``, 16 frames at the model's size, queries every ``query_stride`` pixels of
the anchor frame, median alignment):

    target                                                     why
    tracking APD (all points)          >= 60                   the room and the objects, tracked in the world
    tracking APD (moving points)       >= 50 and >= static + 15 motion is tracked, not just the anchor copied
    reconstruction APD                 >= 60                   every frame's geometry, in the world frame
    depth AbsRel                       <= 0.10                 after per-sequence median scaling
    camera ATE                         reported                cameras solved from the recon maps (PnP)
    beats both peers on all and moving points

Peers, built from the same video without ground truth (``eval.baselines``):
- ``static``: nothing moves (every frame's track := the anchor's reconstruction);
- ``combinational``: Lucas–Kanade 2D tracks (``adapt.lk_tracker``, offline) lifted to 3D with the model's own
  recon depth and recovered cameras: the classical "2D tracker + depth + cameras" pipeline.

Ceiling of the motion targets (``oracle_motion``, a diagnostic that reads ground truth, never a peer): the
model's own frame-0 tracks moved by the *true* motion, in the prediction's scale
(``train.heldout.oracle_motion_tracks``): the model with perfect motion. It is the best any motion estimate can
score on top of this model's anchor geometry: when its moving-point APD is below 50, or its margin over static below 15, better motion alone
cannot meet the moving-point targets, and the anchor depth of moving objects has to improve too.
A second ceiling (``oracle_match``, ``train.heldout.oracle_match_tracks``): each point read from the model's own
frame-t reconstruction at the pixel where it truly is in frame t (its own track where hidden): a perfect lookup
into this model's geometry, the best a tracker that finds points instead of estimating motion can do with it;
``oracle_match_reg`` the same with each frame's found points first registered onto the model's own track (one
trimmed similarity per frame, fitted without ground truth: ``ModelConfig.match_register``'s ceiling).
Placement (``oracle_placed``, ``train.heldout.oracle_placed_tracks``): the model's own tracks with every object of
the anchor moved to its true depth, one log-depth offset per object (its own motion and shapes kept);
``oracle_placed_motion`` the same anchor moved by the true motion; ``oracle_placed_static`` the static peer with its
objects placed right (does the model's own motion help once placement is right?). With ``oracle_motion`` they
split what the anchor geometry costs the moving points: placement (one number per object) against shape.

Diagnosis of the reconstruction (``recon_by_frame``): its APD per frame index, with the metric's single
clip-wide alignment ("world": where the frame's geometry is placed in the world), then each frame forgiven its
own scale ("scale"), its own rotation and translation ("pose") or all three ("shape": the geometry alone). A flat
"shape" row above a falling "world" row says frames far from the anchor are misplaced; "pose" close to "shape"
and "scale" close to "world" say it is their camera pose, not a per-pair scale drift.

Diagnosis of the anchor geometry (``anchor_depth_by_patch``): the median |log depth error| of the model's frame-0
tracks (one median scale per clip) for static and moving pixels, split by whether the pixel's p x p patch holds
one kind only ("interior") or both ("edge"). A linear head paints a patch from one token, so an "edge" pixel of a
small moving object tends to get a blend of object and background depth. ``anchor_depth_slope``: per clip, the
slope of log predicted on log true depth of those tracks (1 = the right depth range, < 1 = compressed).

``python -m st4r_lite.studies.scorecard data/tiny.pt --json data/tiny_scorecard.json`` (about 2 minutes on a
2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import roma
import torch
from einops import rearrange

from st4r_lite.eval.baselines import combinational_prediction, static_prediction
from st4r_lite.eval.evaluate import evaluate_prediction, mean_results, predict_model, sequence_from_clip
from st4r_lite.geometry.track_metrics import align, apd, median_scale
from st4r_lite.model import resolve
from st4r_lite.runtime import atomic_write, pick_device
from st4r_lite.studies.ablation_stats import paired_interval
from st4r_lite.train.heldout import (
    HELDOUT_SEED,
    anchor_points,
    oracle_match_tracks,
    oracle_motion_tracks,
    oracle_placed_tracks,
    training_record,
)
from st4r_lite.world.render import generate_clips
from st4r_lite.world.scene import WORLD_VERSION, add_shift_argument, parse_shift, shift_flags

TARGETS = {  # name -> (metric key, comparison, threshold)
    "tracking APD, all points >= 60": ("apd", ">=", 60.0),
    "tracking APD, moving points >= 50": ("apd_dynamic", ">=", 50.0),
    "moving points: APD >= static + 15": ("gap_dynamic", ">=", 15.0),
    "reconstruction APD >= 60": ("recon_apd", ">=", 60.0),
    "depth AbsRel <= 0.10": ("abs_rel", "<=", 0.10),
}
# the oracle_* rows read ground truth: ceilings, not peers
METHODS = ("model", "static", "combinational", "oracle_motion", "oracle_match", "oracle_match_reg", "oracle_placed",
           "oracle_placed_motion", "oracle_placed_static")
ORACLES = tuple(m for m in METHODS if m.startswith("oracle"))


def _row(result: dict) -> dict:
    """Flat numbers of one mean result (median alignment)."""
    t = result["tracking"]["median"]
    row = {"apd": t.apd, "apd_dynamic": t.apd_dynamic, "epe": t.epe, "epe_dynamic": t.epe_dynamic}
    if result.get("recon"):
        row["recon_apd"] = result["recon"]["median"].apd
    if result.get("depth") is not None:
        row["abs_rel"] = result["depth"].abs_rel
    if result.get("camera") is not None:
        row["ate_m"] = result["camera"].ate
    return {k: round(float(v), 4) for k, v in row.items()}


def recon_by_frame(recon: torch.Tensor, gt_points: torch.Tensor) -> dict[str, list[float]]:
    """Reconstruction APD per frame, after the metric's one median alignment over the clip ("world") and then,
    to say what the frame gets wrong, each frame forgiven one thing more on its own:

    - "scale": its own median scale (about the world origin): what a per-pair scale drift costs;
    - "pose": its own rotation and translation (rigid, Umeyama via roma; the clip's scale kept): its camera pose;
    - "shape": its own similarity (rotation, translation and scale): the geometry alone.

    recon, gt_points: (T, H, W, 3) in the world frame; non-finite ground truth is left out. A frame with fewer
    than 3 valid points gets NaN in "scale", "pose" and "shape".
    """
    assert recon.shape == gt_points.shape and recon.shape[-1] == 3, (tuple(recon.shape), tuple(gt_points.shape))
    pred, gt = recon.detach().double().cpu(), gt_points.detach().double().cpu()
    valid = torch.isfinite(gt).all(-1) & torch.isfinite(pred).all(-1)
    world = align(pred, gt, valid, "median")
    out: dict[str, list[float]] = {"world": [], "scale": [], "pose": [], "shape": []}
    for t in range(pred.shape[0]):
        v = valid[t]
        out["world"].append(float(apd(world[t], gt[t], v)))
        if int(v.sum()) < 3:
            for k in ("scale", "pose", "shape"):
                out[k].append(float("nan"))
            continue
        out["scale"].append(float(apd(world[t] * median_scale(world[t][v], gt[t][v]), gt[t], v)))
        R, tr = roma.rigid_points_registration(world[t][v], gt[t][v])
        out["pose"].append(float(apd(world[t] @ R.T + tr, gt[t], v)))
        R, tr, s = roma.rigid_points_registration(pred[t][v], gt[t][v], compute_scaling=True)
        out["shape"].append(float(apd(s * pred[t] @ R.T + tr, gt[t], v)))
    return out


PATCH_GROUPS = ("static_interior", "static_edge", "moving_interior", "moving_edge")


def depth_range_slope(anchor: torch.Tensor, gt_anchor: torch.Tensor) -> float:
    """Least-squares slope b of log z_pred = a + b · log z_gt over the valid anchor points (N, 3) each.

    1 = the right depth range (any global scale is absorbed by a); < 1 = depths compressed towards the mean
    (near points placed too far, far ones too near), what a network that hedges between scenes predicts.

    >>> z = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 4.0]])
    >>> round(depth_range_slope(z * torch.tensor([1.0, 1.0, 3.0]), z), 6), round(depth_range_slope(z.sqrt(), z), 6)
    (1.0, 0.5)
    """
    pred, gt, ok = anchor_points(anchor, gt_anchor)
    lp, lg = pred[ok, 2].log(), gt[ok, 2].log()
    lp, lg = lp - lp.mean(), lg - lg.mean()
    return float((lp * lg).sum() / (lg * lg).sum().clamp_min(1e-12))


def anchor_depth_by_patch(anchor: torch.Tensor, gt_anchor: torch.Tensor, query_pixels: torch.Tensor,
                          dynamic: torch.Tensor, patch: int) -> dict[str, torch.Tensor]:
    """|log(s z_pred) − log z_gt| at the anchor's queries, by group (:data:`PATCH_GROUPS`).

    anchor, gt_anchor: (N, 3) frame-0 points (camera 0 = world); query_pixels: (N, 2) integer (u, v); dynamic:
    (H, W) bool, the moving pixels; patch: the model's patch size. s = median scale over every valid query. A
    query is "edge" when its patch holds moving and static pixels. Returns {group: (n,) float64 errors}.
    """
    H, W = dynamic.shape
    assert H % patch == 0 and W % patch == 0, (H, W, patch)
    pred, gt, ok = anchor_points(anchor, gt_anchor)
    s = median_scale(pred, gt, ok)
    err = (torch.log(s * pred[:, 2].clamp_min(1e-9)) - torch.log(gt[:, 2].clamp_min(1e-9))).abs()
    share = rearrange(dynamic.double().cpu(), "(h p1) (w p2) -> h w (p1 p2)", p1=patch, p2=patch).mean(-1)
    u, v = query_pixels[:, 0].long().cpu(), query_pixels[:, 1].long().cpu()
    edge = ((share > 0) & (share < 1))[v // patch, u // patch]
    moving = dynamic.cpu()[v, u]
    masks = {"static_interior": ~moving & ~edge, "static_edge": ~moving & edge,
             "moving_interior": moving & ~edge, "moving_edge": moving & edge}
    return {name: err[m & ok] for name, m in masks.items()}


def scorecard(model, *, num_clips: int = 16, frames: int = 16, query_stride: int = 2,
              seed: int = HELDOUT_SEED, shift: dict | None = None) -> dict:
    """Score ``model`` and its two peers on ``num_clips`` held-out clips (``shift``: a candidate world's changed
    DomainConfig fields, ``world.scene.shifted_config``); returns the JSON-ready scorecard
    {"settings", "methods": {model, static, combinational, oracle_*: numbers}, "targets": {name: {value, met}},
    "beats_peers": {...}, "paired_gaps": {peer: {key: mean, low, high}} (model − peer),
    "oracle_gaps": {oracle: {mean, low, high}} (oracle − static, moving points), "per_clip": [...]}."""
    H, W = model.config.img_size
    clips = generate_clips(num_clips, frames=frames, height=H, width=W, domain="pretrain", seed=seed, shift=shift)
    per_method: dict[str, list[dict]] = {m: [] for m in METHODS}
    by_frame: list[dict[str, list[float]]] = []
    by_patch: dict[str, list[torch.Tensor]] = {g: [] for g in PATCH_GROUPS}
    slopes: list[float] = []
    for b in range(num_clips):
        seq = sequence_from_clip(clips, b, query_stride=query_stride)
        pred = predict_model(model, seq)
        by_frame.append(recon_by_frame(pred.recon, seq.gt_points))
        groups = anchor_depth_by_patch(pred.tracks[0], seq.gt_tracks[0], seq.query_pixels, clips.track_dynamic[b],
                                       model.config.patch_size)
        for g, errs in groups.items():
            by_patch[g].append(errs)
        slopes.append(depth_range_slope(pred.tracks[0], seq.gt_tracks[0]))
        static = static_prediction(pred, seq)
        oracle = replace(pred, tracks=oracle_motion_tracks(pred.tracks[0], seq.gt_tracks))
        found = {f"oracle_match{'_reg' if reg else ''}": replace(pred, tracks=oracle_match_tracks(
            pred.tracks, pred.recon, seq.gt_tracks, seq.gt_visible, seq.K, seq.T_world_cam, register=reg))
            for reg in (False, True)}
        u, v = seq.query_pixels.round().long().cpu().unbind(-1)
        object_id = clips.object_id[b, 0].cpu()[v, u]                                 # (N,) 0 = room
        found |= {f"oracle_placed{'_motion' if moved else ''}": replace(pred, tracks=oracle_placed_tracks(
            pred.tracks, seq.gt_tracks, object_id, true_motion=moved)) for moved in (False, True)}
        found["oracle_placed_static"] = replace(static, tracks=oracle_placed_tracks(static.tracks, seq.gt_tracks,
                                                                                    object_id))
        peers = {"model": pred, "static": static, "oracle_motion": oracle, **found,
                 "combinational": combinational_prediction(seq, pred, tracker="lk", depth="recon")}
        for name, p in peers.items():
            per_method[name].append(evaluate_prediction(seq, p, alignments=("median",)))
    methods = {name: _row(mean_results(results)) for name, results in per_method.items()}
    m = methods["model"]
    for name in ("model", *ORACLES):
        methods[name]["gap_dynamic"] = round(methods[name]["apd_dynamic"] - methods["static"]["apd_dynamic"], 4)
    targets = {}
    for name, (key, op, thr) in TARGETS.items():
        value = m[key]
        targets[name] = {"value": value, "met": bool(value >= thr if op == ">=" else value <= thr)}
    beats = {f"{k} > {peer} {k}": bool(m[k] > methods[peer][k])
             for peer in ("static", "combinational") for k in ("apd", "apd_dynamic")}
    per_clip = [{"clip": clips.seeds[b], **{name: _row(per_method[name][b]) for name in METHODS}}
                for b in range(num_clips)]
    gaps = {peer: {k: _paired_gap([c["model"][k] - c[peer][k] for c in per_clip]) for k in ("apd", "apd_dynamic")}
            for peer in ("static", "combinational")}
    oracle_gaps = {name: _paired_gap([c[name]["apd_dynamic"] - c["static"]["apd_dynamic"] for c in per_clip])
                   for name in ORACLES}
    return {"settings": {"world_version": WORLD_VERSION, "domain": "pretrain", "world_shift": shift or {},
                         "num_clips": num_clips,
                         "frames": frames, "seed": seed, "image_hw": [H, W], "query_stride": query_stride,
                         "alignment": "median", "dynamic": "max_t |gt_t - gt_0| > 0.05 m"},
            "methods": methods, "targets": targets, "beats_peers": beats, "paired_gaps": gaps,
            "oracle_gaps": oracle_gaps,
            "recon_by_frame": {k: [round(float(v), 2) for v in torch.tensor([f[k] for f in by_frame]).nanmean(0)]
                               for k in ("world", "scale", "pose", "shape")},
            "anchor_depth_by_patch": {g: {"pixels": int(sum(e.numel() for e in errs)),
                                          "median_abs_log_err": round(float(torch.cat(errs).median()), 4)
                                          if sum(e.numel() for e in errs) else None}
                                      for g, errs in by_patch.items()},
            "anchor_depth_slope": {"median": round(float(torch.tensor(slopes).median()), 4),
                                   "per_clip": [round(x, 4) for x in slopes]},
            "per_clip": per_clip}


def _paired_gap(diffs: list) -> dict:
    """Mean of per-clip differences model − peer and its Student-t 95 % interval over the clips (NaNs dropped)."""
    d = [x for x in diffs if x is not None and x == x]
    low, high = paired_interval(d)
    return {"mean": round(sum(d) / max(len(d), 1), 2), "low": round(low, 2), "high": round(high, 2), "clips": len(d)}


def format_scorecard(card: dict) -> str:
    """Readable lines: one per method, then each target with its value and whether it is met."""
    lines = [f"{'':20s} {'APD':>6s} {'APD mov':>8s} {'EPE m':>6s} {'recon':>6s} {'AbsRel':>7s} {'ATE m':>6s}"]
    for name, r in card["methods"].items():
        lines.append(f"{name:20s} {r['apd']:6.1f} {r['apd_dynamic']:8.1f} {r['epe']:6.3f} "
                     f"{r.get('recon_apd', float('nan')):6.1f} {r.get('abs_rel', float('nan')):7.3f} "
                     f"{r.get('ate_m', float('nan')):6.3f}")
    for name, t in card["targets"].items():
        lines.append(f"  [{'x' if t['met'] else ' '}] {name}: {t['value']}")
    for name, ok in card["beats_peers"].items():
        lines.append(f"  [{'x' if ok else ' '}] {name}")
    for peer, keys in card.get("paired_gaps", {}).items():
        lines.append(f"  model − {peer} per clip (mean [95 % interval]): " + ", ".join(
            f"{k} {g['mean']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]" for k, g in keys.items()))
    if "oracle_gaps" in card:
        lines.append("  moving points, oracle − static per clip (mean [95 % interval]): " + ", ".join(
            f"{k} {g['mean']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]" for k, g in card["oracle_gaps"].items()))
    if "recon_by_frame" in card:
        for k, row in card["recon_by_frame"].items():
            lines.append(f"  recon APD by frame ({k}): " + " ".join(f"{v:.0f}" for v in row))
    if "anchor_depth_by_patch" in card:
        lines.append("  anchor |log depth error| (median, pixels): " + ", ".join(
            f"{g} {d['median_abs_log_err']} ({d['pixels']})" for g, d in card["anchor_depth_by_patch"].items()))
    if "anchor_depth_slope" in card:
        lines.append(f"  anchor depth range (slope of log z_pred on log z_gt, 1 = right): "
                     f"{card['anchor_depth_slope']['median']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.scorecard MODEL [--train-ckpt RUN] [--json OUT]``."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.scorecard", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help=resolve.SPEC_HELP)
    ap.add_argument("--train-ckpt", default=None, help="its training checkpoint: adds steps, pairs seen, time")
    ap.add_argument("--num-clips", type=int, default=16)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--json", default=None, help="write the scorecard here (atomically)")
    ap.add_argument("--device", default="cpu",
                    help="run the model here (cpu, cuda, auto); clips, peers and metrics stay on the CPU")
    add_shift_argument(ap, "score on a candidate world")
    args = ap.parse_args(argv)
    if args.num_clips < 1 or args.frames < 2:
        ap.error("--num-clips must be >= 1 and --frames >= 2")
    torch.manual_seed(0)
    start = time.perf_counter()
    model = resolve.load(args.model, device=pick_device(args.device))
    card = scorecard(model, num_clips=args.num_clips, frames=args.frames, shift=parse_shift(args.shift) or None)
    card["command"] = (f"python -m st4r_lite.studies.scorecard {args.model}"
                       + (f" --train-ckpt {args.train_ckpt}" if args.train_ckpt else "")
                       + f" --num-clips {args.num_clips} --frames {args.frames}"
                       + shift_flags(args.shift)
                       + (f" --device {args.device}" if args.device != "cpu" else "")
                       + (f" --json {args.json}" if args.json else ""))
    card["checkpoint"] = args.model
    card["seconds"] = round(time.perf_counter() - start, 1)
    if args.train_ckpt:
        card["training"] = training_record(args.train_ckpt)
    print(format_scorecard(card))
    if args.json:
        with atomic_write(Path(args.json), "w") as fh:
            fh.write(json.dumps(card, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
