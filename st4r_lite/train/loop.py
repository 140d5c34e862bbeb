"""Pretraining on the synthetic 4D world (docs/method.md §4): pairs (anchor 0, k) of on-the-fly clips, resumable, DDP.

Dimension letters: B clips per step (per rank), S frames per clip (= pairs per clip, the self-pair included),
H, W image rows / columns.

One step: draw B clips of S frames with :func:`st4r_lite.world.render.generate_clips` (seeds from a training range
that never overlaps the benchmark or held-out seeds; each rank its own clips), make the B·S pairs
(anchor 0, k), k = 0..S-1, with targets in the anchor camera (= world) frame

    track target = clip.track_world[:, k],   recon target = clip.points_world[:, k],   valid = finite,

and minimise :class:`st4r_lite.train.losses.PretrainLoss` with AdamW (β = 0.9, 0.95; weight decay 0.05 except
norms / biases), warm-up + cosine learning rate, gradient clipping at 0.8 and bf16 autocast on CUDA. Frame
gaps follow a short-to-long curriculum (:mod:`st4r_lite.train.schedule`). The pairs run through
``model.pairs.PairRunner``: the anchor image is encoded once per clip and shared by its S pairs (same result as the
plain pair forward, fewer encoder passes).

The training checkpoint (written atomically) holds model, optimiser, scheduler, step, clip-seed counter and
torch RNG states, so that N steps == N/2 steps + resume + N/2 steps, bit for bit on CPU. ``export_weights``
writes the small shippable file (weights only, float16 by default) that ``checkpoint.load_model`` reads.

Making the tiny checkpoint (one command; ``runs/`` is git-ignored):

    st4r-lite pretrain --preset tiny --steps 1200 --batch 2 --frames 4 --lr 5e-4 --warmup 60 \
        --eval-every 200 --save-every 100 --out runs/tiny_train.pt \
      && st4r-lite export runs/tiny_train.pt data/tiny.pt --eval data/tiny_eval.json

Measured scale (2-core CPU shared with other jobs, 1 thread): ~35 min, 9 600 pairs, 2.6-6 pairs/s. That
budget takes the tiny model just past the "average room" stage (held-out recon APD 15.6 % vs 10.7 % for a
constant mean pointmap); its anchor reconstruction errs by ~2 m, far more than objects move (~0.4 m), so
even the true motion added to it (``heldout.oracle_motion_tracks``) does not beat the static baseline.
A second run (``--steps 1000 --batch 4 --warmup 50``, 16 000 pairs, 28 min at 9.7 pairs/s) reached recon APD
20.2 % and dynamic tracking APD 20.8 % vs 20.0 % static (oracle motion 21.0 %): the same picture.
Tracking motion needs far more pairs (GPU; ``--device cuda`` uses bf16 autocast, heads in float32).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from einops import rearrange, repeat
from torch import nn
from tqdm.auto import tqdm

from st4r_lite.errors import InputError
from st4r_lite.model import resolve
from st4r_lite.model.checkpoint import save_checkpoint
from st4r_lite.model.config import ModelConfig
from st4r_lite.model.network import St4RTrack, build_model
from st4r_lite.model.pairs import PairRunner
from st4r_lite.runtime import atomic_write, command_line
from st4r_lite.train import heldout
from st4r_lite.train.checkpoint import TRAIN_FORMAT, load_train_checkpoint
from st4r_lite.train.config import TrainConfig
from st4r_lite.train.correspondence import (
    AttentionRecorder,
    match_flow_loss,
    match_gate_loss,
    match_head_loss,
    match_loss,
    patch_correspondence,
    token_dynamic,
)
from st4r_lite.train.distributed import DistEnv, all_reduce_mean, barrier, cleanup, init_distributed
from st4r_lite.train.losses import PairTargets, PretrainLoss
from st4r_lite.train.schedule import frame_gap_at, make_optimizer
from st4r_lite.world.render import generate_clips, project_tracks

# Clip seeds: training clips use TRAIN_SEED_BASE + seed · TRAIN_SEED_STRIDE + counter. The named benchmarks
# (worldtrack.BENCHMARKS) and the held-out set (heldout.HELDOUT_SEED) use seeds below 10^6.
TRAIN_SEED_BASE = 10_000_000
TRAIN_SEED_STRIDE = 1_000_000_000
def clip_pairs(clip) -> tuple[torch.Tensor, PairTargets]:
    """Network inputs and targets of the pairs (0, k), k = 0..S-1, of a Clip.

    Returns frames (B, S, 3, H, W) in [-1, 1] (frame 0 is the anchor; ``model.pairs.PairRunner`` runs them) and
    PairTargets with B·S rows in (b, k) order: track = track_world[:, k], recon = points_world[:, k], valid = finite, dynamic =
    track_dynamic (the anchor pixel is on a moving object).
    """
    img = clip.rgb * 2 - 1
    S = img.shape[1]
    flat = lambda x: rearrange(x, "b s ... -> (b s) ...")  # noqa: E731
    track, recon = flat(clip.track_world), flat(clip.points_world)
    targets = PairTargets(
        track=track, recon=recon,
        valid_track=torch.isfinite(track).all(-1), valid_recon=torch.isfinite(recon).all(-1),
        dynamic=flat(repeat(clip.track_dynamic, "b h w -> b s h w", s=S)), on_object=flat(clip.object_id > 0),
    )
    return img, targets


def clip_seed(cfg: TrainConfig, counter: int, rank: int) -> int:
    """First clip seed of this rank's batch, where ``counter`` clips were drawn (over all ranks) before."""
    return TRAIN_SEED_BASE + cfg.seed * TRAIN_SEED_STRIDE + counter + rank * cfg.batch


def weights_of(spec: str) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """(state dict, config) of a training checkpoint (the model as trained) or of anything ``model.resolve.load``
    reads (an exported model file, a released name, ``fresh:PRESET``)."""
    path = Path(spec)
    blob = None
    if path.is_file():
        try:
            blob = load_train_checkpoint(path)
        except InputError:
            pass                         # not a training checkpoint: an exported model file
    if blob is not None:
        return blob["model"], ModelConfig.from_dict(blob["config"])
    source = resolve.load(spec, log=lambda s: None)
    return source.state_dict(), source.config


def initial_weights(spec: str, model: St4RTrack) -> dict[str, torch.Tensor]:
    """The state dict that ``TrainConfig.init`` names, checked against ``model``'s architecture: the model of a
    training checkpoint (float32, as trained) or of anything ``model.resolve.load`` reads (float32).

    The differences allowed: an init without the heads' pixel refinement (``ModelConfig.pixel_refine``) or the
    matched tracking (``ModelConfig.match_track``) for a model with one: the added module keeps the model's fresh
    weights (the refinement outputs exactly zero, the matched tracking's gate starts nearly closed)."""
    state, config = weights_of(spec)
    added = {"pixel_refine": ("pixel_refine",), "match_track": ("match_track", "match_register", "match_pixel",
                                                                   "match_refine")}
    for field, settings in added.items():
        if not getattr(config, field) and getattr(model.config, field) > 0:
            config = config.with_(**{f: getattr(model.config, f) for f in settings})
            state = {**{k: v for k, v in model.state_dict().items() if k.startswith(field)}, **state}
    if config != model.config:
        raise InputError(f"--init {spec!r} is a {config.name!r} model (pixel_refine {config.pixel_refine}, match_track "
                         f"{config.match_track}) but the run trains {model.config.name!r} (pixel_refine "
                         f"{model.config.pixel_refine}, match_track {model.config.match_track}): pass the same "
                         "--preset, and the init's --pixel-refine / --match-track widths (or none, to add them)")
    missing = set(model.state_dict()) ^ set(state)
    if missing:
        raise InputError(f"--init {spec!r} does not match the model's parameters ({len(missing)} names differ, "
                         f"e.g. {sorted(missing)[:3]}); pass the same --preset")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def matched_tracking_terms(terms, head_out: list[tuple], clip, targets: PairTargets, cfg: TrainConfig, patch: int):
    """``terms`` + w_head · L_match_head (+ the looked-up pixels' ``match_flow_loss`` with ``match_pixel``)
    + w_gate · ``match_gate_loss``, from the matched tracking's (logits, uv, gate) of one step's forward (in the
    order of the pairs, ``head_out``); every term is defined in ``train.correspondence``."""
    target, visible, _ = (rearrange(x, "b s n -> (b s) n") for x in patch_correspondence(clip, patch))
    dyn = repeat(token_dynamic(clip, patch), "b n -> (b s) n", s=cfg.frames)
    match = match_head_loss(torch.cat([o[0] for o in head_out]), target, visible, dyn)
    flat = lambda x: rearrange(x, "b s ... -> (b s) ...")  # noqa: E731
    if cfg.match_pixel:   # + the looked-up pixels against the true ones
        uv_true, _, inside = project_tracks(clip)
        match = match + match_flow_loss(torch.cat([o[1] for o in head_out]), flat(uv_true),
                                        flat(inside & clip.track_visible), targets.dynamic, patch)
    terms = replace(terms, total=terms.total + cfg.match_head_weight * match, match_head=match.detach())
    if cfg.match_gate_weight:   # + the gate taught to open on moving objects
        gate = match_gate_loss(torch.cat([o[2] for o in head_out]), targets.dynamic, flat(clip.track_visible))
        terms = replace(terms, total=terms.total + cfg.match_gate_weight * gate, match_gate=gate.detach())
    return terms


def trainable_model(model: nn.Module, train_only: list[str] | tuple[str, ...] = ()) -> nn.Module:
    """Freeze what the pretraining loss never reaches (CroCo's mask token, the σ² heads, adapted at test
    time), so every trainable parameter gets a gradient (DDP requires it); with ``train_only`` (module-name
    prefixes, ``TrainConfig.train_only``) also everything outside those modules."""
    prefixes = tuple(train_only)
    if prefixes and not any(n.startswith(prefixes) for n, _ in model.named_parameters()):
        raise InputError(f"--train-only {list(prefixes)} matches no parameter of this model; its top-level modules "
                         f"are {sorted({n.split('.')[0] for n, _ in model.named_parameters()})}")
    for name, p in model.named_parameters():
        if name == "mask_token" or name.startswith("sigma_head") or (prefixes and not name.startswith(prefixes)):
            p.requires_grad_(False)
    return model


@dataclass
class TrainState:
    """What a training checkpoint restores (besides the model, optimiser and scheduler states)."""

    step: int = 0
    clip_counter: int = 0
    elapsed_s: float = 0.0


def save_train_checkpoint(path: str | Path, model: nn.Module, opt, sched, state: TrainState,
                          cfg: TrainConfig, device: torch.device) -> None:
    """Write the full training state atomically (torch.save of plain containers and tensors)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    blob = {
        "format": TRAIN_FORMAT, "config": model.config.to_dict(), "model": model.state_dict(),
        "train_config": asdict(cfg), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "state": asdict(state), "rng": rng, "meta": run_meta(device),
    }
    with atomic_write(path) as f:
        torch.save(blob, f)


def run_meta(device: torch.device) -> dict:
    """Where and how the run was made (stored in checkpoints, copied into evaluation reports)."""
    hw = f"{platform.machine()} {platform.processor() or platform.system()}, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        hw = f"{torch.cuda.get_device_name(device)} (CUDA), " + hw
    return {"command": command_line(sys.argv),
            "hardware": hw, "torch": str(torch.__version__), "cpu_count": os.cpu_count()}


def export_weights(train_ckpt: str | Path, out: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write the shippable model file (weights only, cast to ``dtype``) from a training checkpoint."""
    blob = load_train_checkpoint(train_ckpt)
    model = St4RTrack(ModelConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["model"])
    model.to(dtype)
    save_checkpoint(out, model, step=blob["state"]["step"], train_config=blob["train_config"])
    return Path(out)


def _log(path: Path | None, record: dict) -> None:
    if path is not None:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def pretrain(cfg: TrainConfig, out: str | Path, *, resume: bool = False, device: str | None = None,
             log_path: str | Path | None = None, eval_every: int = 0, log_every: int = 10,
             save_every: int = 0, stop_at: int | None = None, progress: bool = True,
             final_eval: bool = True, eval_clips: int | None = None) -> dict:
    """Run (or resume) pretraining and write the training checkpoint to ``out``. Returns a summary dict.

    eval_every: evaluate on the held-out clips every that many steps (0 = only at the end);
    save_every: also checkpoint every that many steps (0 = only at the end); stop_at: stop after that step
    (the schedule still spans ``cfg.steps``; resume later with ``resume=True``); final_eval: evaluate at the
    last step (the summary's "eval"); eval_clips: number of held-out clips (default heldout.HELDOUT_CLIPS). The summary's "weights_digest" (sha256 of the parameters) lets
    processes of a DDP run check that they hold identical weights.
    """
    env = init_distributed(device)
    out, log_path = Path(out), (Path(log_path) if log_path else None)
    stop = cfg.steps if stop_at is None else min(int(stop_at), cfg.steps)
    devices = [env.device] if env.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):  # the caller's global RNG state is left untouched
            torch.manual_seed(cfg.seed)
            model = trainable_model(build_model(cfg.model_config()), cfg.train_only).to(env.device)
            if cfg.init and not resume:
                model.load_state_dict(initial_weights(cfg.init, model))
            opt, sched = make_optimizer(model, cfg.lr, cfg.weight_decay, total_steps=cfg.steps,
                                        warmup_steps=min(cfg.warmup, cfg.steps), min_ratio=cfg.min_lr_ratio,
                                        fast_mult=cfg.refine_lr_mult)
            state = TrainState()
            if resume:
                blob = load_train_checkpoint(out)
                saved = TrainConfig.from_dict(blob["train_config"])
                if saved != cfg:
                    diff = {k: (getattr(saved, k), getattr(cfg, k)) for k in asdict(cfg)
                            if getattr(saved, k) != getattr(cfg, k)}
                    raise InputError(f"--resume with different settings than the checkpoint (saved, asked): {diff}")
                model.load_state_dict(blob["model"])
                opt.load_state_dict(blob["optimizer"])
                sched.load_state_dict(blob["scheduler"])
                state = TrainState(**blob["state"])
                torch.set_rng_state(blob["rng"]["torch"])
                if "cuda" in blob["rng"] and env.device.type == "cuda":
                    torch.cuda.set_rng_state(blob["rng"]["cuda"], env.device)
            elif env.is_main and log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_path.write_text("")
            return _train_loop(cfg, model, opt, sched, state, env, out, log_path, stop, eval_every,
                               log_every, save_every, progress, final_eval, eval_clips, generate_clips, heldout)
    finally:
        cleanup(env)


def _train_loop(cfg, model, opt, sched, state, env: DistEnv, out, log_path, stop, eval_every, log_every,
                save_every, progress, final_eval, eval_clips, generate_clips, heldout) -> dict:
    H, W = model.config.img_size
    runner = PairRunner(model)   # a Module: DDP's gradient hooks need the wrapped module's forward
    if env.enabled:
        runner = nn.parallel.DistributedDataParallel(
            runner, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    loss_fn = PretrainLoss(track_weight=cfg.track_weight, recon_weight=cfg.recon_weight,
                           dynamic_factor=cfg.dynamic_factor or None, dynamic_regression=cfg.dynamic_regression,
                           motion_weight=cfg.motion_weight, object_regression=cfg.object_regression,
                           object_depth=cfg.object_depth)
    params = [p for p in model.parameters() if p.requires_grad]
    use_amp = env.device.type == "cuda"
    n_eval = heldout.HELDOUT_CLIPS if eval_clips is None else int(eval_clips)
    eval_clips = heldout.heldout_clips(model.config, num_clips=n_eval, device=env.device, shift=cfg.shift()) \
        if env.is_main and (eval_every or final_eval) else None
    bar = None
    if progress and env.is_main:
        bar = tqdm(total=stop, initial=state.step, desc="pretrain", unit="step", dynamic_ncols=True)
    window: dict[str, list[float]] = {}
    t_window, pairs_window, result = time.perf_counter(), 0, {}
    recorder, patch = (AttentionRecorder(model.dec_blocks) if cfg.match_weight else None), model.config.patch_size
    head_out: list[tuple] = []   # the matched tracking's (logits, uv, gate) of this step's forward (training only)
    hook = model.match_track.register_forward_hook(
        lambda _m, _a, out: head_out.append(out[1:]) if torch.is_grad_enabled() else None) \
        if cfg.match_head_weight else None
    model.train()
    while state.step < stop:
        t0 = time.perf_counter()
        gap = frame_gap_at(state.step, cfg.steps, cfg.max_frame_gap, cfg.seed, env.rank, cfg.gap_ramp)
        clip = generate_clips(cfg.batch, frames=cfg.frames, height=H, width=W, domain=cfg.domain,
                              seed=clip_seed(cfg, state.clip_counter, env.rank), frame_gap=gap,
                              device=env.device, shift=cfg.shift())
        frames, targets = clip_pairs(clip)
        with torch.autocast(device_type=env.device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = runner(frames)
        terms = loss_fn(pred, targets, frames=cfg.frames)
        if recorder is not None:   # + w · L_match on the attention this forward recorded
            target, visible, _ = (rearrange(x, "b s n -> (b s) n") for x in patch_correspondence(clip, patch))
            match = match_loss(recorder.take(), target, visible)
            terms = replace(terms, total=terms.total + cfg.match_weight * match, match=match.detach())
        if cfg.match_head_weight:  # + the matched tracking's lookup (and gate) supervision
            terms = matched_tracking_terms(terms, head_out, clip, targets, cfg, patch)
            head_out.clear()
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if not torch.isfinite(terms.total):
            raise FloatingPointError(f"non-finite loss at step {state.step}; lower --lr or check the data")
        opt.step()
        sched.step()
        state.step += 1
        state.clip_counter += cfg.batch * env.world_size
        state.elapsed_s += time.perf_counter() - t0
        pairs_window += frames.shape[0] * cfg.frames * env.world_size
        vals = {k: float(all_reduce_mean(v.detach().reshape(1), env)) for k, v in vars(terms).items()
                if v is not None}
        vals.update(grad_norm=float(grad_norm), frame_gap=gap)
        for k, v in vals.items():
            window.setdefault(k, []).append(v)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{vals['total']:.3f}", gap=f"{gap:.2f}")
        if env.is_main and (state.step % log_every == 0 or state.step == stop):
            now = time.perf_counter()
            rec = {"step": state.step, "lr": sched.get_last_lr()[0], "elapsed_s": round(state.elapsed_s, 2),
                   "pairs_per_s": round(pairs_window / max(now - t_window, 1e-9), 2)}
            rec.update({k: _nanmean(v) for k, v in window.items()})
            _log(log_path, rec)
            window, t_window, pairs_window = {}, now, 0
        if env.is_main and ((eval_every and state.step % eval_every == 0) or (final_eval and state.step == stop)):
            result = heldout.evaluate_clips(model, eval_clips)
            _log(log_path, {"step": state.step, "eval": result})
            model.train()
        if (save_every and state.step % save_every == 0) or state.step == stop:
            if env.is_main:
                save_train_checkpoint(out, model, opt, sched, state, cfg, env.device)
            barrier(env)
    if bar is not None:
        bar.close()
    if hook is not None:
        hook.remove()
    return {"step": state.step, "elapsed_s": state.elapsed_s, "checkpoint": str(out), "eval": result,
            "rank": env.rank, "world_size": env.world_size, "weights_digest": weights_digest(model)}


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, bytes), in state_dict order: equal iff bit-identical."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else math.nan
