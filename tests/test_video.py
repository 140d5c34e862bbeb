"""Tests of st4r_lite.app.video: reading videos / frame folders at the network size without distorting geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from st4r_lite.app import frames as FT
from st4r_lite.app import video as V
from st4r_lite.geometry import pinhole
from st4r_lite.world import render

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip_rgb() -> torch.Tensor:
    return render.generate_clips(1, frames=8, height=64, width=96, seed=3).rgb[0]  # (8, 3, 64, 96)


def _ramp(H0: int, W0: int) -> np.ndarray:
    """Channels 0/1 hold u0 / (W0 - 1) and v0 / (H0 - 1): a linear image whose values say where they came from."""
    v, u = np.mgrid[0:H0, 0:W0].astype(np.float32)
    return np.stack([u / (W0 - 1), v / (H0 - 1), np.full_like(u, 0.5)], -1)


def _save_pngs(folder, frames) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame_{i}.png")


# ----------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("orig,out", [((72, 100), (64, 96)), ((480, 640), (64, 96)), ((1080, 1920), (128, 192)),
                                      ((37, 53), (64, 96)), ((101, 67), (96, 64)), ((64, 96), (64, 96))])
def test_intrinsics_round_trip_and_projection(orig, out):
    tf = FT.plan_transform(orig, out)
    H0, W0 = orig
    assert tf.scale * H0 >= out[0] - 1e-9 and tf.scale * W0 >= out[1] - 1e-9  # covers the output: crop, no pad
    assert tf.crop_x >= -1e-9 and tf.crop_y >= -1e-9
    K0 = pinhole.intrinsics_matrix(0.9 * W0, (W0 - 1) / 2 + 3.0, (H0 - 1) / 2 - 2.0).double()
    Kn = FT.intrinsics_to_network(K0, tf)
    assert torch.allclose(FT.intrinsics_to_original(Kn, tf), K0, atol=1e-9)
    # a 3D point projects to u0 in the original and to the mapped pixel in the network image
    X = torch.tensor([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0]], dtype=torch.float64)
    uv0 = pinhole.project(X, K0)
    assert torch.allclose(pinhole.project(X, Kn), tf.pixels_to_network(uv0), atol=1e-9)
    assert torch.allclose(tf.pixels_to_original(tf.pixels_to_network(uv0)), uv0, atol=1e-9)
    # the default principal point of the original maps to the default principal point of the crop
    Kc = FT.intrinsics_to_network(pinhole.intrinsics_matrix(100.0, (W0 - 1) / 2, (H0 - 1) / 2).double(), tf)
    assert Kc[0, 2].item() == pytest.approx((out[1] - 1) / 2) and Kc[1, 2].item() == pytest.approx((out[0] - 1) / 2)
    assert FT.FrameTransform.from_array(tf.as_array()) == tf
    assert FT.FrameTransform.from_dict(tf.to_dict()) == tf


@pytest.mark.parametrize("orig,out", [((72, 100), (64, 96)), ((300, 410), (64, 96)), ((37, 53), (64, 96)),
                                      ((131, 89), (96, 64))])
def test_transform_frame_samples_where_the_record_says(orig, out):
    """Every interior network pixel holds the ramp value of the original pixel pixels_to_original points to."""
    tf = FT.plan_transform(orig, out)
    img = FT.transform_frame(_ramp(*orig), tf)
    assert img.shape == (*out, 3) and img.dtype == np.float32
    H, W = out
    v, u = np.mgrid[2:H - 2, 2:W - 2]
    uv = torch.from_numpy(np.stack([u, v], -1).astype(np.float64))
    uv0 = tf.pixels_to_original(uv).numpy()
    np.testing.assert_allclose(img[2:H - 2, 2:W - 2, 0], uv0[..., 0] / (orig[1] - 1), atol=2e-3)
    np.testing.assert_allclose(img[2:H - 2, 2:W - 2, 1], uv0[..., 1] / (orig[0] - 1), atol=2e-3)


def test_network_size_portrait_policy():
    assert FT.network_size("tiny", (480, 640)) == (64, 96)
    assert FT.network_size("tiny", (640, 480)) == (96, 64)               # portrait network size
    assert FT.network_size("tiny", (640, 480), portrait="crop") == (64, 96)
    assert FT.network_size("small", (1920, 1080)) == (192, 128)
    with pytest.raises(ValueError, match="portrait"):
        FT.network_size("tiny", (640, 480), portrait="rotate")
    with pytest.raises(ValueError, match="unknown model preset"):
        FT.network_size("huge", (480, 640))


def test_natural_sort():
    names = ["f10.png", "f2.png", "F1.png", "f100.png"]
    assert sorted(names, key=V.natural_key) == ["F1.png", "f2.png", "f10.png", "f100.png"]


# ----------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mov"])
def test_read_video_file_round_trip(tmp_path, clip_rgb, suffix):
    path = V.write_video(tmp_path / f"clip{suffix}", clip_rgb, fps=12)
    vid = V.read_video(path, "tiny")
    assert vid.frames.shape == (8, 3, 64, 96) and vid.frames.dtype == torch.float32
    assert 0.0 <= float(vid.frames.min()) and float(vid.frames.max()) <= 1.0
    assert vid.transform.scale == 1.0 and vid.transform.crop_x == 0 and vid.transform.crop_y == 0
    assert vid.fps == pytest.approx(12.0)
    err = (vid.frames - clip_rgb).abs()
    assert err.median() < 0.03 and err.mean() < 0.07  # lossy codec (4:2:0 chroma), but the same pictures
    assert (vid.frames - clip_rgb).mean().abs() < 0.01   # and no colour-range shift
    later = (vid.frames[1:] - clip_rgb[:-1]).abs().mean()
    assert (vid.frames - clip_rgb).abs().mean() < later


def test_stride_start_max_frames(tmp_path, clip_rgb):
    path = V.write_video(tmp_path / "clip.mp4", clip_rgb)
    vid = V.read_video(path, "tiny", stride=2, start=1, max_frames=3)
    assert vid.frame_indices == [1, 3, 5] and vid.frames.shape[0] == 3
    assert vid.fps == pytest.approx(5.0)
    full = V.read_video(path, "tiny")
    assert torch.equal(vid.frames, full.frames[[1, 3, 5]])
    with pytest.raises(ValueError, match="stride"):
        V.read_video(path, stride=0)


def test_portrait_and_odd_sizes(tmp_path, clip_rgb):
    portrait = (clip_rgb.transpose(-1, -2)[:, :, :93, :61].permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy()
    _save_pngs(tmp_path / "portrait", portrait)                       # 93 x 61: odd and portrait
    vid = V.read_video(tmp_path / "portrait", "tiny")
    assert vid.frames.shape == (8, 3, 96, 64) and vid.transform.orig_size == (93, 61)
    assert vid.fps is None
    crop = V.read_video(tmp_path / "portrait", "tiny", portrait="crop")
    assert crop.frames.shape == (8, 3, 64, 96)
    assert crop.transform.scale == pytest.approx(96 / 61)
    explicit = V.read_video(tmp_path / "portrait", (32, 40))
    assert explicit.frames.shape == (8, 3, 32, 40)


def test_grayscale_alpha_and_16bit_frames(tmp_path):
    ramp = (_ramp(40, 60) * 255).astype(np.uint8)
    gray = tmp_path / "gray"
    _save_pngs(gray, [ramp[..., 0], ramp[..., 0]])
    g = V.read_video(gray, (40, 60))
    assert g.frames.shape == (2, 3, 40, 60)
    assert torch.equal(g.frames[:, 0], g.frames[:, 1]) and torch.equal(g.frames[:, 0], g.frames[:, 2])
    rgba = tmp_path / "rgba"
    alpha = np.concatenate([ramp, np.zeros_like(ramp[..., :1])], -1)  # fully transparent: alpha is dropped
    _save_pngs(rgba, [alpha, alpha])
    r = V.read_video(rgba, (40, 60))
    np.testing.assert_allclose(r.frames[0].permute(1, 2, 0).numpy(), ramp / 255.0, atol=1e-6)
    deep = tmp_path / "deep"
    deep.mkdir()
    for i in range(2):
        Image.fromarray((_ramp(40, 60)[..., 0] * 65535).astype(np.uint16)).save(deep / f"{i}.png")
    d = V.read_video(deep, (40, 60))
    np.testing.assert_allclose(d.frames[0, 0].numpy(), _ramp(40, 60)[..., 0], atol=1e-4)


def test_large_frames_are_downscaled_while_streaming(tmp_path):
    frames = (np.stack([_ramp(1080, 1920)] * 3) * 255).astype(np.uint8)
    path = V.write_video(tmp_path / "big.mp4", torch.from_numpy(frames).permute(0, 3, 1, 2) / 255.0)
    vid = V.read_video(path, "tiny")
    assert vid.frames.shape == (3, 3, 64, 96) and vid.transform.orig_size == (1080, 1920)
    # the box pre-filter plus the warp keep the geometry: the ramp still says where each pixel came from
    uv0 = vid.transform.pixels_to_original(torch.tensor([[10.0, 10.0], [80.0, 50.0]]))
    got = vid.frames[0, :2, [10, 50], [10, 80]].T
    np.testing.assert_allclose(got[:, 0], uv0[:, 0] / 1919, atol=0.02)
    np.testing.assert_allclose(got[:, 1], uv0[:, 1] / 1079, atol=0.02)


# ----------------------------------------------------------------------------------------------- bad inputs
def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        V.read_video(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(ValueError, match="junk.mp4"):
        V.read_video(junk)
    with pytest.raises(ValueError, match="unknown video type"):
        (tmp_path / "notes.txt").write_text("hi")
        V.read_video(tmp_path / "notes.txt")
    folder = tmp_path / "frames"
    _save_pngs(folder, [np.zeros((8, 8, 3), np.uint8)] * 2)
    (folder / "frame_2.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="frame_2.png"):
        V.read_video(folder)


def test_truncated_file(tmp_path, clip_rgb):
    path = V.write_video(tmp_path / "clip.mp4", clip_rgb)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.mp4"):
        V.read_video(cut)


def test_too_few_frames_and_changing_size(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no frames"):
        V.read_video(empty)
    one = tmp_path / "one"
    _save_pngs(one, [np.zeros((20, 30, 3), np.uint8)])
    with pytest.raises(ValueError, match="at least 2"):
        V.read_video(one)
    assert V.read_video(one, min_frames=1).frames.shape[0] == 1
    two = tmp_path / "two"
    _save_pngs(two, [np.zeros((20, 30, 3), np.uint8)] * 3)
    with pytest.raises(ValueError, match="at least 2"):
        V.read_video(two, start=2)
    mixed = tmp_path / "mixed"
    _save_pngs(mixed, [np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30, 3), np.uint8),
                       np.zeros((22, 30, 3), np.uint8)])
    with pytest.raises(ValueError, match="frame 2 is 22x30"):
        V.read_video(mixed)


def test_write_video_streams_an_iterator(tmp_path):
    gen = (np.full((31, 45, 3), 10 * i, np.uint8) for i in range(5))
    path = V.write_video(tmp_path / "odd.mp4", gen, fps=5)
    (H0, W0), fps = V.probe(path)
    assert (H0, W0) == (32, 46) and fps == pytest.approx(5.0)   # yuv420p pads odd sizes by one pixel
    vid = V.read_video(path, (32, 46))
    means = vid.frames.mean(dim=(1, 2, 3))
    assert torch.all(means[1:] > means[:-1])                       # the frames keep their order
    with pytest.raises(ValueError, match="no frames"):
        V.write_video(tmp_path / "none.mp4", iter([]))
    assert not (tmp_path / "none.mp4").exists()
