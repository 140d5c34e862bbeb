"""Where the anchor frame puts each object: a per-object depth offset, or a wrong shape?

Dimension letters: B clips, H W image rows / columns, P anchor pixels.

The moving-point targets are capped by the anchor geometry of moving objects (the scorecard's ``oracle_motion``
row moves the model's own frame-0 points by the true motion and still misses them). This study splits the anchor's
depth error on objects into a placement and a shape part. For every object o of each held-out clip (its anchor
pixels, ≥ ``min_pixels``), with e = log z_pred − log z_gt per pixel of the self-pair (0, 0),

    offset_o   = median over o's pixels of e, after one median scale per clip (``geometry.track_metrics``,
                 as the evaluation aligns), > 0 = the object is placed too far;
    room_o     = median over o's pixels of log z_pred − (a + b · log z_gt), (a, b) the least-squares fit on the
                 clip's room pixels: the offset against the room's own depth map (a depth range that is merely
                 compressed, b < 1, does not count here);
    shape_o    = median over o's pixels of |e − offset_o|: what is left once the object is moved to its depth;
    interior_o = offset_o over o's pixels at least ``INTERIOR_PX`` pixels inside its outline (no room pixel within
                 that distance): an offset that is only a blur of the room behind the object's edge leaves it ≈ 0;
    near_o     = log(z_gt of o / median z_gt of the clip's room pixels): how far in front of the room it stands
                 (< 0 for nearly every object of this world).

``shrink`` (of a group of objects) is the least-squares slope of room_o against near_o (room_o: free of the clip's
alignment and of a compressed depth range, which the room's own fit absorbs): 0 when the placement
error does not depend on where the object is, < 0 when objects are pulled toward the room's depth (the nearer an
object, the farther back it is placed: a prior that under-uses the object's own cues), −1 when every object is put
at the room's median depth.

for the track head's anchor (``track``, what tracks start from) and the recon head's frame 0 (``recon``), with
the median confidence each head gives room and object pixels (``confidence_medians``: how hard the confidence
loss lets their errors pull). A
placement error is one number per object, a shape error is per pixel: they call for different fixes. Objects that
reach the image's bottom row (``contact_cut``) stand on the floor out of view: the floor cannot tell their depth.

    python -m st4r_lite.studies.object_placement data/tiny.pt --overfit-steps 150 --json data/object_placement.json

``--overfit-steps N`` also trains a copy on one fixed batch (``studies.motion_probe.overfit_one_batch``) and
follows its objects' placement, with the loss of the shipped recipe's later stages (no dynamic reweighting, motion
weight 3): if it goes right there, the network can place objects and has not learned to.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from st4r_lite.geometry.track_metrics import median_scale
from st4r_lite.model import resolve
from st4r_lite.model.pairs import PairRunner
from st4r_lite.runtime import atomic_write
from st4r_lite.studies.motion_probe import overfit_one_batch
from st4r_lite.train.heldout import HELDOUT_SEED, anchor_points, heldout_clips
from st4r_lite.train.losses import PretrainLoss
from st4r_lite.world.scene import add_shift_argument, parse_shift, shift_flags

__all__ = ["object_offsets", "shrink_slope", "summarise", "placement", "placement_measure", "confidence_medians", "main"]

HEADS = ("track", "recon")
SHRINK_RESAMPLES = 1000   # bootstrap resamples of the shrink slope's interval
SHRINK_MIN_OBJECTS = 10   # fewer objects: no interval (resamples whose `near` values all agree have no slope)
INTERIOR_PX = 3     # an interior pixel has no other object's or room pixel within 3 px (a 7 × 7 window)
OVERFIT_LR = 1e-4   # the one-batch fit trains with the loss of the shipped recipe's later stages (no dynamic
                    # reweighting, motion weight 3) at half their peak learning rate


def object_offsets(pred: torch.Tensor, gt: torch.Tensor, object_id: torch.Tensor, min_pixels: int = 4
                   ) -> tuple[list[dict], dict]:
    """Per-object placement of one anchor pointmap.

    pred, gt (H, W, 3) frame-0 points in the anchor camera; object_id (H, W) int, 0 = room. Returns
    ([{"object", "pixels", "offset", "room", "shape", "interior", "near", "z", "cut"}] per object with ≥ ``min_pixels``
    valid pixels (``interior`` None when it has fewer than 3 interior pixels),
    {"room_abs_err", "room_slope"}) (module docstring; logs of depths, float64); ``cut``: the object reaches the image's
    bottom row, so where it stands on the floor is out of view.

    >>> gt = torch.zeros(4, 6, 3); gt[..., 2] = torch.linspace(2, 6, 24).view(4, 6)
    >>> oid = torch.zeros(4, 6, dtype=torch.long); oid[1:3, 1:3] = 1
    >>> pred = gt.clone(); pred[oid == 1] *= 1.1                  # the object 10 % too far, the room exact
    >>> objs, room = object_offsets(pred, gt, oid)
    >>> round(objs[0]["offset"], 4), round(objs[0]["room"], 4), round(objs[0]["shape"], 4), room["room_slope"]
    (0.0953, 0.0953, 0.0, 1.0)
    >>> objs[0]["interior"] is None                                 # 2 × 2 pixels: no interior
    True
    """
    assert pred.shape == gt.shape and pred.shape[-1] == 3 and object_id.shape == pred.shape[:2], (
        tuple(pred.shape), tuple(gt.shape), tuple(object_id.shape))
    p, g, ok = anchor_points(*(rearrange(x, "h w c -> (h w) c") for x in (pred, gt)))
    oid = object_id.detach().cpu().flatten()
    s = median_scale(p, g, ok)
    lp, lg = torch.log(p[:, 2].clamp_min(1e-12)), torch.log(g[:, 2].clamp_min(1e-12))
    e = torch.log(torch.as_tensor(s, dtype=torch.float64)) + lp - lg
    room = ok & (oid == 0)
    if int(room.sum()) < 3:
        raise ValueError("object_offsets needs room pixels (object_id 0) to fit the room's depth map; this frame has "
                         f"{int(room.sum())}")
    z_room = g[room, 2].median()
    inside = -F.max_pool2d(-object_id[None, None].float(), 2 * INTERIOR_PX + 1, 1, INTERIOR_PX)[0, 0]
    inside = (inside == F.max_pool2d(object_id[None, None].float(), 2 * INTERIOR_PX + 1, 1, INTERIOR_PX)[0, 0])
    inside = inside.cpu().flatten()                                 # (P,) the window holds one id only
    a, b = _line(lg[room], lp[room])
    e_room = lp - (a + b * lg)
    objects = []
    for o in oid[ok & (oid > 0)].unique().tolist():
        m = ok & (oid == o)
        if int(m.sum()) < min_pixels:
            continue
        off, inner = e[m].median(), m & inside
        objects.append({"object": int(o), "pixels": int(m.sum()), "offset": float(off),
                        "room": float(e_room[m].median()), "shape": float((e[m] - off).abs().median()),
                        "interior": float(e[inner].median()) if int(inner.sum()) >= 3 else None,
                        "near": float(torch.log(g[m, 2].median() / z_room)),
                        "z": float(g[m, 2].median()), "cut": bool((object_id[-1] == o).any())})
    return objects, {"room_abs_err": float(e[room].abs().median()), "room_slope": round(float(b), 4)}


def _line(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares (a, b) of y ≈ a + b · x; x, y (N,)."""
    return torch.linalg.lstsq(torch.stack([torch.ones_like(x), x], -1), y[:, None]).solution[:, 0]


def shrink_slope(objects: list[dict], resamples: int = 0, seed: int = 0) -> dict | None:
    """Least-squares line room ≈ a + b · near over objects (module docstring): {"shrink": b, "at_room": a} and,
    with ``resamples`` > 0 and ≥ ``SHRINK_MIN_OBJECTS`` objects, "shrink_ci": b's 95 % bootstrap interval over
    objects (seeded). None under 3 objects.

    >>> fit = shrink_slope([{"near": n, "room": -0.5 * n} for n in (-1.0, -0.5, -0.2)])      # half-way pulled
    >>> round(fit["shrink"], 3), abs(fit["at_room"]) < 1e-9
    (-0.5, True)
    """
    if len(objects) < 3:
        return None
    x = torch.tensor([o["near"] for o in objects], dtype=torch.float64)
    y = torch.tensor([o["room"] for o in objects], dtype=torch.float64)
    a, b = _line(x, y)
    fit = {"shrink": round(float(b), 4), "at_room": round(float(a), 4)}
    if resamples and len(x) >= SHRINK_MIN_OBJECTS:
        g = torch.Generator().manual_seed(seed)
        draws = (torch.randint(len(x), (len(x),), generator=g) for _ in range(resamples))
        bs = torch.stack([_line(x[i], y[i])[1] for i in draws if x[i].std() > 0])   # one `near` value: no slope
        fit["shrink_ci"] = [round(float(bs.quantile(q)), 4) for q in (0.025, 0.975)]
    return fit


def summarise(objects: list[dict], resamples: int = SHRINK_RESAMPLES) -> dict:
    """Median / mean of the signed offsets, the share placed too far, median |offset| and median shape error;
    with per-object ``interior`` and ``near`` (:func:`object_offsets`), the interior offsets' median, the median
    ``near`` and the :func:`shrink_slope` with its interval (``resamples`` bootstrap draws; 0 = none)."""
    if not objects:
        return {"objects": 0}
    t = {k: torch.tensor([o[k] for o in objects], dtype=torch.float64) for k in ("offset", "room", "shape")}
    extra = {}
    if all("near" in o for o in objects):
        inner = [o["interior"] for o in objects if o.get("interior") is not None]
        extra = {"interior_objects": len(inner),
                 "interior_offset_median": round(float(torch.tensor(inner, dtype=torch.float64).median()), 4)
                 if inner else None,
                 "near_median": round(float(torch.tensor([o["near"] for o in objects]).median()), 4),
                 **(shrink_slope(objects, resamples=resamples) or {"shrink": None})}
    return {"objects": len(objects),
            "offset_median": round(float(t["offset"].median()), 4), "offset_mean": round(float(t["offset"].mean()), 4),
            "offset_abs_median": round(float(t["offset"].abs().median()), 4),
            "too_far": round(float((t["offset"] > 0).double().mean()), 3),
            "room_offset_median": round(float(t["room"].median()), 4),
            "shape_median": round(float(t["shape"].median()), 4), **extra}


@torch.no_grad()
def placement(model, clips) -> dict:
    """{head: {"all": summary, "by_kind": {kind: summary}, "contact_seen" | "contact_cut": summary,
    "by_near": [summary of the nearest, middle, farthest third of the objects by ``near``], "by_near_contact_seen":
    [the same over the objects whose floor contact is in view], "room_abs_err",
    "room_slope"}} over a ``world.Clip``."""
    runner = PairRunner(model)
    out = runner(clips.rgb[:, :1] * 2 - 1)                         # the self-pairs (0, 0): B rows
    result = {}
    for head in HEADS:
        objects, kinds, rooms, slopes = [], defaultdict(list), [], []
        for b in range(clips.rgb.shape[0]):
            pred = getattr(out, head)[b].float()
            objs, room = object_offsets(pred, clips.track_world[b, 0], clips.object_id[b, 0])
            for o in objs:
                kinds[clips.info[b]["kinds"][o["object"] - 1]].append(o)
            objects += objs
            rooms.append(room["room_abs_err"])
            slopes.append(room["room_slope"])
        result[head] = {"all": summarise(objects), "by_kind": {k: summarise(v) for k, v in sorted(kinds.items())},
                        "contact_seen": summarise([o for o in objects if not o["cut"]]),
                        "contact_cut": summarise([o for o in objects if o["cut"]]),
                        "by_near": [summarise(third) for third in _thirds(sorted(objects, key=lambda o: o["near"]))],
                        "by_near_contact_seen": [summarise(third) for third in _thirds(
                            sorted((o for o in objects if not o["cut"]), key=lambda o: o["near"]))],
                        "room_abs_err": round(float(torch.tensor(rooms).median()), 4),
                        "room_slope": round(float(torch.tensor(slopes).median()), 4),
                        **confidence_medians(getattr(out, f"conf_{head}"), clips.object_id[:, 0])}
    return result


def confidence_medians(conf: torch.Tensor, object_id: torch.Tensor) -> dict:
    """Median confidence C of room and object pixels, and their ratio: conf (B, H, W) > 1 of the self-pairs,
    object_id (B, H, W) int, 0 = room. In the confidence loss C·‖X̂ − X̄‖ − α log C a pixel's error weighs C, so
    objects at a third of the room's C pull on the weights a third as hard, error for error.

    >>> oid = torch.tensor([[[0, 0, 1, 1]]]); c = torch.tensor([[[6.0, 6.0, 2.0, 2.0]]])
    >>> confidence_medians(c, oid)
    {'conf_room_median': 6.0, 'conf_object_median': 2.0, 'conf_room_over_object': 3.0}
    """
    assert conf.shape == object_id.shape, (tuple(conf.shape), tuple(object_id.shape))
    c, oid = conf.detach().float().cpu(), object_id.cpu()
    room, obj = c[oid == 0].median(), c[oid > 0].median() if bool((oid > 0).any()) else torch.tensor(float("nan"))
    return {"conf_room_median": round(float(room), 3), "conf_object_median": round(float(obj), 3),
            "conf_room_over_object": round(float(room / obj), 3)}


def _thirds(items: list) -> list[list]:
    n = len(items)
    return [items[: n // 3], items[n // 3: 2 * n // 3], items[2 * n // 3:]]


def placement_measure(track: torch.Tensor, clip) -> dict:
    """The anchor's object placement (:func:`summarise`, track head) of track maps (B, S, H, W, 3) of a
    ``world.Clip``'s pairs (pair (0, 0) first): what ``--overfit-steps`` follows on its one batch."""
    objects = []
    for b in range(track.shape[0]):
        objects += object_offsets(track[b, 0], clip.track_world[b, 0], clip.object_id[b, 0])[0]
    keep = ("objects", "offset_median", "too_far", "room_offset_median", "shape_median")
    return {k: v for k, v in summarise(objects, resamples=0).items() if k in keep}


def _shrink_text(summary: dict) -> str:
    ci = summary.get("shrink_ci")
    return (f"shrink toward the room's depth {summary['shrink']:+.3f}"
            + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "") + f" (offset {summary['at_room']:+.3f} at the room's depth)")


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.object_placement CHECKPOINT [--num-clips 16] [--json OUT]``."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.object_placement",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help=resolve.SPEC_HELP)
    ap.add_argument("--num-clips", type=int, default=16, help="held-out pretrain clips (default 16, the scorecard's)")
    ap.add_argument("--overfit-steps", type=int, default=0,
                    help="also train a copy on one fixed batch this many steps and follow its objects' placement "
                    "(can the network place them at all?); default 0 = no")
    ap.add_argument("--json", default=None, help="write the record here (atomically)")
    add_shift_argument(ap)
    args = ap.parse_args(argv)
    if args.num_clips < 1 or args.overfit_steps < 0:
        ap.error("--num-clips must be >= 1 and --overfit-steps >= 0")
    start = time.perf_counter()
    model = resolve.load(args.checkpoint).float().eval()
    world_shift = parse_shift(args.shift)
    clips = heldout_clips(model.config, num_clips=args.num_clips, frames=16, shift=world_shift or None)
    result = placement(model, clips)
    for head, r in result.items():
        a = r["all"]
        print(f"{head:5s} {a['objects']} objects: offset median {a['offset_median']:+.3f} (mean {a['offset_mean']:+.3f}, "
              f"|.| {a['offset_abs_median']:.3f}, {100 * a['too_far']:.0f} % too far), against the room's own depth "
              f"map {a['room_offset_median']:+.3f}; shape {a['shape_median']:.3f}; room |err| {r['room_abs_err']:.3f}, "
              f"room slope {r['room_slope']:.3f}")
        print(f"      confidence C, median: room {r['conf_room_median']:.2f}, objects {r['conf_object_median']:.2f} "
              f"(room / objects {r['conf_room_over_object']:.2f})")
        if a.get("interior_offset_median") is not None:
            print(f"      interior pixels ({a['interior_objects']} objects): offset median "
                  f"{a['interior_offset_median']:+.3f}")
        for part, thirds in (("all", "by_near"), ("contact_seen", "by_near_contact_seen")):
            if r[part].get("shrink") is not None:
                print(f"      {part}: {_shrink_text(r[part])}; nearest / middle / farthest third: "
                      + " / ".join(f"{t['offset_median']:+.3f}" for t in r[thirds] if t["objects"]))
        for part in ("contact_seen", "contact_cut"):
            c = r[part]
            if c["objects"]:
                print(f"      {part}: {c['objects']} objects, offset median {c['offset_median']:+.3f} "
                      f"({100 * c['too_far']:.0f} % too far), shape {c['shape_median']:.3f}")
    overfit = None
    if args.overfit_steps:
        overfit = overfit_one_batch(model, args.overfit_steps, measure=placement_measure, lr=OVERFIT_LR,
                                    loss_fn=PretrainLoss(dynamic_factor=None, motion_weight=3.0))
        for row in overfit["curve"]:
            print(f"one batch, step {row['step']:4d}: {row['objects']} objects, offset median {row['offset_median']:+.3f} "
                  f"({100 * row['too_far']:.0f} % too far; against the room {row['room_offset_median']:+.3f}), shape "
                  f"{row['shape_median']:.3f}")
    if args.json:
        record = {"command": f"python -m st4r_lite.studies.object_placement {args.checkpoint} --num-clips "
                             f"{args.num_clips}" + (f" --overfit-steps {args.overfit_steps}" if args.overfit_steps else "")
                             + f" --json {args.json}" + shift_flags(args.shift), "overfit": overfit,
                  "checkpoint": args.checkpoint, "world_shift": world_shift, "frames": 16, "seed": HELDOUT_SEED,
                  "seconds": round(time.perf_counter() - start, 1), "placement": result}
        with atomic_write(Path(args.json), "w") as fh:
            fh.write(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
