"""Re-anchoring (st4r_lite.adapt.reanchor): the anchor's geometry from the mono-depth, every frame moved with it,
and its place in the adaptation loop."""

from dataclasses import replace

import pytest
import torch

from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.adapt.loop import adapt_video
from st4r_lite.adapt.online import make_provider
from st4r_lite.adapt.reanchor import reanchor_tracks
from st4r_lite.eval.adaptation import VideoWithTruth
from st4r_lite.geometry.pinhole import unproject
from st4r_lite.model.network import build_model
from st4r_lite.model.pairs import predict_video
from st4r_lite.world import render


def _scene(T=3, H=6, W=8, seed=0):
    """True tracks (T, H, W, 3) of a static room with a moving block, its true depth and the pixel grid."""
    g = torch.Generator().manual_seed(seed)
    K = torch.tensor([[10.0, 0, W / 2], [0, 10.0, H / 2], [0, 0, 1]], dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    depth = 2 + 3 * torch.rand(H, W, generator=g, dtype=torch.float64)
    anchor = unproject(torch.stack([u, v], -1), depth, K)
    motion = torch.zeros(T, H, W, 3, dtype=torch.float64)
    motion[:, :2, :3] = torch.arange(T, dtype=torch.float64)[:, None, None, None] * torch.tensor([0.3, 0.0, 0.2],
                                                                                                dtype=torch.float64)
    return anchor[None] + motion, depth


def test_true_depth_up_to_scale_restores_the_anchor_and_keeps_the_motion():
    gt, depth = _scene()
    g = torch.Generator().manual_seed(1)
    wrong = torch.exp(0.3 * torch.randn(gt.shape[1:3], generator=g, dtype=torch.float64))   # per-pixel depth error
    pred = gt.clone()
    pred += (gt[0] * (wrong[..., None] - 1))[None]          # every frame carries the anchor's error
    out, info = reanchor_tracks(pred * 0.5, depth * 7.0, tau=0.0)   # the model's and the mono-depth's own scales
    s = gt[0, ..., 2].median() / out[0, ..., 2].median()
    assert torch.allclose(out[0] * s, gt[0], atol=1e-9) and info["pixels"] == depth.numel()
    assert torch.allclose(out[2] - out[0], (pred[2] - pred[0]) * 0.5)   # the model's motion is kept
    assert info["moved"] >= depth.numel() - 1    # (the median pixel may already agree exactly)


def test_where_model_and_mono_depth_agree_within_tau_the_model_is_kept():
    gt, depth = _scene()
    pred = gt.clone()
    pred[:, 0, 0] *= 1.03                        # 3 % off: within tau = 0.05, kept
    pred[:, 4, 6] *= 1.30                        # 30 % off: moved onto the mono-depth
    out, info = reanchor_tracks(pred, depth * 2, tau=0.05)
    assert torch.equal(out[:, 0, 0], pred[:, 0, 0]) and torch.allclose(out[:, 4, 6], gt[:, 4, 6])
    assert info["moved"] == 1 and torch.equal(reanchor_tracks(pred, depth * 2, tau=1.0)[0], pred)


def test_missing_depth_keeps_those_tracks_and_too_little_returns_them_unchanged():
    gt, depth = _scene()
    mono = depth.clone()
    mono[0, 0] = 0.0
    mono[1, 1] = float("nan")
    out, info = reanchor_tracks(gt * 1.1, mono * 3)
    assert torch.equal(out[:, 0, 0], gt[:, 0, 0] * 1.1) and torch.equal(out[:, 1, 1], gt[:, 1, 1] * 1.1)
    assert info["pixels"] == depth.numel() - 2
    same, info = reanchor_tracks(gt, torch.zeros_like(depth))
    assert same is gt and info["pixels"] == 0
    bad = gt * 1.1
    bad[0, 2, 2] = float("nan")                  # a non-finite anchor point keeps its tracks, spoils nothing else
    out, info = reanchor_tracks(bad, mono * 3)
    assert torch.isnan(out[0, 2, 2]).any() and torch.equal(out[1:, 2, 2], bad[1:, 2, 2])
    assert torch.isfinite(out[:, 3:]).all() and info["pixels"] == depth.numel() - 3
    grad_in = (gt * 1.0).requires_grad_(True)
    out, _ = reanchor_tracks(grad_in, mono)      # gradients stay finite with NaN / 0 in the mono-depth
    out.sum().backward()
    assert torch.isfinite(grad_in.grad).all()


def test_the_loop_re_anchors_adapted_tracks_only():
    clip = render.generate_clips(1, frames=3, height=32, width=48, domain="wild", seed=600_000)
    vid = VideoWithTruth.from_clip(clip, 0)
    model = build_model("tiny", seed=0)
    labels = make_provider("sim", "sim", ground_truth=vid.gt, seed=0)(vid.video, vid.queries(8))
    cfg = AdaptConfig(variant="baseline", steps=0, pose_hypotheses=8)
    raw = predict_video(model.float().eval(), vid.video * 2 - 1).track
    res = adapt_video(model, vid, labels, cfg)
    expected, info = reanchor_tracks(raw, labels.depth[0])
    assert torch.allclose(res.track, expected, atol=1e-5) and res.metrics["reanchor"]["pixels"] == info["pixels"]
    off = adapt_video(model, vid, labels, replace(cfg, reanchor=False))
    none = adapt_video(model, vid, labels, replace(cfg, variant="none"))
    assert torch.allclose(off.track, raw, atol=1e-5) and off.metrics["reanchor"] == "off"
    assert torch.allclose(none.track, raw, atol=1e-5) and none.metrics["reanchor"] == "off"
    no_depth = adapt_video(model, vid, replace(labels, depth=None), cfg)
    assert torch.allclose(no_depth.track, raw, atol=1e-5) and "no mono-depth" in no_depth.metrics["reanchor"]


def test_adapt_ceiling_rows_make_one_part_true():
    from st4r_lite.geometry.track_metrics import median_scale
    from st4r_lite.studies.adapt_ceiling import ROWS, ceiling_tracks

    gt, depth = _scene(T=3)
    g = torch.Generator().manual_seed(2)
    pred = gt.clone()
    pred += (gt[0] * (torch.exp(0.2 * torch.randn(gt.shape[1:3], generator=g, dtype=torch.float64))[..., None] - 1))[None]
    pred[1:, :2, :3] = pred[:1, :2, :3]                      # the model misses the block's motion
    rows = ceiling_tracks(pred * 2, gt, depth)
    assert set(rows) == set(ROWS) and torch.equal(rows["none"], pred * 2)
    assert torch.equal(rows["static"][2], pred[0] * 2)
    s = median_scale(pred[0] * 2, gt[0])                   # prediction -> truth, as the metric aligns
    assert torch.allclose(rows["true_motion"][2] - rows["true_motion"][0], (gt[2] - gt[0]) / s, atol=1e-9)
    anchor = rows["true_depth"][0]
    assert torch.allclose(anchor / anchor[..., 2:].median(), gt[0] / gt[0][..., 2:].median(), atol=1e-9)
    assert torch.allclose(rows["reanchored"], reanchor_tracks(pred * 2, depth)[0])


def test_adapt_ceiling_cli_adds_the_tolerance_rows(tmp_path):
    import json

    from st4r_lite.studies import adapt_ceiling

    out = tmp_path / "c.json"
    assert adapt_ceiling.main(["--checkpoint", "fresh:tiny", "--num-clips", "2", "--first-seed", "610000",
                               "--taus", "0,0.5", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"reanchored tau=0", "reanchored tau=0.5"} <= set(doc["rows"]) and "--taus 0,0.5" in doc["command"]
    assert set(doc["vs_none"]) == set(doc["rows"]) - {"none"} and len(doc["rows"]["none"]["per_clip"]) == 2


def test_adapt_ceiling_none_row_is_the_score_the_adaptation_studies_give():
    """The ceiling's `none` row is adapt_curve's step-0 score (same tracks, every pixel), and its `reanchored` row is
    what the adaptation gives after re-anchoring alone (0 steps: same mono-depth pseudo-label, same tolerance)."""
    from st4r_lite.eval.adaptation import VideoWithTruth, adapt_and_score, evaluate_tracks
    from st4r_lite.model import resolve
    from st4r_lite.model.pairs import predict_video
    from st4r_lite.studies.adapt_ceiling import adapt_ceiling
    from st4r_lite.world.render import generate_clips

    torch.manual_seed(0)
    model = resolve.load("fresh:tiny").float().eval()
    seeds = (610000, 610001)
    rows = adapt_ceiling(model, seeds, frames=4)["rows"]
    for seed, got in zip(seeds, rows["none"]["per_clip"]):
        clip = generate_clips(1, frames=4, height=64, width=96, domain="wild", seed=seed)
        with torch.no_grad():
            track = predict_video(model, clip.rgb[0] * 2 - 1).track
        vid = VideoWithTruth.from_clip(clip, 0)
        assert got == pytest.approx(evaluate_tracks(track, vid.gt)["median"]["apd"], abs=0.01)
        cfg = replace(AdaptConfig(), steps=0)
        labels = make_provider("sim", "sim", ground_truth=vid.gt, seed=cfg.seed)(vid.video, vid.queries(cfg.query_stride))
        res = adapt_and_score(model, vid, labels, cfg)
        assert isinstance(res.metrics["reanchor"], dict), res.metrics["reanchor"]   # re-anchoring ran
        assert rows["reanchored"]["per_clip"][seeds.index(seed)] == pytest.approx(
            res.metrics["tracking"]["median"]["apd"], abs=0.01)
