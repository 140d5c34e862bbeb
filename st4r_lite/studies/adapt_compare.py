"""Running adaptation over many videos: the variant comparison (ablation rows of docs/method.md §6) and the CLI.

Dimension letters: T frames, H image rows, W image columns, N query points.

``compare_variants(videos, model, variants=..., trackers=("sim", "lk"))`` adapts the same starting model to
every video with every variant, sharing one set of pseudo-labels per (tracker, video) so that the comparison
is paired, and returns per-run rows plus means (tracking APD / EPE all and dynamic, median and Sim(3)
alignment; the occlusion mask's visible-class precision / recall against ground-truth visibility). ``measure_quick`` is the
recorded measurement (``data/adapt_variants_quick.json``); ``run_adapt_cli`` is ``st4r-lite adapt``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from st4r_lite.adapt.config import RELEASED, AdaptConfig
from st4r_lite.adapt.loop import cameras_from_prediction
from st4r_lite.adapt.occlusion import OCCLUSION_TAU, mask_quality, occlusion_mask, sample_map
from st4r_lite.adapt.online import make_provider
from st4r_lite.adapt.pseudo_labels import pseudo_label_error_stats
from st4r_lite.adapt.sim_labels import GroundTruthVideo, SimTrackerConfig
from st4r_lite.adapt.variants import VARIANTS, get_variant
from st4r_lite.app.frames import sequence_to_network
from st4r_lite.errors import InputError
from st4r_lite.eval.adaptation import VideoWithTruth, adapt_and_score
from st4r_lite.geometry.pinhole import project, transform_points
from st4r_lite.model import resolve
from st4r_lite.model.pairs import predict_video
from st4r_lite.runtime import atomic_write, check_output_folder, repo_data_dir, staged_dir, to_jsonable
from st4r_lite.world import worldtrack
from st4r_lite.world.render import generate_clips

__all__ = ["compare_variants", "load_videos", "measure_quick", "mask_tau_sweep", "sensitivity", "run_adapt_cli",
           "read_recorded", "format_table", "QUICK_SEEDS", "SENSITIVITY"]


def load_videos(data: str, *, frames: int = 16, height: int = 64, width: int = 96, resize: bool = True,
                portrait: str = "native") -> list[VideoWithTruth]:
    """Videos from an .npz file, a folder of .npz files, or ``DOMAIN:SEED[:COUNT]`` (synthetic clips).

    Files are brought to the network size (height, width) like ``run`` does (``frames.sequence_to_network``:
    scale + centre crop, K mapped) unless ``resize=False``; ``frames`` is the length of synthetic clips."""
    path = Path(data)
    if path.is_file() or path.is_dir():
        files = sorted(path.glob("*.npz")) if path.is_dir() else [path]
        if not files:
            raise FileNotFoundError(f"no .npz file in folder {str(path)!r}")
        videos = []
        for f in files:
            seq = worldtrack.load_npz(f)
            if resize:
                seq, _ = sequence_to_network(seq, (height, width), portrait)
            video = torch.from_numpy(np.ascontiguousarray(seq.images)).permute(0, 3, 1, 2).float() / 255.0
            gt = GroundTruthVideo.from_sequence(seq, height=video.shape[2], width=video.shape[3])
            videos.append(VideoWithTruth(f.stem, video, gt))
        return videos
    parts = data.split(":")
    if len(parts) in (2, 3) and parts[0] in ("wild", "pretrain") and all(p.isdigit() for p in parts[1:]):
        count = int(parts[2]) if len(parts) == 3 else 1
        clip = generate_clips(count, frames=frames, height=height, width=width, domain=parts[0],
                              seed=int(parts[1]))
        return [VideoWithTruth.from_clip(clip, b) for b in range(count)]
    raise FileNotFoundError(f"--data {data!r} is neither an .npz file, a folder of .npz files, nor "
                            "DOMAIN:SEED[:COUNT] (e.g. wild:100:4)")


def compare_variants(videos: list[VideoWithTruth], model, *, variants=tuple(VARIANTS), trackers=("sim", "lk"),
                     depth: str = "sim", config: AdaptConfig | None = None, progress=None,
                     provider_options: dict | None = None) -> dict:
    """The ablation of docs/method.md §6: every variant on every video with the same pseudo-labels (paired comparison).

    videos: with ground truth (``sim`` pseudo-labels and the metrics need it); model: the starting point of
    every run; trackers: pseudo 2D trackers (``online.make_provider`` names); depth: pseudo mono-depth;
    provider_options: extra ``make_provider`` arguments (e.g. ``sim_tracker_config=`` for harsher labels).
    Returns {"settings", "pseudo_labels": {tracker: per-video error stats}, "rows": one per (tracker, variant,
    video), "mean": {tracker: {variant: mean metrics}}}. Means of: APD / EPE (median and sim3; all and
    dynamic), the mask's visible-class precision / recall (``mask_visible_precision`` ...), seconds.
    """
    cfg = config or AdaptConfig()
    rows, pl_stats = [], {}
    for tracker in trackers:
        pl_stats[tracker] = {}
        for vid in videos:
            if vid.gt is None:
                raise InputError(f"video {vid.name!r} has no ground truth: compare_variants needs it for metrics")
            provider = make_provider(tracker, depth, ground_truth=vid.gt, seed=cfg.seed, **(provider_options or {}))
            q = vid.queries(cfg.query_stride)
            labels = provider(vid.video, q)
            gt2d, vis = vid.gt.tracks_2d(q if vid.gt.dense else None)
            st = pseudo_label_error_stats(labels, gt2d, vis, vid.gt.depth)
            pl_stats[tracker][vid.name] = {**asdict(st), "summary": st.summary(), "source": labels.source}
            for variant in variants:
                res = adapt_and_score(model, vid, labels, replace(cfg, variant=variant))
                row = {"tracker": tracker, "variant": variant, "video": vid.name, "seconds": res.seconds,
                       **_flat_metrics(res.metrics)}
                rows.append(row)
                if progress is not None:
                    progress(row)
    mean: dict = {}
    for row in rows:
        mean.setdefault(row["tracker"], {}).setdefault(row["variant"], []).append(row)
    for per_variant in mean.values():
        for variant, items in per_variant.items():
            keys = [k for k, v in items[0].items() if isinstance(v, float)]
            per_variant[variant] = {k: _nanmean([it[k] for it in items]) for k in keys}
    return to_jsonable({"settings": {"config": asdict(cfg), "trackers": list(trackers), "depth": depth,
                                   "variants": list(variants), "videos": [v.name for v in videos]},
                      "pseudo_labels": pl_stats, "rows": rows, "mean": mean})


def _flat_metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for al, m in metrics.get("tracking", {}).items():
        for k in ("apd", "epe", "apd_dynamic", "epe_dynamic"):
            out[f"{k}_{al}"] = float(m[k])
    for name in ("mask", "pseudo_valid", "used"):
        for k in ("visible_precision", "visible_recall"):
            if name in metrics:
                out[f"{name}_{k}"] = float(metrics[name][k])
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return float(sum(finite) / len(finite)) if finite else math.nan


def run_adapt_cli(args) -> str:
    """``st4r-lite adapt``: adapt a checkpoint to each video of --data with one or more variants."""
    variants = list(VARIANTS) if args.variant == "all" else [v.strip() for v in args.variant.split(",")]
    for v in variants:
        get_variant(v)
    out = check_output_folder(args.out, inputs=[args.data])
    model = resolve.load(args.checkpoint)
    H, W = model.config.img_size
    videos = load_videos(args.data, frames=args.frames, height=H, width=W,
                         resize=getattr(args, "resize", "model") == "model", portrait=getattr(args, "portrait", "native"))
    given = {"steps": args.steps, "lr": args.lr, "pairs_per_step": getattr(args, "pairs_per_step", None)}
    cfg = AdaptConfig(params=args.params, seed=args.seed, tau=args.tau, sigma_form=args.sigma_form,
                      **{k: v for k, v in given.items() if v is not None})
    lines = []
    with staged_dir(out) as stage:  # the outputs appear when every video is done; a failure leaves none
        for vid in videos:
            provider = make_provider(args.tracker, args.depth, ground_truth=vid.gt, seed=args.seed, fallback=True)
            labels = provider(vid.video, vid.queries(cfg.query_stride))
            for variant in variants:
                res = adapt_and_score(model, vid, labels, replace(cfg, variant=variant))
                npz, js = res.save(stage)
                m = res.metrics.get("tracking", {}).get("median")
                score = (f"APD {m['apd']:.1f} / dyn {m['apd_dynamic']:.1f}, EPE {m['epe']:.3f}" if m
                         else "no ground truth")
                lines.append(f"{vid.name} {variant}: {score} ({res.seconds:.0f} s) -> {out / npz.name}, {js.name}")
    return "\n".join(lines)


QUICK_SEEDS = (600_000, 600_001, 600_002, 600_003)   # the wild part of worldtrack.BENCHMARKS["worldtrack-lite"]


def measure_quick(out_json: str | Path | None, model, *, seeds=QUICK_SEEDS, frames: int = 16, height: int = 64,
                  width: int = 96, variants=tuple(VARIANTS), trackers=("sim", "lk"), depth: str = "sim",
                  config: AdaptConfig | None = None, command: str = "", progress=None,
                  provider_options: dict | None = None) -> dict:
    """The recorded variant comparison on `wild` clips (default: the 4 wild clips of ``worldtrack-lite``,
    rendered directly so that the ground truth is dense and the images are not JPEG-compressed).

    Writes ``out_json`` (atomically) when given; returns the :func:`compare_variants` dict plus timing.
    """
    start = time.perf_counter()
    videos = []
    for s in seeds:
        clip = generate_clips(1, frames=frames, height=height, width=width, domain="wild", seed=int(s))
        videos.append(VideoWithTruth.from_clip(clip, 0))
    result = compare_variants(videos, model, variants=variants, trackers=trackers, depth=depth, config=config,
                              progress=progress, provider_options=provider_options)
    result["mask_tau_sweep"] = mask_tau_sweep(videos, model)
    result["settings"].update({"seeds": [int(s) for s in seeds], "frames": frames, "height": height,
                               "width": width, "command": command,
                               "seconds": round(time.perf_counter() - start, 1)})
    result["table"] = format_table(result)
    if out_json is not None:
        with atomic_write(out_json, "w") as fh:
            json.dump(to_jsonable(result), fh, indent=1)
    return result


EXACT_GEOMETRY_TAU = 0.05   # the occlusion test's tolerance on exact geometry (only rendering noise to forgive)


def mask_tau_sweep(videos: list[VideoWithTruth], model, taus=(0.0, 0.05, 0.1, 0.3, 1.0), stride: int = 4) -> dict:
    """Occlusion-mask quality of the *unadapted* model against ground-truth visibility for several τ, next to
    the same test on exact geometry (true track points, depth and cameras; τ = 0.05): what limits the mask, the
    test or the pointmaps it reads? Returns {label: means of the ``mask_quality`` fractions}.
    """
    rows: dict[str, list[dict]] = {}
    for vid in videos:
        q = vid.queries(stride)
        _, track_gt, vis, _ = vid.gt.lookup(q if vid.gt.dense else None)
        with torch.no_grad():
            out = predict_video(model, vid.video * 2 - 1, chunk=8)
            K, T_world_cam, _ = cameras_from_prediction(out, AdaptConfig(), 0, False)
        T = out.track.shape[0]
        T_cam_world = torch.linalg.inv(T_world_cam)
        cam = transform_points(T_cam_world, sample_map(out.track, q[None].expand(T, -1, -1).to(out.track)))
        depth = transform_points(T_cam_world, out.recon)[..., 2]
        for tau in taus:
            m = occlusion_mask(cam[..., 2], project(cam, K), depth, tau)
            rows.setdefault(f"network tau={tau}", []).append(mask_quality(m, vis))
        if vid.gt.depth is not None:
            gcam = transform_points(torch.linalg.inv(vid.gt.T_world_cam), track_gt)
            m = occlusion_mask(gcam[..., 2], project(gcam, vid.gt.K), vid.gt.depth, EXACT_GEOMETRY_TAU)
            rows.setdefault(f"exact geometry tau={EXACT_GEOMETRY_TAU}", []).append(mask_quality(m, vis))
    keys = ("visible_precision", "visible_recall", "occluded_precision", "occluded_recall", "kept_fraction",
            "gt_visible_fraction")
    return {label: {k: _nanmean([r[k] for r in items]) for k in keys} for label, items in rows.items()}


SENSITIVITY = {                     # each a change of AdaptConfig's defaults (see AdaptConfig's docstring)
    "default": {}, "released recipe": RELEASED, "with L_traj 0.5": {"w_traj": 0.5},
    "track branch only": {"params": "track"}, "30 steps at 1e-4": {"steps": 30, "lr": 1e-4},
    "true cameras, with L_traj 0.5": {"cameras": "gt", "w_traj": 0.5},
    "steps only (no re-anchoring)": {"reanchor": False}, "re-anchoring only (0 steps)": {"steps": 0},
}


def sensitivity(videos: list[VideoWithTruth], model, *, settings: dict | None = None,
                variants=("none", "baseline", "oracle_mask", "robust"), tracker: str = "sim",
                config: AdaptConfig | None = None, provider_options: dict | None = None, progress=None) -> dict:
    """compare_variants under several AdaptConfig changes (``SENSITIVITY``): {setting: {variant: means}}."""
    base = config or AdaptConfig()
    out = {}
    for name, change in (settings or SENSITIVITY).items():
        res = compare_variants(videos, model, variants=variants, trackers=(tracker,), config=replace(base, **change),
                               provider_options=provider_options, progress=progress)
        out[name] = {"change": change, "mean": res["mean"][tracker]}
    return out


def format_table(result: dict) -> str:
    """A plain-text table of ``result["mean"]``: per tracker and variant, APD (median, %) all / dynamic,
    EPE (median, m) all / dynamic, APD (sim3) all / dynamic, the mask's visible-class precision / recall and
    the visible-class precision of the entries the loss used."""
    cols = [("apd_median", "APD", 1), ("apd_dynamic_median", "APDdyn", 1), ("epe_median", "EPE", 3),
            ("epe_dynamic_median", "EPEdyn", 3), ("apd_sim3", "APDs3", 1), ("apd_dynamic_sim3", "APDs3dyn", 1),
            ("mask_visible_precision", "maskVisP", 2), ("mask_visible_recall", "maskVisR", 2),
            ("used_visible_precision", "usedVisP", 2)]
    lines = []
    for tracker, per_variant in result["mean"].items():
        lines.append(f"tracker={tracker}  " + "  ".join(f"{name:>8}" for _, name, _ in cols))
        for variant, m in per_variant.items():
            vals = []
            for key, _, digits in cols:
                v = m.get(key)
                vals.append(f"{v:8.{digits}f}" if isinstance(v, float) and math.isfinite(v) else f"{'-':>8}")
            lines.append(f"  {variant:<12}" + "  ".join(vals))
    return "\n".join(lines)


# Key names in files recorded before the occlusion metrics named their class (``mask_quality``'s
# "precision" / "recall" were the visible class; "occluded_rejected" is the occluded class's recall).
_LEGACY_KEYS = {"precision": "visible_precision", "recall": "visible_recall", "occluded_rejected": "occluded_recall"}


def _current_key(key: str) -> str:
    if key in _LEGACY_KEYS:
        return _LEGACY_KEYS[key]
    for prefix in ("mask_", "pseudo_valid_", "used_"):
        if key in (f"{prefix}precision", f"{prefix}recall"):
            return prefix + "visible_" + key[len(prefix):]
    return key


def read_recorded(path: str | Path) -> dict:
    """A recorded comparison (``data/adapt_variants_quick.json``, ``data/adapt_sensitivity_quick.json``) with
    today's key names. Files written before the mask metrics named their class keep their numbers and are read
    with ``precision`` → ``visible_precision``, ``recall`` → ``visible_recall``, ``occluded_rejected`` →
    ``occluded_recall``, ``mask_precision`` → ``mask_visible_precision`` (and so on); the ``table`` text is
    kept as recorded."""
    def rename(obj):
        if isinstance(obj, dict):
            return {_current_key(k): rename(v) for k, v in obj.items()}
        return [rename(v) for v in obj] if isinstance(obj, list) else obj

    return rename(json.loads(Path(path).read_text()))


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.adapt_compare [--checkpoint CKPT] [--out JSON] [--steps N] ...``: the recorded run."""
    p = argparse.ArgumentParser(prog="python -m st4r_lite.studies.adapt_compare", description=measure_quick.__doc__)
    p.add_argument("--checkpoint", default=None, help=resolve.SPEC_HELP)
    p.add_argument("--out", default=None, help="JSON to write (default: data/adapt_variants_quick.json)")
    d = AdaptConfig()
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--w-traj", type=float, default=d.w_traj, help="L_traj weight (the released code's: 0.5)")
    p.add_argument("--pairs-per-step", type=int, default=d.pairs_per_step)
    p.add_argument("--params", default=d.params, choices=("track", "all_but_encoder"))
    p.add_argument("--tau", type=float, default=OCCLUSION_TAU)
    p.add_argument("--sigma-form", default="laplace", choices=("laplace", "gaussian"))
    p.add_argument("--trackers", default="sim,lk")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default=",".join(str(s) for s in QUICK_SEEDS))
    p.add_argument("--sensitivity-variants", default="none,baseline",
                   help="variants of the --sensitivity table (default none,baseline)")
    p.add_argument("--sensitivity", action="store_true",
                   help="instead: baseline / oracle_mask / robust under the SENSITIVITY config changes (sim labels)")
    p.add_argument("--harsh", action="store_true",
                   help="simulated tracker that never flags occlusion (every occluded label marked valid)")
    args = p.parse_args(argv)
    model = resolve.load(args.checkpoint)
    ckpt = resolve.describe(args.checkpoint)
    cfg = AdaptConfig(steps=args.steps, lr=args.lr, pairs_per_step=args.pairs_per_step, params=args.params,
                      tau=args.tau, sigma_form=args.sigma_form, w_traj=args.w_traj)
    out = Path(args.out) if args.out else repo_data_dir() / "adapt_variants_quick.json"
    command = "python -m st4r_lite.studies.adapt_compare " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    options = None
    if args.harsh:
        options = {"sim_tracker_config": SimTrackerConfig(occluded_marked_visible_prob=1.0)}
    if args.sensitivity:
        start = time.perf_counter()
        videos = [VideoWithTruth.from_clip(generate_clips(1, frames=16, height=64, width=96, domain="wild",
                                                      seed=int(s)), 0) for s in args.seeds.split(",")]
        table = sensitivity(videos, model, config=cfg, provider_options=options,
                            variants=tuple(args.sensitivity_variants.split(",")), progress=lambda r: print(
            r["variant"], r["video"], round(r.get("apd_median", math.nan), 2), flush=True))
        doc = {"settings": {"command": command, "checkpoint": ckpt,
                            "config": asdict(cfg),
                            "videos": [v.name for v in videos], "harsh": args.harsh,
                            "seconds": round(time.perf_counter() - start, 1)}, "sensitivity": table}
        with atomic_write(out, "w") as fh:
            json.dump(to_jsonable(doc), fh, indent=1)
        for name, row in table.items():
            print(name, {v: round(m["apd_median"], 2) for v, m in row["mean"].items()})
        return 0
    res = measure_quick(out, model, seeds=[int(s) for s in args.seeds.split(",")], provider_options=options,
                        variants=args.variants.split(","), trackers=args.trackers.split(","), config=cfg,
                        command=command, progress=lambda row: print(
                            f"{row['tracker']:>3} {row['variant']:<12} {row['video']:<12} "
                            f"APD {row.get('apd_median', float('nan')):6.2f} dyn "
                            f"{row.get('apd_dynamic_median', float('nan')):6.2f} ({row['seconds']:.0f} s)",
                            flush=True))
    res["settings"].update({"checkpoint": ckpt})
    with atomic_write(out, "w") as fh:
        json.dump(to_jsonable(res), fh, indent=1)
    print(res["table"])
    print(f"wrote {out} ({res['settings']['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
