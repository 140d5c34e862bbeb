"""The ``st4r-lite`` command line: one subcommand per job of the method.

Each subcommand is declared by a small ``_add_<name>`` function below (its arguments and its help), and runs
a function of the library; heavy modules are imported only when their subcommand runs, so ``--help`` is fast.
Errors the user can fix (bad sizes, unknown names, unwritable folders, malformed files) are printed as one
line starting with ``error:`` and exit with status 2; anything else is a bug and shows its traceback.

Adding a subcommand: write ``_add_<name>(sub)`` and register it in ``COMMANDS`` (keep the order of the method).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


# --------------------------------------------------------------------------------------------- generate / view
def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="write a synthetic WorldTrack benchmark set (.npz files) from the synthetic 4D world",
        description="Generate synthetic 4D sequences with exact ground truth and write them as WorldTrack-style "
        ".npz files. The same arguments always give the same files.",
    )
    p.add_argument("--domain", default="pretrain", help="'pretrain' (clean) or 'wild' (held-out shift)")
    p.add_argument("--num-seqs", type=_positive_int, default=4, help="number of sequences")
    p.add_argument("--frames", type=_positive_int, default=16, help="frames per sequence (T >= 1)")
    p.add_argument("--height", type=_positive_int, default=64)
    p.add_argument("--width", type=_positive_int, default=96)
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--benchmark", default=None,
                   help="write a named fixed benchmark instead (e.g. 'worldtrack-lite'); overrides the sizes")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> None:
    from st4r_lite.world import worldtrack

    if args.benchmark:
        paths = worldtrack.write_named_benchmark(args.benchmark, args.out)
    else:
        paths = worldtrack.write_benchmark(
            args.out, domain=args.domain, num_seqs=args.num_seqs, frames=args.frames,
            height=args.height, width=args.width, seed=args.seed,
        )
    print(f"wrote {len(paths)} sequence(s) to {args.out}")


def _add_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="write a self-contained interactive HTML view (opens offline) of a sequence",
        description="Write an interactive Plotly 3D view of a WorldTrack .npz file (or of a freshly generated "
        "synthetic scene when --npz is not given) as one HTML file with plotly.js inline.",
    )
    p.add_argument("--npz", default=None, help="a WorldTrack .npz file; default: generate a synthetic scene")
    p.add_argument("--domain", default="pretrain")
    p.add_argument("--frames", type=_positive_int, default=16)
    p.add_argument("--height", type=_positive_int, default=64)
    p.add_argument("--width", type=_positive_int, default=96)
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--out", required=True, help="output .html file")
    p.set_defaults(func=_run_view)


def _run_view(args: argparse.Namespace) -> None:
    from st4r_lite.app import views

    path = views.write_sequence_html(
        args.out, npz=args.npz, domain=args.domain, frames=args.frames, height=args.height,
        width=args.width, seed=args.seed,
    )
    print(f"wrote {path}")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job on the embedded default (what `make demo` runs)")
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--checkpoint", default=None, help="model file (default: the shipped data/tiny.pt)")
    p.add_argument("--full", action="store_true",
                   help="the whole wild benchmark, 3 seeds, 30 adaptation steps (a GPU job; default: quick)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from st4r_lite import demo

    demo.run_demo(args.out, seed=args.seed, full=args.full, checkpoint=args.checkpoint)


def _add_slides(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "slides", help="build the reveal.js course deck (English and Vietnamese) from the recorded results",
        description="Fill slides/deck.<lang>.md with the results under data/ and write one HTML deck per language "
        "(reveal.js inline) plus plotly.min.js into --out (default slides/build). Opens offline.",
    )
    p.add_argument("--out", default="slides/build", help="output folder")
    p.add_argument("--sources", default=None, help="folder with deck.<lang>.md (default: the repository's slides/)")
    p.add_argument("--data", default=None, help="results folder (default: the repository's data/)")
    p.add_argument("--lang", default="en,vi", help="comma-separated languages (en, vi)")
    p.set_defaults(func=_run_slides)


def _run_slides(args: argparse.Namespace) -> None:
    from course import slides

    langs = tuple(x.strip() for x in args.lang.split(",") if x.strip())
    for deck in slides.build_decks(args.out, sources_dir=args.sources, data_dir=args.data, languages=langs):
        note = f"; not produced yet: {', '.join(deck.missing)}" if deck.missing else ""
        print(f"wrote {deck.path} (results: {', '.join(deck.filled) or 'none'}{note})")


# ------------------------------------------------------------------------------------------- pretrain / export
def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a model on the synthetic 4D world (resumable; torchrun for several processes)",
        description="Pretrain St4RTrack on pairs (anchor 0, k) of on-the-fly synthetic clips (DESIGN §4). Writes a "
        "training checkpoint (model + optimiser + schedule + RNG states) to --out, a metrics log (JSON lines) "
        "beside it and a held-out evaluation at the end. Several processes: `torchrun --nproc_per_node K "
        "-m st4r_lite.cli pretrain ...`.",
    )
    p.add_argument("--preset", default="tiny", help="model preset (tiny, small, full, full_linear)")
    p.add_argument("--steps", type=_positive_int, required=True, help="total optimiser steps of the schedule")
    p.add_argument("--out", required=True, help="training checkpoint to write (and to read with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out (same settings)")
    p.add_argument("--batch", type=_positive_int, default=None, help="clips per step and per process")
    p.add_argument("--frames", type=_positive_int, default=None, help="frames per clip (= pairs per clip)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--warmup", type=_nonneg_int, default=None, help="warm-up steps")
    p.add_argument("--max-frame-gap", type=float, default=None, help="largest frame gap of the curriculum")
    p.add_argument("--eval-every", type=_nonneg_int, default=0,
                   help="evaluate on the held-out clips every N steps (0 = only at the end)")
    p.add_argument("--save-every", type=_nonneg_int, default=0, help="also checkpoint every N steps")
    p.add_argument("--log", default=None, help="metrics log (JSON lines); default: --out with .jsonl")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--seed", type=_nonneg_int, default=None, help="training seed (clips, init)")
    p.add_argument("--dynamic-factor", type=float, default=None,
                   help="dynamic reweighting of the tracking loss (default 5, the released code's; 0 = off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args: argparse.Namespace) -> None:
    from st4r_lite.train import loop as train

    summary = train.run_pretrain_cli(args)
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
    from st4r_lite.train import loop as train

    print(train.run_export_cli(args))


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
    p.add_argument("--steps", type=_positive_int, default=5, help="timed steps per phase")
    p.add_argument("--batch", type=_positive_int, default=None, help="pairs per step (default: per preset)")
    p.add_argument("--warmup", type=_nonneg_int, default=1, help="untimed steps before timing")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help="write the results as JSON to OUT (or to stdout when OUT is left out)")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> None:
    import json

    from st4r_lite.studies import bench
    from st4r_lite.runtime import atomic_write, pick_device

    try:
        device = pick_device(args.device)
    except RuntimeError as err:
        raise UserError(str(err)) from None
    results = []
    for preset in args.preset:
        r = bench.benchmark(preset, device, steps=args.steps, batch=args.batch, warmup=args.warmup)
        print(bench.format_result(r), file=sys.stderr if args.json == "-" else sys.stdout)
        results.append(r)
    if args.json is None:
        return
    command = (f"st4r-lite bench --preset {' '.join(args.preset)} --device {args.device} --steps {args.steps} "
               f"--warmup {args.warmup}" + (f" --batch {args.batch}" if args.batch else "") + " --json"
               + ("" if args.json == "-" else f" {args.json}"))
    doc = {"command": command, "hardware": bench.hardware_info(device), "results": results}
    text = json.dumps(doc, indent=1)
    if args.json == "-":
        print(text)
    else:
        with atomic_write(args.json, "w") as f:
            f.write(text + "\n")
        print(f"wrote {args.json}")


# ----------------------------------------------------------------------------------------------- run (own video)
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
    p.add_argument("--checkpoint", required=True,
                   help="model file (e.g. data/tiny.pt), a released name (st4rtrack_seq, st4rtrack_pair, monst3r, "
                   "dust3r; downloads when online) or fresh:tiny (untrained, for testing)")
    p.add_argument("--adapt", default=None, metavar="VARIANT", help="test-time adaptation variant (st4r_lite.adapt.loop)")
    p.add_argument("--tracker", default="lk", choices=("lk", "cotracker"), help="2D pseudo-label tracker (--adapt)")
    p.add_argument("--depth", default="none", choices=("none", "moge"), help="mono-depth pseudo-labels (--adapt)")
    p.add_argument("--adapt-steps", type=_positive_int, default=None, help="adaptation steps (default: adapt's)")
    p.add_argument("--stride", type=_positive_int, default=1, help="keep every k-th frame")
    p.add_argument("--start", type=_nonneg_int, default=0, help="first frame to keep (becomes the anchor)")
    p.add_argument("--max-frames", type=_positive_int, default=None, help="keep at most this many frames")
    p.add_argument("--chunk", type=_positive_int, default=8, help="pairs per forward pass (bounds memory)")
    p.add_argument("--portrait", default="native", choices=("native", "crop"),
                   help="portrait videos: portrait network size (native) or crop a landscape band")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--no-view", action="store_true", help="skip view.html")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_run)


def _run_run(args: argparse.Namespace) -> None:
    from st4r_lite.app import run

    try:
        run.run_video(args.video, args.checkpoint, args.out, adapt=args.adapt, tracker=args.tracker,
                      depth=args.depth, stride=args.stride, start=args.start, max_frames=args.max_frames,
                      chunk=args.chunk, device=args.device, portrait=args.portrait, view=not args.no_view,
                      overwrite=args.overwrite, adapt_steps=args.adapt_steps)
    except (RuntimeError, ImportError) as err:
        raise UserError(str(err)) from None


# ----------------------------------------------------------------------------------------------- adapt
def _add_adapt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="test-time adaptation of a checkpoint to videos with pseudo-labels (baseline / occlusion mask / sigma^2)",
        description="Adapt a model to each video of --data (a WorldTrack .npz, a folder of them, or DOMAIN:SEED[:COUNT] "
        "for synthetic clips, e.g. wild:600000:4) with 2D-track and mono-depth pseudo-labels (DESIGN §6). Variants: "
        "none, baseline, mask, sigma, robust (mask + sigma^2, the course's proposal), oracle_mask, conf_sigma; a "
        "comma list or 'all'. Writes <video>_<variant>.npz (track/recon maps, cameras, mask) and .json (losses, "
        "metrics when ground truth exists) into --out.",
    )
    p.add_argument("--data", required=True, help="NPZ file, folder of NPZ files, or DOMAIN:SEED[:COUNT]")
    p.add_argument("--checkpoint", default=None, help="model file (default: data/tiny.pt)")
    p.add_argument("--variant", default="robust", help="variant name, comma list, or 'all'")
    p.add_argument("--tracker", default="sim", choices=("sim", "lk", "cotracker"),
                   help="2D pseudo-labels: sim (synthetic ground truth + tracker errors), lk, cotracker (online)")
    p.add_argument("--depth", default="sim", choices=("sim", "none", "moge"), help="mono-depth pseudo-labels")
    p.add_argument("--steps", type=_nonneg_int, default=None, help="optimiser steps per video (default 15)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 3e-5)")
    p.add_argument("--pairs-per-step", type=_positive_int, default=None,
                   help="pairs (0, j) per step: pair 0 + random others (default 8; all with a large number)")
    p.add_argument("--params", default="track", choices=("track", "all_but_encoder"), help="what adapts")
    p.add_argument("--tau", type=float, default=0.1, help="occlusion mask tolerance (relative depth)")
    p.add_argument("--sigma-form", default="laplace", choices=("laplace", "gaussian"), help="sigma^2 loss form")
    p.add_argument("--frames", type=_positive_int, default=16, help="frames of generated clips (DOMAIN:SEED)")
    p.add_argument("--seed", type=_nonneg_int, default=0)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run_adapt)


def _run_adapt(args: argparse.Namespace) -> None:
    from st4r_lite.studies import adapt_compare

    print(adapt_compare.run_adapt_cli(args))


# ------------------------------------------------------------------------------------ evaluate / ablation / report
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="world-frame evaluation of a model on WorldTrack .npz sequences (tracking, recon, depth, cameras)",
        description="Run a model on every pair (0, t) of each sequence and score it in the world frame (DESIGN §7): "
        "tracking APD/EPE (all and dynamic, median and sim3 alignment), recon APD/EPE, depth AbsRel and δ<1.25, "
        "camera ATE/RPE after Sim(3), occlusion-mask precision/recall. Files without a depth map (official "
        "WorldTrack files) skip the recon and depth metrics and say so.",
    )
    p.add_argument("--checkpoint", required=True, help="model file (e.g. data/tiny.pt)")
    p.add_argument("--data", required=True, help="a folder of .npz sequences or one .npz file")
    p.add_argument("--json", default=None, metavar="OUT", help="write per-sequence and mean numbers here")
    p.add_argument("--alignment", default="median,sim3", help="comma-separated: median, sim3, none")
    p.add_argument("--peers", default="", help="also score peers on the same data: static,combinational")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    from st4r_lite.eval import evaluate

    print(evaluate.run_evaluate_cli(args))


def _add_ablation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablation",
        help="run the adaptation variants and the peers over benchmark sequences and seeds (reproducible)",
        description="Adapt the model with each variant (none, baseline, mask, sigma, robust, oracle_mask, "
        "conf_sigma) on the same videos and pseudo-labels per seed, add the static and combinational peers, and "
        "write results.json, results.md (mean ± std across seeds, paired differences to baseline with 95%% "
        "t intervals), PNG plots and views.npz into --out. With --check REF: re-run REF's configuration (or "
        "compare --results) and say whether the numbers match the reference within tolerance.",
    )
    p.add_argument("--benchmark", default="worldtrack-lite", help="named benchmark, or a folder / .npz of sequences")
    p.add_argument("--domain", default="wild", help="part of a named benchmark (default: the held-out 'wild')")
    p.add_argument("--max-seqs", type=_positive_int, default=None, help="use only the first N sequences")
    p.add_argument("--frames", type=_positive_int, default=None, help="use only the first F frames")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (pseudo-label noise, adaptation)")
    p.add_argument("--variants", default="none,baseline,mask,sigma,robust,oracle_mask,conf_sigma")
    p.add_argument("--peers", default="static,combinational", help="comma-separated peers ('' for none)")
    p.add_argument("--tracker", default="sim", choices=("sim", "lk"), help="pseudo 2D tracks")
    p.add_argument("--depth", default="sim", choices=("sim", "sim-affine", "none"), help="pseudo mono-depth")
    p.add_argument("--steps", type=_nonneg_int, default=None, help="adaptation steps per video (default: adapt's)")
    p.add_argument("--lr", type=float, default=None, help="adaptation learning rate (default: adapt's)")
    p.add_argument("--pairs-per-step", type=_nonneg_int, default=None,
                   help="pairs (0, j) per adaptation step, 0 = all (default: adapt's)")
    p.add_argument("--query-stride", type=_positive_int, default=4, help="queries on this pixel grid")
    p.add_argument("--checkpoint", default=None, help="model file (default: data/tiny.pt)")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--check", default=None, metavar="REF", help="reference results.json to reproduce and compare")
    p.add_argument("--results", default=None, help="with --check: compare this results.json instead of re-running")
    p.set_defaults(func=_run_ablation)


def _run_ablation(args: argparse.Namespace) -> None:
    from st4r_lite.studies import ablation

    text = ablation.run_ablation_cli(args)
    print(text)
    if args.check and text.startswith("MISMATCH"):
        raise UserError("the run does not match the reference (see above)")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write one self-contained interactive HTML report of an ablation folder (opens offline)",
        description="Tables, plots and 3D views (track trails, reconstructions with a time slider, camera "
        "frustums, before/after adaptation, occlusion mask vs ground-truth visibility) of `st4r-lite ablation` "
        "output, as one HTML file with plotly.js inline.",
    )
    p.add_argument("--ablation", required=True, help="folder written by `st4r-lite ablation --out`")
    p.add_argument("--out", default=None, help="output .html (default: <ablation>/report.html)")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> None:
    from st4r_lite.studies import report

    print(f"wrote {report.build_report(args.ablation, args.out)}")


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_generate,
    _add_view,
    _add_pretrain,
    _add_export,
    _add_demo,
    _add_slides,
    _add_bench,
    _add_run,
    _add_adapt,
    _add_evaluate,
    _add_ablation,
    _add_report,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="st4r-lite",
        description="St4RTrack, compact: 4D reconstruction and 3D tracking in the world frame, for teaching.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (UserError, ValueError, FileNotFoundError, PermissionError, NotADirectoryError,
            IsADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
