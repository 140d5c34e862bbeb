"""Procedural textures for the synthetic 4D world, defined in each surface's own coordinates.

Glossary of dimension letters: N points (shaded pixels), M materials of one clip, C = 3 colour channels.

A texture is a function of the *object-local* coordinates of a surface point (room: scene coordinates in
metres), so it moves and deforms with the object and carries correspondence: the same local point has the same
colour in every frame. Each material mixes two colours with a weight w(x) in [0, 1]:

    albedo(x) = (1 - w(x)) * color_a + w(x) * color_b

Families (``FAMILIES``; the `pretrain` domain uses the first three, the held-out `wild` domain the last three):
- checker:  w = parity(floor(f x + o) summed over axes)
- stripes:  w = smoothstep of sin(2 pi f <x, dir>)
- blobs:    w = soft threshold of two-octave 3D value noise at frequency f
- dots:     w = 1 inside a ball of radius r around every lattice centre of f x + o
- marble:   w = 0.5 + 0.5 sin(2 pi f <x, dir> + 4 noise(x))
- rings:    w = smoothstep of sin(2 pi f |x - (o/10 - 1/2)|)

Value noise uses an integer lattice hash into a per-clip table of 256 random values (exact, device independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from st4r_lite.errors import InputError

FAMILIES = ("checker", "stripes", "blobs", "dots", "marble", "rings")


@dataclass
class Materials:
    """Texture parameters of the M materials of one clip (index 0 floor, 1 walls/ceiling, 2+k object k+1).

    family (M,) int64 index into FAMILIES; freq (M,) cycles per unit; direction (M, 3) unit;
    color_a, color_b (M, 3) in [0, 1]; offset (M, 3) lattice shift; param (M,) family extra (dot radius);
    table (256,) value-noise lattice values in [0, 1].
    """

    family: torch.Tensor
    freq: torch.Tensor
    direction: torch.Tensor
    color_a: torch.Tensor
    color_b: torch.Tensor
    offset: torch.Tensor
    param: torch.Tensor
    table: torch.Tensor

    def to(self, device=None, dtype=torch.float32) -> Materials:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to(device) if f.name == "family" else v.to(device=device, dtype=dtype)
        return Materials(**out)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """hsv (..., 3) in [0, 1] -> rgb (..., 3) in [0, 1] (standard hexcone model)."""
    h, s, v = hsv.unbind(-1)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=-1)
    return v[..., None] - v[..., None] * s[..., None] * (torch.minimum(k, 4 - k).clamp(0, 1))


def _uniform(gen: torch.Generator, lo: float, hi: float, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def sample_colors(gen: torch.Generator, palette: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two colours (3,) for one material. 'vivid': saturated hues (pretrain); 'muted': desaturated, darker,
    sometimes near-monochrome pairs (wild)."""
    if palette not in ("vivid", "muted"):
        raise InputError(f"unknown palette {palette!r}; use 'vivid' or 'muted'")
    h = _uniform(gen, 0.0, 1.0)
    if palette == "vivid":
        hsv_a = torch.stack([h, _uniform(gen, 0.5, 1.0), _uniform(gen, 0.55, 1.0)])
        hsv_b = torch.stack([(h + _uniform(gen, 0.15, 0.85)) % 1.0, _uniform(gen, 0.3, 1.0),
                             _uniform(gen, 0.25, 0.7)])
    else:
        hsv_a = torch.stack([h, _uniform(gen, 0.0, 0.35), _uniform(gen, 0.35, 0.95)])
        hsv_b = torch.stack([(h + _uniform(gen, -0.1, 0.1)) % 1.0, _uniform(gen, 0.0, 0.5),
                             _uniform(gen, 0.05, 0.5)])
    return hsv_to_rgb(hsv_a), hsv_to_rgb(hsv_b)


def sample_material(gen: torch.Generator, families: tuple[str, ...], palette: str, freq_range: tuple[float, float]
                    ) -> dict[str, torch.Tensor]:
    """Random parameters of one material (a dict of float64 CPU tensors, see Materials)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise InputError(f"texture families {unknown or families!r} unknown; choose from {FAMILIES}")
    pick = int(torch.randint(len(families), (1,), generator=gen))
    direction = torch.randn(3, generator=gen, dtype=torch.float64)
    color_a, color_b = sample_colors(gen, palette)
    return {
        "family": torch.tensor(FAMILIES.index(families[pick])),
        "freq": _uniform(gen, *freq_range),
        "direction": direction / direction.norm().clamp_min(1e-6),
        "color_a": color_a,
        "color_b": color_b,
        "offset": _uniform(gen, 0.0, 10.0, (3,)),
        "param": _uniform(gen, 0.22, 0.4),
    }


def stack_materials(items: list[dict[str, torch.Tensor]], gen: torch.Generator) -> Materials:
    """Stack per-material dicts into one Materials (with a fresh value-noise table from ``gen``)."""
    keys = ("family", "freq", "direction", "color_a", "color_b", "offset", "param")
    out = {k: torch.stack([m[k] for m in items]) for k in keys}
    return Materials(**out, table=torch.rand(256, generator=gen, dtype=torch.float64))


def value_noise(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Smooth 3D value noise. x (N, 3) lattice coordinates -> (N,) in [0, 1].

    Lattice values table[hash(i, j, k) & 255], blended with smoothstep weights (trilinear)."""
    base = torch.floor(x)
    frac = x - base
    w = frac * frac * (3 - 2 * frac)
    ib = base.to(torch.int64)
    out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for corner in range(8):
        bits = [(corner >> a) & 1 for a in range(3)]
        i = ib[:, 0] + bits[0]
        j = ib[:, 1] + bits[1]
        k = ib[:, 2] + bits[2]
        h = ((i * 73856093) ^ (j * 19349663) ^ (k * 83492791)) & 255
        weight = torch.ones_like(out)
        for a in range(3):
            weight = weight * (w[:, a] if bits[a] else 1 - w[:, a])
        out = out + weight * table[h]
    return out


def _smooth_wave(s: torch.Tensor, sharp: float = 3.0) -> torch.Tensor:
    """Map sin values (N,) in [-1, 1] to a soft square wave in [0, 1]."""
    return 0.5 + 0.5 * (sharp * s).clamp(-1, 1)


def _weight(family: int, x: torch.Tensor, freq: torch.Tensor, direction: torch.Tensor, offset: torch.Tensor,
            param: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mixing weight w (N,) of one family for points x (N, 3) with per-point params."""
    name = FAMILIES[family]
    q = x * freq[:, None] + offset
    if name == "checker":
        return (torch.floor(q).sum(-1).remainder(2)).to(x.dtype)
    if name == "stripes":
        return _smooth_wave(torch.sin(2 * math.pi * freq * (x * direction).sum(-1)))
    if name == "blobs":
        n = 0.65 * value_noise(q, table) + 0.35 * value_noise(2.03 * q + 5.1, table)
        return ((n - 0.5) * 6).clamp(-1, 1) * 0.5 + 0.5
    if name == "dots":
        d = (q - torch.floor(q) - 0.5).norm(dim=-1)
        return (((param - d) * 20).clamp(-1, 1) + 1) * 0.5
    if name == "marble":
        n = value_noise(1.5 * q, table)
        return 0.5 + 0.5 * torch.sin(2 * math.pi * freq * (x * direction).sum(-1) + 4 * n)
    if name == "rings":
        r = (x - (offset / 10 - 0.5)).norm(dim=-1)
        return _smooth_wave(torch.sin(2 * math.pi * freq * r), sharp=2.0)
    raise AssertionError(name)


def shade_albedo(coords: torch.Tensor, material: torch.Tensor, mats: Materials) -> torch.Tensor:
    """Albedo of surface points. coords (N, 3) texture coordinates (object-local, or metres for the room);
    material (N,) int64 index into ``mats`` -> albedo (N, 3) in [0, 1]."""
    if coords.shape[:-1] != material.shape or coords.shape[-1] != 3:
        raise ValueError(f"coords {tuple(coords.shape)} must be (N, 3) and material (N,); got {tuple(material.shape)}")
    family = mats.family[material]
    weight = torch.zeros(coords.shape[0], dtype=coords.dtype, device=coords.device)
    for f in torch.unique(family).tolist():
        sel = (family == f).nonzero().squeeze(1)
        m = material[sel]
        weight[sel] = _weight(int(f), coords[sel], mats.freq[m], mats.direction[m], mats.offset[m],
                              mats.param[m], mats.table)
    weight = weight[:, None]
    return (1 - weight) * mats.color_a[material] + weight * mats.color_b[material]
