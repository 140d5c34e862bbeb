"""How long `make tiny-checkpoint` takes on this machine, measured without running it: each of its three stages
runs for a few steps in a scratch folder, with the same arguments and the same number of torch threads, and the
seconds a step are multiplied by the stage's steps.

    python -m st4r_lite.studies.recipe_timing --threads 2 --steps 60 --json data/tiny_recipe_timing.json

A candidate third stage is timed alone with ``--stages stage3 --stage3-extra "FLAGS" [--stage3-steps N]`` (from
``--prev``, data/tiny.pt by default): whether the recipe with it still fits its budget.

A training step's cost does not depend on the weights, so stages 2 and 3 start (``--init``) from the scratch
stage 1 instead of the real one. Per stage the JSON holds the measured seconds a step (steps 11 … N: the first ten
include one-off set-up), the process's wall time, and the projection steps × s/step plus one held-out check every
400 steps (the recipe's ``--eval-every``), each costed at the measured check of the scratch run's last step. The
stages' arguments are :data:`STAGES`; ``tests/test_recipe_timing.py`` checks that the Makefile runs the same ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from st4r_lite.runtime import atomic_write, hardware_info

__all__ = ["STAGES", "EVAL_EVERY", "time_stage", "project", "main"]

EVAL_EVERY = 400
COMMON = ["--batch", "2", "--frames", "8", "--dynamic-factor", "0", "--eval-every", str(EVAL_EVERY),
          "--save-every", "100", "--no-progress"]
# name -> (total steps, the arguments that differ between stages); "{prev}" is the previous stage's run file
STAGES: dict[str, tuple[int, list[str]]] = {
    "stage1": (3600, ["--preset", "tiny", "--lr", "5e-4", "--warmup", "100", "--max-frame-gap", "2.5"]),
    "stage2": (2400, ["--init", "{prev}", "--lr", "2e-4", "--warmup", "50", "--max-frame-gap", "4",
                      "--motion-weight", "3"]),
    "stage3": (3600, ["--init", "{prev}", "--lr", "2e-4", "--warmup", "50", "--max-frame-gap", "4",
                      "--motion-weight", "3"]),
}


def time_stage(args: list[str], total: int, steps: int, out: Path, threads: int) -> dict:
    """Run ``st4r-lite pretrain ARGS --steps TOTAL --stop-at STEPS --out OUT`` with ``threads`` torch threads and
    return {"s_per_step", "process_s", "check_s"} (the last: the process's time beyond its training steps, i.e.
    start-up plus the held-out check at the stop, an upper bound of one check)."""
    assert steps > 10, "time at least 11 steps: the first ten are left out"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "st4r_lite.cli", "pretrain", *args, *COMMON, "--steps", str(total),
           "--stop-at", str(steps), "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    process_s = time.perf_counter() - t0
    rows = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed_s"] for r in rows if "elapsed_s" in r}
    per_step = (elapsed[steps] - elapsed[10]) / (steps - 10)
    return {"s_per_step": round(per_step, 4), "process_s": round(process_s, 1),
            "check_s": round(max(process_s - elapsed[steps], 0.0), 1)}


def project(measured: dict[str, dict], totals: dict[str, int] | None = None) -> dict:
    """Projected minutes of each stage and hours in all: steps × s/step + (steps // EVAL_EVERY) checks (``totals``:
    a stage's steps where they differ from :data:`STAGES`')."""
    stages = {}
    for name, m in measured.items():
        total = (totals or {}).get(name, STAGES[name][0])
        stages[name] = round((total * m["s_per_step"] + total // EVAL_EVERY * m["check_s"]) / 60, 1)
    return {"minutes": stages, "hours": round(sum(stages.values()) / 60, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the Makefile's TINY_THREADS)")
    p.add_argument("--steps", type=int, default=60, help="steps timed per stage (> 10)")
    p.add_argument("--json", type=Path, default=None, help="write the measurement here")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES),
                   help="time only these stages (default: all three)")
    p.add_argument("--prev", default="data/tiny.pt",
                   help="weights the first timed stage starts from when it is not stage 1 (a step's cost does not "
                   "depend on them; default data/tiny.pt)")
    p.add_argument("--stage3-steps", type=int, default=STAGES["stage3"][0],
                   help="a candidate stage 3's length (default the Makefile's)")
    p.add_argument("--stage3-extra", default="",
                   help="flags added to stage 3, e.g. \"--match-track 64 --match-pixel\": a candidate stage 3 timed")
    args = p.parse_args(argv)
    if args.steps <= 10:
        p.error("--steps must be above 10 (the first ten steps are not timed)")
    extra = {"stage3": shlex.split(args.stage3_extra)}
    totals = {name: (args.stage3_steps if name == "stage3" else STAGES[name][0]) for name in args.stages}
    measured, prev = {}, args.prev
    with tempfile.TemporaryDirectory(prefix="st4r_timing_") as tmp:
        for name in args.stages:
            total, stage_args = totals[name], STAGES[name][1] + extra.get(name, [])
            out = Path(tmp) / f"{name}.pt"
            stage_args = [a.replace("{prev}", str(prev)) for a in stage_args]
            measured[name] = time_stage(stage_args, total, args.steps, out, args.threads)
            print(f"{name}: {measured[name]['s_per_step']:.3f} s a step, check {measured[name]['check_s']:.1f} s",
                  flush=True)
            prev = out
    doc = {"what": "make tiny-checkpoint's stages timed for a few steps each, projected to their full length",
           "command": "python -m st4r_lite.studies.recipe_timing " + shlex.join(sys.argv[1:] if argv is None else argv),
           "threads": args.threads, "steps_timed": args.steps, "stage_steps": totals,
           "stage3_extra": args.stage3_extra, "measured": measured, "projection": project(measured, totals),
           "hardware": hardware_info()}
    print(f"projected: {doc['projection']['minutes']} -> {doc['projection']['hours']} h")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.json, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
