"""How much of the objects' motion does a checkpoint predict, and can the network learn it at all?

Dimension letters: T frames, H, W image rows / columns, M moving (pixel, frame) samples.

The moving-point targets need the track head to move an object's anchor pixels to where the object is at time
t. The scorecard says whether the tracks beat "nothing moves"; this probe says why not, by fitting the predicted
*motion* to the true one on the moving pixels of the anchor frame, in ground-truth units:

    m̂_t = s · (track_t − track_0),   m_t = gt_t − gt_0,   t ≥ 1,  pixels with track_dynamic,
    s = median-scale(track_0 → gt_0)   (one scale per clip, as the metric's median alignment)

    R² = 1 − Σ‖m̂ − m‖² / Σ‖m‖²   (1 = perfect motion; 0 = "nothing moves"; < 0 = worse than nothing),
    cos = mean cosine between m̂ and m,   ratio = Σ‖m̂‖ / Σ‖m‖ (predicted / true motion length).

Two measurements, on purpose side by side:

- ``heldout``: every checkpoint on clips never seen in training (the scorecard's clips): what it learned.
- ``overfit``: a copy of the first checkpoint trained on *one* fixed batch with the plain pretraining loss
  (``train.losses.PretrainLoss``) for ``--overfit-steps`` steps, probed on that batch as it trains (can the
  architecture represent the motion?) and on the held-out clips afterwards (did it learn a rule, or the batch?).

A high ``overfit`` R² next to a held-out R² near 0 says the network can express object motion but has not learned
to find the object in frame t from the images (correspondence) with the pairs it has seen: a matter of data and
compute (or of a design that makes correspondence easier to learn), not of the heads or the loss.

``python -m st4r_lite.studies.motion_probe data/tiny.pt --json data/motion_probe.json`` (about 4 minutes on a
2-core CPU; add training checkpoints after it to compare them).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from einops import rearrange

from st4r_lite.errors import InputError
from st4r_lite.geometry.track_metrics import median_scale
from st4r_lite.model.network import build_model
from st4r_lite.model.pairs import PairRunner, predict_video
from st4r_lite.runtime import atomic_write
from st4r_lite.train.correspondence import (
    AttentionRecorder,
    patch_correspondence,
    token_dynamic,
    within_one_token,
)
from st4r_lite.train.heldout import HELDOUT_SEED
from st4r_lite.train.loop import TRAIN_SEED_BASE, clip_pairs, weights_of
from st4r_lite.train.losses import PretrainLoss
from st4r_lite.world.render import generate_clips
from st4r_lite.world.scene import add_shift_argument, parse_shift

OVERFIT_SEED = TRAIN_SEED_BASE + 123_456   # a clip from the training range, never a held-out one
OVERFIT_FRAMES, OVERFIT_GAP = 8, 2.0       # one batch: 2 clips x 8 frames = 16 pairs, frames 2 time units apart


def motion_fit(pred_tracks: torch.Tensor, gt_tracks: torch.Tensor, moving: torch.Tensor) -> dict[str, float]:
    """Fit of the predicted motion to the true one on the moving pixels (module docstring).

    pred_tracks: (T, H, W, 3) the prediction's frame-0 pixels at every t (its own scale); gt_tracks: (T, H, W, 3)
    metres (NaN where unknown); moving: (H, W) bool. Returns {"r2", "cos", "ratio", "samples"}.

    >>> gt = torch.rand(3, 2, 2, 3); moving = torch.ones(2, 2, dtype=torch.bool)
    >>> motion_fit(gt * 2, gt, moving)["r2"]                        # a global scale is no motion error
    1.0
    >>> motion_fit(gt[:1].expand(3, 2, 2, 3) * 2, gt, moving)["r2"]  # "nothing moves"
    0.0
    """
    if pred_tracks.shape != gt_tracks.shape or pred_tracks.shape[-1] != 3 or pred_tracks.ndim != 4:
        raise ValueError(f"pred_tracks and gt_tracks must both be (T, H, W, 3), got {tuple(pred_tracks.shape)} "
                         f"and {tuple(gt_tracks.shape)}")
    if moving.shape != pred_tracks.shape[1:3]:
        raise ValueError(f"moving must be (H, W) = {tuple(pred_tracks.shape[1:3])}, got {tuple(moving.shape)}")
    pred, gt = pred_tracks.double(), gt_tracks.double()
    s = median_scale(pred[0], gt[0])
    m_pred = s * (pred[1:] - pred[:1])                               # (T-1, H, W, 3)
    m_true = gt[1:] - gt[:1]
    ok = moving[None] & torch.isfinite(m_true).all(-1) & torch.isfinite(m_pred).all(-1)
    mp, mt = m_pred[ok], m_true[ok]                                  # (M, 3)
    if len(mt) == 0:
        return {"r2": float("nan"), "cos": float("nan"), "ratio": float("nan"), "samples": 0}
    norm_t = mt.norm(dim=-1)
    has = norm_t > 1e-9
    cos = torch.nn.functional.cosine_similarity(mp[has], mt[has], dim=-1).mean() if has.any() else torch.nan
    denom = (mt ** 2).sum()
    return {"r2": round(float(1 - ((mp - mt) ** 2).sum() / denom), 4) if denom > 0 else float("nan"),
            "cos": round(float(cos), 4),
            "ratio": round(float(mp.norm(dim=-1).sum() / norm_t.sum().clamp_min(1e-12)), 4),
            "samples": int(len(mt))}


def _pooled(fits: list[dict]) -> dict[str, float]:
    """Mean of per-clip fits weighted by their sample counts (clips without moving pixels skipped)."""
    fits = [f for f in fits if f["samples"]]
    n = sum(f["samples"] for f in fits)
    if not n:
        return {"r2": float("nan"), "cos": float("nan"), "ratio": float("nan"), "samples": 0}
    return {**{k: round(sum(f[k] * f["samples"] for f in fits) / n, 4) for k in ("r2", "cos", "ratio")},
            "samples": n}


@torch.no_grad()
def probe_heldout(model, clips) -> dict[str, float]:
    """Motion fit of ``model`` pooled over every clip of a ``world.Clip`` batch (rgb (B, T, 3, H, W))."""
    fits = []
    for b in range(clips.rgb.shape[0]):
        out = predict_video(model, clips.rgb[b] * 2 - 1)
        fits.append(motion_fit(out.track, clips.track_world[b], clips.track_dynamic[b]))
    return _pooled(fits)


def motion_measure(track: torch.Tensor, clip) -> dict[str, float]:
    """The pooled motion fit {"r2", "cos", "ratio"} of track maps (B, S, H, W, 3) of a ``world.Clip``'s pairs."""
    fit = _pooled([motion_fit(track[b], clip.track_world[b], clip.track_dynamic[b]) for b in range(track.shape[0])])
    return {k: fit[k] for k in ("r2", "cos", "ratio")}


def overfit_one_batch(model, steps: int, heldout=None, lr: float = 3e-4, every: int = 25,
                      seed: int = OVERFIT_SEED, measure=motion_measure, loss_fn: PretrainLoss | None = None) -> dict:
    """Train a *copy* of ``model`` on one fixed batch (2 clips x 8 frames) with ``loss_fn`` (default
    ``PretrainLoss()``, the released recipe's loss); returns
    {"curve": [{"step", **measure(track maps (B, S, H, W, 3), clip)} on that batch], "heldout_after": the motion
    fit on ``heldout`` clips (None without)}. The model passed in is left untouched."""
    if steps < 0:
        raise InputError(f"--overfit-steps must be >= 0, got {steps}")
    net = copy.deepcopy(model).float().train()
    for p in net.parameters():
        p.requires_grad_(True)
    runner, loss_fn = PairRunner(net), (PretrainLoss() if loss_fn is None else loss_fn)
    H, W = net.config.img_size
    clip = generate_clips(2, frames=OVERFIT_FRAMES, height=H, width=W, domain="pretrain", seed=seed,
                          frame_gap=OVERFIT_GAP)
    device = next(net.parameters()).device
    frames, targets = clip_pairs(clip)
    frames, targets = frames.to(device), targets.to(device)
    opt = torch.optim.AdamW([p for n, p in net.named_parameters() if not n.startswith("sigma_head")], lr=lr,
                            weight_decay=0.0)
    curve = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for step in range(steps + 1):
            if step % every == 0 or step == steps:
                with torch.no_grad():
                    net.eval()
                    track = rearrange(runner(frames).track.float().cpu(), "(b s) h w c -> b s h w c",
                                      s=OVERFIT_FRAMES)
                    net.train()
                curve.append({"step": step, **measure(track, clip)})
            if step == steps:
                break
            terms = loss_fn(runner(frames), targets, frames=OVERFIT_FRAMES)
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.8)
            opt.step()
    net.eval()
    return {"batch": {"seed": seed, "clips": 2, "frames": OVERFIT_FRAMES, "frame_gap": OVERFIT_GAP, "lr": lr},
            "curve": curve, "heldout_after": probe_heldout(net, heldout) if heldout is not None else None}


@torch.no_grad()
def attention_correspondence(model, clips, others: tuple[int, ...] = (1, 4, 8, 15)) -> list[dict]:
    """Does the track branch's cross-attention look where an anchor patch went?

    For pairs (0, k), k in ``others``, every anchor token i (patch centre pixel) whose surface point is visible in
    frame k has a true correspondent token j* (its projection by the true camera k). Per decoder layer l of branch
    1 (the track branch), with A_l = softmax(q kᵀ / √dh) of its cross-attention averaged over heads (B, N, M):

        hit      = mean over tokens of [argmax_j A_l[i, j] == j*]
        hit_near = the same within one token (Chebyshev distance ≤ 1); best_head_hit: ``hit`` of the best head alone
        moved    = hit on the tokens whose correspondent left the anchor position (j* ≠ i) and lie on a moving
                   object: does attention follow the object?

    next to the baselines "same position" (the share of tokens with j* = i) and chance (1 / M). Returns one dict
    per layer {"layer", "hit", "hit_near", "moved_hit", "moved_tokens", "same_position", "best_head_hit", "chance"}.
    """
    p = model.config.patch_size
    B, T, _, H, W = clips.rgb.shape
    if max(others) >= T:
        raise InputError(f"frames {others} need clips of more than {max(others)} frames, got {T}")
    h, w = H // p, W // p
    targets, visible, same = patch_correspondence(clips, p)            # (B, T, N) each
    dynamic = token_dynamic(clips, p)                                  # (B, N)
    recorder = AttentionRecorder(model.dec_blocks, grad_only=False)
    stats = [dict(hit=0, near=0, moved_hit=0, moved=0, same=0, n=0, head_hit=0) for _ in model.dec_blocks]
    try:
        for b in range(B):
            for k in others:
                model(clips.rgb[b, :1] * 2 - 1, clips.rgb[b, k:k + 1] * 2 - 1)
                target, ok = targets[b, k], visible[b, k]                      # (N,) j*, visible in frame k
                moving = dynamic[b] & ~same[b, k] & ok
                for layer, (mod, (query, key, _, qpos, kpos)) in enumerate(recorder.take()):
                    q, kk = mod.queries_keys(query, key, qpos, kpos)
                    heads = torch.softmax(q @ kk.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)[0]   # (nh, N, M)
                    st = stats[layer]
                    st["head_hit"] = st["head_hit"] + ((heads.argmax(-1) == target) & ok).sum(-1)  # (nh,)
                    best = heads.mean(0).argmax(-1)
                    hit = best == target
                    near = within_one_token(best, target, w)
                    for key, mask in (("hit", hit & ok), ("near", near & ok), ("moved_hit", hit & moving),
                                      ("moved", moving), ("same", same[b, k] & ok), ("n", ok)):
                        st[key] += int(mask.sum())
    finally:
        recorder.close()
    return [{"layer": i + 1, "hit": round(st["hit"] / max(st["n"], 1), 4), "hit_near": round(st["near"] / max(st["n"], 1), 4),
             "moved_hit": round(st["moved_hit"] / st["moved"], 4) if st["moved"] else float("nan"),
             "moved_tokens": st["moved"], "same_position": round(st["same"] / max(st["n"], 1), 4),
             "best_head_hit": round(float(st["head_hit"].max()) / max(st["n"], 1), 4),
             "chance": round(1 / (h * w), 4)} for i, st in enumerate(stats)]


def load_any(spec: str):
    """A model from a training checkpoint (``runs/*.pt``, float32 as trained) or anything ``resolve.load`` reads."""
    state, config = weights_of(spec)
    model = build_model(config)
    model.load_state_dict(state)
    return model.float().eval()


def motion_probe(checkpoints: list[str], *, num_clips: int = 8, frames: int = 16, overfit_steps: int = 150,
                 seed: int = HELDOUT_SEED, shift: dict | None = None) -> dict:
    """The JSON-ready probe: held-out fit of every checkpoint, then the first one's one-batch overfit
    (``shift``: a candidate world's changed DomainConfig fields, for the held-out clips)."""
    if not checkpoints:
        raise InputError("give at least one checkpoint (e.g. data/tiny.pt)")
    models = {spec: load_any(spec) for spec in checkpoints}
    first = models[checkpoints[0]]
    H, W = first.config.img_size
    clips = generate_clips(num_clips, frames=frames, height=H, width=W, domain="pretrain", seed=seed, shift=shift)
    held = {spec: probe_heldout(m, clips) for spec, m in models.items()}
    return {"settings": {"domain": "pretrain", "world_shift": shift or {}, "num_clips": num_clips, "frames": frames, "seed": seed,
                         "image_hw": [H, W], "moving": "track_dynamic (on an object, moves > 5 cm)",
                         "scale": "median-scale(track_0 -> gt_0) per clip"},
            "heldout": held,
            "attention": attention_correspondence(first, clips),
            "overfit": {"checkpoint": checkpoints[0], **overfit_one_batch(first, overfit_steps, heldout=clips)}}


def format_probe(result: dict) -> str:
    lines = ["held-out clips: predicted vs true motion of the moving pixels (R² 1 = perfect, 0 = nothing moves)"]
    for spec, f in result["heldout"].items():
        lines.append(f"  {spec:40s} R² {f['r2']:+.3f}  cos {f['cos']:+.3f}  length ratio {f['ratio']:.2f}")
    if result.get("attention"):
        lines.append(f"cross-attention of the track branch ({list(result['heldout'])[0]}): does it look where the "
                     "anchor patch went in frame k?")
        for a in result["attention"]:
            lines.append(f"  layer {a['layer']}: argmax on the true token {a['hit']:.2f} (within one {a['hit_near']:.2f}; "
                         f"best head {a['best_head_hit']:.2f}; moved object tokens {a['moved_hit']:.2f} of {a['moved_tokens']}); "
                         f"same position {a['same_position']:.2f}, chance {a['chance']:.3f}")
    o = result["overfit"]
    lines.append(f"one fixed batch, {o['checkpoint']} trained on it (plain pretraining loss):")
    for c in o["curve"]:
        lines.append(f"  step {c['step']:4d}  R² {c['r2']:+.3f}  cos {c['cos']:+.3f}  length ratio {c['ratio']:.2f}")
    if o["heldout_after"] is not None:
        h = o["heldout_after"]
        lines.append(f"  afterwards on the held-out clips: R² {h['r2']:+.3f}  cos {h['cos']:+.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.motion_probe", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="model files or training checkpoints; the first is overfitted")
    ap.add_argument("--num-clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--overfit-steps", type=int, default=150)
    ap.add_argument("--json", type=Path, help="write the result here")
    add_shift_argument(ap)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = motion_probe(args.checkpoints, num_clips=args.num_clips, frames=args.frames,
                          overfit_steps=args.overfit_steps, shift=parse_shift(args.shift) or None)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["command"] = "python -m st4r_lite.studies.motion_probe " + " ".join(sys.argv[1:] if argv is None else argv)
    print(format_probe(result))
    if args.json:
        with atomic_write(args.json, "w") as fh:
            fh.write(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
