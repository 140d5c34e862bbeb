"""Named synthetic benchmarks written as WorldTrack ``.npz`` files (the same arguments always give the same files)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from st4r_lite.errors import InputError
from st4r_lite.runtime import atomic_write, ensure_writable_dir
from st4r_lite.world import render
from st4r_lite.world.worldtrack import MAX_TRACKS, clip_to_sequence, save_npz

__all__ = ["BENCHMARKS", "BenchmarkSpec", "write_benchmark", "write_named_benchmark"]


def write_benchmark(out, *, domain: str, num_seqs: int, frames: int, height: int, width: int, seed: int,
                    max_tracks: int = MAX_TRACKS) -> list[Path]:
    """Write ``num_seqs`` synthetic sequences (seeds seed, seed + 1, ...) as ``{domain}_seed{s}.npz`` in ``out``.

    Deterministic (same arguments -> same bytes). Arguments are checked before anything is written; if a
    sequence fails, the files this call wrote are removed again (each file is written atomically)."""
    if isinstance(num_seqs, bool) or not isinstance(num_seqs, int) or num_seqs < 1:
        raise InputError(f"num_seqs must be a positive whole number, got {num_seqs!r}")
    render._check_args(1, frames, height, width, domain, seed, 1.0)
    out = ensure_writable_dir(out)
    written: list[Path] = []
    try:
        for i in range(num_seqs):
            clip = render.generate_clips(1, frames=frames, height=height, width=width, domain=domain, seed=seed + i)
            written.append(save_npz(out / f"{domain}_seed{seed + i}.npz", clip_to_sequence(clip, 0, max_tracks)))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


@dataclass(frozen=True)
class BenchmarkSpec:
    """A named fixed benchmark: parts (domain, number of sequences, first seed) at one clip size."""

    parts: tuple[tuple[str, int, int], ...]
    frames: int
    height: int
    width: int
    description: str = ""


# Seeds below 10^6 (training clips start at train.TRAIN_SEED_BASE = 10^7) and away from heldout.HELDOUT_SEED
# (900 000 ...), so no benchmark sequence is ever a training or held-out clip.
BENCHMARKS: dict[str, BenchmarkSpec] = {
    "worldtrack-lite": BenchmarkSpec(
        parts=(("pretrain", 4, 500_000), ("wild", 4, 600_000)), frames=16, height=64, width=96,
        description="4 pretrain + 4 wild sequences, 16 frames, 64x96, every anchor pixel a query (CPU, seconds)"),
    "worldtrack-128": BenchmarkSpec(
        parts=(("pretrain", 8, 510_000), ("wild", 8, 610_000)), frames=24, height=128, width=192,
        description="8 pretrain + 8 wild sequences, 24 frames, 128x192, 8192 grid queries (for GPU-trained models)"),
}


def write_named_benchmark(name: str, out) -> list[Path]:
    """Write the named benchmark ``BENCHMARKS[name]`` into ``out`` (pretrain files first, then wild), plus a
    manifest ``{name}.json`` (files, domains, seeds, sizes, sha256). Returns the ``.npz`` paths."""
    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    paths: list[Path] = []
    try:
        for domain, n, seed in spec.parts:
            paths += write_benchmark(out, domain=domain, num_seqs=n, frames=spec.frames, height=spec.height,
                                     width=spec.width, seed=seed)
        manifest = {"name": name, "description": spec.description, "frames": spec.frames,
                    "height": spec.height, "width": spec.width,
                    "sequences": [{"file": p.name, "domain": p.name.split("_seed")[0],
                                   "seed": int(p.stem.split("_seed")[1]),
                                   "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in paths]}
        with atomic_write(Path(out) / f"{name}.json", "w") as f:
            f.write(json.dumps(manifest, indent=1) + "\n")
    except BaseException:
        for p in paths:
            p.unlink(missing_ok=True)
        raise
    return paths
