"""``st4r-lite run`` (your own video) and ``st4r-lite demo`` (the whole pipeline on the embedded default)."""

from __future__ import annotations

import argparse

from st4r_lite import demo
from st4r_lite.adapt.variants import VARIANTS
from st4r_lite.app import run
from st4r_lite.cli.args import nonneg_int, positive_int
from st4r_lite.errors import InputError
from st4r_lite.model import resolve


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a model on your own video: world-frame tracks, reconstruction, cameras and an HTML view",
        description="Read a video file (mp4/mov/webm/mkv) or a folder of PNG/JPG frames, bring it to the network "
        "size (uniform scale + centre crop; portrait videos use a portrait network size), predict every pair "
        "(frame 0, t) in chunks, solve the cameras, optionally adapt to the video first, and write result.npz, "
        "tracks.npz, view.html and run.json into --out (atomically: an interrupted run leaves nothing).",
    )
    p.add_argument("--video", required=True, help="video file or folder of frames")
    p.add_argument("--checkpoint", required=True, help=resolve.SPEC_HELP)
    p.add_argument("--adapt", default=None, metavar="VARIANT", help=f"test-time adaptation variant: {', '.join(VARIANTS)}")
    p.add_argument("--tracker", default="lk", choices=("lk", "cotracker"), help="2D pseudo-label tracker (--adapt)")
    p.add_argument("--depth", default="none", choices=("none", "moge"), help="mono-depth pseudo-labels (--adapt)")
    p.add_argument("--adapt-steps", type=positive_int, default=None, help="adaptation steps (default: adapt's)")
    p.add_argument("--stride", type=positive_int, default=1, help="keep every k-th frame")
    p.add_argument("--start", type=nonneg_int, default=0, help="first frame to keep (becomes the anchor)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="keep at most this many frames")
    p.add_argument("--chunk", type=positive_int, default=8, help="pairs per forward pass (bounds memory)")
    p.add_argument("--portrait", default="native", choices=("native", "crop"),
                   help="portrait videos: portrait network size (native) or crop a landscape band")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--no-view", action="store_true", help="skip view.html")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_run)


def _run_run(args: argparse.Namespace) -> None:
    try:
        run.run_video(args.video, args.checkpoint, args.out, adapt=args.adapt, tracker=args.tracker,
                      depth=args.depth, stride=args.stride, start=args.start, max_frames=args.max_frames,
                      chunk=args.chunk, device=args.device, portrait=args.portrait, view=not args.no_view,
                      overwrite=args.overwrite, adapt_steps=args.adapt_steps)
    except ImportError as err:           # an optional dependency (PyAV, OpenCV, huggingface_hub) is missing
        raise InputError(str(err)) from None


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded default (what `make demo` runs)")
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--checkpoint", default=None, help=resolve.SPEC_HELP)
    p.add_argument("--full", action="store_true",
                   help="the whole wild benchmark, 3 seeds, 30 adaptation steps (a GPU job; default: quick)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    demo.run_demo(args.out, seed=args.seed, full=args.full, checkpoint=args.checkpoint)
