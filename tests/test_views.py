"""Tests of st4r_lite.app.views: figure structure, subsampling bounds, frustum geometry, self-contained HTML."""

from __future__ import annotations

import numpy as np
import pytest
import roma
import torch

from st4r_lite.app import sequence_view, views
from st4r_lite.geometry import pinhole

T, H, W = 4, 12, 16


def _scene(seed: int = 0):
    """A small moving-camera sequence: world points (T, H, W, 3), colours, poses, K, tracks (T, N, 3)."""
    g = torch.Generator().manual_seed(seed)
    K = pinhole.intrinsics_matrix(torch.tensor(14.0, dtype=torch.float64), (W - 1) / 2, (H - 1) / 2)
    depth = 2.0 + torch.rand(T, H, W, generator=g, dtype=torch.float64)
    R = torch.eye(3, dtype=torch.float64).expand(T, 3, 3)
    t = torch.stack([0.1 * torch.arange(T, dtype=torch.float64), torch.zeros(T), torch.zeros(T)], -1)
    poses = pinhole.make_pose(R, t)
    points = pinhole.transform_points(poses, pinhole.depth_to_pointmap(depth, K))
    colors = torch.rand(T, H, W, 3, generator=g)
    tracks = points[:, ::3, ::4].reshape(T, -1, 3)
    return points, colors, poses, K, tracks


# ------------------------------------------------------------------------------------------- pointmap
def test_pointmap_figure_keeps_valid_points_with_their_colors():
    points, colors, *_ = _scene()
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[:2] = False
    pm = points[0].clone()
    pm[5, 5] = float("nan")
    fig = views.pointmap_figure(pm, colors[0], valid=valid)
    (trace,) = fig.data
    assert len(trace.x) == (H - 2) * W - 1
    assert fig.layout.scene.aspectmode == "data"
    up = fig.layout.scene.camera.up
    assert (up.x, up.y, up.z) == (0, -1, 0)  # y down, like the camera
    c = colors[0, 2, 0].numpy()  # first kept pixel: row 2, column 0
    assert trace.marker.color[0] == "#{:02x}{:02x}{:02x}".format(*np.round(c * 255).astype(int))
    np.testing.assert_allclose([trace.x[0], trace.y[0], trace.z[0]], points[0, 2, 0].numpy())


@pytest.mark.parametrize("max_points", [1, 7, 50, 10_000])
def test_pointmap_figure_subsampling_bound_and_determinism(max_points):
    points, colors, *_ = _scene()
    fig1 = views.pointmap_figure(points[0].numpy(), colors[0].numpy(), max_points=max_points)
    fig2 = views.pointmap_figure(points[0], colors[0], max_points=max_points)
    n = len(fig1.data[0].x)
    assert n == min(max_points, H * W)
    np.testing.assert_array_equal(fig1.data[0].x, fig2.data[0].x)


def test_pointmap_figure_without_colors_and_uint8_colors():
    points, colors, *_ = _scene()
    fig = views.pointmap_figure(points[0])
    np.testing.assert_allclose(fig.data[0].marker.color, fig.data[0].z)  # coloured by depth
    fig8 = views.pointmap_figure(points[0], (colors[0] * 255).round().to(torch.uint8))
    assert fig8.data[0].marker.color[0].startswith("#")


# ------------------------------------------------------------------------------------------- frustums
def test_camera_frustum_geometry():
    _, _, poses, K, _ = _scene()
    R = pinhole.make_pose(roma.rotvec_to_rotmat(torch.tensor([0.1, -0.4, 0.2], dtype=torch.float64)),
                    torch.tensor([0.5, -0.2, 1.0], dtype=torch.float64))
    poses = pinhole.compose(R, poses)
    seg = views.camera_frustum_lines(poses, K, H, W, scale=0.3)
    assert seg.shape == (T, 8, 2, 3)
    seg = torch.as_tensor(seg)
    for t in range(T):
        apex = seg[t, :4, 0]
        torch.testing.assert_close(apex, poses[t, :3, 3].expand(4, 3))  # apex at the camera centre
        corners_world = seg[t, :4, 1]
        corners_cam = pinhole.transform_points(pinhole.invert_pose(poses[t]), corners_world)
        torch.testing.assert_close(corners_cam[:, 2], torch.full((4,), 0.3, dtype=torch.float64))
        expected = torch.tensor([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]],
                                dtype=torch.float64)
        torch.testing.assert_close(pinhole.project(corners_cam, K), expected)  # far corners = image corners
        # the base ring closes: each ring edge starts where the previous one ended
        ring = seg[t, 4:]
        torch.testing.assert_close(ring[:, 0], corners_world)
        torch.testing.assert_close(ring[:, 1], corners_world.roll(-1, dims=0))
    assert views.camera_frustum_lines(poses[0], K, H, W).shape == (8, 2, 3)


def test_add_camera_frustums_adds_one_line_trace():
    points, colors, poses, K, _ = _scene()
    fig = views.pointmap_figure(points[0], colors[0])
    views.add_camera_frustums(fig, poses, K, H, W, scale=0.1)
    assert len(fig.data) == 2
    assert fig.data[1].mode == "lines"
    assert len(fig.data[1].x) == T * 8 * 3  # 8 segments per camera, 2 vertices + a gap each


# ------------------------------------------------------------------------------------------- tracks
def test_track_trails_figure_traces_and_visibility_gaps():
    *_, tracks = _scene()
    N = tracks.shape[1]
    visible = torch.ones(T, N, dtype=torch.bool)
    visible[1, 0] = False
    fig = views.track_trails_figure(tracks, visible)
    assert len(fig.data) == N + 1
    assert np.isnan(np.asarray(fig.data[0].x, dtype=float)[1])  # the trail breaks where the track is hidden
    np.testing.assert_allclose(fig.data[-1].x, tracks[-1, :, 0].numpy())
    colors = {tr.line.color for tr in fig.data[:-1]}
    assert len(colors) == N  # one hue per track
    assert len(views.track_trails_figure(tracks, max_tracks=5).data) == 6


# ------------------------------------------------------------------------------------------- sequences
def test_sequence_figure_frames_traces_and_bounds():
    points, colors, poses, K, tracks = _scene()
    fig = views.sequence_figure(points, colors, poses, K, tracks=tracks, max_points_per_frame=50)
    assert len(fig.frames) == T
    assert len(fig.layout.sliders[0].steps) == T
    labels = [b.label for b in fig.layout.updatemenus[0].buttons]
    assert any("play" in label for label in labels)
    N = tracks.shape[1]
    for t, frame in enumerate(fig.frames):
        pts, cams, cam_t, trails, heads = frame.data
        assert len(pts.x) == 50
        assert len(cams.x) == (t + 1) * 8 * 3 and len(cam_t.x) == 8 * 3
        assert len(trails.x) == N * (t + 2)  # t + 1 vertices and a gap per track
        np.testing.assert_allclose(heads.x, tracks[t, :, 0].numpy())
    assert [d.name for d in fig.data] == [d.name for d in fig.frames[0].data]
    ranges = np.array([fig.layout.scene[f"{a}axis"].range for a in "xyz"])
    assert (ranges[:, 0] < ranges[:, 1]).all()


def test_sequence_figure_points_only_and_tracks_only():
    points, _, poses, K, tracks = _scene()
    fig = views.sequence_figure(points)
    assert len(fig.frames) == T and len(fig.frames[0].data) == 1
    assert len(fig.frames[0].data[0].x) == H * W
    fig = views.sequence_figure(tracks=tracks, T_world_cam=poses, K=K, image_size=(H, W))
    assert [d.name for d in fig.frames[1].data] == ["cameras", "camera t", "trails", "tracks"]


@pytest.mark.parametrize("call, match", [
    (lambda s: views.pointmap_figure(s[0][0, ..., :2]), r"points must have shape \(\?, \?, 3\)"),
    (lambda s: views.pointmap_figure(s[0][0], s[1][0, :3]), r"colors must have shape"),
    (lambda s: views.pointmap_figure(s[0][0], s[1][0] * 2 - 1), r"\[0, 1\]"),
    (lambda s: views.pointmap_figure(s[0][0], max_points=60_000), r"max_points must be in"),
    (lambda s: views.sequence_figure(s[0], T_world_cam=s[2]), r"both T_world_cam"),
    (lambda s: views.sequence_figure(s[0], T_world_cam=s[2][:2], K=s[3]), r"T_world_cam must have shape"),
    (lambda s: views.sequence_figure(s[0], tracks=s[4][:2]), r"tracks must have shape"),
    (lambda s: views.sequence_figure(), r"needs points"),
    (lambda s: views.camera_frustum_lines(s[2][:, :3], s[3], H, W), r"T_world_cam must have shape"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(_scene())


# ------------------------------------------------------------------------------------------- html
def _assert_self_contained(html: str) -> None:
    assert len(html) > 1_000_000, "plotly.js (~3.5 MB) must be inline"
    assert "plotly.js" in html.lower() and "Plotly.newPlot" in html
    assert "<script src=\"http" not in html and "<script src='http" not in html
    assert 'src="https://cdn' not in html


def test_write_html_is_self_contained_and_atomic(tmp_path):
    points, colors, *_ = _scene()
    fig = views.pointmap_figure(points[0], colors[0])
    path = views.write_html(fig, tmp_path / "sub" / "view.html")
    assert path == tmp_path / "sub" / "view.html"
    _assert_self_contained(path.read_text(encoding="utf-8"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["view.html"]
    with pytest.raises(ValueError, match="is a folder"):
        views.write_html(fig, tmp_path)


def test_write_html_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "view.html"
    target.write_text("old")

    class Unencodable(str):
        def encode(self, *args, **kwargs):
            raise RuntimeError("disk full (simulated)")

    class BrokenFigure:
        def to_html(self, **kwargs):
            return Unencodable("<html></html>")

    with pytest.raises(RuntimeError, match="simulated"):
        views.write_html(BrokenFigure(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view.html"]
    assert target.read_text() == "old"  # the previous file is untouched


# ------------------------------------------------------------------------------------------- `st4r-lite view`
SMALL = dict(frames=3, height=16, width=24, seed=1)


def test_sequence_view_figure_synthetic_matches_the_clip():
    from st4r_lite.world import render

    clip = render.generate_clips(1, frames=SMALL["frames"], height=SMALL["height"], width=SMALL["width"],
                                seed=SMALL["seed"])
    fig = sequence_view.sequence_view_figure(None, domain="pretrain", **SMALL)
    assert len(fig.frames) == SMALL["frames"]
    names = [d.name for d in fig.frames[0].data]
    assert names == ["points", "cameras", "camera t", "trails", "tracks"]
    for t, frame in enumerate(fig.frames):
        xyz = np.stack([frame.data[0].x, frame.data[0].y, frame.data[0].z], -1)
        expected = clip.points_world[0, t].reshape(-1, 3).double().numpy()
        np.testing.assert_allclose(xyz, expected, atol=1e-5)  # all pixels (16 x 24 < the cap), in world frame
        np.testing.assert_allclose(frame.data[2].x[0], clip.T_world_cam[0, t, 0, 3].item(), atol=1e-6)


def test_write_sequence_html_from_npz_uses_world_frame(tmp_path):
    from st4r_lite.world import render, worldtrack

    clip = render.generate_clips(1, frames=SMALL["frames"], height=SMALL["height"], width=SMALL["width"],
                                seed=SMALL["seed"])
    npz = tmp_path / "seq.npz"
    worldtrack.save_npz(npz, worldtrack.clip_to_sequence(clip, 0))
    out = sequence_view.write_sequence_html(tmp_path / "view.html", npz=npz)
    _assert_self_contained(out.read_text(encoding="utf-8"))
    fig = sequence_view.sequence_view_figure(npz)
    assert len(fig.frames) == SMALL["frames"]
    last = fig.frames[-1].data
    assert last[0].name == "points"
    xyz = np.stack([last[0].x, last[0].y, last[0].z], -1)
    # depth unprojected and moved by the re-based poses = the clip's world points of that frame
    np.testing.assert_allclose(xyz, clip.points_world[0, -1].reshape(-1, 3).double().numpy(), atol=1e-3)
    with pytest.raises(FileNotFoundError):
        sequence_view.sequence_view_figure(tmp_path / "missing.npz")


def test_cli_view_writes_html_and_rejects_a_folder(tmp_path, capsys):
    from st4r_lite import cli

    out = tmp_path / "scene.html"
    assert cli.main(["view", "--out", str(out), "--frames", "2", "--height", "12", "--width", "16"]) == 0
    _assert_self_contained(out.read_text(encoding="utf-8"))
    assert cli.main(["view", "--out", str(tmp_path), "--frames", "2", "--height", "12", "--width", "16"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_sequence_figure_legend_swatches_and_controls_do_not_clash():
    points, _, poses, K, tracks = _scene()
    fig = views.sequence_figure(points, T_world_cam=poses, K=K, tracks=tracks, title="t")
    for trace in fig.frames[1].data:
        line_color = getattr(getattr(trace, "line", None), "color", None)
        if trace.showlegend is not False and trace.mode == "lines":
            assert isinstance(line_color, str), trace.name   # a list draws a black swatch in the legend
    assert [d.name for d in fig.data if d.showlegend is False] == ["trails"]
    menu, slider = fig.layout.updatemenus[0], fig.layout.sliders[0]
    # buttons above, slider below them at full width: never side by side, whatever the figure's width
    assert (menu.x, menu.yanchor, slider.x, slider.len, slider.yanchor) == (0.0, "top", 0.0, 1.0, "top")
    assert slider.pad.t > menu.pad.t + 30
    assert fig.layout.legend.x == 0.0 and fig.layout.legend.y == 1.0   # top left, away from the modebar


def test_use_notebook_renderer_keeps_an_html_twin_offline(monkeypatch):
    import sys

    import plotly.graph_objects as go
    import plotly.io as pio

    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)   # restored after the test
    assert views.use_notebook_renderer() == "plotly_mimetype+notebook"
    bundle = pio.renderers._build_mime_bundle(go.Figure(go.Scatter(y=[1, 2])).to_dict())
    assert "application/vnd.plotly.v1+json" in bundle and "text/html" in bundle   # JupyterLab + nbconvert HTML
    assert "cdn.plot.ly" not in bundle["text/html"]
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert views.use_notebook_renderer() == "colab" and pio.renderers.default == "colab"
