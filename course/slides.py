"""The course deck: reveal.js slides built from the results the package produced (``make slides``).

The slide *text* lives in ``slides/deck.<lang>.md`` (English ``en`` and Vietnamese ``vi``), Markdown with one
slide per block separated by a line ``---``. Results enter through placeholders that this module fills from
the recorded result files (default: the repository's ``data/`` folder, see :func:`runtime.repo_data_dir`):

    {{tiny_eval}}        table: the shipped tiny checkpoint vs the static baseline  (data/tiny_eval.json)
    {{ablation_table}}   the ablation's summary table (the first table of data/ablation_quick/results.md)
    {{ablation_plot}}    the ablation's bar plot, embedded as an image (data/ablation_quick/ablation_apd.png)
    {{ablation_paired_plot}}  its paired differences to baseline (data/ablation_quick/ablation_paired.png)
    {{world_stats}}      speed and occlusion statistics of the synthetic world (data/world_stats.json)
    {{quality_ceiling}}  how far any model can beat the static baseline (data/quality_ceiling.json)
    {{provenance}}       which files the numbers came from, with the command that made each
    ::view3d::           (alone on a line) makes the slide an interactive Plotly 3D view of a synthetic scene

A missing result file never breaks the build and is never papered over: its placeholder becomes a visible
note "not produced yet: run <command>". The output is one HTML file per language with reveal.js (MIT,
vendored in ``course/revealjs``) inlined, plus one ``plotly.min.js`` beside them, so the decks open
offline from a folder (the 3D view needs that file; everything else is inside the HTML). Files are written
atomically.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from st4r_lite.runtime import atomic_write, ensure_writable_dir, repo_data_dir

LANGUAGES = ("en", "vi")
VENDOR = Path(__file__).resolve().parent / "revealjs"
SLIDE_SEPARATOR = re.compile(r"^---\s*$", re.MULTILINE)
PLACEHOLDER = re.compile(r"\{\{\s*([a-z0-9_]+)\s*\}\}")

# The reference ablation's exact command is recorded in its results.json; --check re-runs that configuration.
ABLATION_CMD = "st4r-lite ablation --check data/ablation_quick/results.json"

# Where each result comes from, and the command that (re)makes it.
SOURCES: dict[str, tuple[str, str]] = {
    "tiny_eval": ("tiny_eval.json", "st4r-lite export runs/tiny_v3.pt data/tiny.pt --eval data/tiny_eval.json (make tiny-checkpoint, stage 2)"),
    "ablation_table": ("ablation_quick/results.md", ABLATION_CMD),
    "ablation_plot": ("ablation_quick/ablation_apd.png", ABLATION_CMD),
    "ablation_paired_plot": ("ablation_quick/ablation_paired.png",
                             ABLATION_CMD),
    "world_stats": ("world_stats.json", "python -m st4r_lite.studies.world_stats --out data/world_stats.json"),
    "quality_ceiling": ("quality_ceiling.json",
                        "python -m st4r_lite.studies.ceiling --model data/tiny.pt --json data/quality_ceiling.json"),
}

NOT_YET = {"en": "not produced yet: run", "vi": "chưa có kết quả: chạy"}


@dataclass
class Deck:
    """One built deck: its language, the HTML file, and which result placeholders were filled or missing."""

    language: str
    path: Path
    filled: list[str]
    missing: list[str]


# ------------------------------------------------------------------------------------------- result panels
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
    path = data_dir / SOURCES["tiny_eval"][0]
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
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
    path = data_dir / SOURCES["world_stats"][0]
    return json_table(json.loads(path.read_text())) if path.is_file() else None


def _quality_ceiling(data_dir: Path) -> str | None:
    path = data_dir / SOURCES["quality_ceiling"][0]
    if not path.is_file():
        return None
    by_frames = json.loads(path.read_text()).get("by_frames", {})
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


PANELS = {"tiny_eval": _tiny_eval, "ablation_table": _ablation_table, "ablation_plot": _ablation_plot,
          "ablation_paired_plot": _ablation_paired_plot, "world_stats": _world_stats,
          "quality_ceiling": _quality_ceiling}


def _provenance(data_dir: Path) -> str:
    lines = ["| result | file | made by |", "|---|---|---|"]
    for name, (rel, command) in SOURCES.items():
        present = "✓" if (data_dir / rel).exists() else "✗ (missing)"
        lines.append(f"| {name} | `data/{rel}` {present} | `{command}` |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- 3D view
def view3d_html(seed: int = 0, frames: int = 8, height: int = 48, width: int = 72) -> str:
    """An interactive world-frame view (tracks over time + camera frustums) of one synthetic scene, as a div."""
    from st4r_lite.app import views
    from st4r_lite.world import render

    clip = render.generate_clips(1, frames=frames, height=height, width=width, domain="pretrain", seed=seed)
    colors = clip.rgb[0, 0].permute(1, 2, 0).expand(frames, height, width, 3)
    fig = views.sequence_figure(clip.track_world[0], colors=colors, T_world_cam=clip.T_world_cam[0],
                                K=clip.K[0], max_points_per_frame=3000)
    fig.update_layout(width=900, height=540, margin=dict(l=0, r=0, t=64, b=0),
                      title_text="¹X¹_t: anchor pixels over time, world frame (synthetic scene)")
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


# ----------------------------------------------------------------------------------------------- building
def _markdown_section(text: str) -> str:
    if "</textarea" in text.lower():
        raise ValueError("a slide must not contain '</textarea'")
    return f'<section data-markdown><textarea data-template>\n{text.strip()}\n</textarea></section>'


def render_slides(source: str, language: str, data_dir: Path, view3d: str | None = None
                  ) -> tuple[list[str], list[str], list[str]]:
    """Slide sections (HTML) from a deck source; returns (sections, filled placeholders, missing ones)."""
    filled: list[str] = []
    missing: list[str] = []

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name == "provenance":
            filled.append(name)
            return _provenance(data_dir)
        if name not in PANELS:
            raise ValueError(f"unknown placeholder {{{{{name}}}}} in the {language} deck; "
                             f"known: {sorted([*PANELS, 'provenance'])}")
        text = PANELS[name](data_dir)
        if text is None:
            missing.append(name)
            return f"**{NOT_YET[language]}** `{SOURCES[name][1]}`"
        filled.append(name)
        return text

    sections = []
    for block in SLIDE_SEPARATOR.split(source):
        if not block.strip():
            continue
        if "::view3d::" in block:
            title = html.escape(block.replace("::view3d::", "").strip().lstrip("#").strip())
            body = view3d if view3d is not None else view3d_html()
            sections.append(f"<section><h3>{title}</h3>\n{body}\n</section>")
            continue
        sections.append(_markdown_section(PLACEHOLDER.sub(fill, block)))
    return sections, filled, missing


def _page(title: str, language: str, sections: list[str]) -> str:
    css = (VENDOR / "reveal.css").read_text() + "\n" + (VENDOR / "white.css").read_text()
    js = (VENDOR / "reveal.js").read_text() + "\n" + (VENDOR / "markdown.js").read_text()
    # Sizes that fit the 1100 x 700 slide (tests/test_slides_fit.py renders every slide and checks it)
    extra_css = (".reveal{font-family:'Source Sans Pro',Helvetica,Arial,sans-serif;font-size:30px}"
                 " .reveal h1{font-size:1.7em} .reveal h2{font-size:1.3em} .reveal h3{font-size:1.1em}"
                 " .reveal h1,.reveal h2,.reveal h3{text-transform:none;margin-bottom:0.4em}"
                 " .reveal table{font-size:0.55em} .reveal table:not(:has(tr:nth-child(7))){font-size:0.75em}"
                 " .reveal table th,.reveal table td{padding:0.12em 0.45em}"
                 " .reveal table code{font-size:0.95em;word-break:break-word;white-space:normal}"
                 " .reveal .plotly-graph-div{margin:0 auto}")
    return "\n".join([
        "<!doctype html>", f'<html lang="{language}"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{css}\n{extra_css}</style>",
        '<script src="plotly.min.js"></script>',
        '</head><body><div class="reveal"><div class="slides">',
        *sections,
        "</div></div>",
        f"<script>{js}</script>",
        "<script>Reveal.initialize({hash: true, width: 1100, height: 700, plugins: [RevealMarkdown]});</script>",
        "</body></html>",
    ])


def build_decks(out: str | Path, *, sources_dir: str | Path | None = None, data_dir: str | Path | None = None,
                languages: tuple[str, ...] = LANGUAGES) -> list[Deck]:
    """Build ``out/st4r_lite.<lang>.html`` for each language (+ ``out/plotly.min.js``); returns the decks.

    sources_dir: where ``deck.<lang>.md`` live (default: the repository's ``slides/``); data_dir: the results
    (default: the repository's ``data/``).
    """
    import plotly

    out = ensure_writable_dir(out)
    sources_dir = Path(sources_dir) if sources_dir is not None else Path(__file__).resolve().parents[1] / "slides"
    data_dir = Path(data_dir) if data_dir is not None else repo_data_dir()
    for lang in languages:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown slide language {lang!r}; choose from {LANGUAGES}")
        if not (sources_dir / f"deck.{lang}.md").is_file():
            raise FileNotFoundError(f"no slide source {sources_dir / f'deck.{lang}.md'}: run from the repository, "
                                    "or pass --sources pointing at the folder with deck.<lang>.md")
    view = view3d_html()
    decks = []
    for lang in languages:
        source = (sources_dir / f"deck.{lang}.md").read_text(encoding="utf-8")
        sections, filled, missing = render_slides(source, lang, data_dir, view3d=view)
        title = source.lstrip().splitlines()[0].lstrip("#").strip() or "st4r_lite"
        path = out / f"st4r_lite.{lang}.html"
        with atomic_write(path, "wb") as f:
            f.write(_page(title, lang, sections).encode("utf-8"))
        decks.append(Deck(lang, path, filled, missing))
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with atomic_write(out / "plotly.min.js", "wb") as f:
        f.write(plotly_js.read_bytes())
    return decks


# ------------------------------------------------------------------------------------------ README picture
def overview_png(out: str | Path, seed: int = 3, frames: int = 12, height: int = 96, width: int = 144) -> Path:
    """The README's picture: anchor frame, a later frame, and the world-frame 3D tracks + camera path.

    Drawn with matplotlib from a synthetic clip's ground truth (what St4RTrack learns to predict):
    ¹X¹_t for t = 0..T-1 as trails (moving anchor pixels coloured, static ones grey), camera centres of T_world_cam.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import torch

    from st4r_lite.world import render

    clip = render.generate_clips(1, frames=frames, height=height, width=width, domain="pretrain", seed=seed)
    fig = plt.figure(figsize=(12, 3.6), dpi=110)
    for i, (t, label) in enumerate([(0, "anchor frame I₁ (defines the world)"),
                                    (frames - 1, f"frame I_{frames} (camera and objects moved)")]):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(clip.rgb[0, t].permute(1, 2, 0).numpy())
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    ax = fig.add_subplot(1, 3, 3, projection="3d")
    tracks = clip.track_world[0]                      # (T, H, W, 3)
    dyn = clip.track_dynamic[0]
    g = torch.Generator().manual_seed(0)
    idx_static = torch.nonzero(~dyn.flatten()).flatten()
    idx_dyn = torch.nonzero(dyn.flatten()).flatten()
    pick_s = idx_static[torch.randperm(len(idx_static), generator=g)[:600]]
    pick_d = idx_dyn[torch.randperm(len(idx_dyn), generator=g)[:150]]
    flat = tracks.reshape(frames, -1, 3)
    anchor_rgb = clip.rgb[0, 0].permute(1, 2, 0).reshape(-1, 3)
    s = flat[0, pick_s]
    ax.scatter(s[:, 0], s[:, 2], -s[:, 1], s=1, c=anchor_rgb[pick_s].numpy(), alpha=0.5)
    for n in pick_d.tolist():
        path = flat[:, n]
        ax.plot(path[:, 0], path[:, 2], -path[:, 1], lw=0.8, color=tuple(anchor_rgb[n].tolist()))
    cams = clip.T_world_cam[0, :, :3, 3]
    ax.plot(cams[:, 0], cams[:, 2], -cams[:, 1], "k.-", lw=1.5, ms=3, label="camera path")
    ax.set_title("¹X¹_t: anchor pixels over time, world frame", fontsize=10)
    ax.set_xlabel("x")
    ax.set_ylabel("z")
    ax.set_zlabel("-y")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m course.slides [--out slides/build] ...`` builds the decks (``make slides``);
    ``python -m course.slides overview OUT.png`` draws the README's overview figure."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["overview"]:
        if len(argv) != 2:
            print("usage: python -m course.slides overview OUT.png", file=sys.stderr)
            return 2
        print(f"wrote {overview_png(argv[1])}")
        return 0
    p = argparse.ArgumentParser(
        prog="python -m course.slides",
        description="Fill slides/deck.<lang>.md with the results under data/ and write one HTML deck per language "
        "(reveal.js inline) plus plotly.min.js into --out (default slides/build). Opens offline.",
    )
    p.add_argument("--out", default="slides/build", help="output folder")
    p.add_argument("--sources", default=None, help="folder with deck.<lang>.md (default: the repository's slides/)")
    p.add_argument("--data", default=None, help="results folder (default: the repository's data/)")
    p.add_argument("--lang", default="en,vi", help="comma-separated languages (en, vi)")
    args = p.parse_args(argv)
    langs = tuple(x.strip() for x in args.lang.split(",") if x.strip())
    try:
        decks = build_decks(args.out, sources_dir=args.sources, data_dir=args.data, languages=langs)
    except (ValueError, FileNotFoundError, PermissionError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for deck in decks:
        note = f"; not produced yet: {', '.join(deck.missing)}" if deck.missing else ""
        print(f"wrote {deck.path} (results: {', '.join(deck.filled) or 'none'}{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
