"""Pretraining loss: hand-made cases, scale invariance, dynamic reweighting, NaN-safe masking."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from st4r_lite.train.losses import (
    PairTargets,
    PretrainLoss,
    confidence_regression,
    dynamic_confidence,
    normalise_pair,
    pair_scale,
)


def test_pair_scale_mean_distance_over_valid_pixels_only():
    recon = torch.tensor([[[[1.0, 0, 0], [0, 3.0, 0], [0, 0, 100.0]]]])  # (1, 1, 3, 3)
    valid = torch.tensor([[[True, True, False]]])
    assert torch.allclose(pair_scale(recon, valid), torch.tensor([2.0]))
    recon[0, 0, 2] = float("nan")  # NaN at an invalid pixel is ignored
    assert torch.allclose(pair_scale(recon, valid), torch.tensor([2.0]))
    # a pair without valid pixels gets 1
    assert torch.allclose(pair_scale(recon, torch.zeros_like(valid)), torch.tensor([1.0]))


def test_normalise_pair_uses_the_recon_factor_for_both_branches():
    recon = torch.tensor([[[[0, 0, 2.0], [0, 0, 6.0]]]])
    track = torch.tensor([[[[0, 0, 8.0], [0, 0, 8.0]]]])
    t, r, s = normalise_pair(track, recon, torch.ones(1, 1, 2, dtype=torch.bool))
    assert torch.allclose(s, torch.tensor([4.0]))
    assert torch.allclose(t[..., 2], torch.tensor([[[2.0, 2.0]]]))
    assert torch.allclose(r[..., 2], torch.tensor([[[0.5, 1.5]]]))


def test_confidence_regression_hand_computed():
    pred = torch.tensor([[[[0, 0, 0.0], [1, 0, 0.0], [5, 5, 5.0]]]])
    target = torch.tensor([[[[0, 0, 1.0], [1, 0, 0.0], [float("nan")] * 3]]])
    conf = torch.tensor([[[2.0, 3.0, 7.0]]])
    valid = torch.tensor([[[True, True, False]]])
    loss, err = confidence_regression(pred, target, conf, valid, alpha=0.2)
    expected = ((2 * 1 - 0.2 * math.log(2)) + (0 - 0.2 * math.log(3))) / 2
    assert abs(float(loss) - expected) < 1e-6
    assert torch.allclose(err, torch.tensor([[[1.0, 0.0, 0.0]]]))


def test_confidence_regression_no_nan_gradient_from_invalid_targets():
    pred = torch.randn(2, 3, 4, 3, requires_grad=True)
    conf = (1 + torch.rand(2, 3, 4)).requires_grad_()
    target = torch.randn(2, 3, 4, 3)
    valid = torch.rand(2, 3, 4) > 0.3
    target[~valid] = float("nan")
    target[0, 0, 0] = pred[0, 0, 0].detach()  # zero error at a valid pixel: norm gradient must stay finite
    valid[0, 0, 0] = True
    loss, _ = confidence_regression(pred, target, conf, valid)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(pred.grad).all() and torch.isfinite(conf.grad).all()
    assert (pred.grad[~valid] == 0).all()


def test_dynamic_confidence_replaces_moving_pixels_with_detached_5x_static_max():
    conf = torch.tensor([[[1.5, 2.0, 4.0, 9.0]], [[3.0, 1.2, 1.1, 1.1]]], requires_grad=True)
    dynamic = torch.tensor([[[False, False, True, False]], [[False, True, True, False]]])
    valid = torch.tensor([[[True, True, True, False]], [[True, True, True, True]]])  # 9.0 is invalid
    out = dynamic_confidence(conf, dynamic, valid)
    assert torch.allclose(out, torch.tensor([[[1.5, 2.0, 10.0, 9.0]], [[3.0, 15.0, 15.0, 1.1]]]))
    out.sum().backward()
    assert torch.equal(conf.grad, (~(dynamic & valid)).float())  # no gradient through replaced pixels


def _batch(B=2, H=4, W=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    track = torch.randn(B, H, W, 3, generator=g) + torch.tensor([0, 0, 3.0])
    recon = torch.randn(B, H, W, 3, generator=g) + torch.tensor([0, 0, 3.0])
    dynamic = torch.rand(B, H, W, generator=g) > 0.7
    ones = torch.ones(B, H, W, dtype=torch.bool)
    return PairTargets(track=track, recon=recon, valid_track=ones, valid_recon=ones.clone(), dynamic=dynamic)


def _out(track, recon, conf_track, conf_recon):
    return SimpleNamespace(track=track, recon=recon, conf_track=conf_track, conf_recon=conf_recon)


def test_pretrain_loss_is_scale_invariant_and_perfect_prediction_has_zero_error():
    tg = _batch()
    conf = 1 + torch.rand(tg.track.shape[:-1], generator=torch.Generator().manual_seed(1))
    loss_fn = PretrainLoss()
    perfect = loss_fn(_out(3.0 * tg.track, 3.0 * tg.recon, conf, conf), tg)
    assert float(perfect.track_err) < 1e-6 and float(perfect.recon_err) < 1e-6
    # with zero error only -α log C remains (on the track branch, moving pixels have the replaced C)
    c_dyn = dynamic_confidence(conf, tg.dynamic, tg.valid_track)
    assert abs(float(perfect.track) + 0.2 * float(torch.log(c_dyn).mean())) < 1e-5
    assert abs(float(perfect.recon) + 0.2 * float(torch.log(conf).mean())) < 1e-5
    pred_t, pred_r = tg.track + 0.3, tg.recon - 0.2
    a = loss_fn(_out(pred_t, pred_r, conf, conf), tg)
    b = loss_fn(_out(7.0 * pred_t, 7.0 * pred_r, conf, conf), tg)
    assert torch.allclose(a.total, b.total, atol=1e-5)
    assert float(a.total) > float(perfect.total)
    assert set(a.as_floats()) == {"total", "track", "recon", "track_err", "recon_err", "track_err_dynamic"}


def test_pretrain_loss_gradients_finite_and_dynamic_pixels_get_no_confidence_gradient():
    tg = _batch(seed=3)
    tg.valid_recon[0, 0, :2] = False
    tg.recon[0, 0, :2] = float("nan")
    track = torch.randn_like(tg.track).requires_grad_()
    recon = torch.randn_like(tg.recon).requires_grad_()
    conf_t = (1 + torch.rand(tg.track.shape[:-1])).requires_grad_()
    conf_r = (1 + torch.rand(tg.track.shape[:-1])).requires_grad_()
    terms = PretrainLoss()(_out(track, recon, conf_t, conf_r), tg)
    terms.total.backward()
    for t in (track, recon, conf_t, conf_r):
        assert torch.isfinite(t.grad).all()
    assert (conf_t.grad[tg.dynamic] == 0).all()
    assert (conf_t.grad[~tg.dynamic] != 0).all()
    assert torch.isfinite(terms.track_err_dynamic)


def test_pretrain_loss_rejects_shape_mismatch():
    tg = _batch()
    conf = torch.ones(2, 4, 5) * 2
    bad = torch.zeros(2, 4, 6, 3)
    try:
        PretrainLoss()(_out(bad, tg.recon, conf, conf), tg)
    except ValueError as err:
        assert "same resolution" in str(err)
    else:
        raise AssertionError("a shape mismatch must raise ValueError")


def test_dynamic_regression_adds_w_times_the_mean_moving_error():
    tg = _batch(seed=5)
    conf = 1 + torch.rand(tg.track.shape[:-1], generator=torch.Generator().manual_seed(2))
    out = _out(tg.track + 0.3, tg.recon - 0.1, conf, conf)
    plain = PretrainLoss(dynamic_factor=None)(out, tg)
    extra = PretrainLoss(dynamic_factor=None, dynamic_regression=2.0)(out, tg)
    assert torch.allclose(extra.total - plain.total, 2.0 * plain.track_err_dynamic, atol=1e-5)
    assert torch.equal(extra.track, plain.track)                     # the branch loss itself is unchanged
    with pytest.raises(ValueError, match="dynamic_regression"):
        PretrainLoss(dynamic_regression=-1.0)


def test_motion_regression_is_zero_for_a_scaled_copy_and_counts_static_motion():
    from st4r_lite.train.losses import motion_regression, pair_scale
    tg = _batch(seed=7)                                   # 2 pairs = one clip of S = 2 (self-pair first)
    v, vr = tg.valid_track, tg.valid_recon
    s_gt = pair_scale(tg.recon, vr)
    # a global scale of the whole clip is not a motion error
    assert float(motion_regression(3 * tg.track, tg.track, v, 3 * s_gt, s_gt, frames=2)) < 1e-6
    # the same track predicted for every k (no motion) costs exactly the true motion's mean norm
    still = tg.track.clone()
    still[1] = tg.track[0]
    loss = motion_regression(still, tg.track, v, s_gt, s_gt, frames=2)
    both = v[1] & v[0]
    expected = ((tg.track[1] - tg.track[0]).nan_to_num(0.0).norm(dim=-1) / s_gt[0])[both].mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    with pytest.raises(ValueError, match="whole clips"):
        motion_regression(tg.track, tg.track, v, s_gt, s_gt, frames=3)


def test_pretrain_loss_motion_term_needs_frames_and_has_finite_gradients():
    tg = _batch(seed=8)
    conf = 1 + torch.rand(tg.track.shape[:-1], generator=torch.Generator().manual_seed(3))
    track = (tg.track.nan_to_num(0.0) + 0.2).requires_grad_()
    out = _out(track, tg.recon - 0.1, conf, conf)
    loss = PretrainLoss(dynamic_factor=None, motion_weight=2.0)
    with pytest.raises(ValueError, match="frames="):
        loss(out, tg)
    plain = PretrainLoss(dynamic_factor=None)(out, tg)
    terms = loss(out, tg, frames=2)
    assert torch.allclose(terms.total - plain.total, 2.0 * terms.motion, atol=1e-5)
    terms.total.backward()
    assert torch.isfinite(track.grad).all() and track.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="motion_weight"):
        PretrainLoss(motion_weight=-1.0)


def test_object_regression_reads_only_object_pixels_and_the_self_pairs_moving_anchor():
    from dataclasses import replace as dc_replace
    tg = _batch(B=4, seed=9)                              # two clips of S = 2 pairs, self-pair first in each
    on_object = torch.rand(tg.recon.shape[:-1], generator=torch.Generator().manual_seed(4)) > 0.6
    tg = dc_replace(tg, on_object=on_object)
    conf = 1 + torch.rand(tg.track.shape[:-1], generator=torch.Generator().manual_seed(5))
    loss_fn = PretrainLoss(dynamic_factor=None, object_regression=1.0)
    assert float(loss_fn(_out(tg.track, tg.recon, conf, conf), tg, frames=2).object) < 1e-6
    # the tracks of the pairs (0, k ≥ 1) are not asked for (no motion): an error there leaves the term at 0
    moved = tg.track.clone()
    moved[1::2] += 0.5
    assert float(loss_fn(_out(moved, tg.recon, conf, conf), tg, frames=2).object) < 1e-6
    # the self-pair's moving anchor pixels are: the term is their mean error (scale-normalised)
    anchor = tg.track.clone()
    anchor[0::2] += torch.tensor([0.0, 0.0, 0.3])
    t = loss_fn(_out(anchor, tg.recon, conf, conf), tg, frames=2)
    s = pair_scale(tg.recon, tg.valid_recon)[0::2, None, None].expand(-1, *tg.dynamic.shape[1:])
    assert torch.allclose(t.object, (0.3 / s)[tg.dynamic[0::2]].mean(), atol=1e-5)
    # and the objects' recon in every pair, with finite gradients
    recon = tg.recon.clone()
    recon[on_object] += torch.tensor([0.0, 0.0, 0.4])
    recon.requires_grad_()
    t = loss_fn(_out(tg.track, recon, conf, conf), tg, frames=2)
    t.total.backward()
    assert float(t.object) > 0.05 and torch.isfinite(recon.grad).all()
    with pytest.raises(ValueError, match="on_object"):
        loss_fn(_out(tg.track, tg.recon, conf, conf), dc_replace(tg, on_object=None), frames=2)
    with pytest.raises(ValueError, match="frames"):
        loss_fn(_out(tg.track, tg.recon, conf, conf), tg)
    with pytest.raises(ValueError, match="object_regression"):
        PretrainLoss(object_regression=-1.0)


def test_object_depth_moves_objects_against_the_room_and_never_the_room():
    from dataclasses import replace as dc_replace

    from st4r_lite.train.losses import object_relative_depth
    tg = _batch(B=4, H=6, W=7, seed=11)
    on_object = torch.zeros(tg.recon.shape[:-1], dtype=torch.bool)
    on_object[:, 2:4, 2:5] = True
    moving = on_object.clone()
    moving[:, 2, 2] = False                               # one still object pixel: room for the track branch
    tg = dc_replace(tg, on_object=on_object, dynamic=moving)
    conf = 1 + torch.rand(tg.track.shape[:-1], generator=torch.Generator().manual_seed(5))
    loss_fn = PretrainLoss(dynamic_factor=None, object_depth=1.0)
    exact = loss_fn(_out(2.5 * tg.track, 0.7 * tg.recon, conf, conf), tg)    # any scale per branch: no error
    assert float(exact.object_depth) < 1e-6
    # objects 20 % too far along their rays, in both branches: the term is log 1.2 exactly
    track, recon = tg.track.clone(), tg.recon.clone()
    track[moving] *= 1.2
    recon[on_object] *= 1.2
    track.requires_grad_()
    recon.requires_grad_()
    t = loss_fn(_out(track, recon, conf, conf), tg)
    assert abs(float(t.object_depth) - math.log(1.2)) < 1e-5
    plain = PretrainLoss(dynamic_factor=None)(_out(track, recon, conf, conf), tg)
    assert torch.allclose(t.total - plain.total, t.object_depth, atol=1e-5)
    grad_r = torch.autograd.grad(object_relative_depth(recon, tg.recon, on_object, tg.valid_recon)[0], recon)[0]
    grad_t = torch.autograd.grad(object_relative_depth(track, tg.track, moving, tg.valid_track)[0], track)[0]
    assert torch.isfinite(grad_t).all() and torch.isfinite(grad_r).all()
    assert grad_r[~on_object].abs().max() == 0 and grad_t[~moving].abs().max() == 0   # the room is held still
    assert (grad_r[on_object][:, 2] > 0).all()                # descending pulls each object nearer
    # a pair with no room pixel adds nothing (no NaN); nor do pixels at or behind the camera
    everything = torch.ones_like(on_object)
    s, n = object_relative_depth(recon.detach(), tg.recon, everything, tg.valid_recon)
    assert float(s) == 0 and int(n) == 0
    behind = tg.recon.clone()
    behind[:, 2, 3, 2] = -1.0                             # one object pixel behind the camera in every pair
    s, n = object_relative_depth(behind, behind, on_object, tg.valid_recon)
    assert float(s) == 0 and int(n) == int(on_object.sum()) - 4 and torch.isfinite(s)
    with pytest.raises(ValueError, match="on_object"):
        loss_fn(_out(tg.track, tg.recon, conf, conf), dc_replace(tg, on_object=None))
    with pytest.raises(ValueError, match="object_depth"):
        PretrainLoss(object_depth=-1.0)


def test_object_depth_gradcheck_float64():
    from st4r_lite.train.losses import object_relative_depth
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(1, 3, 4, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 2.0], dtype=torch.float64)
    obj = torch.zeros(1, 3, 4, dtype=torch.bool)
    obj[0, 1, 1:3] = True
    pred = (gt * (1 + 0.2 * torch.rand(gt.shape, generator=g, dtype=torch.float64))).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: object_relative_depth(p, gt, obj, torch.ones_like(obj))[0], (pred,))
