"""Re-anchoring: the anchor frame's geometry taken from the mono-depth pseudo-label, carried to every frame.

Dimension letters: T frames (pairs (anchor 0, j)), H image rows, W image columns.

Why (measured, ``studies.adapt_ceiling``): on the `wild` videos the tiny model's tracks are limited by where it
puts the anchor frame's points, not by their motion. Its own frame-0 tracks moved by the *true* motion gain about
3.5 APD points; its own motion added to the *true* anchor depth gains about 19 (12 recorded clips). The adaptation's
gradient steps reach the anchor only through L_depth on the recon maps and then L_align, a few small steps
away, and do not carry the mono-depth into the tracks. Re-anchoring does it in closed form, from the same
pseudo-labels (no ground truth):

    z_0(p)  = depth of track_0(p) (camera 0 is the world frame),  d̃_0(p) = the mono-depth at anchor pixel p
    s       = median_p z_0(p) / d̃_0(p)                  (the mono-depth brought to the model's scale)
    r(p)    = s d̃_0(p) / z_0(p)                         (how far the two disagree)
    X_0'(p) = track_0(p) · r(p)   if |log r(p)| > τ, else track_0(p)
                                                        (the same ray, the mono-depth's distance)
    track_j'(p) = track_j(p) + X_0'(p) − track_0(p)     (every frame keeps the model's own motion)

τ (default 0.05, about a mono-depth's own error: the simulated one warps depth smoothly by ~5 %) keeps the model's
depth where the two agree within it, so re-anchoring corrects the model's large errors (moving objects, a
misjudged room) without importing the mono-depth's small ones where the model was already right. Chosen on
`wild` clips 610000-610011, none of the recorded ones (``python -m st4r_lite.studies.adapt_ceiling --first-seed
610000 --taus 0,0.05,0.1,0.15,0.2``, data/adapt_ceiling_tau_selection.json): τ = 0 / 0.05 / 0.1 / 0.15 / 0.2 gained
+22.1 / +21.1 / +17.7 / +15.0 / +13.0 APD before any adaptation step (every pixel scored; τ = 0 against 0.05:
+1.0 [−0.1, +2.1], within noise), so 0.05, which keeps the model where the two agree, stays. On the recorded clips
600000-600011 (data/adapt_ceiling.json): +12.8 / +13.9 / +12.5 / +12.8 / +12.2.
Pixels without a valid mono-depth (0, non-finite), with a non-finite anchor point or a point behind the camera keep
their track. One median scale per video: the re-anchored map has the model's scale, so nothing downstream changes
units. The mono-depth is taken as known up to scale (MoGe-like); an affine one (MiDaS-like, with an unknown
shift) should be brought to scale-only first, or not used here.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["reanchor_tracks"]


def reanchor_tracks(track: Tensor, mono_anchor: Tensor, tau: float = 0.05,
                    min_pixels: int = 16) -> tuple[Tensor, dict]:
    """Move every anchor point whose depth disagrees with the mono-depth by more than ``tau`` (in log) along its
    ray to the mono-depth's distance, and shift its track in every frame by as much.

    track: (T, H, W, 3) track maps in the anchor camera's frame (frame 0 = the anchor's own points);
    mono_anchor: (H, W) mono-depth of the anchor frame up to scale (0 = missing). Returns (track' (T, H, W, 3),
    info {"scale": s, "pixels": how many were usable, "moved": how many moved}); with fewer than ``min_pixels``
    usable pixels the tracks come back unchanged (info["pixels"] = 0).

    >>> z = torch.full((2, 3), 2.0); pts = torch.stack([torch.zeros(2, 3), torch.zeros(2, 3), z], -1)
    >>> track = torch.stack([pts, pts + torch.tensor([0.5, 0.0, 0.0])])     # frame 1 moved 0.5 along x
    >>> mono = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 3.0]])              # the last pixel is 3x as far
    >>> out, info = reanchor_tracks(track, mono, min_pixels=1)
    >>> out[0, 1, 2, 2].item(), out[1, 1, 2, 0].item(), info["scale"], info["moved"]
    (6.0, 0.5, 2.0, 1)
    """
    assert track.ndim == 4 and track.shape[-1] == 3, f"track must be (T, H, W, 3), got {tuple(track.shape)}"
    assert tuple(mono_anchor.shape) == tuple(track.shape[1:3]), (
        f"mono_anchor must be (H, W) = {tuple(track.shape[1:3])}, got {tuple(mono_anchor.shape)}")
    anchor = track[0]
    z = anchor[..., 2]
    d = mono_anchor.to(track.device, track.dtype)
    ok = torch.isfinite(anchor).all(-1) & (z > 0) & torch.isfinite(d) & (d > 0)
    assert tau >= 0, f"tau must be >= 0, got {tau}"
    if int(ok.sum()) < min_pixels:
        return track, {"scale": float("nan"), "pixels": 0, "moved": 0}
    s = (z[ok] / d[ok]).median()
    one = torch.ones_like(z)
    ratio = torch.where(ok, s * torch.where(ok, d, one) / torch.where(ok, z, one), one)   # no NaN in any branch
    move = ok & (ratio.log().abs() > tau)
    safe_anchor = torch.where(ok[..., None], anchor, torch.zeros_like(anchor))
    shift = torch.where(move[..., None], safe_anchor * (ratio[..., None] - 1), torch.zeros_like(anchor))  # X_0' − track_0
    return track + shift[None], {"scale": float(s.detach()), "pixels": int(ok.sum()), "moved": int(move.sum())}
