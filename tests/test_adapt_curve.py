"""studies.adapt_curve: the geometry diagnostics, the summary's statistics, and one tiny end-to-end curve."""

import json
import math

import pytest
import torch

from st4r_lite.errors import InputError
from st4r_lite.eval.adaptation import VideoWithTruth
from st4r_lite.model.network import build_model
from st4r_lite.studies import adapt_curve
from st4r_lite.studies.ablation_stats import paired_interval
from st4r_lite.world.render import generate_clips


def _gt(T=4, H=6, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(T, H, W, 3, generator=g)
    X[..., 2] = X[..., 2].abs() + 2.0
    return X


def test_geometry_errors_zero_on_truth_and_invariant_to_scale():
    gt = _gt()
    assert adapt_curve.geometry_errors(gt, gt) == pytest.approx({"anchor_absrel": 0.0, "motion_err": 0.0}, abs=1e-6)
    scaled = adapt_curve.geometry_errors(0.3 * gt, gt)      # the metric's median scale undoes a global scale
    assert scaled["anchor_absrel"] == pytest.approx(0.0, abs=1e-6) and scaled["motion_err"] == pytest.approx(0.0, abs=1e-5)


def test_geometry_errors_sees_wrong_motion_and_wrong_anchor():
    gt = _gt()
    frozen = gt[:1].expand_as(gt).clone()                   # predicts no motion at all
    err = adapt_curve.geometry_errors(frozen, gt)
    assert err["anchor_absrel"] == pytest.approx(0.0, abs=1e-6)
    expect = (gt - gt[:1]).norm(dim=-1).median()
    assert err["motion_err"] == pytest.approx(float(expect), rel=1e-5)
    bent = gt.clone()
    bent[..., 2] *= 1.0 + 0.5 * torch.linspace(0, 1, gt.shape[2])   # depth bent across the image
    assert adapt_curve.geometry_errors(bent, gt)["anchor_absrel"] > 0.05


def test_paired_interval_matches_student_t():
    lo, hi = paired_interval([1.0, 2.0, 3.0])
    assert (lo + hi) / 2 == pytest.approx(2.0)
    assert hi - lo == pytest.approx(2 * 4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert all(math.isnan(x) for x in paired_interval([1.0]))


def _row(video, k, apd, total):
    return {"video": video, "steps": k, "apd": apd, "apd_moving": 0.0,
            "loss": {"total": total, "traj": 1.0, "depth": 1.0, "align": total}}


def test_summarise_correlation_sign_and_changes():
    rows = [_row("a", 0, 50, 1.0), _row("a", 10, 60, 0.5),    # loss halves, APD +10
            _row("b", 0, 50, 1.0), _row("b", 10, 52, 0.9),
            _row("c", 0, 50, 1.0), _row("c", 10, 45, 0.99)]
    s = adapt_curve.summarise(rows)
    assert s["per_steps"]["10"]["apd_change"] == pytest.approx((10 + 2 - 5) / 3)
    assert s["per_steps"]["10"]["clips_gained"] == 2
    assert s["spearman_loss_drop_vs_apd_change"]["total"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="steps = 0"):
        adapt_curve.summarise([r for r in rows if r["steps"]])


def test_curve_end_to_end_tiny(tmp_path):
    clip = generate_clips(1, frames=4, height=32, width=48, domain="wild", seed=600000)
    video = VideoWithTruth.from_clip(clip, 0)
    rows = adapt_curve.adaptation_curve([video], build_model("tiny", seed=0), steps=(0, 2))
    assert [r["steps"] for r in rows] == [0, 2]
    assert all(math.isfinite(r["apd"]) and math.isfinite(r["motion_err"]) for r in rows)
    assert rows[0]["apd"] != rows[1]["apd"]             # two adaptation steps change the prediction
    json.dumps(adapt_curve.summarise(rows))             # JSON-ready


def test_config_with_parses_types_and_refuses_unknown_keys():
    cfg = adapt_curve.config_with(["lr=1e-5", "cameras=gt", "w_align=0", "steps=7", "pose_grad=true"])
    assert (cfg.lr, cfg.cameras, cfg.w_align, cfg.steps, cfg.pose_grad) == (1e-5, "gt", 0.0, 7, True)
    with pytest.raises(InputError, match="KEY=VALUE"):
        adapt_curve.config_with(["learning_rate=1"])
    with pytest.raises(InputError, match="not a int"):
        adapt_curve.config_with(["steps=many"])


def test_domain_shift_parses_numbers_and_ranges_and_changes_the_clips():
    shift = adapt_curve.domain_shift(["size_scale=1.6", "fov_deg=68:75"])
    assert shift == {"size_scale": 1.6, "fov_deg": (68.0, 75.0)}
    with pytest.raises(InputError, match="KEY=NUMBER"):
        adapt_curve.domain_shift(["size_scale=big"])
    kw = dict(frames=2, height=16, width=24, domain="wild", seed=3)
    plain, same, shifted = (generate_clips(1, **kw, shift=s) for s in (None, {}, shift))
    assert torch.equal(plain.rgb, same.rgb) and not torch.equal(plain.rgb, shifted.rgb)
    assert shifted.info[0]["focal"] < plain.info[0]["focal"]       # a wider field of view, a shorter focal
    for bad, match in (({"colour": 1.0}, "unknown domain setting"), ({"fov_deg": 70.0}, "range"),
                       ({"palette": 1.0}, "cannot be shifted")):
        with pytest.raises(InputError, match=match):
            generate_clips(1, **kw, shift=bad)
