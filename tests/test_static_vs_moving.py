"""studies/static_vs_moving: background vs moving-object displacement in the world frame (issue 13, real clips)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from st4r_lite.app.frames import plan_transform
from st4r_lite.errors import InputError
from st4r_lite.geometry.pinhole import make_pose
from st4r_lite.studies import static_vs_moving as svm
from st4r_lite.world.render import generate_clips


def _toy(T: int = 5):
    """4 background points (static, ~3 m away) and 2 object points moving 0.1 m a frame along x: (T, 6, 3)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64) * 0.5 + torch.tensor([0.0, 0.0, 3.0])
    gt = x0.expand(T, 6, 3).clone()
    t = torch.arange(T, dtype=torch.float64)
    gt[:, 4:, 0] += 0.1 * t[:, None]
    background = torch.tensor([True] * 4 + [False] * 2)
    return gt, background, ~background


def _cameras(T: int, step: float) -> torch.Tensor:
    """(T, 4, 4) camera poses moving ``step`` metres a frame along x, no rotation."""
    t = torch.zeros(T, 3, dtype=torch.float64)
    t[:, 0] = step * torch.arange(T)
    return make_pose(torch.eye(3, dtype=torch.float64).expand(T, 3, 3), t)


def test_max_displacement_and_camera_path():
    gt, _, _ = _toy(5)
    d = svm.max_displacement(gt)
    assert torch.allclose(d, torch.tensor([0, 0, 0, 0, 0.4, 0.4], dtype=torch.float64))
    gt[2, 1] = float("nan")  # a missing step is ignored, an all-missing track is NaN
    gt[:, 0] = float("nan")
    d = svm.max_displacement(gt)
    assert math.isnan(float(d[0])) and float(d[1]) == 0.0
    assert svm.camera_path_length(_cameras(5, 0.25)) == pytest.approx(1.0)
    assert svm.camera_path_length(_cameras(1, 0.25)) == 0.0
    with pytest.raises(ValueError, match=r"\(T, N, 3\)"):
        svm.max_displacement(torch.zeros(5, 3))


def test_perfect_tracks_background_zero_object_true():
    gt, bg, mov = _toy()
    s = svm.score_static_vs_moving(gt, gt, bg, mov, pred_T_world_cam=_cameras(5, 0.2),
                                   true_T_world_cam=_cameras(5, 0.2))
    assert s.background_pred == 0.0 and s.background_true == 0.0
    assert s.object_pred == pytest.approx(0.4) and s.object_true == pytest.approx(0.4)
    assert s.camera_path_pred == pytest.approx(0.8) and s.camera_path_true == pytest.approx(0.8)
    assert s.scale == pytest.approx(1.0) and s.holds
    assert (s.num_background, s.num_object) == (4, 2)
    assert "background points move 0.00 m" in s.headline() and "truth: 0.40 m" in s.headline()
    assert s.as_dict()["holds"] is True


def test_tracks_that_copy_the_anchor_move_nothing_and_fail_the_claim():
    gt, bg, mov = _toy()
    static = gt[:1].expand_as(gt)
    s = svm.score_static_vs_moving(static, gt, bg, mov)
    assert s.object_pred == 0.0 and s.background_pred == 0.0 and s.object_true == pytest.approx(0.4)
    assert not s.holds and s.camera_path_pred is None


def test_median_scale_puts_prediction_and_cameras_in_metres():
    gt, bg, mov = _toy()
    s = svm.score_static_vs_moving(gt / 2, gt, bg, mov, pred_T_world_cam=_cameras(5, 0.1))
    assert s.scale == pytest.approx(2.0)
    assert s.object_pred == pytest.approx(0.4) and s.camera_path_pred == pytest.approx(0.8)
    wrong = gt.clone()  # background drifting more than the object: the claim fails
    wrong[:, :4, 1] += 0.2 * torch.arange(5, dtype=torch.float64)[:, None]
    assert not svm.score_static_vs_moving(wrong, gt, bg, mov).holds


def test_bad_groups_are_refused():
    gt, bg, mov = _toy()
    with pytest.raises(ValueError, match="both background and moving"):
        svm.score_static_vs_moving(gt, gt, bg, bg)
    with pytest.raises(InputError, match="0 moving"):
        svm.score_static_vs_moving(gt, gt, bg, torch.zeros(6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        svm.score_static_vs_moving(gt, gt, bg[:3], mov)
    with pytest.raises(ValueError, match=r"\(T, N, 3\)"):
        svm.score_static_vs_moving(gt, gt[:, :3], bg, mov)


def test_truth_at_network_pixels_follows_the_frame_transform():
    clip = generate_clips(1, frames=3, height=32, width=48, domain="wild", seed=svm.DEFAULT_SEED)
    same = plan_transform((32, 48), (32, 48))
    px = torch.tensor([[0, 0], [47, 31], [10, 20]])
    gt, bg, mov = svm.truth_at_network_pixels(clip, same, px)
    assert torch.equal(gt[:, 2], clip.track_world[0][:, 20, 10])
    assert bool(bg[0]) == bool(clip.object_id[0, 0, 0, 0] == 0) and not (bg & mov).any()
    double = plan_transform((32, 48), (64, 96))  # network pixel (21, 41) is original pixel (10, 20)
    gt2, _, _ = svm.truth_at_network_pixels(clip, double, torch.tensor([[21, 41]]))
    assert torch.equal(gt2[:, 0], clip.track_world[0][:, 20, 10])
    with pytest.raises(ValueError, match="32x48"):
        svm.truth_at_network_pixels(clip, plan_transform((64, 96), (64, 96)), px)


def test_end_to_end_on_a_tiny_video(tmp_path):
    """The user path on an .mp4 the package writes: 32x48 clip (upscaled to the network's 64x96), 4 frames."""
    pytest.importorskip("av")
    score, res, clip = svm.run_static_vs_moving("fresh:tiny", tmp_path, frames=4, height=32, width=48,
                                                log=lambda s: None)
    assert (tmp_path / "clip.mp4").is_file() and (tmp_path / "run" / "result.npz").is_file()
    assert res.track.shape == (4, 64, 96, 3) and res.transform.scale == 2.0
    assert score.background_true == 0.0 and score.object_true > 0.05  # the truth: room static, object moves
    assert score.num_background + score.num_object <= 64 * 96 and score.num_object > 0
    for v in (score.background_pred, score.object_pred, score.camera_path_pred, score.scale):
        assert math.isfinite(v) and v >= 0
    assert score.camera_path_true == pytest.approx(svm.camera_path_length(clip.T_world_cam[0]))
    fig = svm.displacement_figure(score)
    names = [t.name.rsplit(":", 1)[0] for t in fig.data]
    assert names == ["background (truth: static)", "moving object", "y = x (perfect)"]


def test_run_many_counts_the_claim_over_clips_and_writes_json(tmp_path, capsys):
    pytest.importorskip("av")
    many = svm.run_many("fresh:tiny", [26, 3], frames=3, height=32, width=48, log=lambda s: None)
    s = many["summary"]
    assert s["clips"] == len(many["clips"]) == 2 and 0 <= s["holds"] <= 2
    assert [c["seed"] for c in many["clips"]] == [26, 3]
    assert s["holds"] == sum(c["background_pred"] < c["object_pred"] for c in many["clips"])
    assert s["median_object_true"] > 0.05
    out = tmp_path / "many.json"
    doc = svm.main(["--checkpoint", "fresh:tiny", "--seeds", "3,26", "--frames", "3", "--height", "32",
                    "--width", "48", "--json", str(out)])
    assert json.loads(out.read_text())["summary"] == doc["summary"]
    assert "holds on" in capsys.readouterr().out
    with pytest.raises(InputError, match="range such as"):
        svm.main(["--seeds", "a-b"])
