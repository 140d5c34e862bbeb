"""Correspondence supervision of the track branch's cross-attention (an optional pretraining term).

Dimension letters: B clips, S pairs per clip, N anchor tokens, M tokens of the other frame (N = M = h·w, h = H/p,
w = W/p for patch size p), nh attention heads, dh channels per head.

DUSt3R-family networks learn to *match* before they learn pointmaps (CroCo's cross-view completion pretraining);
the tiny preset starts from nothing, and its track branch's cross-attention never learned to look where an anchor
patch went (``studies.motion_probe.attention_correspondence``). The synthetic world knows the answer, so it can
be taught directly. For the pair (anchor 0, frame k) and anchor token i (the patch whose centre pixel is c_i):

    j*(i, k) = the token of frame k holding π_k(X_i(t_k))     (the true camera k projects the point's true position)
    L_match  = mean over pairs, layers l, visible i of  −log softmax_j(q_i · k_j / √dh)[j*]     (head 0 only)

with q, k the RoPE'd queries and keys of the track branch's cross-attention at decoder layer l (decoder 1 reading
frame k's tokens). Points hidden in frame k (occluded or outside the image) are left out. Only head 0 is taught to
match, so the other heads keep gathering context. ``TrainConfig.match_weight`` adds w · L_match to the loss.

The captured inputs come from forward pre-hooks on each decoder block's ``cross_attn``, recorded only while
gradients are on (the held-out checks run without them and are not recorded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from st4r_lite.world.render import project_tracks

__all__ = ["patch_correspondence", "token_dynamic", "within_one_token", "AttentionRecorder", "match_loss",
           "match_head_loss", "match_flow_loss", "match_gate_loss"]


def patch_correspondence(clip, patch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True correspondent token of every anchor token in every frame of a ``world.Clip`` (rgb (B, S, 3, H, W)).

    Returns target (B, S, N) int64 (row · w + col of the token holding the projection of the anchor patch
    centre's point at frame k), valid (B, S, N) bool (the point is inside frame k and visible there) and
    same (B, S, N) bool (target equals the anchor token's own index: the patch did not move on the token grid).
    Frame 0 maps every visible token to itself.
    """
    B, S, _, H, W = clip.rgb.shape
    h, w = H // patch, W // patch
    uv, _, inside = project_tracks(clip)                               # (B, S, H, W, 2), -, (B, S, H, W)
    centre = slice(patch // 2, h * patch, patch), slice(patch // 2, w * patch, patch)
    uv_c = uv[:, :, centre[0], centre[1]]                              # (B, S, h, w, 2)
    ok = (inside & clip.track_visible)[:, :, centre[0], centre[1]]
    col = (uv_c[..., 0] / patch).floor().long().clamp(0, w - 1)
    row = (uv_c[..., 1] / patch).floor().long().clamp(0, h - 1)
    target = rearrange(row * w + col, "b s h w -> b s (h w)")
    here = torch.arange(h * w, device=target.device)
    return target, rearrange(ok, "b s h w -> b s (h w)"), target == here


def token_dynamic(clip, patch: int) -> torch.Tensor:
    """(B, N) bool: the anchor token's centre pixel lies on a moving object (``clip.track_dynamic``)."""
    h, w = clip.rgb.shape[-2] // patch, clip.rgb.shape[-1] // patch
    return rearrange(clip.track_dynamic[:, patch // 2::patch, patch // 2::patch][:, :h, :w], "b h w -> b (h w)")


def within_one_token(chosen: torch.Tensor, target: torch.Tensor, w: int) -> torch.Tensor:
    """Tokens ``chosen`` and ``target`` (same shape, row · w + col) at Chebyshev distance ≤ 1 on a grid w wide."""
    return ((chosen // w - target // w).abs() <= 1) & ((chosen % w - target % w).abs() <= 1)


class AttentionRecorder:
    """Records the inputs (query, key, value, qpos, kpos) of every block's ``cross_attn`` in ``blocks``: only while
    gradients are on when ``grad_only`` (training: the held-out checks between steps are left out), else every
    call (a probe under ``torch.no_grad``). :meth:`take` returns them in call order and clears; ``close`` removes
    the hooks."""

    def __init__(self, blocks, grad_only: bool = True) -> None:
        self.calls: list[tuple] = []
        self.grad_only = grad_only
        self._hooks = [blk.cross_attn.register_forward_pre_hook(self._record) for blk in blocks]

    def _record(self, module, args) -> None:
        if torch.is_grad_enabled() or not self.grad_only:
            self.calls.append((module, args))

    def take(self) -> list[tuple]:
        calls, self.calls = self.calls, []
        return calls

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def match_loss(calls: list[tuple], target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L_match of the module docstring from recorded cross-attention calls.

    calls: [(cross_attn module, (query (P, N, C), key (P, M, C), value, qpos (P, N, 2), kpos (P, M, 2)))] for the
    layers of one forward of P = B·S pairs in (b, k) order; target, valid: (P, N) (``patch_correspondence``
    flattened over b, k). Returns the scalar mean over layers of the masked mean cross-entropy (0 without calls).

    >>> import torch; from st4r_lite.model.blocks import CrossAttention, RoPE2D
    >>> att = CrossAttention(8, 2, RoPE2D(100.0)); x = torch.randn(1, 4, 8); pos = torch.zeros(1, 4, 2)
    >>> float(match_loss([(att, (x, x, x, pos, pos))], torch.arange(4)[None], torch.ones(1, 4, dtype=torch.bool)).detach()) > 0
    True
    """
    assert target.shape == valid.shape and target.ndim == 2, (target.shape, valid.shape)
    if not calls:
        return torch.zeros((), device=target.device)
    per_layer = []
    weight = valid.float()
    for module, (query, key, _value, qpos, kpos) in calls:
        q, k = module.queries_keys(query.float(), key.float(), qpos, kpos)             # (P, nh, N, dh), (P, nh, M, dh)
        logits = q[:, 0] @ k[:, 0].transpose(-1, -2) / q.shape[-1] ** 0.5   # head 0: (P, N, M)
        ce = F.cross_entropy(rearrange(logits.float(), "p n m -> (p n) m"), target.flatten(), reduction="none")
        per_layer.append((ce * weight.flatten()).sum() / weight.sum().clamp_min(1))
    return torch.stack(per_layer).mean()


def match_head_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, dynamic: torch.Tensor,
                    dynamic_weight: float = 5.0) -> torch.Tensor:
    """Cross-entropy of the matched-geometry tracking's logits (``model.match_track``) against the true tokens.

        L = Σ_i w_i · −log softmax_j(logits_ij)[j*_i] / Σ_i w_i,   w_i = valid_i · (1 + (dynamic_weight − 1) · dyn_i)

    logits (P, N, M); target, valid (P, N) (``patch_correspondence`` flattened over clips and frames); dynamic (P, N)
    bool: the anchor token is on a moving object (``token_dynamic``), weighted ``dynamic_weight`` times (they are a
    few percent of the tokens, and the only ones whose match is not "where the camera moved it"). Returns a scalar.

    >>> import torch
    >>> t = torch.tensor([[0, 1]]); ok = torch.ones(1, 2, dtype=torch.bool)
    >>> float(match_head_loss(torch.eye(2)[None] * 50, t, ok, ~ok)) < 1e-6
    True
    """
    assert logits.ndim == 3 and target.shape == valid.shape == dynamic.shape == logits.shape[:2], (
        tuple(logits.shape), tuple(target.shape), tuple(valid.shape), tuple(dynamic.shape))
    weight = valid.float() * (1 + (dynamic_weight - 1) * dynamic.float())
    ce = F.cross_entropy(rearrange(logits.float(), "p n m -> (p n) m"), target.flatten(), reduction="none")
    return (ce * weight.flatten()).sum() / weight.sum().clamp_min(1)


def match_flow_loss(uv: torch.Tensor, uv_true: torch.Tensor, valid: torch.Tensor, dynamic: torch.Tensor, patch: int,
                    dynamic_weight: float = 5.0) -> torch.Tensor:
    """Pixel-level lookup error of the matched tracking (``ModelConfig.match_pixel``), in tokens:

        L = Σ w · smooth-L1(‖uv − uv*‖₁ / p) / Σ w,   w = valid · (1 + (dynamic_weight − 1) · dynamic)

    uv (P, H, W, 2) the looked-up pixels, uv_true (P, H, W, 2) the true projections in frame k
    (``world.render.project_tracks``), valid (P, H, W) bool (inside and visible in frame k), dynamic (P, H, W) bool
    (the anchor pixel is on a moving object). Returns a scalar.

    >>> import torch; uv = torch.zeros(1, 2, 2, 2); ok = torch.ones(1, 2, 2, dtype=torch.bool)
    >>> float(match_flow_loss(uv, uv, ok, ~ok, patch=8))
    0.0
    """
    assert uv.shape == uv_true.shape and valid.shape == dynamic.shape == uv.shape[:3], (
        tuple(uv.shape), tuple(uv_true.shape), tuple(valid.shape), tuple(dynamic.shape))
    weight = valid.float() * (1 + (dynamic_weight - 1) * dynamic.float())
    err = F.smooth_l1_loss(uv.float() / patch, uv_true.float().nan_to_num() / patch, reduction="none").sum(-1)
    return (err * weight).sum() / weight.sum().clamp_min(1)


def match_gate_loss(gate: torch.Tensor, dynamic: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Teach the matched tracking's gate where the lookup should be read: on moving objects (balanced BCE).

        L = ½ mean_{moving} −log g + ½ mean_{static} −log(1 − g)       over the valid pixels

    A lookup into frame k's reconstruction beats the track head on moving objects and loses to it on static pixels
    (``studies.lookup_ceiling``); the tracking loss alone keeps the gate shut everywhere, since most pixels are static.
    gate (P, H, W) in (0, 1), dynamic (P, H, W) bool (the anchor pixel is on a moving object), valid (P, H, W) bool
    (the point is visible in frame k). Returns a scalar (a side without pixels counts 0).

    >>> import torch; dyn = torch.tensor([[[True, False]]]); ok = torch.ones(1, 1, 2, dtype=torch.bool)
    >>> float(match_gate_loss(torch.tensor([[[0.5, 0.5]]]), dyn, ok)) == float(-torch.log(torch.tensor(0.5)))
    True
    """
    assert gate.shape == dynamic.shape == valid.shape, (tuple(gate.shape), tuple(dynamic.shape), tuple(valid.shape))
    bce = F.binary_cross_entropy(gate.float().clamp(1e-6, 1 - 1e-6), dynamic.float(), reduction="none")
    sides = [(bce * m).sum() / m.sum() for m in (dynamic & valid, ~dynamic & valid) if m.any()]
    return 0.5 * torch.stack(sides).sum() if sides else gate.sum() * 0
