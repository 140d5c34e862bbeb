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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/st4r-lite/st4r_lite/blob/main/notebooks/01_pointmaps.ipynb)
#
# # 01 · Cameras, depth and the two time-dependent pointmaps
#
# **Goals.** After this notebook you can
# 1. project a 3D point to a pixel and back (the pinhole camera, OpenCV convention);
# 2. turn a depth map into a *pointmap* (one 3D point per pixel);
# 3. move points between camera frames with a pose `T_world_cam`;
# 4. say precisely what St4RTrack predicts for a pair (anchor frame 0, frame j):
#    the **tracking** pointmap ¹X¹_j and the **reconstruction** pointmap ¹Xʲ_j.
#
# **Time.** Quick mode (CPU): under a minute. Full mode (GPU): about a minute.
#
# Conventions used everywhere in `st4r_lite` ([docs/method.md §1](../docs/method.md#s1)): cameras look along +z with x right and y down;
# pixels are (u, v) = (column, row) with pixel centres at integer coordinates;
# `T_world_cam` is the 4×4 matrix that maps camera coordinates to world coordinates;
# the **world is the camera of the anchor frame** (frame 0).

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

import torch

from st4r_lite.geometry import pinhole
from st4r_lite.app import views
from st4r_lite.world import render
from st4r_lite.runtime import pick_device, quick_mode

QUICK = quick_mode()
device = pick_device()
views.use_notebook_renderer()   # figures show in JupyterLab, Colab and exported HTML
print(f"quick mode: {QUICK}, device: {device}")

# %% [markdown]
# ## 1. The pinhole camera
#
# A point (x, y, z) in camera coordinates lands on pixel
#
# $$u = f\,\frac{x}{z} + c_x, \qquad v = f\,\frac{y}{z} + c_y, \qquad
#   K = \begin{pmatrix} f & 0 & c_x\\ 0 & f & c_y \\ 0 & 0 & 1\end{pmatrix}.$$
#
# Going back needs the depth z: (x, y, z) = z · K⁻¹ (u, v, 1). Project then unproject must give the point back.

# %%
H, W = 64, 96
K = pinhole.intrinsics_matrix(80.0, (W - 1) / 2, (H - 1) / 2)
points = torch.tensor([[0.3, -0.2, 2.0], [0.0, 0.0, 1.0], [-1.0, 0.5, 4.0]])
pixels = pinhole.project(points, K)
back = pinhole.unproject(pixels, points[:, 2], K)
print("K =\n", K)
print("pixels (u, v):\n", pixels)
assert torch.allclose(back, points, atol=1e-5), "project then unproject must be the identity"

# %% [markdown]
# ## 2. From depth to a pointmap
#
# A **pointmap** stores one 3D point per pixel, an (H, W, 3) array: unproject every pixel with its depth.
# DUSt3R-family networks predict pointmaps directly, instead of depth + camera.
# We take a scene from the synthetic 4D world (notebook 02 shows how it is made).

# %%
clip = render.generate_clips(1, frames=8 if QUICK else 16, height=H, width=W, seed=3, device=device).to("cpu")
rgb0, depth0, K0 = clip.rgb[0, 0], clip.depth[0, 0], clip.K[0]
pointmap0 = pinhole.depth_to_pointmap(depth0, K0)  # (H, W, 3) in camera 0 = the world
print("pointmap shape:", tuple(pointmap0.shape))
# Frame 0's camera IS the world frame, so this equals the ground-truth world points of frame 0.
assert torch.allclose(pointmap0, clip.points_world[0, 0], atol=1e-3)
colors0 = clip.rgb[0, 0].permute(1, 2, 0)
views.pointmap_figure(pointmap0, colors0, title="frame 0 as a pointmap (camera 0 = world)").show()

# %% [markdown]
# ## 3. Poses: moving points between frames
#
# `T_world_cam[j]` maps frame j's camera coordinates to the world:
# X_world = R · X_cam + t. Its inverse `T_cam_world` does the opposite. Frame j's depth, unprojected in its own
# camera and moved by `T_world_cam[j]`, gives frame j's surface in the world.

# %%
j = clip.num_frames - 1
T_world_cam_j = clip.T_world_cam[0, j]
points_cam_j = pinhole.depth_to_pointmap(clip.depth[0, j], K0)
points_world_j = pinhole.transform_points(T_world_cam_j, points_cam_j)
err = (points_world_j - clip.points_world[0, j]).norm(dim=-1).max()
print(f"max error of frame {j}'s world points: {err:.2e} m")
assert err < 1e-3
R = T_world_cam_j[:3, :3]
assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5), "a rotation matrix is orthonormal"

# %% [markdown]
# ## 4. What St4RTrack predicts for a pair (0, j)
#
# Both outputs are expressed in the **anchor camera's frame** (the world), and both are **time-dependent**:
#
# | output | symbol | meaning | which pixels |
# |---|---|---|---|
# | `track` (head 1) | ¹X¹_j | where each *anchor* pixel's surface point is **at time j** | anchor pixels |
# | `recon` (head 2) | ¹Xʲ_j | the surface seen in frame j **at time j** | frame j's pixels |
#
# For j = 0 both are the anchor's own reconstruction. For a static pixel ¹X¹_j = ¹X¹_0: it never moves; a
# pixel on a moving object moves with it. That is how camera motion (in `recon`, through the pose) and object
# motion (in `track`) come apart.

# %%
track_j = clip.track_world[0, j]      # ¹X¹_j: (H, W, 3)
recon_j = clip.points_world[0, j]     # ¹Xʲ_j: (H, W, 3)
dynamic = clip.track_dynamic[0]       # (H, W) anchor pixels on moving objects
moved = (track_j - clip.track_world[0, 0]).norm(dim=-1)
print(f"dynamic anchor pixels: {dynamic.float().mean():.1%}")
print(f"static pixels, max motion: {moved[~dynamic].max():.2e} m;  dynamic pixels, mean motion: "
      f"{moved[dynamic].mean() if dynamic.any() else 0.0:.3f} m")
assert moved[~dynamic].max() < 1e-4, "static points never move in the world"
fig = views.sequence_figure(
    clip.track_world[0], colors=colors0.expand(clip.num_frames, H, W, 3),
    T_world_cam=clip.T_world_cam[0], K=K0, max_points_per_frame=4000 if QUICK else 20000,
)
fig.update_layout(title="tracking pointmaps ¹X¹_t over time (anchor pixels, world frame)")
fig.show()

# %% [markdown]
# ## Exercise
# Which anchor pixels are still visible in frame j? Project ¹X¹_j into frame j (world → camera j → pixels) and
# compare its depth with frame j's depth map at that pixel. Count how many agree with `clip.track_visible`.
#
# <details><summary>Solution (for the teacher to reveal)</summary>
#
# ```python
# pts_cam = pinhole.transform_points(pinhole.invert_pose(T_world_cam_j), track_j)
# uv = pinhole.project(pts_cam, K0).round().long()
# inside = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H) & (pts_cam[..., 2] > 0)
# u, v = uv[..., 0].clamp(0, W - 1), uv[..., 1].clamp(0, H - 1)
# visible = inside & (pts_cam[..., 2] <= clip.depth[0, j][v, u] * 1.02)
# print((visible == clip.track_visible[0, j]).float().mean())
# ```
# </details>

# %%
pts_cam = pinhole.transform_points(pinhole.invert_pose(T_world_cam_j), track_j)
uv = pinhole.project(pts_cam, K0).round().long()
inside = (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H) & (pts_cam[..., 2] > 0)
u, v = uv[..., 0].clamp(0, W - 1), uv[..., 1].clamp(0, H - 1)
visible = inside & (pts_cam[..., 2] <= clip.depth[0, j][v, u] * 1.02)
agreement = (visible == clip.track_visible[0, j]).float().mean().item()
print(f"agreement with the ground-truth visibility: {agreement:.1%}")
assert agreement > 0.95
