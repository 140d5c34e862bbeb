"""``st4r-lite pretrain``, ``export``, ``heldout`` and ``bench``: pretraining and what measures it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from st4r_lite.cli.args import nonneg_int, positive_int
from st4r_lite.errors import InputError
from st4r_lite.model import resolve
from st4r_lite.runtime import atomic_write, check_writable, hardware_info, pick_device
from st4r_lite.studies import bench, reference_compare
from st4r_lite.train import heldout
from st4r_lite.train.config import TrainConfig
from st4r_lite.train.loop import export_weights, pretrain
from st4r_lite.world.scene import add_shift_argument, parse_shift


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a model on the synthetic 4D world (resumable; torchrun for several processes)",
        description="Pretrain St4RTrack on pairs (anchor 0, k) of on-the-fly synthetic clips (docs/method.md §4). Writes a "
        "training checkpoint (model + optimiser + schedule + RNG states) to --out, a metrics log (JSON lines) "
        "beside it and a held-out evaluation at the end. Several processes: `torchrun --nproc_per_node K "
        "-m st4r_lite.cli pretrain ...`.",
    )
    p.add_argument("--preset", default="tiny", help="model preset (tiny, small, full, full_linear)")
    p.add_argument("--steps", type=positive_int, required=True, help="total optimiser steps of the schedule")
    p.add_argument("--out", required=True, help="training checkpoint to write (and to read with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out (same settings)")
    p.add_argument("--batch", type=positive_int, default=None, help="clips per step and per process")
    p.add_argument("--frames", type=positive_int, default=None, help="frames per clip (= pairs per clip)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--warmup", type=nonneg_int, default=None, help="warm-up steps")
    p.add_argument("--max-frame-gap", type=float, default=None, help="largest frame gap of the curriculum")
    p.add_argument("--eval-every", type=nonneg_int, default=0,
                   help="evaluate on the held-out clips every N steps (0 = only at the end)")
    p.add_argument("--stop-at", type=positive_int, default=None,
                   help="stop after this step (the schedule still spans --steps; continue later with --resume, "
                   "bit for bit as if never stopped)")
    p.add_argument("--save-every", type=nonneg_int, default=100,
                   help="also checkpoint every N steps, so an interrupt keeps the progress (default 100; 0 = only "
                   "at the end)")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run over an existing --out (its log is erased); without it an existing --out "
                   "needs --resume")
    p.add_argument("--log", default=None, help="metrics log (JSON lines); default: --out with .jsonl")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--seed", type=nonneg_int, default=None, help="training seed (clips, init)")
    p.add_argument("--dynamic-factor", type=float, default=None,
                   help="dynamic reweighting of the tracking loss (default 5, the released code's; 0 = off)")
    p.add_argument("--object-regression", type=float, default=None,
                   help="add W x the plain error of object pixels (every frame's recon, the anchor's moving pixels "
                   "at the self-pair), no confidence, no motion asked (default 0 = off)")
    p.add_argument("--object-depth", type=float, default=None,
                   help="add W x each object pixel's error in log depth relative to the room's median depth, the "
                   "room held still (objects placed too far or too near; default 0 = off)")
    p.add_argument("--dynamic-regression", type=float, default=None,
                   help="add W x the plain 3D error of moving pixels to the loss (no confidence; default 0 = off)")
    p.add_argument("--motion-weight", type=float, default=None,
                   help="add W x L_motion, the error of every anchor pixel's motion from the self-pair's track, "
                   "static pixels included (default 0 = off)")
    p.add_argument("--match-weight", type=float, default=None,
                   help="add W x L_match: the track branch's head-0 cross-attention taught the true correspondent "
                   "token of every anchor patch in frame k (default 0 = off)")
    p.add_argument("--init", default=None,
                   help="fine-tune: start from these weights (a training checkpoint such as runs/tiny_v2.pt, a model "
                   "file such as data/tiny.pt, or a released name) with a fresh optimiser and schedule")
    p.add_argument("--pixel-refine", type=nonneg_int, default=None,
                   help="add an image-guided conv refinement of width W to both heads (sharp depth edges inside a "
                   "patch; default 0 = the preset's heads); with --init from weights without one, it starts at zero")
    p.add_argument("--match-track", type=nonneg_int, default=None,
                   help="add the matched-geometry tracking of width W: each anchor patch is looked up in frame k and "
                   "the track reads frame k's reconstruction there through a learned gate (default 0 = off); with "
                   "--init from weights without one, it starts with its gate nearly closed")
    p.add_argument("--match-register", action="store_true", default=None,
                   help="with --match-track: bring frame k's found geometry onto the track branch's own frame-k points "
                   "by one similarity per pair before reading it (the camera's correction; no gradient)")
    p.add_argument("--match-pixel", action="store_true", default=None,
                   help="with --match-track: read the lookup at a pixel (soft-argmax + a learned sub-token offset, "
                   "bilinear) instead of copying the found token's patch; --match-head-weight then also supervises "
                   "the looked-up pixels")
    p.add_argument("--match-refine", type=nonneg_int, default=None,
                   help="with --match-pixel: refine each looked-up pixel by one local correlation step of small image "
                   "features within +-2R pixels (default 0 = off)")
    p.add_argument("--match-head-weight", type=float, default=None,
                   help="add W x the cross-entropy of the matched tracking's lookup against the true correspondent "
                   "token (needs --match-track; default 0 = off)")
    p.add_argument("--match-gate-weight", type=float, default=None,
                   help="add W x a balanced cross-entropy teaching the matched tracking's gate to open on moving "
                   "objects and stay shut on static pixels (needs --match-head-weight; default 0 = off)")
    p.add_argument("--refine-lr-mult", type=float, default=None,
                   help="learning rate of the modules added from scratch (--pixel-refine, --match-track) = --lr x "
                   "this (default 1)")
    p.add_argument("--train-only", nargs="+", default=None, metavar="PREFIX",
                   help="train only the parameters whose names start with these prefixes (e.g. match_track); the "
                   "rest stays frozen (default: all)")
    add_shift_argument(p, "train and check on a candidate world (stored in the checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> None:
    summary = run_pretrain_cli(args)
    print(summary)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the small shippable model file (float16 weights) from a training checkpoint",
        description="Export the weights of a `pretrain` checkpoint to a file that `checkpoint.load_model` reads. "
        "With --eval JSON, also evaluate the exported file on the held-out clips (vs the static baseline).",
    )
    p.add_argument("train_ckpt", help="training checkpoint written by `st4r-lite pretrain --out`")
    p.add_argument("out", help="model file to write (e.g. data/tiny.pt)")
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    p.add_argument("--eval", default=None, metavar="JSON", help="write the held-out evaluation here")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    print(run_export_cli(args))


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure training and inference pairs/s and peak memory of model presets",
        description="Time forward+backward+AdamW steps (pretraining loss) and no-grad forward passes of a model "
        "preset at its own resolution on random data, and report peak memory. Results vary with the machine "
        "and its load; the JSON records the command and the hardware.",
    )
    p.add_argument("--preset", nargs="+", default=["tiny"], help="one or more presets (tiny small full ...)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--steps", type=positive_int, default=5, help="timed steps per phase")
    p.add_argument("--batch", type=positive_int, default=None, help="pairs per step (default: per preset)")
    p.add_argument("--warmup", type=nonneg_int, default=1, help="untimed steps before timing")
    p.add_argument("--render-clips", type=nonneg_int, default=2,
                   help="also time rendering this many clips of the world per step on the device (0 = don't)")
    p.add_argument("--render-frames", type=positive_int, default=8, help="frames per rendered clip (default 8)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="write the results as JSON to OUT (or to stdout when OUT is left out)")
    p.add_argument("--compare-reference", default=None, metavar="PATH",
                   help="instead: time our no-grad forward against the reference DUSt3R code checked out at PATH "
                   "(naver/dust3r with its croco submodule), same weights, and report the time and memory ratios "
                   "(--steps repeats, --batch pairs, default 1)")
    p.add_argument("--size", type=positive_int, nargs=2, default=None, metavar=("H", "W"),
                   help="input size for --compare-reference (default: the preset's)")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    if args.compare_reference:
        return _run_compare(args, device)
    results = []
    for preset in args.preset:
        r = bench.benchmark(preset, device, steps=args.steps, batch=args.batch, warmup=args.warmup,
                            render_clips=args.render_clips, render_frames=args.render_frames)
        print(bench.format_result(r), file=sys.stderr if args.json == "-" else sys.stdout)
        results.append(r)
    if args.json is None:
        return
    command = (f"st4r-lite bench --preset {' '.join(args.preset)} --device {args.device} --steps {args.steps} "
               f"--warmup {args.warmup}" + (f" --batch {args.batch}" if args.batch else "")
               + f" --render-clips {args.render_clips} --render-frames {args.render_frames} --json"
               + ("" if args.json == "-" else f" {args.json}"))
    doc = {"command": command, "hardware": hardware_info(device), "results": results}
    text = json.dumps(doc, indent=1)
    if args.json == "-":
        print(text)
    else:
        with atomic_write(args.json, "w") as f:
            f.write(text + "\n")
        print(f"wrote {args.json}")


def _run_compare(args: argparse.Namespace, device: torch.device) -> None:
    """``bench --compare-reference PATH``: one comparison per preset, JSON with the command and the hardware."""
    if args.json not in (None, "-"):
        check_writable(args.json, what="--json")
    results = []
    for preset in args.preset:
        r = reference_compare.compare_reference(args.compare_reference, preset, img_hw=args.size,
                                                batch=args.batch or 1, repeats=args.steps, warmup=args.warmup,
                                                device=device)
        print(reference_compare.format_comparison(r), file=sys.stderr if args.json == "-" else sys.stdout)
        results.append(r)
    if args.json is None:
        return
    command = (f"st4r-lite bench --preset {' '.join(args.preset)} --compare-reference {args.compare_reference}"
               + (f" --size {args.size[0]} {args.size[1]}" if args.size else "") + f" --batch {args.batch or 1}"
               f" --steps {args.steps} --warmup {args.warmup} --device {args.device} --json"
               + ("" if args.json == "-" else f" {args.json}"))
    text = json.dumps({"command": command, "hardware": hardware_info(device), "results": results}, indent=1)
    if args.json == "-":
        print(text)
    else:
        with atomic_write(args.json, "w") as f:
            f.write(text + "\n")
        print(f"wrote {args.json}")


def _add_heldout(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heldout", help="the held-out report of a model file (what data/tiny_eval.json holds)",
        description="Evaluate a model file on held-out pretrain-domain clips against the static baseline and print "
        "the headline; with --json, write the whole report (e.g. data/tiny_eval.json).",
    )
    p.add_argument("checkpoint", help=resolve.SPEC_HELP)
    p.add_argument("--json", default=None, help="write the report here (default: print the headline)")
    p.add_argument("--train-ckpt", default=None, help="training checkpoint (adds wall time, command, hardware)")
    p.add_argument("--num-clips", type=positive_int, default=heldout.REPORT_CLIPS)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_run_heldout)


def _run_heldout(args: argparse.Namespace) -> None:
    pick_device(args.device)
    if args.json:
        check_writable(args.json, what="--json")
    report = heldout.evaluate_checkpoint(args.checkpoint, train_ckpt=args.train_ckpt, num_clips=args.num_clips,
                                         device=args.device)
    if args.json:
        heldout.write_eval_json(report, args.json)
    print(json.dumps(report["headline"], indent=1))


def run_pretrain_cli(args) -> str:
    """``st4r-lite pretrain``: build the TrainConfig from the arguments (unset ones keep their defaults)."""
    overrides = {"preset": args.preset, "steps": args.steps, "batch": args.batch, "frames": args.frames,
                 "lr": args.lr, "warmup": args.warmup, "max_frame_gap": args.max_frame_gap, "seed": args.seed,
                 "dynamic_factor": getattr(args, "dynamic_factor", None), "init": getattr(args, "init", None),
                 "dynamic_regression": getattr(args, "dynamic_regression", None),
                 "motion_weight": getattr(args, "motion_weight", None),
                 "match_weight": getattr(args, "match_weight", None),
                 "pixel_refine": getattr(args, "pixel_refine", None),
                 "match_track": getattr(args, "match_track", None),
                 "match_register": getattr(args, "match_register", None),
                 "match_pixel": getattr(args, "match_pixel", None),
                 "match_refine": getattr(args, "match_refine", None),
                 "match_head_weight": getattr(args, "match_head_weight", None),
                 "match_gate_weight": getattr(args, "match_gate_weight", None),
                 "refine_lr_mult": getattr(args, "refine_lr_mult", None),
                 "train_only": getattr(args, "train_only", None),
                 "object_regression": getattr(args, "object_regression", None),
                 "object_depth": getattr(args, "object_depth", None),
                 "world_shift": parse_shift(getattr(args, "shift", None) or []) or None}
    cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    log = Path(args.log) if args.log else Path(args.out).with_suffix(".jsonl")
    check_writable(args.out)
    check_writable(log, what="--log")
    pick_device(args.device)  # a missing GPU fails here, not after building the model
    existing = [str(p) for p in (Path(args.out), log) if p.exists()]
    if existing and not args.resume and not getattr(args, "overwrite", False):
        raise InputError(f"{' and '.join(existing)} already exist(s): pass --resume to continue that run, or "
                         "--overwrite to start a new one (erases its log), or choose another --out")
    res = pretrain(cfg, args.out, resume=args.resume, device=args.device, log_path=log,
                   eval_every=args.eval_every, save_every=args.save_every, stop_at=args.stop_at,
                   progress=not args.no_progress)
    head = heldout.headline(res["eval"]) if res.get("eval") else {}
    return (f"rank {res['rank']}/{res['world_size']}: step {res['step']}, {res['elapsed_s']:.0f} s of training; "
            f"checkpoint {res['checkpoint']}, log {log}; weights sha256 {res['weights_digest'][:16]}; "
            f"held-out (median): {head}")


def run_export_cli(args) -> str:
    """``st4r-lite export``: weights-only file, optionally with its held-out evaluation as JSON."""
    check_writable(args.out, what="the output model file")
    if args.eval:
        check_writable(args.eval, what="--eval")
    try:
        out = export_weights(args.train_ckpt, args.out, dtype=getattr(torch, args.dtype))
    except RuntimeError as err:  # weights that do not fit the architecture the checkpoint names
        if "state_dict" not in str(err):
            raise
        raise InputError(f"{args.train_ckpt!r}: its weights do not fit the model its config describes "
                         f"({str(err).splitlines()[0]}); expected the file written by `st4r-lite pretrain`") from None
    msg = f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {args.dtype})"
    if args.eval:
        report = heldout.evaluate_checkpoint(out, train_ckpt=args.train_ckpt)
        heldout.write_eval_json(report, args.eval)
        msg += f"; held-out evaluation in {args.eval}: {report['headline']}"
    return msg
