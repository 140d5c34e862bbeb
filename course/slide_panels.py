"""The deck's result panels: each placeholder ``{{name}}`` of ``slides/deck.<lang>.md`` is filled by
``PANELS[name](data_dir)`` from a recorded result file (``SOURCES[name]``: the file and the command that makes it),
or is None when that file is missing (``course.slides`` then shows the command to run).

Every panel returns Markdown; numbers come from the files only, never from this module.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

# The reference ablation's exact command is recorded in its results.json; --check re-runs that configuration.
ABLATION_CMD = "st4r-lite ablation --check data/ablation_quick/results.json"

# Where each result comes from, and the command that (re)makes it.
SOURCES: dict[str, tuple[str, str]] = {
    "tiny_eval": ("tiny_eval.json", "st4r-lite export runs/tiny_v4.pt data/tiny.pt --eval data/tiny_eval.json (make tiny-checkpoint, stage 3)"),
    "ablation_table": ("ablation_quick/results.md", ABLATION_CMD),
    "ablation_plot": ("ablation_quick/ablation_apd.png", ABLATION_CMD),
    "ablation_paired_plot": ("ablation_quick/ablation_paired.png",
                             ABLATION_CMD),
    "world_stats": ("world_stats.json", "python -m st4r_lite.studies.world_stats --out data/world_stats.json"),
    "quality_ceiling": ("quality_ceiling.json",
                        "python -m st4r_lite.studies.ceiling --model data/tiny.pt --json data/quality_ceiling.json"),
    "motion_probe": ("motion_probe.json", "python -m st4r_lite.studies.motion_probe data/tiny.pt --json data/motion_probe.json"),
    "gpu_small": ("gpu_small/small_scorecard.json", "make gpu-small (tools/gpu_small.sh, on a CUDA GPU)"),
    "moving_ladder": ("match_track/scorecard64_tiny.json",
                      "python -m st4r_lite.studies.scorecard data/tiny.pt --num-clips 64 --frames 16 "
                      "--json data/match_track/scorecard64_tiny.json"),
}


# ------------------------------------------------------------------------------------------- result panels
def _load_json(data_dir: Path, name: str):
    """The parsed result file of panel ``name`` (``SOURCES``), or None when it is not there yet."""
    path = data_dir / SOURCES[name][0]
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 10 else f"{x:.2f}"
    return str(x)


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def json_table(data: dict, max_rows: int = 14) -> str:
    """A Markdown table of the numeric leaves of a results JSON (``key | value``), the first ``max_rows``."""
    rows = list(_flat(data).items())[:max_rows]
    if not rows:
        return "_(no numbers in this file)_"
    lines = ["| quantity | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(lines)


def _tiny_eval(data_dir: Path) -> str | None:
    data = _load_json(data_dir, "tiny_eval")
    if data is None:
        return None
    head = data.get("headline", {}).get("median") if isinstance(data, dict) else None
    if not head:
        return json_table(data.get("metrics", data))
    rows = ["| median alignment | tiny checkpoint | static baseline |", "|---|---|---|",
            f"| tracking APD, all (%) | {_fmt(head['apd'])} | {_fmt(head['static_apd'])} |",
            f"| tracking APD, dynamic (%) | {_fmt(head['apd_dyn'])} | {_fmt(head['static_apd_dyn'])} |",
            f"| tracking EPE (m) | {_fmt(head['epe'])} | – |",
            f"| reconstruction APD (%) | {_fmt(head['recon_apd'])} | – |"]
    bar = data.get("quality_bar")
    if isinstance(bar, dict):
        rows.append(f"\nBar (dynamic APD ≥ static + 15): **{'met' if bar.get('met') else 'not met'}** "
                    f"(gap {bar.get('gap_points')} points)")
    return "\n".join(rows)


def _ablation_table(data_dir: Path) -> str | None:
    """The first Markdown table of results.md (the summary; its prose and the paired table do not fit a slide)."""
    path = data_dir / SOURCES["ablation_table"][0]
    if not path.is_file():
        return None
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return "_(no table in this file)_"
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def _png(data_dir: Path, name: str) -> str | None:
    path = data_dir / SOURCES[name][0]
    if not path.is_file():
        return None
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<img alt="{html.escape(path.name)}" style="max-height:560px;max-width:100%;margin:0" '
            f'src="data:image/png;base64,{b64}">')


def _ablation_plot(data_dir: Path) -> str | None:
    return _png(data_dir, "ablation_plot")


def _ablation_paired_plot(data_dir: Path) -> str | None:
    return _png(data_dir, "ablation_paired_plot")


def _world_stats(data_dir: Path) -> str | None:
    data = _load_json(data_dir, "world_stats")
    return None if data is None else json_table(data)


def _quality_ceiling(data_dir: Path) -> str | None:
    data = _load_json(data_dir, "quality_ceiling")
    if data is None:
        return None
    by_frames = data.get("by_frames", {})
    if not by_frames:
        return "_(no numbers in this file)_"
    frames = list(by_frames)
    head = "| ± log f (per moving object) | " + " | ".join(f"ideal / static, {T} frames" for T in frames) + " |"
    rows = [head, "|---" * (len(frames) + 1) + "|"]
    for i, r in enumerate(by_frames[frames[0]]["table"]):
        cells = []
        for T in frames:
            row = by_frames[T]["table"][i]
            cells.append(f"{row['ideal_apd_dyn']:.1f} / {row['static_apd_dyn']:.1f} (gap {row['gap']:+.1f})")
        rows.append(f"| {r['log_ambiguity']:.1f} | " + " | ".join(cells) + " |")
    models = [(T, e["model"]) for T, e in by_frames.items() if "model" in e]
    if models:
        cells = [f"{m['apd_dyn']:.1f} / {m['static_apd_dyn']:.1f} (gap {m['gap']:+.1f})" for _, m in models]
        err = models[0][1]["median_abs_log_depth_error"]
        rows.append(f"| model (median abs log err {err:.2f} ≈ ± {2 * err:.2f}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _motion_probe(data_dir: Path) -> str | None:
    """Held-out motion R² of the probed checkpoint, then its one-batch overfit: on that batch and on held-out clips."""
    data = _load_json(data_dir, "motion_probe")
    if data is None:
        return None
    held, fit = data.get("heldout", {}), data.get("overfit", {})
    rows = ["| motion of the moving pixels, fit to the truth | R² | cosine | length ratio |", "|---|---|---|---|"]
    first = fit.get("checkpoint")   # the probed model; other checkpoints in the file are for the README
    for spec, f in held.items():
        if first is not None and spec != first:
            continue
        rows.append(f"| {html.escape(Path(spec).name)} on held-out clips | {f['r2']:+.2f} | {f['cos']:+.2f} | "
                    f"{f['ratio']:.2f} |")
    curve = fit.get("curve", [])
    if curve:
        last = curve[-1]
        rows.append(f"| the same net after {last['step']} steps on *one* batch, on that batch | {last['r2']:+.2f} | "
                    f"{last['cos']:+.2f} | {last['ratio']:.2f} |")
    after = fit.get("heldout_after")
    if after:
        rows.append(f"| … and then on the held-out clips | {after['r2']:+.2f} | {after['cos']:+.2f} | "
                    f"{after['ratio']:.2f} |")
    attention = data.get("attention") or []
    if attention:
        best = max(attention, key=lambda a: a["hit"])
        rows.append(f"\nTrack-branch cross-attention on the token the patch moved to: **{best['hit']:.0%}** at best "
                    f"(layer {best['layer']}); the same position would be right for {best['same_position']:.0%}, "
                    f"chance {best['chance']:.0%}")
    return "\n".join(rows)


def _gpu_small(data_dir: Path) -> str | None:
    """The small preset trained on a GPU: its scorecard beside its static peer, and the bench's throughput."""
    card = _load_json(data_dir, "gpu_small")
    if card is None:
        return None
    m, st, train = card["methods"]["model"], card["methods"]["static"], card.get("training", {})
    rows = ["| 16 held-out clips × 16 frames | small | its static peer |", "|---|---|---|",
            f"| tracking APD, all (%) | {m['apd']:.1f} | {st['apd']:.1f} |",
            f"| tracking APD, moving (%) | {m['apd_dynamic']:.1f} | {st['apd_dynamic']:.1f} |",
            f"| reconstruction APD (%) · depth AbsRel | {m['recon_apd']:.1f} · {m['abs_rel']:.3f} | – |"]
    note = []
    if train:
        gpu = str(train.get("hardware", "")).split(",")[0]
        note.append(f"{train.get('total_pairs_seen', 0) / 1000:.0f}k training pairs in "
                    f"{train.get('total_wall_s', 0) / 60:.1f} min on {html.escape(gpu)}")
    bench = data_dir / "gpu_small" / "bench_gpu.json"
    if bench.is_file():
        r = next((r for r in json.loads(bench.read_text())["results"] if r["preset"] == "small"), None)
        if r and r.get("train_mfu") is not None:
            note.append(f"the model alone {r['train_pairs_per_s']:.0f} training pairs/s, "
                        f"{r['train_flops_per_pair'] / 1e9:.0f} GFLOP a pair, MFU {100 * r['train_mfu']:.1f} %")
    if note:
        rows.append("\n" + "; ".join(note))
    return "\n".join(rows)


# the scorecard's rows that make one thing right at a time (names in st4r_lite.studies.scorecard), in ladder order
LADDER = (("model", "the model"), ("static", "static peer: nothing moves"),
          ("combinational", "LK peer: 2D tracks + its depth and cameras"),
          ("oracle_match_reg", "perfect lookup into its own frames"),
          ("oracle_placed", "objects placed at their true depth, its own motion"),
          ("oracle_placed_static", "objects placed, nothing moves"),
          ("oracle_motion", "true motion on its own anchor"),
          ("oracle_placed_motion", "objects placed + true motion"))


def _moving_ladder(data_dir: Path) -> str | None:
    """Moving-point APD of the shipped model with one part made true at a time (rows reading ground truth are
    ceilings, not peers), each against its static peer with the paired 95 % interval over the clips."""
    card = _load_json(data_dir, "moving_ladder")
    if card is None:
        return None
    methods, gaps, peer_gaps = card["methods"], card.get("oracle_gaps", {}), card.get("paired_gaps", {})
    n = card["settings"]["num_clips"]
    rows = [f"| {n} held-out clips × {card['settings']['frames']} frames | APD moving (%) | − static [95 % CI] |",
            "|---|---|---|"]
    for key, label in LADDER:
        if key not in methods:
            continue
        if key == "combinational":        # a peer: the column says how the model fares against it
            g, fmt = peer_gaps.get("combinational", {}).get("apd_dynamic"), "model − LK: {:+.1f} [{:+.1f}, {:+.1f}]"
        else:
            g = peer_gaps.get("static", {}).get("apd_dynamic") if key == "model" else gaps.get(key)
            fmt = "{:+.1f} [{:+.1f}, {:+.1f}]"
        cell = "—" if g is None else fmt.format(g["mean"], g["low"], g["high"]).replace("-", "−")
        rows.append(f"| {label} | {methods[key]['apd_dynamic']:.1f} | {cell} |")
    return "\n".join(rows)


PANELS = {"moving_ladder": _moving_ladder, "gpu_small": _gpu_small, "tiny_eval": _tiny_eval, "ablation_table": _ablation_table, "ablation_plot": _ablation_plot,
          "ablation_paired_plot": _ablation_paired_plot, "world_stats": _world_stats,
          "quality_ceiling": _quality_ceiling, "motion_probe": _motion_probe}


def _provenance(data_dir: Path) -> str:
    lines = ["| result | file | made by |", "|---|---|---|"]
    for name, (rel, command) in SOURCES.items():
        present = "✓" if (data_dir / rel).exists() else "✗ (missing)"
        lines.append(f"| {name} | `data/{rel}` {present} | `{command}` |")
    return "\n".join(lines)


