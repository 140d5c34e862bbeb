"""The interactive ablation report (``st4r-lite report``): one self-contained HTML file, and the ablation plots.

Dimension letters: T frames, H, W image rows / columns (the views keep half resolution), N tracks.

:func:`build_report` reads an ablation folder (``results.json``, ``views.npz`` from ``st4r-lite ablation``) and
writes ONE HTML file that opens offline: plotly.js is inlined once, every figure is a ``<div>`` that uses it.
Contents: the table (mean ± std across seeds), the paired differences to ``baseline`` with 95 % intervals,
bar / interval / loss-curve plots, and 3D views of one sequence composed from ``st4r_lite.app.views``: world-frame
track trails over time (ground truth, before and after adaptation, side by side), reconstructions with a time
slider and the recovered camera frustums, and the occlusion mask next to ground-truth visibility.

Predictions are shown after the evaluation's median scaling (s = median‖gt‖ / median‖pred‖ of the tracks), so
ground truth and predictions share one scale; recon and camera centres get the same s.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from st4r_lite.app import views
from st4r_lite.errors import InputError
from st4r_lite.geometry.track_metrics import median_scale
from st4r_lite.runtime import atomic_write
from st4r_lite.studies import ablation_stats
from st4r_lite.studies.ablation_stats import KEY_METRICS, _fmt, hardware_summary, load_results

__all__ = ["ablation_plots_png", "summary_figure", "paired_figure", "loss_figure", "view_figures",
           "build_report", "table_html"]


def _key_metrics():
    return KEY_METRICS


def _val(x) -> float:
    return math.nan if x is None else float(x)


# A 95 % t interval from fewer pairs is too wide / unstable to read (t_{0.975, 1} = 12.7): show the mean and n only.
MIN_PAIRS_FOR_CI = 3


def _adaptation_phrase(doc: dict) -> str:
    """'15 steps at lr 3e-05, params all_but_encoder; re-anchoring on the mono-depth: on' from results.json."""
    a = doc.get("adapt_config") or {}
    if not a:
        return "settings not recorded"
    reanchor = {**ablation_stats.BEFORE_SETTING_EXISTED, **a}["reanchor"]   # a results.json older than the setting ran without it
    return (f"{a.get('steps')} steps at lr {a.get('lr')}, params {a.get('params')}; re-anchoring on the "
            f"mono-depth: {'on' if reanchor else 'off'}")


def _spread_phrase(doc: dict) -> str:
    """How the table's ± reads: 'mean ± std across 3 seeds', or, with one seed, that there is no spread."""
    k = len(doc["config"].get("seeds") or [])
    return f"mean ± std across {k} seeds" if k > 1 else "mean over runs; one seed, so no spread across seeds"


def _pair_counts(doc: dict) -> list[int]:
    """Sorted distinct numbers of (sequence, seed) pairs behind the paired differences."""
    return sorted({int(d["n"]) for per in (doc.get("paired") or {}).values() for d in per.values()
                   if d and d.get("n")})


def _has_ci(d: dict) -> bool:
    """Whether a paired-difference entry has an interval worth showing (n >= MIN_PAIRS_FOR_CI, finite)."""
    return (int(d.get("n") or 0) >= MIN_PAIRS_FOR_CI and d.get("ci_low") is not None
            and math.isfinite(_val(d.get("ci_low"))) and math.isfinite(_val(d.get("ci_high"))))


def _paired_phrase(doc: dict) -> str:
    """'95 % t interval over n = 9 pairs', or why there is none."""
    ns = _pair_counts(doc)
    n_txt = "n = " + "/".join(map(str, ns)) if ns else "n = 0"
    if ns and min(ns) >= MIN_PAIRS_FOR_CI:
        return f"mean [95% t interval] over {n_txt} (sequence, seed) pairs"
    return (f"mean over {n_txt} (sequence, seed) pairs; intervals shown only from {MIN_PAIRS_FOR_CI} pairs "
            "on (fewer cannot tell a difference from noise)")


def _row_groups(doc: dict, names: list[str]) -> list[tuple[str, list[str]]]:
    """Rows split into adaptation variants and peers (other methods), each group non-empty."""
    peers = set(doc["config"].get("peers") or [])
    groups = [("adaptation variants", [n for n in names if n not in peers]),
              ("peers (other methods)", [n for n in names if n in peers])]
    return [(g, ns) for g, ns in groups if ns]


# ----------------------------------------------------------------------------------------------- PNG plots
def ablation_plots_png(doc: dict, out) -> list[Path]:
    """Write ablation_apd.png (APD and EPE per row: mean, std across seeds, every run as a dot) and, when a
    baseline row exists, ablation_paired.png (paired differences to baseline with 95 % intervals)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    rows, summ = doc["rows"], doc["summary"]
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (key, label, unit) in zip(axes, (("track_apd_median", "tracking APD", "%"),
                                             ("track_epe_median", "tracking EPE", "m"))):
        means = [_val(summ[r].get(key, {}).get("mean")) for r in rows]
        stds = [_val(summ[r].get(key, {}).get("std_seeds")) for r in rows]
        x = np.arange(len(rows))
        several_seeds = len(doc["config"].get("seeds") or []) > 1
        ax.bar(x, means, yerr=np.nan_to_num(stds) if several_seeds else None, capsize=3, color="#8fb3d9")
        for i, r in enumerate(rows):
            pts = [_val(run["metrics"].get(key)) for run in doc["runs"] if run["row"] == r]
            jitter = np.linspace(-0.2, 0.2, len(pts)) if len(pts) > 1 else np.zeros(len(pts))
            ax.plot(i + jitter, pts, "k.", ms=3)
        ax.set_xticks(x, rows, rotation=30, ha="right")
        ax.set_ylabel(f"{label} ({unit})")
        ax.set_title(f"{label}: {_spread_phrase(doc).split(';')[0]}, dots = runs", fontsize=10)
    fig.tight_layout()
    with atomic_write(out / "ablation_apd.png", "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    written.append(out / "ablation_apd.png")
    if doc.get("paired"):
        groups = _row_groups(doc, list(doc["paired"]))
        sizes = [len(ns) for _, ns in groups]
        fig, axes = plt.subplots(len(groups), 2, figsize=(11, 1.2 + 0.45 * sum(sizes) + 0.9 * len(groups)),
                                 squeeze=False, gridspec_kw=dict(height_ratios=sizes))
        for (group, names), ax_row in zip(groups, axes):
            for ax, key, label in zip(ax_row, ("track_apd_median", "track_epe_median"),
                                      ("Δ APD (%)", "Δ EPE (m)")):
                d = [doc["paired"][n].get(key, {}) for n in names]
                m = np.array([_val(x.get("mean_diff")) for x in d])
                half = np.array([[m_ - _val(x["ci_low"]), _val(x["ci_high"]) - m_] if _has_ci(x) else [0, 0]
                                 for x, m_ in zip(d, m)]).T.reshape(2, len(names))
                y = np.arange(len(names))
                ax.errorbar(m, y, xerr=half, fmt="o", capsize=3)
                ax.axvline(0, color="grey", lw=1)
                ax.set_yticks(y, names)
                ax.set_ylim(-0.6, len(names) - 0.4)
                ax.set_xlabel(f"{label}, row − baseline")
                ax.set_title(f"{group}: paired difference", fontsize=10)
        fig.suptitle(_paired_phrase(doc), fontsize=9)
        fig.tight_layout()
        with atomic_write(out / "ablation_paired.png", "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)
        written.append(out / "ablation_paired.png")
    return written


# ----------------------------------------------------------------------------------------------- plotly plots
def summary_figure(doc: dict) -> go.Figure:
    """Bars (mean ± std across seeds; no bar error with one seed) of APD, dynamic APD and EPE per row, runs as
    dots."""
    rows, summ = doc["rows"], doc["summary"]
    fig = make_subplots(1, 3, subplot_titles=("tracking APD (%)", "dynamic APD (%)", "tracking EPE (m)"))
    for c, key in enumerate(("track_apd_median", "track_apd_dyn_median", "track_epe_median"), start=1):
        fig.add_trace(go.Bar(x=rows, y=[_val(summ[r].get(key, {}).get("mean")) for r in rows], name=key,
                             error_y=dict(type="data", visible=len(doc["config"].get("seeds") or []) > 1,
                                          array=[_val(summ[r].get(key, {}).get("std_seeds")) for r in rows]),
                             marker_color="#8fb3d9", showlegend=False), 1, c)
        xs = [run["row"] for run in doc["runs"]]
        ys = [_val(run["metrics"].get(key)) for run in doc["runs"]]
        text = [f"{run['sequence']} seed {run['seed']}" for run in doc["runs"]]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=dict(color="black", size=4), text=text,
                                 showlegend=False, name="runs"), 1, c)
    fig.update_layout(height=400, margin=dict(l=40, r=10, t=60, b=80),
                      title=dict(text=f"per row: {_spread_phrase(doc)}; dots = runs", font=dict(size=13)))
    return fig


def paired_figure(doc: dict) -> go.Figure:
    """Paired differences to baseline of APD and EPE: the mean, and the 95 % t interval when it rests on at
    least ``MIN_PAIRS_FOR_CI`` pairs. Adaptation variants and peers get separate x axes (a peer that differs by
    10 points would squash the variants' differences of tenths into a dot)."""
    groups = _row_groups(doc, list(doc.get("paired") or {}))
    sizes = [len(ns) for _, ns in groups] or [1]
    titles = [f"{lab} vs baseline: {g}" for g, _ in groups for lab in ("Δ APD (%)", "Δ EPE (m)")]
    fig = make_subplots(max(len(groups), 1), 2, subplot_titles=titles, row_heights=sizes,
                        vertical_spacing=1.1 / (2 + sum(sizes)) if len(groups) > 1 else 0.0,
                        horizontal_spacing=0.16)
    for r, (_, names) in enumerate(groups, start=1):
        for c, key in enumerate(("track_apd_median", "track_epe_median"), start=1):
            d = [doc["paired"][n].get(key, {}) for n in names]
            m = [_val(x.get("mean_diff")) for x in d]
            hi = [_val(x["ci_high"]) - v if _has_ci(x) else 0.0 for x, v in zip(d, m)]
            lo = [v - _val(x["ci_low"]) if _has_ci(x) else 0.0 for x, v in zip(d, m)]
            text = [f"n = {x.get('n')}" + ("" if _has_ci(x) else " (no interval)") for x in d]
            fig.add_trace(go.Scatter(x=m, y=names, mode="markers", showlegend=False, marker=dict(size=9),
                                     text=text, error_x=dict(type="data", symmetric=False, array=hi,
                                                             arrayminus=lo)), r, c)
            fig.add_vline(x=0, line_color="grey", row=r, col=c)
    fig.update_layout(height=140 + 34 * sum(sizes) + 60 * len(groups), margin=dict(l=110, r=10, t=70, b=40),
                      title=dict(text=_paired_phrase(doc), font=dict(size=13)))
    return fig


def loss_figure(doc: dict) -> go.Figure:
    """Adaptation loss per step, one line per (row, sequence, seed)."""
    fig = go.Figure()
    colors = dict(zip(doc["rows"], views._track_colors(len(doc["rows"]))))
    shown = set()
    for run in doc["runs"]:
        if run.get("loss"):
            fig.add_trace(go.Scatter(y=run["loss"], mode="lines", name=run["row"], legendgroup=run["row"],
                                     showlegend=run["row"] not in shown, line=dict(color=colors[run["row"]]),
                                     hovertext=f"{run['sequence']} seed {run['seed']}"))
            shown.add(run["row"])
    fig.update_layout(height=320, xaxis_title="step", yaxis_title="total adaptation loss",
                      margin=dict(l=50, r=10, t=30, b=40), title="adaptation loss curves")
    return fig


# ----------------------------------------------------------------------------------------------- 3D views
def _scaled(v: dict, name: str) -> dict:
    """A prediction's arrays from views.npz, median-scaled to the ground truth (see module doc)."""
    tracks = v[f"{name}/tracks"].astype(np.float64)
    s = median_scale(torch.from_numpy(tracks), torch.from_numpy(v["gt_tracks"].astype(np.float64)))
    out = {"tracks": s * tracks, "scale": s}
    if f"{name}/recon" in v:
        out["recon"] = s * v[f"{name}/recon"].astype(np.float64)
    if f"{name}/T_world_cam" in v:
        T = v[f"{name}/T_world_cam"].astype(np.float64).copy()
        T[:, :3, 3] *= s
        out["T_world_cam"], out["K"] = T, v[f"{name}/K"].astype(np.float64)
    if f"{name}/visible" in v:
        out["visible"] = v[f"{name}/visible"]
    return out


def _half_K(K: np.ndarray) -> np.ndarray:
    """Intrinsics of the half-resolution views: pixel centres u' = u / 2 − 1/4."""
    Kh = K.copy()
    Kh[:2] *= 0.5
    Kh[:2, 2] -= 0.25
    return Kh


def view_figures(v: dict, after: str | None = None, max_trails: int = 80,
                 max_points_per_frame: int = 800) -> list[tuple[str, list[go.Figure]]]:
    """Sections of 3D / 2D views from a views.npz dict: [(title, [figures side by side]), ...].

    ``max_trails`` tracks (every k-th of the stored ones) and ``max_points_per_frame`` recon points per frame
    keep the HTML small (each figure stores every frame of its time slider)."""
    rows = sorted({k.split("/")[0] for k in v if "/" in k})
    before = "none" if "none" in rows else (rows[0] if rows else None)
    if after is None:
        adapted = [r for r in ("robust", "baseline", "mask", "sigma", "oracle_mask", "conf_sigma") if r in rows]
        after = adapted[0] if adapted else before
    images = v["images"].astype(np.float64) / 255.0
    K = v["K"].astype(np.float64)
    H, W = (int(x) for x in v["image_size"])
    sections = []
    trails = [views.sequence_figure(tracks=v["gt_tracks"].astype(np.float64), track_visible=v["gt_visible"],
                                    max_tracks=max_trails,
                                    T_world_cam=v["gt_T_world_cam"], K=K, image_size=(H, W),
                                    title="ground truth: tracks + cameras")]
    for name in dict.fromkeys([before, after]):
        if name is None:
            continue
        p = _scaled(v, name)
        trails.append(views.sequence_figure(tracks=p["tracks"], T_world_cam=p.get("T_world_cam"), K=p.get("K"),
                                            max_tracks=max_trails,
                                            image_size=(H, W), track_visible=p.get("visible"),
                                            title=f"{name}: tracks + recovered cameras (×{p['scale']:.2f})"))
    sections.append(("World-frame track trails over time (ground truth | before | after adaptation)", trails))
    recon_figs = []
    if "gt_points" in v:
        recon_figs.append(views.sequence_figure(v["gt_points"].astype(np.float64), images, v["gt_T_world_cam"],
                                                _half_K(K), title="ground-truth points per frame",
                                                max_points_per_frame=max_points_per_frame))
    for name in dict.fromkeys([before, after]):
        if name is None:
            continue
        p = _scaled(v, name)
        if "recon" in p:
            recon_figs.append(views.sequence_figure(p["recon"], images, p.get("T_world_cam"),
                                                    None if p.get("K") is None else _half_K(p["K"]),
                                                    title=f"{name}: reconstruction + cameras",
                                                    max_points_per_frame=max_points_per_frame))
    if recon_figs:
        sections.append(("Reconstructions with a time slider and camera frustums", recon_figs))
    masks = [(n, v[f"{n}/visible"]) for n in dict.fromkeys([before, after]) if n and f"{n}/visible" in v]
    if masks:
        fig = make_subplots(1, len(masks) + 1, subplot_titles=["ground-truth visibility"]
                            + [f"occlusion mask ({n})" for n, _ in masks], shared_yaxes=True)
        for c, m in enumerate([v["gt_visible"]] + [m for _, m in masks], start=1):
            fig.add_trace(go.Heatmap(z=m.astype(float).T, colorscale=[[0, "#d62728"], [1, "#2ca02c"]],
                                     zmin=0, zmax=1, showscale=False), 1, c)
            fig.update_xaxes(title_text="frame t", row=1, col=c)
        fig.update_yaxes(title_text="track n (dynamic first)", row=1, col=1)
        fig.update_layout(height=440, margin=dict(l=60, r=10, t=80, b=40),
                          title="green = visible / kept, red = occluded / masked out")
        sections.append(("The occlusion mask next to ground-truth visibility", [fig]))
    return sections


# ----------------------------------------------------------------------------------------------- HTML
def table_html(doc: dict) -> str:
    """The summary and paired tables as HTML (same numbers as results.md)."""
    km = _key_metrics()
    head = "".join(f"<th>{html.escape(lab)}{f' ({html.escape(u)})' if u else ''}</th>" for _, lab, u, _ in km)
    body = []
    for row in doc["rows"]:
        cells = []
        for key, _, unit, _ in km:
            m = doc["summary"].get(row, {}).get(key) or {}
            txt = _fmt(m.get("mean"), unit)
            sd = m.get("std_seeds")
            if sd is not None and math.isfinite(sd):
                txt += f" ± {_fmt(sd, unit)}"
            cells.append(f"<td>{html.escape(txt)}</td>")
        body.append(f"<tr><th>{html.escape(row)}</th>{''.join(cells)}</tr>")
    out = [f"<table><tr><th>row</th>{head}</tr>{''.join(body)}</table>"]
    if doc.get("paired"):
        body = []
        for row, per in doc["paired"].items():
            cells = []
            for key, _, unit, _ in km:
                d = per.get(key) or {}
                txt = _fmt(d.get("mean_diff"), unit)
                if _has_ci(d):
                    txt += f" [{_fmt(d['ci_low'], unit)}, {_fmt(d['ci_high'], unit)}]"
                cells.append(f"<td>{html.escape(txt)}</td>")
            body.append(f"<tr><th>{html.escape(row)}</th>{''.join(cells)}</tr>")
        out.append(f"<h3>Paired difference to baseline (row − baseline): {html.escape(_paired_phrase(doc))}</h3>"
                   + (f"<p>{html.escape(str(doc.get('ci_method', '')))}</p>" if min(_pair_counts(doc) or [0])
                      >= MIN_PAIRS_FOR_CI else "") + f"<table><tr><th>row</th>{head}</tr>{''.join(body)}</table>")
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;margin:1.5em;max-width:1500px} table{border-collapse:collapse;font-size:13px}"
        " td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        # a fixed grid: every column's width is known before any figure's script runs (a flex row grows its items
        # as they render, so each figure took the width that was free at its turn, and they overlapped)
        " .row{display:grid;gap:12px;grid-template-columns:repeat(var(--cols),minmax(0,1fr))}"
        " .row>div{min-width:0;border:1px solid #eee} img{max-width:100%} code{background:#f3f3f3}"
        " @media (max-width:900px){.row{grid-template-columns:minmax(0,1fr)}}")

# height of one 3D panel in the report (px); the slider and buttons take ~110 px of it
VIEW_HEIGHT = 560


def build_report(ablation_dir, out=None) -> Path:
    """Write the self-contained report of an ablation folder; returns the HTML path (default DIR/report.html)."""
    from plotly.offline import get_plotlyjs

    folder = Path(ablation_dir)
    doc = load_results(folder)
    out = Path(out) if out else (folder if folder.is_dir() else folder.parent) / "report.html"
    if out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give an .html file name")
    base = folder if folder.is_dir() else folder.parent

    def div(fig: go.Figure) -> str:
        return fig.to_html(full_html=False, include_plotlyjs=False, auto_play=False,
                           config={"displaylogo": False, "responsive": True})

    hw = hardware_summary(doc["hardware"])
    parts = [f"<h1>st4r_lite ablation report</h1><p>Command: <code>{html.escape(doc['command'])}</code><br>"
             f"Model: {html.escape(str(doc['model']))}; sequences: {html.escape(', '.join(doc['sequences']))}; "
             f"seeds {html.escape(str(doc['config']['seeds']))}; wall time {html.escape(str(doc['wall_time_s']))} s "
             f"on {html.escape(str(hw['cpu']))} ({html.escape(str(hw['torch_threads']))} threads)"
             f"<br>Adaptation: {html.escape(_adaptation_phrase(doc))}</p>"]
    parts += [f"<p><b>Note:</b> {html.escape(n)}</p>" for n in doc["config"].get("notes", [])]
    parts += [f"<h2>Results ({html.escape(_spread_phrase(doc))})</h2>", table_html(doc),
              "<p>How to read it: a difference matters only when its 95% interval excludes 0 and it is large "
              "against the spread across seeds; the oracle_mask row is an upper bound for what a better "
              "occlusion mask could give, not a method.</p>",
              "<h2>Plots</h2>", div(summary_figure(doc))]
    if doc.get("paired"):
        parts.append(div(paired_figure(doc)))
    if any(r.get("loss") for r in doc["runs"]):
        parts.append(div(loss_figure(doc)))
    for png in sorted(base.glob("ablation_*.png")):
        parts.append(f'<p><img alt="{html.escape(png.name, quote=True)}" src="data:image/png;base64,'
                     f'{base64.b64encode(png.read_bytes()).decode()}"></p>')
    vfile = base / "views.npz"
    if vfile.is_file():
        with np.load(vfile) as data:
            v = {k: data[k] for k in data.files}
        parts.append(f"<h2>3D views of {html.escape(str(v['name']))} (seed {html.escape(str(doc['config']['seeds'][0]))})</h2>")
        for title, figs in view_figures(v):
            for f in figs:
                if any(isinstance(t, go.Scatter3d) for t in f.data):  # 3D panels; the mask heatmaps keep theirs
                    f.update_layout(height=VIEW_HEIGHT)
            parts.append(f"<h3>{html.escape(title)}</h3><div class='row' style='--cols:{len(figs)}'>"
                         + "".join(f"<div>{div(f)}</div>" for f in figs) + "</div>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>st4r_lite ablation</title>"
            f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + "</body></html>")
    with atomic_write(out, "wb") as f:
        f.write(page.encode("utf-8"))
    return out
