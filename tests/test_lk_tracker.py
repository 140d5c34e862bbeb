"""Lucas–Kanade tracker: known translations, forward–backward flags, backend parity, world clips."""

from __future__ import annotations

import math

import pytest
import torch

from st4r_lite.adapt.lk_tracker import LKConfig, LKTracker, lk_flow, opencv_available, to_gray
from st4r_lite.geometry.pinhole import grid_query_pixels

BACKENDS = ["torch"] + (["opencv"] if opencv_available() else [])


def texture(u: torch.Tensor, v: torch.Tensor, seed: int = 0, waves: int = 12) -> torch.Tensor:
    """A smooth random texture in [0, 1] defined at continuous (u, v): exact sub-pixel shifts."""
    g = torch.Generator().manual_seed(seed)
    freq = torch.rand(waves, generator=g) * 0.5 + 0.08
    angle, phase = torch.rand(waves, generator=g) * 2 * math.pi, torch.rand(waves, generator=g) * 2 * math.pi
    img = torch.zeros_like(u)
    for i in range(waves):
        img = img + torch.sin(freq[i] * (u * torch.cos(angle[i]) + v * torch.sin(angle[i])) + phase[i])
    return (0.5 + 0.27 * img / math.sqrt(waves)).clamp(0, 1)


def translated_video(T: int, H: int, W: int, shift: tuple[float, float], seed: int = 0) -> torch.Tensor:
    v, u = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    frames = [texture(u - t * shift[0], v - t * shift[1], seed) for t in range(T)]
    return torch.stack(frames)[:, None].expand(-1, 3, -1, -1).contiguous()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reanchor", [True, False])
def test_translation_is_tracked_subpixel(backend, reanchor):
    T, H, W, shift = 8, 48, 64, (0.7, -0.4)
    video = translated_video(T, H, W, shift)
    q = grid_query_pixels(H, W, stride=6, margin=12)
    q = q[(q[:, 0] < W - 12 - T) & (q[:, 1] > 12)]
    expected = q[None] + torch.arange(T).float()[:, None, None] * torch.tensor(shift)
    labels = LKTracker(LKConfig(reanchor=reanchor), backend=backend)(video, q)
    err = (labels.tracks_2d - expected).norm(dim=-1)
    assert err.max() < 0.5, err.max()
    assert err.mean() < 0.1, err.mean()
    assert labels.track_valid.all()
    assert torch.equal(labels.tracks_2d[0], q)
    assert backend in labels.source


@pytest.mark.parametrize("backend", BACKENDS)
def test_points_leaving_the_image_are_flagged(backend):
    T, H, W = 8, 40, 48
    video = translated_video(T, H, W, (3.0, 0.0), seed=1)
    q = torch.tensor([[10.0, 20.0], [40.0, 20.0], [44.0, 12.0]])   # the last two leave on the right
    labels = LKTracker(backend=backend)(video, q)
    assert labels.track_valid[:, 0].all()
    assert not labels.track_valid[-1, 1] and not labels.track_valid[-1, 2]
    # once out, a point stays flagged (lost, or outside the image)
    first_bad = (~labels.track_valid[:, 2]).float().argmax()
    assert not labels.track_valid[first_bad:, 2].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_occluded_points_are_flagged(backend):
    """A differently textured square (24 px wide, rows 8..39) slides right by 10 px a frame over a still image."""
    T, H, W = 8, 64, 80
    v, u = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    background = texture(u, v, seed=2)
    frames = []
    for t in range(T):
        left = -40 + 10 * t
        inside = (u >= left) & (u < left + 24) & (v >= 8) & (v < 40)
        frames.append(torch.where(inside, texture(u - 10 * t, v, seed=7), background))
    video = torch.stack(frames)[:, None].expand(-1, 3, -1, -1).contiguous()
    q = torch.tensor([[12.0, 20.0], [14.0, 30.0], [72.0, 20.0], [30.0, 55.0]])
    labels = LKTracker(backend=backend)(video, q)
    # point 0 is covered in frames 3-5, point 1 in frames 4-5; points 2 and 3 never (windows included)
    assert not labels.track_valid[3:6, 0].any(), labels.track_valid[:, 0]
    assert not labels.track_valid[4:6, 1].any(), labels.track_valid[:, 1]
    assert labels.track_valid[:3, :2].all()
    assert labels.track_valid[:, 2].all() and labels.track_valid[:, 3].all()
    assert (labels.tracks_2d[:, 2:] - q[2:]).norm(dim=-1).max() < 0.2


@pytest.mark.skipif(not opencv_available(), reason="OpenCV (cv2) is not installed")
def test_backends_agree_on_a_pair():
    H, W = 48, 64
    video = translated_video(2, H, W, (1.3, 0.8), seed=3)
    gray = to_gray(video)
    q = grid_query_pixels(H, W, stride=8, margin=12)
    q = q[(q[:, 0] <= W - 1 - 12) & (q[:, 1] <= H - 1 - 12)]  # whole windows inside both frames (no padding)
    a, ok_a = lk_flow(gray[0], gray[1], q, config=LKConfig(backend="torch"))
    b, ok_b = lk_flow(gray[0], gray[1], q, config=LKConfig(backend="opencv"))
    assert ok_a.all() and ok_b.all()
    assert (a - b).norm(dim=-1).max() < 0.1
    assert (a - (q + torch.tensor([1.3, 0.8]))).norm(dim=-1).max() < 0.1


def test_flat_image_fails_and_inputs_are_checked():
    flat = torch.full((3, 3, 32, 32), 0.5)
    labels = LKTracker(backend="torch")(flat, torch.tensor([[16.0, 16.0]]))
    assert not labels.track_valid[1:].any()                  # no texture: LK cannot converge
    with pytest.raises(ValueError, match="odd"):
        LKConfig(win_size=8)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        LKTracker(backend="torch")(torch.rand(3, 32, 32, 3), torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="inside"):
        LKTracker(backend="torch")(flat, torch.tensor([[40.0, 1.0]]))


def test_world_clip_error_stats_are_reasonable():
    world = pytest.importorskip("st4r_lite.world.render")
    del world
    from st4r_lite.studies.label_stats import world_clip_stats

    stats = world_clip_stats("pretrain", num_clips=1, frames=8, height=48, width=64, stride=4)[0]
    assert stats.num_visible > 100
    assert stats.epe_visible < 4.0, stats.summary()
    assert stats.within[8] > 0.8, stats.summary()
    assert stats.visibility_accuracy > 0.6, stats.summary()


def test_photometric_error_is_lighting_invariant_but_sees_occluders():
    from st4r_lite.adapt.lk_tracker import photometric_error

    H, W = 32, 40
    v, u = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    img = texture(u, v, seed=4)
    q = torch.tensor([[10.0, 10.0], [25.0, 20.0]])
    assert photometric_error(img, img, q, q).max() < 1e-6
    assert photometric_error(img, 0.5 * img + 0.2, q, q).max() < 0.15  # lighting change (0.02 floor: not 0)
    other = texture(u, v, seed=9)
    assert photometric_error(img, other, q, q).min() > LKConfig().photo_threshold
    with pytest.raises(ValueError, match="photo"):
        LKConfig(photo_threshold=0.0)
