"""WorldTrack .npz files: round trip, official-style files, malformed files, benchmark sets, CLI `generate`."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from st4r_lite import cli
from st4r_lite.studies import world_stats
from st4r_lite.train import heldout
from st4r_lite.world import benchmarks, render, worldtrack

SIZE = dict(frames=5, height=16, width=24)


@pytest.fixture(scope="module")
def clip() -> render.Clip:
    return render.generate_clips(2, domain="pretrain", seed=3, **SIZE)


def _dense(x: torch.Tensor) -> np.ndarray:
    return rearrange(x, "t h w ... -> t (h w) ...").numpy()


def test_clip_to_sequence_matches_the_clip(clip):
    seq = worldtrack.clip_to_sequence(clip, 1)
    T, H, W = clip.num_frames, clip.height, clip.width
    assert seq.images.shape == (T, H, W, 3) and seq.images.dtype == np.uint8
    assert seq.num_tracks == H * W and seq.tracks_XYZ.shape == (T, H * W, 3)
    np.testing.assert_allclose(seq.tracks_world(), _dense(clip.track_world[1]), atol=1e-4)
    np.testing.assert_array_equal(seq.visibility, _dense(clip.track_visible[1]))
    np.testing.assert_allclose(seq.extrinsics_w2c[0], np.eye(4), atol=1e-6)
    np.testing.assert_allclose(seq.T_world_cam(), clip.T_world_cam[1].double().numpy(), atol=1e-5)
    np.testing.assert_allclose(seq.K(), clip.K[1].double().numpy(), atol=1e-6)
    # tracks_XYZ is in each frame's camera: visible points have the depth-buffer depth at their pixel
    q = seq.queries_xyt
    np.testing.assert_array_equal(q[:, 2], 0)
    np.testing.assert_allclose(seq.tracks_XYZ[0, :, 2], clip.depth[1, 0].reshape(-1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(q[:, :2], np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).reshape(-1, 2))
    assert seq.meta["seed"] == 4 and seq.meta["domain"] == "pretrain"
    with pytest.raises(ValueError, match="out of range"):
        worldtrack.clip_to_sequence(clip, 2)


def test_npz_round_trip(clip, tmp_path):
    seq = worldtrack.clip_to_sequence(clip, 0)
    path = worldtrack.save_npz(tmp_path / "seq.npz", seq)
    assert sorted(np.load(path).files) == sorted(
        ["images_jpeg_bytes", "tracks_XYZ", "visibility", "fx_fy_cx_cy", "extrinsics_w2c", "depth_map",
         "queries_xyt", "is_dynamic", "meta_json"])
    back = worldtrack.load_npz(path)
    for key in ("tracks_XYZ", "visibility", "fx_fy_cx_cy", "extrinsics_w2c", "depth_map", "queries_xyt",
                "is_dynamic"):
        np.testing.assert_array_equal(getattr(back, key), getattr(seq, key), err_msg=key)
    assert back.meta == seq.meta
    # JPEG (quality 95) is lossy but close
    diff = np.abs(back.images.astype(int) - seq.images.astype(int))
    assert back.images.shape == seq.images.shape and diff.mean() < 6
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_sequence_tensors_give_what_evaluation_needs(clip, tmp_path):
    seq = worldtrack.load_npz(worldtrack.save_npz(tmp_path / "s.npz", worldtrack.clip_to_sequence(clip, 0)))
    st = worldtrack.sequence_tensors(seq)
    T, H, W = clip.num_frames, clip.height, clip.width
    assert st.video.shape == (T, 3, H, W) and st.video.dtype == torch.float32
    assert 0 <= float(st.video.min()) and float(st.video.max()) <= 1
    assert float((st.video - clip.rgb[0]).abs().mean()) < 0.03
    torch.testing.assert_close(st.tracks_world, rearrange(clip.track_world[0], "t h w c -> t (h w) c"),
                               atol=1e-4, rtol=0)
    assert torch.equal(st.visibility, rearrange(clip.track_visible[0], "t h w -> t (h w)"))
    assert torch.equal(st.is_dynamic, clip.track_dynamic[0].reshape(-1))
    torch.testing.assert_close(st.K, clip.K[0])
    torch.testing.assert_close(st.T_world_cam, clip.T_world_cam[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(st.depth, clip.depth[0])
    assert st.query_pixels.shape == (H * W, 2) and bool((st.query_frames == 0).all())


def _official_style(clip, tmp_path, with_3x4: bool = False):
    """An official-release-like file: object array of JPEG bytes (pickled), a world that is not camera 0
    (E_t = E_t' G^-1 for a rigid G), no depth_map, no queries_xyt, no is_dynamic."""
    seq = worldtrack.clip_to_sequence(clip, 0)
    frames = []
    for im in seq.images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=90)
        frames.append(buf.getvalue())
    images = np.empty(len(frames), dtype=object)
    images[:] = frames
    G = np.eye(4)
    c, s = np.cos(0.7), np.sin(0.7)
    G[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    G[:3, 3] = [3.0, -1.0, 7.5]  # G = T_world'_world: the file's world is somewhere else
    E = seq.extrinsics_w2c @ np.linalg.inv(G)
    if with_3x4:
        E = E[:, :3, :]
    path = tmp_path / "official.npz"
    np.savez(path, images_jpeg_bytes=images, tracks_XYZ=seq.tracks_XYZ, visibility=seq.visibility,
             fx_fy_cx_cy=seq.fx_fy_cx_cy.astype(np.float32), extrinsics_w2c=E.astype(np.float32))
    return path, seq


@pytest.mark.parametrize("with_3x4", [False, True])
def test_reader_accepts_official_style_files(clip, tmp_path, with_3x4):
    path, ours = _official_style(clip, tmp_path, with_3x4)
    with pytest.raises(ValueError):  # really a pickled object array
        np.load(path, allow_pickle=False)["images_jpeg_bytes"]
    seq = worldtrack.load_npz(path)
    assert seq.depth_map is None and seq.queries_xyt is None and seq.is_dynamic is None
    assert seq.images.shape == ours.images.shape
    assert not np.allclose(seq.extrinsics_w2c[0], np.eye(4))
    st = worldtrack.sequence_tensors(seq)  # re-based: world = camera of frame 0
    torch.testing.assert_close(st.T_world_cam[0], torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(st.T_world_cam, clip.T_world_cam[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(st.tracks_world, rearrange(clip.track_world[0], "t h w c -> t (h w) c"),
                               atol=1e-3, rtol=0)
    # queries derived from the first visible frame (frame 0 here) = the anchor pixels
    assert bool((st.query_frames == 0).all())
    torch.testing.assert_close(st.query_pixels, torch.from_numpy(ours.queries_xyt[:, :2]), atol=1e-3, rtol=0)
    # dynamic flag derived with the same 5 cm rule as the generator
    agree = (st.is_dynamic == clip.track_dynamic[0].reshape(-1)).float().mean()
    assert float(agree) > 0.999
    assert st.depth is None


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("drop, bad, word", [
    ("visibility", None, "visibility"),
    ("images_jpeg_bytes", None, "images_jpeg_bytes"),
    (None, ("visibility", np.zeros((2, 3), bool)), "visibility"),
    (None, ("tracks_XYZ", np.zeros((5, 4, 2), np.float32)), "tracks_XYZ"),
    (None, ("fx_fy_cx_cy", np.array([0.0, 1.0, 2.0, 3.0])), "fx_fy_cx_cy"),
    (None, ("extrinsics_w2c", np.zeros((2, 4, 4))), "extrinsics_w2c"),
    (None, ("depth_map", np.zeros((5, 3, 3), np.float32)), "depth_map"),
    (None, ("images_jpeg_bytes", np.array([b"not a jpeg"] * 5)), "images_jpeg_bytes"),
])
def test_malformed_npz_raises_value_error_naming_the_key(clip, tmp_path, drop, bad, word):
    good = worldtrack.load_npz(worldtrack.save_npz(tmp_path / "good.npz", worldtrack.clip_to_sequence(clip, 0)))
    arrays = dict(np.load(tmp_path / "good.npz"))
    if drop:
        arrays.pop(drop)
    if bad:
        arrays[bad[0]] = bad[1]
    assert good.num_frames == 5
    path = _write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=word):
        worldtrack.load_npz(path)


def test_not_an_npz_and_missing_file(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a readable"):
        worldtrack.load_npz(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        worldtrack.load_npz(tmp_path / "single.npy")
    with pytest.raises(FileNotFoundError):
        worldtrack.load_npz(tmp_path / "missing.npz")


def test_write_benchmark_is_deterministic_and_checks_arguments_first(tmp_path):
    kw = dict(domain="wild", num_seqs=2, frames=3, height=16, width=24, seed=7)
    a = benchmarks.write_benchmark(tmp_path / "a", **kw)
    b = benchmarks.write_benchmark(tmp_path / "b", **kw)
    assert [p.name for p in a] == ["wild_seed7.npz", "wild_seed8.npz"]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    c = benchmarks.write_benchmark(tmp_path / "c", **{**kw, "seed": 8})
    assert c[0].read_bytes() == a[1].read_bytes() and c[1].read_bytes() != a[1].read_bytes()
    for bad, word in ((dict(domain="mars"), "domain"), (dict(num_seqs=0), "num_seqs"), (dict(height=0), "height"),
                      (dict(frames=0), "frames"), (dict(width=3), "width")):
        with pytest.raises(ValueError, match=word):
            benchmarks.write_benchmark(tmp_path / "never", **{**kw, **bad})
    assert not (tmp_path / "never").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        benchmarks.write_benchmark(tmp_path / "file", **kw)


def test_write_benchmark_leaves_no_partial_set_on_failure(tmp_path, monkeypatch):
    real = render.generate_clips
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "generate_clips", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        benchmarks.write_benchmark(tmp_path / "out", domain="pretrain", num_seqs=3, frames=2, height=16, width=24,
                                   seed=0)
    assert list((tmp_path / "out").iterdir()) == []


def test_named_benchmark_seeds_and_manifest(tmp_path):
    spans = []
    for name, spec in benchmarks.BENCHMARKS.items():
        for domain, n, seed in spec.parts:
            assert domain in render.DOMAINS and n >= 1 and 0 <= seed and seed + n <= 10**6, name
            spans.append((seed, seed + n))
    spans.append((heldout.HELDOUT_SEED, heldout.HELDOUT_SEED + heldout.REPORT_CLIPS))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), f"seed ranges overlap: {spans}"
    paths = benchmarks.write_named_benchmark("worldtrack-lite", tmp_path / "lite")
    spec = benchmarks.BENCHMARKS["worldtrack-lite"]
    assert len(paths) == sum(n for _, n, _ in spec.parts)
    manifest = json.loads((tmp_path / "lite" / "worldtrack-lite.json").read_text())
    assert [s["file"] for s in manifest["sequences"]] == [p.name for p in paths]
    assert {s["domain"] for s in manifest["sequences"]} == set(render.DOMAINS)
    seq = worldtrack.load_npz(paths[-1])
    assert (seq.num_frames, seq.height, seq.width) == (spec.frames, spec.height, spec.width)
    assert seq.meta["domain"] == "wild"
    with pytest.raises(ValueError, match="unknown benchmark"):
        benchmarks.write_named_benchmark("worldtrack-huge", tmp_path / "x")


def test_query_grid():
    assert torch.equal(worldtrack.query_grid(4, 6), torch.arange(24))
    idx = worldtrack.query_grid(128, 192, max_tracks=8192)
    assert len(idx) <= 8192 and len(idx) == len(torch.unique(idx)) and int(idx.max()) < 128 * 192
    with pytest.raises(ValueError):
        worldtrack.query_grid(4, 4, max_tracks=0)


def test_cli_generate_is_deterministic(tmp_path, capsys):
    args = ["generate", "--domain", "pretrain", "--num-seqs", "2", "--frames", "3", "--height", "16", "--width",
            "24", "--seed", "11"]
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "b")]) == 0
    a, b = sorted((tmp_path / "a").iterdir()), sorted((tmp_path / "b").iterdir())
    assert [p.name for p in a] == ["pretrain_seed11.npz", "pretrain_seed12.npz"]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert "wrote 2 sequence(s)" in capsys.readouterr().out


@pytest.mark.parametrize("extra, word", [
    (["--height", "0"], "height"), (["--frames", "0"], "frames"), (["--width", "-5"], "width"),
    (["--height", "4"], "height"), (["--domain", "mars"], "domain"), (["--benchmark", "nope"], "benchmark"),
])
def test_cli_generate_bad_input_exits_2(tmp_path, capsys, extra, word):
    argv = ["generate", "--num-seqs", "1", "--frames", "2", "--height", "16", "--width", "24",
            "--out", str(tmp_path / "out")] + extra
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse rejects non-positive sizes itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and word in err
    assert not (tmp_path / "out").exists()


def test_cli_generate_unwritable_out_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["generate", "--num-seqs", "1", "--frames", "2", "--height", "16", "--width", "24",
                     "--out", str(tmp_path / "file" / "sub")]) == 2
    assert "error:" in capsys.readouterr().err


def test_stats_command_writes_json(tmp_path):
    out = tmp_path / "stats.json"
    assert world_stats.main(["--out", str(out), "--num-clips", "1", "--sizes", "16x24"]) == 0
    stats = json.loads(out.read_text())
    assert set(stats["occlusion"]) == set(render.DOMAINS)
    assert set(stats["clips_per_s"]["wild"]) == {"16x24_batch1", "16x24_batch8"}
    assert all(v > 0 for d in stats["clips_per_s"].values() for v in d.values())
    assert set(stats["clips_per_cpu_s"]["pretrain"]) == {"16x24_batch1", "16x24_batch8"}
    assert "python -m st4r_lite.studies.world_stats" in stats["command"]
