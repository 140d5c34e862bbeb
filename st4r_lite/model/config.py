"""Model configuration: one small dataclass and the named presets.

Glossary of dimension letters used across model.py / blocks.py / heads.py:
  B batch of pairs, H W image height and width (pixels), p patch size, h w token grid (H/p, W/p),
  N = h*w tokens per image, C channel width, L decoder depth, nh attention heads, dh = C/nh head width.

The network is DUSt3R's (ViT encoder + two cross-attending ViT decoders + two pointmap heads); St4RTrack
gives its two outputs a new meaning (head 1 = ``track``, head 2 = ``recon``). The ``full`` preset is the
released layout (``DUSt3R_ViTLarge_BaseDecoder_512_dpt``, also used by MonST3R and St4RTrack), so released
checkpoints load into it key for key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from st4r_lite.errors import InputError


def default_hooks(dec_depth: int) -> tuple[int, int, int, int]:
    """DPT hooks into the decoder list ``[enc, block 1..L]``: 0, L/2, 3L/4, L (DUSt3R: 0, 6, 9, 12)."""
    return (0, dec_depth // 2, (3 * dec_depth) // 4, dec_depth)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a :class:`~st4r_lite.model.network.St4RTrack` (and stored in our checkpoints)."""

    name: str = "custom"
    # Default input size (H, W). The network accepts any multiple of the patch size (RoPE has no fixed
    # table); this is the size the presets were sized and timed for, and what data pipelines should use.
    img_size: tuple[int, int] = (64, 96)
    # Side of the square patch: each p x p pixel block becomes one token. 16 in DUSt3R; 8 doubles the
    # token grid, which helps tiny images (64x96 -> 8x12 tokens) keep enough spatial detail.
    patch_size: int = 16
    # Encoder (shared by both images, "Siamese"): width, depth, heads. ViT-L = 1024 x 24, 16 heads.
    enc_dim: int = 1024
    enc_depth: int = 24
    enc_heads: int = 16
    # Decoders (one per branch, cross-attending each other): ViT-B = 768 x 12, 12 heads.
    dec_dim: int = 768
    dec_depth: int = 12
    dec_heads: int = 12
    # MLP hidden width = mlp_ratio * width (4 everywhere in ViTs).
    mlp_ratio: float = 4.0
    # RoPE2D frequency base: 100 (not the 10000 of text models: image grids are short, ~64 tokens a side).
    rope_base: float = 100.0
    # LayerNorm epsilon used by the reference blocks.
    norm_eps: float = 1e-6
    # "linear" (one Linear per token + pixel shuffle: cheap, blocky) or "dpt" (multi-scale conv decoder).
    head_type: str = "dpt"
    # DPT sizes (ignored by linear heads): fusion width, last conv width, widths of the four
    # act_postprocess projections, and hooks = indices into the decoder list [enc, block 1..L].
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 128
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    dpt_hooks: tuple[int, int, int, int] = (0, 6, 9, 12)
    # The proposal's per-pixel log sigma^2 heads (zero-initialised: sigma^2 = 1 until trained).
    sigma_heads: bool = True
    # Ours, off in DUSt3R's layout (0): width of a small image-guided conv refinement of each head's raw output
    # at full resolution (model.heads.PixelRefine). A linear head paints each p x p patch from one token, so an
    # object edge inside a patch gets a blend of object and background depth; the refinement sees the pixels.
    pixel_refine: int = 0
    # Ours, off in DUSt3R's layout (0): width D of the matched-geometry tracking (model.match_track.MatchTrack).
    # Each anchor patch is looked up in frame k and the track reads frame k's reconstruction there, through a
    # learned gate; the linear track head alone paints motion from context and learned none at this scale.
    match_track: int = 0
    # With match_track: first bring frame k's found geometry onto the track branch's own frame-k points by one
    # similarity per pair (no gradient; MatchTrack's docstring): far frames' reconstructions are misplaced.
    match_register: bool = False
    # With match_track: read the lookup at a pixel (soft-argmax position + a learned sub-token offset, bilinear)
    # instead of copying the found token's whole patch.
    match_pixel: bool = False
    # With match_pixel: radius r of one local correlation step refining each looked-up pixel from the images
    # (model.match_track.LocalRefine, offsets within ±2r pixels); 0 = off.
    match_refine: int = 0

    def __post_init__(self) -> None:
        # dataclass(frozen) + JSON round trips give lists: normalise to tuples so configs compare equal.
        for f in ("img_size", "dpt_layer_dims", "dpt_hooks"):
            object.__setattr__(self, f, tuple(int(v) for v in getattr(self, f)))
        problems = []
        if self.enc_dim % self.enc_heads or self.dec_dim % self.dec_heads:
            problems.append("enc_dim/dec_dim must be divisible by enc_heads/dec_heads")
        for width, heads in ((self.enc_dim, self.enc_heads), (self.dec_dim, self.dec_heads)):
            if (width // heads) % 4:
                problems.append(f"head width {width}//{heads} must be a multiple of 4 (RoPE2D: 2 axes x pairs)")
        if self.pixel_refine < 0:
            problems.append(f"pixel_refine must be >= 0 (0 = off), got {self.pixel_refine}")
        if self.match_track < 0:
            problems.append(f"match_track must be >= 0 (0 = off), got {self.match_track}")
        if (self.match_register or self.match_pixel) and not self.match_track:
            problems.append("match_register and match_pixel need match_track > 0 (they shape its lookup)")
        if self.match_refine < 0 or (self.match_refine and not self.match_pixel):
            problems.append(f"match_refine ({self.match_refine}) must be >= 0 and needs match_pixel (it refines "
                            "pixel lookups)")
        if self.head_type not in ("linear", "dpt"):
            problems.append(f"head_type must be 'linear' or 'dpt', got {self.head_type!r}")
        if self.head_type == "dpt" and not all(0 <= h <= self.dec_depth for h in self.dpt_hooks):
            problems.append(f"dpt_hooks {self.dpt_hooks} must index the decoder list 0..{self.dec_depth}")
        if any(s % self.patch_size for s in self.img_size):
            problems.append(f"img_size {self.img_size} must be multiples of patch_size {self.patch_size}")
        if problems:
            raise InputError(f"invalid ModelConfig {self.name!r}: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, numbers, strings): safe for ``torch.load(weights_only=True)`` and JSON."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise (a file from another version should say so)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_dust3r(cls, cfg: dict[str, Any], name: str = "dust3r") -> ModelConfig:
        """Translate a reference DUSt3R constructor dict (e.g. a fixture's ``config.json``).

        Only ``pts3d`` output with ``exp`` depth and ``exp 1..inf`` confidence is supported (what every
        released DUSt3R / MonST3R / St4RTrack checkpoint uses).
        """
        if cfg.get("output_mode", "pts3d") != "pts3d":
            raise InputError(f"only output_mode 'pts3d' is supported, got {cfg.get('output_mode')!r}")
        depth_mode = cfg.get("depth_mode", ["exp", "-inf", "inf"])
        conf_mode = cfg.get("conf_mode", ["exp", 1, "inf"])
        if depth_mode[0] != "exp" or conf_mode[0] != "exp" or float(conf_mode[1]) != 1.0:
            raise InputError(f"unsupported depth_mode/conf_mode {depth_mode}/{conf_mode}: need exp / exp 1..inf")
        pos = str(cfg.get("pos_embed", "RoPE100"))
        if not pos.startswith("RoPE"):
            raise InputError(f"only RoPE position embeddings are supported, got {pos!r}")
        img = cfg.get("img_size", (224, 224))
        img = (img, img) if isinstance(img, int) else tuple(img)
        kw: dict[str, Any] = dict(
            name=name, img_size=img, patch_size=int(cfg.get("patch_size", 16)),
            enc_dim=cfg["enc_embed_dim"], enc_depth=cfg["enc_depth"], enc_heads=cfg["enc_num_heads"],
            dec_dim=cfg["dec_embed_dim"], dec_depth=cfg["dec_depth"], dec_heads=cfg["dec_num_heads"],
            rope_base=float(pos[4:] or 100), head_type=cfg.get("head_type", "linear"),
        )
        if "dpt" in cfg:
            dpt = cfg["dpt"]
            kw.update(dpt_feature_dim=dpt["feature_dim"], dpt_last_dim=dpt["last_dim"],
                      dpt_layer_dims=dpt["layer_dims"], dpt_hooks=dpt["hooks"])
        elif kw["head_type"] == "dpt":
            kw["dpt_hooks"] = default_hooks(kw["dec_depth"])
        return cls(**kw)

    @property
    def reads_pixels(self) -> bool:
        """Whether the heads need the images themselves (pixel refinement, or the lookup's local refinement)."""
        return bool(self.pixel_refine or self.match_refine)

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (h, w) of the default input size."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    def with_(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (``PRESETS['tiny'].with_(head_type='dpt')``)."""
        return replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # Trains on a 2-core laptop CPU in minutes: 64x96 images with 8x8 patches (8x12 = 96 tokens), a 192-wide
    # encoder and decoder (3 heads of 64) and linear heads; 7.6 M parameters, 2.2 GFLOP per pair forward.
    # Forward+backward of 8 pairs: ~1 s on one idle CPU thread (measured; see `st4r-lite bench`).
    "tiny": ModelConfig(
        name="tiny", img_size=(64, 96), patch_size=8,
        enc_dim=192, enc_depth=6, enc_heads=3, dec_dim=192, dec_depth=4, dec_heads=3,
        head_type="linear",
    ),
    # Colab-GPU default (T4 / L4): 128x192 images, 8x8 patches (16x24 = 384 tokens), ViT-S encoder, a
    # 256x6 decoder and DPT heads (smooth, sharp pointmaps). 44 M parameters. With 8x8 patches the DPT's finest
    # fusion stage runs at full resolution (128 channels): forward 87 GFLOP per pair, 36 of them in the two DPT
    # heads, vs 2.2 GFLOP for `tiny` (torch.utils.flop_counter, attention included: `st4r-lite bench`). A GPU preset.
    "small": ModelConfig(
        name="small", img_size=(128, 192), patch_size=8,
        enc_dim=384, enc_depth=12, enc_heads=6, dec_dim=256, dec_depth=6, dec_heads=4,
        head_type="dpt", dpt_feature_dim=128, dpt_last_dim=64, dpt_layer_dims=(48, 96, 192, 384),
        dpt_hooks=default_hooks(6),
    ),
    # The released layout (DUSt3R ViT-L encoder, ViT-B decoders, DPT heads, trained at 512 px wide):
    # loads DUSt3R-512-DPT, MonST3R and St4RTrack checkpoints. 288x512 (16:9) is an assumed default size.
    "full": ModelConfig(name="full", img_size=(288, 512)),
    # DUSt3R's 224 linear-head layout (DUSt3R_ViTLarge_BaseDecoder_224_linear).
    "full_linear": ModelConfig(name="full_linear", img_size=(224, 224), head_type="linear"),
}


def get_config(preset: str | ModelConfig) -> ModelConfig:
    """A preset by name (``'tiny'``, ``'small'``, ``'full'``, ``'full_linear'``) or a config passed through."""
    if isinstance(preset, ModelConfig):
        return preset
    if preset not in PRESETS:
        raise InputError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


__all__ = ["ModelConfig", "PRESETS", "get_config", "default_hooks"]
