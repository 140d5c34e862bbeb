"""Simulated pseudo-labels: strength 0 is the ground truth, each documented error shows up and scales."""

from __future__ import annotations

import pytest
import torch

from st4r_lite.adapt.online import make_provider
from st4r_lite.adapt.pseudo_labels import fit_depth, pseudo_label_error_stats
from st4r_lite.adapt.sim_labels import (
    GroundTruthVideo,
    SimDepthConfig,
    SimTrackerConfig,
    SimulatedMonoDepth,
    SimulatedTracker,
    as_ground_truth,
    gaussian_blur_masked,
)
from st4r_lite.geometry.pinhole import grid_query_pixels
from st4r_lite.world.render import generate_clips


@pytest.fixture(scope="module")
def clip():
    return generate_clips(1, frames=8, height=32, width=48, domain="pretrain", seed=3)


@pytest.fixture(scope="module")
def setup(clip):
    gt = GroundTruthVideo.from_clip(clip, 0)
    q = grid_query_pixels(32, 48, stride=4)
    gt2d, vis = gt.tracks_2d(q)
    return gt, q, gt2d, vis, clip.rgb[0].float()


def test_strength_zero_reproduces_ground_truth(setup):
    gt, q, gt2d, vis, video = setup
    for cfg in (SimTrackerConfig.perfect(), SimTrackerConfig().scaled(0.0)):
        labels = SimulatedTracker(gt, config=cfg)(video, q)
        ok = torch.isfinite(gt2d).all(-1) & vis
        assert torch.allclose(labels.tracks_2d[ok], gt2d[ok], atol=1e-4)
        assert torch.equal(labels.track_valid[1:], (vis & ok)[1:])
    depth = SimulatedMonoDepth(gt, config=SimDepthConfig(mode="affine").scaled(0.0))(video)
    assert torch.allclose(depth, gt.depth, rtol=1e-5)


def test_tracker_errors_grow_with_strength_and_are_seeded(setup):
    gt, q, gt2d, vis, video = setup
    medians = []
    for s in (0.5, 1.0, 2.0):
        labels = SimulatedTracker(gt, config=SimTrackerConfig().scaled(s), seed=1)(video, q)
        medians.append(pseudo_label_error_stats(labels, gt2d, vis).median_visible)
    assert medians[0] < medians[1] < medians[2], medians
    a = SimulatedTracker(gt, seed=4)(video, q)
    b = SimulatedTracker(gt, seed=4)(video, q)
    c = SimulatedTracker(gt, seed=5)(video, q)
    assert torch.equal(a.tracks_2d, b.tracks_2d) and not torch.equal(a.tracks_2d, c.tracks_2d)
    assert torch.equal(a.tracks_2d[0], q) and a.track_valid[0].all()


def test_jitter_and_drift_statistics():
    """Only jitter: per-axis std = jitter_px; only drift: the error variance grows linearly with t."""
    clip = generate_clips(1, frames=10, height=32, width=48, domain="pretrain", seed=5)
    gt = GroundTruthVideo.from_clip(clip, 0)
    q = grid_query_pixels(32, 48, stride=2)
    gt2d, vis = gt.tracks_2d(q)
    video = clip.rgb[0].float()
    jit = SimulatedTracker(gt, config=SimTrackerConfig(0.7, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0))(video, q)
    err = (jit.tracks_2d - gt2d)[1:][vis[1:]]
    assert abs(float(err.std()) - 0.7) < 0.05
    dr = SimulatedTracker(gt, config=SimTrackerConfig(0.0, 0.3, 1.0, 0.0, 1.0, 0.0, 0.0))(video, q)
    e = dr.tracks_2d - gt2d
    both = vis[1:].all(0)  # points visible throughout: a pure random walk
    var = e[1:, both].pow(2).mean(dim=(1, 2))  # per-axis variance at t = 1..T-1
    t = torch.arange(1, 10).float()
    assert torch.allclose(var / t, torch.full_like(t, 0.09), rtol=0.35), var / t


def test_occluded_points_latch_or_wander(setup):
    gt, q, gt2d, vis, video = setup
    occluded = ~vis & torch.isfinite(gt2d).all(-1)
    occluded &= (gt2d[..., 0] > 0) & (gt2d[..., 0] < 47) & (gt2d[..., 1] > 0) & (gt2d[..., 1] < 31)
    if occluded.sum() < 5:
        pytest.skip("too few occlusions in this clip")
    quiet = dict(jitter_px=0.0, drift_px_per_frame=0.0, occluded_marked_visible_prob=0.0,
                 visible_marked_occluded_prob=0.0)
    wander = SimulatedTracker(gt, config=SimTrackerConfig(latch_prob=0.0, wander_px_per_frame=3.0, **quiet))(video, q)
    latch = SimulatedTracker(gt, config=SimTrackerConfig(latch_prob=1.0, **quiet))(video, q)
    vis_err = (latch.tracks_2d - gt2d).norm(dim=-1)[vis]
    assert vis_err[torch.isfinite(vis_err)].median() < 1e-3  # visible: exact without jitter/drift
    occ_w = (wander.tracks_2d - gt2d).norm(dim=-1)[occluded]
    occ_l = (latch.tracks_2d - gt2d).norm(dim=-1)[occluded]
    assert occ_w.mean() > 0.5 and occ_l.mean() > 0.0  # both leave the true (hidden) path
    assert not torch.equal(occ_w, occ_l)


def test_mono_depth_errors(setup):
    gt, q, gt2d, vis, video = setup
    cfg = SimDepthConfig(mode="affine", edge_sigma_px=0.0, warp_strength=0.0, noise_rel=0.0)
    depth = SimulatedMonoDepth(gt, config=cfg, seed=2)(video)
    mask = gt.depth > 0
    assert not torch.allclose(depth, gt.depth, rtol=0.05)  # unknown scale and shift ...
    fitted = fit_depth(depth, gt.depth, mask, "affine")    # ... removed by the per-frame affine fit
    assert torch.allclose(fitted[mask], gt.depth[mask], rtol=1e-3)
    warped = SimulatedMonoDepth(gt, config=SimDepthConfig(edge_sigma_px=0.0, noise_rel=0.0), seed=2)(video)
    rel = (fit_depth(warped, gt.depth, mask, "scale") - gt.depth).abs() / gt.depth
    assert 0.005 < float(rel[mask].mean()) < 0.2  # the low-frequency warp survives the fit
    assert (depth > 0).all()
    # smeared edges: the blurred map differs most where the GT depth jumps
    blurred = gaussian_blur_masked(gt.depth, mask, 1.5)
    jump = (gt.depth[:, :, 1:] - gt.depth[:, :, :-1]).abs() > 0.3
    diff = (blurred - gt.depth).abs()[:, :, 1:]
    if jump.any():
        assert diff[jump].mean() > 5 * diff[~jump].mean()


def test_inputs_are_checked(clip, setup):
    gt, q, _, _, video = setup
    with pytest.raises(ValueError, match="ground truth"):
        as_ground_truth("a video")
    with pytest.raises(ValueError, match="video is"):
        SimulatedTracker(gt)(video[:3], q)
    with pytest.raises(ValueError, match="probability"):
        SimTrackerConfig(latch_prob=1.5)
    with pytest.raises(ValueError, match="mode"):
        SimDepthConfig(mode="disparity")
    with pytest.raises(ValueError, match="strength"):
        SimTrackerConfig().scaled(-1)
    with pytest.raises(ValueError, match="clip index"):
        GroundTruthVideo.from_clip(clip, 3)


def test_sim_latch_reports_occluded_points_visible_and_follows_the_occluder():
    """The ablation's reference tracker ('sim-latch') keeps most occluded points 'visible', latched onto the
    occluder, where the default simulated tracker flags most of them."""
    clip = generate_clips(1, frames=12, height=48, width=64, domain="wild", seed=600_001)
    gt = GroundTruthVideo.from_clip(clip, 0)
    q = grid_query_pixels(48, 64, 4)
    uv, vis = gt.tracks_2d(q)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= 63) & (uv[..., 1] >= 0) & (uv[..., 1] <= 47)
    occluded = ~vis & inside
    assert int(occluded.sum()) > 20, "the wild clip must have occluded points for this test"
    flagged = {}
    for name in ("sim", "sim-latch"):
        labels = make_provider(name, "none", ground_truth=gt, seed=3)(clip.rgb[0], q)
        flagged[name] = float(labels.track_valid[occluded].float().mean())
    assert flagged["sim-latch"] > 0.8 > 0.5 > flagged["sim"]
