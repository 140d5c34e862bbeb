"""A table of bad inputs: each is one line `error: ...` on stderr and exit status 2, found before the work.

Every case runs ``st4r_lite.cli.main([...])`` in-process (fast); ``{tmp}``, ``{npz}`` (a valid small WorldTrack
file), ``{frames}`` (a folder of 4 PNG frames), ``{tiny}`` (the shipped model), ``{file}`` (a regular file) and
the bad files made by ``_bad_files`` are filled in per test.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from st4r_lite import cli
from st4r_lite.app import run as run_mod
from st4r_lite.app import video as video_io
from st4r_lite.runtime import atomic_write, repo_data_dir, staged_dir
from st4r_lite.world import render, worldtrack

NO_GPU = not torch.cuda.is_available()


class _Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    clip = render.generate_clips(1, domain="pretrain", seed=2, frames=3, height=16, width=24)
    npz = worldtrack.save_npz(d / "good.npz", worldtrack.clip_to_sequence(clip, 0))
    with np.load(npz) as data:
        good = dict(data)
    E = good["extrinsics_w2c"].copy()
    E[1, :3, :3] = 0
    np.savez(d / "singular.npz", **dict(good, extrinsics_w2c=E))
    np.savez(d / "notracks.npz", **dict(good, tracks_XYZ=np.zeros((3, 0, 3), np.float32),
                                        visibility=np.zeros((3, 0), bool), queries_xyt=np.zeros((0, 3), np.float32),
                                        is_dynamic=np.zeros(0, bool)))
    evil = np.empty(3, dtype=object)
    evil[:] = [_Payload(d / "pwned") for _ in range(3)]
    np.savez(d / "pickled.npz", **dict(good, depth_map=evil))
    frames = d / "frames"
    video_io.write_video(frames, torch.rand(4, 3, 32, 48))
    (d / "file").write_text("x")
    tiny = repo_data_dir() / "tiny.pt"
    (d / "truncated.pt").write_bytes(tiny.read_bytes()[:1000])
    (d / "text.pt").write_text("not a checkpoint")
    torch.save({"format": "st4r_lite-train-v1", "model": {}}, d / "partial.pt")
    torch.save({"x": _Payload(d / "pwned")}, d / "pickle.pt")
    results = d / "abl"
    results.mkdir()
    (results / "results.json").write_text('{"rows": []}')
    return {"tmp": d, "npz": npz, "frames": frames, "tiny": tiny, "file": d / "file"}


# (case id, argv, expected substring of the one error line)
CASES = [
    # untrusted files never run code
    ("npz-pickled-depth", ["view", "--npz", "{tmp}/pickled.npz", "--out", "{tmp}/o1.html"], "never unpickles"),
    ("npz-singular-extrinsics", ["view", "--npz", "{tmp}/singular.npz", "--out", "{tmp}/o2.html"], "singular"),
    ("npz-zero-tracks", ["evaluate", "--checkpoint", "{tiny}", "--data", "{tmp}/notracks.npz"], "no tracks"),
    ("npz-not-npz", ["evaluate", "--checkpoint", "{tiny}", "--data", "{file}"], "not a readable .npz"),
    ("npz-missing", ["evaluate", "--checkpoint", "{tiny}", "--data", "{tmp}/nope.npz"], "neither a folder"),
    ("report-bad-schema", ["report", "--ablation", "{tmp}/abl"], "missing the key"),
    ("report-missing", ["report", "--ablation", "{tmp}/nothing"], "no ablation results"),
    # outputs: refuse to delete the input, unwritable --out found up front
    ("run-overwrite-input", ["run", "--video", "{frames}", "--checkpoint", "fresh:tiny", "--out", "{frames}",
                             "--overwrite"], "--overwrite would delete it"),
    ("run-out-contains-input", ["run", "--video", "{frames}", "--checkpoint", "fresh:tiny", "--out", "{tmp}",
                                "--overwrite"], "contains the input"),
    ("run-out-under-file", ["run", "--video", "{frames}", "--checkpoint", "fresh:tiny", "--out", "{file}/x"],
     "which is a file"),
    ("run-out-readonly", ["run", "--video", "{frames}", "--checkpoint", "fresh:tiny", "--out", "/sys/st4r"],
     "not writable"),
    ("view-out-under-file", ["view", "--npz", "{npz}", "--out", "{file}/v.html"], "which is a file"),
    ("view-out-readonly", ["view", "--npz", "{npz}", "--out", "/sys/st4r.html"], "not writable"),
    ("export-out-under-file", ["export", "{tiny}", "{file}/m.pt"], "which is a file"),
    ("pretrain-out-under-file", ["pretrain", "--steps", "1", "--out", "{file}/t.pt"], "which is a file"),
    ("pretrain-out-readonly", ["pretrain", "--steps", "1", "--out", "/sys/st4r.pt"], "not writable"),
    ("pretrain-existing-out", ["pretrain", "--steps", "1", "--out", "{file}"], "--resume"),
    ("evaluate-json-under-file", ["evaluate", "--checkpoint", "{tiny}", "--data", "{npz}", "--json",
                                  "{file}/e.json"], "which is a file"),
    ("adapt-out-is-input", ["adapt", "--data", "{tmp}", "--out", "{tmp}"], "the input"),
    ("adapt-out-under-file", ["adapt", "--data", "{npz}", "--out", "{file}/a"], "which is a file"),
    ("ablation-out-under-file", ["ablation", "--benchmark", "{npz}", "--out", "{file}/a"], "which is a file"),
    ("demo-out-under-file", ["demo", "--out", "{file}/d"], "which is a file"),
    # training checkpoints: only tensors and plain values, complete
    ("export-truncated", ["export", "{tmp}/truncated.pt", "{tmp}/m1.pt"], "not a readable training checkpoint"),
    ("export-text", ["export", "{tmp}/text.pt", "{tmp}/m2.pt"], "not a readable training checkpoint"),
    ("export-model-file", ["export", "{tiny}", "{tmp}/m3.pt"], "not a st4r_lite training checkpoint"),
    ("export-missing-keys", ["export", "{tmp}/partial.pt", "{tmp}/m4.pt"], "incomplete training checkpoint"),
    ("export-pickle", ["export", "{tmp}/pickle.pt", "{tmp}/m5.pt"], "never loads"),
    ("resume-truncated", ["pretrain", "--steps", "1", "--resume", "--out", "{tmp}/truncated.pt"],
     "not a readable training checkpoint"),
    ("resume-missing", ["pretrain", "--steps", "1", "--resume", "--out", "{tmp}/none.pt"], "no training checkpoint"),
    # devices
    pytest.param("evaluate-cuda", ["evaluate", "--checkpoint", "{tiny}", "--data", "{npz}", "--device", "cuda"],
                 "no CUDA GPU", marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    pytest.param("pretrain-cuda", ["pretrain", "--steps", "1", "--out", "{tmp}/c.pt", "--device", "cuda"],
                 "no CUDA GPU", marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    pytest.param("run-cuda", ["run", "--video", "{frames}", "--checkpoint", "fresh:tiny", "--out", "{tmp}/r",
                              "--device", "cuda"], "no CUDA GPU",
                 marks=pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")),
    ("evaluate-bad-device", ["evaluate", "--checkpoint", "{tiny}", "--data", "{npz}", "--device", "tpu9"],
     "not a device"),
    # frame limits and sizes, checked before predicting
    ("run-adapt-too-long", ["run", "--video", "{frames}", "--checkpoint", "fresh:tiny", "--out", "{tmp}/r2",
                            "--adapt", "robust", "--adapt-steps", "1"], None),
    # already handled before this table
    ("run-missing-video", ["run", "--video", "{tmp}/none.mp4", "--checkpoint", "fresh:tiny", "--out", "{tmp}/r3"],
     "none.mp4"),
    ("evaluate-missing-checkpoint", ["evaluate", "--checkpoint", "{tmp}/none.pt", "--data", "{npz}"],
     "does not exist"),
    ("evaluate-bad-alignment", ["evaluate", "--checkpoint", "{tiny}", "--data", "{npz}", "--alignment", "x"],
     "--alignment"),
    ("generate-out-is-file", ["generate", "--out", "{file}"], "not a folder"),
]


def _case_ids():
    return [c.values[0] if hasattr(c, "values") else c[0] for c in CASES]


@pytest.mark.parametrize("case, argv, expected", CASES, ids=_case_ids())
def test_bad_input_is_one_line_and_exit_2(files, capsys, monkeypatch, case, argv, expected):
    if case == "run-adapt-too-long":  # a 4-frame clip over a limit of 2: refused before any prediction
        monkeypatch.setattr(run_mod, "predict_video", lambda *a, **k: pytest.fail("predicted before checking"))
        real = run_mod.run_video
        monkeypatch.setattr(run_mod, "run_video", lambda *a, **k: real(*a, **{**k, "adapt_max_frames": 2}))
        expected = "use at most 2 frames"
    argv = [a.format(**files) for a in argv]
    before = sorted(p.name for p in files["tmp"].iterdir())
    assert cli.main(argv) == 2, case
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert expected in err, err
    assert not (files["tmp"] / "pwned").exists()
    assert sorted(p.name for p in files["tmp"].iterdir()) == before  # nothing written, nothing deleted
    assert (files["frames"]).is_dir() and len(list(files["frames"].iterdir())) == 4


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("x")
        with staged_dir(tmp_path / "out") as stage:
            (stage / "b.txt").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out" / "b.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
