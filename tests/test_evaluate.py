"""Tests of the world-frame evaluation: hand-computed metric cases, evaluate on a tiny benchmark, baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import roma
import torch

from st4r_lite.eval import baselines, benchmark_metrics, evaluate
from st4r_lite.geometry import track_metrics
from st4r_lite.geometry.pinhole import intrinsics_matrix, make_pose, project, transform_points
from st4r_lite.world import benchmarks, worldtrack


def _poses(T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    R = roma.rotvec_to_rotmat(0.2 * torch.randn(T, 3, generator=g, dtype=torch.float64))
    t = torch.randn(T, 3, generator=g, dtype=torch.float64)
    R[0], t[0] = torch.eye(3, dtype=torch.float64), 0.0
    return make_pose(R, t)


# ----------------------------------------------------------------------------------------------- metrics
def test_camera_metrics_hand_computed_two_frames():
    gt = make_pose(torch.eye(3).expand(2, 3, 3), torch.tensor([[0.0, 0, 0], [1.0, 0, 0]]))
    pred = make_pose(torch.eye(3).expand(2, 3, 3), torch.tensor([[0.0, 0, 0], [3.0, 0, 0]]))
    m = benchmark_metrics.camera_metrics(pred, gt)
    # 2 frames: centroid match only -> centres (-1, 0, 0), (2, 0, 0) vs (0, 0, 0), (1, 0, 0): errors 1 and 1
    assert m.ate == pytest.approx(1.0)
    assert m.rpe_trans == pytest.approx(2.0)   # |3 - 1| with scale 1
    assert m.rpe_rot_deg == pytest.approx(0.0, abs=1e-6)


def test_camera_metrics_sim3_transformed_gt_is_perfect():
    gt = _poses(6)
    s, R = 2.5, roma.rotvec_to_rotmat(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64))
    t = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    pred = gt.clone()
    pred[:, :3, :3] = R @ gt[:, :3, :3]
    pred[:, :3, 3] = s * gt[:, :3, 3] @ R.T + t
    m = benchmark_metrics.camera_metrics(pred, gt)
    assert m.ate < 1e-9 and m.rpe_trans < 1e-9 and m.rpe_rot_deg < 1e-4
    assert m.scale == pytest.approx(1 / s)
    wrong = pred.clone()
    wrong[3, :3, 3] += 1.0
    assert benchmark_metrics.camera_metrics(wrong, gt).ate > 0.1


def test_occlusion_metrics_hand_computed():
    pred = torch.tensor([True, True, False, False])
    gt = torch.tensor([True, False, False, True])
    m = benchmark_metrics.occlusion_metrics(pred, gt)
    assert m.accuracy == pytest.approx(50.0)
    assert m.occluded_precision == pytest.approx(50.0)     # predicted occluded {2, 3}, truly occluded {2}
    assert m.occluded_recall == pytest.approx(50.0)        # truly occluded {1, 2}, found {2}
    assert math.isnan(benchmark_metrics.occlusion_metrics(gt | True, gt | True).occluded_recall)


def test_tapvid3d_metrics_follow_the_official_protocol_hand_computed():
    # Official (tapnet tapvid3d): camera-frame tracks, one median scale over points visible in both, K rescaled
    # to a 256-pixel short side: f = 25 px at 64x96 -> f_256 = 100 px, thresholds δ_px z / f_256 = 0.1 .. 1.6 m.
    gt = torch.tensor([[[0.0, 0.0, 10.0], [0.0, 0.0, 20.0], [0.0, 0.0, 30.0]]], dtype=torch.float64)
    pred = gt / 2                 # the prediction's own scale: the median scale (20 / 10) undoes it
    pred[0, 0, 0] += 0.15         # 0.3 m off after scaling: within 3 of 5 thresholds at z = 10
    vis = torch.ones(1, 3, dtype=torch.bool)
    m = benchmark_metrics.tapvid3d_metrics(pred, gt, vis, vis, fx_fy=(25.0, 25.0), image_hw=(64, 96))
    assert m.scale == pytest.approx(2.0) and m.focal_256 == pytest.approx(100.0)
    assert m.apd_3d == pytest.approx(100 * (2 / 3 + 2 / 3 + 1 + 1 + 1) / 5)
    assert m.average_jaccard == pytest.approx(100 * (2 / 4 + 2 / 4 + 1 + 1 + 1) / 5)  # TP / (gt visible + FP)
    assert m.occlusion_accuracy == pytest.approx(100.0) and "official" in m.protocol
    # The same K at 256 px short side gives the same thresholds: the metric does not depend on the eval size.
    same = benchmark_metrics.tapvid3d_metrics(pred, gt, vis, vis, fx_fy=(100.0, 100.0), image_hw=(256, 384))
    assert same.apd_3d == pytest.approx(m.apd_3d)
    # Points not visible in both are left out of the scale: hide the far point, the median becomes (10+20)/2.
    pv = torch.tensor([[True, True, False]])
    hidden = benchmark_metrics.tapvid3d_metrics(pred, gt, pv, vis, fx_fy=(25.0, 25.0), image_hw=(64, 96))
    pn = pred[0, :2].norm(dim=-1)
    assert hidden.scale == pytest.approx(15.0 / float(pn.mean()))


def test_alignments_scaled_and_sim3_gt():
    g = torch.Generator().manual_seed(1)
    gt = torch.randn(5, 40, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 4.0], dtype=torch.float64)
    scaled = gt / 2.5
    assert track_metrics.tracking_metrics(scaled, gt, alignment="median").apd == pytest.approx(100.0)
    assert track_metrics.tracking_metrics(scaled, gt, alignment="median").epe < 1e-9
    assert track_metrics.tracking_metrics(scaled, gt, alignment="none").apd < 100.0
    R = roma.rotvec_to_rotmat(torch.tensor([0.4, 0.1, -0.3], dtype=torch.float64))
    sim3 = 0.7 * gt @ R.T + torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64)
    assert track_metrics.tracking_metrics(sim3, gt, alignment="sim3").epe < 1e-9
    assert track_metrics.tracking_metrics(sim3, gt, alignment="median").apd < 90.0


# ----------------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    benchmarks.write_benchmark(out, domain="wild", num_seqs=1, frames=4, height=32, width=48, seed=11)
    return out


def test_gt_prediction_scores_perfectly(bench):
    seq = evaluate.load_sequences(bench)[0]
    assert seq.gt_tracks.shape == (4, 32 * 48, 3) and seq.depth is not None
    pred = evaluate.Prediction(tracks=seq.gt_tracks, recon=seq.gt_points, depth=seq.depth,
                               T_world_cam=seq.T_world_cam, K=seq.K, visible=seq.gt_visible)
    f = evaluate.flat_metrics(evaluate.evaluate_prediction(seq, pred))
    assert f["track_apd_median"] == pytest.approx(100.0) and f["track_apd_sim3"] == pytest.approx(100.0)
    assert f["recon_epe_median"] < 1e-9 and f["depth_abs_rel"] < 1e-9 and f["cam_ate"] < 1e-9
    assert f["occl_accuracy"] == pytest.approx(100.0)
    assert f["tapvid3d_apd"] == pytest.approx(100.0) and f["tapvid3d_aj"] == pytest.approx(100.0)
    moved = evaluate.Prediction(tracks=seq.gt_tracks + 0.2)
    assert evaluate.flat_metrics(evaluate.evaluate_prediction(seq, moved))["track_epe_median"] > 0.05


def test_evaluate_cli_fresh_tiny_model(bench, tmp_path):
    from st4r_lite.cli import main
    from st4r_lite.model.checkpoint import save_checkpoint
    from st4r_lite.model.network import build_model

    ckpt = save_checkpoint(tmp_path / "m.pt", build_model("tiny", seed=0))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(bench), "--json", str(out),
                 "--peers", "static"]) == 0
    doc = json.loads(out.read_text())
    mean = doc["mean"]
    assert set(mean["tracking"]) == {"median", "sim3"}
    assert 0.0 <= mean["tracking"]["median"]["apd"] <= 100.0
    assert mean["camera"]["ate"] is not None and mean["depth"]["abs_rel"] is not None
    assert len(doc["sequences"]) == 1
    static = doc["peers"]["static"]["mean"]["tracking"]["median"]
    assert 0.0 <= static["apd"] <= 100.0 and static["num_tracks"] == 32 * 48
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--data", str(bench)]) == 2


def test_file_without_depth_skips_recon_and_says_so(bench, tmp_path):
    seq = worldtrack.load_npz(sorted(bench.glob("*.npz"))[0])
    seq.depth_map = None
    worldtrack.save_npz(tmp_path / "nodepth.npz", seq)
    es = evaluate.load_sequences(tmp_path / "nodepth.npz")[0]
    pred = evaluate.Prediction(tracks=es.gt_tracks, recon=torch.zeros(4, 32, 48, 3, dtype=torch.float64))
    r = evaluate.evaluate_prediction(es, pred)
    assert r["recon"] is None and r["depth"] is None
    assert any("no depth map" in n for n in r["notes"])
    assert r["tracking"]["median"].apd == pytest.approx(100.0)


# ----------------------------------------------------------------------------------------------- baselines
def test_static_baseline_on_gt_recon_is_exact_on_static_points(bench):
    seq = evaluate.load_sequences(bench)[0]
    gt_pred = evaluate.Prediction(tracks=seq.gt_tracks, recon=seq.gt_points, depth=seq.depth,
                                  T_world_cam=seq.T_world_cam, K=seq.K)
    st = baselines.static_prediction(gt_pred, seq)
    assert torch.allclose(st.tracks[2], st.tracks[0])
    still = (seq.gt_tracks - seq.gt_tracks[:1]).norm(dim=-1).amax(0) < 1e-4   # float32 files
    assert still.sum() > 100
    assert (st.tracks[:, still] - seq.gt_tracks[:, still]).norm(dim=-1).max() < 1e-3
    moving = ~still & seq.is_dynamic
    if moving.any():
        assert (st.tracks[:, moving] - seq.gt_tracks[:, moving]).norm(dim=-1).max() > 0.05


def test_combinational_lift_is_exact_on_a_plane():
    T, H, W, N = 4, 20, 30, 25
    K = intrinsics_matrix(torch.tensor(30.0, dtype=torch.float64), torch.tensor((W - 1) / 2, dtype=torch.float64),
                          torch.tensor((H - 1) / 2, dtype=torch.float64))
    poses = make_pose(torch.eye(3, dtype=torch.float64).expand(T, 3, 3),
                      torch.tensor([[0.0, 0, 0], [0.05, 0, 0], [0.1, 0.02, 0], [0.15, 0.0, 0.0]], dtype=torch.float64))
    depth = torch.full((T, H, W), 3.0, dtype=torch.float64)   # fronto-parallel plane z = 3 (cameras only translate in x, y)
    g = torch.Generator().manual_seed(0)
    world = torch.cat([torch.rand(N, 2, generator=g, dtype=torch.float64) - 0.5,
                       torch.full((N, 1), 3.0, dtype=torch.float64)], -1)
    cam = transform_points(torch.linalg.inv(poses), world.expand(T, N, 3))
    uv = project(cam, K)
    lifted = baselines.lift_tracks(uv, torch.ones(T, N, dtype=torch.bool), depth, K, poses)
    assert (lifted - world).norm(dim=-1).max() < 1e-9
    f = track_metrics.tracking_metrics(lifted, world.expand(T, N, 3), alignment="median")
    assert f.apd == pytest.approx(100.0)
    # invalid entries hold the last lifted position
    valid = torch.ones(T, N, dtype=torch.bool)
    valid[2:, 0] = False
    held = baselines.lift_tracks(uv + 5.0 * (~valid)[..., None], valid, depth, K, poses)
    assert torch.allclose(held[3, 0], held[1, 0])


def test_combinational_with_gt_inputs_matches_visible_points(bench):
    seq = evaluate.load_sequences(bench)[0].grid_subset(4)
    p = baselines.combinational_prediction(seq, None, tracker="gt", depth="gt")
    err = (p.tracks - seq.gt_tracks).norm(dim=-1)
    assert err[seq.gt_visible].median() < 1e-3
    assert torch.equal(p.visible, seq.gt_visible)


def test_match_depth_scale_recovers_per_frame_scale():
    ref = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1
    mono = ref / torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)[:, None, None]
    assert torch.allclose(baselines.match_depth_scale(mono, ref), ref)
    np.testing.assert_allclose(evaluate.sample_maps(ref[..., None], torch.tensor([[2.0, 3.0]]))[:, 0, 0],
                               ref[:, 3, 2])
