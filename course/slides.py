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
    {{motion_probe}}     how much object motion the model predicts, and can learn on one batch (data/motion_probe.json)
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
import html
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from course.slide_panels import PANELS, SOURCES, _provenance, _quality_ceiling, _tiny_eval, json_table  # noqa: F401
from st4r_lite.runtime import atomic_write, ensure_writable_dir, repo_data_dir

LANGUAGES = ("en", "vi")
VENDOR = Path(__file__).resolve().parent / "revealjs"
SLIDE_SEPARATOR = re.compile(r"^---\s*$", re.MULTILINE)
PLACEHOLDER = re.compile(r"\{\{\s*([a-z0-9_]+)\s*\}\}")

NOT_YET = {"en": "not produced yet: run", "vi": "chưa có kết quả: chạy"}


@dataclass
class Deck:
    """One built deck: its language, the HTML file, and which result placeholders were filled or missing."""

    language: str
    path: Path
    filled: list[str]
    missing: list[str]


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
