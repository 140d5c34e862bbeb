"""``st4r-lite generate`` and ``st4r-lite view``: the synthetic world's benchmark files and 3D views."""

from __future__ import annotations

import argparse

from st4r_lite.app import sequence_view
from st4r_lite.cli.args import nonneg_int, positive_int
from st4r_lite.runtime import check_writable
from st4r_lite.world import benchmarks


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="write a synthetic WorldTrack benchmark set (.npz files) from the synthetic 4D world",
        description="Generate synthetic 4D sequences with exact ground truth and write them as WorldTrack-style "
        ".npz files. The same arguments always give the same files.",
    )
    p.add_argument("--domain", default="pretrain", help="'pretrain' (clean) or 'wild' (held-out shift)")
    p.add_argument("--num-seqs", type=positive_int, default=4, help="number of sequences")
    p.add_argument("--frames", type=positive_int, default=16, help="frames per sequence (T >= 1)")
    p.add_argument("--height", type=positive_int, default=64)
    p.add_argument("--width", type=positive_int, default=96)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--benchmark", default=None,
                   help="write a named fixed benchmark instead (e.g. 'worldtrack-lite'); overrides the sizes")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> None:
    if args.benchmark:
        paths = benchmarks.write_named_benchmark(args.benchmark, args.out)
    else:
        paths = benchmarks.write_benchmark(
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
    p.add_argument("--frames", type=positive_int, default=16)
    p.add_argument("--height", type=positive_int, default=64)
    p.add_argument("--width", type=positive_int, default=96)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--out", required=True, help="output .html file")
    p.set_defaults(func=_run_view)


def _run_view(args: argparse.Namespace) -> None:
    check_writable(args.out)
    path = sequence_view.write_sequence_html(
        args.out, npz=args.npz, domain=args.domain, frames=args.frames, height=args.height,
        width=args.width, seed=args.seed,
    )
    print(f"wrote {path}")
