"""Why adaptation helps one video and hurts the next: ground-truth scores and the method's own losses vs steps.

Dimension letters: T frames, H image rows, W image columns, N query points.

For every `wild` clip and every step count k in ``steps`` the ``baseline`` adaptation (package defaults otherwise;
k = 0 is ``none``) runs from the same checkpoint on the same pseudo-labels, and we record

    ground truth    tracking APD (all, moving points; median alignment) of the adapted track maps;
                    anchor_absrel = mean |s z^trk_0 − z^gt_0| / z^gt_0 over anchor pixels (s: median ratio), the
                    anchor frame's geometry; motion_err = median_{j,p} ‖s (track_j − track_0) − (X^gt_j − X^gt_0)‖ (m),
                    the predicted motion (camera-induced + object);
    the method's    L_total, L_traj, L_depth, L_align of the final prediction (what adaptation can see without
    own losses      ground truth).

A ground-truth-free stopping rule would need a loss whose drop predicts the APD change; ``summary`` reports, over
(clip, k > 0), the Spearman rank correlation between the relative drop of each loss and the APD change, and the
mean APD change per k with its paired 95 % interval.

``--shift KEY=VALUE`` renders the wild clips with a DomainConfig field changed (``world.scene.shifted_config``:
e.g. ``--shift size_scale=1.6`` or ``--shift fov_deg=68:75``), a domain gap the pretrained model really falls
into, to ask whether adaptation closes it.

``python -m st4r_lite.studies.adapt_curve --seeds 600000,...,600005 --steps 0,10,30,60 --json data/adapt_curve_quick.json``
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch

from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.adapt.online import make_provider
from st4r_lite.errors import InputError
from st4r_lite.eval.adaptation import VideoWithTruth, adapt_and_score
from st4r_lite.model import resolve
from st4r_lite.runtime import atomic_write, to_jsonable
from st4r_lite.studies.ablation_stats import paired_interval
from st4r_lite.world.render import generate_clips
from st4r_lite.world.scene import add_shift_argument, parse_shift

__all__ = ["adaptation_curve", "geometry_errors", "summarise", "config_with", "domain_shift", "LOSSES"]

LOSSES = ("total", "traj", "depth", "align")


def geometry_errors(track: torch.Tensor, gt_track: torch.Tensor) -> dict[str, float]:
    """anchor_absrel and motion_err (see the module docstring) of track maps against dense ground truth.

    track, gt_track: (T, H, W, 3) in the anchor camera's frame (ground truth in metres).
    """
    assert track.shape == gt_track.shape and track.shape[-1] == 3, (tuple(track.shape), tuple(gt_track.shape))
    z, zg = track[0, ..., 2], gt_track[0, ..., 2]
    ok = torch.isfinite(gt_track).all(-1).all(0) & (zg > 0) & torch.isfinite(track).all(-1).all(0) & (z > 0)
    if int(ok.sum()) < 16:
        return {"anchor_absrel": float("nan"), "motion_err": float("nan")}
    s = (zg[ok] / z[ok]).median()
    absrel = ((s * z[ok] - zg[ok]).abs() / zg[ok]).mean()
    motion = (s * (track - track[:1]) - (gt_track - gt_track[:1]))[:, ok]
    return {"anchor_absrel": float(absrel), "motion_err": float(motion.norm(dim=-1).median())}


def adaptation_curve(videos: list[VideoWithTruth], model, steps=(0, 10, 30, 60), *, tracker: str = "sim",
                     depth: str = "sim", config: AdaptConfig | None = None, progress=None) -> list[dict]:
    """One row per (video, k): {"video", "steps", "apd", "apd_moving", "anchor_absrel", "motion_err",
    "loss": {L_total, L_traj, L_depth, L_align}}. Same pseudo-labels for every k of a video (paired)."""
    cfg = config or AdaptConfig()
    if not steps or min(steps) < 0:
        raise InputError(f"steps must be counts >= 0, got {steps}")
    rows = []
    for vid in videos:
        if vid.gt is None or not vid.gt.dense:
            raise InputError(f"video {vid.name!r} needs dense ground truth (a synthetic clip)")
        provider = make_provider(tracker, depth, ground_truth=vid.gt, seed=cfg.seed)
        labels = provider(vid.video, vid.queries(cfg.query_stride))
        for k in steps:
            run_cfg = replace(cfg, variant="baseline" if k else "none", steps=int(k))
            res = adapt_and_score(model, vid, labels, run_cfg)
            tracking = res.metrics["tracking"]["median"]
            row = {"video": vid.name, "steps": int(k), "apd": tracking["apd"], "apd_moving": tracking["apd_dynamic"],
                   **geometry_errors(res.track.detach().cpu(), vid.gt.track_world.cpu()),
                   "loss": res.metrics["final_loss"], "seconds": round(res.seconds, 2)}
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (ties broken by order; enough for a diagnostic)."""
    if len(x) < 3:
        return float("nan")
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def summarise(rows: list[dict]) -> dict:
    """Per k > 0: mean APD change over clips with its paired 95 % interval, how many clips gained; over all
    (clip, k > 0): Spearman correlation of each loss's relative drop with the APD change."""
    base = {r["video"]: r for r in rows if r["steps"] == 0}
    if not base:
        raise InputError("the curve needs steps = 0 (no adaptation) as the reference")
    per_k, d_apd, drops = {}, [], {name: [] for name in LOSSES}
    for k in sorted({r["steps"] for r in rows} - {0}):
        deltas = [r["apd"] - base[r["video"]]["apd"] for r in rows if r["steps"] == k and r["video"] in base]
        lo, hi = paired_interval(deltas)
        per_k[str(k)] = {"apd_change": float(np.mean(deltas)), "ci95": [lo, hi],
                         "clips_gained": int(sum(d > 0 for d in deltas)), "clips": len(deltas),
                         "per_clip": [round(d, 2) for d in deltas]}
    for r in rows:
        if r["steps"] == 0 or r["video"] not in base:
            continue
        ref = base[r["video"]]
        d_apd.append(r["apd"] - ref["apd"])
        for name in LOSSES:
            before = ref["loss"][name]
            drops[name].append((before - r["loss"][name]) / before if before else 0.0)
    corr = {name: _spearman(np.array(v), np.array(d_apd)) for name, v in drops.items()}
    return {"per_steps": per_k, "spearman_loss_drop_vs_apd_change": corr}


def config_with(changes: list[str]) -> AdaptConfig:
    """AdaptConfig with ``KEY=VALUE`` changes, each value parsed as the field's default type."""
    kinds = {f.name: type(getattr(AdaptConfig(), f.name)) for f in fields(AdaptConfig)}
    out = {}
    for item in changes:
        key, sep, value = item.partition("=")
        if not sep or key not in kinds:
            raise InputError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(kinds)}")
        kind = kinds[key]
        try:
            if kind is bool:
                out[key] = value.lower() in ("1", "true", "yes")
            else:
                out[key] = None if value.lower() == "none" else kind(value)   # pairs_per_step=none: all pairs
        except ValueError:
            raise InputError(f"--set {item!r}: {value!r} is not a {kind.__name__}") from None
    return replace(AdaptConfig(), **out)


def domain_shift(items: list[str]) -> dict:
    """``["size_scale=1.6", "fov_deg=68:75"]`` -> {"size_scale": 1.6, "fov_deg": (68.0, 75.0)} (checked when the
    clips are rendered, by ``world.scene.shifted_config``); see ``world.scene.parse_shift``."""
    return parse_shift(items)


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.adapt_curve [--checkpoint data/tiny.pt] --seeds ... --steps ... [--json OUT]``."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.adapt_curve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="data/tiny.pt", help="path, released name or fresh:PRESET")
    ap.add_argument("--seeds", default="600000,600001,600002,600003,600004,600005", help="wild clip seeds")
    ap.add_argument("--steps", default="0,10,30,60", help="adaptation step counts (must include 0)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--tracker", default="sim", help="pseudo 2D tracker (sim, sim-latch, lk)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change one AdaptConfig setting (repeatable), e.g. --set lr=1e-4 --set cameras=gt")
    add_shift_argument(ap, "render the wild clips shifted")
    ap.add_argument("--json", default=None, help="write rows + summary here")
    args = ap.parse_args(argv)
    config = config_with(args.set)
    shift = domain_shift(args.shift)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        steps = [int(s) for s in args.steps.split(",")]
    except ValueError:
        raise InputError("--seeds and --steps are comma-separated integers") from None
    start = time.perf_counter()
    model = resolve.load(args.checkpoint).float()
    videos = [VideoWithTruth.from_clip(generate_clips(1, frames=args.frames, height=64, width=96, domain="wild",
                                                      seed=s, shift=shift), 0) for s in seeds]
    rows = adaptation_curve(videos, model, steps, tracker=args.tracker, config=config, progress=lambda r: print(
        f"{r['video']:12s} k={r['steps']:3d} APD {r['apd']:6.2f} moving {r['apd_moving']:6.2f} "
        f"anchor AbsRel {r['anchor_absrel']:.3f} motion err {r['motion_err']:.3f} m  "
        + " ".join(f"L_{n} {r['loss'][n]:.4f}" for n in LOSSES), flush=True))
    summary = summarise(rows)
    for k, s in summary["per_steps"].items():
        print(f"k={k:>3s}: APD change {s['apd_change']:+.2f} [{s['ci95'][0]:+.2f}, {s['ci95'][1]:+.2f}], "
              f"{s['clips_gained']}/{s['clips']} clips gained")
    print("Spearman(loss drop, APD change):", {k: round(v, 2) for k, v in summary["spearman_loss_drop_vs_apd_change"].items()})
    if args.json:
        record = {"command": "python -m st4r_lite.studies.adapt_curve " + shlex.join(sys.argv[1:] if argv is None else argv),
                  "checkpoint": args.checkpoint, "config": asdict(config), "tracker": args.tracker,
                  "domain_shift": shift,
                  "seconds": round(time.perf_counter() - start, 1), "rows": rows, "summary": summary}
        with atomic_write(Path(args.json), "w") as fh:
            json.dump(to_jsonable(record), fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
