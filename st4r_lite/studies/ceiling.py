"""How far the static baseline can be beaten at all: ideal predictors on the held-out clips.

Dimension letters: B clips, T frames, H, W image rows / columns, N = H·W anchor pixels (tracks), K objects.

The pretraining quality bar compares tracking APD on *dynamic* points with the static baseline (track := the
anchor's reconstruction for every frame). Both are limited by how well the anchor's moving objects are
reconstructed, and that has a floor no network can go under: the depth of an independently moving rigid
object is ambiguous from two views. If X_t are the object's points at time t (world = camera 0, centre 0) and
C_t is the centre of camera t, the scaled object

    Y_t = C_t + f · (X_t − C_t)          (f > 0, one factor per object)

is again a rigid object (size × f) whose images in camera 0 (Y_0 = f X_0) and camera t are exactly those of
X. Only priors break the tie (object sizes, texture scales); in the synthetic world they are uniform over
wide ranges (sphere radius 0.25–0.55 m, i.e. log f within ±0.39 of the middle; boxes ±0.55).

:func:`ideal_tracks` builds this family with log f_k ~ U(−a, a) per object (the room keeps f = 1): an
*ideal* predictor that knows the room, every motion and every shape exactly, and errs only in each moving
object's depth by up to e^{±a}. Its static counterpart repeats Y_0. :func:`ceiling_table` measures both with
the benchmark's own metric (:mod:`st4r_lite.geometry.track_metrics`, median alignment, dynamic points) for several a: the
"gap" column is the most any predictor with that depth error can beat the static baseline by.
:func:`model_diagnostics` places a trained model on that table (its median |log depth error| on dynamic
anchor pixels, and whether its predicted motion beats predicting none).

Reproduce ``data/quality_ceiling.json``: ``python -m st4r_lite.studies.ceiling --model data/tiny.pt --json
data/quality_ceiling.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange

from st4r_lite.errors import InputError
from st4r_lite.geometry import track_metrics
from st4r_lite.model import resolve
from st4r_lite.model.pairs import predict_video
from st4r_lite.train.heldout import HELDOUT_SEED, write_eval_json
from st4r_lite.world.render import generate_clips
from st4r_lite.world.scene import add_shift_argument, parse_shift, shift_flags

LOG_AMBIGUITIES = (0.0, 0.1, 0.2, 0.3, 0.4)  # a: log f ~ U(-a, a); 0.39 = the sphere-size prior of the world
DRAWS = 4                                   # random draws of the factors per clip and a (averaged)


@dataclass
class CeilingRow:
    """Ideal predictor with per-object log-depth error in ±log_ambiguity vs its static counterpart.

    APD in % on dynamic tracks after the benchmark's median alignment; gap = ideal − static;
    median_abs_log_error = the median |log f| of that error (= a / 2) to compare with a model's.
    """

    log_ambiguity: float
    median_abs_log_error: float
    ideal_apd_dyn: float
    static_apd_dyn: float
    gap: float


def ideal_tracks(track_world: torch.Tensor, anchor_object: torch.Tensor, cam_centres: torch.Tensor,
                 log_scale: torch.Tensor) -> torch.Tensor:
    """The depth-ambiguous twin of the true tracks: Y_t = C_t + f_k (X_t − C_t), f_k = exp(log_scale[k]).

    track_world (T, N, 3) true tracks X_t; anchor_object (N,) int64 object of each anchor pixel (0 = room);
    cam_centres (T, 3) camera centres C_t in the world (C_0 = 0); log_scale (K + 1,) per object id
    (entry 0, the room, is ignored: f = 1). Returns (T, N, 3) float64.

    >>> import math
    >>> X = torch.tensor([[[1.0, 0, 2]], [[1.5, 0, 2]]])            # one point moving 0.5 m in x
    >>> log_f = torch.tensor([0.0, math.log(2.0)], dtype=torch.float64)   # room, object 1: f = 2
    >>> Y = ideal_tracks(X, torch.tensor([1]), torch.zeros(2, 3), log_f)
    >>> Y[:, 0].tolist()                                              # twice as far, twice the motion
    [[2.0, 0.0, 4.0], [3.0, 0.0, 4.0]]
    """
    T, N, _ = track_world.shape
    assert anchor_object.shape == (N,), f"anchor_object must be (N,) = ({N},), got {tuple(anchor_object.shape)}"
    assert cam_centres.shape == (T, 3), f"cam_centres must be (T, 3) = ({T}, 3), got {tuple(cam_centres.shape)}"
    if int(anchor_object.max()) >= log_scale.numel():
        raise ValueError(f"log_scale has {log_scale.numel()} entries but object id {int(anchor_object.max())} "
                         "occurs; give one entry per object id (0 = room)")
    f = torch.exp(log_scale.double()).clone()
    f[0] = 1.0
    fk = rearrange(f[anchor_object], "n -> 1 n 1")
    C = rearrange(cam_centres.double(), "t c -> t 1 c")
    return C + fk * (track_world.double() - C)


def ceiling_table(clip, log_ambiguities=LOG_AMBIGUITIES, draws: int = DRAWS, seed: int = 0) -> list[CeilingRow]:
    """Ideal vs static dynamic APD (mean over the clips of a ``world.Clip``) for each ambiguity a.

    Per clip and draw: log f_k ~ U(−a, a) for every object, ideal tracks by :func:`ideal_tracks`, static =
    their frame 0 repeated; both scored by ``track_metrics.tracking_metrics`` (median alignment) on dynamic tracks.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for a in log_ambiguities:
        if a < 0:
            raise ValueError(f"log ambiguities must be ≥ 0, got {a}")
        ideal, static = [], []
        for b in range(clip.num_clips):
            gt = rearrange(clip.track_world[b], "t h w c -> t (h w) c").double()
            obj = rearrange(clip.object_id[b, 0], "h w -> (h w)")
            centres = clip.T_world_cam[b, :, :3, 3]
            dyn = track_metrics.dynamic_tracks(gt)
            if not dyn.any():
                continue
            for _ in range(draws if a > 0 else 1):
                log_f = (torch.rand(int(obj.max()) + 1, generator=gen, dtype=torch.float64) * 2 - 1) * a
                y = ideal_tracks(gt, obj, centres, log_f)
                ideal.append(track_metrics.tracking_metrics(y, gt, dynamic=dyn).apd_dynamic)
                static.append(track_metrics.tracking_metrics(track_metrics.static_tracks(y[0], len(y)), gt,
                                                       dynamic=dyn).apd_dynamic)
        if not ideal:
            raise InputError("no clip has a moving object; cannot measure the ceiling")
        i, s = sum(ideal) / len(ideal), sum(static) / len(static)
        rows.append(CeilingRow(float(a), float(a) / 2, round(i, 2), round(s, 2), round(i - s, 2)))
    return rows


@torch.no_grad()
def model_diagnostics(model, clip, chunk: int = 8) -> dict:
    """Where a model stands against :func:`ceiling_table`, mean over the clips of a ``world.Clip``.

    - median_abs_log_depth_error: median over dynamic anchor pixels of |log(s‖track_0‖ / ‖gt_0‖)|, the
      anchor's own reconstruction (pair (0, 0)) after the benchmark's median scale s (compare with the
      table's median_abs_log_error);
    - motion_error_ratio: mean ‖s(track_t − track_0) − (gt_t − gt_0)‖ / mean ‖gt_t − gt_0‖ over dynamic
      tracks and t ≥ 1 (< 1: the predicted motion beats predicting no motion; 0: perfect);
    - apd_dyn, static_apd_dyn, gap: the quality-bar numbers on these clips.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logs, ratios, apd_dyn, static_dyn = [], [], [], []
    for b in range(clip.num_clips):
        video = (clip.rgb[b] * 2 - 1).to(device)
        out = predict_video(model, video, chunk=chunk, out_device="cpu")
        pred = rearrange(out.track, "t h w c -> t (h w) c").double()
        gt = rearrange(clip.track_world[b].cpu(), "t h w c -> t (h w) c").double()
        dyn = track_metrics.dynamic_tracks(gt)
        if not dyn.any():
            continue
        s = track_metrics.median_scale(pred, gt)
        logs.append(torch.log(s * pred[0, dyn].norm(dim=-1) / gt[0, dyn].norm(dim=-1)).abs().median())
        d_pred, d_gt = s * (pred[1:] - pred[:1]), gt[1:] - gt[:1]
        ratios.append((d_pred[:, dyn] - d_gt[:, dyn]).norm(dim=-1).mean() / d_gt[:, dyn].norm(dim=-1).mean())
        apd_dyn.append(track_metrics.tracking_metrics(pred, gt, dynamic=dyn).apd_dynamic)
        static_dyn.append(track_metrics.tracking_metrics(track_metrics.static_tracks(pred[0], len(pred)), gt,
                                                   dynamic=dyn).apd_dynamic)
    model.train(was_training)
    if not logs:
        raise InputError("no clip has a moving object; cannot diagnose the model")
    mean = lambda v: round(float(sum(v) / len(v)), 4)  # noqa: E731
    return {"median_abs_log_depth_error": mean(logs), "motion_error_ratio": mean(ratios),
            "apd_dyn": mean(apd_dyn), "static_apd_dyn": mean(static_dyn),
            "gap": round(mean(apd_dyn) - mean(static_dyn), 4), "num_clips": len(logs)}


def ceiling_report(model_path=None, frames=(8, 16), num_clips: int = 16, seed: int | None = None,
                   height: int = 64, width: int = 96, shift: dict | None = None) -> dict:
    """The table for each clip length (pretrain domain, the held-out seeds) and, with ``model_path``, the
    model's diagnostics on the same clips; ``shift``: a candidate world's changed DomainConfig fields
    (``world.scene.shifted_config``). Returns a JSON-able dict."""
    seed = HELDOUT_SEED if seed is None else seed
    model = None
    if model_path is not None:
        model = resolve.load(model_path)
        height, width = model.config.img_size
    report = {"command": "python -m st4r_lite.studies.ceiling" + (f" --model {model_path}" if model_path else ""),
              "clips": {"domain": "pretrain", "num_clips": num_clips, "seed": seed, "image_hw": [height, width],
                        "frame_gap": 1.0, "world_shift": shift or {}},
              "ambiguity": "per moving object, log f ~ U(-a, a); Y_t = C_t + f (X_t - C_t)",
              "by_frames": {}}
    for T in frames:
        clip = generate_clips(num_clips, frames=T, height=height, width=width, domain="pretrain", seed=seed,
                              shift=shift)
        moved = [rearrange(clip.track_world[b], "t h w c -> t (h w) c").double() for b in range(num_clips)]
        motion = torch.cat([(g - g[:1]).norm(dim=-1).amax(0)[track_metrics.dynamic_tracks(g)] for g in moved])
        entry = {"median_dynamic_motion_m": round(float(motion.median()), 3),
                 "table": [asdict(r) for r in ceiling_table(clip)]}
        if model is not None:
            entry["model"] = model_diagnostics(model, clip)
        report["by_frames"][str(T)] = entry
    return report


def format_report(report: dict) -> str:
    """A plain-text table of :func:`ceiling_report` (one block per clip length)."""
    lines = []
    for T, e in report["by_frames"].items():
        lines.append(f"{T} frames (median motion of dynamic points {e['median_dynamic_motion_m']} m)")
        lines.append("  ±log f   median|log err|   ideal dyn APD   static dyn APD   gap")
        for r in e["table"]:
            lines.append(f"  {r['log_ambiguity']:5.2f}   {r['median_abs_log_error']:14.2f}   "
                         f"{r['ideal_apd_dyn']:13.1f}   {r['static_apd_dyn']:14.1f}   {r['gap']:5.1f}")
        if "model" in e:
            m = e["model"]
            lines.append(f"  model: median|log err| {m['median_abs_log_depth_error']:.2f}, motion error ratio "
                         f"{m['motion_error_ratio']:.2f}, dyn APD {m['apd_dyn']:.1f} vs static "
                         f"{m['static_apd_dyn']:.1f} (gap {m['gap']:+.1f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.ceiling [--model data/tiny.pt] [--json data/quality_ceiling.json]``."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.ceiling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model to place on the table: " + resolve.SPEC_HELP)
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16], help="clip lengths (default 8 16)")
    ap.add_argument("--num-clips", type=int, default=16)
    ap.add_argument("--json", default=None, help="write the report here (atomically)")
    add_shift_argument(ap)
    args = ap.parse_args(argv)
    if min(args.frames) < 2 or args.num_clips < 1:
        ap.error("--frames must be ≥ 2 and --num-clips ≥ 1")
    torch.manual_seed(0)
    report = ceiling_report(args.model, frames=tuple(args.frames), num_clips=args.num_clips,
                            shift=parse_shift(args.shift) or None)
    report["command"] = ("python -m st4r_lite.studies.ceiling" + (f" --model {args.model}" if args.model else "")
                         + f" --frames {' '.join(map(str, args.frames))} --num-clips {args.num_clips}"
                         + shift_flags(args.shift))
    if args.json:
        write_eval_json(report, Path(args.json))
    print(format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
