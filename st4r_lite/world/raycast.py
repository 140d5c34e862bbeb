"""Analytic ray-primitive intersections, written in each primitive's local (unit) frame.

Glossary of dimension letters: T frames, K primitives of one kind, P pixels (rays) per frame.

An object with pose A(t) = R(t) diag(s(t)) and centre c(t) maps local to world as x = A x_local + c, so

    x_local = A^-1 (x - c) = diag(1/s) R^T (x - c).

A ray x(t) = o + t d becomes the local ray o_l + t d_l with o_l = A^-1 (o - c), d_l = A^-1 d. The direction is
NOT normalised, so the ray parameter t is the same in both frames; with camera rays d = R_cam (x/z, y/z, 1) the
parameter t of a hit is its z-depth in the camera. Unit primitives:

- sphere   |x|^2 = 1:            a t^2 + 2 b t + c = 0, a = |d|^2, b = <o, d>, c = |o|^2 - 1; t = (-b - sqrt(b^2 - ac)) / a
- box      [-1, 1]^3 (slabs):   t_near = max_i min(t1_i, t2_i), t_far = min_i max(t1_i, t2_i), t_i = (+-1 - o_i) / d_i
- cylinder x^2 + y^2 <= 1, |z| <= 1 (axis z): side interval from the 2D quadratic intersected with the z slab

Only entry hits count (t_near > EPS): a camera inside an object does not see it (like near-plane clipping).
Misses return +inf. The room is an axis-aligned box seen from inside: the ray's exit parameter.

Layout: origins o (T, K, 3) and directions d (T, K, 3, P) so that every per-pixel tensor is (T, K, P), contiguous in P.
"""

from __future__ import annotations

import torch

EPS = 1e-4
KINDS = ("sphere", "box", "cylinder")


def _check(o: torch.Tensor, d: torch.Tensor) -> None:
    if o.dim() != 3 or o.shape[-1] != 3 or d.dim() != 4 or d.shape[:3] != o.shape:
        raise ValueError(f"origins must be (T, K, 3) and directions (T, K, 3, P); got {tuple(o.shape)} and "
                         f"{tuple(d.shape)}")


def _safe_inverse(x: torch.Tensor) -> torch.Tensor:
    """1 / x with exact zeros nudged to a tiny value of positive sign (so slabs give +-inf, never NaN)."""
    tiny = torch.full_like(x, 1e-12)
    return 1.0 / torch.where(x.abs() < 1e-12, torch.where(x < 0, -tiny, tiny), x)


def intersect_spheres(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Entry hit parameter of unit spheres. o (T, K, 3), d (T, K, 3, P) local -> t (T, K, P), +inf on a miss."""
    _check(o, d)
    ox, oy, oz = (o[..., i, None] for i in range(3))
    dx, dy, dz = d.unbind(2)
    a = dx * dx + dy * dy + dz * dz
    b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - 1.0
    disc = b * b - a * c
    t = (-b - disc.clamp_min(0).sqrt()) / a
    return torch.where((disc > 0) & (t > EPS), t, torch.full_like(t, float("inf")))


def intersect_boxes(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Entry hit parameter of unit boxes [-1, 1]^3 (slab test). Shapes as intersect_spheres."""
    _check(o, d)
    t_near = t_far = None
    for i in range(3):
        inv = _safe_inverse(d[:, :, i])
        oi = o[..., i, None]
        t1 = (-1.0 - oi) * inv
        t2 = (1.0 - oi) * inv
        lo, hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_near = lo if t_near is None else torch.maximum(t_near, lo)
        t_far = hi if t_far is None else torch.minimum(t_far, hi)
    hit = (t_near <= t_far) & (t_near > EPS)
    return torch.where(hit, t_near, torch.full_like(t_near, float("inf")))


def intersect_cylinders(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Entry hit parameter of capped unit cylinders (x^2 + y^2 <= 1, |z| <= 1). Shapes as intersect_spheres."""
    _check(o, d)
    ox, oy = o[..., 0, None], o[..., 1, None]
    dx, dy, dz = d.unbind(2)
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - 1.0
    disc = b * b - a * c
    sq = disc.clamp_min(0).sqrt()
    parallel = a < 1e-12  # ray along the axis: inside the infinite cylinder everywhere or nowhere
    a_safe = torch.where(parallel, torch.ones_like(a), a)
    inf = torch.full_like(a, float("inf"))
    t1 = torch.where(parallel, -inf, (-b - sq) / a_safe)
    t2 = torch.where(parallel, inf, (-b + sq) / a_safe)
    side_ok = torch.where(parallel, c.expand_as(a) < 0, disc > 0)
    inv = _safe_inverse(dz)
    oz = o[..., 2, None]
    z1, z2 = (-1.0 - oz) * inv, (1.0 - oz) * inv
    t_near = torch.maximum(t1, torch.minimum(z1, z2))
    t_far = torch.minimum(t2, torch.maximum(z1, z2))
    hit = side_ok & (t_near <= t_far) & (t_near > EPS)
    return torch.where(hit, t_near, inf)


INTERSECT = {"sphere": intersect_spheres, "box": intersect_boxes, "cylinder": intersect_cylinders}


def intersect_room(o: torch.Tensor, d: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Exit parameter of rays starting inside the axis-aligned box [lo, hi].

    o (T, 3) camera centres, d (T, 3, P) ray directions, lo, hi (3,) -> t (T, P) finite and > 0
    (t = min_i max((lo_i - o_i) / d_i, (hi_i - o_i) / d_i))."""
    if o.dim() != 2 or d.dim() != 3 or d.shape[:2] != o.shape:
        raise ValueError(f"room rays: origins (T, 3) and directions (T, 3, P) expected; got {tuple(o.shape)}, "
                         f"{tuple(d.shape)}")
    if not bool(((o > lo) & (o < hi)).all()):
        raise ValueError("a camera centre lies outside the room box; the room must contain every camera")
    t_exit = None
    for i in range(3):
        inv = _safe_inverse(d[:, i])
        t = torch.maximum((lo[i] - o[:, i, None]) * inv, (hi[i] - o[:, i, None]) * inv)
        t_exit = t if t_exit is None else torch.minimum(t_exit, t)
    return t_exit


def _argmax3(x: torch.Tensor) -> torch.Tensor:
    """argmax over the 3 coordinates of x (..., 3, P) -> (..., 1, P) int64, first maximum on ties (as
    torch.argmax), written with comparisons: a strided reduction over a dimension of size 3 is slow on CPU."""
    a, b, c = x.unbind(-2)
    return torch.where((a >= b) & (a >= c), 0, torch.where(b >= c, 1, 2)).unsqueeze(-2)


def local_normals(x: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Outward unit-primitive normals at local surface points (not normalised).

    x (..., 3, P) local hit points; kind (..., P) int64 index into KINDS -> n (..., 3, P).
    sphere: x; box: sign(x_i) e_i on the axis of largest |x_i|; cylinder: cap (0, 0, sign z) when |z| > r,
    else side (x, y, 0)."""
    xx, yy, zz = x.unbind(-2)
    ax = x.abs()
    axis = _argmax3(ax)
    box = torch.zeros_like(x).scatter(-2, axis, torch.sign(torch.gather(x, -2, axis)))
    r = torch.sqrt(xx * xx + yy * yy)
    cap = zz.abs() > r
    zero = torch.zeros_like(xx)
    cyl = torch.stack([torch.where(cap, zero, xx), torch.where(cap, zero, yy), torch.where(cap, torch.sign(zz), zero)],
                      dim=-2)
    k = kind.unsqueeze(-2)
    return torch.where(k == 0, x, torch.where(k == 1, box, cyl))


def room_normals(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inward normals of room points and which face they lie on.

    x (..., 3, P) scene points on the room surface -> normals (..., 3, P), face (..., P) int64 in 0..5
    (face = 2 * axis + (1 if on the hi side else 0); with y pointing down, face 3 is the floor)."""
    centre = ((lo + hi) / 2).view(3, 1)
    half = ((hi - lo) / 2).view(3, 1)
    rel = (x - centre) / half
    axis = _argmax3(rel.abs())
    side = torch.gather(rel, -2, axis)
    normal = torch.zeros_like(x).scatter(-2, axis, -torch.sign(side))
    face = (2 * axis + (side > 0).long()).squeeze(-2)
    return normal, face
