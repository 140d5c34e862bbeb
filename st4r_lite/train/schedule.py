"""Optimisation schedule of pretraining (docs/method.md §4): AdamW parameter groups, warm-up + cosine, frame-gap curriculum.

Dimension letters: none (scalars per step). ``step`` counts optimiser steps from 0.

- Parameter groups: weight decay on matrices / conv kernels only; none on norms, biases and any other 1-D
  parameter (decaying a LayerNorm gain towards 0 or a bias towards 0 has no regularising meaning).
- Learning rate: linear warm-up from 0 to lr over ``warmup`` steps, then cosine decay to ``min_ratio · lr``:
      factor(s) = (s + 1) / warmup                                         for s < warmup
      factor(s) = m + (1 − m) · ½ (1 + cos(π · (s − warmup) / (total − warmup)))   otherwise.
- Frame-gap curriculum (short to long gaps): the largest gap allowed at step s grows linearly from 1 to
  ``max_gap`` over the first ``ramp`` fraction of training; each step draws its gap uniformly in
  [1, that largest gap] from a generator seeded by (seed, step, rank), so the curriculum needs no saved state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FAST_PREFIXES = ("pixel_refine", "match_track")  # modules that a fine-tune may add from scratch


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                 fast_prefix: tuple[str, ...] = FAST_PREFIXES, fast_mult: float = 1.0) -> list[dict]:
    """AdamW groups of the trainable parameters: decay for ≥ 2-D tensors, none for 1-D (norms, biases).

    Frozen parameters (requires_grad False) are left out. With ``fast_mult`` ≠ 1 the parameters whose name starts
    with one of ``fast_prefix`` (a module added from scratch to pretrained weights) get their own two groups at
    ``lr · fast_mult``. Returns [{"params", "weight_decay"(, "lr")}, ...] (empty groups dropped).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
    if fast_mult <= 0 or (fast_mult != 1 and lr is None):
        raise ValueError(f"fast_mult must be > 0 and needs lr, got {fast_mult} and {lr}")
    groups: dict[tuple[bool, bool], list] = {(f, d): [] for f in (False, True) for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        groups[(fast_mult != 1 and name.startswith(fast_prefix), p.ndim >= 2)].append(p)
    out = []
    for (fast, decay), params in groups.items():
        if params:
            group = {"params": params, "weight_decay": weight_decay if decay else 0.0}
            if fast:
                group["lr"] = lr * fast_mult
            out.append(group)
    return out


class WarmupCosine:
    """Learning-rate factor of step s (see module docstring). A callable object so LambdaLR can save it."""

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float = 0.05) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be ≥ 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"warmup_steps must be in [0, {total_steps}], got {warmup_steps}")
        if not 0 <= min_ratio <= 1:
            raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
        self.total_steps, self.warmup_steps, self.min_ratio = total_steps, warmup_steps, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05, betas=(0.9, 0.95),
                   total_steps: int = 1, warmup_steps: int = 0, min_ratio: float = 0.05, fast_mult: float = 1.0
                   ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over :func:`param_groups` and its warm-up + cosine LambdaLR (step it once per optimiser step);
    ``fast_mult``: learning-rate multiplier of the heads' pixel refinement (see :func:`param_groups`)."""
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    opt = torch.optim.AdamW(param_groups(model, weight_decay, lr, fast_mult=fast_mult), lr=lr, betas=betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(total_steps, warmup_steps, min_ratio))
    return opt, sched


def max_frame_gap_at(step: int, total_steps: int, max_gap: float, ramp: float = 0.5) -> float:
    """Largest frame gap allowed at ``step``: 1 → max_gap linearly over the first ``ramp`` of training."""
    if max_gap < 1:
        raise ValueError(f"max_gap must be ≥ 1, got {max_gap}")
    if ramp <= 0:
        return float(max_gap)
    progress = min(step / max(ramp * total_steps, 1.0), 1.0)
    return 1.0 + (max_gap - 1.0) * progress


def frame_gap_at(step: int, total_steps: int, max_gap: float, seed: int, rank: int = 0,
                 ramp: float = 0.5) -> float:
    """The frame gap of one step: uniform in [1, :func:`max_frame_gap_at`], drawn statelessly from
    (seed, step, rank), so resuming at any step reproduces it exactly."""
    hi = max_frame_gap_at(step, total_steps, max_gap, ramp)
    g = torch.Generator().manual_seed(((seed * 1_000_003 + step) * 1_009 + rank) % (2**63))
    u = float(torch.rand((), generator=g, dtype=torch.float64))
    return 1.0 + (hi - 1.0) * u
