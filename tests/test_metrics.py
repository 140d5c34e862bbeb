"""Evaluation metrics: hand-computed APD / EPE, alignments, dynamic subset, depth, static baseline."""

from __future__ import annotations

import math

import pytest
import torch

from st4r_lite.geometry.track_metrics import (
    DepthMetrics,
    TrackingMetrics,
    align,
    apd,
    depth_metrics,
    dynamic_tracks,
    epe,
    mean_metrics,
    median_scale,
    recon_metrics,
    static_tracks,
    tracking_metrics,
)


def _rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def test_apd_and_epe_hand_computed():
    gt = torch.zeros(4, 3)
    pred = torch.tensor([[0.05, 0, 0], [0.2, 0, 0], [0, 0.4, 0], [0, 0, 2.0]])
    # errors 0.05, 0.2, 0.4, 2.0; within δ=0.1: 1/4, 0.3: 2/4, 0.5: 3/4, 1.0: 3/4 -> mean 9/16
    assert apd(pred, gt) == pytest.approx(100 * 9 / 16)
    assert epe(pred, gt) == pytest.approx((0.05 + 0.2 + 0.4 + 2.0) / 4)
    valid = torch.tensor([True, True, True, False])
    assert apd(pred, gt, valid) == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 + 1) / 4)
    assert math.isnan(apd(pred, gt, torch.zeros(4, dtype=torch.bool)))


def test_median_scale_hand_computed_and_nan_ignored():
    gt = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])
    pred = torch.tensor([[0.5, 0, 0], [0, 0.5, 0], [0, 0, float("nan")]])
    # valid norms: gt 1, 2 -> median 1 (torch's lower median), pred 0.5, 0.5 -> 0.5 => s = 2
    assert median_scale(pred, gt) == pytest.approx(2.0)


def test_scaled_ground_truth_is_perfect_under_median_alignment():
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(5, 30, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 4.0], dtype=torch.float64)
    m = tracking_metrics(0.37 * gt, gt, alignment="median")
    assert m.apd == pytest.approx(100.0) and m.epe == pytest.approx(0.0, abs=1e-9)
    assert tracking_metrics(0.37 * gt, gt, alignment="none").apd < 100.0


def test_sim3_transformed_ground_truth_is_perfect_under_sim3_alignment():
    g = torch.Generator().manual_seed(1)
    gt = torch.randn(4, 50, 3, generator=g, dtype=torch.float64)
    R, t, s = _rotation(2), torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), 1.7
    pred = s * gt @ R.T + t
    m = tracking_metrics(pred, gt, alignment="sim3")
    assert m.apd == pytest.approx(100.0) and m.epe == pytest.approx(0.0, abs=1e-8)
    assert tracking_metrics(pred, gt, alignment="median").apd < 100.0
    assert torch.allclose(align(pred, gt, alignment="sim3"), gt, atol=1e-9)


def test_dynamic_subset_uses_max_displacement_from_anchor():
    T, N = 3, 4
    gt = torch.zeros(T, N, 3)
    gt[:, :, 2] = 5.0
    gt[1, 1, 0] = 0.2          # moves then returns: max displacement 0.2 > 0.05 -> dynamic
    gt[:, 2, 0] = torch.tensor([0.0, 0.01, 0.02])  # drifts 0.02 -> static
    gt[2, 3, 1] = float("nan")  # NaN frame counts as no displacement -> static
    assert dynamic_tracks(gt).tolist() == [False, True, False, False]


def test_tracking_metrics_dynamic_subset_and_static_baseline():
    T, N = 4, 6
    gt = torch.zeros(T, N, 3, dtype=torch.float64)
    gt[..., 2] = torch.linspace(2.0, 3.0, N, dtype=torch.float64)
    gt[..., 0] = torch.linspace(-1.0, 1.0, N, dtype=torch.float64)
    gt[:, :2, 0] += torch.arange(T, dtype=torch.float64)[:, None] * 0.4  # two tracks move 0.4 m per frame
    base = static_tracks(gt[0], T)
    assert base.shape == (T, N, 3) and torch.equal(base[3], gt[0])
    m = tracking_metrics(base, gt, alignment="none")
    assert isinstance(m, TrackingMetrics) and m.num_dynamic == 2 and m.num_tracks == N
    # dynamic errors 0, 0.4, 0.8, 1.2 per track: within δ 0.1: 1/4, 0.3: 1/4, 0.5: 2/4, 1.0: 3/4
    assert m.apd_dynamic == pytest.approx(100 * (1 + 1 + 2 + 3) / 16)
    assert m.epe_dynamic == pytest.approx(0.6)
    assert m.apd == pytest.approx((2 * m.apd_dynamic + 4 * 100.0) / 6)
    assert m.epe == pytest.approx(0.6 * 2 / 6)
    # a pointmap anchor (H, W, 3) is flattened row-major
    assert torch.equal(static_tracks(gt[0].reshape(2, 3, 3), 2)[1], gt[0])


def test_recon_metrics_with_mask_and_alignment():
    g = torch.Generator().manual_seed(4)
    gt = torch.randn(2, 3, 4, 3, generator=g, dtype=torch.float64) + 3.0
    valid = torch.rand(2, 3, 4, generator=g) > 0.2
    pred = 2.5 * gt
    pred[~valid] = float("nan")
    m = recon_metrics(pred, gt, valid, alignment="median")
    assert m.apd == pytest.approx(100.0) and m.num_points == int(valid.sum())
    with pytest.raises(ValueError, match="alignment"):
        recon_metrics(pred, gt, valid, alignment="bogus")


def test_depth_metrics_hand_computed():
    gt = torch.tensor([1.0, 2.0, 4.0])
    pred = torch.tensor([0.5, 1.0, 3.0])  # s = 2 / 1 = 2 -> (1, 2, 6): errors 0, 0, 0.5 relative
    d = depth_metrics(pred, gt)
    assert d.abs_rel == pytest.approx(0.5 / 3)
    assert d.delta_1_25 == pytest.approx(100 * 2 / 3)
    assert depth_metrics(3 * gt, gt).abs_rel == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(depth_metrics(pred, gt, torch.zeros(3, dtype=torch.bool)).abs_rel)


def test_mean_metrics_ignores_nan_and_sums_counts():
    a = DepthMetrics(abs_rel=0.1, delta_1_25=90.0, num_pixels=10)
    b = DepthMetrics(abs_rel=math.nan, delta_1_25=70.0, num_pixels=5)
    m = mean_metrics([a, b])
    assert m.abs_rel == pytest.approx(0.1) and m.delta_1_25 == pytest.approx(80.0) and m.num_pixels == 15


def test_shape_errors_are_explained():
    with pytest.raises(ValueError, match="same shape"):
        apd(torch.zeros(3, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\(T, N, 3\)"):
        dynamic_tracks(torch.zeros(3, 3))
