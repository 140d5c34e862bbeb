"""What a track that is *found* in frame k (read from frame k's reconstruction) could gain, and at what resolution
the finding has to happen: token or pixel.

Dimension letters: B clips, S frames, P = B·S pairs (0, k), H W image rows / columns, N tokens (h·w), p patch size.

For every anchor pixel visible in frame k of held-out pretrain clips, the 3D error (metres, the prediction scaled
by one median scale per clip, fitted on the anchor pair's track) of

    track head      the model's track (before the matched tracking's gate, when it has one)
    static          the anchor's own point held still (the static baseline)
    lookup          (``ModelConfig.match_track``) the model's own lookup, gate fully open
    true token      frame k's reconstruction, patch copied from the token holding the true correspondent of the
                    anchor pixel's token (``train.correspondence.patch_correspondence``)
    true pixel      frame k's reconstruction read at the pixel where the point truly is

and, for a pixel lookup (``ModelConfig.match_pixel``), ``lookup_px``: how far (pixels) from the true projection the
lookup looked; every lookup registered onto the track head's points by one trimmed similarity per pair
(``model.match_track.register_onto``, as ``ModelConfig.match_register``), split into moving-object and static
pixels of frames k ≥ ``far`` (where objects have moved most). If "true pixel" beats the track head on moving points
and "true token" does not, a lookup has to find pixels, not tokens.

    python -m st4r_lite.studies.lookup_ceiling data/tiny.pt --json data/match_track/lookup_ceiling_tiny.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from st4r_lite.geometry.track_metrics import median_scale
from st4r_lite.model import resolve
from st4r_lite.model.match_track import copy_patches, register_onto, sample_points
from st4r_lite.model.pairs import PairRunner
from st4r_lite.runtime import atomic_write
from st4r_lite.train.correspondence import patch_correspondence
from st4r_lite.train.heldout import HELDOUT_SEED, heldout_clips
from st4r_lite.world.render import project_tracks
from st4r_lite.world.scene import add_shift_argument, parse_shift, shift_flags

__all__ = ["lookup_errors", "ROWS", "main"]

ROWS = ("track_head", "static", "lookup", "true_token", "true_pixel")


def _registered(found: torch.Tensor, track: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """found (P, H, W, 3) registered onto track (P, H, W, 3) with weights (P, H, W)."""
    flat = lambda x: rearrange(x, "p hh ww ... -> p (hh ww) ...")  # noqa: E731
    return register_onto(flat(found), flat(track), flat(weight)).view_as(found)


@torch.no_grad()
def lookup_errors(model, clips, far: int = 8) -> dict[str, dict]:
    """{"moving" | "static": {"pixels", row: {"median", "mean"}}} of the module docstring over a ``world.Clip``."""
    B, S, _, H, W = clips.rgb.shape
    p = model.config.patch_size
    assert far < S, f"far={far} needs clips of more than {far} frames, got {S}"
    captured: list[tuple] = []
    hook = None
    if getattr(model.config, "match_track", 0):
        hook = model.match_track.register_forward_hook(lambda _m, a, out: captured.append((a[2], out[1], out[2])))
    try:
        out = PairRunner(model, chunk=S)(clips.rgb.float() * 2 - 1)
    finally:
        if hook is not None:
            hook.remove()
    recon = out.recon.float()
    track = torch.cat([c[0] for c in captured]).float() if captured else out.track.float()
    target, _, _ = (rearrange(x, "b s n -> (b s) n") for x in patch_correspondence(clips, p))
    uv, _, inside = project_tracks(clips)
    uv, seen = rearrange(uv, "b s hh ww c -> (b s) hh ww c"), rearrange(inside & clips.track_visible, "b s hh ww -> (b s) hh ww")
    ones = torch.ones(track.shape[:3])
    found = {"true_token": _registered(copy_patches(recon, F.one_hot(target, target.shape[1]).float(), p), track, ones),
             "true_pixel": _registered(sample_points(recon, uv.float().nan_to_num()), track, seen.float())}
    if captured:
        logits = torch.cat([c[1] for c in captured]).float()
        attn = logits.softmax(-1)
        looked = torch.cat([c[2] for c in captured]).float() if captured[0][2] is not None else None
        if looked is not None:     # a pixel lookup
            lookup = sample_points(recon, looked)
        else:
            lookup = copy_patches(recon, attn, p)
        sure = repeat(attn.amax(-1), "q (h w) -> q (h p1) (w p2)", h=H // p, p1=p, p2=p)
        found["lookup"] = _registered(lookup, track, sure)
    anchor = repeat(track[::S], "b hh ww c -> (b s) hh ww c", s=S)
    gt = rearrange(clips.track_world, "b s hh ww c -> (b s) hh ww c").float()
    scale = torch.tensor([median_scale(track[b * S].reshape(-1, 3).double(), gt[b * S].reshape(-1, 3).double())
                          for b in range(B)])
    scale = repeat(scale, "b -> (b s) 1 1 1", s=S).float()
    dynamic = repeat(clips.track_dynamic, "b hh ww -> (b s) hh ww", s=S)
    frame = repeat(torch.arange(S), "s -> (b s) hh ww", b=B, hh=H, ww=W)
    rows = {"track_head": track, "static": anchor, **found}
    result = {}
    for group, mask in (("moving", dynamic & seen & (frame >= far)), ("static", ~dynamic & seen & (frame >= far))):
        result[group] = {"pixels": int(mask.sum())}
        for name in ROWS:
            if name in rows:
                err = (rows[name] * scale - gt).norm(dim=-1)[mask]
                result[group][name] = {"median": round(float(err.median()), 4), "mean": round(float(err.mean()), 4)}
        if captured and looked is not None:
            px = (looked - uv.float())[mask].norm(dim=-1)
            result[group]["lookup_px"] = {"median": round(float(px.median()), 2), "mean": round(float(px.mean()), 2)}
    return result


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.lookup_ceiling CHECKPOINT [--num-clips 8] [--json OUT]``."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.lookup_ceiling",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help=resolve.SPEC_HELP)
    ap.add_argument("--num-clips", type=int, default=8, help="held-out pretrain clips of 16 frames (default 8)")
    ap.add_argument("--far", type=int, default=8, help="score frames k >= this (default 8)")
    ap.add_argument("--json", default=None, help="write the record here (atomically)")
    add_shift_argument(ap)
    args = ap.parse_args(argv)
    if args.num_clips < 1 or not 1 <= args.far < 16:
        ap.error("--num-clips must be >= 1 and --far in 1..15")
    start = time.perf_counter()
    model = resolve.load(args.checkpoint).float().eval()
    world_shift = parse_shift(args.shift)
    clips = heldout_clips(model.config, num_clips=args.num_clips, frames=16, shift=world_shift or None)
    result = lookup_errors(model, clips, far=args.far)
    for group, rows in result.items():
        print(f"{group} pixels of frames >= {args.far} ({rows['pixels']}), 3D error in metres (median / mean):")
        for name in ROWS:
            if name in rows:
                print(f"   {name:11s} {rows[name]['median']:.3f} / {rows[name]['mean']:.3f}")
        if "lookup_px" in rows:
            print(f"   the lookup looked {rows['lookup_px']['median']:.2f} / {rows['lookup_px']['mean']:.2f} px from the "
                  "true projection")
    if args.json:
        record = {"command": f"python -m st4r_lite.studies.lookup_ceiling {args.checkpoint} --num-clips {args.num_clips} "
                             f"--far {args.far} --json {args.json}" + shift_flags(args.shift),
                  "checkpoint": args.checkpoint, "world_shift": world_shift, "frames": 16, "far": args.far,
                  "seed": HELDOUT_SEED, "seconds": round(time.perf_counter() - start, 1), "errors_m": result}
        with atomic_write(Path(args.json), "w") as fh:
            fh.write(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
