"""Pseudo-label interface: shape checks, the validation policy, error statistics on hand-made cases."""

from __future__ import annotations

import json

import pytest
import torch

from st4r_lite.adapt.pseudo_labels import (
    CombinedProvider,
    PseudoLabelProvider,
    PseudoLabels,
    check_video,
    fit_depth,
    inside_image,
    pseudo_label_error_stats,
    validate_pseudo_labels,
)
from st4r_lite.geometry.pinhole import grid_query_pixels
from st4r_lite.studies import label_stats


def labels_with(tracks, valid=None, depth=None):
    q = tracks[0].clone()
    valid = torch.ones(tracks.shape[:2], dtype=torch.bool) if valid is None else valid
    return PseudoLabels(tracks_2d=tracks, track_valid=valid, depth=depth, query_pixels=q, source="test")


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(T, N, 2\)"):
        labels_with(torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="bool"):
        PseudoLabels(torch.zeros(2, 4, 2), torch.ones(2, 4), None, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="depth must have shape"):
        labels_with(torch.zeros(2, 4, 2), depth=torch.ones(3, 8, 8))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        check_video(torch.full((2, 3, 4, 4), -1.0))
    with pytest.raises(ValueError, match="uint8"):
        check_video(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))


def test_validation_policy_nan_outside_far_and_depth():
    H, W = 10, 20
    tracks = torch.tensor([[[1.0, 1.0], [5.0, 5.0], [7.0, 2.0], [3.0, 3.0]],
                           [[float("nan"), 1.0], [19.4, 9.4], [25.0, 2.0], [3.0, -500.0]]])
    depth = torch.ones(2, H, W)
    depth[1, 0, 0], depth[1, 0, 1], depth[0, 2, 2] = float("nan"), float("inf"), 0.0
    clean, report = validate_pseudo_labels(labels_with(tracks, depth=depth), (H, W))
    assert clean.track_valid.tolist() == [[True] * 4, [False, True, False, False]]
    assert torch.equal(clean.tracks_2d[1, 0], tracks[0, 0])          # NaN -> the query pixel
    assert torch.equal(clean.tracks_2d[1, 2], tracks[1, 2])          # outside but near: kept
    assert clean.tracks_2d[1, 3, 1] == -0.5 - max(H, W)              # far outside: clamped to the band
    assert torch.isfinite(clean.tracks_2d).all()
    assert (report.nonfinite_tracks, report.outside_image, report.far_outside) == (1, 2, 1)
    assert report.invalid_depth_pixels == 3 and not report.clean
    assert clean.depth[1, 0, 0] == 0 and clean.depth[1, 0, 1] == 0 and clean.depth[0, 2, 2] == 0
    assert "non-finite" in report.summary()
    bad = depth.clone()
    bad[0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        validate_pseudo_labels(labels_with(tracks, depth=bad), (H, W))
    with pytest.raises(ValueError, match="resize"):
        validate_pseudo_labels(labels_with(tracks, depth=torch.ones(2, 5, 5)), (H, W))
    ok, rep = validate_pseudo_labels(labels_with(tracks[:1]), (H, W))
    assert rep.clean and ok.track_valid.all()


def test_inside_image_and_grid():
    assert inside_image(torch.tensor([[-0.5, -0.5], [19.5, 9.5], [19.6, 1.0], [float("nan"), 1]]), 10, 20).tolist() \
        == [True, True, False, False]
    q = grid_query_pixels(4, 8, stride=4)
    assert q.tolist() == [[2, 2], [6, 2]]
    with pytest.raises(ValueError, match="stride"):
        grid_query_pixels(4, 4, stride=0)


def test_error_stats_on_a_hand_made_case():
    gt = torch.zeros(3, 4, 2)
    gt[:, :, 0] = torch.arange(4.0)
    vis = torch.tensor([[True] * 4, [True, True, True, False], [True, True, False, False]])
    pred = gt.clone()
    pred[1:, :, 1] += torch.tensor([0.5, 1.5, 3.0, 10.0])   # errors per point, frames 1 and 2
    valid = torch.tensor([[True] * 4, [True, True, True, True], [True, False, False, False]])
    s = pseudo_label_error_stats(labels_with(pred, valid), gt, vis)
    # visible entries (frames 1-2): errors 0.5 1.5 3.0 | 0.5 1.5 ; occluded: 10 | 3.0 10
    assert s.num_visible == 5 and s.num_occluded == 3
    assert s.median_visible == pytest.approx(1.5) and s.epe_visible == pytest.approx(7.0 / 5)
    assert s.median_occluded == pytest.approx(10.0) and s.epe_occluded == pytest.approx(23.0 / 3)
    assert s.within == pytest.approx({1: 0.4, 2: 0.8, 4: 1.0, 8: 1.0})
    assert s.valid_precision == pytest.approx(4 / 5)     # 5 marked valid, 4 GT-visible
    assert s.valid_accurate == pytest.approx(4 / 5)
    assert s.valid_recall == pytest.approx(4 / 5)         # 5 visible, 4 marked valid
    assert s.visibility_accuracy == pytest.approx(6 / 8)
    d = s.as_dict()
    assert d["within_px"]["2"] == 0.8 and d["depth_absrel"] is None
    json.dumps(d)
    assert "median EPE vis 1.50px" in s.summary()


def test_fit_depth_and_depth_absrel():
    g = torch.Generator().manual_seed(0)
    gt = 1 + torch.rand(2, 6, 7, generator=g)
    mask = torch.ones_like(gt, dtype=torch.bool)
    pred = torch.stack([3 * gt[0] + 0.5, 0.2 * gt[1] - 0.1])
    assert torch.allclose(fit_depth(pred, gt, mask, "affine"), gt, atol=1e-5)
    assert torch.allclose(fit_depth(2 * gt, gt, mask, "scale"), gt, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        fit_depth(pred, gt, mask, "log")
    tracks = torch.zeros(2, 1, 2)
    s = pseudo_label_error_stats(labels_with(tracks, depth=2 * gt + 1), tracks, torch.ones(2, 1, dtype=torch.bool),
                                 gt_depth=gt)
    assert s.depth_absrel < 1e-5


def test_combined_provider_validates():
    class Wild:
        name = "wild"

        def __call__(self, video, query_pixels):
            T = video.shape[0]
            tracks = query_pixels[None].repeat(T, 1, 1)
            tracks[-1, 0] = float("nan")
            return PseudoLabels(tracks, torch.ones(T, len(query_pixels), dtype=torch.bool), None, query_pixels,
                                "wild")

    class Depth:
        name = "flat"

        def __call__(self, video):
            return torch.ones(video.shape[0], *video.shape[-2:])

    assert isinstance(Wild(), PseudoLabelProvider)
    provider = CombinedProvider(Wild(), Depth(), note="test")
    labels = provider(torch.rand(3, 3, 8, 8), torch.tensor([[1.0, 1.0], [4.0, 4.0]]))
    assert labels.source == "wild+flat [test]" and provider.name == "wild+flat"
    assert not labels.track_valid[-1, 0] and provider.last_report.nonfinite_tracks == 1
    assert labels.depth.shape == (3, 8, 8)


def test_statistics_command_writes_json(tmp_path):
    out = tmp_path / "stats.json"
    report = label_stats.main(["--out", str(out), "--clips", "1", "--frames", "4"])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report))
    for domain in ("wild", "pretrain"):
        sim, lk = data[domain]["sim_tracker"], data[domain]["lk"]
        assert sim["median_visible"] < 2.0 and set(sim["within_px"]) == {"1", "2", "4", "8"}
        assert lk["valid_precision"] is not None and 0 <= lk["valid_precision"] <= 1
        assert 0 < data[domain]["sim_depth_scale"]["depth_absrel_affine_fit"] < 0.2
