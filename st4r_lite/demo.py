"""The main job on the embedded default (``make demo`` / ``st4r-lite demo``).

What it does now, step by step, printing what it does:
1. generates the named synthetic benchmark ``worldtrack-lite`` (``pretrain`` and ``wild`` sequences) under
   ``OUT/benchmark``;
2. writes an interactive, self-contained HTML view of the first sequence (``OUT/scene.html``), which opens offline.

Later stages of the pipeline (the shipped checkpoint, adaptation variants, evaluation, the report) are added
here as they land; each stage says what it wrote.
"""

from __future__ import annotations

import time
from pathlib import Path

from st4r_lite.runtime import ensure_writable_dir


def run_demo(out: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Run the demo pipeline into ``out``; returns the paths it wrote by name."""
    from st4r_lite import views, worldtrack

    out = ensure_writable_dir(out)
    written: dict[str, Path] = {}
    start = time.perf_counter()

    print("[1/2] generating the synthetic benchmark 'worldtrack-lite' ...", flush=True)
    paths = worldtrack.write_named_benchmark("worldtrack-lite", out / "benchmark")
    written["benchmark"] = out / "benchmark"
    print(f"      {len(paths)} sequences in {out / 'benchmark'}", flush=True)

    print("[2/2] writing an interactive 3D view of the first sequence ...", flush=True)
    written["scene"] = views.write_sequence_html(out / "scene.html", npz=paths[0])
    print(f"      open {written['scene']} in a browser (works offline)", flush=True)

    print(f"done in {time.perf_counter() - start:.1f} s; seed {seed}")
    return written
