"""Peak memory of ``run_video`` against video length: ``python -m st4r_lite.studies.video_memory`` (also reachable as
``python -m st4r_lite.studies.video_memory``), the numbers in ``data/long_video_memory.json``.

Each measured video is written here (a panning random texture with a moving disc, H.264) and run in a fresh
subprocess, so that the process's high-water mark (``ru_maxrss``) belongs to that video alone; a 20 ms sampling
thread over /proc/self/statm gives a second reading. Memory is bounded by the pair chunk, not the frame count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from st4r_lite.app.run import run_video
from st4r_lite.app.video import write_video
from st4r_lite.model import resolve
from st4r_lite.runtime import atomic_write, hardware_info

__all__ = ["synthetic_video_frames", "measure_long_video", "default_checkpoint", "main"]

def synthetic_video_frames(n: int, height: int = 360, width: int = 640, seed: int = 0):
    """Yield ``n`` (height, width, 3) uint8 frames of a panning random texture with a moving disc (streamed)."""
    import cv2

    g = np.random.default_rng(seed)
    pad = 64
    tex = cv2.resize(g.random((height // 8 + pad, width // 8 + pad, 3), np.float32),
                     (width + 8 * pad, height + 8 * pad), interpolation=cv2.INTER_CUBIC)
    tex = (np.clip(tex, 0, 1) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(n):
        a = 2 * np.pi * i / max(n, 1)
        dx, dy = int(4 * pad * (1 + np.cos(a))), int(4 * pad * (1 + np.sin(a)))
        frame = tex[dy:dy + height, dx:dx + width].copy()
        cx, cy = width * (0.3 + 0.4 * (i % 50) / 50), height * 0.5
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < (0.15 * height) ** 2] = (230, 60, 40)
        yield frame


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure_one(video_path: str, checkpoint: str, chunk: int) -> dict:
    """Run one video in THIS process and report its peak memory (call it in a fresh subprocess)."""
    import resource
    import threading

    baseline = _rss_mb()
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        res = run_video(video_path, checkpoint, Path(d) / "out", log=lambda s: None, chunk=chunk)
    wall = time.perf_counter() - t0
    stop.set()
    thread.join()
    return {"frames": len(res.frame_indices), "wall_s": round(wall, 2), "rss_before_run_mb": round(baseline, 1),
            "peak_rss_sampled_mb": round(peak[0], 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "timings_s": {k: round(v, 2) for k, v in res.timings.items()}}


def default_checkpoint() -> str:
    """The shipped tiny model (data/tiny.pt) when present, else an untrained one (``fresh:tiny``)."""
    path = resolve.default_checkpoint()
    return str(path) if path.is_file() else f"{resolve.FRESH_PREFIX}tiny"


def measure_long_video(frame_counts=(50, 100, 200, 400), *, height: int = 360, width: int = 640,
                       checkpoint: str | None = None, chunk: int = 8, out: str | Path | None = None,
                       log: Callable[[str], None] = print) -> dict:
    """Peak memory of ``run_video`` against the number of frames, one fresh subprocess per video.

    Each video is written by this function (``synthetic_video_frames``, H.264, ``height`` x ``width``). Memory
    is the child's resident set size (RSS): ``ru_maxrss`` (kernel high-water mark of the whole process,
    imports included) and a 20 ms sampling thread over /proc/self/statm during the run; ``rss_before_run_mb``
    is after imports. The slope (MB per frame) is a least-squares fit of ru_maxrss against frames.
    """
    import subprocess

    checkpoint = checkpoint or default_checkpoint()

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in frame_counts:
            path = Path(d) / f"synthetic_{n}.mp4"
            write_video(path, synthetic_video_frames(n, height, width), fps=30)
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            proc = subprocess.run([sys.executable, "-m", "st4r_lite.studies.video_memory", "_measure_one", str(path), checkpoint,
                                   str(chunk)], capture_output=True, text=True, env=env, check=False)
            if proc.returncode:
                raise RuntimeError(f"measuring {n} frames failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            log(f"{n:5d} frames: peak RSS {row['ru_maxrss_mb']:.0f} MB (sampled {row['peak_rss_sampled_mb']:.0f}, "
                f"before run {row['rss_before_run_mb']:.0f}), {row['wall_s']:.1f} s")
            rows.append(row)
    x = np.array([r["frames"] for r in rows], float)
    y = np.array([r["ru_maxrss_mb"] for r in rows], float)
    slope = round(float(np.polyfit(x, y, 1)[0]), 3) if len(rows) > 1 else None
    doc = {"command": "python -m st4r_lite.studies.video_memory " + " ".join(
        [f"--frames {','.join(map(str, frame_counts))}", f"--height {height}", f"--width {width}",
         f"--checkpoint {checkpoint}", f"--chunk {chunk}"] + ([f"--out {out}"] if out else [])),
           "video": f"synthetic H.264 {height}x{width}, written by the measurement",
           "memory": "resident set size of a fresh process per video: ru_maxrss (getrusage high-water mark) "
                     "and a 20 ms /proc/self/statm sampling thread",
           "hardware": hardware_info(), "rows": rows,
           "slope_mb_per_frame": slope}
    if out:
        with atomic_write(out, "w") as f:
            f.write(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {out} (slope {slope} MB per frame)")
    return doc


def main(argv: list[str] | None = None) -> int:
    """``python -m st4r_lite.studies.video_memory [--frames 50,100,200,400] [--out FILE]`` (and the internal _measure_one)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_measure_one"]:
        print(json.dumps(_measure_one(argv[1], argv[2], int(argv[3]))))
        return 0
    p = argparse.ArgumentParser(prog="python -m st4r_lite.studies.video_memory", description="peak memory vs video length")
    p.add_argument("what", nargs="?", choices=["memory"], default="memory", help="what to measure (memory)")
    p.add_argument("--frames", default="50,100,200,400", help="comma-separated frame counts")
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--checkpoint", default=None, help="default: data/tiny.pt if present, else fresh:tiny")
    p.add_argument("--chunk", type=int, default=8)
    p.add_argument("--out", default=None, help="JSON file to write (e.g. data/long_video_memory.json)")
    a = p.parse_args(argv)
    measure_long_video(tuple(int(v) for v in a.frames.split(",")), height=a.height, width=a.width,
                       checkpoint=a.checkpoint, chunk=a.chunk, out=a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
