"""The motion probe: the fit of predicted to true object motion, and the one-batch overfit check."""

import math

import pytest
import torch

from st4r_lite.model import resolve
from st4r_lite.studies.motion_probe import format_probe, motion_fit, overfit_one_batch


def _tracks(T=4, H=5, W=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, H, W, 3, generator=g, dtype=torch.float64) + torch.tensor([0.0, 0.0, 3.0],
                                                                                   dtype=torch.float64)
    motion = torch.cumsum(torch.rand(T, H, W, 3, generator=g, dtype=torch.float64) * 0.1, 0)
    motion = motion - motion[:1]
    return base + motion, motion


def test_perfect_motion_in_another_scale_fits_exactly():
    gt, _ = _tracks()
    fit = motion_fit(gt * 0.37, gt, torch.ones(5, 6, dtype=torch.bool))
    assert fit["r2"] == pytest.approx(1.0) and fit["cos"] == pytest.approx(1.0) and fit["ratio"] == pytest.approx(1.0)
    assert fit["samples"] == 3 * 5 * 6


def test_nothing_moves_scores_zero_and_the_opposite_motion_negative():
    gt, motion = _tracks(seed=1)
    moving = torch.ones(5, 6, dtype=torch.bool)
    still = motion_fit(gt[:1].expand_as(gt), gt, moving)
    assert still["r2"] == pytest.approx(0.0) and still["ratio"] == pytest.approx(0.0)
    backwards = motion_fit(gt[:1] - motion, gt, moving)
    assert backwards["r2"] == pytest.approx(-3.0) and backwards["cos"] == pytest.approx(-1.0)


def test_only_moving_finite_pixels_count():
    gt, _ = _tracks(seed=2)
    moving = torch.zeros(5, 6, dtype=torch.bool)
    moving[1:3, 2:5] = True
    pred = gt.clone()
    pred[:, 0, 0] += 5.0          # a wrong static pixel changes nothing
    gt_nan = gt.clone()
    gt_nan[2, 1, 2] = float("nan")  # an unknown target is skipped
    fit = motion_fit(pred, gt_nan, moving)
    assert fit["samples"] == 3 * 6 - 1 and fit["r2"] == pytest.approx(1.0)
    assert math.isnan(motion_fit(pred, gt, torch.zeros(5, 6, dtype=torch.bool))["r2"])


def test_shapes_are_checked():
    gt, _ = _tracks()
    with pytest.raises(ValueError, match="moving must be"):
        motion_fit(gt, gt, torch.ones(6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        motion_fit(gt[..., :2], gt[..., :2], torch.ones(5, 6, dtype=torch.bool))


def test_overfit_trains_a_copy_and_reports_a_curve():
    model = resolve.load("fresh:tiny", log=lambda s: None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = overfit_one_batch(model, steps=2, every=1)
    assert [c["step"] for c in out["curve"]] == [0, 1, 2]
    assert all(math.isfinite(c["r2"]) for c in out["curve"])
    assert out["curve"][0] != out["curve"][-1]                     # the copy was trained
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original was not
    text = format_probe({"heldout": {"m": {"r2": 0.01, "cos": 0.1, "ratio": 0.2}},
                         "overfit": {"checkpoint": "m", **out}})
    assert "step    2" in text and "R² +0.010" in text


def test_the_cli_runs_the_probe_as_a_study(capsys):
    from st4r_lite.cli import main
    from st4r_lite.cli.study import STUDIES
    assert {"motion_probe", "adapt_ceiling"} <= set(STUDIES)
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "motion_probe", "--help"])
    assert exit_info.value.code == 0 and "--overfit-steps" in capsys.readouterr().out


def test_attention_probe_reads_every_layer_and_leaves_no_hook():
    from st4r_lite.studies.motion_probe import attention_correspondence
    from st4r_lite.world.render import generate_clips
    model = resolve.load("fresh:tiny", log=lambda s: None)
    clips = generate_clips(1, frames=3, height=64, width=96, domain="pretrain", seed=5)
    same = attention_correspondence(model, clips, others=(0,))     # the anchor against itself: j* = i everywhere
    assert [r["layer"] for r in same] == [1, 2, 3, 4]
    assert all(r["same_position"] == 1.0 and r["moved_tokens"] == 0 and 0 <= r["hit"] <= r["hit_near"] <= 1
               and 0 <= r["best_head_hit"] <= 1 for r in same)
    later = attention_correspondence(model, clips, others=(2,))
    assert all(0 <= r["same_position"] <= 1 and r["chance"] == round(1 / 96, 4) for r in later)
    assert all(not blk.cross_attn._forward_pre_hooks for blk in model.dec_blocks)
    with pytest.raises(Exception, match="more than 5 frames"):
        attention_correspondence(model, clips, others=(5,))
