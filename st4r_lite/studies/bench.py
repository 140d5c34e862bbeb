"""Throughput and memory of a model preset: training pairs/s, inference pairs/s, peak memory.

Glossary: B pairs per step ("batch"), H W the preset's input size, S timed steps.

What is measured (``benchmark``), at the preset's own resolution ``config.img_size``, on random images and
random targets (speed does not depend on the data):
  - training: forward + backward + AdamW step (betas 0.9/0.95, weight decay 0.05) with the pretraining loss
    :class:`st4r_lite.train.losses.PretrainLoss` (DUSt3R confidence loss on both branches, dynamic reweighting on);
    pairs/s = B·S / time of S steps, after ``warmup`` untimed steps;
  - inference: ``torch.no_grad`` forward of B pairs, pairs/s likewise;
  - peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors only; reset before each phase); on CPU the
    process's peak resident set size from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (a high-water mark of the
    whole process since it started: Python, torch and the model included, never reset; so the training number
    usually also bounds inference). The baseline RSS before the model was built is reported beside it.
Timings on a shared machine vary by ±20 %; record the hardware with the numbers (``runtime.hardware_info``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch

from st4r_lite.errors import InputError
from st4r_lite.model.config import get_config
from st4r_lite.model.network import build_model, count_parameters
from st4r_lite.train.losses import PairTargets, PretrainLoss

DEFAULT_BATCH = {"tiny": 8, "small": 4, "full": 2, "full_linear": 2}


def _peak_rss_bytes() -> int | None:
    """Peak resident set size of this process in bytes (Linux/macOS), None where unavailable."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux kilobytes


def _random_batch(B: int, H: int, W: int, device: torch.device, seed: int):
    """Random images in [-1, 1] and plausible targets (points in front of the camera, 20 % dynamic)."""
    g = torch.Generator().manual_seed(seed)
    img1, img2 = (torch.rand(B, 3, H, W, generator=g) * 2 - 1 for _ in range(2))
    track, recon = (torch.randn(B, H, W, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 3.0]) for _ in range(2))
    valid = torch.ones(B, H, W, dtype=torch.bool)
    dynamic = torch.rand(B, H, W, generator=g) < 0.2
    targets = PairTargets(track, recon, valid, valid.clone(), dynamic)
    return img1.to(device), img2.to(device), targets.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    preset: str = "tiny",
    device: torch.device | str = "cpu",
    steps: int = 5,
    batch: int | None = None,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure one preset on one device; returns a flat dict of numbers and settings (JSON-able).

    preset: a :data:`~st4r_lite.model.config.PRESETS` name; steps: timed steps per phase (>= 1); batch: pairs per
    step (default :data:`DEFAULT_BATCH`); warmup: untimed steps first (allocator, kernels, caches).
    Keys: ``train_pairs_per_s``, ``train_step_s``, ``infer_pairs_per_s``, ``infer_step_s``,
    ``train_peak_mem_bytes``, ``infer_peak_mem_bytes``, ``memory_method``, ``loss``, ``params`` ...
    """
    if steps < 1 or warmup < 0:
        raise InputError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    cfg = get_config(preset)
    B = DEFAULT_BATCH.get(cfg.name, 2) if batch is None else batch
    if B < 1:
        raise InputError(f"batch must be >= 1, got {B}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU; use --device cpu")
    H, W = cfg.img_size
    rss_before = _peak_rss_bytes()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    model = build_model(cfg, device=device, seed=seed)
    img1, img2, targets = _random_batch(B, H, W, device, seed)
    loss_fn = PretrainLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "mask_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "mask_token" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95))

    losses: list[float] = []

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        terms = loss_fn(model(img1, img2), targets)
        terms.total.backward()
        opt.step()
        losses.append(float(terms.total.detach()))

    def timed(fn, n: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        _sync(device)
        return time.perf_counter() - t0

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    timed(train_step, warmup)
    train_s = timed(train_step, steps)
    last_loss = losses[-1]
    train_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss_bytes()

    opt.zero_grad(set_to_none=True)
    opt.state.clear()  # free the AdamW moments before measuring inference
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model.eval()

    def infer_step() -> None:
        with torch.no_grad():
            model(img1, img2)

    timed(infer_step, warmup)
    infer_s = timed(infer_step, steps)
    infer_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss_bytes()
    return {
        "preset": cfg.name, "device": str(device), "img_size": list(cfg.img_size), "batch": B, "steps": steps,
        "warmup": warmup, "params": count_parameters(model),
        "train_pairs_per_s": B * steps / train_s, "train_step_s": train_s / steps,
        "infer_pairs_per_s": B * steps / infer_s, "infer_step_s": infer_s / steps,
        "train_peak_mem_bytes": train_mem, "infer_peak_mem_bytes": infer_mem,
        "baseline_rss_bytes": rss_before if device.type == "cpu" else None,
        "memory_method": ("torch.cuda.max_memory_allocated (tensors only, reset per phase)" if device.type == "cuda"
                          else "resource.getrusage(RUSAGE_SELF).ru_maxrss: whole-process peak RSS, never reset"),
        "loss": "st4r_lite.train.losses.PretrainLoss (confidence loss, both branches, dynamic reweighting)",
        "optimizer": "AdamW lr 1e-4 betas (0.9, 0.95) wd 0.05 (none on biases/norms)",
        "load_avg_1min_before": load_before, "torch_threads": torch.get_num_threads(),
        "final_loss": last_loss, "finite": bool(torch.isfinite(torch.tensor(last_loss))),
    }


def format_result(r: dict[str, Any]) -> str:
    """One human-readable line per result."""
    mb = 2**20
    mem = [r[k] / mb if r[k] is not None else float("nan") for k in ("train_peak_mem_bytes", "infer_peak_mem_bytes")]
    return (f"{r['preset']:>11} on {r['device']}: {r['img_size'][0]}x{r['img_size'][1]}, batch {r['batch']}, "
            f"{r['params'] / 1e6:.1f} M params | train {r['train_pairs_per_s']:.2f} pairs/s "
            f"({r['train_step_s']:.2f} s/step) | inference {r['infer_pairs_per_s']:.2f} pairs/s | "
            f"peak memory train {mem[0]:.0f} MiB, inference {mem[1]:.0f} MiB")


__all__ = ["benchmark", "format_result", "DEFAULT_BATCH"]
