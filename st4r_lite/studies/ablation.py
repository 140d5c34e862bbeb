"""The reproducible ablation of the adaptation (docs/method.md §6, §7) and ``st4r-lite ablation``.

Dimension letters: T frames, H, W image rows / columns, N tracked points, S sequences, K seeds.

Rows: the adaptation variants of ``VARIANTS`` (none, baseline, mask, sigma, robust = the proposal,
oracle_mask, conf_sigma) and the peers of ``baselines`` (static, combinational). Every row runs on the same
videos (the ``wild`` part of a named benchmark, the held-out domain shift) with the same pseudo-labels per
(sequence, seed): seed k fixes the simulated tracker's and mono-depth's noise and the adaptation's sampling.
A unit of comparison is one (sequence, seed) pair; for every metric we report

    mean over units,   std across seeds (of the per-seed means over sequences),
    paired difference to ``baseline``:  d_i = m_i(row) − m_i(baseline),  mean(d) ± t_{0.975, n−1} · sd(d)/√n

(a Student-t 95 % interval over the n units; the units share sequences and so are not fully independent:
read the interval as a guide, not a test). Deterministic: same command and machine kind -> same numbers
(floating-point sums may differ in the last digits across thread counts; :func:`check_against_reference`
allows for that with a tolerance). The statistics, the table and the check live in
:mod:`st4r_lite.studies.ablation_stats`.

Outputs in ``--out``: results.json (command, hardware, wall time, config, every run, the summary),
results.md (the table), ablation_apd.png and ablation_paired.png (matplotlib), views.npz (one sequence's
predictions before / after adaptation, for ``st4r-lite report``).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.adapt.loop import AdaptVideo, adapt_video
from st4r_lite.adapt.online import make_provider
from st4r_lite.adapt.variants import VARIANTS, get_variant
from st4r_lite.errors import InputError
from st4r_lite.eval import baselines
from st4r_lite.eval.adaptation import oracle_inputs
from st4r_lite.eval.evaluate import (
    EvalSequence,
    Prediction,
    evaluate_prediction,
    flat_metrics,
    load_sequences,
    predict_model,
    sample_maps,
)
from st4r_lite.geometry.pinhole import invert_pose, transform_points
from st4r_lite.model import resolve
from st4r_lite.runtime import atomic_write, check_output_folder, hardware_info, staged_dir, to_jsonable
from st4r_lite.studies.ablation_stats import (
    BEFORE_SETTING_EXISTED,
    check_against_reference,
    load_results,
    markdown_table,
    paired_differences,
    summarize,
)
from st4r_lite.studies.report import ablation_plots_png
from st4r_lite.world import benchmarks

__all__ = ["AblationConfig", "run_ablation", "run_ablation_cli", "DEFAULT_VARIANTS", "PEER_ROWS"]

DEFAULT_VARIANTS = tuple(VARIANTS)          # every variant is a default row
PEER_ROWS = ("static", "combinational")
RECON_VIEW_ROWS = ("none", "baseline", "robust")   # rows whose reconstructions views.npz keeps (file size)


@dataclass
class AblationConfig:
    """What to run. benchmark: a named benchmark (``benchmarks.BENCHMARKS``) or a folder / .npz path;
    domain: the part of a named benchmark to use; max_seqs / frames: use only the first sequences / frames;
    tracker: "sim", "sim-latch" (latches onto occluders) or "lk" pseudo 2D tracks; depth: pseudo mono-depth ("sim", "sim-affine", "none");
    checkpoint: model file (default data/tiny.pt; a fresh untrained tiny model when absent, noted);
    steps / lr / pairs_per_step: adaptation settings, None = ``adapt.AdaptConfig``'s recorded defaults
    (pairs_per_step 0 = all pairs every step); reanchor: re-anchor the adapted tracks on the mono-depth
    (``adapt.reanchor``, AdaptConfig's default). It is applied the same way after every adapting variant's steps
    (never to ``none`` or the peers, so with it on ``none`` vs ``baseline`` mixes the steps and re-anchoring) and
    replaces the anchor geometry the steps produced, so an ablation of what the mask and σ² change in the steps
    turns it off (``--no-reanchor``); a reference recorded before it existed reads as off."""

    benchmark: str = "worldtrack-lite"
    domain: str = "wild"
    max_seqs: int | None = None
    frames: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    peers: tuple[str, ...] = PEER_ROWS
    tracker: str = "sim"
    depth: str = "sim"
    steps: int | None = None
    lr: float | None = None
    pairs_per_step: int | None = None
    query_stride: int = 4
    checkpoint: str | None = None
    reanchor: bool = True
    notes: list[str] = field(default_factory=list)




# ----------------------------------------------------------------------------------------------- inputs
def _load_benchmark(cfg: AblationConfig, workdir: Path) -> list[EvalSequence]:
    if cfg.benchmark in benchmarks.BENCHMARKS:
        spec = benchmarks.BENCHMARKS[cfg.benchmark]
        parts = [p for p in spec.parts if p[0] == cfg.domain]
        if not parts:
            raise InputError(f"benchmark {cfg.benchmark!r} has no {cfg.domain!r} part; it has "
                             f"{[p[0] for p in spec.parts]}")
        domain, n, seed = parts[0]
        n = n if cfg.max_seqs is None else min(n, cfg.max_seqs)
        benchmarks.write_benchmark(workdir, domain=domain, num_seqs=n, frames=spec.frames, height=spec.height,
                                   width=spec.width, seed=seed)
        seqs = load_sequences(workdir)
    else:
        seqs = load_sequences(cfg.benchmark)
        seqs = seqs if cfg.max_seqs is None else seqs[: cfg.max_seqs]
    if cfg.frames is not None:
        seqs = [_first_frames(s, cfg.frames) for s in seqs]
    return [s.grid_subset(cfg.query_stride) for s in seqs]


def _first_frames(seq: EvalSequence, frames: int) -> EvalSequence:
    f = min(frames, seq.num_frames)
    return replace(seq, video=seq.video[:f], T_world_cam=seq.T_world_cam[:f], gt_tracks=seq.gt_tracks[:f],
                   gt_visible=seq.gt_visible[:f], is_dynamic=None if seq.is_dynamic is None else seq.is_dynamic,
                   depth=None if seq.depth is None else seq.depth[:f],
                   gt_points=None if seq.gt_points is None else seq.gt_points[:f])


def _load_model(cfg: AblationConfig):
    """The model of ``cfg.checkpoint`` (``model.resolve``: path, released name, fresh:PRESET; default data/tiny.pt,
    an untrained tiny model when that is missing, noted) and where it came from."""
    if cfg.checkpoint is None and not resolve.default_checkpoint().is_file():
        cfg.notes.append(f"{resolve.default_checkpoint()} not found: used a freshly initialised (untrained) tiny "
                         "model, seed 0")
    return resolve.load(cfg.checkpoint, log=lambda s: None), resolve.describe(cfg.checkpoint)


def prediction_from_adapt(res, seq: EvalSequence) -> Prediction:
    """A :class:`Prediction` from an ``adapt.AdaptResult`` (track maps read at the sequence's queries)."""
    T_wc, K = res.T_world_cam.detach().double().cpu(), res.K.detach().double().cpu()
    recon = res.recon.detach().double().cpu()
    depth = transform_points(invert_pose(T_wc), recon)[..., 2]
    tracks = sample_maps(res.track.detach().double().cpu(), seq.query_pixels.double())
    same_q = tuple(res.query_pixels.shape) == tuple(seq.query_pixels.shape) and bool(
        (res.query_pixels.cpu().double() - seq.query_pixels).abs().max() < 1e-3)
    return Prediction(tracks=tracks, recon=recon, depth=depth, T_world_cam=T_wc, K=K,
                      visible=res.mask.cpu().bool() if same_q else None)


# ----------------------------------------------------------------------------------------------- running
def _view_arrays(seq: EvalSequence, preds: dict[str, Prediction], max_tracks: int = 160) -> dict[str, np.ndarray]:
    """Small arrays of one sequence for the report's 3D views (float16, recon at half resolution)."""
    N = seq.gt_tracks.shape[1]
    dyn = seq.is_dynamic if seq.is_dynamic is not None else torch.zeros(N, dtype=torch.bool)
    dyn_idx, stat_idx = dyn.nonzero()[:, 0], (~dyn).nonzero()[:, 0]
    pick = torch.cat([dyn_idx[torch.linspace(0, len(dyn_idx) - 1, min(len(dyn_idx), max_tracks // 2)).long()]
                      if len(dyn_idx) else dyn_idx,
                      stat_idx[torch.linspace(0, len(stat_idx) - 1, min(len(stat_idx), max_tracks // 2)).long()]
                      if len(stat_idx) else stat_idx])
    out = {"name": np.array(seq.name), "gt_tracks": seq.gt_tracks[:, pick].numpy().astype(np.float16),
           "gt_visible": seq.gt_visible[:, pick].numpy(), "gt_T_world_cam": seq.T_world_cam.numpy(),
           "K": seq.K.numpy(), "images": (seq.video[:, :, ::2, ::2] * 255).round().byte().permute(0, 2, 3, 1).numpy(),
           "is_dynamic": dyn[pick].numpy(), "image_size": np.array(seq.size)}
    if seq.gt_points is not None:
        out["gt_points"] = seq.gt_points[:, ::2, ::2].numpy().astype(np.float16)
    for name, p in preds.items():
        out[f"{name}/tracks"] = p.tracks[:, pick].numpy().astype(np.float16)
        if p.recon is not None and name in RECON_VIEW_ROWS:
            out[f"{name}/recon"] = p.recon[:, ::2, ::2].numpy().astype(np.float16)
        if p.T_world_cam is not None:
            out[f"{name}/T_world_cam"] = p.T_world_cam.numpy()
            out[f"{name}/K"] = p.K.numpy()
        if p.visible is not None:
            out[f"{name}/visible"] = p.visible[:, pick].numpy()
    return out


def run_ablation(cfg: AblationConfig, out, command: str | None = None, progress=print) -> dict:
    """Run every row of ``cfg`` on every (sequence, seed), write the outputs into ``out``, return results.json."""
    if not cfg.variants:
        raise InputError(f"give at least one variant; choose from {', '.join(VARIANTS)}")
    for variant in cfg.variants:
        get_variant(variant)
    bad_peers = [p for p in cfg.peers if p not in PEER_ROWS]
    if bad_peers:
        raise InputError(f"unknown peer(s) {bad_peers}; choose from {PEER_ROWS}")
    if cfg.tracker not in ("sim", "sim-latch", "lk"):
        raise InputError(f"--tracker must be 'sim', 'sim-latch' or 'lk', got {cfg.tracker!r}")
    if not cfg.seeds or (cfg.steps is not None and cfg.steps < 0):
        raise InputError(f"need at least one seed and steps >= 0; got seeds {cfg.seeds}, steps {cfg.steps}")
    out = check_output_folder(out, inputs=[cfg.benchmark])
    start = time.perf_counter()
    load_start = hardware_info()["load_avg_1_5_15min"]
    model, model_source = _load_model(cfg)
    with tempfile.TemporaryDirectory(prefix="st4r-ablation-") as tmp:
        seqs = _load_benchmark(cfg, Path(tmp))
    runs, views = [], None
    for seq in seqs:
        gt = seq.ground_truth()
        for seed in cfg.seeds:
            labels = make_provider(cfg.tracker, cfg.depth, ground_truth=gt, seed=1000 * seed + 7)(
                seq.video.float(), seq.query_pixels.float())
            preds = {}
            for variant in cfg.variants:
                t0 = time.perf_counter()
                acfg = _adapt_config(cfg, variant, seed)
                res = adapt_video(model, AdaptVideo(seq.name, seq.video), labels, acfg,
                                  **oracle_inputs(gt, labels, acfg))
                preds[variant] = prediction_from_adapt(res, seq)
                loss = [round(r["total"], 5) for r in res.loss_log]
                runs.append(_run_record(seq, seed, variant, preds[variant], time.perf_counter() - t0, loss))
                progress(f"{seq.name} seed {seed} {variant:>12}: APD {runs[-1]['metrics']['track_apd_median']:.2f} %"
                         f" ({runs[-1]['seconds']:.1f} s)")
            ref = preds.get("none") or predict_model(model, seq, seed=seed)
            for peer in cfg.peers:
                t0 = time.perf_counter()
                p = (baselines.static_prediction(ref, seq) if peer == "static" else
                     baselines.combinational_prediction(seq, ref, depth="sim" if labels.depth is not None
                                                        else "recon", labels=labels, seed=seed))
                preds[peer] = p
                runs.append(_run_record(seq, seed, peer, p, time.perf_counter() - t0, []))
            if views is None:
                views = _view_arrays(seq, preds)
    wall = time.perf_counter() - start
    rows = list(cfg.variants) + list(cfg.peers)
    summary = summarize(runs, rows, cfg.seeds)
    doc = {"command": command or command_from_config(cfg, out),
           "hardware": {**hardware_info(), "load_avg_at_start": load_start},
           "wall_time_s": round(wall, 1),
           "model": model_source, "config": asdict(cfg),
           "adapt_config": asdict(_adapt_config(cfg, "baseline", cfg.seeds[0])), "sequences": [s.name for s in seqs],
           "num_queries": [int(s.query_pixels.shape[0]) for s in seqs], "rows": rows,
           "ci_method": "Student-t 95% interval over (sequence, seed) pairs of paired differences to 'baseline'",
           "summary": summary, "paired": paired_differences(runs, rows), "runs": runs}
    doc = to_jsonable(doc)
    with staged_dir(out) as stage:  # all outputs appear together, or none (a failure leaves no partial --out)
        with atomic_write(stage / "results.json", "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
        with atomic_write(stage / "results.md", "w") as f:
            f.write(markdown_table(doc) + "\n")
        if views is not None:
            with atomic_write(stage / "views.npz", "wb") as f:
                np.savez_compressed(f, **views)
        ablation_plots_png(doc, stage)
    return doc


def _adapt_config(cfg: AblationConfig, variant: str, seed: int):
    """The ``adapt.AdaptConfig`` of one run: adapt's defaults, overridden by what ``cfg`` sets."""
    over = {"variant": variant, "seed": seed, "query_stride": cfg.query_stride, "reanchor": cfg.reanchor}
    if cfg.steps is not None:
        over["steps"] = cfg.steps
    if cfg.lr is not None:
        over["lr"] = cfg.lr
    if cfg.pairs_per_step is not None:
        over["pairs_per_step"] = cfg.pairs_per_step or None
    return AdaptConfig(**over)


def _run_record(seq: EvalSequence, seed: int, row: str, pred: Prediction, seconds: float, loss: list) -> dict:
    res = evaluate_prediction(seq, pred)
    return {"sequence": seq.name, "seed": seed, "row": row, "seconds": round(seconds, 2),
            "metrics": flat_metrics(res), "loss": loss}


def config_from_args(args) -> AblationConfig:
    """An :class:`AblationConfig` from the CLI arguments."""
    def ints(text):
        return tuple(int(x) for x in text.split(",") if x.strip())

    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    peers = tuple(v.strip() for v in args.peers.split(",") if v.strip()) if args.peers else ()
    return AblationConfig(benchmark=args.benchmark, domain=args.domain, max_seqs=args.max_seqs, frames=args.frames,
                          seeds=ints(args.seeds), variants=variants, peers=peers, tracker=args.tracker,
                          depth=args.depth, steps=args.steps, lr=args.lr,
                          pairs_per_step=getattr(args, "pairs_per_step", None), query_stride=args.query_stride,
                          checkpoint=args.checkpoint, reanchor=not getattr(args, "no_reanchor", False))


def command_from_config(cfg: AblationConfig, out) -> str:
    """The ``st4r-lite ablation`` command line that reproduces ``cfg`` into ``out``."""
    parts = ["st4r-lite", "ablation", "--benchmark", cfg.benchmark, "--domain", cfg.domain,
             "--seeds", ",".join(map(str, cfg.seeds)), "--variants", ",".join(cfg.variants),
             "--peers", ",".join(cfg.peers) or "''", "--tracker", cfg.tracker, "--depth", cfg.depth,
             "--query-stride", str(cfg.query_stride)]
    for flag, value in (("--steps", cfg.steps), ("--lr", cfg.lr), ("--pairs-per-step", cfg.pairs_per_step)):
        if value is not None:
            parts += [flag, repr(value)]
    if cfg.max_seqs is not None:
        parts += ["--max-seqs", str(cfg.max_seqs)]
    if cfg.frames is not None:
        parts += ["--frames", str(cfg.frames)]
    if cfg.checkpoint:
        parts += ["--checkpoint", cfg.checkpoint]
    if not cfg.reanchor:
        parts += ["--no-reanchor"]
    return " ".join(parts + ["--out", str(out)])


def run_ablation_cli(args) -> str:
    """``st4r-lite ablation``: run (or, with --check, run the reference's config and compare)."""
    if args.check and args.results:
        return check_against_reference(args.results, args.check).report()
    if args.check:
        ref = load_results(args.check)
        c = dict(ref["config"])
        c.pop("notes", None)
        c = {**BEFORE_SETTING_EXISTED, **c}     # a setting the reference predates: what it ran with
        c["seeds"], c["variants"], c["peers"] = tuple(c["seeds"]), tuple(c["variants"]), tuple(c["peers"])
        cfg = AblationConfig(**c)
        out = args.out or "out/ablation_check"
        new = run_ablation(cfg, out, command=command_from_config(cfg, out), progress=print)
        return check_against_reference(new, ref).report()
    if not args.out:
        raise InputError("--out DIR is required (or --check REFERENCE to re-run and compare)")
    cfg = config_from_args(args)
    doc = run_ablation(cfg, args.out, command=command_from_config(cfg, args.out))
    return markdown_table(doc)
