"""Our forward against the reference DUSt3R code, side by side, same weights: time, peak memory, agreement.

Glossary: B pairs per forward, H W input size, R timed repeats.

``st4r-lite bench --compare-reference PATH`` (or :func:`compare_reference`) needs a checkout of the reference
implementation at PATH: the public naver/dust3r repository with its ``croco`` submodule initialised
(``git clone --recursive https://github.com/naver/dust3r``). Nothing of it is copied into this package; it is
imported from PATH at run time. The reference network (``dust3r.model.AsymmetricCroCo3DStereo``) is built with
the constructor arguments that describe our preset (:func:`reference_kwargs`) and our randomly initialised
state_dict is loaded into it key for key (``strict=True``), so both compute the same function:
``max_abs_diff`` reports how closely they agree.

What is measured, per network, on the same random images:
  - time: wall-clock seconds of one ``torch.no_grad`` forward of B pairs, median over R repeats after
    ``warmup`` untimed ones; ours and the reference alternate, so a change in machine load hits both;
  - memory: the peak of live tensor bytes allocated during one forward (:class:`TensorMemoryTracker`: every
    aten output whose storage is new, freed when its storage dies); weights and inputs are excluded. This is an
    exact, allocator-independent count (the same on CPU and GPU), not the process RSS.
The reference imports ``huggingface_hub`` only for its Hub mixin; where that package is missing a stand-in
with the same name is registered so that the import succeeds (it is not used by the forward).
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
import types
import weakref
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from st4r_lite.errors import InputError
from st4r_lite.model.config import ModelConfig, get_config
from st4r_lite.model.network import build_model


class TensorMemoryTracker(TorchDispatchMode):
    """Count the bytes of tensor storages created inside the ``with`` block; ``peak_bytes`` is their live maximum.

    A storage is new when an op's output does not share it with one of the op's inputs (views and in-place
    results are not new allocations). It stops counting when its storage is freed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        if key in self._live:
            self._live.discard(key)
            self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if key in inputs or key in self._live or nbytes == 0:
                continue
            self._live.add(key)
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(storage, self._release, key, nbytes)
        return out


def peak_forward_bytes(forward: Callable[[], Any]) -> int:
    """Peak live tensor bytes allocated while ``forward()`` runs (its result is dropped inside the count)."""
    with torch.no_grad(), TensorMemoryTracker() as tracker:
        out = forward()
        del out
    return tracker.peak_bytes


def reference_kwargs(cfg: ModelConfig, img_hw: tuple[int, int]) -> dict[str, Any]:
    """Constructor arguments of the reference ``AsymmetricCroCo3DStereo`` that describe ``cfg`` at size ``img_hw``."""
    if cfg.head_type == "dpt":  # the reference fixes the DPT sizes; ours must be the released ones
        dd = cfg.dec_depth
        released = (256, 128, (dd * 2 // 4, dd * 3 // 4, dd))
        if (cfg.dpt_feature_dim, cfg.dpt_last_dim, tuple(cfg.dpt_hooks[1:])) != released or cfg.dpt_hooks[0] != 0:
            raise InputError(f"preset {cfg.name!r} has DPT sizes the reference code cannot build (it fixes feature "
                             f"256, last 128, hooks [0, {dd // 2}, {dd * 3 // 4}, {dd}]); compare 'full' or 'full_linear'")
    if cfg.rope_base != int(cfg.rope_base):
        raise InputError(f"the reference names RoPE by an integer base, got {cfg.rope_base}")
    return dict(
        output_mode="pts3d", head_type=cfg.head_type, depth_mode=("exp", -float("inf"), float("inf")),
        conf_mode=("exp", 1, float("inf")), landscape_only=False, patch_embed_cls="PatchEmbedDust3R",
        img_size=tuple(img_hw), patch_size=cfg.patch_size, pos_embed=f"RoPE{int(cfg.rope_base)}",
        enc_embed_dim=cfg.enc_dim, enc_depth=cfg.enc_depth, enc_num_heads=cfg.enc_heads,
        dec_embed_dim=cfg.dec_dim, dec_depth=cfg.dec_depth, dec_num_heads=cfg.dec_heads, mlp_ratio=cfg.mlp_ratio,
    )


def _ensure_hub_module() -> bool:
    """Register a stand-in ``huggingface_hub`` when the real one is missing; True when the stand-in was used."""
    try:
        importlib.import_module("huggingface_hub")
        return False
    except ImportError:
        pass

    class PyTorchModelHubMixin:  # accepts the class keywords the reference passes, does nothing
        def __init_subclass__(cls, **kwargs: Any) -> None:
            super().__init_subclass__()

    stand_in = types.ModuleType("huggingface_hub")
    stand_in.__version__ = "0.22.0"
    stand_in.PyTorchModelHubMixin = PyTorchModelHubMixin
    sys.modules["huggingface_hub"] = stand_in
    return True


def load_reference_class(path: str | Path) -> tuple[type, bool]:
    """``dust3r.model.AsymmetricCroCo3DStereo`` imported from the checkout at ``path``; (class, hub stand-in used)."""
    root = Path(path).resolve()
    if not (root / "dust3r" / "model.py").is_file():
        raise InputError(f"{path}: no dust3r/model.py there; give the root of a naver/dust3r checkout "
                         "(git clone --recursive https://github.com/naver/dust3r)")
    stand_in = _ensure_hub_module()
    for name in [n for n in sys.modules if n == "dust3r" or n.startswith("dust3r.")]:
        del sys.modules[name]  # a previously imported checkout must not answer for this one
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("dust3r.model")
    except ImportError as err:
        raise InputError(f"{path}: importing the reference failed ({err}); is the croco submodule initialised "
                         "(git submodule update --init)?") from None
    finally:
        sys.path.remove(str(root))
    return module.AsymmetricCroCo3DStereo, stand_in


def _reference_views(img1: torch.Tensor, img2: torch.Tensor) -> tuple[dict, dict]:
    B, _, H, W = img1.shape
    shape = torch.tensor([[H, W]] * B)
    return ({"img": img1, "true_shape": shape, "instance": [f"a{i}" for i in range(B)]},
            {"img": img2, "true_shape": shape.clone(), "instance": [f"b{i}" for i in range(B)]})


def compare_reference(
    path: str | Path, preset: str | ModelConfig = "full", img_hw: tuple[int, int] | None = None, batch: int = 1,
    repeats: int = 3, warmup: int = 1, seed: int = 0, device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Time and measure our no-grad forward and the reference's on the same weights and images (JSON-able dict).

    img_hw: (H, W) multiples of the patch size (default: the preset's). Keys: ``ours_forward_s``,
    ``reference_forward_s``, ``time_ratio`` (ours / reference), ``ours_peak_bytes``, ``reference_peak_bytes``,
    ``memory_ratio``, ``max_abs_diff`` (over both pointmaps and confidences) and the settings.
    """
    if repeats < 1 or warmup < 0 or batch < 1:
        raise InputError(f"need repeats >= 1, warmup >= 0, batch >= 1; got {repeats}, {warmup}, {batch}")
    cfg = get_config(preset)
    H, W = img_hw or cfg.img_size
    if H % cfg.patch_size or W % cfg.patch_size:
        raise InputError(f"size {H}x{W} is not a multiple of the patch size {cfg.patch_size}")
    device = torch.device(device)
    ref_cls, stand_in = load_reference_class(path)
    ours = build_model(cfg, device=device, seed=seed).eval()
    ref = ref_cls(**reference_kwargs(cfg, (H, W))).to(device).eval()
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("sigma_head")}
    ref.load_state_dict(state, strict=True)
    g = torch.Generator().manual_seed(seed)
    img1, img2 = ((torch.rand(batch, 3, H, W, generator=g) * 2 - 1).to(device) for _ in range(2))
    views = _reference_views(img1, img2)

    def run_ours():
        return ours(img1, img2)

    def run_ref():
        return ref(*views)

    def once(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    with torch.no_grad():
        a, (r1, r2) = run_ours(), run_ref()
    diff = max(float((x - y).abs().max()) for x, y in (
        (a.track, r1["pts3d"]), (a.conf_track, r1["conf"]), (a.recon, r2["pts3d_in_other_view"]),
        (a.conf_recon, r2["conf"])))
    del a, r1, r2
    for _ in range(warmup):
        once(run_ours), once(run_ref)
    times_ours, times_ref = [], []
    for _ in range(repeats):  # alternate so that load changes hit both
        times_ours.append(once(run_ours))
        times_ref.append(once(run_ref))
    mem_ours, mem_ref = peak_forward_bytes(run_ours), peak_forward_bytes(run_ref)
    t_ours, t_ref = statistics.median(times_ours), statistics.median(times_ref)
    return {
        "preset": cfg.name, "img_size": [H, W], "batch": batch, "repeats": repeats, "warmup": warmup,
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "ours_forward_s": t_ours, "reference_forward_s": t_ref, "time_ratio": t_ours / t_ref,
        "ours_times_s": times_ours, "reference_times_s": times_ref,
        "ours_peak_bytes": mem_ours, "reference_peak_bytes": mem_ref, "memory_ratio": mem_ours / mem_ref,
        "max_abs_diff": diff, "reference_path": str(Path(path).resolve()), "hub_stand_in": stand_in,
        "memory_method": "peak live bytes of tensors allocated during one no-grad forward (TensorMemoryTracker)",
        "time_method": "median wall-clock of no-grad forwards, ours and reference alternating",
    }


def format_comparison(r: dict[str, Any]) -> str:
    """One human-readable line."""
    mb = 2**20
    return (f"{r['preset']} {r['img_size'][0]}x{r['img_size'][1]} batch {r['batch']} on {r['device']}: ours "
            f"{r['ours_forward_s']:.2f} s, reference {r['reference_forward_s']:.2f} s (ratio {r['time_ratio']:.2f}) | "
            f"peak tensors ours {r['ours_peak_bytes'] / mb:.0f} MiB, reference {r['reference_peak_bytes'] / mb:.0f} MiB "
            f"(ratio {r['memory_ratio']:.2f}) | max |diff| {r['max_abs_diff']:.1e}")


__all__ = ["TensorMemoryTracker", "peak_forward_bytes", "reference_kwargs", "load_reference_class",
           "compare_reference", "format_comparison"]
