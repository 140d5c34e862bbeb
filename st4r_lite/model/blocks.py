"""Transformer building blocks: patch embedding, RoPE2D, (cross-)attention, encoder and decoder blocks.

Glossary: B batch, H W image size, p patch size, h w token grid (H/p, W/p), N = h*w tokens, M tokens of the
other image (cross-attention memory), C width, nh heads, dh = C/nh head width.

All blocks are pre-norm (x = x + f(LayerNorm(x))) as in timm's ViT; attention goes through
``F.scaled_dot_product_attention``. Module and parameter names follow the DUSt3R / CroCo checkpoint layout
(``attn.qkv``, ``cross_attn.projq`` ...), so released state_dicts load key for key.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn


def patch_positions(batch: int, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Token positions ``(B, h*w, 2)`` int64 as (row y, column x), in row-major token order."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pos = rearrange(torch.stack([ys, xs], dim=-1), "h w two -> (h w) two")
    return repeat(pos, "n two -> b n two", b=batch)


class PatchEmbed(nn.Module):
    """Cut the image into p x p patches and embed each with one strided conv (no absolute position table).

    images (B, 3, H, W) -> tokens (B, N, C), positions (B, N, 2) (y, x).
    """

    def __init__(self, patch_size: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj(images)  # (B, C, h, w)
        B, _, h, w = x.shape
        return rearrange(x, "b c h w -> b (h w) c"), patch_positions(B, h, w, x.device)


class RoPE2D(nn.Module):
    """2D rotary position embedding (RoFormer's RoPE, once per image axis).

    Each head's channels are split in two halves: the first half is rotated by the token's row y, the second
    by its column x. Within a half of width d, channel pair (i, i + d/2) is rotated by angle pos * θ_i with
    θ_i = base^(-2i/d) ("rotate-half" layout):  x' = x cos(pos θ) + rotate_half(x) sin(pos θ),
    rotate_half([x1, x2]) = [-x2, x1]. Dot products q·k then depend on relative positions only.

    Cache: the cos/sin tables (B, 1, N, dh) of a positions tensor are computed once and reused while the same
    positions tensor comes back (every layer of a forward reads the same ``pos``, and queries and keys share
    it). The key is (that tensor's identity and version counter, dh, dtype, device); the last
    :attr:`CACHE_SIZE` entries are kept, holding only a weak reference to the positions. The tables are
    constants (no gradient flows to integer positions), so caching changes no value and no gradient.
    """

    CACHE_SIZE = 4

    def __init__(self, base: float = 100.0):
        super().__init__()
        self.base = base
        self._cache: dict[tuple, tuple[weakref.ref, torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        """Copies and pickles start with an empty cache (weak references cannot be pickled)."""
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def cos_sin(self, pos: torch.Tensor, dh: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (B, N, 2) (y, x) -> cos, sin (B, 1, N, dh) of the rotation angles, in ``dtype`` (cached)."""
        if dh % 4:
            raise ValueError(f"RoPE2D needs a head width divisible by 4, got {dh}")
        cacheable = not pos.is_inference()  # inference tensors have no version counter
        key = (id(pos), pos._version, dh, dtype, pos.device) if cacheable else None
        hit = self._cache.get(key) if cacheable else None
        if hit is not None and hit[0]() is pos:
            return hit[1], hit[2]
        d = dh // 2  # channels per axis
        inv_freq = self.base ** (-torch.arange(0, d, 2, device=pos.device, dtype=torch.float32) / d)  # (d/2,)
        angles = pos.to(torch.float32)[..., None] * inv_freq  # (B, N, 2, d/2)
        angles = torch.cat([angles, angles], dim=-1)  # (B, N, 2, d): same angle for pair (i, i + d/2)
        angles = rearrange(angles, "b n ax d -> b 1 n (ax d)")  # y-channels first, then x-channels
        cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
        if cacheable:
            self._cache[key] = (weakref.ref(pos), cos, sin)
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
        return cos, sin

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, nh, N, dh), pos: (B, N, 2) (y, x) -> (B, nh, N, dh) rotated."""
        cos, sin = self.cos_sin(pos, x.shape[-1], x.dtype)
        halves = rearrange(x, "b nh n (ax two k) -> b nh n ax two k", ax=2, two=2)
        rotated = torch.stack([-halves[..., 1, :], halves[..., 0, :]], dim=-2)
        rotated = rearrange(rotated, "b nh n ax two k -> b nh n (ax two k)")
        # x cos + rotated sin, the sum accumulated in place into the fresh product (one allocation less: on
        # the CPU each large temporary costs page faults, this is ~3x faster per call than the plain sum).
        return (x * cos).addcmul_(rotated, sin)


class Attention(nn.Module):
    """Multi-head self-attention with RoPE2D on queries and keys.  x (B, N, C), pos (B, N, 2) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, rope: RoPE2D):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three nh dh) -> three b nh n dh", three=3, nh=self.num_heads)
        q, k = self.rope(q, pos), self.rope(k, pos)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(dh)) v
        return self.proj(rearrange(out, "b nh n dh -> b n (nh dh)"))


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from this branch, keys/values from the other image's tokens.

    query (B, N, C), key/value (B, M, C), qpos (B, N, 2), kpos (B, M, 2) -> (B, N, C).
    """

    def __init__(self, dim: int, num_heads: int, rope: RoPE2D):
        super().__init__()
        self.num_heads = num_heads
        self.projq, self.projk, self.projv = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def queries_keys(self, query, key, qpos, kpos) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head queries (B, nh, N, dh) and keys (B, nh, M, dh), RoPE applied: what the attention compares."""
        split = "b n (nh dh) -> b nh n dh"
        return (self.rope(rearrange(self.projq(query), split, nh=self.num_heads), qpos),
                self.rope(rearrange(self.projk(key), split, nh=self.num_heads), kpos))

    def forward(self, query, key, value, qpos, kpos) -> torch.Tensor:
        q, k = self.queries_keys(query, key, qpos, kpos)
        v = rearrange(self.projv(value), "b n (nh dh) -> b nh n dh", nh=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b nh n dh -> b n (nh dh)"))


class Mlp(nn.Module):
    """Two-layer MLP with exact GELU: (..., C) -> (..., C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Encoder block: x += Attn(LN(x)); x += MLP(LN(x)).  x (B, N, C), pos (B, N, 2) -> (B, N, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rope: RoPE2D, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Decoder block of one branch: self-attention, cross-attention to the other branch, MLP.

    x += SelfAttn(LN1(x));  y' = LN_y(y);  x += CrossAttn(LN2(x), y', y');  x += MLP(LN3(x)).
    x (B, N, C) this branch's tokens, y (B, M, C) the other branch's tokens from the same (previous) layer,
    xpos (B, N, 2), ypos (B, M, 2) -> (B, N, C).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, rope: RoPE2D, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, rope)
        self.cross_attn = CrossAttention(dim, num_heads, rope)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=eps)

    def forward(self, x, y, xpos, ypos) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), xpos)
        memory = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), memory, memory, xpos, ypos)
        return x + self.mlp(self.norm3(x))
