"""Tests of the ablation: statistics by hand, a tiny end-to-end run, and the reference check."""

from __future__ import annotations

import copy
import json
import math

import pytest

from st4r_lite.studies import ablation, ablation_stats
from st4r_lite.world import benchmarks


def test_t_quantile_table():
    assert ablation_stats.t_quantile_975(1) == pytest.approx(12.706)
    assert ablation_stats.t_quantile_975(3) == pytest.approx(3.182)
    assert ablation_stats.t_quantile_975(100) == pytest.approx(1.984, abs=0.003)   # exact t_{0.975,100} = 1.984
    assert math.isnan(ablation_stats.t_quantile_975(0))


def _runs():
    runs = []
    for i, (b, r) in enumerate([(10.0, 11.0), (20.0, 22.0), (30.0, 33.0)]):
        for row, v in (("baseline", b), ("robust", r)):
            runs.append({"sequence": f"s{i}", "seed": i % 2, "row": row, "metrics": {"track_apd_median": v}})
    return runs


def test_paired_differences_hand_computed():
    d = ablation_stats.paired_differences(_runs(), ["baseline", "robust"])["robust"]["track_apd_median"]
    # differences 1, 2, 3: mean 2, sd 1, half width t_{0.975,2} / sqrt(3) = 4.303 / 1.732
    assert d["mean_diff"] == pytest.approx(2.0) and d["n"] == 3
    assert d["ci_high"] - d["mean_diff"] == pytest.approx(4.303 / math.sqrt(3))


def test_summarize_std_across_seeds():
    s = ablation_stats.summarize(_runs(), ["baseline", "robust"], seeds=(0, 1))["baseline"]["track_apd_median"]
    # seed 0: runs s0 (10) and s2 (30) -> 20; seed 1: s1 (20) -> 20; std of (20, 20) = 0
    assert s["mean"] == pytest.approx(20.0) and s["std_seeds"] == pytest.approx(0.0) and s["n"] == 3


@pytest.fixture(scope="module")
def tiny_ablation(tmp_path_factory):
    bench = tmp_path_factory.mktemp("bench")
    benchmarks.write_benchmark(bench, domain="wild", num_seqs=1, frames=4, height=32, width=48, seed=21)
    out = tmp_path_factory.mktemp("ablation")
    cfg = ablation.AblationConfig(benchmark=str(bench), seeds=(0,), variants=("none", "baseline"), steps=2,
                                  checkpoint=None)
    doc = ablation.run_ablation(cfg, out, progress=lambda *_: None)
    return out, doc


def test_tiny_ablation_writes_everything(tiny_ablation):
    out, doc = tiny_ablation
    for name in ("results.json", "results.md", "ablation_apd.png", "ablation_paired.png", "views.npz"):
        assert (out / name).is_file(), name
    assert doc["rows"] == ["none", "baseline", "static", "combinational"]
    assert len(doc["runs"]) == 4
    assert len(next(r for r in doc["runs"] if r["row"] == "baseline")["loss"]) == 2
    assert doc["command"].startswith("st4r-lite ablation") and doc["wall_time_s"] > 0
    table = (out / "results.md").read_text()
    apd = doc["summary"]["combinational"]["track_apd_median"]["mean"]
    assert f"{apd:.2f}" in table and "| baseline |" in table
    assert json.loads((out / "results.json").read_text())["summary"] == doc["summary"]


def test_check_passes_against_itself_and_fails_when_perturbed(tiny_ablation, tmp_path):
    from st4r_lite.cli import main

    out, doc = tiny_ablation
    assert ablation_stats.check_against_reference(out, out).ok
    bad = copy.deepcopy(doc)
    bad["summary"]["baseline"]["track_apd_median"]["mean"] += 5.0
    res = ablation_stats.check_against_reference(doc, bad)
    assert not res.ok and any("baseline APD" in m for m in res.mismatches)
    other = copy.deepcopy(doc)
    other["config"]["steps"] = 99
    assert not ablation_stats.check_against_reference(doc, other).ok
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["ablation", "--check", str(out / "results.json"), "--results", str(out / "results.json")]) == 0
    assert main(["ablation", "--check", str(tmp_path / "bad.json"), "--results", str(out / "results.json")]) == 2


def test_reference_results_are_consistent():
    """The committed quick reference (if present) carries its command, hardware, wall time and a full table."""
    from st4r_lite.runtime import repo_data_dir

    ref = repo_data_dir() / "ablation_quick" / "results.json"
    if not ref.is_file():
        pytest.skip("data/ablation_quick/results.json not produced yet")
    doc = ablation_stats.load_results(ref)
    assert doc["command"].startswith("st4r-lite ablation") and doc["wall_time_s"] > 0 and doc["hardware"]
    assert ablation_stats.check_against_reference(doc, doc).ok
    assert set(doc["rows"]) >= {"none", "baseline"}


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        ablation.run_ablation(ablation.AblationConfig(variants=("nope",)), tmp_path)
    with pytest.raises(ValueError, match="tracker"):
        ablation.run_ablation(ablation.AblationConfig(tracker="cotracker"), tmp_path)


def test_check_reruns_the_reference_config_and_reproduces_it(tiny_ablation, tmp_path, capsys):
    from st4r_lite.cli import main

    out, doc = tiny_ablation
    assert main(["ablation", "--check", str(out / "results.json"), "--out", str(tmp_path / "again")]) == 0
    assert "MATCH" in capsys.readouterr().out
    again = ablation_stats.load_results(tmp_path / "again")
    for row in doc["rows"]:   # deterministic: same config, same machine -> the same numbers
        for key, *_ in ablation_stats.KEY_METRICS:
            a = doc["summary"][row].get(key, {}).get("mean")
            b = again["summary"][row].get(key, {}).get("mean")
            assert a == b or abs(a - b) < 1e-6, (row, key, a, b)


def test_re_anchoring_is_a_recorded_setting_and_old_references_read_as_off(tiny_ablation):
    out, doc = tiny_ablation
    assert doc["config"]["reanchor"] is True and doc["adapt_config"]["reanchor"] is True
    assert "--no-reanchor" not in doc["command"]
    cfg = ablation.AblationConfig(**{**doc["config"], "seeds": (0,), "variants": ("none", "baseline"),
                                     "peers": tuple(doc["config"]["peers"]), "reanchor": False})
    assert ablation._adapt_config(cfg, "baseline", 0).reanchor is False
    assert ablation.command_from_config(cfg, out).endswith(f"--no-reanchor --out {out}")
    args = ablation_args(["--no-reanchor", "--out", str(out)])
    assert ablation.config_from_args(args).reanchor is False
    assert ablation.config_from_args(ablation_args(["--out", str(out)])).reanchor is True


def ablation_args(argv):
    """The parsed arguments of ``st4r-lite ablation ARGV``."""
    import argparse

    from st4r_lite.cli.eval import _add_ablation

    parser = argparse.ArgumentParser()
    _add_ablation(parser.add_subparsers())
    return parser.parse_args(["ablation", *argv])


def test_a_reference_older_than_re_anchoring_matches_only_a_steps_only_run(tiny_ablation):
    out, doc = tiny_ablation
    old = copy.deepcopy(doc)
    for key in ("reanchor", "reanchor_tau"):
        del old["adapt_config"][key]
    steps_only = copy.deepcopy(doc)
    steps_only["adapt_config"]["reanchor"] = False
    assert ablation_stats.check_against_reference(steps_only, old).ok
    res = ablation_stats.check_against_reference(doc, old)
    assert not res.ok and any("reanchor" in n for n in res.notes)
    assert ablation_stats.check_against_reference(old, copy.deepcopy(old)).ok     # two old records still agree
