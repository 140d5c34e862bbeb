"""``st4r-lite evaluate``, ``ablation`` and ``report``: scoring, the reproducible ablation, its HTML report."""

from __future__ import annotations

import argparse
import json

from st4r_lite.adapt.variants import variants_help
from st4r_lite.app.frames import sequence_to_network
from st4r_lite.cli.args import nonneg_int, positive_int
from st4r_lite.errors import InputError
from st4r_lite.eval import baselines, evaluate
from st4r_lite.geometry import track_metrics
from st4r_lite.model import resolve
from st4r_lite.runtime import atomic_write, check_writable, pick_device, to_jsonable
from st4r_lite.studies import ablation, report


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="world-frame evaluation of a model on WorldTrack .npz sequences (tracking, recon, depth, cameras)",
        description="Run a model on every pair (0, t) of each sequence and score it in the world frame (docs/method.md §7): "
        "tracking APD/EPE (all and dynamic, median and sim3 alignment), recon APD/EPE, depth AbsRel and δ<1.25, "
        "camera ATE/RPE after Sim(3), occlusion-mask precision/recall. Files without a depth map (official "
        "WorldTrack files) skip the recon and depth metrics and say so.",
    )
    p.add_argument("--checkpoint", required=True, help=resolve.SPEC_HELP)
    p.add_argument("--data", required=True, help="a folder of .npz sequences or one .npz file")
    p.add_argument("--json", default=None, metavar="OUT", help="write per-sequence and mean numbers here")
    p.add_argument("--alignment", default="median,sim3", help="comma-separated: median, sim3, none")
    p.add_argument("--peers", default="", help="also score peers on the same data: static,combinational")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--resize", default="model", choices=("model", "none"),
                   help="bring the frames to the model's size like `run` does (scale + centre crop, intrinsics "
                   "mapped; default), or keep the file's size (a 540x960 file then runs for hours on a CPU)")
    p.add_argument("--portrait", default="native", choices=("native", "crop"),
                   help="portrait videos: portrait network size (native) or crop a landscape band")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> None:
    print(run_evaluate_cli(args))


def _add_ablation(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablation",
        help="run the adaptation variants and the peers over benchmark sequences and seeds (reproducible)",
        description=f"Adapt the model with each variant ({variants_help()}) on the same videos and pseudo-labels per seed, add the static and combinational peers, and "
        "write results.json, results.md (mean ± std across seeds, paired differences to baseline with 95% "
        "t intervals), PNG plots and views.npz into --out. With --check REF: re-run REF's configuration (or "
        "compare --results) and say whether the numbers match the reference within tolerance.",
    )
    p.add_argument("--benchmark", default="worldtrack-lite", help="named benchmark, or a folder / .npz of sequences")
    p.add_argument("--domain", default="wild", help="part of a named benchmark (default: the held-out 'wild')")
    p.add_argument("--max-seqs", type=positive_int, default=None, help="use only the first N sequences")
    p.add_argument("--frames", type=positive_int, default=None, help="use only the first F frames")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (pseudo-label noise, adaptation)")
    p.add_argument("--variants", default=",".join(ablation.DEFAULT_VARIANTS), help="comma-separated variants")
    p.add_argument("--peers", default="static,combinational", help="comma-separated peers ('' for none)")
    p.add_argument("--tracker", default="sim", choices=("sim", "sim-latch", "lk"),
                   help="pseudo 2D tracks (sim-latch: a simulated tracker that latches onto occluders)")
    p.add_argument("--depth", default="sim", choices=("sim", "sim-affine", "none"), help="pseudo mono-depth")
    p.add_argument("--steps", type=nonneg_int, default=None, help="adaptation steps per video (default: adapt's)")
    p.add_argument("--lr", type=float, default=None, help="adaptation learning rate (default: adapt's)")
    p.add_argument("--pairs-per-step", type=nonneg_int, default=None,
                   help="pairs (0, j) per adaptation step, 0 = all (default: adapt's)")
    p.add_argument("--query-stride", type=positive_int, default=4, help="queries on this pixel grid")
    p.add_argument("--checkpoint", default=None, help=resolve.SPEC_HELP)
    p.add_argument("--no-reanchor", action="store_true",
                   help="keep the adapted tracks as the steps left them (no re-anchoring on the mono-depth): "
                   "isolates what the mask and sigma^2 change in the steps")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--check", default=None, metavar="REF", help="reference results.json to reproduce and compare")
    p.add_argument("--results", default=None, help="with --check: compare this results.json instead of re-running")
    p.set_defaults(func=_run_ablation)


def _run_ablation(args: argparse.Namespace) -> None:
    text = ablation.run_ablation_cli(args)
    print(text)
    if args.check and text.startswith("MISMATCH"):
        raise InputError("the run does not match the reference (see above)")


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
    print(f"wrote {report.build_report(args.ablation, args.out)}")


def run_evaluate_cli(args) -> str:
    """``st4r-lite evaluate``: load the model and the sequences, score, optionally write JSON; returns a summary."""
    alignments = tuple(a.strip() for a in args.alignment.split(",") if a.strip())
    bad = [a for a in alignments if a not in track_metrics.ALIGNMENTS]
    if bad or not alignments:
        raise InputError(f"--alignment must list some of {track_metrics.ALIGNMENTS}, got {args.alignment!r}")
    if args.json:
        check_writable(args.json, what="--json")
    device = pick_device(getattr(args, "device", None))
    peers = tuple(p.strip() for p in (getattr(args, "peers", "") or "").split(",") if p.strip())
    bad = [p for p in peers if p not in ("static", "combinational")]
    if bad:
        raise InputError(f"--peers must list some of static, combinational; got {bad}")
    model = resolve.load(args.checkpoint, device=device)
    prepare = None
    if getattr(args, "resize", "model") == "model":
        def prepare(seq):
            return sequence_to_network(seq, model.config, getattr(args, "portrait", "native"))[0]
    sequences = evaluate.load_sequences(args.data, prepare=prepare)
    report = evaluate.evaluate_model(model, sequences, alignments)
    text = f"{len(sequences)} sequence(s)\n" + evaluate.format_summary(report)
    doc = {"checkpoint": str(args.checkpoint), "data": str(args.data), **to_jsonable(report), "peers": {}}
    for peer in peers:
        peer_report = baselines.evaluate_peer(model, sequences, peer, alignments)
        doc["peers"][peer] = to_jsonable(peer_report)
        text += f"\n--- peer: {peer} ---\n" + evaluate.format_summary(peer_report)
    for r in report["sequences"]:
        for note in r["notes"]:
            print(f"note ({r['name']}): {note}")
    if args.json:
        with atomic_write(args.json, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
    return text
