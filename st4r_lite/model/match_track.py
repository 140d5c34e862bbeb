"""Matched-geometry tracking (ours; ``ModelConfig.match_track`` > 0, off in DUSt3R's layout).

Glossary: B pairs, H W image size, p patch size, h w token grid (H/p, W/p), N = h*w anchor tokens, M = h*w tokens
of frame k, C decoder width, D the matching width (``match_track``).

Head 1 predicts where each anchor pixel is at time k (``track`` = ¹X¹_k) from context; head 2 predicts frame k's own
geometry at time k in the same anchor camera frame (``recon`` = ¹Xᵏ_k). If anchor patch i is seen at patch j of
frame k, its point at time k is already in ``recon`` there: the motion of a point is *where it was found*, not a
number painted from context. This module finds it and reads it:

    f1_i = [enc1_i, dec1_i],  f2_j = [enc2_j, dec2_j]              (encoder token, last decoder token of each branch)
    logits_ij = <Wq f1_i, Wk f2_j> / sqrt(D) − λ ‖pos_i − pos_j‖²  (λ = softplus(ρ) ≥ 0: a learned locality prior,
                                                                   positions in tokens)
    A_i· = softmax_j(logits_i·)                                     (B, N, M)
    matched(i, o) = Σ_j A_ij · sg(recon)(j, o)                      (o = a pixel's offset inside its p x p patch:
                                                                   the patch is copied whole to where it was found)
    g(i, o) = sigmoid(Linear([dec1_i, max_j A_ij]))                 (a per-pixel gate, from the token and how sure
                                                                   its match is)
    track' = track + g · (matched − track)

``sg`` stops the gradient: the tracking loss teaches the matching and the gate, never branch 2's geometry. The gate
starts nearly closed (bias −4: g ≈ 0.018, weights zero), so a model given this module keeps ~98 % of its own track
until training opens it; the logits are also what ``train.correspondence.match_head_loss`` supervises with the
world's true correspondent tokens.

With ``register`` (``ModelConfig.match_register``), frame k's found geometry is first brought onto the track
branch's own frame-k points by one similarity per pair, fitted without gradient (Umeyama, ``roma``), weighted by
how sure each lookup is and refitted on the 70 % best-fitting pixels (most of a scene is static, so this is the
camera's correction, and the moving objects' residual is their motion):

    (s, R, t) = argmin Σ_pixels w · ‖s R matched + t − track‖²,   matched := s R matched + t

The reconstruction of far frames is placed worse than the track branch places the same frame's static points
(a frame's shape is right, its pose drifts); the registration keeps the lookup's motion and the track's placement.

With ``pixel`` (``ModelConfig.match_pixel``) the lookup is read at a pixel, not copied a patch at a time: each
anchor pixel (i, o) is looked for at

    uv(i, o) = Σ_j A_ij · c_j + o + Δ(i, o)        (c_j the centre pixel of token j, o the pixel's offset from its
                                                  token's centre, Δ = Linear(dec1_i) a learned sub-token offset,
                                                  zero at the start)
    matched(i, o) = bilinear sample of sg(recon) at uv(i, o)

(the soft-argmax gives positions between token centres). A copy of the right token still misplaces an object that
moved part of a token; measured on held-out clips of the shipped model (``studies.lookup_ceiling``), reading its
reconstruction at the true *pixel* cuts the moving points' median error by a third (0.50 → 0.34 m), at the true
*token* by a tenth (0.45 m). ``uv`` (B, H, W, 2) (column, row) is
returned for ``train.correspondence.match_flow_loss``.

With ``refine_radius`` r > 0 (``ModelConfig.match_refine``, needs ``pixel``; :class:`LocalRefine`) the position is
then refined from the images themselves, one correlation step as in RAFT: small conv features φ of both images,
compared between the anchor pixel and frame k around the estimate (offsets d on a stride-2 grid within ±2r pixels),

    uv ← uv + Σ_d softmax_d(τ · ⟨φ_a(pixel), φ_k(uv + d)⟩) · d        (φ unit-normalised, τ learned)

so the lookup can land on the right pixel where the token grid only gets within a patch.
"""

from __future__ import annotations

import math

import roma
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from st4r_lite.model.blocks import patch_positions

GATE_BIAS = -4.0      # sigmoid(−4) ≈ 0.018: the pretrained track is kept almost unchanged at the start
LOCALITY_INIT = 0.05  # λ at the start: a match 3 tokens away costs 0.45 nats against one in place
REGISTER_KEEP = 0.7   # the registration's second fit keeps the pixels whose first-fit residual is below this quantile


def register_onto(source: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                  keep: float = REGISTER_KEEP) -> torch.Tensor:
    """source moved by the similarity that best fits it onto target (two weighted Umeyama fits, the second on the
    ``keep`` fraction of best-fitting points); the transform is a constant (no gradient), source keeps its own.

    source, target (B, P, 3), weight (B, P) ≥ 0 -> (B, P, 3).

    >>> import torch, roma; x = torch.randn(1, 50, 3); R = roma.random_rotmat(1)
    >>> y = 2 * x @ R.transpose(-1, -2) + 1; y[:, :5] += 10          # five outliers
    >>> bool(((register_onto(x, y, torch.ones(1, 50)) - y)[:, 5:].abs() < 1e-3).all())
    True
    """
    assert source.shape == target.shape and weight.shape == source.shape[:2], (
        tuple(source.shape), tuple(target.shape), tuple(weight.shape))
    with torch.no_grad():
        x, y, w = source.detach().double(), target.detach().double(), weight.detach().double()
        for fit in range(2):
            R, t, s = roma.rigid_points_registration(x, y, weights=w, compute_scaling=True)
            if fit == 0:
                residual = (s[:, None, None] * x @ R.transpose(-1, -2) + t[:, None] - y).norm(dim=-1)
                w = w * (residual <= residual.quantile(keep, dim=-1, keepdim=True))
    R, t, s = R.to(source.dtype), t.to(source.dtype), s.to(source.dtype)
    return s[:, None, None] * source @ R.transpose(-1, -2) + t[:, None]


def copy_patches(points: torch.Tensor, attn: torch.Tensor, patch: int) -> torch.Tensor:
    """Each anchor token's p x p patch := the attention-weighted mix of frame k's patches (whole patches, each pixel
    keeping its offset inside the patch). points (B, H, W, 3), attn (B, N, M) -> (B, H, W, 3)."""
    h = points.shape[1] // patch
    patches = rearrange(points, "b (h p1) (w p2) c -> b (h w) (p1 p2 c)", p1=patch, p2=patch)
    return rearrange(attn @ patches, "b (h w) (p1 p2 c) -> b (h p1) (w p2) c", h=h, p1=patch, p2=patch)


def sample_points(points: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """points (B, H, W, 3) read bilinearly at uv (B, H, W, 2) (column, row; pixel centres at integers, clamped to the
    border) -> (B, H, W, 3)."""
    H, W = points.shape[1:3]
    grid = torch.stack([2 * uv[..., 0] / (W - 1) - 1, 2 * uv[..., 1] / (H - 1) - 1], dim=-1).to(points.dtype)
    out = F.grid_sample(rearrange(points, "b hh ww c -> b c hh ww"), grid, mode="bilinear", padding_mode="border",
                        align_corners=True)
    return rearrange(out, "b c hh ww -> b hh ww c")


class LocalRefine(nn.Module):
    """One local correlation step refining looked-up pixel positions from the images (module docstring).

    forward(uv, img_anchor, img_other): uv (B, H, W, 2) (column, row), images (B, 3, H, W) in [-1, 1] -> uv' (B, H, W, 2).
    """

    def __init__(self, radius: int, channels: int = 8):
        super().__init__()
        assert radius > 0, radius
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1))
        self.log_tau = nn.Parameter(torch.full((1,), math.log(10.0)))   # τ = 10 at the start (cosine in [-1, 1])
        self.radius = radius

    def offsets(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The (D, 2) (column, row) pixel offsets compared, D = (2r + 1)², on a stride-2 grid. Made on each call, not
        kept as a buffer: a model built on the meta device and then loaded would hold uninitialised values."""
        steps = torch.arange(-self.radius, self.radius + 1, device=device, dtype=dtype) * 2
        dy, dx = torch.meshgrid(steps, steps, indexing="ij")
        return torch.stack([dx.flatten(), dy.flatten()], -1)

    def forward(self, uv: torch.Tensor, img_anchor: torch.Tensor, img_other: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = uv.shape
        dtype = self.log_tau.dtype
        fa = F.normalize(self.features(img_anchor.to(dtype)), dim=1)                # (B, C, H, W)
        fk = F.normalize(self.features(img_other.to(dtype)), dim=1)
        offsets = self.offsets(uv.device, dtype)
        where = uv[:, :, :, None] + offsets                                         # (B, H, W, D, 2)
        grid = torch.stack([2 * where[..., 0] / (W - 1) - 1, 2 * where[..., 1] / (H - 1) - 1], dim=-1)
        seen = F.grid_sample(fk, rearrange(grid, "b hh ww d c -> b hh (ww d) c"), mode="bilinear",
                             padding_mode="zeros", align_corners=True)              # (B, C, H, W·D)
        seen = rearrange(seen, "b c hh (ww d) -> b hh ww d c", ww=W)
        corr = torch.einsum("bchw,bhwdc->bhwd", fa, seen) * self.log_tau.exp()
        return uv + corr.softmax(dim=-1) @ offsets


class MatchTrack(nn.Module):
    """Read the track from frame k's reconstruction where each anchor patch is found (module docstring).

    forward(dec1, dec2, track, recon, images): dec1, dec2 the decoder lists [enc (B, N, C_enc), block 1..L (B, N, C)]
    of the two branches; track, recon (B, H, W, 3); images (img_anchor, img_other) (B, 3, H, W) in [-1, 1], needed
    only with ``refine_radius`` -> (track' (B, H, W, 3), logits (B, N, M), uv (B, H, W, 2) pixel positions looked up
    in frame k (``pixel``) or None, gate (B, H, W) in (0, 1)).
    """

    def __init__(self, enc_dim: int, dec_dim: int, patch_size: int, width: int, register: bool = False,
                 pixel: bool = False, refine_radius: int = 0):
        super().__init__()
        assert width > 0, width
        self.patch_size, self.width, self.register, self.pixel = patch_size, width, register, pixel
        self.norm1 = nn.LayerNorm(enc_dim + dec_dim)
        self.norm2 = nn.LayerNorm(enc_dim + dec_dim)
        self.q = nn.Linear(enc_dim + dec_dim, width)
        self.k = nn.Linear(enc_dim + dec_dim, width)
        self.locality = nn.Parameter(torch.full((1,), math.log(math.expm1(LOCALITY_INIT))))  # ρ, λ = softplus(ρ)
        self.gate = nn.Linear(dec_dim + 1, patch_size**2)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, GATE_BIAS)
        if pixel:
            self.offset = nn.Linear(dec_dim, patch_size**2 * 2)   # Δ per pixel of the patch, zero at the start
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)
        assert not refine_radius or pixel, "the local refinement refines pixel lookups: needs pixel=True"
        self.refine = LocalRefine(refine_radius) if refine_radius else None

    def lookup_pixels(self, attn: torch.Tensor, dec1_last: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """uv (B, H, W, 2) (column, row) where each anchor pixel is looked for in frame k: attn (B, N, M), dec1_last
        (B, N, C) (module docstring; pixel centres at integers)."""
        (h, w), p = grid, self.patch_size
        pos = patch_positions(1, h, w, device=attn.device)[0].to(attn.dtype)        # (M, 2) (row, col)
        centre = pos.flip(-1) * p + (p - 1) / 2                                     # (M, 2) (column, row) pixels
        inner = patch_positions(1, p, p, device=attn.device)[0].to(attn.dtype).flip(-1) - (p - 1) / 2   # (p², 2)
        delta = rearrange(self.offset(dec1_last.to(attn.dtype)), "b n (q c) -> b n q c", c=2)
        uv = (attn @ centre)[:, :, None] + inner + delta                            # (B, N, p², 2)
        return rearrange(uv, "b (h w) (p1 p2) c -> b (h p1) (w p2) c", h=h, p1=p, p2=p)

    def match_logits(self, dec1: list[torch.Tensor], dec2: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """logits (B, N, M) of anchor token i being seen at token j of frame k (module docstring)."""
        dtype = self.q.weight.dtype   # float32 (the heads' precision) whatever the decoder ran in
        f1 = self.norm1(torch.cat([dec1[0], dec1[-1]], dim=-1).to(dtype))
        f2 = self.norm2(torch.cat([dec2[0], dec2[-1]], dim=-1).to(dtype))
        sim = self.q(f1) @ self.k(f2).transpose(-1, -2) / math.sqrt(self.width)
        pos = patch_positions(1, *grid, device=sim.device)[0].float()               # (N, 2) (row, col)
        dist2 = torch.cdist(pos, pos).square()                                      # (N, M)
        return sim - F.softplus(self.locality) * dist2

    def forward(self, dec1: list[torch.Tensor], dec2: list[torch.Tensor], track: torch.Tensor, recon: torch.Tensor,
                images: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple:
        B, H, W, _ = track.shape
        p = self.patch_size
        assert recon.shape == track.shape and H % p == 0 and W % p == 0, (tuple(track.shape), tuple(recon.shape), p)
        h, w = H // p, W // p
        dtype = self.q.weight.dtype
        with torch.autocast(device_type=track.device.type, enabled=False):
            logits = self.match_logits(dec1, dec2, (h, w))                          # (B, N, M)
            attn = logits.softmax(dim=-1)
            uv = None
            if self.pixel:
                uv = self.lookup_pixels(attn, dec1[-1], (h, w))                     # (B, H, W, 2)
                if self.refine is not None:
                    if images is None:
                        raise ValueError("this model refines its lookups from the pixels (match_refine > 0): pass "
                                         "images=(img_anchor, img_other)")
                    uv = self.refine(uv, *images)
                matched = sample_points(recon.detach().to(dtype), uv)
            else:
                matched = copy_patches(recon.detach().to(dtype), attn, p)
            sure = attn.amax(dim=-1, keepdim=True)                                  # (B, N, 1)
            if self.register:
                flat = lambda x: rearrange(x, "b hh ww c -> b (hh ww) c")  # noqa: E731
                weight = rearrange(sure.expand(-1, -1, p * p), "b (h w) (p1 p2) -> b (h p1 w p2)",
                                   h=h, p1=p, p2=p)
                matched = register_onto(flat(matched), flat(track.to(dtype)), weight).view_as(matched)
            gate_in = torch.cat([dec1[-1].to(dtype), sure], dim=-1)
            gate = rearrange(torch.sigmoid(self.gate(gate_in)), "b (h w) (p1 p2) -> b (h p1) (w p2) 1",
                             h=h, p1=p, p2=p)
            track = track.to(dtype)
            return track + gate * (matched - track), logits, uv, gate[..., 0]


__all__ = ["MatchTrack", "LocalRefine", "register_onto", "copy_patches", "sample_points", "GATE_BIAS", "LOCALITY_INIT", "REGISTER_KEEP"]
