"""The scorecard's reconstruction diagnosis: per-frame APD in the world vs after a per-frame similarity."""

import math

import pytest
import roma
import torch

from st4r_lite.studies.scorecard import format_scorecard, recon_by_frame


def _scene(T=4, H=6, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(T, H, W, 3, generator=g, dtype=torch.float64) * 2 + torch.tensor([0.0, 0.0, 2.0],
                                                                                      dtype=torch.float64)
    return pts


def test_exact_reconstruction_scores_100_both_ways():
    gt = _scene()
    out = recon_by_frame(gt.clone(), gt)
    assert all(v == 100.0 for v in out["world"]) and all(abs(v - 100.0) < 1e-9 for v in out["shape"])


def test_a_misplaced_but_well_shaped_frame_is_forgiven_by_shape_only():
    gt = _scene(seed=1)
    pred = gt.clone()
    R = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64))   # frame 3 turned by ~29 deg
    pred[3] = pred[3] @ R.T + torch.tensor([0.4, 0.0, 0.0], dtype=torch.float64)  # pose wrong, shape right
    gt[2, 0, 0] = float("nan")                                                         # invalid points are skipped
    out = recon_by_frame(pred, gt)
    assert out["shape"][3] > 99.9 and out["world"][3] < 50
    assert out["world"][0] > 90 and math.isfinite(out["shape"][2])


def test_format_scorecard_prints_the_diagnosis():
    card = {"methods": {"model": {"apd": 1.0, "apd_dynamic": 2.0, "epe": 0.1}}, "targets": {}, "beats_peers": {},
            "recon_by_frame": {"world": [60.0, 40.0], "shape": [70.0, 69.0]}}
    text = format_scorecard(card)
    assert "recon APD by frame (world): 60 40" in text and "(shape): 70 69" in text


def test_paired_gap_is_the_mean_difference_with_a_t_interval_that_skips_missing_clips():
    from st4r_lite.studies.scorecard import _paired_gap

    gap = _paired_gap([1.0, 3.0, None, float("nan")])
    # mean 2, sd sqrt(2), n 2: half-width t(1) * sqrt(2) / sqrt(2) = 12.706
    assert gap == {"mean": 2.0, "low": round(2 - 12.706, 2), "high": round(2 + 12.706, 2), "clips": 2}
    card = {"methods": {}, "targets": {}, "beats_peers": {}, "paired_gaps": {"static": {"apd_dynamic": gap}}}
    assert "model − static per clip (mean [95 % interval]): apd_dynamic +2.00 [-10.71, +14.71]" in format_scorecard(card)


def test_scorecard_of_an_untrained_model_has_its_peers_and_the_motion_ceiling():
    from st4r_lite.model.config import PRESETS
    from st4r_lite.model.network import build_model
    from st4r_lite.studies.scorecard import scorecard

    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"]).eval()
    card = scorecard(model, num_clips=1, frames=3, query_stride=8)
    methods = card["methods"]
    assert set(methods) == {"model", "static", "combinational", "oracle_motion", "oracle_match",
                            "oracle_match_reg", "oracle_placed", "oracle_placed_motion", "oracle_placed_static"}
    assert all("gap_dynamic" in methods[m] for m in methods if m.startswith("oracle"))
    assert set(card["oracle_gaps"]) == {m for m in methods if m.startswith("oracle")}
    oracle, static = methods["oracle_motion"], methods["static"]
    one_clip_gap = card["oracle_gaps"]["oracle_motion"]                # one clip: the mean is that clip's gap
    assert one_clip_gap["clips"] == 1 and one_clip_gap["mean"] == pytest.approx(oracle["gap_dynamic"], abs=0.006)
    assert oracle["gap_dynamic"] == round(oracle["apd_dynamic"] - static["apd_dynamic"], 4)
    assert "gap_dynamic" not in static and "oracle_motion" in format_scorecard(card)
    assert set(card["per_clip"][0]) == {"clip", *methods}
    assert set(card["paired_gaps"]) == {"static", "combinational"} and card["paired_gaps"]["static"]["apd"]["clips"] == 1


def test_anchor_depth_by_patch_finds_the_blend_at_an_objects_edge():
    from st4r_lite.studies.scorecard import anchor_depth_by_patch

    H, W, p = 8, 8, 4
    dynamic = torch.zeros(H, W, dtype=torch.bool)
    dynamic[0:4, 0:2] = True                     # an object half filling patch (0, 0); patch (1, 1) is all static
    v, u = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pix = torch.stack([u.flatten(), v.flatten()], -1)
    z = torch.where(dynamic, 2.0, 4.0).flatten().double()
    gt = torch.stack([torch.zeros_like(z), torch.zeros_like(z), z], -1)
    pred = gt.clone()
    edge_patch = (v.flatten() < 4) & (u.flatten() < 4)
    pred[edge_patch, 2] = 3.0                    # a linear head's blend over the mixed patch
    out = anchor_depth_by_patch(pred * 2, gt, pix, dynamic, p)    # a global scale is forgiven
    assert out["moving_edge"].numel() == 8 and out["static_edge"].numel() == 8
    assert out["moving_interior"].numel() == 0 and out["static_interior"].numel() == 48
    assert torch.allclose(out["moving_edge"], torch.full((8,), math.log(1.5), dtype=torch.float64))
    assert torch.allclose(out["static_interior"], torch.zeros(48, dtype=torch.float64))


def test_scale_and_pose_rows_say_which_error_a_frame_has():
    gt = _scene(T=5, seed=2)
    drift = gt.clone()
    drift[1] = drift[1] * 1.3                                                      # frame 1: scale drift only
    out = recon_by_frame(drift, gt)
    assert out["scale"][1] > 99.9 and out["world"][1] < 90 and out["shape"][1] > 99.9
    R = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.4, 0.0], dtype=torch.float64))
    misplaced = gt.clone()
    misplaced[2] = misplaced[2] @ R.T + torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)  # frame 2: pose only
    out = recon_by_frame(misplaced, gt)
    assert out["pose"][2] > 99.9 and out["scale"][2] < 90 and out["world"][2] < 90
    assert out["world"][0] > 99.9 and out["pose"][0] > 99.9


def test_scorecard_on_a_candidate_world_records_the_shift():
    from st4r_lite.model.config import PRESETS
    from st4r_lite.model.network import build_model
    from st4r_lite.studies.scorecard import scorecard

    torch.manual_seed(0)
    model = build_model(PRESETS["tiny"]).eval()
    plain = scorecard(model, num_clips=1, frames=3, query_stride=8)
    near = scorecard(model, num_clips=1, frames=3, query_stride=8, shift={"depth_range": (1.2, 1.4)})
    assert plain["settings"]["world_shift"] == {} and near["settings"]["world_shift"] == {"depth_range": (1.2, 1.4)}
    assert near["per_clip"][0]["model"] != plain["per_clip"][0]["model"]  # other clips, other scores
