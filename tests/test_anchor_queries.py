"""One rule for tracks whose query is off the anchor image (``adapt.pseudo_labels.ANCHOR_QUERY_RULE``), checked
on the three paths that read a WorldTrack file: ``evaluate``, ``adapt --tracker sim`` and ``adapt --tracker lk``.

Before the rule, evaluate dropped such tracks, the simulated tracker clamped them to the border and Lucas–Kanade
refused the whole file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from st4r_lite.adapt.pseudo_labels import ANCHOR_QUERY_RULE, anchor_queries, check_query_pixels, inside_image
from st4r_lite.adapt.sim_labels import GroundTruthVideo, SimulatedTracker
from st4r_lite.cli import main
from st4r_lite.errors import InputError
from st4r_lite.eval.evaluate import sequence_from_worldtrack
from st4r_lite.model.checkpoint import save_checkpoint
from st4r_lite.model.network import build_model
from st4r_lite.world import render as world
from st4r_lite.world import worldtrack

H, W = 32, 48
OFF = (0, 5, 17)        # tracks pushed off the image (right of it, left of it, below it)
BEHIND = 30             # a track behind the camera in frame 0


def _with_off_image_tracks(seq: worldtrack.WorldTrackSequence) -> worldtrack.WorldTrackSequence:
    xyz = seq.tracks_XYZ.copy()
    z0 = xyz[0, :, 2]
    fx = seq.fx_fy_cx_cy[0]
    xyz[:, OFF[0], 0] = 3.0 * W / fx * z0[OFF[0]]           # u = 3 W + cx: far right
    xyz[:, OFF[1], 0] = -(W / fx) * z0[OFF[1]]               # u = cx - W: left
    xyz[:, OFF[2], 1] = 2.0 * H / fx * z0[OFF[2]]            # v = 2 H + cy: below
    xyz[0, BEHIND, 2] = -1.0
    # No stored queries: the queries are the projections, which the edits above move off the image.
    return worldtrack.WorldTrackSequence(images=seq.images, tracks_XYZ=xyz, visibility=seq.visibility,
                                         fx_fy_cx_cy=seq.fx_fy_cx_cy, extrinsics_w2c=seq.extrinsics_w2c,
                                         depth_map=seq.depth_map, queries_xyt=None, is_dynamic=seq.is_dynamic)


@pytest.fixture(scope="module")
def seq():
    clip = world.generate_clips(1, frames=3, height=H, width=W, domain="wild", seed=600_000)
    return _with_off_image_tracks(worldtrack.clip_to_sequence(clip, 0))


@pytest.fixture(scope="module")
def npz_and_ckpt(tmp_path_factory, seq):
    d = tmp_path_factory.mktemp("offimage")
    return worldtrack.save_npz(d / "off.npz", seq), save_checkpoint(d / "m.pt", build_model("tiny", seed=0))


def _kept(seq) -> int:
    return seq.num_tracks - len(OFF) - 1


def test_the_rule_drops_off_image_behind_and_nonfinite():
    xyz0 = torch.tensor([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0], [0.0, 0.0, -1.0], [float("nan"), 0.0, 1.0],
                         [0.0, 0.0, 2.0]])
    K = torch.tensor([[10.0, 0.0, 4.0], [0.0, 10.0, 3.0], [0.0, 0.0, 1.0]])
    q, keep = anchor_queries(xyz0, K, 6, 8)
    assert keep.tolist() == [True, False, False, False, True]
    assert torch.allclose(q[keep], torch.tensor([[4.0, 3.0], [4.0, 3.0]]))
    # stored frame-0 queries are the pixels when present (and the rule applies to them)
    stored = torch.tensor([[7.5, 5.5, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [7.6, 1.0, 0.0]])
    q, keep = anchor_queries(xyz0, K, 6, 8, stored)
    assert keep.tolist() == [True, True, False, False, False] and q[0].tolist() == [7.5, 5.5]
    with pytest.raises(InputError, match="none of the 2 tracks"):
        anchor_queries(torch.tensor([[10.0, 0.0, 1.0], [0.0, 0.0, -1.0]]), K, 6, 8)
    assert "dropped" in ANCHOR_QUERY_RULE and "never clamped" in ANCHOR_QUERY_RULE


def test_evaluate_and_ground_truth_keep_the_same_tracks(seq):
    ev = sequence_from_worldtrack(seq)
    gt = GroundTruthVideo.from_sequence(seq)
    assert ev.query_pixels.shape[0] == _kept(seq) == gt.queries.shape[0]
    assert gt.dropped_tracks == len(OFF) + 1 and any("dropped 4 of" in n for n in ev.notes)
    assert torch.allclose(ev.query_pixels.float(), gt.queries, atol=1e-4)
    assert torch.allclose(ev.gt_tracks.float(), gt.track_world, atol=1e-4)
    assert bool(inside_image(gt.queries, H, W).all())
    check_query_pixels(gt.queries, H, W)          # what every provider checks: passes


def test_simulated_tracker_sees_only_in_image_queries(seq):
    gt = GroundTruthVideo.from_sequence(seq)
    video = torch.from_numpy(seq.images).permute(0, 3, 1, 2).float() / 255
    labels = SimulatedTracker(gt, seed=0)(video, None)
    assert labels.query_pixels.shape == (_kept(seq), 2)
    assert torch.equal(labels.tracks_2d[0], labels.query_pixels)
    assert bool(inside_image(labels.tracks_2d[0], H, W).all())


@pytest.mark.parametrize("tracker", ["sim", "lk"])
def test_adapt_cli_drops_off_image_tracks_with_either_tracker(tracker, npz_and_ckpt, seq, tmp_path):
    npz, ckpt = npz_and_ckpt
    out = tmp_path / tracker
    rc = main(["adapt", "--data", str(npz), "--checkpoint", str(ckpt), "--tracker", tracker, "--depth", "none",
               "--variant", "baseline", "--steps", "1", "--resize", "none", "--out", str(out)])
    assert rc == 0
    arrays = np.load(out / "off_baseline.npz")
    q = torch.from_numpy(arrays["query_pixels"])
    assert q.shape == (_kept(seq), 2) and bool(inside_image(q, H, W).all())
    ev = sequence_from_worldtrack(seq)
    assert torch.allclose(q.double(), ev.query_pixels, atol=1e-4)     # the tracks evaluate scores
    summary = json.loads((out / "off_baseline.json").read_text())
    assert summary["metrics"]["tracking"]["median"]["num_tracks"] == _kept(seq)
