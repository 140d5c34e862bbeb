"""Tests of the interactive ablation report: one self-contained HTML file with the table numbers and 3D views."""

from __future__ import annotations

import re

import pytest

from st4r_lite.studies import ablation, report
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
    doc = ablation.load_results(ablation_dir)
    for row in ("none", "robust", "static", "combinational"):
        m = doc["summary"][row]["track_apd_median"]["mean"]
        assert f"{m:.2f}" in page, row
    assert "data:image/png;base64," in page
    assert "time slider" in page.lower() and "occlusion mask" in page.lower()
    assert page.count("Plotly.newPlot") >= 6                         # plots + trails + recon + mask views


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
