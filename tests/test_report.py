"""Tests of the interactive ablation report: one self-contained HTML file with the table numbers and 3D views."""

from __future__ import annotations

import re

import pytest

from st4r_lite.studies import ablation, ablation_stats, report
from st4r_lite.world import benchmarks


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory):
    bench = tmp_path_factory.mktemp("bench")
    benchmarks.write_benchmark(bench, domain="wild", num_seqs=1, frames=4, height=32, width=48, seed=31)
    out = tmp_path_factory.mktemp("ablation")
    cfg = ablation.AblationConfig(benchmark=str(bench), seeds=(0,), variants=("none", "robust"), steps=1)
    ablation.run_ablation(cfg, out, progress=lambda *_: None)
    return out


def test_report_is_self_contained_and_has_the_numbers(ablation_dir, tmp_path):
    from st4r_lite.cli import main

    out = tmp_path / "r.html"
    assert main(["report", "--ablation", str(ablation_dir), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("* plotly.js v") == 1                         # the library inline, exactly once
    assert not re.search(r"<script[^>]+src=[\"']?https?:", page)      # nothing fetched from the network
    doc = ablation_stats.load_results(ablation_dir)
    for row in ("none", "robust", "static", "combinational"):
        m = doc["summary"][row]["track_apd_median"]["mean"]
        assert f"{m:.2f}" in page, row
    assert "data:image/png;base64," in page
    assert "time slider" in page.lower() and "occlusion mask" in page.lower()
    assert page.count("Plotly.newPlot") >= 6                         # plots + trails + recon + mask views
    assert "Adaptation: 1 steps at lr 3e-05, params all_but_encoder; re-anchoring on the mono-depth: on" in page


def test_the_adaptation_line_reads_old_results_as_without_re_anchoring():
    assert report._adaptation_phrase({"adapt_config": {"steps": 30, "lr": 1e-4, "params": "track"}}).endswith(
        "re-anchoring on the mono-depth: off")
    assert report._adaptation_phrase({}) == "settings not recorded"


def test_view_figures_compose_before_after(ablation_dir):
    import numpy as np

    with np.load(ablation_dir / "views.npz") as data:
        v = {k: data[k] for k in data.files}
    sections = report.view_figures(v)
    titles = [t for t, _ in sections]
    assert any("track trails" in t for t in titles) and any("occlusion" in t for t in titles)
    trails = sections[0][1]
    assert len(trails) == 3 and all(len(f.frames) == 4 for f in trails)   # GT | none | robust, slider over T


def test_report_refuses_missing_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="ablation"):
        report.build_report(tmp_path)



def _with_pairs(doc, n, rows=("none", "robust", "static", "combinational")):
    """doc with paired differences of n pairs for rows (the fixture has no baseline row to pair with)."""
    from st4r_lite.studies.ablation_stats import KEY_METRICS

    doc = dict(doc, paired={r: {k: {"mean_diff": 0.5 * i, "ci_low": 0.5 * i - 1.0, "ci_high": 0.5 * i + 2.0,
                                    "n": n} for k, *_ in KEY_METRICS} for i, r in enumerate(rows)})
    doc["config"] = dict(doc["config"], peers=["static", "combinational"])
    return doc


def test_report_says_one_seed_and_hides_intervals_under_three_pairs(ablation_dir):
    doc = _with_pairs(ablation_stats.load_results(ablation_dir), n=2)
    assert doc["config"]["seeds"] == [0]
    assert "one seed" in report._spread_phrase(doc) and "±" not in report._spread_phrase(doc)
    page = report.table_html(doc)
    assert "n = 2" in page and "[" not in page.split("Paired difference")[1].split("<table>")[1]
    fig = report.paired_figure(doc)
    assert fig.data and all(set(t.error_x.array) == {0.0} for t in fig.data)
    assert "n = 2" in fig.layout.title.text


def test_paired_figure_gives_peers_their_own_axes_and_intervals_from_three_pairs(ablation_dir):
    doc = _with_pairs(ablation_stats.load_results(ablation_dir), n=3)
    doc["config"]["seeds"] = [0, 1, 2]
    fig = report.paired_figure(doc)
    rows = {t.yaxis: set(t.y) for t in fig.data}
    assert {"none", "robust"} in rows.values() and {"static", "combinational"} in rows.values()
    assert len(rows) == 4                                                 # 2 groups x (APD, EPE)
    assert all(list(t.error_x.array) == [2.0] * len(t.y) for t in fig.data)
    assert "[" in report.table_html(doc).split("Paired difference")[1]
    assert "across 3 seeds" in report._spread_phrase(doc)
