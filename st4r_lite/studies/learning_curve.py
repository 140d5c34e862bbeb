"""The learning curve of a pretraining run: held-out APD against pairs seen, read from its metrics log.

``st4r-lite pretrain --eval-every N`` appends one JSON line per logged step (``{"step", "lr", "total", ...}``)
and one per evaluation (``{"step", "eval": {"track", "static", "recon", ...}}``) to its log. This module reads
that log (plain JSON, never executed), pairs each evaluation with the number of training pairs seen by then

    pairs_seen(step) = step · batch · frames · processes        (batch, frames from the run's TrainConfig)

and draws tracking APD (all points, moving points), the static baseline's APD on moving points and the
reconstruction APD (median alignment) against it, next to the training loss.

A run in stages (a fine-tune that continues a run with ``pretrain --init``) passes its logs in order: each later
log's steps continue after the previous log's last step, and the plot marks where a stage begins.

``python -m st4r_lite.studies.learning_curve data/tiny_train_log.jsonl --pairs-per-step 16 --png data/tiny_learning_curve.png``
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from st4r_lite.errors import InputError
from st4r_lite.runtime import atomic_write

CURVES = {  # label -> path into an "eval" record (median alignment)
    "tracking APD, all points": ("track", "median", "apd"),
    "tracking APD, moving points": ("track", "median", "apd_dynamic"),
    "static baseline, moving points": ("static", "median", "apd_dynamic"),
    "reconstruction APD": ("recon", "median", "apd"),
}


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(training records, evaluation records) of a pretrain log, each sorted by step. Lines that are not JSON
    objects with an integer "step" raise InputError naming the line."""
    train, evals = [], []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: line {i} is not JSON ({err.msg}); is this a pretrain log?") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            raise InputError(f"{path}: line {i} has no integer 'step'; is this a pretrain log?")
        (evals if "eval" in rec else train).append(rec)
    return sorted(train, key=lambda r: r["step"]), sorted(evals, key=lambda r: r["step"])


def read_stages(paths: list[str | Path]) -> tuple[list[dict], list[dict], list[int]]:
    """(training records, evaluation records, first step of each later stage) of logs run one after another:
    the steps of log k are shifted by the last step of logs 0..k-1, so they read as one run."""
    if not paths:
        raise InputError("give at least one pretrain log")
    train, evals, starts, offset = [], [], [], 0
    for k, path in enumerate(paths):
        t, e = read_log(path)
        if k:
            starts.append(offset)
        train += [{**r, "step": r["step"] + offset} for r in t]
        evals += [{**r, "step": r["step"] + offset} for r in e]
        offset = max([r["step"] for r in t + e], default=0) + offset
    return train, evals, starts


def curve_points(evals: list[dict], pairs_per_step: int) -> dict[str, list[tuple[int, float]]]:
    """{label: [(pairs seen, value), ...]} for every label of CURVES present in the evaluation records."""
    out: dict[str, list[tuple[int, float]]] = {}
    for label, (part, align, key) in CURVES.items():
        pts = []
        for rec in evals:
            value = rec["eval"].get(part, {}).get(align, {}).get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                pts.append((rec["step"] * pairs_per_step, float(value)))
        if pts:
            out[label] = pts
    return out


def plot_curve(log: str | Path | list, pairs_per_step: int, png: str | Path | None = None, title: str = ""):
    """A matplotlib figure: held-out APD curves (left) and the training loss (right) against pairs seen.
    ``log``: one log or the logs of successive stages (:func:`read_stages`). Written to ``png`` (atomically)
    when given; returns the figure."""
    import matplotlib.pyplot as plt

    logs = list(log) if isinstance(log, list | tuple) else [log]
    train, evals, starts = read_stages(logs)
    if not evals:
        raise InputError(f"{', '.join(map(str, logs))} holds no evaluation record: train with --eval-every N to "
                         "get a learning curve")
    fig, (ax, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    for label, pts in curve_points(evals, pairs_per_step).items():
        x, y = zip(*pts)
        ax.plot(x, y, marker="o", ms=3, label=label, ls="--" if label.startswith("static") else "-")
    ax.set_xlabel("training pairs seen")
    ax.set_ylabel("held-out APD (%), median alignment")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if train:
        x = [r["step"] * pairs_per_step for r in train]
        ax_loss.plot(x, [r.get("total", math.nan) for r in train], lw=0.8, color="tab:gray")
        ax_loss.set_xlabel("training pairs seen")
        ax_loss.set_ylabel("training loss (confidence-weighted)")
        ax_loss.grid(alpha=0.3)
    for k, step in enumerate(starts, 2):
        for a in (ax, ax_loss):
            a.axvline(step * pairs_per_step, color="k", lw=0.8, ls=":")
        ax.text(step * pairs_per_step, 97, f" stage {k}", fontsize=8, va="top")
    fig.suptitle(title or "learning curve of " + " then ".join(Path(p).name for p in logs), fontsize=10)
    fig.tight_layout()
    if png is not None:
        with atomic_write(Path(png), "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
    return fig


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.learning_curve LOG --pairs-per-step N [--png OUT]``."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.learning_curve",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("log", nargs="+", help="a pretrain metrics log (JSON lines), e.g. data/tiny_train_log.jsonl; "
                    "several for a run in stages, in order")
    ap.add_argument("--pairs-per-step", type=int, required=True, help="batch x frames x processes of the run")
    ap.add_argument("--png", default=None, help="write the plot here")
    args = ap.parse_args(argv)
    if args.pairs_per_step < 1:
        ap.error("--pairs-per-step must be >= 1")
    _, evals, _ = read_stages(args.log)
    for label, pts in curve_points(evals, args.pairs_per_step).items():
        print(f"{label:32s} " + "  ".join(f"{x // 1000}k:{y:.1f}" for x, y in pts))
    if args.png:
        plot_curve(args.log, args.pairs_per_step, args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
