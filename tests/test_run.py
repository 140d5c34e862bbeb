"""Tests of st4r_lite.app.run (and `st4r-lite run`): the own-video pipeline, atomic outputs, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from st4r_lite import cli
from st4r_lite.app import frames as FT
from st4r_lite.app import run
from st4r_lite.app import video as V
from st4r_lite.model import resolve
from st4r_lite.model.checkpoint import save_checkpoint
from st4r_lite.model.network import build_model
from st4r_lite.model.pairs import predict_video
from st4r_lite.world import render

pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory):
    """A 10-frame H.264 video of a moving synthetic scene, 72x100 (so it is scaled and cropped to 64x96)."""
    rgb = render.generate_clips(1, frames=10, height=72, width=100, seed=5).rgb[0]
    return V.write_video(tmp_path_factory.mktemp("video") / "scene.mp4", rgb, fps=10)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", build_model("tiny", seed=0))


def test_end_to_end_writes_npz_and_html(tmp_path, clip_video, tiny_ckpt):
    out = tmp_path / "result"
    res = run.run_video(clip_video, tiny_ckpt, out, chunk=4, log=lambda s: None)
    assert sorted(p.name for p in out.iterdir()) == ["result.npz", "run.json", "tracks.npz", "view.html"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    r = np.load(out / "result.npz")
    assert r["track"].shape == (10, 64, 96, 3) and r["recon"].shape == (10, 64, 96, 3)
    assert r["conf_track"].shape == (10, 64, 96) and (r["conf_recon"] > 1).all()
    assert r["T_world_cam"].shape == (10, 4, 4) and r["images"].shape == (10, 64, 96, 3)
    np.testing.assert_allclose(r["T_world_cam"][:, 3], np.tile([0, 0, 0, 1.0], (10, 1)), atol=1e-6)
    tf = FT.FrameTransform.from_array(r["frame_transform"])
    assert tf.orig_size == (72, 100) and tf.out_size == (64, 96)
    np.testing.assert_allclose(r["K_orig"], FT.intrinsics_to_original(torch.from_numpy(r["K_net"]), tf).numpy())
    assert list(r["frame_indices"]) == list(range(10))
    # same model, same video: the saved maps are the network's predictions
    assert torch.allclose(res.track, torch.from_numpy(r["track"]))
    t = np.load(out / "tracks.npz")
    N = t["queries_xyt"].shape[0]
    assert t["tracks_XYZ"].shape == (10, N, 3) and t["visibility"].shape == (10, N)
    assert t["extrinsics_w2c"].shape == (10, 4, 4) and t["fx_fy_cx_cy"].shape == (4,)
    # tracks_XYZ is the world track seen from each camera: moving it back with the pose gives the track map
    q = t["queries_xyt"][:, :2].astype(int)
    w2c = t["extrinsics_w2c"]
    back = np.einsum("tij,tnj->tni", np.linalg.inv(w2c)[:, :3, :3], t["tracks_XYZ"]) + np.linalg.inv(w2c)[:, None, :3, 3]
    np.testing.assert_allclose(back, r["track"][:, q[:, 1], q[:, 0]], atol=1e-4)
    from st4r_lite.world import worldtrack

    seq = worldtrack.load_npz(out / "tracks.npz")
    assert np.asarray(seq.images).shape == (10, 64, 96, 3) and np.asarray(seq.tracks_XYZ).shape == (10, N, 3)
    html = (out / "view.html").read_text()
    assert "plotly" in html.lower() and "frame t = " in html
    doc = json.loads((out / "run.json").read_text())
    assert doc["frames"] == 10 and doc["network_size"] == [64, 96]


def test_cli_run_and_existing_output(tmp_path, clip_video, tiny_ckpt, capsys):
    out = tmp_path / "cli_out"
    argv = ["run", "--video", str(clip_video), "--checkpoint", str(tiny_ckpt), "--max-frames", "4", "--stride", "2",
            "--no-view", "--out", str(out)]
    assert cli.main(argv) == 0
    assert np.load(out / "result.npz")["frame_indices"].tolist() == [0, 2, 4, 6]
    assert not (out / "view.html").exists()
    assert cli.main(argv) == 2                                        # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    assert cli.main(argv[:-2] + ["--max-frames", "2", "--overwrite", "--out", str(out)]) == 0
    assert np.load(out / "result.npz")["track"].shape[0] == 2


def test_interrupted_run_leaves_no_output(tmp_path, clip_video, monkeypatch):
    def boom(folder, *a, **k):
        (folder / "result.npz").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "write_outputs", boom)
    out = tmp_path / "never"
    with pytest.raises(KeyboardInterrupt):
        run.run_video(clip_video, "fresh:tiny", out, max_frames=3, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoints_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="neither a file nor a known name"):
        resolve.load(tmp_path / "missing.pt")
    # weights of one preset under the config of another
    bad = tmp_path / "mixed.pt"
    other = build_model(build_model("tiny").config.with_(name="shallow", dec_depth=2))
    torch.save({"config": build_model("tiny").config.to_dict(), "model": other.state_dict()}, bad)
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        resolve.load(bad)
    # a bare state dict (e.g. a released file given as a path) carries no config
    bare = tmp_path / "bare.pt"
    torch.save(build_model("tiny").state_dict(), bare)
    with pytest.raises(ValueError, match="load_pretrained"):
        resolve.load(bare)
    with pytest.raises(ValueError, match="fresh:nonsense"):
        resolve.load("fresh:nonsense", log=lambda s: None)
    # a released name, offline and not cached
    monkeypatch.setenv("ST4R_OFFLINE", "1")
    monkeypatch.setenv("ST4R_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="not cached"):
        resolve.load("st4rtrack_seq")


def test_every_checkpoint_argument_takes_every_spec(tmp_path, tiny_ckpt, monkeypatch):
    """fresh:PRESET, a path and the default work for commands other than `run` too (one resolver)."""
    fresh = resolve.load("fresh:tiny", log=lambda s: None)
    assert torch.equal(resolve.load(tiny_ckpt).patch_embed.proj.weight, fresh.patch_embed.proj.weight)
    assert resolve.describe("fresh:tiny") == "fresh tiny model (untrained)"
    assert resolve.describe(tiny_ckpt).startswith(f"{tiny_ckpt} (sha256 ")
    monkeypatch.setenv("ST4R_DATA", str(tmp_path / "no-data"))          # no shipped data/tiny.pt: fresh, said
    said = []
    assert isinstance(resolve.load(None, log=said.append), type(fresh)) and "UNTRAINED" in said[0]
    out = tmp_path / "adapt"
    assert cli.main(["adapt", "--data", "wild:600003", "--frames", "3", "--checkpoint", "fresh:tiny",
                     "--variant", "none", "--out", str(out)]) == 0
    assert (out / "wild-600003_none.npz").is_file()


def test_adapted_run_writes_the_adapted_models_outputs(tmp_path, clip_video, monkeypatch):
    """`run --adapt` re-predicts every pair with the adapted network: its maps and confidences equal a direct
    prediction with the adapted weights and differ from the unadapted run's."""
    adapted = {}

    def spy(*args, **kwargs):
        res = real(*args, **kwargs)
        adapted["res"] = res
        return res

    real = run.adapt_video
    monkeypatch.setattr(run, "adapt_video", spy)
    plain = run.run_video(clip_video, "fresh:tiny", tmp_path / "plain", max_frames=4, view=False,
                          log=lambda s: None)
    res = run.run_video(clip_video, "fresh:tiny", tmp_path / "o", adapt="baseline", adapt_steps=2, max_frames=4,
                        view=False, log=lambda s: None)
    assert any(n.startswith("adapted (baseline, 2 steps) on pseudo-labels lk") for n in res.notes)
    assert any(n.startswith("not re-anchored: the pseudo-labels have no mono-depth") for n in res.notes)
    model = adapted["res"].model
    assert model is not None, "the adapted network must be kept to predict again"
    video = V.read_video(clip_video, model.config, max_frames=4)
    direct = predict_video(model, video.frames * 2 - 1, chunk=8, out_device="cpu")
    saved = np.load(tmp_path / "o" / "result.npz")
    for name in ("track", "recon", "conf_track", "conf_recon"):
        torch.testing.assert_close(torch.from_numpy(saved[name]), getattr(direct, name).float(), rtol=0, atol=0)
        assert not torch.equal(getattr(res, name), getattr(plain, name)), name


def test_adapt_refuses_long_videos_and_unknown_variants(tmp_path, clip_video):
    with pytest.raises(ValueError, match="at most 3 frames"):
        run.run_video(clip_video, "fresh:tiny", tmp_path / "o2", adapt="robust", adapt_steps=1, max_frames=4,
                      adapt_max_frames=3, view=False, log=lambda s: None)
    with pytest.raises(ValueError, match="unknown variant"):
        run.run_video(clip_video, "fresh:tiny", tmp_path / "o3", adapt="nonsense", max_frames=3, view=False,
                      log=lambda s: None)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_measure_long_video_reports_memory(tmp_path):
    from st4r_lite.studies import video_memory

    doc = video_memory.measure_long_video((3,), height=48, width=64, out=tmp_path / "mem.json", log=lambda s: None)
    assert json.loads((tmp_path / "mem.json").read_text()) == doc
    row = doc["rows"][0]
    assert row["frames"] == 3 and row["ru_maxrss_mb"] >= row["rss_before_run_mb"] > 10
    assert "python -m st4r_lite.studies.video_memory" in doc["command"]


def test_adapted_run_with_a_mono_depth_re_anchors_its_tracks(tmp_path, clip_video, monkeypatch):
    """With a mono-depth the run's tracks are the adapted network's, re-anchored as adapt_video re-anchors its own."""
    from st4r_lite.adapt.reanchor import reanchor_tracks

    seen = {}
    real_provider = run.make_provider

    def provider(*args, **kwargs):
        p = real_provider(*args, **{**kwargs, "depth": "none"})

        def with_depth(frames, queries):
            labels = p(frames, queries)
            seen["depth"] = 1.0 + frames.mean(1)          # any positive depth map (T, H, W)
            return replace(labels, depth=seen["depth"])
        with_depth.note, with_depth.last_report = p.note, None
        return with_depth

    def spy(*args, **kwargs):
        seen["res"] = real(*args, **kwargs)
        return seen["res"]

    real = run.adapt_video
    monkeypatch.setattr(run, "make_provider", provider)
    monkeypatch.setattr(run, "adapt_video", spy)
    res = run.run_video(clip_video, "fresh:tiny", tmp_path / "o", adapt="baseline", adapt_steps=1, max_frames=4,
                        view=False, log=lambda s: None)
    assert any(n.startswith("re-anchored on the mono-depth") for n in res.notes), res.notes
    video = V.read_video(clip_video, seen["res"].model.config, max_frames=4)
    direct = predict_video(seen["res"].model, video.frames * 2 - 1, chunk=8, out_device="cpu")
    expected, info = reanchor_tracks(direct.track, seen["depth"][0])
    assert info["moved"] > 0                              # the check below is not a no-op
    torch.testing.assert_close(res.track, expected.float(), rtol=0, atol=1e-6)
