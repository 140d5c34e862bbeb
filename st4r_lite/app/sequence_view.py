"""The interactive 3D view of one sequence: a WorldTrack ``.npz`` file or a freshly generated synthetic clip
(``st4r-lite view``): reconstruction with a time slider, camera frustums and anchor track trails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch

from st4r_lite.app.views import checked_array, even_subsample, sequence_figure, write_html
from st4r_lite.errors import InputError
from st4r_lite.geometry import pinhole
from st4r_lite.world import render, worldtrack

__all__ = ["sequence_view_figure", "write_sequence_html"]


def _anchor_track_pixels(H: int, W: int, dynamic: np.ndarray | None, n: int = 150) -> np.ndarray:
    """Flat indices of anchor pixels to track: every pixel of a coarse grid, plus dynamic pixels first."""
    step = max(1, int(np.sqrt(H * W / n)))
    grid = np.zeros((H, W), bool)
    grid[step // 2::step, step // 2::step] = True
    picks = np.flatnonzero(grid)
    if dynamic is not None and dynamic.any():  # make sure the moving objects get trails
        dyn = np.flatnonzero(dynamic.reshape(-1))
        picks = np.union1d(dyn[even_subsample(len(dyn), n // 2)], picks[even_subsample(len(picks), n // 2)])
    return picks


def sequence_view_figure(npz=None, domain: str = "pretrain", frames: int = 16, height: int = 64,
                         width: int = 96, seed: int = 0) -> go.Figure:
    """The figure of ``st4r-lite view``: an interactive world-frame view of one sequence.

    Without ``npz``: one synthetic clip (``render.generate_clips``): each frame's world points, its camera, and
    trails of ~150 anchor pixels (moving objects included). With ``npz`` (WorldTrack / TAPVid-3D file, via
    ``worldtrack.load_npz``): depth unprojected to world points (if the file has depth), the cameras
    re-based on frame 0 (T_world_cam_t = E_0 E_t⁻¹ with E = extrinsics_w2c) and the tracks moved to that
    world frame.
    """
    if npz is None:
        clip = render.generate_clips(1, frames=frames, height=height, width=width, domain=domain, seed=seed)
        H, W = clip.height, clip.width
        picks = _anchor_track_pixels(H, W, clip.track_dynamic[0].cpu().numpy())
        tracks = clip.track_world[0].reshape(clip.num_frames, H * W, 3)[:, picks]
        visible = clip.track_visible[0].reshape(clip.num_frames, H * W)[:, picks]
        fig = sequence_figure(clip.points_world[0], clip.rgb[0].permute(0, 2, 3, 1), clip.T_world_cam[0],
                              clip.K[0], tracks=tracks, track_visible=visible,
                              title=f"synthetic '{domain}' clip, seed {seed}: world points, cameras, tracks")
        return fig

    npz = Path(npz)
    if not npz.is_file():
        raise FileNotFoundError(f"--npz {str(npz)!r} does not exist or is not a file")
    seq = worldtrack.load_npz(npz)
    E = torch.as_tensor(checked_array(seq.extrinsics_w2c, "extrinsics_w2c", (None, 4, 4)))
    T_world_cam = E[:1] @ torch.linalg.inv(E)  # world = camera of frame 0
    fx, fy, cx, cy = checked_array(seq.fx_fy_cx_cy, "fx_fy_cx_cy", (4,)).tolist()
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    tracks_cam = torch.as_tensor(checked_array(seq.tracks_XYZ, "tracks_XYZ", (E.shape[0], None, 3)))
    tracks = pinhole.transform_points(T_world_cam, tracks_cam)
    visible = checked_array(seq.visibility, "visibility", tuple(tracks.shape[:2]), dtype=bool)
    points = colors = valid = None
    if getattr(seq, "depth_map", None) is not None:
        depth = torch.as_tensor(checked_array(seq.depth_map, "depth_map", (E.shape[0], None, None)))
        points = pinhole.transform_points(T_world_cam, pinhole.depth_to_pointmap(depth, K))
        valid = (torch.isfinite(depth) & (depth > 0)).numpy()
        images = checked_array(seq.images, "images", tuple(depth.shape) + (3,), dtype=None)
        colors = images if images.dtype == np.uint8 else np.clip(images.astype(np.float64), 0, 1)
    images = checked_array(seq.images, "images", (E.shape[0], None, None, 3), dtype=None)
    fig = sequence_figure(points, colors, T_world_cam, K, tracks=tracks, valid=valid, track_visible=visible,
                          image_size=images.shape[1:3], title=f"{npz.name}: world frame = camera of frame 0")
    return fig


def write_sequence_html(out, npz=None, domain: str = "pretrain", frames: int = 16, height: int = 64,
                        width: int = 96, seed: int = 0) -> Path:
    """Write ``sequence_view_figure(...)`` as one self-contained HTML file ``out``; returns its path."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"--out {str(out)!r} is a folder; give an .html file name inside it")
    return write_html(sequence_view_figure(npz, domain, frames, height, width, seed), out)
