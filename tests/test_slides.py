"""Tests of course.slides: the decks build offline, in both languages, and contain the current results."""

from __future__ import annotations

import json
import re

import pytest

from course import slides


def _results(tmp_path):
    data = tmp_path / "data"
    (data / "ablation_quick").mkdir(parents=True)
    (data / "ablation_quick" / "results.md").write_text(
        "| variant | APD dyn |\n|---|---|\n| baseline | 41.234 ± 1.0 |\n| robust | 47.891 ± 0.9 |\n")
    (data / "tiny_eval.json").write_text(json.dumps({"metrics": {"tiny": {"apd_dynamic": 55.5},
                                                                 "static": {"apd_dynamic": 31.25}}}))
    return data


def test_decks_build_offline_with_the_current_results(tmp_path, monkeypatch):
    monkeypatch.setattr(slides, "view3d_html", lambda: "<div id='fake-view'>3D</div>")
    data = _results(tmp_path)
    decks = slides.build_decks(tmp_path / "out", data_dir=data)
    assert [d.language for d in decks] == ["en", "vi"]
    for deck in decks:
        page = deck.path.read_text(encoding="utf-8")
        assert "47.891" in page and "41.234" in page, "the ablation table must be in the deck"
        assert "55.5" in page and "31.25" in page, "the tiny checkpoint's numbers must be in the deck"
        assert "Reveal.initialize" in page and "fake-view" in page
        # offline: no script or stylesheet fetched from the network
        assert not re.search(r"""(src|href)=["']https?://""", page)
        assert "@import" not in page
        assert set(deck.filled) >= {"ablation_table", "tiny_eval", "provenance"}
        assert "ablation_paired_plot" in deck.missing and "world_stats" in deck.missing
    assert (tmp_path / "out" / "plotly.min.js").stat().st_size > 1_000_000
    vi = decks[1].path.read_text(encoding="utf-8")
    assert "Mục tiêu" in vi and "chưa có kết quả" in vi
    en = decks[0].path.read_text(encoding="utf-8")
    assert "Goals" in en and "not produced yet" in en
    # the proposal's structure, in order
    order = [en.index(h) for h in ("## Introduction", "## Goals", "## Method", "## The improvement", "## Results")]
    assert order == sorted(order)


def test_real_3d_view_is_a_plotly_div():
    div = slides.view3d_html(frames=3, height=16, width=24)
    assert "plotly" in div.lower() and "<script" in div and "https://" not in div.split("Plotly.newPlot")[0]


def test_unknown_placeholder_and_language_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown placeholder"):
        slides.render_slides("# t\n\n{{nope}}\n", "en", tmp_path, view3d="")
    with pytest.raises(ValueError, match="unknown slide language"):
        slides.build_decks(tmp_path / "o", data_dir=tmp_path, languages=("fr",))


def test_slides_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(slides, "view3d_html", lambda: "<div>3D</div>")
    data = _results(tmp_path)
    assert slides.main(["--out", str(tmp_path / "deck"), "--data", str(data), "--lang", "en"]) == 0
    assert (tmp_path / "deck" / "st4r_lite.en.html").is_file()
    assert "not produced yet" in capsys.readouterr().out
    assert slides.main(["--out", str(tmp_path / "d2"), "--sources", str(tmp_path / "none")]) == 2


def test_tiny_eval_headline_table_states_the_bar(tmp_path):
    head = {"apd": 17.9, "apd_dyn": 20.77, "static_apd": 18.5, "static_apd_dyn": 20.04, "epe": 1.77, "recon_apd": 20.2}
    (tmp_path / "tiny_eval.json").write_text(json.dumps({"headline": {"median": head},
                                                         "quality_bar": {"met": False, "gap_points": 0.73}}))
    table = slides._tiny_eval(tmp_path)
    assert "20.77" in table and "20.04" in table and "not met" in table and "0.73" in table


def test_quality_ceiling_panel_shows_every_row_and_the_model(tmp_path):
    assert slides._quality_ceiling(tmp_path) is None            # missing file: the build says "not produced yet"
    rows = [{"log_ambiguity": a, "ideal_apd_dyn": 100 - 100 * a, "static_apd_dyn": 70 - 80 * a,
             "gap": 30 - 20 * a} for a in (0.0, 0.4)]
    model = {"apd_dyn": 20.8, "static_apd_dyn": 20.0, "gap": 0.8, "median_abs_log_depth_error": 0.38}
    doc = {"by_frames": {"8": {"table": rows, "model": model}, "16": {"table": rows}}}
    (tmp_path / "quality_ceiling.json").write_text(json.dumps(doc))
    table = slides._quality_ceiling(tmp_path)
    assert "8 frames" in table and "16 frames" in table
    assert "100.0 / 70.0 (gap +30.0)" in table and "60.0 / 38.0 (gap +22.0)" in table
    assert "20.8 / 20.0 (gap +0.8)" in table and "0.38" in table


def test_paired_slide_shows_the_paired_plot_and_the_table_slide_only_the_summary(tmp_path):
    data = tmp_path / "data"
    (data / "ablation_quick").mkdir(parents=True)
    (data / "ablation_quick" / "ablation_apd.png").write_bytes(b"BARS")
    (data / "ablation_quick" / "ablation_paired.png").write_bytes(b"PAIRS")
    (data / "ablation_quick" / "results.md").write_text(
        "Long prose that does not fit.\n\n| row | APD |\n|---|---|\n| none | 1.0 |\n\nPaired:\n\n| row | d |\n|---|---|\n")
    assert "UEFJUlM=" in slides.PANELS["ablation_paired_plot"](data)          # base64 of b"PAIRS"
    assert "QkFSUw==" in slides.PANELS["ablation_plot"](data)                 # base64 of b"BARS"
    assert slides.PANELS["ablation_table"](data) == "| row | APD |\n|---|---|\n| none | 1.0 |"
    for lang in slides.LANGUAGES:
        deck = (slides.Path(slides.__file__).resolve().parents[1] / "slides" / f"deck.{lang}.md").read_text()
        block = next(b for b in slides.SLIDE_SEPARATOR.split(deck) if "{{ablation_paired_plot}}" in b)
        assert "paired" in block.lower() or "theo cặp" in block


def test_vi_deck_has_no_english_only_lines():
    root = slides.Path(slides.__file__).resolve().parents[1] / "slides"
    en = set((root / "deck.en.md").read_text(encoding="utf-8").splitlines())
    vi = (root / "deck.vi.md").read_text(encoding="utf-8").splitlines()
    # lines allowed to be identical: separators, placeholders, names, citations and commands
    same = [line for line in vi if line in en and line.strip() and not re.fullmatch(
        r"---|\|[-|]+\||\{\{\s*\w+\s*\}\}|::view3d::|- `.*|- \w+ et al\., .*|Feng, Zhang, .*", line.strip())]
    assert not same, same


def test_motion_probe_panel_shows_the_probed_model_and_its_overfit(tmp_path):
    from course.slide_panels import PANELS
    assert PANELS["motion_probe"](tmp_path) is None                  # missing file: "not produced yet"
    fit = {"r2": 0.03, "cos": 0.15, "ratio": 0.17}
    doc = {"heldout": {"data/<b>tiny.pt": fit, "runs/other.pt": {"r2": 0.5, "cos": 0.5, "ratio": 0.5}},
           "overfit": {"checkpoint": "data/<b>tiny.pt", "curve": [{"step": 0, **fit}, {"step": 150, "r2": 0.68,
                                                                                         "cos": 0.82, "ratio": 0.82}],
                       "heldout_after": {"r2": -0.38, "cos": -0.03, "ratio": 0.38}},
           "attention": [{"layer": 1, "hit": 0.004, "same_position": 0.49, "chance": 0.0104},
                         {"layer": 3, "hit": 0.021, "same_position": 0.49, "chance": 0.0104}]}
    (tmp_path / "motion_probe.json").write_text(json.dumps(doc))
    table = PANELS["motion_probe"](tmp_path)
    assert "&lt;b&gt;tiny.pt on held-out clips | +0.03" in table and "other.pt" not in table
    assert "after 150 steps on *one* batch, on that batch | +0.68" in table and "| -0.38 |" in table
    assert "**2%** at best (layer 3)" in table and "right for 49%" in table


def test_gpu_small_panel_reads_the_records(tmp_path):
    assert slides.PANELS["gpu_small"](tmp_path) is None                    # missing file: "not produced yet"
    (tmp_path / "gpu_small").mkdir()
    card = {"methods": {"model": {"apd": 67.02, "apd_dynamic": 41.23, "recon_apd": 54.8, "abs_rel": 0.0788},
                        "static": {"apd": 62.16, "apd_dynamic": 42.01}},
            "training": {"total_pairs_seen": 78080, "total_wall_s": 362.8, "hardware": "NVIDIA H200 (CUDA), x86_64"}}
    (tmp_path / "gpu_small" / "small_scorecard.json").write_text(json.dumps(card))
    table = slides.PANELS["gpu_small"](tmp_path)
    assert "| tracking APD, moving (%) | 41.2 | 42.0 |" in table and "78k training pairs in 6.0 min" in table
    assert "MFU" not in table                                         # no bench file: no throughput claimed
    bench = {"results": [{"preset": "small", "train_pairs_per_s": 339.5, "train_flops_per_pair": 2.66e11,
                          "train_mfu": 0.0914}]}
    (tmp_path / "gpu_small" / "bench_gpu.json").write_text(json.dumps(bench))
    assert "MFU 9.1 %" in slides.PANELS["gpu_small"](tmp_path)


def test_moving_ladder_panel_reads_the_64_clip_scorecard(tmp_path):
    assert slides.PANELS["moving_ladder"](tmp_path) is None                # missing file: "not produced yet"
    (tmp_path / "match_track").mkdir()
    gap = {"mean": 9.8, "low": 7.13, "high": 12.48, "clips": 64}
    card = {"settings": {"num_clips": 64, "frames": 16},
            "methods": {"model": {"apd_dynamic": 38.74}, "static": {"apd_dynamic": 38.88},
                        "combinational": {"apd_dynamic": 40.7}, "oracle_placed": {"apd_dynamic": 48.68}},
            "paired_gaps": {"static": {"apd_dynamic": {"mean": -0.14, "low": -1.5, "high": 1.22}},
                            "combinational": {"apd_dynamic": {"mean": -1.96, "low": -4.02, "high": 0.09}}},
            "oracle_gaps": {"oracle_placed": gap}}
    (tmp_path / "match_track" / "scorecard64_tiny.json").write_text(json.dumps(card))
    table = slides.PANELS["moving_ladder"](tmp_path)
    assert table.startswith("| 64 held-out clips × 16 frames |")
    assert "| the model | 38.7 | −0.1 [−1.5, +1.2] |" in table
    assert "| static peer: nothing moves | 38.9 | — |" in table
    assert "model − LK: −2.0 [−4.0, +0.1]" in table
    assert "| objects placed at their true depth, its own motion | 48.7 | +9.8 [+7.1, +12.5] |" in table
    assert "true motion" not in table                                    # rows the file lacks are left out
