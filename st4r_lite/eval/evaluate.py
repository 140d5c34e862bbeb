"""World-frame evaluation of a model on WorldTrack-style sequences (docs/method.md §7), and ``st4r-lite evaluate``.

Dimension letters: T frames, H image rows, W image columns, N tracked points (queries = anchor pixels).

One sequence is an :class:`EvalSequence` (from a synthetic ``world.Clip`` or from a WorldTrack / TAPVid-3D
``.npz``, official files included). A method's output on it is a :class:`Prediction`:

    tracks (T, N, 3)  where each query pixel of the anchor frame 0 is at time t (world = camera of frame 0);
    recon (T, H, W, 3) frame t's visible surface (world), depth (T, H, W) its z in the predicted camera t,
    T_world_cam (T, 4, 4) and K (3, 3) the recovered cameras, visible (T, N) a predicted visibility mask.

For St4RTrack (:func:`predict_model`): pairs (0, t) through the network, ``tracks`` = the track map sampled
at the query pixels, cameras from ``camera.cameras_for_video`` on the recon maps (focal from the anchor, PnP),
``depth`` = recon seen from its own predicted camera, ``visible`` = the proposal's occlusion test
m = 1[z^trk ≤ (1 + τ) z^rec(x̂)] with x̂ the track reprojected into frame t (docs/method.md §6).

:func:`evaluate_prediction` scores every part against ground truth with ``metrics`` / ``eval_metrics``:
tracking APD (δ ∈ {0.1, 0.3, 0.5, 1.0} m) and EPE on all and on moving tracks, after "median" or "sim3"
alignment; recon APD / EPE; depth Abs Rel and δ<1.25 (median scaling per sequence); camera ATE / RPE after
Sim(3); occlusion-mask precision / recall against ground-truth visibility; and, optionally, TAPVid-3D
depth-adaptive APD, occlusion accuracy and 3D-AJ under the official protocol (``benchmark_metrics.TAPVID3D_PROTOCOL``). Files without a depth map (e.g.
official WorldTrack files) skip recon and depth and say so in ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from st4r_lite.adapt import occlusion
from st4r_lite.adapt.pseudo_labels import anchor_queries
from st4r_lite.adapt.sim_labels import GroundTruthVideo
from st4r_lite.errors import InputError
from st4r_lite.eval import benchmark_metrics
from st4r_lite.geometry import track_metrics
from st4r_lite.geometry.camera import cameras_for_video
from st4r_lite.geometry.pinhole import (
    depth_to_pointmap,
    grid_query_pixels,
    intrinsics_matrix,
    invert_pose,
    project,
    transform_points,
)
from st4r_lite.model.pairs import predict_video
from st4r_lite.world import worldtrack

__all__ = ["EvalSequence", "Prediction", "sequence_from_clip", "sequence_from_worldtrack", "load_sequences",
           "sample_maps", "occlusion_mask", "predict_model", "evaluate_prediction", "evaluate_model",
           "mean_results", "flat_metrics"]


@dataclass
class EvalSequence:
    """Ground truth of one video. video (T, 3, H, W) float in [0, 1]; K (3, 3); T_world_cam (T, 4, 4) with
    T_world_cam[0] = I; query_pixels (N, 2) anchor pixels (u, v); gt_tracks (T, N, 3) world; gt_visible (T, N);
    is_dynamic (N,) bool or None (then from the tracks' motion); depth (T, H, W) or None; gt_points (T, H, W, 3)
    world or None; notes: what was dropped or is missing."""

    name: str
    video: torch.Tensor
    K: torch.Tensor
    T_world_cam: torch.Tensor
    query_pixels: torch.Tensor
    gt_tracks: torch.Tensor
    gt_visible: torch.Tensor
    is_dynamic: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    gt_points: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.video.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.video.shape[2]), int(self.video.shape[3])

    def subset(self, index: torch.Tensor) -> EvalSequence:
        """The same sequence with only the tracks ``index`` (N',) (long indices or (N,) bool)."""
        idx = torch.as_tensor(index)
        return replace(self, query_pixels=self.query_pixels[idx], gt_tracks=self.gt_tracks[:, idx],
                       gt_visible=self.gt_visible[:, idx],
                       is_dynamic=None if self.is_dynamic is None else self.is_dynamic[idx])

    def grid_subset(self, stride: int) -> EvalSequence:
        """Keep the tracks whose query pixel lies on the grid u ≡ v ≡ stride // 2 (mod stride)."""
        q = self.query_pixels.round().long()
        keep = ((q[:, 0] - stride // 2) % stride == 0) & ((q[:, 1] - stride // 2) % stride == 0)
        if not bool(keep.any()):
            raise InputError(f"no query pixel of {self.name!r} lies on a stride-{stride} grid")
        return self.subset(keep.nonzero()[:, 0])

    def ground_truth(self):
        """The same ground truth as a ``sim_labels.GroundTruthVideo`` (sparse: the queries), for simulated labels."""
        H, W = self.size
        return GroundTruthVideo(K=self.K.float(), T_world_cam=self.T_world_cam.float(),
                                depth=None if self.depth is None else self.depth.float(),
                                track_world=self.gt_tracks.float(), track_visible=self.gt_visible.bool(),
                                queries=self.query_pixels.float(), height=H, width=W)


@dataclass
class Prediction:
    """A method's output on one sequence (see module doc); anything but ``tracks`` may be None."""

    tracks: torch.Tensor
    recon: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    T_world_cam: torch.Tensor | None = None
    K: torch.Tensor | None = None
    visible: torch.Tensor | None = None
    conf_recon: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------- sequences
def sequence_from_clip(clip, index: int = 0, query_stride: int = 4, name: str | None = None) -> EvalSequence:
    """Clip ``index`` of a ``world.Clip`` with queries on a regular grid of the anchor frame (every
    ``query_stride`` pixels, offset stride // 2)."""
    H, W = clip.height, clip.width
    u, v = grid_query_pixels(H, W, stride=int(query_stride)).long().unbind(-1)
    c = clip.to("cpu")
    return EvalSequence(
        name=name or f"{clip.domain}-seed{clip.seeds[index]}", video=c.rgb[index].float(), K=c.K[index].double(),
        T_world_cam=c.T_world_cam[index].double(), query_pixels=torch.stack([u, v], -1).double(),
        gt_tracks=c.track_world[index][:, v, u].double(), gt_visible=c.track_visible[index][:, v, u].bool(),
        is_dynamic=c.track_dynamic[index][v, u].bool(), depth=c.depth[index].double(),
        gt_points=c.points_world[index].double())


def sequence_from_worldtrack(seq, name: str = "sequence") -> EvalSequence:
    """An :class:`EvalSequence` from a WorldTrack / TAPVid-3D sequence (``worldtrack.load_npz``).

    The world is re-based on frame 0: T_world_cam_t = E_0 E_t⁻¹ (E = extrinsics_w2c). Queries are the frame-0
    projections of the tracks (or the stored frame-0 queries); tracks whose frame-0 point is missing, behind the
    camera or outside the image cannot be anchor pixels of St4RTrack and are dropped (noted): the rule
    ``adapt.pseudo_labels.ANCHOR_QUERY_RULE``, which adaptation follows too.
    """
    images = torch.as_tensor(seq.images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"sequence images must be (T, H, W, 3), got {tuple(images.shape)}")
    T, H, W, _ = images.shape
    video = images.permute(0, 3, 1, 2).float()
    video = video / 255.0 if images.dtype == torch.uint8 else video.clamp(0, 1)
    E = torch.as_tensor(seq.extrinsics_w2c).double()
    fx, fy, cx, cy = torch.as_tensor(seq.fx_fy_cx_cy).double().tolist()
    K = intrinsics_matrix(fx, cx, cy).double()
    K[1, 1] = fy
    T_world_cam = E[0] @ torch.linalg.inv(E)
    xyz = torch.as_tensor(seq.tracks_XYZ).double()
    vis = torch.as_tensor(seq.visibility).bool()
    q, ok = anchor_queries(xyz[0], K, H, W, getattr(seq, "queries_xyt", None))   # ANCHOR_QUERY_RULE
    notes = []
    if not bool(ok.all()):
        notes.append(f"dropped {int((~ok).sum())} of {len(ok)} tracks whose frame-0 point is not in the image")
    if not bool(vis[0, ok].all()):
        notes.append(f"{int((~vis[0, ok]).sum())} kept tracks are occluded in frame 0 (anchor pixel sees another "
                     "surface); they still count")
    dyn = getattr(seq, "is_dynamic", None)
    depth = getattr(seq, "depth_map", None)
    gt_points = None
    if depth is not None:
        depth = torch.as_tensor(depth).double()
        gt_points = transform_points(T_world_cam, depth_to_pointmap(depth, K))
    else:
        notes.append("no depth map: recon and depth metrics skipped")
    return EvalSequence(name=name, video=video, K=K, T_world_cam=T_world_cam, query_pixels=q[ok],
                        gt_tracks=transform_points(T_world_cam, xyz[:, ok]), gt_visible=vis[:, ok],
                        is_dynamic=None if dyn is None else torch.as_tensor(dyn).bool()[ok], depth=depth,
                        gt_points=gt_points, notes=notes)


def load_sequences(path, prepare=None) -> list[EvalSequence]:
    """All sequences of a folder of ``.npz`` files (sorted by name) or of one ``.npz`` file.

    prepare: optional function applied to each ``worldtrack.WorldTrackSequence`` first (e.g. resizing it to the
    network size, ``app.frames.sequence_to_network``)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise FileNotFoundError(f"no .npz file in {str(path)!r}; write a benchmark with `st4r-lite generate`")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"--data {str(path)!r} is neither a folder of .npz files nor an .npz file")
    prepare = prepare or (lambda seq: seq)
    return [sequence_from_worldtrack(prepare(worldtrack.load_npz(f)), name=f.stem) for f in files]


# ----------------------------------------------------------------------------------------------- predictions
def sample_maps(maps: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of per-frame maps at pixels. maps: (T, H, W, C); pixels: (N, 2) (same for every
    frame) or (T, N, 2), (u, v) with centres at integers (border-clamped) -> (T, N, C)."""
    if maps.ndim != 4:
        raise ValueError(f"maps must be (T, H, W, C), got {tuple(maps.shape)}")
    T, H, W, _ = maps.shape
    px = pixels.to(maps.dtype)
    if px.ndim == 2:
        px = px.expand(T, -1, -1)
    if px.ndim != 3 or px.shape[0] != T or px.shape[-1] != 2:
        raise ValueError(f"pixels must be (N, 2) or (T={T}, N, 2), got {tuple(pixels.shape)}")
    grid = torch.stack([2 * px[..., 0] / max(W - 1, 1) - 1, 2 * px[..., 1] / max(H - 1, 1) - 1], -1)
    out = F.grid_sample(maps.permute(0, 3, 1, 2), grid[:, :, None], mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out[..., 0].permute(0, 2, 1)


def occlusion_mask(tracks: torch.Tensor, recon_depth: torch.Tensor, T_world_cam: torch.Tensor, K: torch.Tensor,
                   tau: float = occlusion.OCCLUSION_TAU) -> torch.Tensor:
    """The proposal's occlusion test (docs/method.md §6), True = visible: m = 1[z^trk ≤ (1 + τ) z^rec(x̂)], 0 outside.

    tracks: (T, N, 3) world; recon_depth: (T, H, W) depth of frame t's recon in camera t; T_world_cam (T, 4, 4);
    K (3, 3). x̂ = π(K T_cam_world_t X_t), z^trk its depth in camera t; the test itself is
    ``occlusion.occlusion_mask`` (z^rec read at the nearest pixel), the one the adaptation uses.
    """
    cam = transform_points(invert_pose(T_world_cam.to(tracks.dtype)), tracks)
    front = torch.isfinite(cam).all(-1) & (cam[..., 2] > 1e-6)
    uv = project(torch.where(front[..., None], cam, torch.ones_like(cam)), K.to(tracks.dtype))
    return occlusion.occlusion_mask(cam[..., 2], uv, recon_depth.to(tracks.dtype), tau) & front


def prediction_from_maps(track_maps: torch.Tensor, recon: torch.Tensor, conf_recon: torch.Tensor | None,
                         query_pixels: torch.Tensor, *, seed: int = 0) -> Prediction:
    """A :class:`Prediction` from per-pair maps (track, recon (T, H, W, 3), conf_recon (T, H, W)): tracks at the
    query pixels, cameras by ``camera.cameras_for_video``, depth in the predicted cameras, occlusion mask."""
    track_maps, recon = track_maps.detach().float().cpu(), recon.detach().float().cpu()
    conf = None if conf_recon is None else conf_recon.detach().float().cpu()
    cams = cameras_for_video(recon, conf, differentiable=False, seed=seed, warn=False)
    T_wc = cams.T_world_cam.detach().double()
    K = cams.K.detach().double()
    depth = transform_points(invert_pose(T_wc), recon.double())[..., 2]
    tracks = sample_maps(track_maps.double(), query_pixels.double())
    return Prediction(tracks=tracks, recon=recon.double(), depth=depth, T_world_cam=T_wc, K=K,
                      visible=occlusion_mask(tracks, depth, T_wc, K), conf_recon=conf)


def predict_model(model, seq: EvalSequence, chunk: int = 8, seed: int = 0) -> Prediction:
    """Run St4RTrack on every pair (0, t) of ``seq`` and build its :class:`Prediction` (see module doc)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = predict_video(model, (seq.video * 2 - 1).to(device), chunk=chunk, out_device="cpu")
    finally:
        model.train(was_training)
    return prediction_from_maps(out.track, out.recon, out.conf_recon, seq.query_pixels, seed=seed)


# ----------------------------------------------------------------------------------------------- scoring
def evaluate_prediction(seq: EvalSequence, pred: Prediction, alignments=("median", "sim3")) -> dict:
    """Score one prediction on one sequence. Returns a dict: name, tracking {alignment: TrackingMetrics},
    recon {alignment: ReconMetrics} or None, depth DepthMetrics or None, camera CameraMetrics or None,
    occlusion OcclusionMetrics or None, tapvid3d TapVid3DMetrics or None (both need ``pred.visible``),
    notes (list of str)."""
    if tuple(pred.tracks.shape) != tuple(seq.gt_tracks.shape):
        raise ValueError(f"predicted tracks {tuple(pred.tracks.shape)} do not match the ground truth "
                         f"{tuple(seq.gt_tracks.shape)} of {seq.name!r}")
    notes = list(seq.notes)
    dyn = seq.is_dynamic if seq.is_dynamic is not None else track_metrics.dynamic_tracks(seq.gt_tracks)
    out = {"name": seq.name, "tracking": {}, "recon": None, "depth": None, "camera": None, "occlusion": None}
    for a in alignments:
        out["tracking"][a] = track_metrics.tracking_metrics(pred.tracks.double(), seq.gt_tracks.double(),
                                                      alignment=a, dynamic=dyn)
    if seq.gt_points is not None and pred.recon is not None:
        valid = torch.isfinite(seq.depth) & (seq.depth > 0)
        out["recon"] = {a: track_metrics.recon_metrics(pred.recon.double(), seq.gt_points, valid, alignment=a)
                        for a in alignments}
    elif pred.recon is not None:
        notes.append("recon not scored: the sequence has no depth map")
    if seq.depth is not None and pred.depth is not None:
        out["depth"] = track_metrics.depth_metrics(pred.depth, seq.depth)
    if pred.T_world_cam is not None:
        out["camera"] = benchmark_metrics.camera_metrics(pred.T_world_cam, seq.T_world_cam)
    out["tapvid3d"] = None
    if pred.visible is not None:
        out["occlusion"] = benchmark_metrics.occlusion_metrics(pred.visible[1:], seq.gt_visible[1:])
        # TAPVid-3D, official protocol: each side's tracks in its own cameras (the prediction's cameras when it
        # has them), median scaling and K at a 256-pixel short side inside tapvid3d_metrics.
        if pred.T_world_cam is None:
            notes.append("TAPVid-3D: the prediction has no cameras; its tracks are seen from the ground-truth ones")
        T_pred = (seq.T_world_cam if pred.T_world_cam is None else pred.T_world_cam).double()
        out["tapvid3d"] = benchmark_metrics.tapvid3d_metrics(
            transform_points(invert_pose(T_pred), pred.tracks.double()),
            transform_points(invert_pose(seq.T_world_cam.double()), seq.gt_tracks.double()),
            pred.visible.bool(), seq.gt_visible.bool(), fx_fy=(float(seq.K[0, 0]), float(seq.K[1, 1])),
            image_hw=tuple(seq.video.shape[-2:]))
    out["notes"] = notes
    return out


def mean_results(results: list[dict]) -> dict:
    """Mean over sequences of :func:`evaluate_prediction` outputs (NaNs and missing parts skipped)."""
    if not results:
        raise ValueError("mean_results needs at least one sequence result")
    mean = {"name": "mean", "notes": []}
    for part in ("tracking", "recon"):
        have = [r[part] for r in results if r[part] is not None]
        mean[part] = None if not have else {a: track_metrics.mean_metrics([h[a] for h in have]) for a in have[0]}
    for part in ("depth", "camera", "occlusion", "tapvid3d"):
        have = [r[part] for r in results if r.get(part) is not None]
        mean[part] = track_metrics.mean_metrics(have) if have else None
    return mean


def flat_metrics(result: dict) -> dict[str, float]:
    """One flat {name: value} dict of a result (for tables): track_apd_median, track_epe_dyn_sim3, recon_apd_median,
    depth_abs_rel, cam_ate, occl_recall, ... (APD and percentages in %, distances in metres)."""
    flat = {}
    for a, m in result["tracking"].items():
        flat.update({f"track_apd_{a}": m.apd, f"track_epe_{a}": m.epe, f"track_apd_dyn_{a}": m.apd_dynamic,
                     f"track_epe_dyn_{a}": m.epe_dynamic})
    for a, m in (result.get("recon") or {}).items():
        flat.update({f"recon_apd_{a}": m.apd, f"recon_epe_{a}": m.epe})
    if result.get("depth") is not None:
        flat.update({"depth_abs_rel": result["depth"].abs_rel, "depth_delta_1_25": result["depth"].delta_1_25})
    if result.get("camera") is not None:
        c = result["camera"]
        flat.update({"cam_ate": c.ate, "cam_rpe_trans": c.rpe_trans, "cam_rpe_rot_deg": c.rpe_rot_deg})
    if result.get("occlusion") is not None:
        o = result["occlusion"]
        flat.update({"occl_accuracy": o.accuracy, "occl_precision": o.occluded_precision,
                     "occl_recall": o.occluded_recall})
    if result.get("tapvid3d") is not None:
        flat.update({"tapvid3d_apd": result["tapvid3d"].apd_3d, "tapvid3d_aj": result["tapvid3d"].average_jaccard})
    return flat


def evaluate_model(model, sequences: list[EvalSequence], alignments=("median", "sim3"),
                   chunk: int = 8) -> dict:
    """Predict and score every sequence: {"sequences": [...], "mean": {...}} (dataclass values)."""
    results = [evaluate_prediction(s, predict_model(model, s, chunk=chunk), alignments) for s in sequences]
    return {"sequences": results, "mean": mean_results(results)}


def format_summary(report: dict) -> str:
    """A few readable lines: the mean numbers per alignment."""
    m = report["mean"]
    lines = []
    for a, t in m["tracking"].items():
        lines.append(f"tracking ({a}): APD {t.apd:.2f} %  EPE {t.epe:.3f} m  | dynamic APD {t.apd_dynamic:.2f} % "
                     f" EPE {t.epe_dynamic:.3f} m")
    for a, r in (m["recon"] or {}).items():
        lines.append(f"recon ({a}): APD {r.apd:.2f} %  EPE {r.epe:.3f} m")
    if m["depth"] is not None:
        lines.append(f"depth: AbsRel {m['depth'].abs_rel:.3f}  δ<1.25 {m['depth'].delta_1_25:.1f} %")
    if m["camera"] is not None:
        c = m["camera"]
        lines.append(f"camera: ATE {c.ate:.3f} m  RPE {c.rpe_trans:.3f} m / {c.rpe_rot_deg:.2f} deg")
    if m["occlusion"] is not None:
        o = m["occlusion"]
        lines.append(f"occlusion mask: accuracy {o.accuracy:.1f} %  occluded precision {o.occluded_precision:.1f} % "
                     f" occluded recall {o.occluded_recall:.1f} %")
    if m.get("tapvid3d") is not None:
        tv = m["tapvid3d"]
        lines.append(f"TAPVid-3D ({benchmark_metrics.TAPVID3D_PROTOCOL}): APD_3D {tv.apd_3d:.1f} %  "
                     f"3D-AJ {tv.average_jaccard:.1f} %  "
                     f"occlusion accuracy {tv.occlusion_accuracy:.1f} %")
    return "\n".join(lines)
