"""The adaptation variants (the ablation's rows, docs/method.md §6): which terms use the occlusion mask and which σ².

A :class:`Variant` says, for one row:

- ``adapts``: whether the model is adapted at all (``none`` = the unadapted model, 0 steps);
- ``mask``: where the occlusion mask m_{j,n} comes from: ``None`` (no mask), ``"pred"`` (the proposal's depth
  test on the predicted pointmaps, ``adapt.occlusion.occlusion_mask``) or ``"gt"`` (oracle: ground-truth
  visibility, synthetic clips only);
- ``mask_terms``: the loss terms whose used entries the mask restricts (of ``ROBUST_TERMS``: L_traj, L_align);
- ``sigma``: where σ² comes from: ``None`` (plain losses), ``"head"`` (the log σ² head) or ``"conf"``
  (σ² := 1/C from the confidence head);
- ``sigma_terms``: the terms replaced by the σ²-weighted ``occlusion.nll_loss``.

``adapt.losses.adaptation_losses`` reads these fields; the ablation's default rows and the command line's help
strings are generated from ``VARIANTS`` (add a row here and it appears in both).
"""

from __future__ import annotations

from dataclasses import dataclass

from st4r_lite.errors import InputError

__all__ = ["Variant", "VARIANTS", "ROBUST_TERMS", "MASK_SOURCES", "SIGMA_SOURCES", "get_variant", "variants_help"]

ROBUST_TERMS = ("traj", "align")   # the terms a mask or σ² can change (L_depth has no per-track entries)
MASK_SOURCES = ("pred", "gt")
SIGMA_SOURCES = ("head", "conf")


@dataclass(frozen=True)
class Variant:
    """One adaptation variant (a row of the ablation); see the module docstring for the fields."""

    name: str
    summary: str
    adapts: bool = True
    mask: str | None = None
    sigma: str | None = None
    mask_terms: tuple[str, ...] = ()
    sigma_terms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.mask in (None, *MASK_SOURCES), f"{self.name}: mask must be None or one of {MASK_SOURCES}"
        assert self.sigma in (None, *SIGMA_SOURCES), f"{self.name}: sigma must be None or one of {SIGMA_SOURCES}"
        assert set(self.mask_terms) <= set(ROBUST_TERMS) and set(self.sigma_terms) <= set(ROBUST_TERMS)
        assert bool(self.mask) == bool(self.mask_terms), f"{self.name}: a mask needs terms, terms need a mask"
        assert bool(self.sigma) == bool(self.sigma_terms), f"{self.name}: σ² needs terms, terms need a σ²"
        assert self.adapts or not (self.mask or self.sigma), f"{self.name}: a variant that does not adapt uses no loss"


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("none", "the unadapted model, 0 steps", adapts=False),
    Variant("baseline", "St4RTrack's adaptation losses"),
    Variant("mask", "baseline, occluded entries left out by the depth test", mask="pred", mask_terms=ROBUST_TERMS),
    Variant("sigma", "baseline with σ²-weighted L_traj and L_align, σ² from the log σ² head", sigma="head",
            sigma_terms=ROBUST_TERMS),
    Variant("robust", "mask + σ², the course's proposal", mask="pred", sigma="head", mask_terms=ROBUST_TERMS,
            sigma_terms=ROBUST_TERMS),
    Variant("oracle_mask", "baseline with ground-truth visibility as the mask, synthetic clips only", mask="gt",
            mask_terms=ROBUST_TERMS),
    Variant("conf_sigma", "mask + σ² := 1/C from the confidence head", mask="pred", sigma="conf",
            mask_terms=ROBUST_TERMS, sigma_terms=ROBUST_TERMS),
)}


def get_variant(name: str) -> Variant:
    """The variant called ``name``; an :class:`InputError` naming the known ones otherwise."""
    if name not in VARIANTS:
        raise InputError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def variants_help() -> str:
    """The variants for help strings: ``name = summary``, separated by semicolons."""
    return "; ".join(f"{v.name} = {v.summary}" for v in VARIANTS.values())
