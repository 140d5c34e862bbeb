"""The peers St4RTrack must beat, scored by the same code (docs/method.md §7): a static and a combinational baseline.

Dimension letters: T frames, H image rows, W image columns, N tracked points (queries = anchor pixels).

- **Static** (:func:`static_prediction`): nothing moves. Every frame's track is the anchor's own 3D point,
  X_t(p_n) := X_0(p_n) with X_0 the reconstruction of pair (0, 0) (world = anchor camera). It gets the static
  background right up to the reconstruction's error and every moving point wrong by its displacement, so the
  *dynamic* APD is where a tracker has to show what it adds.
- **Combinational** (:func:`lift_tracks`, :func:`combinational_prediction`): the classical pipeline the
  paper's "SpaTracker + MonST3R" rows stand for. A 2D tracker gives x̃_{t,n}; a depth map d_t gives its depth;
  the recovered camera t lifts it to the world:

      X_{t,n} = T_world_cam_t · ( d_t(x̃_{t,n}) · K⁻¹ [x̃_{t,n}, 1] ),

  with d_t bilinearly sampled. A mono-depth map is only known up to a scale per frame, so it is first matched
  to a reference depth (the model's own recon depth in camera t): s_t = median(d_ref / d_mono) over pixels
  where both exist. Where the tracker says a point is not visible (or it left the image), the depth there
  belongs to something else: the baseline keeps the point's last lifted position (hold-last), which is
  exact for static points and lags behind moving ones.
"""

from __future__ import annotations

import torch

from st4r_lite.adapt.online import make_provider
from st4r_lite.adapt.pseudo_labels import PseudoLabels
from st4r_lite.adapt.sim_labels import SimulatedMonoDepth
from st4r_lite.errors import InputError
from st4r_lite.eval.evaluate import (
    EvalSequence,
    Prediction,
    evaluate_prediction,
    mean_results,
    predict_model,
    sample_maps,
)
from st4r_lite.geometry.pinhole import transform_points, unproject
from st4r_lite.geometry.track_metrics import static_tracks

__all__ = ["static_prediction", "lift_tracks", "match_depth_scale", "combinational_prediction",
           "pseudo_tracks", "evaluate_peer", "PEERS"]

PEERS = ("static", "combinational")


def static_prediction(pred: Prediction, seq: EvalSequence) -> Prediction:
    """The static baseline from a model's prediction: tracks := the anchor recon (pair (0, 0)) at the queries,
    repeated for every frame; recon, depth and cameras are the model's (so only tracking changes)."""
    if pred.recon is None:
        raise ValueError("the static baseline needs the anchor reconstruction: pred.recon (T, H, W, 3)")
    anchor = sample_maps(pred.recon[:1].double(), seq.query_pixels.double())[0]   # (N, 3)
    tracks = static_tracks(anchor, seq.num_frames)
    return Prediction(tracks=tracks, recon=pred.recon, depth=pred.depth, T_world_cam=pred.T_world_cam,
                      K=pred.K, visible=None, conf_recon=pred.conf_recon)


def match_depth_scale(mono: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-frame median scale of a mono-depth to a reference depth: s_t = median(ref / mono) over pixels with
    both > 0 and finite; returns s_t · mono. mono, reference: (T, H, W). Frames with no common pixel keep s = 1."""
    if mono.shape != reference.shape or mono.ndim != 3:
        raise ValueError(f"mono {tuple(mono.shape)} and reference {tuple(reference.shape)} must both be (T, H, W)")
    m, r = mono.double(), reference.double()
    ok = torch.isfinite(m) & torch.isfinite(r) & (m > 0) & (r > 0)
    scales = []
    for t in range(m.shape[0]):
        scales.append((r[t][ok[t]] / m[t][ok[t]]).median() if ok[t].any() else m.new_tensor(1.0))
    return torch.stack(scales)[:, None, None] * m


def lift_tracks(tracks_2d: torch.Tensor, track_valid: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                T_world_cam: torch.Tensor) -> torch.Tensor:
    """Lift 2D tracks to world 3D with a depth map per frame and the cameras (module doc), hold-last where invalid.

    tracks_2d: (T, N, 2) pixels; track_valid: (T, N) bool; depth: (T, H, W) z-depth (≤ 0 = missing);
    K: (3, 3); T_world_cam: (T, 4, 4) -> (T, N, 3) world points. Frame 0 is always lifted (the queries);
    an entry is lifted when valid, inside the image and its (bilinear) depth is > 0, else the last lifted
    position is kept.
    """
    if tracks_2d.ndim != 3 or tracks_2d.shape[-1] != 2:
        raise ValueError(f"tracks_2d must be (T, N, 2), got {tuple(tracks_2d.shape)}")
    T, N, _ = tracks_2d.shape
    if track_valid.shape != (T, N) or depth.ndim != 3 or depth.shape[0] != T or T_world_cam.shape != (T, 4, 4):
        raise ValueError(f"need track_valid (T, N) = ({T}, {N}), depth (T, H, W) and T_world_cam (T, 4, 4); got "
                         f"{tuple(track_valid.shape)}, {tuple(depth.shape)}, {tuple(T_world_cam.shape)}")
    H, W = depth.shape[-2:]
    uv = tracks_2d.double().nan_to_num(0.0)
    d = depth.double().clamp_min(0).nan_to_num(0.0)
    z = sample_maps(d[..., None], uv)[..., 0]
    # a bilinear sample next to a missing pixel mixes in zeros: require all 4 neighbours > 0 via min-pooling
    z_min = -torch.nn.functional.max_pool2d(-d[:, None], 2, stride=1, padding=0)[:, 0]      # (T, H-1, W-1)
    iu = uv[..., 0].floor().long().clamp(0, max(W - 2, 0))
    iv = uv[..., 1].floor().long().clamp(0, max(H - 2, 0))
    nb_ok = torch.gather(z_min.reshape(T, -1), 1, iv * (W - 1) + iu) > 0 if H > 1 and W > 1 else z > 0
    inside = (uv[..., 0] >= -0.5) & (uv[..., 0] <= W - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] <= H - 0.5)
    ok = track_valid.bool() & inside & nb_ok & torch.isfinite(tracks_2d).all(-1)
    ok[0] = True
    world = transform_points(T_world_cam.double(), unproject(uv, z, K.double()))
    out = torch.empty_like(world)
    out[0] = world[0]
    for t in range(1, T):
        out[t] = torch.where(ok[t, :, None], world[t], out[t - 1])
    return out


def pseudo_tracks(seq: EvalSequence, tracker: str = "sim", seed: int = 0):
    """2D pseudo-tracks of the queries: ``"sim"`` (simulated tracker, from ground truth), ``"lk"`` (Lucas–Kanade,
    any video) or ``"gt"`` (exact ground truth, for checks). Returns ``pseudo_labels.PseudoLabels``."""
    if tracker == "gt":
        uv, vis = seq.ground_truth().tracks_2d(None)
        return PseudoLabels(tracks_2d=uv.float(), track_valid=vis.bool(), depth=None,
                            query_pixels=seq.query_pixels.float(), source="gt")

    provider = make_provider(tracker, "none", ground_truth=seq.ground_truth() if tracker == "sim" else None,
                             seed=seed)
    return provider(seq.video.float(), seq.query_pixels.float())


def combinational_prediction(seq: EvalSequence, pred: Prediction | None, *, tracker: str = "sim",
                             depth: str = "sim", seed: int = 0, labels=None) -> Prediction:
    """The combinational baseline on one sequence.

    tracker: "sim" | "lk" | "gt" (see :func:`pseudo_tracks`); depth: "sim" (simulated mono-depth, scale matched
    to ``pred.depth``), "recon" (the model's own recon depth ``pred.depth``) or "gt"; cameras: the model's
    recovered ones (``pred``), or the ground-truth ones when ``pred`` is None (then depth must be "gt" or "sim"
    and a simulated depth is matched to the ground-truth depth, the GT-perfect check). ``labels``: pseudo-labels
    already computed at ``seq.query_pixels`` (e.g. the ones an adaptation used); their tracks replace the
    tracker and their depth, when present, replaces ``depth="sim"``'s simulation (still scale-matched).
    """
    labels = pseudo_tracks(seq, tracker, seed=seed) if labels is None else labels
    if depth == "gt":
        if seq.depth is None:
            raise InputError(f"{seq.name!r} has no depth map; use depth='recon'")
        d = seq.depth
    elif depth == "sim":
        mono = labels.depth
        if mono is None:
            mono = SimulatedMonoDepth(seq.ground_truth(), seed=seed + 1)(seq.video.float())
        ref = seq.depth if pred is None else pred.depth
        d = match_depth_scale(mono, ref)
    elif depth == "recon":
        if pred is None or pred.depth is None:
            raise ValueError("depth='recon' needs the model's prediction (pred.depth)")
        d = pred.depth
    else:
        raise InputError(f"unknown depth source {depth!r}; use 'sim', 'recon' or 'gt'")
    T_wc = seq.T_world_cam if pred is None else pred.T_world_cam
    K = seq.K if pred is None else pred.K
    tracks = lift_tracks(labels.tracks_2d, labels.track_valid, d, K, T_wc)
    return Prediction(tracks=tracks, recon=None if pred is None else pred.recon, depth=d.double(),
                      T_world_cam=T_wc, K=K, visible=labels.track_valid.bool(),
                      conf_recon=None if pred is None else pred.conf_recon)


def evaluate_peer(model, sequences: list[EvalSequence], peer: str, alignments=("median", "sim3")) -> dict:
    """Score a peer of ``baselines`` ("static" or "combinational") built on the model's own prediction; the
    combinational peer uses the simulated tracker and mono-depth when the sequence has a depth map, else LK
    tracks lifted with the model's recon depth."""
    results = []
    for s in sequences:
        pred = predict_model(model, s)
        if peer == "static":
            p = static_prediction(pred, s)
        elif s.depth is not None:
            p = combinational_prediction(s, pred, tracker="sim", depth="sim")
        else:
            p = combinational_prediction(s, pred, tracker="lk", depth="recon")
        results.append(evaluate_prediction(s, p, alignments))
    return {"sequences": results, "mean": mean_results(results)}
