"""The adaptation variants (the ablation's rows, docs/method.md §6): which terms use the occlusion mask and which σ²."""

from __future__ import annotations

__all__ = ["VARIANTS"]

# variant -> (mask: None | "pred" (the proposal's occlusion mask) | "gt" (oracle visibility),
#             sigma: None | "head" (log σ² head) | "conf" (σ² := 1/C))
VARIANTS: dict[str, tuple[str | None, str | None]] = {
    "none": (None, None), "baseline": (None, None), "mask": ("pred", None), "sigma": (None, "head"),
    "robust": ("pred", "head"), "oracle_mask": ("gt", None), "conf_sigma": ("pred", "conf"),
}
