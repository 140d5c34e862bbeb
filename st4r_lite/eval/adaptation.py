"""Scoring a test-time adaptation against ground truth (the method itself, ``adapt.loop``, never sees it).

Dimension letters: T frames, H image rows, W image columns, N query points.

A :class:`VideoWithTruth` is a video to adapt on plus its ground truth (``adapt.sim_labels.GroundTruthVideo``:
from a synthetic ``world.Clip`` or a WorldTrack ``.npz``). :func:`adapt_and_score` runs ``adapt.loop.adapt_video``
on it, handing over the two inputs that only the upper-bound and diagnostic variants use (the true visibility
of the queries for ``oracle_mask``, the true cameras for ``cameras="gt"``), then adds
:func:`score_adaptation`'s scores to the result's ``metrics``:

    tracking      APD / EPE (all and dynamic; median and Sim(3) alignment) of the adapted track maps
                  (:func:`evaluate_tracks`: every anchor pixel for dense ground truth, else the GT's queries);
    mask          the final occlusion mask m (T, N) against true visibility (``occlusion.mask_quality``);
    pseudo_valid  the pseudo-labels' own validity flags against true visibility;
    used          what the losses used against true visibility.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.adapt.loop import AdaptResult, AdaptVideo, KnownCameras, adapt_video
from st4r_lite.adapt.occlusion import mask_quality, sample_map
from st4r_lite.adapt.pseudo_labels import PseudoLabels, validate_pseudo_labels
from st4r_lite.adapt.sim_labels import GroundTruthVideo
from st4r_lite.geometry.track_metrics import tracking_metrics
from st4r_lite.world import worldtrack

__all__ = ["VideoWithTruth", "adapt_and_score", "score_adaptation", "evaluate_tracks", "oracle_inputs"]


@dataclass
class VideoWithTruth(AdaptVideo):
    """A video to adapt on (frames (T, 3, H, W) in [0, 1]) and its ground truth (None: nothing to score)."""

    gt: GroundTruthVideo | None = None

    @classmethod
    def from_clip(cls, clip, index: int = 0, name: str | None = None) -> VideoWithTruth:
        """Clip ``index`` of a ``world.Clip`` (dense ground truth)."""
        seed = clip.seeds[index] if getattr(clip, "seeds", None) else index
        return cls(name or f"{clip.domain}-{seed}", clip.rgb[index].float().cpu(),
                   GroundTruthVideo.from_clip(clip, index))

    @classmethod
    def from_npz(cls, path: str | Path) -> VideoWithTruth:
        """A WorldTrack / TAPVid-3D style .npz (``worldtrack.load_npz``); ground truth at its query points."""
        seq = worldtrack.load_npz(path)
        images = torch.as_tensor(np.asarray(seq.images))
        video = images.permute(0, 3, 1, 2).float() / 255.0
        gt = GroundTruthVideo.from_sequence(seq, height=video.shape[2], width=video.shape[3])
        return cls(Path(path).stem, video, gt)

    def queries(self, stride: int = 4) -> Tensor:
        """Query pixels (N, 2): the ground truth's own queries when sparse, else a regular grid."""
        if self.gt is not None and not self.gt.dense:
            return self.gt.queries.float()
        return super().queries(stride)


def _at_queries(gt: GroundTruthVideo, query_pixels: Tensor):
    """The GT's (queries, track_world (T, N, 3), visible (T, N), anchor object) at the labels' queries."""
    return gt.lookup(query_pixels if gt.dense else None)


def oracle_inputs(gt: GroundTruthVideo | None, labels: PseudoLabels, config: AdaptConfig) -> dict:
    """The ground truth that ``adapt_video`` takes as explicit inputs: ``oracle_visible`` (T, N) (used by the
    ``oracle_mask`` variant only) and, for ``cameras="gt"``, ``true_cameras``. Empty without ground truth."""
    if gt is None:
        return {}
    _, track_world, visible, _ = _at_queries(gt, labels.query_pixels)
    inputs = {"oracle_visible": visible}
    if config.cameras == "gt":
        inputs["true_cameras"] = KnownCameras(gt.K, gt.T_world_cam, track_world[0])
    return inputs


def adapt_and_score(model, data: AdaptVideo, labels: PseudoLabels, config: AdaptConfig | None = None,
                    **options) -> AdaptResult:
    """``adapt_video`` on ``data`` with the ground truth's oracle inputs, then its scores in ``res.metrics``
    (when ``data`` is a :class:`VideoWithTruth` with ground truth). ``options`` go to ``adapt_video``."""
    cfg = config or AdaptConfig()
    gt = getattr(data, "gt", None)
    res = adapt_video(model, data, labels, cfg, **oracle_inputs(gt, labels, cfg), **options)
    if gt is not None:
        res.metrics.update(score_adaptation(res, gt, labels))
    return res


def score_adaptation(res: AdaptResult, gt: GroundTruthVideo, labels: PseudoLabels) -> dict:
    """Scores of an adaptation's maps against ground truth: {"tracking": {alignment: metrics}, "mask",
    "pseudo_valid", "used": mask quality dicts} (see the module docstring). labels: the ones adapted on."""
    H, W = res.track.shape[1:3]
    labels, _ = validate_pseudo_labels(labels, (H, W))
    visible = _at_queries(gt, labels.query_pixels)[2]
    return {"tracking": evaluate_tracks(res.track, gt), "mask": mask_quality(res.mask, visible),
            "pseudo_valid": mask_quality(labels.track_valid, visible), "used": mask_quality(res.used, visible)}


def evaluate_tracks(track: Tensor, gt: GroundTruthVideo) -> dict:
    """Tracking APD / EPE (all, dynamic; median and sim3 alignment) of predicted track maps (T, H, W, 3).

    Dense ground truth: every anchor pixel; sparse: the track maps read (bilinearly) at the GT's queries.
    """
    T = track.shape[0]
    if gt.dense:
        pred, ref = track.reshape(T, -1, 3), gt.track_world.reshape(T, -1, 3)
    else:
        pred = sample_map(track, gt.queries.to(track)[None].expand(T, -1, -1))
        ref = gt.track_world
    valid = torch.isfinite(ref).all(-1)
    return {al: asdict(tracking_metrics(pred.detach().cpu(), ref.cpu(), alignment=al, valid=valid.cpu()))
            for al in ("median", "sim3")}
