# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/st4r-lite/st4r_lite/blob/main/notebooks/02_synthetic_4d_world.ipynb)
#
# # 02 · The synthetic 4D world: scenes, exact ground truth, two domains
#
# **Goals.** After this notebook you can
# 1. say how a synthetic clip is made: a textured room, moving textured primitives (spheres, boxes, cylinders),
#    rigid and non-rigid motion, a moving camera with a random focal length, all ray-cast analytically;
# 2. read its **exact, dense ground truth**: depth, object id, world points, cameras, and for *every* anchor
#    pixel its 3D track in the world and its visibility in every frame;
# 3. check that ground truth yourself (a visible track projects onto its own surface point);
# 4. tell the `pretrain` domain from the held-out `wild` domain, and measure how often points get occluded;
# 5. write and read a sequence as a WorldTrack `.npz` file, the format of the benchmark.
#
# **Time.** Quick mode (CPU): under a minute. Full mode: one to two minutes on a CPU.
#
# Why synthetic? St4RTrack learns *where every anchor pixel is at time t*, in the world. Real videos do not come
# with that label; the paper pretrains on synthetic data (Kubric, PointOdyssey, Dynamic Replica) where it is
# known. Here the data is generated on the fly by a few hundred lines of PyTorch, so nothing is downloaded.

# %%
# Setup. On Colab this installs st4r_lite from its repository and leaves Colab's own torch alone.
import os
import subprocess
import sys

if "google.colab" in sys.modules and not os.path.isdir("st4r_lite_repo"):
    subprocess.run(["git", "clone", "--depth", "1", "https://github.com/st4r-lite/st4r_lite", "st4r_lite_repo"],
                   check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "./st4r_lite_repo"], check=True)
    os.environ["ST4R_DATA"] = os.path.abspath("st4r_lite_repo/data")  # the shipped checkpoint and results

import json
import tempfile
import time
from pathlib import Path

import plotly.express as px
import plotly.graph_objects as go
import torch

from st4r_lite.geometry import pinhole
from st4r_lite.app import views
from st4r_lite.world import render
from st4r_lite.studies import world_stats
from st4r_lite.world import benchmarks, worldtrack
from st4r_lite.world.raycast import intersect_spheres
from st4r_lite.runtime import quick_mode, repo_data_dir
from st4r_lite.world.scene import DOMAIN_CONFIGS, camera_poses, sample_scene
from st4r_lite.world.textures import FAMILIES, sample_material, shade_albedo, stack_materials

QUICK = quick_mode()
views.use_notebook_renderer()   # figures show in JupyterLab, Colab and exported HTML
FRAMES = 8 if QUICK else 16
H, W = 64, 96
print(f"quick mode: {QUICK}; clips of {FRAMES} frames at {H}x{W}")

# %% [markdown]
# ## 1. A scene is a handful of random numbers
#
# `scene.sample_scene(seed, ...)` draws every parameter of one clip from its own `torch.Generator`, so a clip is
# a pure function of its seed (and `generate_clips(B, seed=s)` makes clips s, s+1, ..., independent of B).
#
# - **Room**: an axis-aligned box around the camera (floor, walls, ceiling), so every ray hits something.
# - **Objects**: 3–6 primitives (`pretrain`), each a *unit* sphere, box or capped cylinder placed by
#   x = R(τ) diag(s(τ)) x_local + c(τ): a smooth random path c(τ), a spin R(τ), and for non-rigid objects an
#   anisotropic pulsing scale s(τ) (the analytic non-rigid motion).
# - **Camera**: one of three smooth trajectories (orbit, handheld pan, forward walk) plus hand shake, and a
#   random horizontal field of view of 45–75°, i.e. a focal length f = (W/2) / tan(fov/2).

# %%
spec = sample_scene(7, DOMAIN_CONFIGS["pretrain"], H, W)
fov = 2 * torch.atan(torch.tensor(W / 2 / spec.focal)).rad2deg()
print(f"camera trajectory: {spec.camera_kind}; focal {spec.focal:.1f} px (horizontal FOV {fov:.0f} deg)")
print(f"room from {spec.room_lo.tolist()} to {spec.room_hi.tolist()} (metres; y points down)")
kinds = ["sphere", "box", "cylinder"]
for k in range(len(spec.kind)):
    rigid = "non-rigid" if spec.scale_amp[k].abs().sum() > 0 else "rigid"
    print(f"  object {k + 1}: {kinds[int(spec.kind[k])]:8s} {rigid:9s} size {spec.s0[k].numpy().round(2)}, "
          f"texture '{FAMILIES[int(spec.materials.family[k + 2])]}'")
assert 45 <= fov <= 75

# %% [markdown]
# ### Ray casting, analytically
#
# A camera ray through pixel (u, v) has direction d = R_cam ((u − cx)/f, (v − cy)/f, 1) from the camera
# centre o. In an object's own frame the ray is o_l + t d_l with o_l = A⁻¹(o − c), d_l = A⁻¹ d,
# A = R diag(s). For the unit sphere |x|² = 1 this is a quadratic,
#
# $$|d_l|^2 t^2 + 2\langle o_l, d_l\rangle t + |o_l|^2 - 1 = 0, \qquad
#   t = \frac{-b - \sqrt{b^2 - ac}}{a}.$$
#
# Because d is not normalised (its z-component in the camera is 1), the hit parameter t **is the z-depth**.
# Boxes use the slab test, cylinders a 2D quadratic plus two caps. Every pixel keeps its nearest hit.

# %%
o = torch.tensor([[[0.0, 0.0, -3.0]]])                         # (T=1, K=1, 3): 3 units in front of the sphere
d = torch.tensor([[[[0.0, 0.3], [0.0, 0.0], [1.0, 1.0]]]])     # (T, K, 3, P=2): straight on, and sideways
t = intersect_spheres(o, d)
print("hit parameters:", t)
assert torch.isclose(t[0, 0, 0], torch.tensor(2.0)), "the straight ray enters the unit sphere at z = -1"
assert 2.0 < t[0, 0, 1] < 3.0, "the slanted ray still hits (it passes 0.86 from the centre), a bit later"

# %% [markdown]
# ### Textures live in object coordinates
#
# The colour of a surface point is a function of its **local** coordinates x_local (metres in the scene for
# the room), albedo(x) = (1 − w(x)) a + w(x) b with a family-specific weight w (checker, stripes, value-noise
# blobs for `pretrain`; dots, marble, rings for `wild`). So a point keeps its colour as its object moves,
# spins and stretches: the texture carries the correspondence that a network can learn to track.
# Below: each family painted on a 1 m square of local coordinates.

# %%
gen = torch.Generator().manual_seed(0)
grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 48), indexing="ij"), -1)
coords = torch.cat([grid, torch.zeros(48, 48, 1)], -1).reshape(-1, 3).double()
swatches = []
for fam in FAMILIES:
    palette = "vivid" if fam in DOMAIN_CONFIGS["pretrain"].object_families else "muted"
    mats = stack_materials([sample_material(gen, (fam,), palette, (1.0, 2.0))], gen).to(dtype=torch.float64)
    albedo = shade_albedo(coords, torch.zeros(len(coords), dtype=torch.long), mats)
    swatches.append(albedo.reshape(48, 48, 3))
swatches = torch.stack(swatches)
# the same local point always gets the same colour: shading is a pure function of (coords, material)
assert torch.equal(albedo, shade_albedo(coords, torch.zeros(len(coords), dtype=torch.long), mats))
fig = px.imshow((swatches * 255).byte().numpy(), facet_col=0, facet_col_wrap=6)
for i, fam in enumerate(FAMILIES):
    fig.layout.annotations[i].text = f"{fam} ({'pretrain' if i < 3 else 'wild'})"
fig.update_layout(height=230, margin=dict(l=0, r=0, t=30, b=0)).update_xaxes(visible=False).update_yaxes(visible=False)
fig.show()

# %% [markdown]
# ### Three kinds of camera motion
#
# Orbit (about a point in front), handheld (a slow pan from a fixed spot, more shake) and forward (walking
# into the room). Below: the camera centres of one clip of each kind over 40 frames, seen from above (x, z).

# %%
fig = go.Figure()
tau = torch.arange(40, dtype=torch.float64)
shown = {}
for seed in range(30):
    s = sample_scene(seed, DOMAIN_CONFIGS["pretrain"], H, W)
    if s.camera_kind in shown:
        continue
    R_cam, centre = camera_poses(s.camera_kind, s.camera, tau)
    shown[s.camera_kind] = (centre[-1] - centre[0]).norm().item()
    fig.add_trace(go.Scatter(x=centre[:, 0], y=centre[:, 2], mode="lines+markers", name=s.camera_kind))
fig.update_layout(xaxis_title="x (m)", yaxis_title="z (m, forward)", height=300, yaxis_scaleanchor="x",
                  margin=dict(l=0, r=0, t=10, b=0))
fig.show()
print({k: f"{v:.2f} m travelled in 40 frames" for k, v in shown.items()})
assert set(shown) == {"orbit", "handheld", "forward"}

# %% [markdown]
# ## 2. A clip and its ground truth
#
# `render.generate_clips` renders B clips at once and returns a `Clip` (shapes in its docstring). The **world
# frame is the camera of frame 0** (the anchor), as in St4RTrack. Per frame: `rgb`, `depth` (z-depth, metres),
# `object_id` (0 = room), `points_world`, `K`, `T_world_cam`. Per anchor pixel: `track_world` (T, H, W, 3),
# `track_visible` (T, H, W) and `track_dynamic` (H, W).
#
# The track of an anchor pixel is computed, not estimated: the ray of pixel p in frame 0 hits object k at
# local point x_local, and at time t that point is at A_k(t) x_local + c_k(t) (room points do not move).
# It is **visible in frame t** when it projects inside frame t and the ray through its exact projection
# hits that same point first (within 1 % of its depth).

# %%
clip = render.generate_clips(2, frames=FRAMES, height=H, width=W, domain="pretrain", seed=7)
b = 0
frames_rgb = (clip.rgb[b].permute(0, 2, 3, 1) * 255).byte().numpy()
px.imshow(frames_rgb, animation_frame=0, title="pretrain clip, seed 7 (slider: frame)").update_layout(
    height=330, margin=dict(l=0, r=0, t=40, b=0)).show()
panels = torch.stack([clip.depth[b, 0] / clip.depth[b, 0].max(), clip.object_id[b, 0] / clip.object_id[b].max(),
                      clip.track_dynamic[b].float(), clip.track_visible[b, -1].float()])
fig = px.imshow(panels.numpy(), facet_col=0, color_continuous_scale="viridis")
for i, name in enumerate(["depth (frame 0)", "object id", "dynamic anchor pixels", "visible in the last frame"]):
    fig.layout.annotations[i].text = name
fig.update_layout(height=230, margin=dict(l=0, r=0, t=30, b=0), coloraxis_showscale=False).show()

# %% [markdown]
# ### Check the ground truth yourself
#
# 1. At t = 0 the track is the anchor's depth unprojected: X = z K⁻¹ (u, v, 1) (camera 0 = world).
# 2. Frame t's world points are its depth unprojected in its own camera and moved by `T_world_cam[t]`.
# 3. A **visible** track projects (with frame t's camera) onto a pixel whose rendered surface is that very
#    object point: re-cast the ray through its projection with `render.cast_rays` and compare the hit.
# 4. A static (room) point never moves.

# %%
K = clip.K[b]
anchor = pinhole.depth_to_pointmap(clip.depth[b, 0], K)
assert torch.allclose(clip.track_world[b, 0], anchor, atol=1e-4), "t = 0 track = unprojected anchor depth"
t = FRAMES - 1
moved_t = pinhole.transform_points(clip.T_world_cam[b, t], pinhole.depth_to_pointmap(clip.depth[b, t], K))
assert torch.allclose(moved_t, clip.points_world[b, t], atol=1e-4)

track = clip.track_world[b].reshape(FRAMES, -1, 3)                               # (T, N=H*W, 3)
visible = clip.track_visible[b].reshape(FRAMES, -1)
cam = pinhole.transform_points(pinhole.invert_pose(clip.T_world_cam[b]), track)  # world -> camera t
uv = pinhole.project(cam, K)                                                    # (T, N, 2) sub-pixel
hits = render.cast_rays(clip.seeds[b], uv, torch.arange(FRAMES), height=H, width=W, domain="pretrain")
err = (hits.points_world - track).norm(dim=-1)[visible]
print(f"visible track points: {int(visible.sum())}; ray hit = track point for {(err < 1e-3).float().mean():.2%}")
assert (err < 1e-3).float().mean() > 0.99

room = clip.object_id[b, 0].reshape(-1) == 0
drift = (track - track[:1]).norm(dim=-1).amax(0)
print(f"room points: max drift {drift[room].max():.1e} m; dynamic points move up to {drift.max():.2f} m")
assert drift[room].max() < 1e-5

# %% [markdown]
# ## 3. Two domains: `pretrain` and the held-out `wild` shift
#
# The model is pretrained on `pretrain`. `wild` stands in for in-the-wild video: the scene *statistics* and
# the *image formation* change, never the labels (its ground truth is exact too, but is used for evaluation
# only, never by adaptation). `render.DOMAIN_SHIFT` lists every difference:

# %%
for aspect, values in render.DOMAIN_SHIFT.items():
    print(f"{aspect:16s} pretrain: {values['pretrain']:38s} wild: {values['wild']}")
side = torch.stack([render.generate_clips(1, frames=1, height=H, width=W, domain=d, seed=s).rgb[0, 0]
                    for s in (7, 8, 9) for d in render.DOMAINS])
fig = px.imshow((side.permute(0, 2, 3, 1) * 255).byte().numpy(), facet_col=0, facet_col_wrap=6)
for i in range(6):
    fig.layout.annotations[i].text = f"{render.DOMAINS[i % 2]} seed {7 + i // 2}"
fig.update_layout(height=220, margin=dict(l=0, r=0, t=30, b=0)).update_xaxes(visible=False).update_yaxes(
    visible=False).show()

# %% [markdown]
# ### How often are points occluded, and how often do they leave the view?
#
# `world_stats.occlusion_statistics` counts, over all anchor tracks: visible in the last frame, hidden behind
# something while inside the image at some frame, hidden and then visible again, leaving the image, dynamic.
# The recorded numbers for 16 clips of 16 frames (`python -m st4r_lite.studies.world_stats`) are in
# `data/world_stats.json`, together with the generation speed.

# %%
n = 4 if QUICK else 16
stats = {d: world_stats.occlusion_statistics(render.generate_clips(n, frames=FRAMES, height=H, width=W, domain=d,
                                                            seed=0)) for d in render.DOMAINS}
for d, s in stats.items():
    print(d, s)
assert all(s["occluded_some_frame"] > 0.02 and s["leaves_image"] > 0.05 for s in stats.values())
assert stats["wild"]["dynamic"] > stats["pretrain"]["dynamic"]
recorded = repo_data_dir() / "world_stats.json"
if recorded.is_file():
    rec = json.loads(recorded.read_text())
    print("recorded occlusion statistics:", json.dumps(rec["occlusion"], indent=1))
    print("recorded clips/s on", rec["settings"]["device"], ":", json.dumps(rec["clips_per_s"], indent=1))
start = time.perf_counter()
render.generate_clips(2, frames=16, height=H, width=W, domain="pretrain", seed=100)
print(f"here and now: {2 / (time.perf_counter() - start):.1f} pretrain clips/s (16 frames, {H}x{W}, full GT)")

# %% [markdown]
# ## 4. WorldTrack `.npz` files
#
# The benchmark format is TAPVid-3D's, extended by WorldTrack: `images_jpeg_bytes`, `tracks_XYZ` (T, N, 3)
# **in each frame's camera**, `visibility` (T, N), `fx_fy_cx_cy`, `extrinsics_w2c` (T, 4, 4), `depth_map`,
# `queries_xyt`. A file may live in any world frame; the benchmark re-bases it on frame 0,
# E_t ← E_t E_0⁻¹, i.e. T_world_cam_t = E_0 E_t⁻¹, and a track moves to the world with x_w = T_world_cam_t x_t.
# `worldtrack.load_npz` also reads the official release files (frames as a pickled object array of bytes,
# no depth, no queries). `st4r-lite generate` and `benchmarks.write_named_benchmark("worldtrack-lite", out)`
# write whole benchmark sets; the same arguments always give byte-identical files.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = worldtrack.save_npz(Path(tmp) / "seq.npz", worldtrack.clip_to_sequence(clip, b))
    print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB")
    seq = worldtrack.load_npz(path)
st = worldtrack.sequence_tensors(seq)  # video (T,3,H,W) in [0,1], world tracks, visibility, K, poses, dynamic
print({k: tuple(v.shape) for k, v in vars(st).items() if isinstance(v, torch.Tensor)})
assert torch.allclose(st.tracks_world, track, atol=1e-4), "the file's camera tracks re-based = world tracks"
assert torch.equal(st.visibility, visible)
assert (st.video - clip.rgb[b]).abs().mean() < 0.03, "JPEG (quality 95) is close to the render"
print("benchmarks:", {k: v.description for k, v in benchmarks.BENCHMARKS.items()})

# %% [markdown]
# ## 5. The clip in 3D, with a time slider
#
# Frame t's world points (its `recon` target ¹Xᵗ_t), the cameras up to t (red: camera t) and the trails of
# some anchor tracks (their `track` target ¹X¹_t); a track's head turns grey while it is occluded. Press ▶.

# %%
dyn = clip.track_dynamic[b].reshape(-1)
picks = torch.cat([dyn.nonzero()[:: max(1, int(dyn.sum()) // 60), 0], torch.arange(0, H * W, 97)])
fig = views.sequence_figure(clip.points_world[b], clip.rgb[b].permute(0, 2, 3, 1), clip.T_world_cam[b], K,
                            tracks=track[:, picks], track_visible=visible[:, picks],
                            max_points_per_frame=3000 if QUICK else 12000,
                            title="pretrain clip in the world frame (camera 0)")
fig.show()
trails = views.track_trails_figure(track[:, dyn.nonzero()[:, 0]], visible[:, dyn.nonzero()[:, 0]], max_tracks=80,
                                   title="dynamic anchor tracks (gaps = occluded or out of view)")
views.add_camera_frustums(trails, clip.T_world_cam[b], K, H, W, scale=0.3).show()

# %% [markdown]
# ## Exercise
# The visibility label uses the exact ray through each track's projection. A cheaper rule reads the rendered
# depth at the **nearest pixel** and calls a point visible when |z − D| ≤ 2 % · D. Where does the cheap rule
# disagree with the label, and why? (Hint: look at the floor far away, and at object silhouettes.)
#
# <details><summary>Solution (for the teacher to reveal)</summary>
#
# ```python
# u, v = uv[..., 0].round().long(), uv[..., 1].round().long()
# inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (cam[..., 2] > 0)
# D = clip.depth[b].reshape(FRAMES, -1).gather(1, (v.clamp(0, H - 1) * W + u.clamp(0, W - 1)))
# cheap = inside & ((cam[..., 2] - D).abs() <= 0.02 * D)
# wrong = cheap != visible
# print(f"disagreement: {wrong.float().mean():.2%}")
# # On a grazing floor half a pixel changes the depth by more than 2 %, so visible floor points are called
# # occluded; on silhouettes the pixel centre misses the object. Both are wrong "occlusions".
# ```
# </details>

# %%
u, v = uv[..., 0].round().long(), uv[..., 1].round().long()
inside = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (cam[..., 2] > 0)
D = clip.depth[b].reshape(FRAMES, -1).gather(1, (v.clamp(0, H - 1) * W + u.clamp(0, W - 1)))
cheap = inside & ((cam[..., 2] - D).abs() <= 0.02 * D)
wrong = cheap != visible
print(f"the nearest-pixel rule disagrees with the exact label on {wrong.float().mean():.2%} of (t, track)")
assert wrong.float().mean() < 0.2
