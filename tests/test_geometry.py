"""Tests of st4r_lite.geometry.pinhole: conventions, round trips, poses, focal and Sim(3) recovery, gradients."""

from __future__ import annotations

import doctest

import pytest
import roma
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from st4r_lite.geometry import pinhole

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_pose(g: torch.Generator, *lead: int, dtype=F64) -> torch.Tensor:
    R = roma.rotvec_to_rotmat(torch.randn(*lead, 3, generator=g, dtype=dtype))
    t = torch.randn(*lead, 3, generator=g, dtype=dtype)
    return pinhole.make_pose(R, t)


def _points_in_front(g: torch.Generator, *shape: int, dtype=F64) -> torch.Tensor:
    p = torch.randn(*shape, 3, generator=g, dtype=dtype)
    p[..., 2] = p[..., 2].abs() + 1.0
    return p


def test_doctests_pass():
    result = doctest.testmod(pinhole, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8
    assert result.failed == 0


# ------------------------------------------------------------------------------------------- pixels and K
def test_pixel_grid_is_u_column_v_row():
    grid = pinhole.pixel_grid(3, 5)
    assert grid.shape == (3, 5, 2)
    assert grid[2, 4].tolist() == [4.0, 2.0]
    assert grid[0, 0].tolist() == [0.0, 0.0]
    assert grid.dtype == torch.get_default_dtype()


def test_intrinsics_matrix_layout_and_broadcast():
    K = pinhole.intrinsics_matrix(torch.tensor([10.0, 20.0]), 3.0, torch.tensor(4.0))
    assert K.shape == (2, 3, 3)
    assert K[1].tolist() == [[20.0, 0.0, 3.0], [0.0, 20.0, 4.0], [0.0, 0.0, 1.0]]


def test_project_hand_made_and_principal_point():
    K = pinhole.intrinsics_matrix(100.0, 47.5, 31.5)
    uv = pinhole.project(torch.tensor([[0.0, 0.0, 3.0], [0.3, 0.6, 3.0]]), K)
    torch.testing.assert_close(uv, torch.tensor([[47.5, 31.5], [57.5, 51.5]]))  # y down -> larger row


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("lead", [(), (7,), (2, 5), (2, 3, 4)])
def test_project_unproject_round_trip(lead):
    g = _gen(0)
    pts = _points_in_front(g, *lead, 6)
    nbatch = len(lead)
    K = pinhole.intrinsics_matrix(torch.rand(lead[:1], generator=g, dtype=F64) * 50 + 50, 20.0, 10.0)
    uv = pinhole.project(pts, K)
    assert uv.shape == (*lead, 6, 2)
    back = pinhole.unproject(uv, pts[..., 2], K)
    torch.testing.assert_close(back, pts)
    if nbatch:  # batched K of shape (B, 3, 3) with B the first lead dim equals per-item calls
        torch.testing.assert_close(uv[0], pinhole.project(pts[0], K[0] if K.ndim == 3 else K))


def test_unbatched_K_serves_batched_points():
    g = _gen(1)
    pts = _points_in_front(g, 4, 8, 9)
    K = pinhole.intrinsics_matrix(60.0, 4.0, 3.5).to(F64)
    uv = pinhole.project(pts, K)
    torch.testing.assert_close(pinhole.unproject(uv, pts[..., 2], K), pts)


def test_depth_to_pointmap_matches_unproject_of_pixel_grid():
    g = _gen(2)
    depth = torch.rand(3, 6, 8, generator=g, dtype=F64) + 0.5
    K = pinhole.intrinsics_matrix(torch.tensor([30.0, 40.0, 50.0], dtype=F64), 3.5, 2.5)
    pm = pinhole.depth_to_pointmap(depth, K)
    assert pm.shape == (3, 6, 8, 3)
    for b in range(3):
        expected = pinhole.unproject(pinhole.pixel_grid(6, 8, dtype=F64), depth[b], K[b])
        torch.testing.assert_close(pm[b], expected)
    torch.testing.assert_close(pm[..., 2], depth)
    # and it projects back onto the pixel grid
    torch.testing.assert_close(pinhole.project(pm, K), pinhole.pixel_grid(6, 8, dtype=F64).expand(3, 6, 8, 2))


# ------------------------------------------------------------------------------------------- poses
def test_pose_identities():
    g = _gen(3)
    T_w_a, T_w_b, T_b_c = _random_pose(g, 5), _random_pose(g, 5), _random_pose(g, 5)
    eye = torch.eye(4, dtype=F64).expand(5, 4, 4)
    torch.testing.assert_close(pinhole.compose(T_w_a, pinhole.invert_pose(T_w_a)), eye)
    torch.testing.assert_close(pinhole.invert_pose(T_w_a), torch.linalg.inv(T_w_a))
    T_a_b = pinhole.relative_pose(T_w_a, T_w_b)
    torch.testing.assert_close(pinhole.compose(T_w_a, T_a_b), T_w_b)
    torch.testing.assert_close(pinhole.relative_pose(T_w_b, T_w_a), pinhole.invert_pose(T_a_b))
    # associativity of compose matches applying transforms one after another
    p = torch.randn(5, 7, 3, generator=g, dtype=F64)
    torch.testing.assert_close(pinhole.transform_points(pinhole.compose(T_a_b, T_b_c), p),
                               pinhole.transform_points(T_a_b, pinhole.transform_points(T_b_c, p)))


def test_T_world_cam_maps_camera_to_world():
    # camera at (0, 0, -2) in the world, looking along +z: the world origin is 2 m in front of it
    T_world_cam = pinhole.make_pose(torch.eye(3), torch.tensor([0.0, 0.0, -2.0]))
    origin_in_cam = pinhole.transform_points(pinhole.invert_pose(T_world_cam), torch.zeros(1, 3))
    assert origin_in_cam.tolist() == [[0.0, 0.0, 2.0]]


def test_transform_points_shapes():
    g = _gen(4)
    T = _random_pose(g, 3)
    pts_n = torch.randn(3, 10, 3, generator=g, dtype=F64)
    pts_hw = torch.randn(3, 4, 5, 3, generator=g, dtype=F64)
    out_n, out_hw = pinhole.transform_points(T, pts_n), pinhole.transform_points(T, pts_hw)
    assert out_n.shape == pts_n.shape and out_hw.shape == pts_hw.shape
    manual = torch.einsum("bij,bhwj->bhwi", T[:, :3, :3], pts_hw) + T[:, None, None, :3, 3]
    torch.testing.assert_close(out_hw, manual)
    torch.testing.assert_close(pinhole.transform_points(T[1], pts_n[1]), out_n[1])
    # distances are preserved by rigid transforms
    d0 = torch.cdist(pts_n, pts_n)
    torch.testing.assert_close(torch.cdist(out_n, out_n), d0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), f=st.floats(10.0, 500.0), n=st.integers(1, 20))
def test_property_round_trip_through_world(seed, f, n):
    g = _gen(seed)
    T_world_cam = _random_pose(g)
    pts_cam = _points_in_front(g, n)
    K = pinhole.intrinsics_matrix(torch.tensor(f, dtype=F64), 31.5, 23.5)
    pts_world = pinhole.transform_points(T_world_cam, pts_cam)
    back = pinhole.transform_points(pinhole.invert_pose(T_world_cam), pts_world)
    uv = pinhole.project(back, K)
    torch.testing.assert_close(pinhole.unproject(uv, back[:, 2], K), pts_cam)


# ------------------------------------------------------------------------------------------- focal
def _synthetic_pointmap(seed, f, H=48, W=64, noise=0.003, outlier_frac=0.1):
    g = _gen(seed)
    K = pinhole.intrinsics_matrix(torch.tensor(f, dtype=F64), (W - 1) / 2, (H - 1) / 2)
    depth = 1.0 + 4.0 * torch.rand(H, W, generator=g, dtype=F64)
    pm = pinhole.depth_to_pointmap(depth, K)
    pm = pm + noise * depth[..., None] * torch.randn(H, W, 3, generator=g, dtype=F64)
    # outliers: wrong points anywhere in the view frustum (bounded x/z, y/z; wrong depth and direction)
    out = torch.rand(H, W, generator=g) < outlier_frac
    n = int(out.sum())
    z = 1.0 + 4.0 * torch.rand(n, generator=g, dtype=F64)
    xy = (torch.rand(n, 2, generator=g, dtype=F64) - 0.5) * torch.tensor([W, H], dtype=F64) / f
    pm[out] = torch.cat([xy * z[:, None], z[:, None]], dim=-1)
    return pm


@pytest.mark.parametrize("f", [40.0, 75.0, 200.0])
def test_estimate_focal_recovers_known_focal_with_noise_and_outliers(f):
    pm = _synthetic_pointmap(seed=int(f), f=f)
    f_hat = pinhole.estimate_focal(pm)
    assert f_hat.shape == ()
    assert abs(float(f_hat) - f) / f < 0.01
    # plain least squares (iters=0) is hurt by the outliers more than Weiszfeld
    assert abs(float(pinhole.estimate_focal(pm, iters=0)) - f) > abs(float(f_hat) - f)


def test_estimate_focal_batched_masks_and_invalid_values():
    pm = torch.stack([_synthetic_pointmap(1, 60.0), _synthetic_pointmap(2, 90.0)])
    valid = torch.ones(2, 48, 64, dtype=torch.bool)
    pm[0, :10] = float("nan")
    pm[1, :, :5, 2] = -1.0  # behind the camera: ignored
    pm[1, 20:, :, :] = 1e6  # garbage, masked out by `valid`
    valid[1, 20:] = False
    f_hat = pinhole.estimate_focal(pm, valid)
    assert f_hat.shape == (2,)
    torch.testing.assert_close(f_hat, torch.tensor([60.0, 90.0], dtype=F64), rtol=0.01, atol=0)
    assert torch.isnan(pinhole.estimate_focal(pm[:1], torch.zeros(1, 48, 64, dtype=torch.bool))).all()


def test_estimate_focal_custom_principal_point():
    K = pinhole.intrinsics_matrix(torch.tensor(70.0, dtype=F64), 20.0, 12.0)
    pm = pinhole.depth_to_pointmap(torch.rand(24, 32, generator=_gen(5), dtype=F64) + 1, K)
    f_hat = pinhole.estimate_focal(pm, pp=torch.tensor([20.0, 12.0]))
    torch.testing.assert_close(f_hat, torch.tensor(70.0, dtype=F64))


# ------------------------------------------------------------------------------------------- Sim(3)
@pytest.mark.parametrize("weighted", [False, True])
def test_umeyama_recovers_known_sim3(weighted):
    g = _gen(6)
    B, N = 4, 200
    R = roma.rotvec_to_rotmat(torch.randn(B, 3, generator=g, dtype=F64))
    t = torch.randn(B, 3, generator=g, dtype=F64)
    s = torch.rand(B, generator=g, dtype=F64) * 2 + 0.5
    src = torch.randn(B, N, 3, generator=g, dtype=F64)
    noise = 0.01 * torch.randn(B, N, 3, generator=g, dtype=F64)
    dst = pinhole.transform_points(pinhole.sim3_matrix(s, R, t), src) + noise
    weights = None
    if weighted:  # gross outliers with zero weight must not matter
        dst[:, :40] += 5 * torch.randn(B, 40, 3, generator=g, dtype=F64)
        weights = torch.ones(B, N, dtype=F64)
        weights[:, :40] = 0.0
        weights[:, 40:] = torch.rand(B, N - 40, generator=g, dtype=F64) + 0.1
    s_hat, R_hat, t_hat = pinhole.umeyama_sim3(src, dst, weights)
    assert s_hat.shape == (B,) and R_hat.shape == (B, 3, 3) and t_hat.shape == (B, 3)
    torch.testing.assert_close(s_hat, s, rtol=5e-3, atol=0)
    assert pinhole.rotation_angle_deg(R_hat, R).max() < 0.5
    torch.testing.assert_close(t_hat, t, atol=2e-2, rtol=0)


def test_umeyama_without_scale_and_reflection_handled():
    g = _gen(7)
    src = torch.randn(30, 3, generator=g, dtype=F64)
    T = _random_pose(g)
    dst = pinhole.transform_points(T, src)
    s_hat, R_hat, t_hat = pinhole.umeyama_sim3(src, dst, with_scale=False)
    assert float(s_hat) == 1.0
    torch.testing.assert_close(pinhole.make_pose(R_hat, t_hat), T)
    # mirrored target: the answer must still be a proper rotation (det +1)
    _, R_m, _ = pinhole.umeyama_sim3(src, dst * torch.tensor([1.0, 1.0, -1.0], dtype=F64))
    torch.testing.assert_close(torch.linalg.det(R_m), torch.tensor(1.0, dtype=F64))


# ------------------------------------------------------------------------------------------- gradients
def test_gradcheck_project_unproject_transform():
    g = _gen(8)
    pts = _points_in_front(g, 2, 3).requires_grad_()
    K = pinhole.intrinsics_matrix(torch.tensor([50.0, 60.0], dtype=F64), 4.0, 3.0).requires_grad_()
    assert torch.autograd.gradcheck(pinhole.project, (pts, K))
    uv = (torch.rand(2, 3, 2, generator=g, dtype=F64) * 8).requires_grad_()
    z = (torch.rand(2, 3, generator=g, dtype=F64) + 1).requires_grad_()
    assert torch.autograd.gradcheck(pinhole.unproject, (uv, z, K))
    T = _random_pose(g, 2).requires_grad_()
    assert torch.autograd.gradcheck(pinhole.transform_points, (T, pts))


def test_gradcheck_umeyama_sim3():
    g = _gen(9)
    src = torch.randn(6, 3, generator=g, dtype=F64).requires_grad_()
    dst = (src.detach() @ roma.rotvec_to_rotmat(torch.tensor([0.3, -0.2, 0.5], dtype=F64)).T * 1.5 + 0.2
           + 0.05 * torch.randn(6, 3, generator=g, dtype=F64)).requires_grad_()
    w = (torch.rand(6, generator=g, dtype=F64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: pinhole.umeyama_sim3(a, b, c), (src, dst, w))


def test_estimate_focal_is_differentiable():
    pm = _synthetic_pointmap(3, 50.0, H=6, W=8, outlier_frac=0.0).requires_grad_()
    pinhole.estimate_focal(pm).backward()
    assert torch.isfinite(pm.grad).all() and pm.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: pinhole.project(torch.zeros(5, 2), torch.eye(3)), r"points_cam must have shape \(\.\.\., 3\)"),
    (lambda: pinhole.project(torch.ones(5, 3), torch.eye(4)), r"K must have shape"),
    (lambda: pinhole.project(torch.ones(2, 5, 3), torch.eye(3).expand(3, 3, 3)), r"K batch dims"),
    (lambda: pinhole.unproject(torch.zeros(5, 2), torch.ones(4), torch.eye(3)), r"depth must have shape"),
    (lambda: pinhole.depth_to_pointmap(torch.ones(5), torch.eye(3)), r"depth must have shape \(\.\.\., H, W\)"),
    (lambda: pinhole.make_pose(torch.eye(3), torch.zeros(4)), r"t must have shape"),
    (lambda: pinhole.transform_points(torch.eye(4).expand(2, 4, 4), torch.ones(5, 3)), r"points\[None\]"),
    (lambda: pinhole.transform_points(torch.eye(4), torch.ones(5, 2)), r"points must have shape"),
    (lambda: pinhole.umeyama_sim3(torch.ones(5, 3), torch.ones(4, 3)), r"same shape"),
    (lambda: pinhole.umeyama_sim3(torch.ones(5, 3), torch.ones(5, 3), torch.ones(4)), r"weights must have shape"),
    (lambda: pinhole.umeyama_sim3(torch.ones(2, 3), torch.ones(2, 3)), r"at least 3"),
    (lambda: pinhole.estimate_focal(torch.ones(4, 5, 3), torch.ones(4, 4, dtype=torch.bool)), r"valid must"),
    (lambda: pinhole.estimate_focal(torch.ones(4, 3)), r"\(\.\.\., H, W, 3\)"),
    (lambda: pinhole.pixel_grid(0, 4), r"at least 1x1"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_umeyama_scale_under_reflection_is_the_textbook_one():
    """dst is a mirror image of src (z -> -z), scaled by 2: the best orthogonal map is a reflection. R stays a
    rotation and s = tr(D S) / σ² (smallest singular value with a minus sign), not tr(D) / σ² = 2."""
    g = torch.Generator().manual_seed(3)
    src = torch.randn(30, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 0.5], dtype=torch.float64)
    dst = 2.0 * src * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64) + 1.0
    s, R, t = pinhole.umeyama_sim3(src, dst)
    assert float(torch.linalg.det(R)) == pytest.approx(1.0)
    xc, yc = src - src.mean(0), dst - dst.mean(0)
    cov, var = yc.T @ xc / len(src), (xc * xc).sum(-1).mean()
    U, D, Vh = torch.linalg.svd(cov)
    assert float(torch.det(U @ Vh)) < 0  # the unconstrained optimum is a reflection
    textbook = float((D[0] + D[1] - D[2]) / var)
    assert float(s) == pytest.approx(textbook, rel=1e-9)
    assert textbook < float(D.sum() / var) == pytest.approx(2.0)

    def residual(scale):
        return float(((scale * src @ R.T + (dst.mean(0) - scale * R @ src.mean(0)) - dst) ** 2).sum())

    # For this R, the textbook scale is the least-squares one: the sign-blind scale and nearby ones do worse.
    assert residual(float(s)) < residual(float(D.sum() / var))
    assert residual(float(s)) <= min(residual(float(s) * 1.01), residual(float(s) * 0.99))
    torch.testing.assert_close(t, dst.mean(0) - s * R @ src.mean(0))
