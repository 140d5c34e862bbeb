"""The St4RTrack network: DUSt3R's architecture, read with St4RTrack's meaning.

Glossary: B batch of pairs, T frames, H W image size, p patch size, h w token grid (H/p, W/p), N = h*w tokens,
C_enc / C_dec encoder / decoder widths, L decoder depth.

One pair (anchor image 1, other image j) goes through
  1. a shared ViT encoder (both images in one batch)              -> tokens (2B, N, C_enc)
  2. ``decoder_embed`` (shared), then two decoders updated together: at layer l, branch 1 attends to itself
     and to branch 2's layer-(l-1) tokens, and vice versa               -> lists [enc, block 1..L]
  3. head 1 on branch 1 -> ``track`` = ¹X¹_j : where each anchor pixel is at time j (anchor camera frame);
     head 2 on branch 2 -> ``recon`` = ¹Xʲ_j : frame j's visible geometry at time j (anchor camera frame);
     each with a confidence C > 1, plus (ours) a zero-initialised log sigma^2 per pixel and branch;
     optionally (ours, ``pixel_refine`` > 0) each head's raw output is refined from its own image (anchor for
     head 1, frame j for head 2) by ``pixel_refine1`` / ``pixel_refine2`` (model.heads.PixelRefine);
     optionally (ours, ``match_track`` > 0) the track reads frame j's recon where each anchor patch is found in
     frame j, through a learned gate (``match_track``, model.match_track.MatchTrack).
Parameter names follow DUSt3R's checkpoints, so DUSt3R / MonST3R / St4RTrack weights load into ``full``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from st4r_lite.model.blocks import Block, DecoderBlock, PatchEmbed, RoPE2D
from st4r_lite.model.config import PRESETS, ModelConfig, get_config
from st4r_lite.model.heads import PixelRefine, SigmaHead, build_head, pointmap_activation
from st4r_lite.model.match_track import MatchTrack


@dataclass
class PairOutput:
    """Predictions for B pairs (anchor, j), all in the anchor camera's frame.

    track, recon: (B, H, W, 3) points; conf_track, conf_recon: (B, H, W) in (1, inf);
    log_sigma2_track, log_sigma2_recon: (B, H, W) (0 = sigma^2 of 1 at initialisation).
    """

    track: torch.Tensor
    recon: torch.Tensor
    conf_track: torch.Tensor
    conf_recon: torch.Tensor
    log_sigma2_track: torch.Tensor
    log_sigma2_recon: torch.Tensor

    def to(self, device: torch.device | str) -> PairOutput:
        return PairOutput(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(parts: list[PairOutput]) -> PairOutput:
        """Concatenate along the pair axis."""
        return PairOutput(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(PairOutput)})


@dataclass
class DebugOutput:
    """Intermediates of one forward pass (what the parity fixture stores).

    enc1, enc2: (B, N, C_enc) after enc_norm; pos1, pos2: (B, N, 2) (y, x); dec1, dec2: lists of L+1
    tensors [enc, block 1..L] (last after dec_norm); raw1, raw2: head outputs (B, 4, H, W) before activation.
    """

    enc1: torch.Tensor
    enc2: torch.Tensor
    pos1: torch.Tensor
    pos2: torch.Tensor
    dec1: list[torch.Tensor]
    dec2: list[torch.Tensor]
    raw1: torch.Tensor
    raw2: torch.Tensor
    output: PairOutput


def check_images(img1: torch.Tensor, img2: torch.Tensor, patch_size: int) -> None:
    """Raise ValueError unless both are (B, 3, H, W) of the same shape with H, W multiples of the patch."""
    for name, img in (("img_anchor", img1), ("img_other", img2)):
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"{name} must be (B, 3, H, W) RGB in [-1, 1], got shape {tuple(img.shape)}")
    if img1.shape != img2.shape:
        raise ValueError(f"both images of a pair must have the same shape, got {tuple(img1.shape)} "
                         f"and {tuple(img2.shape)}")
    H, W = img1.shape[-2:]
    if H % patch_size or W % patch_size:
        h, w = max(H // patch_size, 1) * patch_size, max(W // patch_size, 1) * patch_size
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {patch_size}; resize or "
                         f"centre-crop the frames to e.g. {h}x{w} (H and W must both be multiples of {patch_size})")


class St4RTrack(nn.Module):
    """DUSt3R-layout two-branch pointmap network. See the module docstring; build with :func:`build_model`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = cfg = config
        rope = RoPE2D(cfg.rope_base)  # no parameters: shared by every attention layer
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.enc_dim)
        self.enc_blocks = nn.ModuleList(
            Block(cfg.enc_dim, cfg.enc_heads, cfg.mlp_ratio, rope, cfg.norm_eps) for _ in range(cfg.enc_depth))
        self.enc_norm = nn.LayerNorm(cfg.enc_dim, eps=cfg.norm_eps)
        # CroCo's masked-modelling token: unused here, kept so checkpoints match key for key.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_dim))
        self.decoder_embed = nn.Linear(cfg.enc_dim, cfg.dec_dim)
        self.dec_blocks = nn.ModuleList(  # branch 1 (track)
            DecoderBlock(cfg.dec_dim, cfg.dec_heads, cfg.mlp_ratio, rope, cfg.norm_eps) for _ in range(cfg.dec_depth))
        self.dec_blocks2 = nn.ModuleList(  # branch 2 (recon)
            DecoderBlock(cfg.dec_dim, cfg.dec_heads, cfg.mlp_ratio, rope, cfg.norm_eps) for _ in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(cfg.dec_dim, eps=cfg.norm_eps)
        self.downstream_head1 = build_head(cfg)  # track = ¹X¹_j
        self.downstream_head2 = build_head(cfg)  # recon = ¹Xʲ_j
        self.apply(_init_weights)
        if cfg.sigma_heads:  # created after the init pass: they stay exactly zero
            self.sigma_head1, self.sigma_head2 = SigmaHead(cfg), SigmaHead(cfg)
        if cfg.pixel_refine:  # after the init pass too: their last conv stays exactly zero
            self.pixel_refine1, self.pixel_refine2 = PixelRefine(cfg.pixel_refine), PixelRefine(cfg.pixel_refine)
        if cfg.match_track:  # after the init pass too: its gate starts nearly closed
            self.match_track = MatchTrack(cfg.enc_dim, cfg.dec_dim, cfg.patch_size, cfg.match_track,
                                          cfg.match_register, cfg.match_pixel, cfg.match_refine)

    # --------------------------------------------------------------------------------------------- stages
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] -> tokens (B, N, C_enc) after enc_norm, positions (B, N, 2) (y, x)."""
        x, pos = self.patch_embed(images)
        for blk in self.enc_blocks:
            x = blk(x, pos)
        return self.enc_norm(x), pos

    def decode(self, enc1, pos1, enc2, pos2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both decoders together. enc* (B, N, C_enc), pos* (B, N, 2) -> two lists [enc, block 1..L].

        Layer l of each branch reads both branches' layer l-1 tokens (simultaneous update); dec_norm is
        applied to the last entry only.
        """
        f1, f2 = self.decoder_embed(enc1), self.decoder_embed(enc2)
        dec1, dec2 = [enc1], [enc2]
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            f1, f2 = blk1(f1, f2, pos1, pos2), blk2(f2, f1, pos2, pos1)
            dec1.append(f1)
            dec2.append(f2)
        dec1[-1], dec2[-1] = self.dec_norm(dec1[-1]), self.dec_norm(dec2[-1])
        return dec1, dec2

    def predict_heads(self, dec1, dec2, image_hw: tuple[int, int],
                      images: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[PairOutput, torch.Tensor, torch.Tensor]:
        """Decoder lists -> (PairOutput, raw1 (B, 4, H, W), raw2 (B, 4, H, W)); heads run in float32.

        images: (img_anchor, img_other), each (B, 3, H, W) in [-1, 1]; needed only when ``config.reads_pixels``.
        """
        raw1 = self.downstream_head1(dec1, image_hw)
        raw2 = self.downstream_head2(dec2, image_hw)
        if self.config.pixel_refine:
            if images is None:
                raise ValueError("this model refines its heads from the images (pixel_refine > 0): pass "
                                 "images=(img_anchor, img_other) to predict_heads")
            raw1, raw2 = self.pixel_refine1(raw1, images[0]), self.pixel_refine2(raw2, images[1])
        track, conf_track = pointmap_activation(raw1)
        recon, conf_recon = pointmap_activation(raw2)
        if self.config.match_track:  # raw1 stays the head's own output (before the matched geometry)
            track = self.match_track(dec1, dec2, track, recon, images)[0]
        if self.config.sigma_heads:
            ls1, ls2 = self.sigma_head1(dec1[-1], image_hw), self.sigma_head2(dec2[-1], image_hw)
        else:  # sigma^2 = 1 everywhere
            ls1, ls2 = torch.zeros_like(conf_track), torch.zeros_like(conf_recon)
        out = PairOutput(track, recon, conf_track, conf_recon, ls1, ls2)
        return out, raw1, raw2

    def forward_debug(self, img_anchor: torch.Tensor, img_other: torch.Tensor) -> DebugOutput:
        """Like :meth:`forward` but returns every intermediate (for parity tests and teaching)."""
        check_images(img_anchor, img_other, self.config.patch_size)
        B = img_anchor.shape[0]
        enc, pos = self.encode(torch.cat([img_anchor, img_other]))  # Siamese: one batch of 2B images
        enc1, enc2, pos1, pos2 = enc[:B], enc[B:], pos[:B], pos[B:]
        dec1, dec2 = self.decode(enc1, pos1, enc2, pos2)
        out, raw1, raw2 = self.predict_heads(dec1, dec2, tuple(img_anchor.shape[-2:]), (img_anchor, img_other))
        return DebugOutput(enc1, enc2, pos1, pos2, dec1, dec2, raw1, raw2, out)

    def forward(self, img_anchor: torch.Tensor, img_other: torch.Tensor) -> PairOutput:
        """img_anchor, img_other: (B, 3, H, W) in [-1, 1], H and W multiples of the patch -> PairOutput."""
        return self.forward_debug(img_anchor, img_other).output

    # ------------------------------------------------------------------------------------------- helpers
    def branch_parameters(self, branch: str = "track") -> list[nn.Parameter]:
        """Parameters of one branch: its decoder stack, its pointmap head, its sigma head and its pixel refinement.

        ``'track'`` = dec_blocks + downstream_head1 + sigma_head1 (+ pixel_refine1, + match_track) (what test-time
        adaptation updates).
        """
        names = {"track": ("dec_blocks", "downstream_head1", "sigma_head1", "pixel_refine1", "match_track"),
                 "recon": ("dec_blocks2", "downstream_head2", "sigma_head2", "pixel_refine2")}
        if branch not in names:
            raise ValueError(f"branch must be 'track' or 'recon', got {branch!r}")
        mods = [getattr(self, n) for n in names[branch] if hasattr(self, n)]
        return [p for m in mods for p in m.parameters()]


def _init_weights(m: nn.Module) -> None:
    """ViT-style init: truncated normal (std 0.02) for Linear weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def build_model(
    preset: str | ModelConfig = "tiny", device: torch.device | str | None = None, seed: int | None = 0
) -> St4RTrack:
    """A freshly initialised model of a preset (``'tiny'``, ``'small'``, ``'full'``, ``'full_linear'``) or config.

    The initial weights depend on ``seed`` only (drawn on the CPU from a forked RNG, so the caller's global
    RNG state is neither used nor changed); ``seed=None`` draws from the global RNG instead.
    ``device='meta'`` builds the structure without allocating memory (key and shape checks).
    """
    cfg = get_config(preset)
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return St4RTrack(cfg)
    if seed is None:
        model = St4RTrack(cfg)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = St4RTrack(cfg)
    return model if device is None else model.to(device)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (aliases counted once)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["PRESETS", "ModelConfig", "PairOutput", "DebugOutput", "St4RTrack", "build_model", "count_parameters",
           "check_images"]
