"""Nothing half-written (staged outputs, stale temporaries swept, SIGTERM), resized WorldTrack files, truncated
videos that say how many frames they held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from st4r_lite import cli, runtime
from st4r_lite.app import frames, video
from st4r_lite.world import render, worldtrack


def test_staged_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), runtime.staged_dir(out) as stage:
        (stage / "half.txt").write_text("x")
        raise RuntimeError("killed mid-way")
    assert list(tmp_path.iterdir()) == []


def test_removed_on_failure_removes_only_a_new_folder(tmp_path):
    with pytest.raises(KeyboardInterrupt), runtime.removed_on_failure(tmp_path / "new"):
        (tmp_path / "new").mkdir()
        raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(KeyboardInterrupt), runtime.removed_on_failure(tmp_path / "old"):
        raise KeyboardInterrupt
    assert (tmp_path / "old").is_dir()


def test_stale_temporaries_of_a_killed_writer_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    stale = [tmp_path / f".a.txt.{pid}-x1.tmp", tmp_path / f".out.tmp-{pid}-y2"]
    stale[0].write_text("half")
    stale[1].mkdir()
    alive = tmp_path / f".a.txt.{os.getpid()}-z3.tmp"  # a writer that still runs: kept
    alive.write_text("busy")
    with runtime.atomic_write(tmp_path / "a.txt", "w") as f:
        f.write("done")
    with runtime.staged_dir(tmp_path / "out") as stage:
        (stage / "r.txt").write_text("r")
    assert not stale[0].exists() and not stale[1].exists() and alive.exists()
    assert (tmp_path / "out" / "r.txt").read_text() == "r"


def test_sigterm_stops_like_ctrl_c():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), runtime.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs between bytecodes
            pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_pretrain_keeps_an_existing_run_and_its_log(tmp_path, capsys):
    out, log = tmp_path / "t.pt", tmp_path / "t.jsonl"
    out.write_bytes(b"previous run")
    log.write_text('{"step": 1}\n')
    assert cli.main(["pretrain", "--steps", "1", "--out", str(out), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert log.read_text() == '{"step": 1}\n' and out.read_bytes() == b"previous run"


def test_pretrain_checkpoints_periodically_by_default():
    args = cli.build_parser().parse_args(["pretrain", "--steps", "5", "--out", "x.pt"])
    assert args.save_every > 0


def test_full_size_files_are_brought_to_the_network_size(tmp_path):
    clip = render.generate_clips(1, domain="pretrain", seed=5, frames=3, height=48, width=96)
    seq = worldtrack.clip_to_sequence(clip, 0)
    small, tf = frames.sequence_to_network(seq, (32, 48))
    assert small.images.shape == (3, 32, 48, 3) and small.depth_map.shape == (3, 32, 48)
    # a visible track projects with the mapped K where the mapped query says (same camera, new pixels)
    fx, fy, cx, cy = small.fx_fy_cx_cy
    X = small.tracks_XYZ[0]
    u, v = fx * X[:, 0] / X[:, 2] + cx, fy * X[:, 1] / X[:, 2] + cy
    keep = small.visibility[0]
    assert keep.any() and not keep.all()  # the centre crop cuts the sides off
    np.testing.assert_allclose(np.stack([u, v], 1)[keep], small.queries_xyt[keep, :2], atol=1e-3)
    assert (u[keep] >= -0.5).all() and (u[keep] <= 47.5).all()
    np.testing.assert_array_equal(small.tracks_XYZ, seq.tracks_XYZ)
    same, _ = frames.sequence_to_network(small, (32, 48))
    assert same is small


def test_a_truncated_video_says_how_many_frames_it_held(tmp_path):
    pytest.importorskip("av")
    path = video.write_video(tmp_path / "v.mkv", torch.rand(20, 3, 48, 64), fps=10)
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"ended early: \d+ frame\(s\) decoded of the 20"):
        n = sum(1 for _ in video.iter_frames(cut))
    assert 0 < n < 20
