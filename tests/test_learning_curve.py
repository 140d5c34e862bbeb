"""The learning curve reads a pretrain log (plain JSON lines) and plots APD against pairs seen."""

from __future__ import annotations

import json

import pytest

from st4r_lite.errors import InputError
from st4r_lite.studies import learning_curve


def _log(path, evals=((100, 30.0), (200, 45.0))):
    lines = [json.dumps({"step": s, "total": 1.0 / s}) for s in (10, 20, 100, 200)]
    for step, apd in evals:
        part = {"median": {"apd": apd, "apd_dynamic": apd - 5}}
        lines.append(json.dumps({"step": step, "eval": {"track": part, "static": part,
                                                         "recon": {"median": {"apd": apd + 1}}}}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_curve_points_pair_each_evaluation_with_pairs_seen(tmp_path):
    _, evals = learning_curve.read_log(_log(tmp_path / "run.jsonl"))
    pts = learning_curve.curve_points(evals, pairs_per_step=16)
    assert pts["tracking APD, all points"] == [(1600, 30.0), (3200, 45.0)]
    assert pts["reconstruction APD"] == [(1600, 31.0), (3200, 46.0)]
    assert pts["tracking APD, moving points"][1] == (3200, 40.0)


def test_plot_is_written_and_bad_logs_are_input_errors(tmp_path):
    png = tmp_path / "curve.png"
    learning_curve.plot_curve(_log(tmp_path / "run.jsonl"), 16, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(InputError, match="line 2 is not JSON"):
        learning_curve.read_log(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="--eval-every"):
        learning_curve.plot_curve(_log(tmp_path / "noeval.jsonl", evals=()), 16)


def test_stages_continue_the_step_count_and_plot(tmp_path):
    first, second = _log(tmp_path / "a.jsonl"), _log(tmp_path / "b.jsonl")
    train, evals, starts = learning_curve.read_stages([first, second])
    last = max(r["step"] for r in learning_curve.read_log(first)[0] + learning_curve.read_log(first)[1])
    assert starts == [last]
    assert [r["step"] for r in evals] == [100, 200, last + 100, last + 200]
    assert train == sorted(train, key=lambda r: r["step"])
    png = tmp_path / "staged.png"
    learning_curve.plot_curve([first, second], 16, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert learning_curve.main([str(first), str(second), "--pairs-per-step", "16"]) == 0
    with pytest.raises(InputError, match="at least one"):
        learning_curve.read_stages([])
