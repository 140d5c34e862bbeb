"""``st4r-lite adapt``: test-time adaptation of a checkpoint to videos with pseudo-labels."""

from __future__ import annotations

import argparse

from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.adapt.occlusion import OCCLUSION_TAU
from st4r_lite.adapt.variants import VARIANTS, variants_help
from st4r_lite.cli.args import nonneg_int, positive_int
from st4r_lite.model import resolve
from st4r_lite.studies import adapt_compare


def _add_adapt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="test-time adaptation of a checkpoint to videos with pseudo-labels (baseline / occlusion mask / sigma^2)",
        description="Adapt a model to each video of --data (a WorldTrack .npz, a folder of them, or DOMAIN:SEED[:COUNT] "
        "for synthetic clips, e.g. wild:600000:4) with 2D-track and mono-depth pseudo-labels (docs/method.md §6). Variants: "
        f"{variants_help()}. Give one, a comma list or 'all'. Writes <video>_<variant>.npz (track/recon maps, "
        "cameras, mask) and .json (losses, "
        "metrics when ground truth exists) into --out.",
    )
    p.add_argument("--data", required=True, help="NPZ file, folder of NPZ files, or DOMAIN:SEED[:COUNT]")
    p.add_argument("--checkpoint", default=None, help=resolve.SPEC_HELP)
    p.add_argument("--variant", default="robust", help=f"variant name, comma list, or 'all' ({', '.join(VARIANTS)})")
    p.add_argument("--tracker", default="sim", choices=("sim", "sim-latch", "lk", "cotracker"),
                   help="2D pseudo-labels: sim (synthetic ground truth + tracker errors), lk, cotracker (online)")
    p.add_argument("--depth", default="sim", choices=("sim", "none", "moge"), help="mono-depth pseudo-labels")
    p.add_argument("--steps", type=nonneg_int, default=None, help=f"optimiser steps per video (default {AdaptConfig.steps})")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default {AdaptConfig.lr:g})")
    p.add_argument("--pairs-per-step", type=positive_int, default=None,
                   help="pairs (0, j) per step: pair 0 + random others (default 8; all with a large number)")
    p.add_argument("--params", default="track", choices=("track", "all_but_encoder"), help="what adapts")
    p.add_argument("--tau", type=float, default=OCCLUSION_TAU, help="occlusion mask tolerance (relative depth)")
    p.add_argument("--sigma-form", default="laplace", choices=("laplace", "gaussian"), help="sigma^2 loss form")
    p.add_argument("--frames", type=positive_int, default=16, help="frames of generated clips (DOMAIN:SEED)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--resize", default="model", choices=("model", "none"),
                   help="bring the frames to the model's size like `run` does (scale + centre crop, intrinsics "
                   "mapped; default), or keep the file's size (a 540x960 file then runs for hours on a CPU)")
    p.add_argument("--portrait", default="native", choices=("native", "crop"),
                   help="portrait videos: portrait network size (native) or crop a landscape band")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_adapt)


def _run_adapt(args: argparse.Namespace) -> None:
    print(adapt_compare.run_adapt_cli(args))
