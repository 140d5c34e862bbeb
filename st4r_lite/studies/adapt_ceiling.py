"""What limits tracking on the `wild` videos: the anchor's geometry or the motion? Ceilings with one part made true.

Dimension letters: T frames, H image rows, W image columns.

For each `wild` clip the model's track maps (T, H, W, 3) are scored (tracking APD, median alignment, every pixel
by default, as the adaptation studies score them) as they are and with one part replaced:

    none            the model's tracks
    static          track_j := track_0 (nothing moves)
    true_motion     track_0 + (X^gt_j − X^gt_0) / s           the model's anchor, perfect motion (reads ground truth)
    true_depth      track_j + X_0' − track_0, X_0' = track_0 · z^gt / (s z_0)
                                                              perfect anchor depth along the model's rays, the
                                                              model's motion kept (reads ground truth)
    reanchored      the same with the mono-depth pseudo-label (``adapt.reanchor``; no ground truth: what the
                    adaptation's re-anchoring does before any gradient step)

s = median-scale of the model's anchor to the true one. A row far above ``none`` names what limits the model; the
"true" rows are diagnostics, never methods.

Why every pixel: with median alignment the APD of a poorly reconstructed clip is steep in the alignment scale, and
that scale is a median over the scored points. On wild clip 600005 the shipped model's `none` APD is 33.4 on all
6144 pixels but 51.2, 47.5 or 26.4 on the three 384-point grids of stride 4 (offsets 0, 1, 2). Rows are always
paired on the same points, so their differences move much less with the grid than the absolute numbers (−0.3 /
+3.9 / +18.3 for static / true motion / true depth on the old grid, −0.6 / +3.5 / +19.0 on every pixel); the absolute numbers agree with
``adapt_curve``'s step-0 rows only when both score every pixel (``--query-stride 1``, the default).

``python -m st4r_lite.studies.adapt_ceiling --taus 0,0.05,0.1,0.15,0.2 --json data/adapt_ceiling.json`` (12 clips,
about 20 s); ``--first-seed 610000 ... --json data/adapt_ceiling_tau_selection.json`` is where re-anchoring's
tolerance was chosen.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.adapt.online import make_provider
from st4r_lite.adapt.reanchor import reanchor_tracks
from st4r_lite.geometry.track_metrics import median_scale, tracking_metrics
from st4r_lite.model import resolve
from st4r_lite.model.pairs import predict_video
from st4r_lite.runtime import atomic_write
from st4r_lite.studies.ablation_stats import paired_interval
from st4r_lite.world.render import generate_clips

ROWS = ("none", "static", "true_motion", "true_depth", "reanchored")
SEEDS = tuple(range(600000, 600012))


def ceiling_tracks(track: torch.Tensor, gt_track: torch.Tensor, mono_anchor: torch.Tensor,
                   tau: float = AdaptConfig.reanchor_tau) -> dict[str, torch.Tensor]:
    """The rows of the module docstring. track, gt_track: (T, H, W, 3) anchor-camera frame; mono_anchor: (H, W)
    mono-depth of frame 0 (0 = missing); tau: re-anchoring's tolerance. Returns {row: (T, H, W, 3)}."""
    assert track.shape == gt_track.shape and track.shape[-1] == 3, (tuple(track.shape), tuple(gt_track.shape))
    tr, gt = track.double(), gt_track.double()
    a = tr[0]
    ok = torch.isfinite(gt[0]).all(-1) & (gt[0][..., 2] > 0) & (a[..., 2] > 0)
    s = median_scale(a, gt[0], ok)
    true_depth = torch.where(ok, gt[0][..., 2] / (s * a[..., 2]), torch.ones_like(a[..., 2]))
    return {"none": tr, "static": a[None].expand_as(tr).clone(),
            "true_motion": a[None] + (gt - gt[:1]).nan_to_num(0.0) / s,
            "true_depth": tr + (a * (true_depth[..., None] - 1))[None],
            "reanchored": reanchor_tracks(tr, mono_anchor.double(), tau)[0]}


def adapt_ceiling(model, seeds=SEEDS, *, frames: int = 16, query_stride: int = 1, taus: tuple[float, ...] = ()
                  ) -> dict:
    """Score every row on the `wild` clips ``seeds``; returns {"rows": {row: {"apd", "apd_dynamic", "per_clip"}},
    "vs_none": {row: {"apd_change", "ci95"}}}. ``taus``: extra rows "reanchored tau=T" (how re-anchoring's
    tolerance was chosen)."""
    H, W = model.config.img_size
    extra = {f"reanchored tau={t:g}": t for t in taus}
    per: dict[str, list] = {r: [] for r in (*ROWS, *extra)}
    for seed in seeds:
        clip = generate_clips(1, frames=frames, height=H, width=W, domain="wild", seed=seed)
        track = predict_video(model, clip.rgb[0] * 2 - 1).track
        # the mono-depth pseudo-label the adaptation studies get (same provider, same seed)
        mono = make_provider("sim", "sim", ground_truth=clip, seed=AdaptConfig.seed).depth_model(clip.rgb[0].float())[0]
        gt = clip.track_world[0]
        flat = lambda x: rearrange(x[:, ::query_stride, ::query_stride], "t h w c -> t (h w) c")  # noqa: E731
        candidates = ceiling_tracks(track, gt, mono)
        candidates.update({name: reanchor_tracks(track.double(), mono.double(), t)[0] for name, t in extra.items()})
        for row, t in candidates.items():
            m = tracking_metrics(flat(t), flat(gt.double()), alignment="median")
            per[row].append((float(m.apd), float(m.apd_dynamic)))
    rows = {r: {"apd": float(np.mean([v[0] for v in vals])), "apd_dynamic": float(np.nanmean([v[1] for v in vals])),
                "per_clip": [round(v[0], 2) for v in vals]} for r, vals in per.items()}
    vs_none = {}
    for r in list(per)[1:]:
        d = [x[0] - y[0] for x, y in zip(per[r], per["none"])]
        vs_none[r] = {"apd_change": float(np.mean(d)), "ci95": list(paired_interval(d))}
    return {"rows": rows, "vs_none": vs_none}


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.adapt_ceiling [--checkpoint data/tiny.pt] [--json OUT]``."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.adapt_ceiling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="data/tiny.pt", help=resolve.SPEC_HELP)
    ap.add_argument("--num-clips", type=int, default=len(SEEDS), help="wild clips from --first-seed")
    ap.add_argument("--first-seed", type=int, default=SEEDS[0], help="first wild clip seed (default 600000)")
    ap.add_argument("--query-stride", type=int, default=1,
                    help="score every Nth pixel in both directions (default 1: every pixel, as adapt_curve does)")
    ap.add_argument("--taus", default="", help="comma-separated re-anchoring tolerances to add as rows, e.g. 0,0.05,0.1")
    ap.add_argument("--json", default=None, help="write the record here (atomically)")
    args = ap.parse_args(argv)
    if args.num_clips < 2:
        ap.error("--num-clips must be >= 2 (a paired interval needs two clips)")
    start = time.perf_counter()
    torch.manual_seed(0)
    model = resolve.load(args.checkpoint).float().eval()
    try:
        taus = tuple(float(t) for t in args.taus.split(",") if t.strip())
    except ValueError:
        ap.error(f"--taus must be comma-separated numbers, got {args.taus!r}")
    if any(t < 0 for t in taus):
        ap.error("--taus must be >= 0")
    if args.query_stride < 1:
        ap.error("--query-stride must be >= 1")
    result = adapt_ceiling(model, tuple(range(args.first_seed, args.first_seed + args.num_clips)),
                           query_stride=args.query_stride, taus=taus)
    for r, v in result["rows"].items():
        ch = result["vs_none"].get(r)
        extra = f"  {ch['apd_change']:+6.2f} [{ch['ci95'][0]:+.2f}, {ch['ci95'][1]:+.2f}]" if ch else ""
        print(f"{r:22s} APD {v['apd']:6.2f}  moving {v['apd_dynamic']:6.2f}{extra}")
    if args.json:
        record = {"command": f"python -m st4r_lite.studies.adapt_ceiling --checkpoint {args.checkpoint} "
                             f"--first-seed {args.first_seed} --num-clips {args.num_clips}"
                             + (f" --query-stride {args.query_stride}" if args.query_stride != 1 else "")
                             + (f" --taus {args.taus}" if taus else "") + f" --json {args.json}",
                  "checkpoint": args.checkpoint, "frames": 16, "query_stride": args.query_stride, "alignment": "median",
                  "seconds": round(time.perf_counter() - start, 1), **result}
        with atomic_write(Path(args.json), "w") as fh:
            fh.write(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
