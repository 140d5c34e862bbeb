"""How good the pseudo-labels are on the synthetic world: error statistics of the simulated and LK trackers.

``python -m st4r_lite.studies.label_stats`` (or ``st4r-lite study label_stats ...``).
"""

from __future__ import annotations

import argparse
import json

from st4r_lite.adapt.lk_tracker import LKConfig, LKTracker
from st4r_lite.adapt.pseudo_labels import PseudoLabels, pseudo_label_error_stats
from st4r_lite.adapt.sim_labels import GroundTruthVideo, SimDepthConfig, SimulatedMonoDepth, SimulatedTracker
from st4r_lite.geometry.pinhole import grid_query_pixels
from st4r_lite.runtime import atomic_write, repo_data_dir
from st4r_lite.world.render import generate_clips

__all__ = ["pseudo_label_statistics", "world_clip_stats", "main"]


def pseudo_label_statistics(domains: tuple[str, ...] = ("wild", "pretrain"), *, num_clips: int = 2,
                            frames: int = 12, height: int = 48, width: int = 64, stride: int = 4,
                            seed: int = 0, lk_config=None) -> dict:
    """Error statistics of every offline provider against the synthetic world's ground truth (a JSON-ready dict).

    Per domain: the simulated tracker (default strength), the LK tracker (its backend named), the simulated
    mono-depth ("scale" and "affine" modes; AbsRel after the per-frame affine fit), each averaged over
    ``num_clips`` clips (T = ``frames``, ``height`` x ``width``, queries on a ``stride`` grid; frame 0 left out).
    """
    def mean_dicts(rows: list[dict]) -> dict:
        out = {}
        for key, val in rows[0].items():
            if isinstance(val, dict):
                out[key] = mean_dicts([r[key] for r in rows])
            else:
                vals = [r[key] for r in rows if r[key] is not None]
                out[key] = (sum(vals) if key.startswith("num_") else round(sum(vals) / len(vals), 4)) if vals else None
        return out

    lk = LKTracker(lk_config)
    q = grid_query_pixels(height, width, stride)
    report: dict = {"setup": {"num_clips": num_clips, "frames": frames, "height": height, "width": width,
                              "stride": stride, "seed": seed, "num_queries": int(q.shape[0]),
                              "lk_backend": lk.backend}}
    for domain in domains:
        clip = generate_clips(num_clips, frames=frames, height=height, width=width, domain=domain, seed=seed)
        rows: dict[str, list[dict]] = {"sim_tracker": [], "lk": [], "sim_depth_scale": [], "sim_depth_affine": []}
        for b in range(num_clips):
            gt = GroundTruthVideo.from_clip(clip, b)
            gt2d, vis = gt.tracks_2d(q)
            video = clip.rgb[b].float().cpu()
            for name, provider in (("sim_tracker", SimulatedTracker(gt, seed=seed + b)), ("lk", lk)):
                rows[name].append(pseudo_label_error_stats(provider(video, q), gt2d, vis).as_dict())
            for mode in ("scale", "affine"):
                depth = SimulatedMonoDepth(gt, config=SimDepthConfig(mode=mode), seed=seed + b)(video)
                labels = PseudoLabels(gt2d.nan_to_num(0), vis, depth, q, "sim-depth")
                rows[f"sim_depth_{mode}"].append({f"depth_absrel_{fit}_fit": pseudo_label_error_stats(
                    labels, gt2d, vis, gt_depth=gt.depth, depth_fit=fit).as_dict()["depth_absrel"]
                    for fit in ("affine", "scale")})
        report[domain] = {name: mean_dicts(r) for name, r in rows.items()}
    return report


def main(argv: list[str] | None = None) -> dict:
    """``python -m st4r_lite.studies.label_stats [--out data/pseudo_label_stats.json]``: write the statistics."""
    parser = argparse.ArgumentParser(description="pseudo-label error statistics on the synthetic world")
    parser.add_argument("--out", default=str(repo_data_dir() / "pseudo_label_stats.json"))
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = pseudo_label_statistics(num_clips=args.clips, frames=args.frames, seed=args.seed)
    with atomic_write(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"wrote {args.out}")
    return report


def world_clip_stats(domain: str = "pretrain", num_clips: int = 2, frames: int = 16, height: int = 64,
                     width: int = 96, stride: int = 4, seed: int = 0, config: LKConfig | None = None):
    """Error statistics of :class:`LKTracker` on synthetic world clips (a list of PseudoLabelErrorStats).

    Measured (default config, OpenCV backend; ``python -m st4r_lite.studies.label_stats``: 2 clips per domain, T=12,
    48x64, stride 4 -> data/pseudo_label_stats.json): median EPE on GT-visible points 0.96 px (pretrain) and
    2.7 px (wild: lighting changes, blur); within 4 px 88 % / 65 %; of the points LK keeps (forward–backward +
    appearance checks) 96 % / 90 % are truly visible, at a recall of 78 % / 37 %.
    """
    clip = generate_clips(num_clips, frames=frames, height=height, width=width, domain=domain, seed=seed)
    tracker = LKTracker(config)
    q = grid_query_pixels(height, width, stride)
    out = []
    for b in range(num_clips):
        gt = GroundTruthVideo.from_clip(clip, b)
        gt2d, vis = gt.tracks_2d(q)
        labels = tracker(clip.rgb[b].float().cpu(), q)
        out.append(pseudo_label_error_stats(labels, gt2d, vis))
    return out


if __name__ == "__main__":
    main()
