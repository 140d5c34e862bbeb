"""The ceiling analysis: the depth-ambiguous twin looks the same in both cameras, ideal beats static, CLI."""

import json
import math

import pytest
import torch
from einops import rearrange

from st4r_lite.geometry.pinhole import invert_pose, project, transform_points
from st4r_lite.model.network import build_model
from st4r_lite.studies import ceiling
from st4r_lite.world.render import generate_clips


@pytest.fixture(scope="module")
def clip():
    return generate_clips(2, frames=4, height=16, width=24, domain="pretrain", seed=900_000)


def test_ideal_tracks_project_like_the_truth_in_every_camera(clip):
    """The ambiguity argument: Y_t = C_t + f (X_t − C_t) projects exactly like X_t in camera t."""
    b = 0
    X = rearrange(clip.track_world[b], "t h w c -> t (h w) c").double()
    obj = rearrange(clip.object_id[b, 0], "h w -> (h w)")
    assert obj.max() > 0, "the test clip should show an object"
    log_f = torch.linspace(-0.4, 0.4, int(obj.max()) + 1, dtype=torch.float64)
    Y = ceiling.ideal_tracks(X, obj, clip.T_world_cam[b, :, :3, 3], log_f)
    K = clip.K[b].double()
    for t in range(X.shape[0]):
        T_cam_world = invert_pose(clip.T_world_cam[b, t].double())
        px_x = project(transform_points(T_cam_world, X[t]), K)
        px_y = project(transform_points(T_cam_world, Y[t]), K)
        torch.testing.assert_close(px_y, px_x, atol=1e-6, rtol=0)
    on_object = obj > 0
    ratio = Y[0, on_object].norm(dim=-1) / X[0, on_object].norm(dim=-1)
    torch.testing.assert_close(ratio, torch.exp(log_f[obj[on_object]]))  # anchor depth is off by exactly f
    torch.testing.assert_close(Y[:, ~on_object], X[:, ~on_object])       # the room keeps f = 1


def test_ideal_tracks_rejects_a_short_scale_table(clip):
    X = rearrange(clip.track_world[0], "t h w c -> t (h w) c")
    obj = rearrange(clip.object_id[0, 0], "h w -> (h w)")
    with pytest.raises(ValueError, match="one entry per object id"):
        ceiling.ideal_tracks(X, obj, clip.T_world_cam[0, :, :3, 3], torch.zeros(1))


def test_ceiling_table_perfect_row_and_shrinking_gap(clip):
    rows = ceiling.ceiling_table(clip, log_ambiguities=(0.0, 0.4), draws=2)
    perfect, loose = rows
    assert perfect.ideal_apd_dyn == pytest.approx(100.0)
    assert perfect.gap > 0                      # these clips move: nothing-moves loses to perfect tracks
    assert loose.ideal_apd_dyn < perfect.ideal_apd_dyn
    assert loose.static_apd_dyn < perfect.static_apd_dyn
    assert loose.median_abs_log_error == pytest.approx(0.2)
    with pytest.raises(ValueError, match="≥ 0"):
        ceiling.ceiling_table(clip, log_ambiguities=(-0.1,))


def test_model_diagnostics_are_finite_for_an_untrained_model(clip):
    torch.manual_seed(0)
    model = build_model("tiny")
    small = generate_clips(1, frames=3, height=64, width=96, domain="pretrain", seed=900_000)
    diag = ceiling.model_diagnostics(model, small)
    for key in ("median_abs_log_depth_error", "motion_error_ratio", "apd_dyn", "static_apd_dyn", "gap"):
        assert math.isfinite(diag[key]), key
    assert diag["gap"] == pytest.approx(diag["apd_dyn"] - diag["static_apd_dyn"], abs=1e-3)
    assert model.training                       # the model's mode is restored


def test_cli_writes_the_report(tmp_path, capsys):
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--frames", "3", "--num-clips", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    table = report["by_frames"]["3"]["table"]
    assert [r["log_ambiguity"] for r in table] == list(ceiling.LOG_AMBIGUITIES)
    assert "ideal dyn APD" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ceiling.main(["--frames", "1"])


def test_doctests_pass():
    import doctest

    result = doctest.testmod(ceiling, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_quality_bar_is_computed_not_written_by_hand():
    from st4r_lite.train.heldout import quality_bar

    assert quality_bar({"apd_dyn": 34.9, "static_apd_dyn": 20.0})["met"] is False
    bar = quality_bar({"apd_dyn": 35.0, "static_apd_dyn": 20.0})
    assert bar["met"] is True and bar["gap_points"] == 15.0


def test_cli_shift_scores_a_candidate_world_and_says_so(tmp_path):
    """--shift: the same seeds rendered in a candidate world (faster objects move further), recorded in the report."""
    reports = {}
    for name, extra in (("v2", []), ("fast", ["--shift", "object_speed=2"])):
        out = tmp_path / f"{name}.json"
        assert ceiling.main(["--frames", "4", "--num-clips", "2", "--json", str(out), *extra]) == 0
        reports[name] = json.loads(out.read_text())
    assert reports["fast"]["clips"]["world_shift"] == {"object_speed": 2.0} and reports["v2"]["clips"]["world_shift"] == {}
    assert "--shift object_speed=2" in reports["fast"]["command"]
    motion = [reports[n]["by_frames"]["4"]["median_dynamic_motion_m"] for n in ("v2", "fast")]
    assert motion[1] > 1.5 * motion[0]
