"""Throughput and memory of a model preset: training pairs/s, inference pairs/s, peak memory.

Glossary: B pairs per step ("batch"), H W the preset's input size, S timed steps.

What is measured (``benchmark``), at the preset's own resolution ``config.img_size``, on random images and
random targets (speed does not depend on the data):
  - training: forward + backward + AdamW step (betas 0.9/0.95, weight decay 0.05) with the pretraining loss
    :class:`st4r_lite.train.losses.PretrainLoss` (DUSt3R confidence loss on both branches, dynamic reweighting on);
    pairs/s = B·S / time of S steps, after ``warmup`` untimed steps;
  - inference: ``torch.no_grad`` forward of B pairs, pairs/s likewise;
  - model FLOPs per pair (``torch.utils.flop_counter.FlopCounterMode`` over one training step and one inference
    step: matrix products, convolutions and attention) and, on a GPU whose bf16 dense peak is known
    (:data:`PEAK_BF16_FLOPS`, vendor datasheets), the model FLOP utilisation MFU = FLOPs per pair · pairs/s / peak.
    These steps run B *independent* pairs (two images encoded per pair); the FLOPs of a pair as pretraining runs it
    (``pretrain_flops_per_pair``: a clip's S pairs share the anchor's encoding) are counted on a rendered clip, for
    the MFU of a real run (its pairs/s from the training log). As usual for MFU every FLOP counts against the bf16
    peak, the float32 heads' too;
  - the world's rendering rate on the same device (``render_clips`` clips of ``render_frames`` frames at the
    preset's size, ``world.render.generate_clips``): in a pretraining run every step renders its clips first;
  - peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors only; reset before each phase); on CPU the
    process's peak resident set size from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (a high-water mark of the
    whole process since it started: Python, torch and the model included, never reset; so the training number
    usually also bounds inference). The baseline RSS before the model was built is reported beside it.
On CUDA both phases run under bf16 autocast (the heads in float32), as ``st4r-lite pretrain`` trains.
Timings on a shared machine vary by ±20 %; record the hardware with the numbers (``runtime.hardware_info``).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from st4r_lite.errors import InputError
from st4r_lite.model.config import get_config
from st4r_lite.model.network import build_model, count_parameters
from st4r_lite.model.pairs import PairRunner
from st4r_lite.train.loop import clip_pairs
from st4r_lite.train.losses import PairTargets, PretrainLoss
from st4r_lite.world.render import generate_clips

DEFAULT_BATCH = {"tiny": 8, "small": 4, "full": 2, "full_linear": 2}
# Dense bf16 tensor-core peak (FLOP/s, no sparsity) by a substring of torch.cuda.get_device_name, from the vendors'
# datasheets (SXM parts where there are several). The first match wins: "H100 PCIe" before "H100", "L40S" before
# "L40" before "L4".
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200 NVL", 835e12), ("H200", 989e12),
                   ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
                   ("A10G", 70e12), ("RTX 4090", 165e12), ("T4", 65e12))


def peak_bf16_flops(device: torch.device) -> float | None:
    """The datasheet's dense bf16 peak of a CUDA device (FLOP/s), None on a CPU or an unlisted GPU.

    (T4 has no bf16 tensor cores: its entry is the fp16 peak, the closest it has.)"""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def count_flops(fn, device: torch.device | str = "cpu") -> int:
    """FLOPs of one call of ``fn`` as torch's flop counter sees them (matrix products, convolutions, attention;
    forward and backward when ``fn`` runs both).

    The counter knows the GPU's fused attention kernels but not the CPU's, so on a CPU attention is counted through
    PyTorch's reference ("math") attention, the same products written out: the count does not depend on the device.
    """
    counter = FlopCounterMode(display=False)
    math_attention = sdpa_kernel(SDPBackend.MATH) if torch.device(device).type == "cpu" else nullcontext()
    with counter, math_attention:
        fn()
    return int(counter.get_total_flops())


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
    render_clips: int = 2,
    render_frames: int = 8,
) -> dict[str, Any]:
    """Measure one preset on one device; returns a flat dict of numbers and settings (JSON-able).

    preset: a :data:`~st4r_lite.model.config.PRESETS` name; steps: timed steps per phase (>= 1); batch: pairs per
    step (default :data:`DEFAULT_BATCH`); warmup: untimed steps first (allocator, kernels, caches);
    render_clips, render_frames: the world's clips timed per step (0 clips = no rendering measured).
    Keys: ``train_pairs_per_s``, ``train_step_s``, ``infer_pairs_per_s``, ``infer_step_s``,
    ``train_flops_per_pair``, ``infer_flops_per_pair``, ``train_mfu``, ``infer_mfu`` (None without a known peak),
    ``render_clips_per_s``, ``train_peak_mem_bytes``, ``infer_peak_mem_bytes``, ``memory_method``, ``loss``,
    ``params`` ...
    """
    if steps < 1 or warmup < 0 or render_clips < 0 or render_frames < 2:
        raise InputError(f"steps must be >= 1, warmup >= 0, render_clips >= 0 and render_frames >= 2, got "
                         f"steps={steps}, warmup={warmup}, render_clips={render_clips}, render_frames={render_frames}")
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
    amp = device.type == "cuda"  # bf16 autocast as in pretraining (the heads switch it off for themselves)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            pred = model(img1, img2)
        terms = loss_fn(pred, targets)
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
    train_flops = count_flops(train_step, device)
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
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            model(img1, img2)

    timed(infer_step, warmup)
    infer_flops = count_flops(infer_step, device)
    infer_s = timed(infer_step, steps)
    infer_mem = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss_bytes()
    render_s, pretrain_flops = None, None
    if render_clips:
        def render_step() -> None:
            generate_clips(render_clips, frames=render_frames, height=H, width=W, seed=seed, device=device)
        timed(render_step, min(warmup, 1))
        render_s = timed(render_step, steps)
        clip = generate_clips(render_clips, frames=render_frames, height=H, width=W, seed=seed, device=device)
        pretrain_flops = count_flops(lambda: pretrain_step(model, clip, amp), device) / (render_clips * render_frames)
    peak = peak_bf16_flops(device)
    train_pps, infer_pps = B * steps / train_s, B * steps / infer_s
    return {
        "preset": cfg.name, "device": str(device), "img_size": list(cfg.img_size), "batch": B, "steps": steps,
        "warmup": warmup, "params": count_parameters(model),
        "train_pairs_per_s": train_pps, "train_step_s": train_s / steps,
        "infer_pairs_per_s": infer_pps, "infer_step_s": infer_s / steps,
        "train_flops_per_pair": train_flops / B, "infer_flops_per_pair": infer_flops / B,
        "peak_bf16_flops": peak, "amp": "bf16 autocast, heads float32" if amp else "float32",
        "train_mfu": train_flops / B * train_pps / peak if peak else None,
        "infer_mfu": infer_flops / B * infer_pps / peak if peak else None,
        "render_clips": render_clips, "render_frames": render_frames,
        "render_clips_per_s": render_clips * steps / render_s if render_s else None,
        "pretrain_flops_per_pair": pretrain_flops,
        "train_peak_mem_bytes": train_mem, "infer_peak_mem_bytes": infer_mem,
        "baseline_rss_bytes": rss_before if device.type == "cpu" else None,
        "memory_method": ("torch.cuda.max_memory_allocated (tensors only, reset per phase)" if device.type == "cuda"
                          else "resource.getrusage(RUSAGE_SELF).ru_maxrss: whole-process peak RSS, never reset"),
        "loss": "st4r_lite.train.losses.PretrainLoss (confidence loss, both branches, dynamic reweighting)",
        "optimizer": "AdamW lr 1e-4 betas (0.9, 0.95) wd 0.05 (none on biases/norms)",
        "load_avg_1min_before": load_before, "torch_threads": torch.get_num_threads(),
        "final_loss": last_loss, "finite": bool(torch.isfinite(torch.tensor(last_loss))),
    }


def pretrain_step(model, clip, amp: bool) -> None:
    """Forward and backward of one pretraining step on ``clip`` as ``st4r-lite pretrain`` runs it: its S pairs
    (0, k) through ``PairRunner`` (each frame encoded once, the anchor once per clip), both branches' loss."""
    frames, targets = clip_pairs(clip)
    device = next(model.parameters()).device
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        pred = PairRunner(model)(frames)
    PretrainLoss()(pred, targets, frames=frames.shape[1]).total.backward()
    model.zero_grad(set_to_none=True)


def format_result(r: dict[str, Any]) -> str:
    """One human-readable line per result."""
    mb = 2**20
    mem = [r[k] / mb if r[k] is not None else float("nan") for k in ("train_peak_mem_bytes", "infer_peak_mem_bytes")]
    mfu = f", MFU {100 * r['train_mfu']:.1f} %" if r.get("train_mfu") is not None else ""
    render = (f"world {r['render_clips_per_s']:.1f} clips/s of {r['render_frames']} frames | "
              if r.get("render_clips_per_s") else "")
    return (f"{r['preset']:>11} on {r['device']}: {r['img_size'][0]}x{r['img_size'][1]}, batch {r['batch']}, "
            f"{r['params'] / 1e6:.1f} M params | train {r['train_pairs_per_s']:.2f} pairs/s "
            f"({r['train_step_s']:.2f} s/step, {r['train_flops_per_pair'] / 1e9:.0f} GFLOP/pair{mfu}) | inference "
            f"{r['infer_pairs_per_s']:.2f} pairs/s | {render}peak memory train {mem[0]:.0f} MiB, inference "
            f"{mem[1]:.0f} MiB")


__all__ = ["benchmark", "format_result", "DEFAULT_BATCH"]
