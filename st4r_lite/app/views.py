"""Plotly 3D teaching views: pointmaps, sequences with a time slider, track trails, camera frustums, HTML.

Dimension letters: T frames, H image rows, W image columns, N tracks (or points), E frustum edges (8).

Every view is a plain ``plotly.graph_objects.Figure`` (time via Plotly *frames* + a slider and play button,
no FigureWidget), so it works in JupyterLab, Colab (plotly >= 5.10) and exported HTML. Inputs may be torch
tensors or numpy arrays; they are converted once. Conventions are those of ``st4r_lite.geometry.pinhole``: OpenCV
cameras (x right, y down, z forward), ``T_world_cam`` maps camera -> world, pixels (u, v) = (column, row)
with centres at integers, so the image spans u in [-0.5, W - 0.5]. The default 3D view looks along +z with
y pointing down, like the anchor camera (the world frame).
"""

from __future__ import annotations

import colorsys
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import torch

from st4r_lite.errors import InputError
from st4r_lite.geometry.pinhole import transform_points, unproject
from st4r_lite.runtime import atomic_write

__all__ = [
    "MAX_POINTS_PER_FRAME", "pointmap_figure", "sequence_figure", "track_trails_figure",
    "camera_frustum_lines", "add_camera_frustums", "write_html", "use_notebook_renderer",
]

MAX_POINTS_PER_FRAME = 50_000  # beyond this a browser animates 3D scatter plots sluggishly


# ----------------------------------------------------------------------------------------------- inputs
def checked_array(x, name: str, shape: tuple | None, dtype=np.float64) -> np.ndarray:
    """``x`` (tensor or array) as numpy, checked against ``shape`` (ints must match, None is free)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    ok = shape is None or (x.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape)))
    if not ok:
        spec = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {spec}, got {tuple(x.shape)}")
    return x.astype(dtype, copy=False) if dtype is not None else x


def _colors01(colors, name: str, shape: tuple) -> np.ndarray:
    c = checked_array(colors, name, shape, dtype=None)
    if c.dtype == np.uint8:
        return c.astype(np.float64) / 255.0
    c = c.astype(np.float64)
    finite = c[np.isfinite(c)]
    if finite.size and (finite.min() < -1e-3 or finite.max() > 1 + 1e-3):
        raise ValueError(f"{name} must be RGB in [0, 1] (got values in [{finite.min():.3g}, "
                         f"{finite.max():.3g}]); "
                         "for network images in [-1, 1] pass (img + 1) / 2")
    return np.clip(np.nan_to_num(c), 0.0, 1.0)


def _hex(rgb01: np.ndarray) -> list[str]:
    """(N, 3) in [0, 1] -> ['#rrggbb', ...]."""
    rgb = np.round(np.clip(rgb01, 0, 1) * 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb]


def _track_colors(n: int) -> list[str]:
    """One distinct hue per track (golden-ratio hue steps, so neighbours differ)."""
    hsv = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95) for i in range(n)]
    return _hex(np.array(hsv).reshape(n, 3))


def even_subsample(n: int, k: int) -> np.ndarray:
    """Deterministic, evenly spread indices: all of range(n) if n <= k, else k of them."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def _select_points(points: np.ndarray, colors: np.ndarray | None, valid: np.ndarray | None,
                   max_points: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Flatten (H, W, 3) -> the valid, finite points, evenly subsampled to at most ``max_points``."""
    flat = points.reshape(-1, 3)
    keep = np.isfinite(flat).all(-1)
    if valid is not None:
        keep &= valid.reshape(-1).astype(bool)
    idx = np.flatnonzero(keep)
    idx = idx[even_subsample(len(idx), max_points)]
    return flat[idx], (None if colors is None else colors.reshape(-1, 3)[idx])


def _check_max(max_points: int, name: str) -> None:
    if not 1 <= max_points <= MAX_POINTS_PER_FRAME:
        raise ValueError(f"{name} must be in [1, {MAX_POINTS_PER_FRAME}] (more makes the browser crawl), "
                         f"got {max_points}")


# ----------------------------------------------------------------------------------------------- traces
def _points_trace(xyz: np.ndarray, rgb: np.ndarray | None, name: str, size: float = 2.0) -> go.Scatter3d:
    if rgb is None:  # colour by depth z, the anchor camera's view direction
        marker = dict(size=size, color=xyz[:, 2], colorscale="Viridis", showscale=False)
    else:
        marker = dict(size=size, color=_hex(rgb))
    return go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", marker=marker, name=name,
                        hoverinfo="skip")


def _polylines(paths: list[np.ndarray], colors: list[str]) -> tuple[list, list, list, list]:
    """Join polylines (each (L, 3)) into x, y, z lists with None gaps and a per-vertex colour list."""
    xs, ys, zs, cs = [], [], [], []
    for path, c in zip(paths, colors):
        xs += path[:, 0].tolist() + [None]
        ys += path[:, 1].tolist() + [None]
        zs += path[:, 2].tolist() + [None]
        cs += [c] * (len(path) + 1)
    return xs, ys, zs, cs


def _lines_trace(paths: list[np.ndarray], colors: list[str], name: str, width: float = 3.0) -> go.Scatter3d:
    """One line trace of many polylines. One colour for all -> a plain colour and a legend entry; several
    colours -> per-vertex colours and no legend entry (a legend swatch cannot show a colour list: Plotly
    draws it black and warns "Invalid color specifier")."""
    xs, ys, zs, cs = _polylines(paths, colors)
    uniform = len(set(colors)) <= 1
    color = (colors[0] if colors else "#444444") if uniform else cs
    return go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color=color, width=width), name=name,
                        hoverinfo="skip", showlegend=uniform)


def _scene(ranges: np.ndarray | None = None) -> dict:
    """3D scene looking along +z with y down; fixed axis ranges (for animations) when ``ranges`` (3, 2)."""
    scene = dict(xaxis_title="x (m)", yaxis_title="y (m)", zaxis_title="z (m)", aspectmode="data",
                 camera=dict(up=dict(x=0, y=-1, z=0), eye=dict(x=0.0, y=-0.6, z=-1.8)))
    if ranges is not None:
        extent = np.maximum(ranges[:, 1] - ranges[:, 0], 1e-6)
        scene.update(aspectmode="manual", aspectratio=dict(zip("xyz", (extent / extent.max()).tolist())))
        for axis, (lo, hi) in zip("xyz", ranges.tolist()):
            scene[f"{axis}axis"] = dict(range=[lo, hi], title=f"{axis} (m)")
    return scene


# ----------------------------------------------------------------------------------------------- figures
def pointmap_figure(points, colors=None, valid=None, max_points: int = 20_000, title: str | None = None,
                    marker_size: float = 2.0) -> go.Figure:
    """One pointmap as a coloured 3D point cloud.

    points: (H, W, 3); colors: (H, W, 3) in [0, 1] (or uint8) or None (coloured by z);
    valid: (H, W) bool or None.
    Invalid and non-finite points are dropped, then at most ``max_points`` are kept (evenly, deterministic).
    """
    _check_max(max_points, "max_points")
    pts = checked_array(points, "points", (None, None, 3))
    rgb = None if colors is None else _colors01(colors, "colors", pts.shape)
    ok = None if valid is None else checked_array(valid, "valid", pts.shape[:2], dtype=bool)
    xyz, rgb = _select_points(pts, rgb, ok, max_points)
    fig = go.Figure(_points_trace(xyz, rgb, "points", marker_size))
    fig.update_layout(title=title, scene=_scene(), margin=dict(l=0, r=0, t=40 if title else 0, b=0))
    return fig


def camera_frustum_lines(T_world_cam, K, height: int, width: int, scale: float = 0.2) -> np.ndarray:
    """Wireframe pyramids of cameras in world coordinates, as line segments.

    Each camera: apex at its centre (T_world_cam[:3, 3]); base = the 4 image corners (-0.5, -0.5),
    (W - 0.5, -0.5), (W - 0.5, H - 0.5), (-0.5, H - 0.5) unprojected at depth z = ``scale`` metres, i.e.
    X_world = T_world_cam (scale K⁻¹ [u, v, 1]). Edges: 4 apex -> corner, then 4 around the base.
    T_world_cam: (4, 4) or (T, 4, 4); K: (3, 3). Returns (E=8, 2, 3) or (T, 8, 2, 3) segment end points.
    """
    T = torch.as_tensor(checked_array(T_world_cam, "T_world_cam", None))
    if T.ndim not in (2, 3) or tuple(T.shape[-2:]) != (4, 4):
        raise ValueError(f"T_world_cam must have shape (4, 4) or (T, 4, 4), got {tuple(T.shape)}")
    Kt = torch.as_tensor(checked_array(K, "K", (3, 3)))
    if scale <= 0 or height < 1 or width < 1:
        raise ValueError(f"need scale > 0 and height, width >= 1; got scale={scale}, {height}x{width}")
    u0, v0, u1, v1 = -0.5, -0.5, width - 0.5, height - 0.5
    corners = torch.tensor([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], dtype=torch.float64)
    base_cam = unproject(corners, torch.full((4,), float(scale), dtype=torch.float64), Kt)
    apex_cam = torch.zeros(1, 3, dtype=torch.float64)
    verts = transform_points(T, torch.cat([apex_cam, base_cam]).expand(*T.shape[:-2], 5, 3))
    apex, base = verts[..., :1, :], verts[..., 1:, :]
    spokes = torch.stack([apex.expand_as(base), base], dim=-2)
    ring = torch.stack([base, base.roll(-1, dims=-2)], dim=-2)
    return torch.cat([spokes, ring], dim=-3).numpy()


def _frustum_paths(segments: np.ndarray) -> list[np.ndarray]:
    return [seg for seg in segments.reshape(-1, 2, 3)]


def add_camera_frustums(fig: go.Figure, T_world_cam, K, height: int, width: int, scale: float = 0.2,
                        color: str = "#444444", name: str = "cameras") -> go.Figure:
    """Add the cameras (wireframe pyramids, see ``camera_frustum_lines``) as one line trace; returns ``fig``.

    T_world_cam: (T, 4, 4) or (4, 4); K: (3, 3).
    """
    segments = camera_frustum_lines(T_world_cam, K, height, width, scale)
    paths = _frustum_paths(segments)
    fig.add_trace(_lines_trace(paths, [color] * len(paths), name, width=2.0))
    return fig


def track_trails_figure(tracks, visible=None, max_tracks: int = 300, title: str | None = None) -> go.Figure:
    """3D tracks as trails: one line trace per track (one hue each), plus a marker trace of their last points.

    tracks: (T, N, 3) world points; visible: (T, N) bool or None (invisible steps break the trail).
    At most ``max_tracks`` tracks are drawn (evenly chosen, deterministic): min(N, max_tracks) + 1 traces.
    """
    if max_tracks < 1:
        raise ValueError(f"max_tracks must be >= 1, got {max_tracks}")
    tr = checked_array(tracks, "tracks", (None, None, 3))
    vis = np.ones(tr.shape[:2], bool)
    if visible is not None:
        vis = checked_array(visible, "visible", tr.shape[:2], dtype=bool)
    idx = even_subsample(tr.shape[1], max_tracks)
    tr = np.where(vis[..., None], tr, np.nan)[:, idx]
    colors = _track_colors(len(idx))
    fig = go.Figure()
    for n, c in enumerate(colors):
        path = tr[:, n]
        fig.add_trace(go.Scatter3d(x=path[:, 0], y=path[:, 1], z=path[:, 2], mode="lines", showlegend=False,
                                   line=dict(color=c, width=3), name=f"track {idx[n]}", connectgaps=False))
    last = tr[-1]
    fig.add_trace(go.Scatter3d(x=last[:, 0], y=last[:, 1], z=last[:, 2], mode="markers", name="last position",
                               marker=dict(size=3, color=colors)))
    fig.update_layout(title=title, scene=_scene(), margin=dict(l=0, r=0, t=40 if title else 0, b=0))
    return fig


def _robust_ranges(chunks: list[np.ndarray]) -> np.ndarray:
    """(3, 2) axis ranges covering 99% of the points of every chunk (each (M, 3)), padded by 5%."""
    lo, hi = [], []
    for c in chunks:
        c = c[np.isfinite(c).all(-1)]
        if len(c):
            lo.append(np.quantile(c, 0.005, axis=0))
            hi.append(np.quantile(c, 0.995, axis=0))
    if not lo:
        return np.array([[-1.0, 1.0]] * 3)
    lo, hi = np.min(lo, axis=0), np.max(hi, axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-3)
    return np.stack([lo - pad, hi + pad], axis=-1)


def sequence_figure(points=None, colors=None, T_world_cam=None, K=None, tracks=None, valid=None,
                    track_visible=None, max_points_per_frame: int = 20_000, max_tracks: int = 300,
                    frustum_scale: float | None = None, image_size: tuple[int, int] | None = None,
                    title: str | None = None) -> go.Figure:
    """A sequence in the world frame with a time slider and a play button (one Plotly frame per time step).

    points: (T, H, W, 3) world points per frame (or None: tracks only); colors: (T, H, W, 3) in [0, 1]
    or None; valid: (T, H, W) bool or None; T_world_cam: (T, 4, 4) and K: (3, 3) -> frustums (cameras 0..t
    grey, camera t red); tracks: (T, N, 3) -> trails from time 0 to t and heads at t (grey where
    ``track_visible`` (T, N) is False); ``image_size`` (H, W) sizes the frustums when there are no points.
    Each frame keeps at most ``max_points_per_frame`` points (<= 50 000). Traces, in order: points, cameras,
    current camera, trails, heads (those that have inputs); axis ranges stay fixed so the view does not jump.
    """
    _check_max(max_points_per_frame, "max_points_per_frame")
    if points is None and tracks is None:
        raise ValueError("sequence_figure needs points (T, H, W, 3), tracks (T, N, 3), or both")
    pts = None if points is None else checked_array(points, "points", (None, None, None, 3))
    trk = None if tracks is None else checked_array(tracks, "tracks", (None if pts is None else pts.shape[0], None, 3))
    T = pts.shape[0] if pts is not None else trk.shape[0]
    rgb = None if colors is None or pts is None else _colors01(colors, "colors", pts.shape)
    ok = None if valid is None or pts is None else checked_array(valid, "valid", pts.shape[:3], dtype=bool)
    if (T_world_cam is None) != (K is None):
        raise ValueError("pass both T_world_cam (T, 4, 4) and K (3, 3) to draw cameras, or neither")
    if pts is not None:
        image_size = pts.shape[1:3]
    if T_world_cam is not None and image_size is None:
        raise ValueError("drawing cameras without points needs image_size=(H, W)")

    frames_xyz = [_select_points(pts[t], None if rgb is None else rgb[t], None if ok is None else ok[t],
                                 max_points_per_frame) for t in range(T)] if pts is not None else []
    chunks = [xyz for xyz, _ in frames_xyz]
    segments = None
    if T_world_cam is not None:
        poses = checked_array(T_world_cam, "T_world_cam", (T, 4, 4))
        if frustum_scale is None:
            z = np.concatenate([c[:, 2] for c in chunks] + ([trk[..., 2].ravel()] if trk is not None else []))
            z = z[np.isfinite(z)]
            depth_scale = float(np.median(np.abs(z))) if z.size else 1.0
            frustum_scale = float(np.clip(0.15 * abs(depth_scale), 0.02, 1.0))
        segments = camera_frustum_lines(poses, K, image_size[0], image_size[1], frustum_scale)
        chunks.append(segments.reshape(-1, 3))
    if trk is not None:
        idx = even_subsample(trk.shape[1], max_tracks)
        trk = trk[:, idx]
        tvis = None
        if track_visible is not None:
            tvis = checked_array(track_visible, "track_visible", (T, None), dtype=bool)[:, idx]
        tcolors = _track_colors(len(idx))
        chunks.append(trk.reshape(-1, 3))

    def traces_at(t: int) -> list:
        out = []
        if pts is not None:
            xyz, c = frames_xyz[t]
            out.append(_points_trace(xyz, c, "points"))
        if segments is not None:
            past = _frustum_paths(segments[: t + 1])
            out.append(_lines_trace(past, ["#888888"] * len(past), "cameras", 2))
            out.append(_lines_trace(_frustum_paths(segments[t]), ["#e4002b"] * 8, "camera t", 4))
        if trk is not None:
            out.append(_lines_trace([trk[: t + 1, n] for n in range(trk.shape[1])], tcolors, "trails", 3))
            heads = trk[t]
            hc = tcolors if tvis is None else [c if v else "#999999" for c, v in zip(tcolors, tvis[t])]
            out.append(go.Scatter3d(x=heads[:, 0], y=heads[:, 1], z=heads[:, 2], mode="markers",
                                    name="tracks", marker=dict(size=4, color=hc), hoverinfo="skip"))
        return out

    fig = go.Figure(data=traces_at(0),
                    frames=[go.Frame(data=traces_at(t), name=str(t)) for t in range(T)])
    play = dict(mode="immediate", frame=dict(duration=300, redraw=True), transition=dict(duration=0),
                fromcurrent=True)
    still = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    # Buttons and slider stacked under the scene (buttons first, slider below them at full width), so they
    # never overlap however narrow the figure is; the legend sits inside the scene's top-left corner, away
    # from the modebar (top right).
    # The title sits just above the scene, below the modebar's strip (top right), so narrow panels keep both.
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", y=1.0, yref="paper", yanchor="bottom", pad=dict(b=4),
                   font=dict(size=14)),
        scene=_scene(_robust_ranges(chunks)), margin=dict(l=0, r=0, t=64 if title else 30, b=0),
        legend=dict(x=0.0, y=1.0, xanchor="left", yanchor="top", bgcolor="rgba(255,255,255,0.7)",
                    font=dict(size=11)),
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=0.0, xanchor="left", yanchor="top",
                          pad=dict(t=4, r=4), showactive=False,
                          buttons=[dict(label="▶ play", method="animate", args=[None, play]),
                                   dict(label="❚❚ pause", method="animate", args=[[None], still])])],
        sliders=[dict(active=0, x=0.0, len=1.0, y=0.0, xanchor="left", yanchor="top", pad=dict(t=42, b=0),
                      currentvalue=dict(prefix="frame t = ", font=dict(size=12)),
                      steps=[dict(label=str(t), method="animate", args=[[str(t)], still])
                             for t in range(T)])],
    )
    return fig


# ----------------------------------------------------------------------------------------------- files
def write_html(fig: go.Figure, path) -> Path:
    """Write ``fig`` as one self-contained HTML file (plotly.js inline, opens offline), atomically.

    Returns the path written. Raises ValueError when ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output {str(path)!r} is a folder; give a file name such as "
                         f"{str(path / 'view.html')!r}")
    html = fig.to_html(include_plotlyjs=True, full_html=True, auto_play=False)
    with atomic_write(path, "wb") as handle:
        handle.write(html.encode("utf-8"))
    return path


def use_notebook_renderer() -> str:
    """Set Plotly's default renderer so figures show in JupyterLab, Colab and exported HTML; returns its name.

    Outside Colab: ``"plotly_mimetype+notebook"``: each figure carries the Plotly mimetype (JupyterLab and VS Code
    draw it) and an HTML twin that ``jupyter nbconvert --to html`` keeps; the first figure's output embeds
    plotly.js once, so the exported page opens offline (the default renderer emits only the mimetype, which an
    HTML export drops, so the figures vanished). In Colab (every output is its own sandboxed frame, so
    plotly.js must come with each figure; Colab is online anyway): ``"colab"``. Call it once, after imports.
    """
    name = "colab" if "google.colab" in sys.modules else "plotly_mimetype+notebook"
    pio.renderers.default = name
    return name
