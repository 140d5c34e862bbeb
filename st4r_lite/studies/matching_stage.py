"""Matching as its own stage: the encoder taught the world's exact token correspondences, then measured.

Dimension letters: B clips, S frames per clip, N tokens (h · w), C encoder width.

DUSt3R-family networks learn to match before they learn pointmaps (CroCo's cross-view completion); the tiny preset
never did, and neither its decoder attention nor a matching loss on one attention head learned where a *moved*
object patch went (README "Results"). This study asks the question one level down: can the encoder's own token
features learn it, when matching is the only objective? For the pair (anchor 0, frame k) of a clip and anchor
token i, with j*(i, k) its true correspondent (``train.correspondence.patch_correspondence``) and ê the
L2-normalised encoder tokens,

    L_i,k  = −log softmax_j(ê_0,i · ê_k,j / τ)[j*(i, k)]                      (τ = 0.1; visible points only)
    L_feat = mean over k ≥ 1 of  ( mean_i L_i,k  +  w_moved · mean over moved object tokens L_i,k )

where a moved object token lies on a moving object (``token_dynamic``) and its true token is not its own
position — the tokens every earlier matcher missed. Only the encoder trains (patch embedding, encoder blocks,
encoder norm); decoders and heads are written back unchanged, so ``--out`` is a whole model that ``st4r-lite
pretrain --init`` can continue from. Before and after, ``match_resolution.token_matching`` scores the encoder's
nearest-token matcher on the held-out clips (world v2, and the candidate world when ``--shift`` is given).

``python -m st4r_lite.studies.matching_stage --init data/tiny.pt --steps 600 --out runs/enc.pt --json OUT``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from st4r_lite.model import resolve
from st4r_lite.model.checkpoint import save_checkpoint
from st4r_lite.runtime import atomic_write
from st4r_lite.studies.match_resolution import token_matching
from st4r_lite.train.correspondence import patch_correspondence, token_dynamic
from st4r_lite.train.heldout import HELDOUT_SEED
from st4r_lite.train.loop import TRAIN_SEED_BASE
from st4r_lite.world.render import generate_clips
from st4r_lite.world.scene import add_shift_argument, parse_shift

ENCODER_PREFIXES = ("patch_embed.", "enc_blocks.", "enc_norm.")
SEED_OFFSET = 700_000_000  # this stage's training clips: TRAIN_SEED_BASE + offset + counter (no held-out seed)


def feature_match_loss(feats: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, moved: torch.Tensor,
                       tau: float = 0.1, moved_weight: float = 1.0) -> torch.Tensor:
    """L_feat of the module docstring for B clips.

    feats (B, S, N, C) encoder tokens; target (B, S, N) int64 true token in frame k; valid (B, S, N) bool;
    moved (B, S, N) bool (moved object tokens). Frame 0 (the self-pair) is left out. Returns a scalar.

    >>> f = F.normalize(torch.randn(1, 2, 6, 8), dim=-1); t = torch.arange(6).expand(1, 2, 6)
    >>> v = torch.ones(1, 2, 6, dtype=torch.bool); m = torch.zeros_like(v)
    >>> f[:, 1] = f[:, 0]; float(feature_match_loss(f, t, v, m, tau=0.01)) < 1e-3   # identical frames: matched
    True
    """
    assert feats.ndim == 4 and target.shape == valid.shape == moved.shape == feats.shape[:3], \
        f"feats (B, S, N, C) with target/valid/moved (B, S, N); got {tuple(feats.shape)}, {tuple(target.shape)}"
    e = F.normalize(feats.float(), dim=-1)
    logits = torch.einsum("bnc,bsmc->bsnm", e[:, 0], e[:, 1:]) / tau            # (B, S-1, N, N)
    nll = F.cross_entropy(rearrange(logits, "b s n m -> (b s n) m"), target[:, 1:].reshape(-1),
                          reduction="none").reshape(target[:, 1:].shape)          # (B, S-1, N)
    v, m = valid[:, 1:], valid[:, 1:] & moved[:, 1:]
    loss = (nll * v).sum() / v.sum().clamp_min(1)
    if moved_weight and m.any():
        loss = loss + moved_weight * (nll * m).sum() / m.sum()
    return loss


def _clip_labels(clip, patch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """target, valid, moved (B, S, N) of a Clip (moved: on a moving object and not at its own token)."""
    target, valid, same = patch_correspondence(clip, patch)
    moved = token_dynamic(clip, patch)[:, None] & ~same
    return target, valid, moved


def train_encoder(model, *, steps: int, batch: int = 2, frames: int = 8, lr: float = 1e-4, tau: float = 0.1,
                  moved_weight: float = 1.0, max_frame_gap: float = 4.0, shift: dict | None = None,
                  log_every: int = 50, seed: int = 0) -> list[dict]:
    """Train ``model``'s encoder in place on L_feat (AdamW, cosine decay, frame gaps uniform in [1, max_frame_gap]).
    Returns the loss curve [{"step", "loss"}] (mean of each ``log_every`` steps)."""
    H, W = model.config.img_size
    p = model.config.patch_size
    params = [prm for name, prm in model.named_parameters() if name.startswith(ENCODER_PREFIXES)]
    for name, prm in model.named_parameters():
        prm.requires_grad_(name.startswith(ENCODER_PREFIXES))
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    curve, window = [], []
    model.train()
    for step in range(steps):
        gap = 1.0 + (max_frame_gap - 1.0) * float(torch.rand((), generator=gen))
        clip = generate_clips(batch, frames=frames, height=H, width=W, domain="pretrain",
                              seed=TRAIN_SEED_BASE + SEED_OFFSET + seed * 1_000_000 + step * batch,
                              frame_gap=gap, shift=shift)
        target, valid, moved = _clip_labels(clip, p)
        feats, _ = model.encode(rearrange(clip.rgb.float() * 2 - 1, "b s c h w -> (b s) c h w"))
        loss = feature_match_loss(rearrange(feats, "(b s) n c -> b s n c", b=batch), target, valid, moved,
                                  tau=tau, moved_weight=moved_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        window.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "loss": round(sum(window) / len(window), 4)})
            window = []
    for prm in model.parameters():
        prm.requires_grad_(True)
    model.eval()
    return curve


def encoder_matching(model, shift: dict | None, num_clips: int = 8) -> dict:
    """The encoder's nearest-token matcher (and the plain ones) on the held-out clips: token_matching's rates."""
    H, W = model.config.img_size
    clips = generate_clips(num_clips, frames=16, height=H, width=W, domain="pretrain", seed=HELDOUT_SEED,
                           shift=shift)
    return token_matching(model, clips)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.matching_stage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", default="data/tiny.pt", help="the model whose encoder trains: " + resolve.SPEC_HELP)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--moved-weight", type=float, default=1.0)
    ap.add_argument("--max-frame-gap", type=float, default=4.0)
    ap.add_argument("--out", default=None, help="write the model with the trained encoder here")
    ap.add_argument("--json", default=None, help="write the record here (atomically)")
    add_shift_argument(ap, "train on a candidate world (the record scores both worlds)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.frames < 2 or args.tau <= 0 or args.lr <= 0:
        ap.error("need --steps, --batch ≥ 1, --frames ≥ 2, --tau and --lr > 0")
    shift = parse_shift(args.shift) or None
    torch.manual_seed(0)
    model = resolve.load(args.init).float().eval()
    worlds = {"v2": None, **({"candidate": shift} if shift else {})}
    before = {w: encoder_matching(model, s) for w, s in worlds.items()}
    t0 = time.perf_counter()
    curve = train_encoder(model, steps=args.steps, batch=args.batch, frames=args.frames, lr=args.lr, tau=args.tau,
                          moved_weight=args.moved_weight, max_frame_gap=args.max_frame_gap, shift=shift)
    seconds = round(time.perf_counter() - t0, 1)
    after = {w: encoder_matching(model, s) for w, s in worlds.items()}
    for w in worlds:
        for when, rates in (("before", before[w]), ("after", after[w])):
            e = rates["encoder"]
            print(f"{w:9s} {when:6s} encoder: true token {e['hit']:.3f} (within one {e['near']:.3f}); moved object "
                  f"tokens {e['moved_hit']:.3f} (within one {e['moved_near']:.3f}) of {e['moved_tokens']}")
    print(f"loss {curve[0]['loss']} -> {curve[-1]['loss']} in {args.steps} steps, {seconds} s")
    if args.out:
        save_checkpoint(args.out, model, matching_stage={"init": args.init, "steps": args.steps})
    if args.json:
        record = {"command": "python -m st4r_lite.studies.matching_stage " + " ".join(
                      sys.argv[1:] if argv is None else argv),
                  "settings": {k: v for k, v in vars(args).items() if k not in ("json", "out")},
                  "train_seconds": seconds, "curve": curve, "before": before, "after": after}
        with atomic_write(Path(args.json), "w") as fh:
            fh.write(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
