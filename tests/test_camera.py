"""Tests of st4r_lite.geometry.camera / st4r_lite.geometry.pnp: focal and poses from pointmaps, robustness, gradients."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from st4r_lite.geometry import pnp
from st4r_lite.geometry.camera import (
    STATUSES,
    cameras_for_video,
    focal_from_anchor,
    solve_poses,
    synthetic_pointmaps,
    time_solve,
)
from st4r_lite.geometry.pinhole import (
    depth_to_pointmap,
    intrinsics_matrix,
    invert_pose,
    make_pose,
    rotation_angle_deg,
    transform_points,
)


def pose_errors(T_est, T_gt):
    """Rotation error (degrees) and translation error relative to max(|t_gt|, 0.1 m) per frame."""
    rot = rotation_angle_deg(T_est[:, :3, :3].double(), T_gt[:, :3, :3].double())
    dt = (T_est[:, :3, 3] - T_gt[:, :3, 3]).double().norm(dim=-1)
    return rot, dt / T_gt[:, :3, 3].double().norm(dim=-1).clamp_min(0.1)


def corrupt(recon, K, T_world_cam, *, noise_px=0.5, outlier_frac=0.3, seed=0):
    """Move every point by ~noise_px pixels in its image and swap an outlier_frac of the points among pixels."""
    g = torch.Generator().manual_seed(seed)
    cam = transform_points(invert_pose(T_world_cam), recon)
    shift = noise_px * torch.randn(*cam.shape[:-1], 2, generator=g, dtype=cam.dtype) / K[0, 0]
    cam = cam + torch.cat([shift * cam[..., 2:], torch.zeros_like(cam[..., :1])], -1)
    noisy = transform_points(T_world_cam, cam)
    T, H, W, _ = recon.shape
    flat = noisy.flatten(1, 2).clone()
    is_out = torch.rand(T, H * W, generator=g) < outlier_frac
    for i in range(T):
        idx = is_out[i].nonzero()[:, 0]
        flat[i, idx] = flat[i, idx[torch.randperm(len(idx), generator=g)]]  # 3D points of other pixels
    return flat.view_as(recon), is_out.view(T, H, W)


@pytest.fixture(scope="module")
def scene():
    return synthetic_pointmaps(6, 32, 48, seed=3)


def test_clean_pointmaps_recover_the_poses_exactly(scene):
    recon, K, T_gt = scene
    sol = solve_poses(recon, K)
    rot, trans = pose_errors(sol.T_world_cam, T_gt)
    assert sol.status == ["ok"] * 6
    assert rot.max() < 0.1 and trans.max() < 1e-3, (rot, trans)
    assert torch.all(sol.inlier_ratio == 1) and sol.reproj_error_px.max() < 1e-3
    assert sol.T_world_cam.dtype == recon.dtype and torch.all(sol.ok)


def oracle_fit(noisy, K, is_out):
    """The best one can do: plain least squares on the true inliers only (its error is the noise floor)."""
    return solve_poses(noisy, K, valid=~is_out, robust=None)


def test_outliers_and_pixel_noise(scene):
    """30% outliers + 0.5 px noise. With f = 58 px on 32 x 48 pixels, 0.5 px is 0.5° of ray noise: even the
    oracle (least squares on the true inliers) is off by ~0.15° and ~1 cm (2-4% of |t|). The robust solver must
    match the oracle (outliers cost nothing), and stay under 0.3° / 6% absolutely."""
    recon, K, T_gt = scene
    noisy, is_out = corrupt(recon, K, T_gt, noise_px=0.5, outlier_frac=0.3, seed=1)
    rot_o, trans_o = pose_errors(oracle_fit(noisy, K, is_out).T_world_cam, T_gt)
    for robust in ("huber", "cauchy", None):
        sol = solve_poses(noisy, K, robust=robust, seed=0)
        rot, trans = pose_errors(sol.T_world_cam, T_gt)
        assert sol.status == ["ok"] * 6
        assert rot.max() < 0.3 and trans.max() < 0.06, (robust, rot, trans)
        assert torch.all(rot < 1.2 * rot_o + 0.03) and torch.all(trans < 1.2 * trans_o + 0.005), (
            robust, rot, rot_o, trans, trans_o)
        assert 0.6 < float(sol.inlier_ratio.min()) and float(sol.inlier_ratio.max()) < 0.8
        assert 0.5 < float(sol.reproj_error_px.median()) < 1.0  # ~ √2 · 0.5 px noise, not the outliers
        agree = (sol.inliers == ~is_out).float().mean()  # the inlier masks mostly agree with the truth
        assert agree > 0.95, (robust, agree)


def test_more_noise_more_error_but_no_breakdown(scene):
    """2 px noise (2° of ray noise here) and 50% outliers: the oracle itself is off by ~1°; with the inlier
    threshold at ~3x the noise (6 px) the robust fit is as good as the oracle, nothing breaks down."""
    recon, K, T_gt = scene
    noisy, is_out = corrupt(recon, K, T_gt, noise_px=2.0, outlier_frac=0.5, seed=4)
    sol = solve_poses(noisy, K, seed=0, inlier_px=6.0)
    rot, trans = pose_errors(sol.T_world_cam, T_gt)
    rot_o, trans_o = pose_errors(oracle_fit(noisy, K, is_out).T_world_cam, T_gt)
    assert sol.status == ["ok"] * 6
    assert torch.all(rot < 1.5 * rot_o + 0.1) and torch.all(trans < 1.5 * trans_o + 0.01), (rot, rot_o, trans, trans_o)


def test_confidence_downweights_outliers(scene):
    """60% outliers, which the confidence marks (0.01): the fit then equals the oracle's."""
    recon, K, T_gt = scene
    noisy, is_out = corrupt(recon, K, T_gt, noise_px=0.5, outlier_frac=0.6, seed=2)
    conf = torch.where(is_out, 0.01, 1.0)
    rot, trans = pose_errors(solve_poses(noisy, K, conf, num_hypotheses=32).T_world_cam, T_gt)
    rot_o, trans_o = pose_errors(oracle_fit(noisy, K, is_out).T_world_cam, T_gt)
    assert torch.all((rot - rot_o).abs() < 0.02) and torch.all((trans - trans_o).abs() < 0.002), (rot, rot_o)
    assert rot.max() < 0.4 and trans.max() < 0.1, (rot, trans)


def test_p3p_recovers_poses_from_three_points():
    g = torch.Generator().manual_seed(0)
    B = 200
    X = torch.randn(B, 3, 3, generator=g, dtype=torch.float64)
    R = torch.linalg.matrix_exp(torch.einsum("bk,kij->bij", 0.5 * torch.randn(B, 3, generator=g, dtype=torch.float64),
                                             torch.tensor([[[0, 0, 0], [0, 0, -1], [0, 1, 0]], [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
                                                           [[0, -1, 0], [1, 0, 0], [0, 0, 0]]], dtype=torch.float64)))
    t = 0.5 * torch.randn(B, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 6.0], dtype=torch.float64)
    Y = X @ R.transpose(-1, -2) + t[:, None]
    Rs, ts, ok = pnp.p3p(X, Y / Y.norm(dim=-1, keepdim=True))
    assert Rs.shape == (B, 4, 3, 3) and ts.shape == (B, 4, 3) and torch.isfinite(Rs).all()
    err = (Rs - R[:, None]).flatten(-2).norm(dim=-1) + (ts - t[:, None]).norm(dim=-1)
    best = torch.where(ok, err, torch.full_like(err, 1e9)).min(-1).values
    assert (best < 1e-6).float().mean() > 0.97  # the rest are near-degenerate triangles
    X[0, 1] = float("nan")  # NaNs and a collinear set: not ok, no exception
    X[1, 2] = 2 * X[1, 1] - X[1, 0]
    _, _, ok = pnp.p3p(X[:2], Y[:2] / Y[:2].norm(dim=-1, keepdim=True))
    assert not ok[0].any()


@pytest.mark.parametrize("domain", ["pretrain", "wild"])
def test_synthetic_world_ground_truth_pointmaps(domain):
    """The synthetic world's own pointmaps (moving objects included) give back its focal and cameras."""
    from st4r_lite.world.render import generate_clips

    clip = generate_clips(2, frames=5, height=32, width=48, domain=domain, seed=0)
    for b in range(2):
        sol = cameras_for_video(clip.points_world[b])
        assert sol.status == ["ok"] * 5
        assert abs(float(sol.focal) / float(clip.K[b, 0, 0]) - 1) < 1e-3
        rot, trans = pose_errors(sol.T_world_cam, clip.T_world_cam[b])
        assert rot.max() < 0.1 and trans.max() < 1e-3, (rot, trans)


def test_planar_scene_is_flagged_and_still_solved():
    T, H, W = 4, 24, 32
    K = intrinsics_matrix(40.0, (W - 1) / 2, (H - 1) / 2)
    n, d = torch.tensor([0.2, -0.3, 1.0]), 3.0  # plane n·X = d in each camera frame
    rays = depth_to_pointmap(torch.ones(H, W), K)
    depth = (d / (rays @ n)).expand(T, H, W)
    g = torch.Generator().manual_seed(0)
    R = torch.stack([torch.eye(3)] + [torch.linalg.matrix_exp(torch.tensor(
        [[0, -a, b], [a, 0, -c], [-b, c, 0]])) for a, b, c in 0.1 * torch.randn(T - 1, 3, generator=g)])
    T_gt = make_pose(R, 0.2 * torch.randn(T, 3, generator=g) * torch.tensor([[0.0]] + [[1.0]] * (T - 1)))
    recon = transform_points(T_gt, depth_to_pointmap(depth, K))
    sol = solve_poses(recon, K)
    assert set(sol.status) == {"planar"} and torch.isfinite(sol.T_world_cam).all()
    rot, trans = pose_errors(sol.T_world_cam, T_gt)
    assert rot.max() < 0.1 and trans.max() < 1e-3, (rot, trans)
    assert "plane" in sol.messages[1]


def test_few_points_nans_and_empty_frames_degrade_gracefully(scene):
    recon, K, T_gt = scene
    recon = recon.clone()
    valid = torch.ones(recon.shape[:-1], dtype=torch.bool)
    valid[2] = False
    valid[2, 5, [3, 10, 20]] = True  # 3 valid pixels
    recon[3] = float("nan")  # a frame of NaNs
    recon[4, ::2] = float("nan")  # half the rows NaN: still solvable
    conf = torch.ones(recon.shape[:-1])
    conf[5, :, :10] = float("nan")
    with pytest.warns(UserWarning, match="2 of 6 frame"):
        sol = solve_poses(recon, K, conf, valid)
    assert sol.status == ["ok", "ok", "few_points", "few_points", "ok", "ok"]
    assert torch.isfinite(sol.T_world_cam).all()
    assert torch.equal(sol.T_world_cam[2], sol.T_world_cam[1])  # previous frame's pose
    assert torch.equal(sol.T_world_cam[3], sol.T_world_cam[1])
    assert sol.num_valid[2] == 3 and sol.num_valid[3] == 0 and "3 valid" in sol.messages[2]
    rot, trans = pose_errors(sol.T_world_cam[[0, 1, 4, 5]], T_gt[[0, 1, 4, 5]])
    assert rot.max() < 0.1 and trans.max() < 1e-3
    assert set(sol.status) <= set(STATUSES)


def test_garbage_frame_is_degenerate_and_first_frame_falls_back_to_identity():
    g = torch.Generator().manual_seed(0)
    recon = torch.randn(2, 16, 16, 3, generator=g)  # random points: no pose explains them
    K = intrinsics_matrix(20.0, 7.5, 7.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol = solve_poses(recon, K, inlier_px=1.0)
    assert len(caught) == 1  # warned once for both frames
    assert sol.status == ["degenerate", "degenerate"]
    assert torch.equal(sol.T_world_cam, torch.eye(4).expand(2, 4, 4))
    assert not sol.ok.any()


def test_bad_inputs_raise_clear_errors(scene):
    recon, K, _ = scene
    with pytest.raises(ValueError, match="recon must be"):
        solve_poses(recon[0], K)
    with pytest.raises(ValueError, match="K must be"):
        solve_poses(recon, K[:2])
    with pytest.raises(ValueError, match="conf must have shape"):
        solve_poses(recon, K, conf=torch.ones(3, 3))
    with pytest.raises(ValueError, match="robust"):
        solve_poses(recon, K, robust="l1")
    with pytest.raises(ValueError, match="anchor must be"):
        focal_from_anchor(recon[0, 0])


def test_deterministic_with_a_seed(scene):
    recon, K, T_gt = scene
    noisy, _ = corrupt(recon, K, T_gt, outlier_frac=0.4, seed=5)
    a = solve_poses(noisy, K, seed=7, num_hypotheses=16)
    b = solve_poses(noisy, K, seed=7, num_hypotheses=16)
    c = solve_poses(noisy, K, generator=torch.Generator().manual_seed(7), num_hypotheses=16)
    assert torch.equal(a.T_world_cam, b.T_world_cam) and torch.equal(a.inliers, b.inliers)
    assert torch.equal(a.T_world_cam, c.T_world_cam)


def test_gradients_flow_to_points_and_confidences(scene):
    recon, K, T_gt = scene
    noisy, _ = corrupt(recon, K, T_gt, outlier_frac=0.2, seed=3)
    noisy[1, 0, 0] = float("nan")
    noisy.requires_grad_(True)
    conf = (1 + torch.rand(noisy.shape[:-1], generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    sol = solve_poses(noisy, K, conf)
    sol.T_world_cam[1:, :3, 3].sum().backward()
    assert torch.isfinite(noisy.grad).all() and torch.isfinite(conf.grad).all()
    assert noisy.grad[1:].abs().sum() > 0 and conf.grad[1:].abs().sum() > 0
    assert noisy.grad[1, 0, 0].abs().sum() == 0  # the NaN point has no say
    assert solve_poses(noisy, K, conf, differentiable=False).T_world_cam.grad_fn is None


def test_gauss_newton_step_gradcheck():
    g = torch.Generator().manual_seed(0)
    N = 10
    X = torch.randn(1, N, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 4.0], dtype=torch.float64)
    K = intrinsics_matrix(torch.tensor(50.0, dtype=torch.float64), 20.0, 15.0)[None]
    R = torch.linalg.matrix_exp(torch.tensor([[0, -0.1, 0.05], [0.1, 0, -0.02], [-0.05, 0.02, 0]],
                                             dtype=torch.float64))[None]
    t = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    r, _, _ = pnp.reprojection(R, t, X, torch.zeros(1, N, 2, dtype=torch.float64), K)
    pixels = r + 0.5 * torch.randn(1, N, 2, generator=g, dtype=torch.float64)  # noisy, not at the optimum
    w = (0.5 + torch.rand(1, N, generator=g, dtype=torch.float64)).requires_grad_(True)
    X.requires_grad_(True)
    for robust in (None, "huber"):
        def step(points, weights, robust=robust):
            R_, t_ = pnp.gauss_newton_step(R, t, points, pixels, K, weights, robust=robust, delta=5.0)
            return R_, t_
        assert torch.autograd.gradcheck(step, (X, w), eps=1e-6, atol=1e-6)


def test_pipeline_gradient_is_the_implicit_gradient():
    """On a clean problem, d(pose)/d(points) of solve_poses matches central finite differences."""
    recon, K, _ = synthetic_pointmaps(2, 8, 10, seed=4, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    C = torch.randn(4, 4, dtype=torch.float64, generator=g)
    V = torch.randn(recon.shape, dtype=torch.float64, generator=g)

    def loss(points):
        return (solve_poses(points, K, lm_iters=20, robust=None).T_world_cam[1] * C).sum()

    X = recon.clone().requires_grad_(True)
    loss(X).backward()
    eps = 1e-6
    fd = (loss(recon + eps * V) - loss(recon - eps * V)) / (2 * eps)
    assert torch.allclose((X.grad * V).sum(), fd, rtol=1e-4, atol=1e-7), (float((X.grad * V).sum()), float(fd))


def test_focal_from_anchor(scene):
    recon, K, _ = scene
    f = focal_from_anchor(recon[0])
    assert abs(float(f) / float(K[0, 0]) - 1) < 0.01
    conf = torch.ones(2, *recon.shape[1:3])
    fb = focal_from_anchor(recon[:1].expand(2, -1, -1, -1), conf)
    assert fb.shape == (2,) and torch.allclose(fb, f.expand(2), rtol=1e-4)
    # corrupt the least confident quarter: the confidence filter ignores it
    bad = recon[0].clone()
    low = torch.rand(bad.shape[:2], generator=torch.Generator().manual_seed(0)) < 0.2
    bad[low] = bad[low] * torch.tensor([3.0, 3.0, 1.0])
    conf0 = torch.where(low, 1.1, 5.0)
    assert abs(float(focal_from_anchor(bad, conf0)) / float(K[0, 0]) - 1) < 0.01
    with pytest.warns(UserWarning, match="no usable pixel"):
        f_nan = focal_from_anchor(torch.full((8, 10, 3), float("nan")))
    assert torch.isfinite(f_nan) and f_nan > 0


def test_cameras_for_video_full_pipeline(scene):
    recon, K, T_gt = scene
    conf = torch.full(recon.shape[:-1], 2.0)
    sol = cameras_for_video(recon, conf)
    assert abs(float(sol.focal) / float(K[0, 0]) - 1) < 0.01
    rot, trans = pose_errors(sol.T_world_cam, T_gt)
    assert rot.max() < 0.1 and trans.max() < 1e-3
    assert torch.allclose(sol.T_cam_world @ sol.T_world_cam, torch.eye(4).expand(6, 4, 4), atol=1e-5)
    fixed = cameras_for_video(recon, focal=float(K[0, 0]))
    assert torch.allclose(fixed.K, K)


def test_cameras_for_video_in_chunks_on_a_subsampled_grid():
    """Chunks of frames and a pose_stride give the same cameras as one call (each chunk seeded by its start)."""
    recon, K, T_gt = synthetic_pointmaps(7, 32, 48, seed=1)
    conf = torch.ones(recon.shape[:3])
    sol = cameras_for_video(recon, conf, pose_stride=2, chunk=3, num_hypotheses=128, warn=False)
    assert sol.status == ["ok"] * 7 and sol.notes == [] and sol.K.shape == (3, 3)
    assert sol.K[0, 0].item() == pytest.approx(K[0, 0].item(), rel=1e-3)
    assert torch.allclose(sol.T_world_cam, T_gt.float(), atol=1e-3)
    one = cameras_for_video(recon, conf, pose_stride=2, num_hypotheses=128, warn=False)
    assert torch.allclose(one.T_world_cam, sol.T_world_cam, atol=1e-4)


def test_unsolved_frames_keep_the_previous_pose_across_chunks():
    recon, _, _ = synthetic_pointmaps(4, 16, 24, seed=2)
    recon[2:] = float("nan")                                   # frames 2, 3: nothing to solve (chunk 2 starts at 2)
    sol = cameras_for_video(recon, chunk=2, warn=False)
    assert sol.status[:2] == ["ok", "ok"] and sol.status[2:] == ["few_points", "few_points"]
    assert torch.equal(sol.T_world_cam[2], sol.T_world_cam[1]) and torch.equal(sol.T_world_cam[3], sol.T_world_cam[1])


def test_implausible_focal_falls_back_once_with_a_note():
    K_absurd = intrinsics_matrix(1e6, 11.5, 7.5)                 # a 0.001° field of view: an untrained model
    recon = depth_to_pointmap(torch.ones(3, 16, 24), K_absurd)
    sol = cameras_for_video(recon, torch.ones(3, 16, 24), warn=False)
    assert sol.notes and "60°" in sol.notes[0] and "implausible" in sol.notes[0]
    assert sol.K[0, 0].item() == pytest.approx(12 / math.tan(math.radians(30)), rel=1e-5)
    with pytest.warns(UserWarning, match="implausible"):
        focal_from_anchor(recon[0])


def test_time_solve_runs():
    assert 0 < time_solve(T=2, H=8, W=12, repeats=1) < 30


def test_ransac_only_without_lm_rounds(scene):
    recon, K, T_gt = scene
    sol = solve_poses(recon, K, rounds=0, differentiable=False)
    rot, trans = pose_errors(sol.T_world_cam, T_gt)
    assert sol.status == ["ok"] * 6 and torch.isfinite(sol.reproj_error_px).all()
    assert rot.max() < 0.1 and trans.max() < 1e-3  # exact data: P3P + linear refit are already exact
