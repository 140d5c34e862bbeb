"""The synthetic world's occlusion statistics and speed (``data/world_stats.json``).

``python -m st4r_lite.studies.world_stats --out data/world_stats.json`` (or ``st4r-lite study world_stats ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from st4r_lite.runtime import atomic_write
from st4r_lite.world.render import DOMAINS, Clip, generate_clips, project_tracks

__all__ = ["occlusion_statistics", "measure_speed", "world_statistics", "main"]


def occlusion_statistics(clip: Clip) -> dict[str, float]:
    """Fractions over all anchor tracks of a batch of clips (each track = one anchor pixel):

    visible_last: visible in the last frame; occluded_some_frame: inside the image but hidden in some frame;
    occluded_then_reappear: hidden while inside the image at some t1 and visible again at some t2 > t1;
    leaves_image: outside the image (or behind the camera) in some frame; dynamic: track_dynamic;
    never_hidden: visible in every frame."""
    _, _, inside = project_tracks(clip)
    vis = clip.track_visible
    occluded = inside & ~vis
    # visible at some later frame: reverse cumulative max over time, shifted by one
    later = torch.flip(torch.cummax(torch.flip(vis.int(), [1]), 1).values, [1])
    later = torch.cat([later[:, 1:], torch.zeros_like(later[:, :1])], 1).bool()

    def frac(x: torch.Tensor) -> float:
        return round(float(x.float().mean()), 4)

    return {
        "visible_last": frac(vis[:, -1]),
        "occluded_some_frame": frac(occluded.any(1)),
        "occluded_then_reappear": frac((occluded & later).any(1)),
        "leaves_image": frac((~inside).any(1)),
        "dynamic": frac(clip.track_dynamic),
        "never_hidden": frac(vis.all(1)),
    }


def measure_speed(height: int, width: int, frames: int = 16, batch: int = 8, domain: str = "pretrain",
                  repeats: int = 3, device="cpu", clock: str = "wall") -> float:
    """Clips per second of generate_clips (full ground truth) after one warm-up call, averaged over repeats.

    clock="wall": wall-clock seconds; clock="cpu": CPU seconds of this process (all its threads), which a busy
    shared machine disturbs much less (clips per CPU-second; equal to wall clips/s with one idle thread)."""
    return _speed(height, width, frames, batch, domain, repeats, device)[0 if clock == "wall" else 1]


def _speed(height: int, width: int, frames: int, batch: int, domain: str, repeats: int, device
           ) -> tuple[float, float]:
    generate_clips(1, frames=frames, height=height, width=width, domain=domain, seed=0, device=device)
    wall, cpu = time.perf_counter(), time.process_time()
    for r in range(repeats):
        generate_clips(batch, frames=frames, height=height, width=width, domain=domain, seed=r * batch, device=device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    n = batch * repeats
    return n / (time.perf_counter() - wall), n / max(time.process_time() - cpu, 1e-9)


def world_statistics(num_clips: int = 16, frames: int = 16, height: int = 64, width: int = 96, seed: int = 0,
                     speed_sizes: tuple[tuple[int, int], ...] = ((64, 96), (128, 192)),
                     speed_batches: tuple[int, ...] = (1, 8), device="cpu") -> dict:
    """Occlusion statistics per domain (``num_clips`` clips from ``seed``) and the speed of ``frames``-frame
    clips per domain, image size and batch size, as wall-clock clips/s and clips per CPU-second (after a
    warm-up; one timed call per setting, repeated 3x for batch 1). Returns a JSON-ready dict (what ``python -m st4r_lite.studies.world_stats`` writes)."""
    stats: dict = {"settings": {"num_clips": num_clips, "frames": frames, "height": height, "width": width,
                                "seed": seed, "device": str(device), "torch_threads": torch.get_num_threads(),
                                "cpu_count": os.cpu_count()},
                   "occlusion": {}, "scenes": {}, "clips_per_s": {}, "clips_per_cpu_s": {}}
    for domain in DOMAINS:
        clip = generate_clips(num_clips, frames=frames, height=height, width=width, domain=domain, seed=seed,
                              device=device)
        stats["occlusion"][domain] = occlusion_statistics(clip)
        kinds = [c["camera"] for c in clip.info]
        stats["scenes"][domain] = {
            "mean_objects": round(sum(c["num_objects"] for c in clip.info) / num_clips, 2),
            "cameras": {k: kinds.count(k) for k in sorted(set(kinds))},
            "focal_px_range": [round(min(c["focal"] for c in clip.info), 1),
                               round(max(c["focal"] for c in clip.info), 1)],
        }
        wall, cpu = {}, {}
        for H, W in speed_sizes:
            for batch in speed_batches:
                repeats = 3 if batch == 1 else 1
                w, c = _speed(H, W, frames, batch, domain, repeats, device)
                wall[f"{H}x{W}_batch{batch}"], cpu[f"{H}x{W}_batch{batch}"] = round(w, 2), round(c, 2)
        stats["clips_per_s"][domain], stats["clips_per_cpu_s"][domain] = wall, cpu
    if hasattr(os, "getloadavg"):  # a busy machine slows the wall-clock numbers: record how busy it was
        stats["settings"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return stats


def main(argv=None) -> int:
    """``python -m st4r_lite.studies.world_stats --out data/world_stats.json``: occlusion statistics and clips/s."""
    ap = argparse.ArgumentParser(prog="python -m st4r_lite.studies.world_stats", description=main.__doc__)
    st = ap
    st.add_argument("--out", required=True, help="JSON file to write")
    st.add_argument("--num-clips", type=int, default=16)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--device", default="cpu")
    st.add_argument("--sizes", default="64x96,128x192", help="image sizes of the speed measurement")
    st.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # a command-line process: setting global state is fine here

    sizes = tuple(tuple(int(x) for x in s.split("x")) for s in args.sizes.split(","))
    stats = world_statistics(num_clips=args.num_clips, seed=args.seed, speed_sizes=sizes,
                                   device=args.device)
    stats["command"] = ("python -m st4r_lite.studies.world_stats --out " + args.out
                        + f" --num-clips {args.num_clips} --seed {args.seed} --device {args.device}"
                        + f" --sizes {args.sizes}" + (f" --threads {args.threads}" if args.threads else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, "w") as f:
        f.write(json.dumps(stats, indent=1) + "\n")
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
