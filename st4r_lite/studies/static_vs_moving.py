"""Does the room stay put while the object moves? World-frame displacement of background vs moving-object tracks
on a video the package writes itself, run exactly as a user's phone clip would be.

Dimension letters: T frames, N anchor pixels (tracked points), H W network image size.

The claim (issue 13, "real clips"): on a video with a moving camera and a moving object, the tracks of static
background points stay put in the world frame (= camera of frame 0) much better than those of the moving object,
although the camera itself travels. For each anchor pixel n with track x_t(n) (T, N, 3),

    displacement(n) = max_t ‖x_t(n) − x_0(n)‖                 (metres, after alignment)

and we report its median over background points and over moving-object points, for the prediction and for the
ground truth (background: 0 by construction; object: its true motion), next to the camera's own path length
Σ_t ‖c_t − c_{t−1}‖ (predicted cameras, same scale).

Protocol (``run_static_vs_moving``):
  1. render a clip of the synthetic world (``world.render.generate_clips``) and encode it as H.264 with
     ``app.video.write_video`` — from here on the method sees only the .mp4 file;
  2. the ordinary user path ``app.run.run_video`` (``st4r-lite run --video clip.mp4 --out DIR``): read and resize
     the video, predict every pair (0, t), solve the cameras by PnP; no ground truth;
  3. score: the clip's ground truth is read at each network pixel's original pixel (``FrameTransform``) and used
     only (a) to split anchor pixels into background (object id 0, the room) and moving object (on an object
     whose true track moves > 5 cm, ``Clip.track_dynamic``; pixels of objects that stay put count in neither
     group) and (b) for the one median scale s = median‖gt‖ / median‖pred‖ over all tracks (docs/method.md §7)
     that puts the prediction (tracks and camera centres) in metres.

The default clip (``DEFAULT_SEED`` of the ``wild`` domain, the course's stand-in for a real video) was picked from
the world alone, never from a model's result: an orbiting camera (translation, so parallax) and the largest true
object motion among wild seeds 0-29 at 16 frames. ``python -m st4r_lite.studies.static_vs_moving --help``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import plotly.graph_objects as go
import torch

from st4r_lite.app.frames import FrameTransform
from st4r_lite.app.run import RunResult, run_video
from st4r_lite.app.video import write_video
from st4r_lite.errors import InputError
from st4r_lite.geometry.track_metrics import median_scale
from st4r_lite.model import resolve
from st4r_lite.runtime import atomic_write, check_writable, to_jsonable
from st4r_lite.world.render import Clip, generate_clips

__all__ = ["DEFAULT_SEED", "DEFAULT_DOMAIN", "StaticVsMoving", "max_displacement", "camera_path_length",
           "score_static_vs_moving", "write_clip_video", "truth_at_network_pixels", "run_static_vs_moving",
           "displacement_figure", "run_many", "main"]

DEFAULT_DOMAIN = "wild"
DEFAULT_SEED = 26  # wild, orbiting camera, the largest true object motion among seeds 0-29 (16 frames)


@dataclass
class StaticVsMoving:
    """Medians over points of max_t ‖x_t − x_0‖ (metres, prediction median-aligned to the truth).

    background_*, object_*: predicted / true; camera_path_*: Σ‖c_t − c_{t−1}‖ of the predicted (scaled) and true
    camera centres (None when not given); scale: the median scale applied to the prediction; num_*: points in
    each group; pred_displacement, true_displacement (N,) and group (N,) int (0 other, 1 background, 2 moving
    object) per point, for plots."""

    background_pred: float
    background_true: float
    object_pred: float
    object_true: float
    camera_path_pred: float | None
    camera_path_true: float | None
    scale: float
    num_background: int
    num_object: int
    pred_displacement: torch.Tensor
    true_displacement: torch.Tensor
    group: torch.Tensor

    @property
    def holds(self) -> bool:
        """The claim: background points move less in the world frame than the moving object's points."""
        return self.background_pred < self.object_pred

    def headline(self) -> str:
        cam = "" if self.camera_path_pred is None else (
            f" while the camera travels {self.camera_path_pred:.2f} m"
            + ("" if self.camera_path_true is None else f" (truth: {self.camera_path_true:.2f} m)"))
        return (f"background points move {self.background_pred:.2f} m in the world frame{cam}; the moving "
                f"object's points move {self.object_pred:.2f} m (truth: {self.object_true:.2f} m)")

    def as_dict(self) -> dict:
        """The numbers (no per-point tensors), JSON-ready."""
        d = {k: v for k, v in asdict(self).items() if not isinstance(v, torch.Tensor)}
        d["holds"] = self.holds
        d["headline"] = self.headline()
        return d


def max_displacement(tracks: torch.Tensor) -> torch.Tensor:
    """tracks (T, N, 3) -> (N,) max_t ‖x_t − x_0‖ (float64); non-finite steps are ignored (NaN if all are)."""
    if tracks.dim() != 3 or tracks.shape[-1] != 3:
        raise ValueError(f"tracks must be (T, N, 3), got {tuple(tracks.shape)}")
    d = (tracks.double() - tracks[:1].double()).norm(dim=-1)
    ok = torch.isfinite(d)
    peak = torch.where(ok, d, torch.zeros_like(d)).amax(0)
    return torch.where(ok.any(0), peak, torch.full_like(peak, float("nan")))


def camera_path_length(T_world_cam: torch.Tensor) -> float:
    """T_world_cam (T, 4, 4) -> Σ_t ‖c_t − c_{t−1}‖, the length of the camera centres' path (0 for T = 1)."""
    if T_world_cam.dim() != 3 or T_world_cam.shape[1:] != (4, 4):
        raise ValueError(f"T_world_cam must be (T, 4, 4), got {tuple(T_world_cam.shape)}")
    c = T_world_cam[:, :3, 3].double()
    return float((c[1:] - c[:-1]).norm(dim=-1).sum())


def _median(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.median()) if x.numel() else float("nan")


def score_static_vs_moving(pred_tracks: torch.Tensor, gt_tracks: torch.Tensor, background: torch.Tensor,
                           moving: torch.Tensor, pred_T_world_cam: torch.Tensor | None = None,
                           true_T_world_cam: torch.Tensor | None = None) -> StaticVsMoving:
    """Score predicted world-frame tracks (T, N, 3) against the truth (T, N, 3) on two groups of points.

    background, moving: (N,) bool, disjoint, each non-empty (from the ground truth's object ids: the split is
    the only use of the truth besides the scale). The prediction is scaled once by the median scale over all
    tracks (``geometry.track_metrics.median_scale``), and so are its camera centres (pred_T_world_cam (T, 4, 4),
    optional; true_T_world_cam likewise, in metres already). Returns a :class:`StaticVsMoving`.
    """
    if pred_tracks.shape != gt_tracks.shape or pred_tracks.dim() != 3 or pred_tracks.shape[-1] != 3:
        raise ValueError(f"pred_tracks and gt_tracks must both be (T, N, 3), got {tuple(pred_tracks.shape)} and "
                         f"{tuple(gt_tracks.shape)}")
    N = pred_tracks.shape[1]
    background, moving = background.reshape(-1).bool(), moving.reshape(-1).bool()
    if background.shape != (N,) or moving.shape != (N,):
        raise ValueError(f"background and moving must be (N,) = ({N},) masks, got {tuple(background.shape)} and "
                         f"{tuple(moving.shape)}")
    if (background & moving).any():
        raise ValueError("a point cannot be both background and moving object")
    if not background.any() or not moving.any():
        raise InputError(f"need background and moving-object points; got {int(background.sum())} background and "
                         f"{int(moving.sum())} moving (pick a clip where an object moves in view of frame 0)")
    s = median_scale(pred_tracks, gt_tracks)
    pred_d = max_displacement(pred_tracks) * s
    true_d = max_displacement(gt_tracks)
    group = torch.zeros(N, dtype=torch.int64)
    group[background], group[moving] = 1, 2
    return StaticVsMoving(
        background_pred=_median(pred_d[background]), background_true=_median(true_d[background]),
        object_pred=_median(pred_d[moving]), object_true=_median(true_d[moving]),
        camera_path_pred=None if pred_T_world_cam is None else s * camera_path_length(pred_T_world_cam),
        camera_path_true=None if true_T_world_cam is None else camera_path_length(true_T_world_cam),
        scale=s, num_background=int(background.sum()), num_object=int(moving.sum()),
        pred_displacement=pred_d, true_displacement=true_d, group=group)


# ----------------------------------------------------------------------------------------------- the clip
def write_clip_video(path: str | Path, *, domain: str = DEFAULT_DOMAIN, seed: int = DEFAULT_SEED, frames: int = 16,
                     height: int = 64, width: int = 96, fps: float = 10.0) -> tuple[Path, Clip]:
    """Render one synthetic clip and encode it as a video file (``app.video.write_video``; H.264 for .mp4).

    Returns (the written path, the Clip with its ground truth: rgb (1, T, 3, height, width), track_world, ...)."""
    clip = generate_clips(1, frames=frames, height=height, width=width, domain=domain, seed=seed)
    return write_video(path, clip.rgb[0], fps=fps), clip


def truth_at_network_pixels(clip: Clip, transform: FrameTransform, pixels: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground truth of clip 0 at network pixels (N, 2) (u, v), read at the nearest original pixel.

    Returns gt_tracks (T, N, 3) in metres, background (N,) bool (the room at frame 0) and moving (N,) bool (on
    an object whose true track moves > 5 cm, ``Clip.track_dynamic``)."""
    H0, W0 = transform.orig_size
    if (clip.height, clip.width) != (H0, W0):
        raise ValueError(f"the clip is {clip.height}x{clip.width} but the video was {H0}x{W0}")
    uv0 = transform.pixels_to_original(pixels.double()).round().long()
    u0, v0 = uv0[:, 0].clamp(0, W0 - 1), uv0[:, 1].clamp(0, H0 - 1)
    gt = clip.track_world[0][:, v0, u0]
    return gt, clip.object_id[0, 0][v0, u0] == 0, clip.track_dynamic[0][v0, u0]


def run_static_vs_moving(checkpoint, out: str | Path, *, domain: str = DEFAULT_DOMAIN, seed: int = DEFAULT_SEED,
                         frames: int = 16, height: int = 64, width: int = 96, chunk: int = 8,
                         view: bool = False, log=print) -> tuple[StaticVsMoving, RunResult, Clip]:
    """Write the clip to ``out/clip.mp4``, run ``app.run.run_video`` on the file into ``out/run``, then score
    every network pixel (see the module docstring). checkpoint: any model spec of ``model.resolve.load``.

    Returns (the score, the RunResult: track (T, H, W, 3) ..., the Clip with the ground truth)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path, clip = write_clip_video(out / "clip.mp4", domain=domain, seed=seed, frames=frames, height=height,
                                  width=width)
    res = run_video(path, checkpoint, out / "run", chunk=chunk, view=view, overwrite=True, log=log)
    T, H, W, _ = res.track.shape
    vv, uu = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pixels = torch.stack([uu.reshape(-1), vv.reshape(-1)], -1)
    gt, background, moving = truth_at_network_pixels(clip, res.transform, pixels)
    if gt.shape[0] != T:
        raise ValueError(f"the run has {T} frames but the clip {gt.shape[0]} (frames lost in decoding?)")
    score = score_static_vs_moving(res.track.reshape(T, H * W, 3), gt, background, moving,
                                   pred_T_world_cam=res.T_world_cam, true_T_world_cam=clip.T_world_cam[0])
    return score, res, clip


def run_many(checkpoint, seeds, *, domain: str = DEFAULT_DOMAIN, frames: int = 16, height: int = 64,
             width: int = 96, log=print) -> dict:
    """The claim over many clips (one clip decides little: its camera path and objects are one draw of the
    world). For each seed: ``run_static_vs_moving`` in a temporary folder; clips without a moving object are
    skipped. Returns {"clips": [per-clip numbers + seed + camera kind], "summary": {"clips", "holds" (how many),
    "median_background_pred", "median_object_pred", "median_object_true", "median_ratio" (object / background)}}."""
    model = resolve.load(checkpoint, log=lambda s: None)
    clips = []
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="st4r_svm_") as tmp:
            score, _, clip = run_static_vs_moving(model, tmp, domain=domain, seed=int(seed), frames=frames,
                                                  height=height, width=width, log=lambda s: None)
        if score.num_object == 0:
            continue
        row = {"seed": int(seed), "camera": clip.info[0]["camera"], **score.as_dict()}
        clips.append(row)
        log(f"seed {seed:3d} ({row['camera']:8s}): background {score.background_pred:.2f} m, object "
            f"{score.object_pred:.2f} m (truth {score.object_true:.2f} m): {'holds' if score.holds else 'FAILS'}")
    if not clips:
        raise InputError(f"none of the seeds {list(seeds)} gave a clip with a moving object")
    col = lambda k: torch.tensor([c[k] for c in clips], dtype=torch.float64)  # noqa: E731
    summary = {"clips": len(clips), "holds": sum(c["holds"] for c in clips),
               "median_background_pred": float(col("background_pred").median()),
               "median_object_pred": float(col("object_pred").median()),
               "median_object_true": float(col("object_true").median()),
               "median_ratio": float((col("object_pred") / col("background_pred").clamp_min(1e-9)).median())}
    return {"clips": clips, "summary": summary}


def displacement_figure(score: StaticVsMoving, title: str | None = None) -> go.Figure:
    """Per point: predicted against true world-frame displacement (m), background and moving object in two
    colours, with the line y = x (a perfect prediction lies on it; background truth is 0)."""
    fig = go.Figure()
    for g, name, colour in ((1, "background (truth: static)", "#1f77b4"), (2, "moving object", "#d62728")):
        m = score.group == g
        fig.add_trace(go.Scattergl(x=score.true_displacement[m].tolist(), y=score.pred_displacement[m].tolist(),
                                   mode="markers", name=f"{name}: {int(m.sum())} points",
                                   marker=dict(size=4, color=colour, opacity=0.4)))
    top = float(torch.nan_to_num(torch.cat([score.true_displacement, score.pred_displacement]), nan=0).max())
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="y = x (perfect)",
                             line=dict(color="gray", dash="dash")))
    fig.update_layout(title=title or score.headline(), xaxis_title="true max_t ‖x_t − x_0‖ (m)",
                      yaxis_title="predicted max_t ‖x_t − x_0‖ (m, median-aligned)", height=450,
                      title_font_size=12)
    return fig


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="st4r-lite study static_vs_moving", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="model spec (default: data/tiny.pt)")
    p.add_argument("--domain", default=DEFAULT_DOMAIN)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--out", default=None, help="folder for clip.mp4 and the run (default: a temporary folder)")
    p.add_argument("--seeds", default=None, help="many clips instead of one: a range A-B or a comma list, e.g. 0-29")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    a = p.parse_args(argv)
    doc = {"command": "st4r-lite study static_vs_moving " + " ".join(argv or []), "domain": a.domain,
           "frames": a.frames, "size": [a.height, a.width]}
    if a.json:
        check_writable(a.json, what="--json")
    if a.seeds:
        try:
            lo, sep, hi = a.seeds.partition("-")
            seeds = list(range(int(lo), int(hi) + 1)) if sep else [int(x) for x in a.seeds.split(",")]
        except ValueError:
            raise InputError(f"--seeds {a.seeds!r}: give a range such as 0-29 or a list such as 3,7,26") from None
        doc.update(run_many(a.checkpoint, seeds, domain=a.domain, frames=a.frames, height=a.height, width=a.width))
        s = doc["summary"]
        print(f"the claim holds on {s['holds']} of {s['clips']} clips; medians: background "
              f"{s['median_background_pred']:.2f} m, object {s['median_object_pred']:.2f} m (truth "
              f"{s['median_object_true']:.2f} m), object / background {s['median_ratio']:.1f}x")
    else:
        out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="st4r_static_vs_moving_"))
        score, _, _ = run_static_vs_moving(a.checkpoint, out, domain=a.domain, seed=a.seed, frames=a.frames,
                                           height=a.height, width=a.width)
        doc.update(seed=a.seed, **score.as_dict())
        print(score.headline())
        print(f"claim (background moves less than the object): {'holds' if score.holds else 'does NOT hold'}")
    if a.json:
        with atomic_write(a.json, "w") as fh:
            json.dump(to_jsonable(doc), fh, indent=1)
    return doc


if __name__ == "__main__":
    main()
