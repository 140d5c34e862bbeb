"""Ground-truth consistency of the synthetic 4D world (render.py, scene.py, raycast.py, textures.py).

The checks use pinhole.py (written independently of the renderer), so a wrong pose direction, a swapped
(u, v), an off-by-half-pixel principal point or a stale track would make them fail.
"""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from st4r_lite.geometry import pinhole
from st4r_lite.studies import world_stats
from st4r_lite.world import render
from st4r_lite.world.scene import CAMERA_KINDS, DOMAIN_CONFIGS, OBJECT_CLASSES, object_motion, sample_scene
from st4r_lite.world.textures import FAMILIES

SIZE = dict(frames=8, height=24, width=32)


@pytest.fixture(scope="module")
def clips() -> dict[str, render.Clip]:
    return {d: render.generate_clips(3, domain=d, seed=11, **SIZE) for d in render.DOMAINS}


def _flat_tracks(clip: render.Clip, b: int):
    T = clip.num_frames
    return (rearrange(clip.track_world[b], "t h w c -> t (h w) c"), clip.track_visible[b].reshape(T, -1),
            clip.object_id[b, 0].reshape(-1))


def _project(clip: render.Clip, b: int):
    """Tracks of clip b in each frame's camera via geometry: x_cam = T_world_cam[t]^-1 x_world."""
    track, _, _ = _flat_tracks(clip, b)
    T_cam_world = pinhole.invert_pose(clip.T_world_cam[b].double())
    X = pinhole.transform_points(T_cam_world, track.double())  # (T, P, 3)
    return X, pinhole.project(X, clip.K[b].double())


@pytest.mark.parametrize("domain", render.DOMAINS)
def test_clip_shapes_and_conventions(clips, domain):
    c = clips[domain]
    B, T, H, W = 3, SIZE["frames"], SIZE["height"], SIZE["width"]
    assert c.rgb.shape == (B, T, 3, H, W) and c.rgb.dtype == torch.float32
    assert float(c.rgb.min()) >= 0 and float(c.rgb.max()) <= 1
    assert c.depth.shape == (B, T, H, W) and bool(torch.isfinite(c.depth).all()) and bool((c.depth > 0).all())
    assert c.points_world.shape == c.track_world.shape == (B, T, H, W, 3)
    assert c.object_id.dtype == torch.int64 and c.track_visible.dtype == torch.bool
    assert c.track_dynamic.shape == (B, H, W)
    torch.testing.assert_close(c.T_world_cam[:, 0], torch.eye(4).expand(B, 4, 4))
    torch.testing.assert_close(c.K[:, 0, 2], torch.full((B,), (W - 1) / 2))
    torch.testing.assert_close(c.K[:, 1, 2], torch.full((B,), (H - 1) / 2))
    fov = 2 * torch.atan((W / 2) / c.K[:, 0, 0])
    assert bool(((fov > 0.78) & (fov < 1.31)).all()), "horizontal field of view is sampled in 45..75 degrees"
    # rotations of the cameras are proper
    R = c.T_world_cam[..., :3, :3]
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5, rtol=0)
    assert c.num_clips == B and c.num_frames == T and c.height == H and c.width == W
    assert not bool((c.track_dynamic & (c.object_id[:, 0] == 0)).any()), "the room is never dynamic"


@pytest.mark.parametrize("domain", render.DOMAINS)
def test_t0_track_is_the_unprojected_anchor_depth(clips, domain):
    c = clips[domain]
    anchor = pinhole.depth_to_pointmap(c.depth[:, 0], c.K)  # camera 0 = world
    torch.testing.assert_close(c.track_world[:, 0], anchor, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(c.points_world[:, 0], anchor, atol=1e-4, rtol=1e-5)
    assert bool(c.track_visible[:, 0].all()), "every anchor pixel is visible in the anchor frame"


@pytest.mark.parametrize("domain", render.DOMAINS)
def test_points_world_are_depth_unprojected_and_moved_by_T_world_cam(clips, domain):
    c = clips[domain]
    for t in range(c.num_frames):
        cam = pinhole.depth_to_pointmap(c.depth[:, t], c.K)
        torch.testing.assert_close(pinhole.transform_points(c.T_world_cam[:, t], cam), c.points_world[:, t],
                                   atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("domain", render.DOMAINS)
def test_visible_track_projects_onto_its_own_surface_point(clips, domain):
    """Frame t's GT camera maps a visible track onto a pixel whose rendered surface is that object point:
    the ray through its exact (sub-pixel) projection hits the track's world point; at the nearest pixel centre
    the rendered object is the anchor's object and its depth matches."""
    c = clips[domain]
    H, W = c.height, c.width
    checked = 0
    for b in range(c.num_clips):
        track, vis, ids0 = _flat_tracks(c, b)
        X, uv = _project(c, b)
        hits = render.cast_rays(c.seeds[b], uv.float(), torch.arange(c.num_frames), height=H, width=W,
                               domain=domain)
        err = (hits.points_world - track).norm(dim=-1)[vis]
        same = (hits.object_id == ids0)[vis]
        assert float((err < 1e-3).float().mean()) > 0.99, "rays through the projections must hit the tracks"
        assert float(same.float().mean()) > 0.99
        assert float(((hits.depth - X[..., 2]).abs()[vis] < 1e-3).float().mean()) > 0.99
        # nearest pixel centre: same object, depth within the visibility tolerance
        ui, vi = uv[..., 0].round().long(), uv[..., 1].round().long()
        flat = (vi.clamp(0, H - 1) * W + ui.clamp(0, W - 1))
        ids_t = torch.gather(c.object_id[b].reshape(c.num_frames, -1), 1, flat)
        assert float((ids_t == ids0)[vis].float().mean()) > 0.97  # silhouettes: the centre may miss
        checked += int(vis.sum())
    assert checked > 1000


@pytest.mark.parametrize("domain", render.DOMAINS)
def test_visibility_agrees_with_the_depth_buffer(clips, domain):
    """visible = inside the image and first hit of the ray through the projection is the track itself; checked
    against (a) re-cast rays and (b) the rendered depth buffer around the nearest pixel (3x3 min / max)."""
    c = clips[domain]
    H, W, T, tol = c.height, c.width, c.num_frames, render.VIS_TOL
    D_min = -F.max_pool2d(-c.depth, 3, stride=1, padding=1)  # (B, T, H, W) 3x3 neighbourhood of the buffer
    D_max = F.max_pool2d(c.depth, 3, stride=1, padding=1)
    for b in range(c.num_clips):
        _, vis, ids0 = _flat_tracks(c, b)
        X, uv = _project(c, b)
        z = X[..., 2]
        ui, vi = uv[..., 0].round(), uv[..., 1].round()
        inside = (z > 0) & (ui >= 0) & (ui <= W - 1) & (vi >= 0) & (vi <= H - 1)
        hits = render.cast_rays(c.seeds[b], uv.float(), torch.arange(T), height=H, width=W, domain=domain)
        expected = inside & (hits.object_id == ids0) & ((hits.depth - z).abs() <= tol * z)
        assert float((expected != vis).float().mean()) < 1e-3
        flat = (vi.clamp(0, H - 1) * W + ui.clamp(0, W - 1)).long()
        lo = torch.gather(D_min[b].reshape(T, -1).double(), 1, flat)
        hi = torch.gather(D_max[b].reshape(T, -1).double(), 1, flat)
        # a visible track lies on the rendered surface around its pixel ...
        on_surface = (z >= lo * (1 - tol)) & (z <= hi * (1 + tol))
        interior = (uv[..., 0] >= 1) & (uv[..., 0] <= W - 2) & (uv[..., 1] >= 1) & (uv[..., 1] <= H - 2)
        assert float(on_surface[vis & interior].float().mean()) > 0.995
        # ... and a hidden one inside the image has something in front of it there (it is occluded)
        hidden = inside & ~vis
        assert int(hidden.sum()) > 0
        assert float((z[hidden] > lo[hidden] * (1 + tol)).float().mean()) > 0.9


@pytest.mark.parametrize("domain", render.DOMAINS)
def test_static_points_never_move_and_dynamic_ones_do(clips, domain):
    c = clips[domain]
    static = c.object_id[:, 0] == 0  # (B, H, W)
    drift = (c.track_world - c.track_world[:, :1]).norm(dim=-1).amax(1)  # (B, H, W)
    assert float(drift[static].max()) < 1e-5
    assert bool((drift[c.track_dynamic] > render.DYNAMIC_MIN_MOTION).all())
    assert bool(c.track_dynamic.any()), "some anchor pixels lie on moving objects"


def test_occlusion_and_leaving_the_view_happen_in_both_domains():
    """Every clip has occlusions; tracks get hidden and reappear, and leave the image (16-frame clips)."""
    stats = {}
    for d in render.DOMAINS:
        clip = render.generate_clips(4, domain=d, seed=0, frames=16, height=32, width=48)
        stats[d] = world_stats.occlusion_statistics(clip)
        for b in range(clip.num_clips):  # clip b alone (the batch is independent clips)
            one = replace(clip, **{f.name: getattr(clip, f.name)[b:b + 1] for f in fields(clip)
                                   if isinstance(getattr(clip, f.name), torch.Tensor)})
            assert world_stats.occlusion_statistics(one)["occluded_some_frame"] > 0.01, (d, b)
    for d, s in stats.items():
        assert s["occluded_some_frame"] > 0.05, (d, s)
        assert s["occluded_then_reappear"] > 0.01, (d, s)
        assert s["leaves_image"] > 0.1, (d, s)
        assert s["visible_last"] < 0.9, (d, s)
        assert 0.05 < s["dynamic"] < 0.95, (d, s)
    # the wild domain is documented to have more, faster moving objects: more occlusion, more dynamic tracks
    assert stats["wild"]["occluded_some_frame"] > stats["pretrain"]["occluded_some_frame"], stats
    assert stats["wild"]["dynamic"] > stats["pretrain"]["dynamic"], stats


@pytest.mark.parametrize("domain", render.DOMAINS)
def test_deterministic_per_seed_and_independent_of_batch_size(domain):
    kw = dict(domain=domain, frames=3, height=16, width=24)
    a = render.generate_clips(3, seed=40, **kw)
    b = render.generate_clips(3, seed=40, **kw)
    single = render.generate_clips(1, seed=41, **kw)
    other = render.generate_clips(1, seed=42, **kw)
    for name in ("rgb", "depth", "points_world", "object_id", "K", "T_world_cam", "track_world", "track_visible",
                 "track_dynamic"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert torch.equal(getattr(a, name)[1], getattr(single, name)[0]), name
    assert not torch.equal(single.rgb, other.rgb)
    assert a.seeds == [40, 41, 42]


def test_frame_gap_scales_time():
    kw = dict(domain="pretrain", height=16, width=24, seed=5)
    slow = render.generate_clips(1, frames=5, **kw)
    fast = render.generate_clips(1, frames=3, frame_gap=2.0, **kw)
    for name in ("track_world", "T_world_cam", "depth"):
        torch.testing.assert_close(getattr(fast, name)[:, 1], getattr(slow, name)[:, 2], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(getattr(fast, name)[:, 2], getattr(slow, name)[:, 4], atol=1e-5, rtol=1e-5)


def test_domains_differ_as_documented():
    assert set(render.DOMAIN_SHIFT) >= {"num_objects", "object_families", "speed", "noise_sigma", "blur_subframes"}
    for aspect, values in render.DOMAIN_SHIFT.items():
        assert set(values) == set(render.DOMAINS), aspect
    pre, wild = DOMAIN_CONFIGS["pretrain"], DOMAIN_CONFIGS["wild"]
    assert not set(pre.object_families) & set(wild.object_families), "texture families are disjoint"
    kinds = set()
    for seed in range(12):
        for domain, cfg in DOMAIN_CONFIGS.items():
            spec = sample_scene(seed, cfg, 24, 32)
            lo, hi = cfg.num_objects
            assert lo <= len(spec.kind) <= hi
            fams = {FAMILIES[int(f)] for f in spec.materials.family[2:]}
            assert fams <= set(cfg.object_families), (domain, fams)
            assert cfg.noise_sigma[0] <= spec.post["noise"] <= cfg.noise_sigma[1]
            kinds.add(spec.camera_kind)
    assert kinds == set(CAMERA_KINDS), "all camera trajectory kinds occur"
    # image formation: wild frames carry sensor noise, pretrain frames are clean renders
    p = render.generate_clips(2, domain="pretrain", frames=1, height=32, width=48, seed=3)
    w = render.generate_clips(2, domain="wild", frames=1, height=32, width=48, seed=3)

    def saturation(rgb):  # (max - min) / max over the colour channels: vivid vs muted palettes
        return float(((rgb.amax(2) - rgb.amin(2)) / rgb.amax(2).clamp_min(1e-3)).mean())

    assert saturation(w.rgb) < saturation(p.rgb) - 0.1


@pytest.mark.parametrize("kwargs, word", [
    (dict(height=0), "height"), (dict(width=-3), "width"), (dict(height=4), "height"),
    (dict(width=5000), "width"), (dict(frames=0), "frames"), (dict(domain="indoor"), "domain"),
    (dict(seed=-1), "seed"), (dict(frame_gap=0.0), "frame_gap"), (dict(batch=0), "batch"),
    (dict(height=16.0), "height"),
])
def test_bad_arguments_raise_value_error_naming_the_problem(kwargs, word):
    args = dict(batch=1, frames=2, height=16, width=24, domain="pretrain", seed=0, frame_gap=1.0)
    args.update(kwargs)
    batch = args.pop("batch")
    with pytest.raises(ValueError, match=word):
        render.generate_clips(batch, **args)


def test_cast_rays_checks_its_inputs():
    with pytest.raises(ValueError, match="pixels"):
        render.cast_rays(0, torch.zeros(2, 5, 3), torch.arange(2), height=16, width=24)
    with pytest.raises(ValueError, match="domain"):
        render.cast_rays(0, torch.zeros(2, 5, 2), torch.arange(2), height=16, width=24, domain="x")


def _object_surface_extremes(spec, tau: torch.Tensor):
    """Lowest scene y (largest, y points down) of every object's surface at times tau, sampled densely."""
    R, c, s = object_motion(spec, tau)  # (T, K, 3, 3), (T, K, 3), (T, K, 3)
    dirs = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    local = dirs / dirs.abs().amax(-1, keepdim=True)  # on the unit box surface; projected below per kind
    sphere = dirs / dirs.norm(dim=-1, keepdim=True)
    cyl = torch.cat([dirs[:, :2] / dirs[:, :2].norm(dim=-1, keepdim=True), dirs[:, 2:].clamp(-1, 1)], -1)
    cyl[:, 2] = torch.where(torch.arange(4000) % 2 == 0, 1.0, -1.0)  # points on the rims of both caps
    shapes = {0: sphere, 1: local, 2: cyl}
    lows = []
    for k, kind in enumerate(spec.kind.tolist()):
        pts = torch.einsum("tij,pj->tpi", R[:, k] * s[:, k, None, :], shapes[kind]) + c[:, k, None]
        lows.append(pts[..., 1].amax(-1))
    return torch.stack(lows, -1)  # (T, K)


@pytest.mark.parametrize("domain", render.DOMAINS)
def test_world_v2_objects_rest_on_the_floor_with_class_sizes(domain):
    """World v2: every object touches the floor (y = room_hi[1]) at all times and has its class's size."""
    tau = torch.arange(16, dtype=torch.float64) * 2.0
    for seed in range(6):
        spec = sample_scene(seed, DOMAIN_CONFIGS[domain], 64, 96)
        lows = _object_surface_extremes(spec, tau)
        torch.testing.assert_close(lows, torch.full_like(lows, float(spec.room_hi[1])), atol=2e-3, rtol=0)
        for k, kind in enumerate(spec.kind.tolist()):
            name, size = OBJECT_CLASSES[kind], spec.s0[k]
            if name == "ball":
                assert 0.22 <= float(size[0]) <= 0.30 and torch.allclose(size, size[0].expand(3))
            elif name == "box":
                assert bool(((size >= 0.22) & (size <= 0.30)).all())
            else:
                assert 0.80 <= float(size[2]) <= 0.90 and 0.20 <= float(size[0]) <= 0.25  # 1.6-1.8 m tall


def test_world_v2_balls_roll_without_slipping():
    """The contact point of a rolling ball is at rest: c(t + h) + R(t + h) R(t)^T (p - c(t)) ≈ p for the
    bottom point p = c(t) + r · down."""
    for seed in range(40):
        spec = sample_scene(seed, DOMAIN_CONFIGS["pretrain"], 64, 96)
        balls = (spec.kind == 0).nonzero().flatten()
        if len(balls):
            break
    k = int(balls[0])
    tau = torch.tensor([3.0, 3.0 + 1e-4], dtype=torch.float64)
    R, c, s = object_motion(spec, tau)
    p = c[0, k] + torch.tensor([0.0, float(s[0, k, 0]), 0.0], dtype=torch.float64)
    local = R[0, k].T @ (p - c[0, k])
    moved = c[1, k] + R[1, k] @ local
    speed_contact = float((moved - p).norm() / 1e-4)
    speed_centre = float((c[1, k] - c[0, k]).norm() / 1e-4)
    assert speed_centre > 0.01 and speed_contact < 1e-3 * speed_centre + 1e-6


def test_object_speed_moves_objects_faster_and_leaves_the_camera_and_v2_alone():
    """DomainConfig.object_speed (a candidate world's knob): 1.0 reproduces the named domain exactly; 2.0 makes
    the objects' path speed twice as fast at the start while the cameras stay the same."""
    kw = dict(frames=3, height=32, width=48, domain="pretrain", seed=5)
    base = render.generate_clips(1, **kw)
    same = render.generate_clips(1, **kw, shift={"object_speed": 1.0})
    fast = render.generate_clips(1, **kw, shift={"object_speed": 2.0})
    assert torch.equal(base.rgb, same.rgb) and torch.equal(base.track_world, same.track_world)
    assert torch.allclose(base.T_world_cam, fast.T_world_cam)
    dyn = base.track_dynamic[0] & fast.track_dynamic[0]
    step = [(c.track_world[0, 1] - c.track_world[0, 0]).norm(dim=-1)[dyn].median() for c in (base, fast)]
    assert 1.6 < float(step[1] / step[0]) < 2.4
