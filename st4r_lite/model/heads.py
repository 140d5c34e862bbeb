"""Prediction heads: decoder tokens -> per-pixel pointmap, confidence, and log sigma^2.

Glossary: B batch, H W image size, p patch size, h w token grid (H/p, W/p), N = h*w tokens, C width,
F DPT fusion width, L decoder depth.

Two pointmap heads exist in DUSt3R's layout, both producing 4 raw channels per pixel (x, y, z, c):
  - ``LinearHead``: one Linear per token to 4*p*p values, then pixel shuffle (each token paints its patch).
  - ``DPTHead``: the DPT decoder (Ranftl et al. 2021): four hooked token maps are reassembled at 4x, 2x, 1x,
    1/2x the token grid, projected to F channels, fused coarse-to-fine by residual conv units with 2x bilinear
    upsampling, and a small conv head outputs the 4 channels at full resolution.
Raw channels become outputs with DUSt3R's activations (:func:`pointmap_activation`):
    X = xyz / |xyz| * expm1(|xyz|)   (direction kept, distance = e^|xyz| - 1 >= 0)
    C = 1 + exp(c)                    (confidence in (1, inf))
``PixelRefine`` (ours, ``ModelConfig.pixel_refine`` > 0) corrects a head's raw channels pixel by pixel from the
image itself: raw' = raw + g([raw, image]), g four 3x3 convs with a zero-initialised last layer (raw' = raw until
trained), so a depth edge can follow the object's edge inside a patch.
``SigmaHead`` is our addition (the course proposal): per-pixel log sigma^2, zero-initialised so sigma^2 = 1
until trained, and kept separate so released checkpoints still load.
Heads always run in float32 (autocast disabled inside): exp/expm1 overflow easily in half precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from st4r_lite.model.config import ModelConfig


def pointmap_activation(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """raw (B, 4, H, W) -> points (B, H, W, 3) = xyz/|xyz| * expm1(|xyz|), conf (B, H, W) = 1 + exp(c)."""
    raw = rearrange(raw, "b c h w -> b h w c")
    xyz, c = raw[..., :3], raw[..., 3]
    dist = xyz.norm(dim=-1, keepdim=True)
    points = xyz / dist.clip(min=1e-8) * torch.expm1(dist)
    return points, 1.0 + torch.exp(c)


def _float32(fn):
    """Run a head's forward in float32 whatever the surrounding autocast says."""

    def wrapped(self, *args, **kwargs):
        device_type = next(self.parameters()).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            args = [[t.float() for t in a] if isinstance(a, list) else a for a in args]
            return fn(self, *args, **kwargs)

    wrapped.__doc__ = fn.__doc__
    return wrapped


class LinearHead(nn.Module):
    """Last decoder tokens (B, N, C) -> raw (B, 4, H, W) by Linear(C, 4 p^2) + pixel shuffle."""

    def __init__(self, cfg: ModelConfig, out_channels: int = 4):
        super().__init__()
        self.patch_size, self.out_channels = cfg.patch_size, out_channels
        self.proj = nn.Linear(cfg.dec_dim, out_channels * cfg.patch_size**2)

    @_float32
    def forward(self, tokens: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        """tokens: the decoder list [enc, block 1..L] (reads the last), image_hw (H, W) -> (B, 4, H, W)."""
        p = self.patch_size
        h, w = image_hw[0] // p, image_hw[1] // p
        x = self.proj(tokens[-1])  # (B, N, 4 p^2), channel order (c, p1, p2) as in pixel_shuffle
        return rearrange(x, "b (h w) (c p1 p2) -> b c (h p1) (w p2)", h=h, w=w, p1=p, p2=p)


class SigmaHead(nn.Module):
    """Per-pixel log sigma^2 from the last decoder tokens: Linear(C, p^2) + pixel shuffle, zero-initialised.

    tokens (B, N, C) -> (B, H, W); exactly 0 (sigma^2 = 1) at initialisation, gradients still reach it.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.proj = nn.Linear(cfg.dec_dim, cfg.patch_size**2)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @_float32
    def forward(self, tokens: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        p = self.patch_size
        h, w = image_hw[0] // p, image_hw[1] // p
        return rearrange(self.proj(tokens.float()), "b (h w) (p1 p2) -> b (h p1) (w p2)", h=h, w=w, p1=p, p2=p)


class PixelRefine(nn.Module):
    """Image-guided residual refinement of raw head channels at full resolution (ours; off in DUSt3R's layout).

    raw' = raw + g(concat(raw, image)),  g = conv3x3 -> GELU -> conv3x3 -> GELU -> conv3x3 -> GELU -> conv3x3,
    ``width`` channels inside (receptive field 9 x 9 pixels: half an 8-pixel patch each side), the last
    conv zero-initialised: a model with a fresh refinement computes exactly what it computed without one.

    raw (B, 4, H, W), image (B, 3, H, W) in [-1, 1] -> (B, 4, H, W).
    """

    def __init__(self, width: int, channels: int = 4):
        super().__init__()
        assert width > 0, width
        self.net = nn.Sequential(
            nn.Conv2d(channels + 3, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    @_float32
    def forward(self, raw: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        assert raw.shape[0] == image.shape[0] and raw.shape[-2:] == image.shape[-2:] and image.shape[1] == 3, (
            tuple(raw.shape), tuple(image.shape))
        return raw + self.net(torch.cat([raw, image.to(raw.device, raw.dtype)], dim=1))


# ---------------------------------------------------------------------------------------------------- DPT
class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs keeping F channels: (B, F, h, w) -> (B, F, h, w).

    Memory: the inner ReLU and the residual sum run in place on fresh conv outputs (a conv's backward keeps
    its input, not its output, so gradients are unchanged); only relu(x) needs a copy, x is the residual.
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x)), inplace=True))
        return out.add_(x)


class FusionBlock(nn.Module):
    """DPT fusion ("refinenet"): add the refined skip, refine, upsample 2x (bilinear, corners aligned), 1x1.

    path (B, F, h, w), skip (B, F, h, w) or None -> (B, F, 2h, 2w).
    """

    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)  # refines the skip (unused by the coarsest block)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        path = F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(path)


class _Scratch(nn.Module):
    """Container named ``scratch`` in the checkpoints: layer{1..4}_rn (3x3 to F, no bias), refinenet{1..4}.

    ``layer_rn.{0..3}`` are aliases of ``layer{1..4}_rn`` (same modules).
    """

    def __init__(self, layer_dims: tuple[int, ...], features: int):
        super().__init__()
        for i, d in enumerate(layer_dims, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(d, features, 3, padding=1, bias=False))
        # The reference also registers the same four convs as a list; its checkpoints hold both names
        # (aliases of one tensor), so we keep the alias too and the key sets match exactly.
        self.layer_rn = nn.ModuleList([self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn])
        for i in range(1, 5):
            setattr(self, f"refinenet{i}", FusionBlock(features))


class _DPT(nn.Module):
    """The DPT body (``dpt`` in the checkpoints). hooked token maps -> raw (B, 4, H, W)."""

    def __init__(self, cfg: ModelConfig, out_channels: int = 4):
        super().__init__()
        in_dims = [cfg.enc_dim if hook == 0 else cfg.dec_dim for hook in cfg.dpt_hooks]
        d, feat = cfg.dpt_layer_dims, cfg.dpt_feature_dim
        # Reassemble each hooked token map at 4x, 2x, 1x and 1/2x the token grid (DPT "act_postprocess").
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_dims[0], d[0], 1), nn.ConvTranspose2d(d[0], d[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(in_dims[1], d[1], 1), nn.ConvTranspose2d(d[1], d[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(in_dims[2], d[2], 1)),
            nn.Sequential(nn.Conv2d(in_dims[3], d[3], 1), nn.Conv2d(d[3], d[3], 3, stride=2, padding=1)),
        ])
        self.scratch = _Scratch(d, feat)
        # Output convs; index 1 is the (parameter-free) upsampling to full resolution, done in forward.
        self.head = nn.Sequential(
            nn.Conv2d(feat, feat // 2, 3, padding=1), nn.Identity(),
            nn.Conv2d(feat // 2, cfg.dpt_last_dim, 3, padding=1), nn.ReLU(),
            nn.Conv2d(cfg.dpt_last_dim, out_channels, 1),
        )

    def forward(self, maps: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        """maps: 4 token maps (B, C_i, h, w) -> raw (B, 4, H, W)."""
        s = self.scratch
        layers = [post(m) for post, m in zip(self.act_postprocess, maps)]  # 4x, 2x, 1x, x/2 the grid
        layers = [rn(x) for rn, x in zip((s.layer1_rn, s.layer2_rn, s.layer3_rn, s.layer4_rn), layers)]
        # Coarse to fine. An odd token grid makes the 1/2x map round up: crop back to the finer map's size.
        path = s.refinenet4(layers[3])[..., : layers[2].shape[-2], : layers[2].shape[-1]]
        path = s.refinenet3(path, layers[2])
        path = s.refinenet2(path, layers[1])
        path = s.refinenet1(path, layers[0])  # 8x the token grid: H/2 for p = 16, H for p = 8
        del layers  # free the skip maps (4x the grid is the largest) before the full-resolution stage
        x = self.head[0](path)
        del path
        if tuple(x.shape[-2:]) != tuple(image_hw):
            x = F.interpolate(x, size=tuple(image_hw), mode="bilinear", align_corners=True)
        # head[3] is the ReLU, applied in place on the fresh conv output (full resolution, last_dim channels).
        x = F.relu(self.head[2](x), inplace=True)
        return self.head[4](x)


class DPTHead(nn.Module):
    """Decoder list [enc (B,N,C_enc), block 1..L (B,N,C)] -> raw (B, 4, H, W) through DPT at ``dpt_hooks``."""

    def __init__(self, cfg: ModelConfig, out_channels: int = 4):
        super().__init__()
        self.patch_size, self.hooks = cfg.patch_size, cfg.dpt_hooks
        self.dpt = _DPT(cfg, out_channels)

    @_float32
    def forward(self, tokens: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        h, w = image_hw[0] // self.patch_size, image_hw[1] // self.patch_size
        maps = [rearrange(tokens[i], "b (h w) c -> b c h w", h=h, w=w) for i in self.hooks]
        return self.dpt(maps, image_hw)


def build_head(cfg: ModelConfig) -> nn.Module:
    """The pointmap head of ``cfg.head_type`` ('linear' or 'dpt')."""
    return DPTHead(cfg) if cfg.head_type == "dpt" else LinearHead(cfg)
