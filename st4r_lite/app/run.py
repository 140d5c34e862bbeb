"""Run St4RTrack on your own video: frames -> pairs (0, t) -> world-frame tracks, reconstruction and cameras.

Glossary: T frames, H W network image size, H0 W0 original size, N query pixels (a grid on the anchor frame),
K intrinsics (3, 3), C = 1 + exp(c) confidences.

Pipeline (``run_video``; the CLI is ``st4r-lite run --video PATH --checkpoint CKPT --out DIR``):
  1. read the video at the network size (``st4r_lite.app.video``: uniform scale + centre crop, FrameTransform kept);
  2. every pair (anchor 0, t) through the network, ``chunk`` pairs at a time (``model.pairs.predict_video``):
     track_t = ¹X¹_t (where each anchor pixel is at time t) and recon_t = ¹Xᵗ_t (frame t's geometry), both in
     the world frame = the anchor camera;
  3. optional test-time adaptation on pseudo-labels (``online.make_provider``; ``st4r_lite.adapt.loop``): the
     adapted network then predicts every pair (instead of the unadapted one of step 2), re-anchored on the
     mono-depth when there is one (``adapt.reanchor``);
  4. cameras (docs/method.md §5, ``geometry.camera.cameras_for_video``): the focal from the anchor pointmap
     (Weiszfeld), then T_world_cam of each frame by PnP on recon_t, ``camera_chunk`` frames at a time, and K
     mapped back to the original video;
  5. everything is written into a temporary folder beside ``--out`` which is renamed to ``--out`` only at the
     end, so an interrupted run leaves no half-written output: result.npz, tracks.npz (WorldTrack keys, loads
     with ``worldtrack.load_npz``),
     view.html (time slider, camera frustums, track trails) and run.json (settings, notes, timings).

Memory: one full-resolution frame at a time while reading, the network's activations of ``chunk`` pairs, and
the outputs, which grow with T at network size (about 6 maps x H x W x 4 bytes x 3 per frame: ~0.4 MB a frame
for the tiny preset). ``measure_long_video`` measures it (``python -m st4r_lite.studies.video_memory --out FILE``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from st4r_lite.adapt.config import AdaptConfig
from st4r_lite.adapt.loop import AdaptVideo, adapt_video
from st4r_lite.adapt.online import make_provider
from st4r_lite.adapt.reanchor import reanchor_tracks
from st4r_lite.app import views
from st4r_lite.app.frames import FrameTransform, intrinsics_to_original
from st4r_lite.app.video import Video, probe, read_video
from st4r_lite.errors import InputError
from st4r_lite.geometry.camera import cameras_for_video
from st4r_lite.geometry.pinhole import grid_query_pixels
from st4r_lite.model import resolve
from st4r_lite.model.pairs import predict_video
from st4r_lite.runtime import check_output_folder, pick_device, staged_dir

__all__ = ["RunResult", "run_video", "write_outputs"]


@dataclass
class RunResult:
    """What a run produced (all at network size unless named _orig). track, recon: (T, H, W, 3) world frame;
    conf_track, conf_recon: (T, H, W); T_world_cam: (T, 4, 4); K_net, K_orig: (3, 3); transform: FrameTransform;
    frame_indices: source frame of each row; camera_status: per frame; notes: what fell back / was skipped."""

    track: torch.Tensor
    recon: torch.Tensor
    conf_track: torch.Tensor
    conf_recon: torch.Tensor
    T_world_cam: torch.Tensor
    K_net: torch.Tensor
    K_orig: torch.Tensor
    transform: FrameTransform
    frame_indices: list[int]
    camera_status: list[str]
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- outputs
def write_outputs(folder: Path, result: RunResult, video: Video, query_stride: int = 4, view: bool = True,
                  view_frames: int = 24, view_points: int = 1200, settings: dict | None = None) -> None:
    """Write result.npz, tracks.npz, view.html and run.json into ``folder`` (see the module docstring)."""
    T, H, W, _ = result.track.shape
    images = (video.frames.permute(0, 2, 3, 1).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    np.savez_compressed(
        folder / "result.npz", track=result.track.numpy(), recon=result.recon.numpy(),
        conf_track=result.conf_track.numpy(), conf_recon=result.conf_recon.numpy(),
        K_net=result.K_net.numpy(), K_orig=result.K_orig.numpy(), T_world_cam=result.T_world_cam.numpy(),
        frame_transform=result.transform.as_array(), frame_indices=np.asarray(result.frame_indices),
        camera_status=np.asarray(result.camera_status), images=images, source=np.asarray(video.source))
    # WorldTrack-style tracks of a query grid: tracks_XYZ in each frame's camera, extrinsics world -> camera;
    # visibility is all True (the model predicts no visibility); queries_xyt = (u, v, 0).
    q = grid_query_pixels(H, W, stride=query_stride)
    u, v = q[:, 0].long(), q[:, 1].long()
    world = result.track[:, v, u]                                                  # (T, N, 3)
    w2c = torch.linalg.inv(result.T_world_cam.double()).float()                    # (T, 4, 4)
    cam = torch.einsum("tij,tnj->tni", w2c[:, :3, :3], world) + w2c[:, None, :3, 3]
    K = result.K_net
    np.savez_compressed(
        folder / "tracks.npz", tracks_XYZ=cam.numpy(), visibility=np.ones(cam.shape[:2], bool),
        fx_fy_cx_cy=np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], np.float32),
        extrinsics_w2c=w2c.numpy(), queries_xyt=np.concatenate([q.numpy(), np.zeros((len(q), 1))], 1),
        images_jpeg_bytes=images)  # decoded frames under the official key (worldtrack.load_npz accepts both)
    if view:
        idx = np.unique(np.linspace(0, T - 1, min(T, view_frames)).round().astype(int))
        valid = result.conf_recon[idx] > torch.quantile(result.conf_recon[idx].flatten().float(), 0.25)
        fig = views.sequence_figure(
            points=result.recon[idx], colors=video.frames[idx].permute(0, 2, 3, 1), valid=valid,
            T_world_cam=result.T_world_cam[idx], K=result.K_net, tracks=world[idx], max_tracks=150,
            max_points_per_frame=view_points,
            title=f"{Path(video.source).name}: recon, cameras and tracks ({len(idx)} of {T} frames)")
        views.write_html(fig, folder / "view.html")
    doc = {"settings": settings or {}, "notes": result.notes, "timings_s": result.timings,
           "frames": T, "network_size": [H, W], "transform": result.transform.to_dict(),
           "K_net": result.K_net.tolist(), "K_orig": result.K_orig.tolist(),
           "camera_status_counts": {s: result.camera_status.count(s) for s in sorted(set(result.camera_status))}}
    (folder / "run.json").write_text(json.dumps(doc, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------- the run
def _adapt(model, video: Video, variant: str, tracker: str, depth: str, steps: int | None, chunk: int, device,
           log):
    """Test-time adaptation (``st4r_lite.adapt.loop.adapt_video``) on pseudo-labels of this video.

    Returns (pred, notes): every pair predicted again by the adapted network (track, recon and their
    confidences). Its memory grows with T (``run_video`` refuses more than ``adapt_max_frames`` frames first).
    """
    H, W = video.frames.shape[-2:]
    cfg = AdaptConfig(variant=variant) if steps is None else AdaptConfig(variant=variant, steps=steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider = make_provider(tracker=tracker, depth=depth, device=device, fallback=True)
        labels = provider(video.frames, grid_query_pixels(H, W, cfg.query_stride))  # validated inside
    for w in caught:
        log(f"note: {w.message}")
    notes = [f"adapted ({variant}, {cfg.steps} steps) on pseudo-labels {labels.source}"]
    if provider.note:
        notes.append(f"pseudo-label fallback: {provider.note}")
    report = getattr(provider, "last_report", None)
    if report is not None and not report.clean:
        notes.append(f"pseudo-labels cleaned: {report.summary()}")
    res = adapt_video(model, AdaptVideo(Path(video.source).stem, video.frames), labels, cfg, keep_model=True,
                      chunk=chunk)
    pred = predict_video(res.model, video.frames * 2 - 1, chunk=chunk, out_device="cpu")
    if isinstance(res.metrics.get("reanchor"), dict):   # adapt_video re-anchored its own tracks: do the same here
        track, info = reanchor_tracks(pred.track, labels.depth[0], cfg.reanchor_tau)
        pred = replace(pred, track=track)
        notes.append(f"re-anchored on the mono-depth: {info['moved']} of {info['pixels']} anchor pixels moved")
    elif res.metrics.get("reanchor", "off") != "off":
        notes.append("not re-anchored: the pseudo-labels have no mono-depth (--depth none, or the depth model "
                     "was not available)")
    return pred, notes


def run_video(video, checkpoint, out, *, adapt: str | None = None, tracker: str = "lk", depth: str = "none",
              stride: int = 1, start: int = 0, max_frames: int | None = None, chunk: int = 8,
              device: str | None = None, portrait: str = "native", camera_chunk: int = 16, query_stride: int = 4,
              adapt_steps: int | None = None, adapt_max_frames: int = 64, view: bool = True, overwrite: bool = False, log: Callable[[str], None] = print) -> RunResult:
    """The whole pipeline of the module docstring; writes into ``out`` atomically and returns a RunResult.

    video: a path (file or frame folder) or an already read :class:`~st4r_lite.app.video.Video`;
    checkpoint: a model spec (``model.resolve.load``: a file, a released name, fresh:PRESET, an St4RTrack); out: output folder (must not exist or be empty, unless overwrite).
    """
    out = check_output_folder(out, inputs=[video, checkpoint], overwrite=overwrite)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise InputError(f"output {str(out)!r} already exists and is not an empty folder; choose another --out "
                         "or pass --overwrite")
    if chunk < 1 or camera_chunk < 1:
        raise InputError(f"chunk and camera_chunk must be >= 1, got {chunk} and {camera_chunk}")
    dev = pick_device(device)
    if not isinstance(video, Video):
        probe(video)  # a missing / unreadable video fails before a (possibly large) model is loaded
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = resolve.load(checkpoint, dev, log=log)
    timings["load_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not isinstance(video, Video):
        video = read_video(video, model.config, stride=stride, start=start, max_frames=max_frames,
                           portrait=portrait)
    timings["read_video"] = time.perf_counter() - t0
    T, _, H, W = video.frames.shape
    if adapt and T > adapt_max_frames:  # checked before predicting every pair, not after
        raise InputError(f"--adapt back-propagates through all {T} pairs at once; use at most {adapt_max_frames} "
                         "frames (--max-frames, --stride) or run without --adapt")
    log(f"video {video.source}: {T} frames {video.transform.orig_size[0]}x{video.transform.orig_size[1]} -> "
        f"{H}x{W} (scale {video.transform.scale:.4g}, crop {video.transform.crop_x:.1f}, "
        f"{video.transform.crop_y:.1f})")
    notes: list[str] = []
    t0 = time.perf_counter()
    if adapt:
        pred, adapt_notes = _adapt(model, video, adapt, tracker, depth, adapt_steps, chunk, dev, log)
        notes += adapt_notes
        timings["adapt"] = time.perf_counter() - t0
    else:
        pred = predict_video(model, video.frames * 2 - 1, chunk=chunk, out_device="cpu")
        timings["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cams = cameras_for_video(pred.recon.float(), pred.conf_recon.float(), pose_stride=2, chunk=camera_chunk,
                             num_hypotheses=128, differentiable=False, warn=False)
    T_world_cam, K_net, status = cams.T_world_cam.float(), cams.K.float(), cams.status
    notes += cams.notes
    timings["cameras"] = time.perf_counter() - t0
    unsolved = [i for i, s in enumerate(status) if s not in ("ok", "planar")]
    if unsolved:
        notes.append(f"{len(unsolved)} of {T} camera(s) not solved (previous pose kept): frames {unsolved[:10]}"
                     + (" ..." if len(unsolved) > 10 else ""))
    result = RunResult(
        track=pred.track.float(), recon=pred.recon.float(), conf_track=pred.conf_track.float(),
        conf_recon=pred.conf_recon.float(), T_world_cam=T_world_cam, K_net=K_net.double(),
        K_orig=intrinsics_to_original(K_net, video.transform), transform=video.transform,
        frame_indices=list(video.frame_indices), camera_status=status, notes=notes, timings=timings)
    settings = dict(video=video.source, checkpoint=str(checkpoint) if isinstance(checkpoint, (str, Path))
                    else type(checkpoint).__name__, adapt=adapt, tracker=tracker, depth=depth, stride=stride,
                    start=start, max_frames=max_frames, chunk=chunk, device=str(dev), portrait=portrait,
                    adapt_steps=adapt_steps)
    t0 = time.perf_counter()
    with staged_dir(out, replace=True) as tmp:
        write_outputs(tmp, result, video, query_stride=query_stride, view=view, settings=settings)
    timings["write"] = time.perf_counter() - t0
    result.out_dir = out
    for n in notes:
        log(f"note: {n}")
    log(f"wrote {out}/ (result.npz, tracks.npz{', view.html' if view else ''}, run.json); focal "
        f"{float(K_net[0, 0]):.1f} px at {H}x{W} = {float(result.K_orig[0, 0]):.1f} px in the original video")
    return result
