"""Perspective-n-Point on pointmaps: robust linear start (RANSAC) and Levenberg–Marquardt refinement.

Dimension letters: T independent problems (frames), N points per problem, M RANSAC minimal sets per problem,
S = 3 points in a minimal set, D homogeneous coordinates of the linear model (4 for 3D DLT, 3 for a plane).

The problem (docs/method.md §5). World points X_i (the recon pointmap of frame j, in the anchor = world frame) are seen at
pixels p_i of frame j. Find the world-to-camera pose (R, t) = T_cam_world with

    π(K (R X_i + t)) ≈ p_i,     π(x, y, z) = (x / z, y / z).

With normalised image coordinates x_i = K⁻¹ p̃_i (p̃ = [u, v, 1]) this is x_i ∝ [R | t] X̃_i.

1. Linear start (DLT). Cross-multiplying x ∝ P X̃ (P = λ [R | t], 3x4) gives two equations per point,
       P₁·X̃ − x P₃·X̃ = 0,     P₂·X̃ − y P₃·X̃ = 0,
   linear in the 12 entries of P: stack them in A (2N x 12) and take the unit vector minimising Σ w_i ‖A_i P‖²,
   the eigenvector of AᵀWA with the smallest eigenvalue (6 points are enough). Then R = nearest rotation to
   P[:, :3] (after fixing the sign so that det > 0), λ = ‖P[:, :3]‖_F / √3, t = P[:, 3] / λ.
   A *planar* scene (all X_i on a plane c + a e₁ + b e₂) makes this 12-unknown system rank-deficient, so there we
   fit the homography x ∝ H [a, b, 1] instead (same equations with D = 3, 4 points are enough):
       H = λ [R e₁, R e₂, R c + t]   →   R = nearest rotation to [h₁, h₂] [e₁, e₂]ᵀ / λ,  t = h₃ / λ − R c,
   with the sign of H chosen so that the plane's centre lies in front of the camera (h₃,z > 0).
2. RANSAC: draw M minimal sets of 3 points per frame (weighted by confidence, with a torch.Generator:
   deterministic) and solve each one with the calibrated P3P (``p3p``: a quartic, up to 4 poses per set, all
   batched). Only 3 points must be clean: at 40% outliers a set is clean with probability 0.6³ = 0.22 instead of
   0.6⁶ = 0.05 for a 6-point DLT set, and with K known P3P's poses are far less noise-sensitive than a minimal
   11-dof DLT. Score them with the truncated (MSAC) reprojection cost Σ w_i min(r_i², τ²) (points behind the
   camera count as outliers; preemptively: all hypotheses on 128 points, the best 16 on ``score_points``),
   keep the best, refit the linear model of step 1 on its inliers (kept only when its cost is lower).
3. Levenberg–Marquardt on the weighted robust reprojection cost Σ w_i ρ(‖r_i‖), r_i = π(K(R X_i + t)) − p_i,
   over 6-dof increments δ = (ω, v) ∈ so(3) × R³ applied on the left: R ← exp(ω) R, t ← exp(ω) t + v.
   With Y = R X + t = (x, y, z), the Jacobian of r is
       ∂r/∂δ = ∂π/∂Y · [−[Y]ₓ | I],     ∂π/∂Y = [[f_x / z, 0, −f_x x / z²], [0, f_y / z, −f_y y / z²]],
   the normal equations (JᵀWJ + μ diag(JᵀWJ)) δ = −JᵀW r, with IRLS weights ψ(‖r‖)/‖r‖ for ρ (Huber, Cauchy).
4. Differentiability: LM runs without gradient; then one Gauss–Newton step from its (detached) optimum θ*,
       θ = θ* − H(θ*)⁻¹ g(θ*; X, w),      H = JᵀWJ, g = JᵀW r,
   is evaluated with autograd. At a stationary point g = 0, so dθ/dX = −H⁻¹ ∂g/∂X: exactly the implicit-function
   gradient (with the Gauss–Newton Hessian), for O(1) memory instead of unrolling every LM iteration. This is
   also what the released code does (LM without gradient + one differentiable Gauss–Newton step).
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

__all__ = [
    "normalized_coords", "frame_normalization", "linear_pose", "p3p", "ransac_pose", "reprojection",
    "robust_weights", "robust_cost", "lm_refine", "gauss_newton_step", "ROBUST_LOSSES",
]

ROBUST_LOSSES = (None, "huber", "cauchy")
_BEHIND_PX = 1e4  # residual charged to a point behind the camera when comparing LM costs


def normalized_coords(pixels: Tensor, K: Tensor) -> Tensor:
    """x = ((u − cx) / fx, (v − cy) / fy) (= K⁻¹ [u, v, 1] for K without skew). pixels (T, N, 2), K (T, 3, 3)."""
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]
    c = torch.stack([K[:, 0, 2], K[:, 1, 2]], -1)[:, None]
    return (pixels - c) / f


def frame_normalization(points: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hartley-style conditioning of each frame's points and its planarity.

    points (T, N, 3), weights (T, N) >= 0. Returns centre c (T, 3) (weighted mean), scale s (T,) (weighted RMS
    distance to c / √3), in-plane basis E (T, 3, 2) (the two main axes) and flatness (T,) = σ_min / σ_max, the
    ratio of the smallest to the largest standard deviation along the principal axes (0 for a plane).
    """
    w = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    c = (w[..., None] * points).sum(-2)
    d = points - c[:, None]
    cov = torch.einsum("tn,tni,tnj->tij", w, d, d)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals = evals.clamp_min(0)
    s = (evals.sum(-1) / 3).sqrt().clamp_min(1e-12)
    flatness = (evals[:, 0] / evals[:, 2].clamp_min(1e-30)).sqrt()
    return c, s, evecs[..., [2, 1]], flatness


def _projective_fit(q: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """Unit-norm P (..., 3, D) minimising Σ_i w_i ‖A_i vec(P)‖², A_i = [[qᵢ, 0, −x qᵢ], [0, qᵢ, −y qᵢ]]."""
    zeros = torch.zeros_like(q)
    a1 = torch.cat([q, zeros, -x[..., :1] * q], -1)
    a2 = torch.cat([zeros, q, -x[..., 1:] * q], -1)
    ata = torch.einsum("...n,...ni,...nj->...ij", w, a1, a1) + torch.einsum("...n,...ni,...nj->...ij", w, a2, a2)
    ata = ata / ata.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None].clamp_min(1e-30)
    _, evecs = torch.linalg.eigh(ata)
    return evecs[..., 0].unflatten(-1, (3, q.shape[-1]))


def linear_pose(points: Tensor, x: Tensor, w: Tensor, center: Tensor, scale: Tensor,
                basis: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Weighted linear pose (DLT, or plane homography when ``basis`` is given); see the module docstring.

    points (..., N, 3) world; x (..., N, 2) normalised image coords; w (..., N) weights; center (..., 3),
    scale (...), basis (..., 3, 2) | None: the frame's conditioning (from ``frame_normalization``, broadcast to
    the leading dims). Returns R (..., 3, 3), t (..., 3) of T_cam_world (non-finite for degenerate sets).
    """
    local = (points - center[..., None, :]) / scale[..., None, None]
    if basis is None:
        P = _projective_fit(torch.cat([local, torch.ones_like(local[..., :1])], -1), x, w)
        M3 = P[..., :3] / scale[..., None, None]  # undo the conditioning: P X̃ = P'[(X − c)/s; 1]
        p4 = P[..., 3] - (M3 @ center[..., None])[..., 0]
        sign = torch.where(torch.linalg.det(M3) < 0, -1.0, 1.0).to(M3)
        M3, p4 = M3 * sign[..., None, None], p4 * sign[..., None]
        lam = torch.linalg.matrix_norm(M3) / 3**0.5
        R = roma.special_procrustes(M3)
        return R, p4 / lam[..., None]
    ab = torch.einsum("...ni,...ij->...nj", local, basis)
    Hm = _projective_fit(torch.cat([ab, torch.ones_like(ab[..., :1])], -1), x, w)
    sign = torch.where(Hm[..., 2, 2] < 0, -1.0, 1.0).to(Hm)  # plane centre in front of the camera
    Hm = Hm * sign[..., None, None]
    lam = (Hm[..., 0].norm(dim=-1) + Hm[..., 1].norm(dim=-1)) / 2  # = λ s, since h_k = λ s R e_k
    R = roma.special_procrustes(Hm[..., :2] @ basis.transpose(-1, -2) / lam[..., None, None])
    t = Hm[..., 2] * (scale / lam)[..., None] - (R @ center[..., None])[..., 0]
    return R, t


def _polymul(a: Tensor, b: Tensor) -> Tensor:
    """Product of polynomials with ascending coefficients a (..., n), b (..., m) -> (..., n + m − 1)."""
    out = a.new_zeros(*torch.broadcast_shapes(a.shape[:-1], b.shape[:-1]), a.shape[-1] + b.shape[-1] - 1)
    for i in range(a.shape[-1]):
        out[..., i : i + b.shape[-1]] += a[..., i : i + 1] * b
    return out


def p3p(points: Tensor, bearings: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Calibrated minimal pose from 3 points (Grunert's P3P): up to 4 poses (R, t) with R X_k + t ∝ b_k.

    points (..., 3, 3) world points X_k (rows), bearings (..., 3, 3) unit rays b_k = K⁻¹p̃_k / ‖K⁻¹p̃_k‖.
    With s_k the unknown distances along the rays, the triangle sides give three laws of cosines
        s_i² + s_j² − 2 s_i s_j cos θ_ij = ‖X_i − X_j‖²,   cos θ_ij = b_i·b_j.
    Put u = s₂/s₁, v = s₃/s₁, D(v) = 1 + v² − 2v cos θ₁₃ and normalise the sides by b² = ‖X₁ − X₃‖². Subtracting
    two of the equations gives u linearly, u = N(v) / Dn(v) with
        N = (1 − v²) + (a² − c²) D,   Dn = 2 (cos θ₁₂ − v cos θ₂₃)   (a = ‖X₂ − X₃‖, c = ‖X₁ − X₂‖),
    and putting it back into u² − 2u cos θ₁₂ + 1 − c² D = 0 (times Dn²) leaves a quartic in v:
        N² − 2 cos θ₁₂ N Dn + (1 − c² D) Dn² = 0,
    solved as the eigenvalues of its companion matrix. Then s₁ = b / √D, s₂ = u s₁, s₃ = v s₁, the camera-frame
    points Y_k = s_k b_k, and (R, t) = the rigid fit Y ≈ R X + t (Kabsch). Returns R (..., 4, 3, 3),
    t (..., 4, 3) and ok (..., 4) bool (real root, all s_k > 0, finite); not-ok entries hold finite junk.
    """
    b1, b2, b3 = bearings.unbind(-2)
    X1, X2, X3 = points.unbind(-2)
    ca, cb, cc = (b2 * b3).sum(-1), (b1 * b3).sum(-1), (b1 * b2).sum(-1)  # cos θ₂₃, cos θ₁₃, cos θ₁₂
    bb = ((X1 - X3) ** 2).sum(-1)
    bb_safe = bb.clamp_min(1e-30)
    aa, cc2 = ((X2 - X3) ** 2).sum(-1) / bb_safe, ((X1 - X2) ** 2).sum(-1) / bb_safe
    one, zero = torch.ones_like(ca), torch.zeros_like(ca)
    D = torch.stack([one, -2 * cb, one], -1)
    N = torch.stack([one, zero, -one], -1) + (aa - cc2)[..., None] * D
    Dn = torch.stack([2 * cc, -2 * ca], -1)
    NDn = torch.cat([_polymul(N, Dn), zero[..., None]], -1)  # degree 3, padded to 5 coefficients
    quartic = (_polymul(N, N) - 2 * cc[..., None] * NDn
               + _polymul(torch.stack([one, zero, zero], -1) - cc2[..., None] * D, _polymul(Dn, Dn)))
    lead = quartic[..., 4]
    good = torch.isfinite(quartic).all(-1) & (lead.abs() > 1e-12 * quartic.abs().amax(-1)) & (bb > 1e-24)
    monic = torch.where(good[..., None], quartic[..., :4] / torch.where(good, lead, one)[..., None],
                        torch.zeros_like(quartic[..., :4]))
    companion = torch.diag_embed(torch.ones_like(monic[..., :3]), offset=-1)
    companion[..., 0, :] = -monic.flip(-1)
    roots = torch.linalg.eigvals(companion)  # (..., 4) complex
    v = roots.real
    real = roots.imag.abs() <= 1e-6 + 1e-3 * v.abs()
    Dv = 1 + v**2 - 2 * v * cb[..., None]
    u = ((1 - v**2) + (aa - cc2)[..., None] * Dv) / (2 * (cc[..., None] - v * ca[..., None]))
    s1 = (bb[..., None] / Dv.clamp_min(1e-30)).sqrt()
    s = torch.stack([s1, u * s1, v * s1], -1)  # (..., 4, 3)
    ok = good[..., None] & real & (s > 0).all(-1) & torch.isfinite(s).all(-1)
    Y = s[..., None] * bearings[..., None, :, :]  # (..., 4, 3, 3)
    X = points[..., None, :, :].expand_as(Y)
    Y = torch.where(ok[..., None, None], Y, X)  # keep the Kabsch SVD finite
    R, t = roma.rigid_points_registration(X, Y)
    return R, t, ok


def reprojection(R: Tensor, t: Tensor, points: Tensor, pixels: Tensor, K: Tensor,
                 jacobian: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Residuals r = π(K(R X + t)) − p (..., N, 2), depths z (..., N) and optionally ∂r/∂(ω, v) (..., N, 2, 6).

    R (..., 3, 3), t (..., 3), points (..., N, 3), pixels (..., N, 2), K (..., 3, 3). Points with z <= 0 get a
    clamped depth (finite residual): callers mask them with ``z > 0``. With x' = x/z, y' = y/z the Jacobian
    ∂π/∂Y · [−[Y]ₓ | I] written out is
        ∂u/∂(ω, v) = f_x [−x'y', 1 + x'², −y',  1/z, 0, −x'/z]
        ∂v/∂(ω, v) = f_y [−(1 + y'²), x'y', x',  0, 1/z, −y'/z].
    """
    Y = points @ R.transpose(-1, -2) + t[..., None, :]
    z_raw = Y[..., 2]
    z = torch.where(z_raw > 1e-9, z_raw, torch.full_like(z_raw, 1e-9))
    fx, fy = K[..., 0, 0][..., None], K[..., 1, 1][..., None]
    cx, cy = K[..., 0, 2][..., None], K[..., 1, 2][..., None]
    xz, yz = Y[..., 0] / z, Y[..., 1] / z
    r = torch.stack([fx * xz + cx, fy * yz + cy], -1) - pixels
    if not jacobian:
        return r, z_raw, None
    iz, zero = 1.0 / z, torch.zeros_like(z)
    ju = torch.stack([-xz * yz, 1 + xz * xz, -yz, iz, zero, -xz * iz], -1) * fx[..., None]
    jv = torch.stack([-(1 + yz * yz), xz * yz, xz, zero, iz, -yz * iz], -1) * fy[..., None]
    return r, z_raw, torch.stack([ju, jv], -2)


def robust_weights(norm: Tensor, robust: str | None, delta: float) -> Tensor:
    """IRLS weights ψ(r)/r: None → 1; Huber → min(1, δ/r); Cauchy → 1 / (1 + r²/δ²)."""
    if robust is None:
        return torch.ones_like(norm)
    if robust == "huber":
        return (delta / norm.clamp_min(1e-12)).clamp(max=1.0)
    if robust == "cauchy":
        return 1.0 / (1.0 + (norm / delta) ** 2)
    raise ValueError(f"robust must be one of {ROBUST_LOSSES}, got {robust!r}")


def robust_cost(norm: Tensor, robust: str | None, delta: float) -> Tensor:
    """ρ(r): r²/2; Huber r²/2 (r ≤ δ) else δ(r − δ/2); Cauchy δ²/2 · log(1 + r²/δ²)."""
    if robust is None:
        return 0.5 * norm**2
    if robust == "huber":
        return torch.where(norm <= delta, 0.5 * norm**2, delta * (norm - 0.5 * delta))
    if robust == "cauchy":
        return 0.5 * delta**2 * torch.log1p((norm / delta) ** 2)
    raise ValueError(f"robust must be one of {ROBUST_LOSSES}, got {robust!r}")


def _msac(R, t, points, pixels, K, w, tau):
    """Truncated cost Σ w min(r², τ²) (behind-camera points pay τ²) and the inlier mask (r < τ, z > 0)."""
    r, z, _ = reprojection(R, t, points, pixels, K)
    r2 = (r**2).sum(-1)
    inlier = (r2 < tau**2) & (z > 0) & (w > 0)
    cost = (w * torch.where(inlier, r2, torch.full_like(r2, tau**2))).sum(-1)
    return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, float("inf"))), inlier


def ransac_pose(points: Tensor, pixels: Tensor, K: Tensor, weights: Tensor, planar: Tensor, *,
                num_hypotheses: int = 128, inlier_px: float = 3.0, score_points: int = 1024, refits: int = 2,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Robust linear pose of each frame (no gradient). Steps 1–2 of the module docstring.

    points (T, N, 3) world, pixels (T, N, 2), K (T, 3, 3), weights (T, N) (0 = invalid point), planar (T,) bool
    (the inlier refit uses the plane homography instead of the DLT). ``num_hypotheses`` P3P sets per frame
    (4 poses each) are scored on a random subset of ``score_points`` valid points; the best pose is refit
    ``refits`` times on its inliers (kept only when it lowers the MSAC cost). Returns R (T, 3, 3), t (T, 3) of T_cam_world and inliers (T, N) bool.
    """
    T, N, _ = points.shape
    M, S = num_hypotheses, 3
    x = normalized_coords(pixels, K)
    c, s, E, _ = frame_normalization(points, weights)
    valid = weights > 0
    sample_w = torch.where(valid.any(-1, keepdim=True), weights, torch.ones_like(weights))
    gen_device = generator.device if generator is not None else points.device  # sample where the RNG lives
    idx = torch.multinomial(sample_w.to(gen_device), M * S, replacement=True, generator=generator)
    idx = idx.view(T, M, S).to(points.device)
    keys = torch.rand(T, N, generator=generator, dtype=points.dtype, device=gen_device).to(points.device)
    score_idx = torch.where(valid, keys, keys + 2).argsort(-1)[:, : min(score_points, N)]  # valid ones first

    def gather(a: Tensor, index: Tensor) -> Tensor:
        flat = index.reshape(index.shape[0], -1)
        out = torch.gather(a, 1, flat[..., None].expand(-1, -1, a.shape[-1]) if a.ndim == 3 else flat)
        return out.reshape(*index.shape, *a.shape[2:])

    xs = gather(x, idx)  # (T, M, 3, 2)
    rays = torch.cat([xs, torch.ones_like(xs[..., :1])], -1)
    R, t, ok = p3p(gather(points, idx), rays / rays.norm(dim=-1, keepdim=True))  # (T, M, 4, ...)
    R, t, ok = R.flatten(1, 2), t.flatten(1, 2), ok.flatten(1, 2)  # 4 M hypotheses per frame
    sub = [gather(a, score_idx)[:, None] for a in (points, pixels)]
    w_sub = gather(weights, score_idx)[:, None]
    # preemptive scoring: all hypotheses on the first 128 scoring points, the 16 best of them on all of them
    cost, _ = _msac(R, t, sub[0][:, :, :128], sub[1][:, :, :128], K[:, None], w_sub[:, :, :128], inlier_px)
    cost = torch.where(ok, cost, torch.full_like(cost, float("inf")))
    keep = cost.topk(min(16, cost.shape[1]), dim=-1, largest=False).indices  # (T, k)
    R, t, ok = gather(R.flatten(2), keep).unflatten(-1, (3, 3)), gather(t, keep), torch.gather(ok, 1, keep)
    cost, _ = _msac(R, t, sub[0], sub[1], K[:, None], w_sub, inlier_px)
    best = torch.where(ok, cost, torch.full_like(cost, float("inf"))).argmin(-1)
    ar = torch.arange(T, device=points.device)
    R_best, t_best = R[ar, best], t[ar, best]
    cost_best, inliers = _msac(R_best, t_best, points, pixels, K, weights, inlier_px)
    for _ in range(refits):
        w_in = weights * inliers
        R_new, t_new = R_best.clone(), t_best.clone()
        for is_planar in (False, True):
            sel = (planar == is_planar).nonzero()[:, 0]
            if sel.numel():
                R_new[sel], t_new[sel] = linear_pose(points[sel], x[sel], w_in[sel], c[sel], s[sel],
                                                     E[sel] if is_planar else None)
        cost_new, inliers_new = _msac(R_new, t_new, points, pixels, K, weights, inlier_px)
        better = cost_new < cost_best
        R_best = torch.where(better[:, None, None], R_new, R_best)
        t_best = torch.where(better[:, None], t_new, t_best)
        inliers = torch.where(better[:, None], inliers_new, inliers)
        cost_best = torch.where(better, cost_new, cost_best)
    return R_best, t_best, inliers


def _normal_equations(R, t, points, pixels, K, w, robust, delta):
    """H = Σ w ψ JᵀJ (T, 6, 6), g = Σ w ψ Jᵀ r (T, 6); ψ (IRLS) and the behind-camera mask without gradient."""
    r, z, J = reprojection(R, t, points, pixels, K, jacobian=True)
    with torch.no_grad():
        psi = robust_weights(r.norm(dim=-1), robust, delta) * (z > 0)
    wJ = (w * psi)[..., None, None] * J  # (T, N, 2, 6)
    H = wJ.flatten(1, 2).transpose(1, 2) @ J.flatten(1, 2)
    g = (wJ.flatten(1, 2).transpose(1, 2) @ r.flatten(1, 2)[..., None])[..., 0]
    return H, g


def _apply(R: Tensor, t: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Left increment: R ← exp(ω) R, t ← exp(ω) t + v, with delta = (ω, v) (T, 6)."""
    dR = roma.rotvec_to_rotmat(delta[:, :3])
    return dR @ R, (dR @ t[..., None])[..., 0] + delta[:, 3:]


def _cost(R, t, points, pixels, K, w, robust, delta):
    r, z, _ = reprojection(R, t, points, pixels, K)
    norm = torch.where(z > 0, r.norm(dim=-1), torch.full_like(z, _BEHIND_PX))
    cost = (w * robust_cost(norm, robust, delta)).sum(-1)
    return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, float("inf")))


@torch.no_grad()
def lm_refine(R: Tensor, t: Tensor, points: Tensor, pixels: Tensor, K: Tensor, weights: Tensor, *,
              iters: int = 10, robust: str | None = "huber", delta: float = 2.0,
              damping: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Levenberg–Marquardt (no gradient), batched over frames with one damping μ per frame.

    Each iteration solves (H + μ diag(H)) δ = −g; a step is kept only if it lowers Σ w ρ(‖r‖)
    (then μ ← μ/10, else μ ← 10 μ). R (T, 3, 3), t (T, 3), points (T, N, 3), pixels (T, N, 2), K (T, 3, 3),
    weights (T, N). ``delta``: the robust loss scale in pixels. Returns the refined R, t.
    """
    mu = torch.full(R.shape[:1], damping, dtype=R.dtype, device=R.device)
    cost = _cost(R, t, points, pixels, K, weights, robust, delta)
    eye = torch.eye(6, dtype=R.dtype, device=R.device)
    for _ in range(iters):
        H, g = _normal_equations(R, t, points, pixels, K, weights, robust, delta)
        diag = H.diagonal(dim1=-2, dim2=-1)
        A = H + mu[:, None, None] * torch.diag_embed(diag) + 1e-12 * diag.sum(-1)[:, None, None] * eye
        step = torch.linalg.solve_ex(A, -g[..., None])[0][..., 0]
        step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        R_new, t_new = _apply(R, t, step)
        cost_new = _cost(R_new, t_new, points, pixels, K, weights, robust, delta)
        accept = cost_new < cost
        R = torch.where(accept[:, None, None], R_new, R)
        t = torch.where(accept[:, None], t_new, t)
        cost = torch.where(accept, cost_new, cost)
        mu = torch.where(accept, mu / 10, mu * 10).clamp(1e-10, 1e10)
    return R, t


def gauss_newton_step(R: Tensor, t: Tensor, points: Tensor, pixels: Tensor, K: Tensor, weights: Tensor, *,
                      robust: str | None = "huber", delta: float = 2.0) -> tuple[Tensor, Tensor]:
    """One differentiable Gauss–Newton step θ = θ* − H⁻¹ g from the detached pose θ* = (R, t) (step 4 above).

    Gradients flow to ``points``, ``weights`` (and ``pixels``, ``K``); the IRLS weights ψ and the in-front mask are
    treated as constants. Shapes as in ``lm_refine``. Returns R (T, 3, 3), t (T, 3) of T_cam_world.
    """
    R, t = R.detach(), t.detach()
    H, g = _normal_equations(R, t, points, pixels, K, weights, robust, delta)
    eye = torch.eye(6, dtype=H.dtype, device=H.device)
    H = H + 1e-12 * H.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None].detach() * eye
    step = -torch.linalg.solve_ex(H, g[..., None])[0][..., 0]
    return _apply(R, t, step)
