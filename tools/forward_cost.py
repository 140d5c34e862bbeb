"""Time and peak tensor memory of our own no-grad forward (and of one DPT head alone), as JSON.

    OMP_NUM_THREADS=1 nice -n 10 python tools/forward_cost.py --preset full --size 224 224 --repeats 3 \
        --label after --json data/forward_cost_full_224.json

With ``--json`` an existing file gains this run under ``runs[label]`` (so a before and an after run sit side by
side). Memory is the peak of live tensor bytes allocated during the forward
(:class:`st4r_lite.studies.reference_compare.TensorMemoryTracker`); time is the median of ``--repeats`` forwards
after one untimed one. Random weights (seed 0), random images in [-1, 1].
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from st4r_lite.model.config import get_config
from st4r_lite.model.network import build_model
from st4r_lite.studies.bench import hardware_info
from st4r_lite.studies.reference_compare import peak_forward_bytes


def measure(preset: str, size: tuple[int, int], batch: int, repeats: int) -> dict:
    cfg = get_config(preset)
    model = build_model(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    img1, img2 = (torch.rand(batch, 3, *size, generator=g) * 2 - 1 for _ in range(2))
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            model(img1, img2)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - t0)
        dec = model.forward_debug(img1, img2).dec1
    result = {"forward_s": statistics.median(times), "forward_times_s": times,
              "forward_peak_bytes": peak_forward_bytes(lambda: model(img1, img2))}
    if cfg.head_type == "dpt":
        result["head_peak_bytes"] = peak_forward_bytes(lambda: model.downstream_head1(dec, size))
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="full")
    p.add_argument("--size", type=int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--label", default="run", help="name of this run in the JSON (e.g. before, after)")
    p.add_argument("--json", default=None, help="add the run to this file")
    args = p.parse_args(argv)
    result = measure(args.preset, tuple(args.size), args.batch, args.repeats)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result.update(commit=commit, command="OMP_NUM_THREADS=1 nice -n 10 python tools/forward_cost.py "
                  + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(result, indent=1))
    if args.json:
        path = Path(args.json)
        doc = json.loads(path.read_text()) if path.exists() else {
            "preset": args.preset, "img_size": list(args.size), "batch": args.batch,
            "memory_method": "peak live tensor bytes allocated during one no-grad forward (TensorMemoryTracker)",
            "hardware": hardware_info("cpu"), "runs": {}}
        doc["runs"][args.label] = result
        path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
