"""Camera geometry, written once: pixels, intrinsics, projection, poses, focal (Weiszfeld), Umeyama Sim(3).

Dimension letters: B batch, T frames, H image rows, W image columns, N points; ``...`` any leading batch dims.

Conventions (docs/method.md §1), used by every function here:
  - Cameras are OpenCV: x right, y down, z forward (points in front of a camera have z > 0).
  - Poses are 4x4 matrices named by what they map: ``T_world_cam @ [x_cam; 1] = [x_world; 1]``.
    ``T_a_b`` maps b-coordinates to a-coordinates, so ``T_a_c = T_a_b @ T_b_c``.
  - Pixels (u, v) = (column, row); pixel centres sit at integer coordinates, so the image spans
    u in [-0.5, W - 0.5]. K = [[f, 0, cx], [0, f, cy], [0, 0, 1]], default principal point ((W-1)/2, (H-1)/2).
  - Batch dims of a camera (K or T) are matched to the leading dims of the points *from the left*:
    one K of shape (B, 3, 3) serves points (B, N, 3) or (B, H, W, 3); ``(3, 3)`` / ``(4, 4)`` serve all.

>>> K = intrinsics_matrix(100.0, 47.5, 31.5)
>>> project(torch.tensor([[0.0, 0.0, 2.0], [1.0, -1.0, 2.0]]), K)
tensor([[ 47.5000,  31.5000],
        [ 97.5000, -18.5000]])
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

from st4r_lite.errors import InputError

__all__ = [
    "pixel_grid", "grid_query_pixels", "intrinsics_matrix", "project", "unproject", "depth_to_pointmap", "make_pose",
    "invert_pose", "compose", "relative_pose", "transform_points", "estimate_focal", "umeyama_sim3",
    "sim3_matrix", "to_homogeneous", "rotation_angle_deg",
]


# ----------------------------------------------------------------------------------------------- checks
def _tensor(x, name: str, like: Tensor | None = None) -> Tensor:
    """``x`` as a floating tensor (numbers/arrays take ``like``'s dtype and device, else the default)."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x, device=like.device if like is not None else None)
        if like is not None and like.is_floating_point():
            x = x.to(like.dtype)
    if not x.is_floating_point():
        x = x.to(like.dtype if like is not None and like.is_floating_point() else torch.get_default_dtype())
    return x


def _check_last(x: Tensor, name: str, shape: tuple[int, ...]) -> None:
    k = len(shape)
    if x.ndim < k or tuple(x.shape[-k:]) != shape:
        spec = ", ".join(str(s) for s in shape)
        raise ValueError(f"{name} must have shape (..., {spec}), got {tuple(x.shape)}")


def _left_align(mat: Tensor, name: str, lead: tuple[int, ...], k: int = 2) -> Tensor:
    """Insert singleton dims after ``mat``'s batch dims so they match ``lead`` from the left."""
    batch = tuple(mat.shape[:-k])
    if len(batch) > len(lead):
        raise ValueError(f"{name} has batch dims {batch} but the points only have leading dims {lead}; "
                         f"a camera's batch dims must be a prefix of the points' leading dims")
    for a, b in zip(batch, lead):
        if a != b and a != 1 and b != 1:
            raise ValueError(f"{name} batch dims {batch} do not match the points' leading dims {lead} "
                             f"(matched from the left); add a leading axis to the points to share them")
    return mat.reshape(batch + (1,) * (len(lead) - len(batch)) + tuple(mat.shape[-k:]))


# ----------------------------------------------------------------------------------------------- pixels, K
def pixel_grid(H: int, W: int, device=None, dtype=None) -> Tensor:
    """The (u, v) = (column, row) coordinates of every pixel centre: ``grid[v, u] = (u, v)``.

    Returns (H, W, 2).
    >>> pixel_grid(2, 3)[1, 2]
    tensor([2., 1.])
    """
    if H < 1 or W < 1:
        raise ValueError(f"image size must be at least 1x1, got H={H}, W={W}")
    dtype = dtype or torch.get_default_dtype()
    v, u = torch.meshgrid(torch.arange(H, device=device, dtype=dtype),
                          torch.arange(W, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u, v], dim=-1)


def grid_query_pixels(H: int, W: int, stride: int = 4, margin: int | None = None) -> Tensor:
    """Query pixels on a regular grid of the anchor frame: (N, 2) (u, v) integer centres, row-major.

    margin defaults to stride // 2. >>> grid_query_pixels(4, 8, stride=4).tolist()  -> [[2, 2], [6, 2]]
    """
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    m = stride // 2 if margin is None else margin
    vs, us = torch.arange(m, H, stride), torch.arange(m, W, stride)
    if len(vs) == 0 or len(us) == 0:
        raise InputError(f"no grid pixel fits a {H}x{W} image with stride {stride} and margin {m}")
    v, u = torch.meshgrid(vs, us, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1).float()


def intrinsics_matrix(f, cx, cy) -> Tensor:
    """K = [[f, 0, cx], [0, f, cy], [0, 0, 1]] from focal and principal point (floats or tensors, broadcast).

    Returns (..., 3, 3).
    >>> intrinsics_matrix(torch.tensor([1.0, 2.0]), 0.5, 0.5).shape
    torch.Size([2, 3, 3])
    """
    like = next((x for x in (f, cx, cy) if isinstance(x, Tensor)), None)
    f, cx, cy = torch.broadcast_tensors(*(_tensor(x, n, like) for x, n in ((f, "f"), (cx, "cx"), (cy, "cy"))))
    zero, one = torch.zeros_like(f), torch.ones_like(f)
    rows = [[f, zero, cx], [zero, f, cy], [zero, zero, one]]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def to_homogeneous(x: Tensor) -> Tensor:
    """Append a 1: (..., D) -> (..., D + 1)."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


# ----------------------------------------------------------------------------------------------- projection
def project(points_cam: Tensor, K: Tensor) -> Tensor:
    """Pinhole projection of camera-frame points to pixels: (u, v) = (f x / z + cx, f y / z + cy).

    (General K: [u, v, 1] ∝ K [x, y, z].)
    points_cam: (..., 3); K: (3, 3) or (..., 3, 3) matched from the left.
    Returns (..., 2). Points with z = 0 give inf/nan: mask them first (z > 0 means in front of the camera).
    """
    points_cam, K = _tensor(points_cam, "points_cam"), _tensor(K, "K")
    _check_last(points_cam, "points_cam", (3,))
    _check_last(K, "K", (3, 3))
    K = _left_align(K, "K", tuple(points_cam.shape[:-1]))
    p = (K @ points_cam.unsqueeze(-1)).squeeze(-1)
    return p[..., :2] / p[..., 2:3]


def unproject(pixels: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Lift pixels with z-depth to camera-frame points: X = z K⁻¹ [u, v, 1], i.e. x = (u - cx) z / f.

    pixels: (..., 2); depth: (...) z-depth (not ray length); K: (3, 3) or (..., 3, 3) matched from the left.
    Returns (..., 3).
    """
    pixels, depth, K = _tensor(pixels, "pixels"), _tensor(depth, "depth"), _tensor(K, "K")
    _check_last(pixels, "pixels", (2,))
    _check_last(K, "K", (3, 3))
    if tuple(depth.shape) != tuple(pixels.shape[:-1]):
        raise ValueError(f"depth must have shape pixels.shape[:-1] = {tuple(pixels.shape[:-1])}, "
                         f"got {tuple(depth.shape)}")
    K_inv = _left_align(torch.linalg.inv(K), "K", tuple(pixels.shape[:-1]))
    rays = (K_inv @ to_homogeneous(pixels).unsqueeze(-1)).squeeze(-1)
    return rays * depth.unsqueeze(-1)


def depth_to_pointmap(depth: Tensor, K: Tensor) -> Tensor:
    """Camera-frame pointmap of a depth image: pointmap[..., v, u] = unproject((u, v), depth[..., v, u], K).

    depth: (..., H, W); K: (3, 3) or (..., 3, 3) (one per image). Returns (..., H, W, 3).
    >>> depth_to_pointmap(torch.full((2, 3), 2.0), intrinsics_matrix(1.0, 1.0, 0.5))[1, 2]
    tensor([2., 1., 2.])
    """
    depth, K = _tensor(depth, "depth"), _tensor(K, "K")
    if depth.ndim < 2:
        raise ValueError(f"depth must have shape (..., H, W), got {tuple(depth.shape)}")
    _check_last(K, "K", (3, 3))
    H, W = depth.shape[-2:]
    lead = tuple(depth.shape[:-2])
    K = _left_align(K, "K", lead)[..., None, None, :, :]
    grid = pixel_grid(H, W, device=depth.device, dtype=depth.dtype).expand(*lead, H, W, 2)
    return unproject(grid, depth, K)


# ----------------------------------------------------------------------------------------------- poses
def make_pose(R: Tensor, t: Tensor) -> Tensor:
    """T = [[R, t], [0, 0, 0, 1]]. R: (..., 3, 3); t: (..., 3) (broadcast). Returns (..., 4, 4)."""
    R, t = _tensor(R, "R"), _tensor(t, "t", like=R if isinstance(R, Tensor) else None)
    _check_last(R, "R", (3, 3))
    _check_last(t, "t", (3,))
    lead = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    top = torch.cat([R.expand(*lead, 3, 3), t.expand(*lead, 3).unsqueeze(-1)], dim=-1)
    bottom = torch.zeros(*lead, 1, 4, dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def invert_pose(T: Tensor) -> Tensor:
    """Closed-form inverse of a rigid pose: [[R, t], [0, 1]]⁻¹ = [[Rᵀ, -Rᵀ t], [0, 1]]. (..., 4, 4).

    Only valid for rigid poses (R a rotation); for a scaled pose use ``torch.linalg.inv``.
    >>> T = make_pose(torch.eye(3), torch.tensor([1.0, 2.0, 3.0]))
    >>> invert_pose(T)[:3, 3]
    tensor([-1., -2., -3.])
    """
    T = _tensor(T, "T")
    _check_last(T, "T", (4, 4))
    R_inv = T[..., :3, :3].transpose(-1, -2)
    return make_pose(R_inv, -(R_inv @ T[..., :3, 3:]).squeeze(-1))


def compose(T_a_b: Tensor, T_b_c: Tensor) -> Tensor:
    """T_a_c = T_a_b @ T_b_c (broadcast over leading dims). (..., 4, 4)."""
    _check_last(T_a_b, "T_a_b", (4, 4))
    _check_last(T_b_c, "T_b_c", (4, 4))
    return T_a_b @ T_b_c


def relative_pose(T_world_a: Tensor, T_world_b: Tensor) -> Tensor:
    """T_a_b = T_world_a⁻¹ @ T_world_b: maps b-camera coords to a-camera coords. (..., 4, 4)."""
    return compose(invert_pose(T_world_a), T_world_b)


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply a 4x4 transform: p' = R p + t (R may carry a scale, e.g. from ``sim3_matrix``).

    T: (4, 4) or (..., 4, 4); points: (..., N, 3) or (..., H, W, 3); T's batch dims are matched to the points'
    leading dims from the left (one pose per frame for a (T, H, W, 3) pointmap). Returns points' shape.
    >>> transform_points(make_pose(torch.eye(3), torch.ones(3)), torch.zeros(2, 4, 3)).shape
    torch.Size([2, 4, 3])
    """
    T, points = _tensor(T, "T"), _tensor(points, "points")
    _check_last(T, "T", (4, 4))
    _check_last(points, "points", (3,))
    lead = tuple(points.shape[:-2]) if points.ndim >= 2 else ()
    if T.ndim - 2 > len(lead):
        raise ValueError(f"T has batch dims {tuple(T.shape[:-2])} but points {tuple(points.shape)} only have "
                         f"{len(lead)} batch dim(s) before (N, 3); to move one point set by several poses, "
                         f"add a leading axis: points[None]")
    T = _left_align(T, "T", tuple(points.shape[:-1]))
    return (T[..., :3, :3] @ points.unsqueeze(-1)).squeeze(-1) + T[..., :3, 3]


def sim3_matrix(scale: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """The 4x4 matrix of x -> scale R x + t. scale: (...); R: (..., 3, 3); t: (..., 3) -> (..., 4, 4)."""
    scale = _tensor(scale, "scale", like=R)
    return make_pose(scale[..., None, None] * R, t)


def rotation_angle_deg(R1: Tensor, R2: Tensor) -> Tensor:
    """Geodesic angle between rotations, degrees: angle of R1ᵀ R2. (..., 3, 3) -> (...)."""
    _check_last(R1, "R1", (3, 3))
    _check_last(R2, "R2", (3, 3))
    return torch.rad2deg(roma.rotmat_geodesic_distance(R1, R2))


# ----------------------------------------------------------------------------------------------- estimation
def estimate_focal(pointmap: Tensor, valid: Tensor | None = None, pp: Tensor | None = None,
                   iters: int = 10) -> Tensor:
    """Focal length of the camera that sees a pointmap in its own frame (DUSt3R's Weiszfeld, docs/method.md §5).

    With d_p = (u_p, v_p) - pp and q_p = (x_p / z_p, y_p / z_p), minimise the robust (L1-of-norms) cost
        E(f) = Σ_p ‖d_p - f q_p‖
    by iteratively reweighted least squares (Weiszfeld): start with least squares (w_p = 1), then repeat
        f ← Σ_p w_p ⟨d_p, q_p⟩ / Σ_p w_p ‖q_p‖²,   w_p = 1 / max(‖d_p - f q_p‖, ε).
    Pixels that are invalid (``valid`` False, non-finite, z <= 0) get weight 0.
    The L1 cost shrugs off wrong points with a sensible direction (|x/z| within the field of view), but not
    points at z ≈ 0: their huge x/z dominate both sums, so mask low-confidence pixels through ``valid``.

    pointmap: (..., H, W, 3) camera frame; valid: (..., H, W) bool or None; pp: (2,) or (..., 2) pixels,
    default ((W-1)/2, (H-1)/2); returns f: (...). An image with no usable pixel gets NaN (check ``isfinite``).
    >>> K = intrinsics_matrix(50.0, 4.5, 3.5)
    >>> round(float(estimate_focal(depth_to_pointmap(torch.rand(8, 10) + 1, K))), 3)
    50.0
    """
    pointmap = _tensor(pointmap, "pointmap")
    _check_last(pointmap, "pointmap", (3,))
    if pointmap.ndim < 3:
        raise ValueError(f"pointmap must have shape (..., H, W, 3), got {tuple(pointmap.shape)}")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    H, W = pointmap.shape[-3:-1]
    lead = tuple(pointmap.shape[:-3])
    z = pointmap[..., 2]
    mask = torch.isfinite(pointmap).all(-1) & (z > 0)
    if valid is not None:
        valid = torch.as_tensor(valid, device=pointmap.device)
        if tuple(valid.shape) != tuple(pointmap.shape[:-1]):
            raise ValueError(f"valid must have shape pointmap.shape[:-1] = {tuple(pointmap.shape[:-1])}, "
                             f"got {tuple(valid.shape)}")
        mask = mask & valid.bool()
    if pp is None:
        pp = pointmap.new_tensor([(W - 1) / 2, (H - 1) / 2])
    pp = _tensor(pp, "pp", like=pointmap)
    _check_last(pp, "pp", (2,))
    pp = _left_align(pp, "pp", lead, k=1)[..., None, None, :]
    safe = torch.where(mask.unsqueeze(-1), pointmap, torch.ones_like(pointmap))  # keeps gradients finite
    q = safe[..., :2] / safe[..., 2:3]
    d = pixel_grid(H, W, device=pointmap.device, dtype=pointmap.dtype) - pp
    w = mask.to(pointmap.dtype)

    def solve(weights: Tensor) -> Tensor:
        num = (weights * (d * q).sum(-1)).sum((-2, -1))
        den = (weights * (q * q).sum(-1)).sum((-2, -1))
        return num / den  # 0/0 = NaN when nothing is valid

    f = solve(w)
    eps = 1e-6 * max(H, W)
    for _ in range(iters):
        residual = (d - f[..., None, None, None] * q).norm(dim=-1)
        f = solve(w / residual.clamp_min(eps))
    return f


def umeyama_sim3(src: Tensor, dst: Tensor, weights: Tensor | None = None,
                 with_scale: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity (Umeyama 1991) dst ≈ scale R src + t: minimise Σ_i w_i ‖s R x_i + t - y_i‖².

    With weighted means μ_x, μ_y, the cross-covariance Σ_xy = Σ_i w_i (y_i - μ_y)(x_i - μ_x)ᵀ / Σ w and
    the variance σ_x² = Σ_i w_i ‖x_i - μ_x‖² / Σ w:
        R = U diag(1, 1, det(U Vᵀ)) Vᵀ  where U D Vᵀ = svd(Σ_xy)   (roma.special_procrustes)
        s = tr(Rᵀ Σ_xy) / σ_x²   (1 if with_scale is False),      t = μ_y - s R μ_x.
    Scale convention: Umeyama's textbook one, s = tr(D S) / σ_x² with S = diag(1, 1, det(U Vᵀ)) (his eq. 42;
    tr(Rᵀ Σ_xy) = tr(D S)). When the best orthogonal map would be a reflection (det(U Vᵀ) = -1), R stays a
    rotation and the smallest singular value enters the scale with a minus sign: s is then the least-squares
    scale for that R. The other convention seen in code, s = tr(D) / σ_x² (all singular values added, the sign
    ignored), gives a larger scale in that case and a larger residual. roma 1.8 (``rigid_points_registration``,
    which the reference DUSt3R code calls) uses tr(D S) too, so ours and the reference agree.
    src, dst: (..., N, 3), N >= 3 non-collinear; weights: (..., N) >= 0 or None.
    Returns scale (...), R (..., 3, 3), t (..., 3).
    >>> x = torch.randn(10, 3, dtype=torch.float64)
    >>> s, R, t = umeyama_sim3(x, 2 * x + 1)
    >>> round(float(s), 6), torch.allclose(R, torch.eye(3, dtype=torch.float64)), t.round(decimals=6).tolist()
    (2.0, True, [1.0, 1.0, 1.0])
    """
    src, dst = _tensor(src, "src"), _tensor(dst, "dst")
    _check_last(src, "src", (3,))
    _check_last(dst, "dst", (3,))
    if src.ndim < 2 or src.shape != dst.shape:
        raise ValueError(f"src and dst must have the same shape (..., N, 3), got {tuple(src.shape)} "
                         f"and {tuple(dst.shape)}")
    if src.shape[-2] < 3:
        raise ValueError(f"need at least 3 correspondences, got N={src.shape[-2]}")
    if weights is None:
        weights = torch.ones_like(src[..., 0])
    weights = _tensor(weights, "weights", like=src)
    if tuple(weights.shape) != tuple(src.shape[:-1]):
        raise ValueError(f"weights must have shape src.shape[:-1] = {tuple(src.shape[:-1])}, "
                         f"got {tuple(weights.shape)}")
    w = weights / weights.sum(-1, keepdim=True)
    mu_x = (w.unsqueeze(-1) * src).sum(-2)
    mu_y = (w.unsqueeze(-1) * dst).sum(-2)
    xc, yc = src - mu_x.unsqueeze(-2), dst - mu_y.unsqueeze(-2)
    cov = torch.einsum("...n,...ni,...nj->...ij", w, yc, xc)
    R = roma.special_procrustes(cov)
    if with_scale:
        var_x = (w * (xc * xc).sum(-1)).sum(-1)
        scale = (R * cov).sum((-2, -1)) / var_x
    else:
        scale = torch.ones_like(mu_x[..., 0])
    t = mu_y - scale.unsqueeze(-1) * (R @ mu_x.unsqueeze(-1)).squeeze(-1)
    return scale, R, t
