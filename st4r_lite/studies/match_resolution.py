"""Is "which token did this patch go to?" answerable on the tiny preset's token grid? The object motion in pixels,
and how well plain matchers find the true token.

Dimension letters: B clips, T frames, H image rows, W image columns, N anchor tokens (h·w, h = H/p, w = W/p for
patch size p), C feature channels.

To track a moving object the track branch must find, in frame k, where each anchor patch went (the correspondence
``train.correspondence`` supervises). On held-out pretrain clips this study measures two things:

    object shift   ‖π_k(X_i(t_k)) − π_k(X_i(t_0))‖ over the moving anchor pixels i visible in frame k: the pixels
                   an object's point moves in the image because *it* moved (camera motion taken out by projecting
                   the point's frame-0 position with the same camera k); also in tokens (÷ p) and in metres (3D)
    token matching for every anchor token (patch-centre pixel) visible in frame k, the token j chosen by
                   same_position   j = i (nothing moved)
                   rgb_patch       nearest p×p×3 pixel patch of frame k (L2)
                   encoder         nearest encoder token of frame k (cosine) of the checkpoint
                   lookup          (checkpoints with ``ModelConfig.match_track``) the matched tracking's most likely
                                   token; its gate (how much of the track it reads from the lookup) is averaged
                                   over the same tokens (``gate``, ``moved_gate``)
                   against the true token j* (``patch_correspondence``): ``hit`` = [j == j*], ``near`` = within one
                   token (Chebyshev); ``moved_*`` on the tokens of moving objects whose j* ≠ i (as
                   ``motion_probe.attention_correspondence`` counts them, so the trained attention's hit rates
                   recorded there compare directly)

If objects shift by about a token over many frames and the raw pixels, the encoder and the trained attention all
find the true token about as rarely, token-level matching is what makes following objects hard on this grid (not
a proof that a learned matcher could not do better): the motion has to be read below one token.

    python -m st4r_lite.studies.match_resolution --checkpoint data/tiny.pt --json data/match_resolution.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from st4r_lite.model import resolve
from st4r_lite.runtime import atomic_write
from st4r_lite.train.correspondence import patch_correspondence, token_dynamic, within_one_token
from st4r_lite.train.heldout import heldout_clips
from st4r_lite.world.render import project_tracks
from st4r_lite.world.scene import add_shift_argument, parse_shift, shift_flags

__all__ = ["object_shift", "token_matching", "MATCHERS", "main"]

OTHERS = (1, 4, 8, 15)
MATCHERS = ("same_position", "rgb_patch", "encoder")


def object_shift(clips, others=OTHERS) -> list[dict]:
    """Per frame k: the image motion of moving anchor points due to their own motion (module docstring).
    clips: a ``world.Clip`` (rgb (B, T, 3, H, W)). Returns [{"frame", "px_median", "px_p90", "m_median",
    "m_p90", "points"}]."""
    frozen = replace(clips, track_world=clips.track_world[:, :1].expand_as(clips.track_world))
    uv, _, inside = project_tracks(clips)                              # (B, T, H, W, 2), -, (B, T, H, W)
    uv_frozen, z_frozen, _ = project_tracks(frozen)                   # may fall outside the image: still a shift
    rows = []
    for k in others:
        sel = (inside & clips.track_visible & (z_frozen > 1e-6))[:, k] & clips.track_dynamic      # (B, H, W)
        if not sel.any():
            nan = float("nan")
            rows.append({"frame": k, "px_median": nan, "px_p90": nan, "m_median": nan, "m_p90": nan, "points": 0})
            continue
        px = (uv[:, k] - uv_frozen[:, k])[sel].norm(dim=-1)
        m = (clips.track_world[:, k] - clips.track_world[:, 0])[sel].norm(dim=-1)
        rows.append({"frame": k, "px_median": round(float(px.median()), 2), "px_p90": round(float(px.quantile(0.9)), 2),
                     "m_median": round(float(m.median()), 3), "m_p90": round(float(m.quantile(0.9)), 3),
                     "points": int(sel.sum())})
    return rows


def _choices(model, clips, b: int, k: int, feats: torch.Tensor) -> dict[str, torch.Tensor]:
    """Token j (N,) chosen by each matcher for the anchor tokens of pair (0, k) of clip b; feats (T, N, C)."""
    p = model.config.patch_size
    patches = lambda img: rearrange(img, "c (h p) (w q) -> (h w) (c p q)", p=p, q=p)  # noqa: E731
    a, o = patches(clips.rgb[b, 0].float()), patches(clips.rgb[b, k].float())
    fa, fo = F.normalize(feats[0], dim=-1), F.normalize(feats[k], dim=-1)
    return {"same_position": torch.arange(a.shape[0]), "rgb_patch": torch.cdist(a, o).argmin(-1),
            "encoder": (fa @ fo.T).argmax(-1)}


def _lookup(model, clips, b: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The matched tracking's chosen token (N,) and its mean gate per token (N,) for pair (0, k) of clip b."""
    gates: list[torch.Tensor] = []
    hook = model.match_track.gate.register_forward_hook(lambda _m, _a, out: gates.append(torch.sigmoid(out)))
    try:
        dbg = model.forward_debug(clips.rgb[b, :1].float() * 2 - 1, clips.rgb[b, k:k + 1].float() * 2 - 1)
    finally:
        hook.remove()
    h, w = clips.rgb.shape[-2] // model.config.patch_size, clips.rgb.shape[-1] // model.config.patch_size
    logits = model.match_track.match_logits(dbg.dec1, dbg.dec2, (h, w))      # (1, N, M)
    return logits[0].argmax(-1), gates[0][0].mean(-1)


@torch.no_grad()
def token_matching(model, clips, others=OTHERS) -> dict[str, dict]:
    """Hit rates of the matchers (module docstring) over pairs (0, k), k in ``others``. Returns {matcher: {"hit",
    "near", "moved_hit", "moved_near", "tokens", "moved_tokens"}}."""
    p = model.config.patch_size
    B, T, _, H, W = clips.rgb.shape
    assert max(others) < T, f"frames {others} need clips of more than {max(others)} frames, got {T}"
    w = W // p
    targets, visible, same = patch_correspondence(clips, p)            # (B, T, N) each
    dynamic = token_dynamic(clips, p)                                  # (B, N)
    lookup = bool(getattr(model.config, "match_track", 0))
    names = MATCHERS + (("lookup",) if lookup else ())
    counts = {name: dict(hit=0, near=0, moved_hit=0, moved_near=0, tokens=0, moved_tokens=0) for name in names}
    gate_sum = dict(gate=0.0, moved_gate=0.0)
    for b in range(B):
        feats, _ = model.encode(clips.rgb[b].float() * 2 - 1)          # (T, N, C)
        for k in others:
            target, ok = targets[b, k], visible[b, k]
            moving = dynamic[b] & ~same[b, k] & ok
            choices = _choices(model, clips, b, k, feats)
            if lookup:
                choices["lookup"], gate = _lookup(model, clips, b, k)
                gate_sum["gate"] += float(gate[ok].sum())
                gate_sum["moved_gate"] += float(gate[moving].sum())
            for name, j in choices.items():
                hit = j == target
                near = within_one_token(j, target, w)
                c = counts[name]
                for key, mask in (("hit", hit & ok), ("near", near & ok), ("moved_hit", hit & moving),
                                  ("moved_near", near & moving), ("tokens", ok), ("moved_tokens", moving)):
                    c[key] += int(mask.sum())
    out = {}
    for name, c in counts.items():
        rate = lambda n, d: round(n / d, 4) if d else float("nan")  # noqa: E731
        out[name] = {"hit": rate(c["hit"], c["tokens"]), "near": rate(c["near"], c["tokens"]),
                     "moved_hit": rate(c["moved_hit"], c["moved_tokens"]),
                     "moved_near": rate(c["moved_near"], c["moved_tokens"]),
                     "tokens": c["tokens"], "moved_tokens": c["moved_tokens"]}
        if name == "lookup":
            out[name].update(gate=rate(gate_sum["gate"], c["tokens"]),
                             moved_gate=rate(gate_sum["moved_gate"], c["moved_tokens"]))
    return out


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.match_resolution [--checkpoint data/tiny.pt] [--json OUT]``."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.match_resolution",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="data/tiny.pt", help=resolve.SPEC_HELP)
    ap.add_argument("--num-clips", type=int, default=8, help="held-out pretrain clips (motion_probe uses 8)")
    ap.add_argument("--json", default=None, help="write the record here (atomically)")
    add_shift_argument(ap)
    args = ap.parse_args(argv)
    if args.num_clips < 1:
        ap.error("--num-clips must be >= 1")
    start = time.perf_counter()
    model = resolve.load(args.checkpoint).float().eval()
    world_shift = parse_shift(args.shift)
    clips = heldout_clips(model.config, num_clips=args.num_clips, frames=16, shift=world_shift or None)
    shift, matching = object_shift(clips), token_matching(model, clips)
    p = model.config.patch_size
    for r in shift:
        print(f"frame {r['frame']:2d}: moving points shift {r['px_median']:5.1f} px median ({r['px_median'] / p:.2f} "
              f"tokens; p90 {r['px_p90']:.1f} px) by their own motion; {r['m_median']:.3f} m in 3D")
    for name, m in matching.items():
        gate = f" | gate {m['gate']:.3f}, moved {m['moved_gate']:.3f}" if "gate" in m else ""
        print(f"{name:14s} hit {m['hit']:.3f} near {m['near']:.3f} | moved object tokens ({m['moved_tokens']}): "
              f"hit {m['moved_hit']:.3f} near {m['moved_near']:.3f}{gate}")
    if args.json:
        record = {"command": f"python -m st4r_lite.studies.match_resolution --checkpoint {args.checkpoint} "
                             f"--num-clips {args.num_clips} --json {args.json}"
                             + shift_flags(args.shift),
                  "world_shift": world_shift,
                  "checkpoint": args.checkpoint, "patch_size": p, "image_hw": list(model.config.img_size), "frames": 16,
                  "pairs": [[0, k] for k in OTHERS], "seconds": round(time.perf_counter() - start, 1),
                  "object_shift": shift, "token_matching": matching}
        with atomic_write(Path(args.json), "w") as fh:
            fh.write(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
