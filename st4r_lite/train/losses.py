"""Pretraining loss of St4RTrack (docs/method.md §4): scale-normalised, confidence-weighted 3D regression.

Dimension letters: B pairs in the batch, H, W image rows / columns, P pixels (= H·W).

For a pair (anchor 0, frame j) the network predicts two pointmaps in the anchor camera (= world) frame:
``track`` (where every anchor pixel is at time j) and ``recon`` (frame j's visible geometry at time j), each
with a confidence C = 1 + exp(c) > 1. The loss, per branch, is DUSt3R's confidence-weighted regression

    L = mean over valid pixels p of   C_p · ‖X̂_p − X̄_p‖ − α · log C_p,        α = 0.2,

where X̂ = prediction / s_pred and X̄ = target / s_gt are scale-normalised per pair (below). Negative values
are normal (the log C term is unbounded below as C grows on easy pixels).

Scale normalisation (choice stated): per pair, s_pred = mean over the valid *recon* pixels of ‖recon_pred‖ and
s_gt = mean over the same pixels of ‖recon_gt‖ (distance to the world origin = anchor camera centre). Both
branches of a pair (track and recon) are divided by that pair's recon factors, so the two outputs keep a
common scale and the track branch cannot cheat with its own scale. The factors are *not* detached (as in
DUSt3R). The released code meant this but averaged over all pixels; we average over valid ones only.

Dynamic regression (this package's option, ``dynamic_regression = w``, default 0): + w · mean over valid moving
pixels of ‖X̂ − X̄‖, the plain error with no confidence, so moving pixels weigh at least w without touching C.

Object regression (this package's option, ``object_regression = w``, default 0; needs ``PairTargets.on_object``
and whole clips): + w · (mean over valid recon pixels on objects of ‖X̂ − X̄‖ + mean over the self-pairs' valid
moving anchor pixels of the track's ‖X̂ − X̄‖): the geometry of objects in every frame and the anchor's own moving
objects, with no confidence to hide behind and no motion asked for (the self-pair's track is the anchor itself).

Object depth (this package's option, ``object_depth = w``, default 0; needs ``PairTargets.on_object``): each
object pixel's depth *relative to the room behind it*, in the anchor camera (z = the point's third coordinate),

    d_p = log z_p − median over the pair's room pixels of log z,
    L_depth = mean over the valid object pixels of both branches of |d̂_p − d_p|,    room median of d̂ detached,

object pixels being frame j's object pixels in the recon branch and the anchor's moving pixels in the track branch,
"room" pixels the rest (in the track branch that includes any object that does not move: the targets carry the
anchor's moving pixels, not its objects). It is scale-free (a difference of logs), and with the room's median
detached it can only move the objects against the room, not re-scale the room (what ``object_regression`` at
weight 1 did). It targets the measured failure: the anchor places objects too far, drawn toward the room's depth
(``studies.object_placement``'s ``shrink``). Pixels with z ≤ 0.05 in the target or prediction are left out.

Motion regression (this package's option, ``motion_weight = w``, default 0; needs the pairs of whole clips,
B = clips · S with the self-pair (0, 0) first in each clip): the motion of every anchor pixel from the self-pair's
track to pair (0, k)'s track, both divided by the *self-pair's* scale factor,

    m̂_k = (track_k − track_0) / s_pred,0,     m_k = (gt_k − gt_0) / s_gt,0,
    L_motion = mean over k ≥ 1 and pixels valid in both pairs of ‖m̂_k − m_k‖.

Static pixels (m = 0) weigh as much as moving ones, so the term teaches what does not move as much as what does,
and it ties every pair's scale to the anchor pair's (one clip, one scale: what the evaluation assumes).

Dynamic reweighting (track branch only, released code): on moving pixels, C is replaced by
5 · max(C over the pair's valid static pixels), detached, so the network must lower their error and cannot
hide it by lowering their confidence. Their α log C term then is a constant and does not train anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

ALPHA = 0.2
DYNAMIC_CONF_FACTOR = 5.0
_EPS = 1e-8


@dataclass
class PairTargets:
    """Ground truth of B pairs (anchor 0, frame j), everything in the anchor camera (= world) frame.

    track (B, H, W, 3): where each anchor pixel's surface point is at time j.
    recon (B, H, W, 3): frame j's visible surface at time j.
    valid_track, valid_recon (B, H, W) bool: which target pixels exist (finite).
    dynamic (B, H, W) bool: anchor pixel lies on a moving object (used by the dynamic reweighting).
    """

    track: torch.Tensor
    recon: torch.Tensor
    valid_track: torch.Tensor
    valid_recon: torch.Tensor
    dynamic: torch.Tensor
    on_object: torch.Tensor | None = None   # (B, H, W) bool: frame j's pixel lies on an object (object regression)

    def to(self, device: torch.device | str) -> PairTargets:
        return PairTargets(*(None if getattr(self, k) is None else getattr(self, k).to(device)
                             for k in ("track", "recon", "valid_track", "valid_recon", "dynamic", "on_object")))


@dataclass
class LossTerms:
    """Result of :class:`PretrainLoss`. ``total``, ``track``, ``recon`` carry gradients (scalars).

    track_err, recon_err: mean unweighted ‖X̂ − X̄‖ over valid pixels (normalised units, detached), for logs.
    track_err_dynamic: the same over the valid moving anchor pixels (NaN when there are none).
    """

    total: torch.Tensor
    track: torch.Tensor
    recon: torch.Tensor
    track_err: torch.Tensor
    recon_err: torch.Tensor
    track_err_dynamic: torch.Tensor
    motion: torch.Tensor | None = None
    match: torch.Tensor | None = None   # L_match (train.correspondence), added by the loop when match_weight > 0
    match_head: torch.Tensor | None = None  # L_match_head (train.correspondence), when match_head_weight > 0
    match_gate: torch.Tensor | None = None  # L_gate (train.correspondence), when match_gate_weight > 0
    object: torch.Tensor | None = None      # L_object, when object_regression > 0
    object_depth: torch.Tensor | None = None  # L_depth, when object_depth > 0

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in self.__dataclass_fields__
                if getattr(self, k) is not None}


def _check_pointmap(name: str, x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be a (B, H, W, 3) pointmap, got shape {tuple(x.shape)}")


def pair_scale(recon: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-pair normalisation factor s = mean over valid pixels of ‖recon_p‖ (distance to the origin).

    recon: (B, H, W, 3); valid: (B, H, W) bool -> s: (B,), clamped to ≥ 1e-8. A pair with no valid pixel
    gets s = 1 (its terms are masked out anyway). NaNs at invalid pixels are ignored.
    """
    _check_pointmap("recon", recon)
    if valid.shape != recon.shape[:-1]:
        raise ValueError(f"valid must have shape {tuple(recon.shape[:-1])}, got {tuple(valid.shape)}")
    dist = torch.where(valid, recon.nan_to_num(0.0).norm(dim=-1), torch.zeros((), dtype=recon.dtype,
                                                                              device=recon.device))
    count = valid.flatten(1).sum(1)
    mean = dist.flatten(1).sum(1) / count.clamp_min(1)
    return torch.where(count > 0, mean.clamp_min(_EPS), torch.ones_like(mean))


def normalise_pair(track: torch.Tensor, recon: torch.Tensor, valid_recon: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Divide both branches of each pair by the pair's recon factor s (see :func:`pair_scale`).

    track, recon: (B, H, W, 3); valid_recon: (B, H, W) -> (track / s, recon / s, s (B,)).
    """
    s = pair_scale(recon, valid_recon)
    s4 = rearrange(s, "b -> b 1 1 1")
    return track / s4, recon / s4, s


def dynamic_confidence(conf: torch.Tensor, dynamic: torch.Tensor, valid: torch.Tensor,
                       factor: float = DYNAMIC_CONF_FACTOR) -> torch.Tensor:
    """Track-branch confidence with moving pixels set to factor · max(C over valid static pixels), detached.

    conf: (B, H, W) > 1; dynamic, valid: (B, H, W) bool -> (B, H, W). The max is taken per pair; a pair
    without valid static pixels uses the max over all its valid pixels instead (and is left as is if it
    has none at all).
    """
    if conf.shape != dynamic.shape or conf.shape != valid.shape:
        raise ValueError(f"conf, dynamic and valid must share a shape, got {tuple(conf.shape)}, "
                         f"{tuple(dynamic.shape)}, {tuple(valid.shape)}")
    c = conf.detach()
    static = valid & ~dynamic
    neg = torch.full_like(c, -torch.inf)
    max_static = torch.where(static, c, neg).flatten(1).amax(1)
    max_valid = torch.where(valid, c, neg).flatten(1).amax(1)
    ref = torch.where(torch.isfinite(max_static), max_static, max_valid)
    replace = dynamic & valid & rearrange(torch.isfinite(ref), "b -> b 1 1")
    target = factor * rearrange(torch.where(torch.isfinite(ref), ref, torch.ones_like(ref)), "b -> b 1 1")
    return torch.where(replace, target.expand_as(c), conf)


def confidence_regression(pred: torch.Tensor, target: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor,
                          alpha: float = ALPHA) -> tuple[torch.Tensor, torch.Tensor]:
    """DUSt3R confidence loss: mean over valid pixels of C·‖X̂ − X̄‖ − α·log C.

    pred, target: (B, H, W, 3) (already normalised); conf: (B, H, W) > 0; valid: (B, H, W) bool.
    Returns (loss scalar, per-pixel error ‖X̂ − X̄‖ (B, H, W) with 0 at invalid pixels). With no valid pixel
    the loss is 0 (connected to the graph so that backward still works).
    """
    _check_pointmap("pred", pred)
    if target.shape != pred.shape:
        raise ValueError(f"target shape {tuple(target.shape)} differs from pred shape {tuple(pred.shape)}")
    if conf.shape != pred.shape[:-1] or valid.shape != pred.shape[:-1]:
        raise ValueError(f"conf and valid must have shape {tuple(pred.shape[:-1])}, "
                         f"got {tuple(conf.shape)} and {tuple(valid.shape)}")
    # invalid targets may be NaN: zero the difference there so that no NaN reaches the value or the gradient
    diff = torch.where(valid[..., None], pred - target.nan_to_num(0.0), torch.zeros_like(pred))
    err = diff.norm(dim=-1)
    per_pixel = conf * err - alpha * torch.log(conf)
    n = valid.sum()
    loss = torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).sum() / n.clamp_min(1)
    return loss, err


def motion_regression(pred_track: torch.Tensor, gt_track: torch.Tensor, valid: torch.Tensor,
                      s_pred: torch.Tensor, s_gt: torch.Tensor, frames: int) -> torch.Tensor:
    """L_motion = mean over k ≥ 1, valid pixels of ‖(track_k − track_0)/s_pred,0 − (gt_k − gt_0)/s_gt,0‖.

    pred_track, gt_track: (B·S, H, W, 3) raw (un-normalised) pointmaps in (clip, k) order with k = 0 the self-pair;
    valid: (B·S, H, W) bool; s_pred, s_gt: (B·S,) per-pair scale factors (:func:`pair_scale`); frames: S ≥ 2.
    Returns a scalar (0, still in the graph, when no pixel is valid in both pairs).

    >>> gt = torch.rand(2 * 3, 4, 5, 3); s = torch.ones(6); v = torch.ones(6, 4, 5, dtype=torch.bool)
    >>> float(motion_regression(gt * 2, gt, v, s * 2, s, frames=3))   # a global scale is no motion error
    0.0
    """
    _check_pointmap("pred_track", pred_track)
    if frames < 2 or pred_track.shape[0] % frames:
        raise ValueError(f"the batch ({pred_track.shape[0]} pairs) must be whole clips of frames={frames} ≥ 2 pairs")
    per_clip = lambda x: rearrange(x, "(b s) ... -> b s ...", s=frames)  # noqa: E731
    pt, gt, v = per_clip(pred_track), per_clip(gt_track.nan_to_num(0.0)), per_clip(valid)
    sp, sg = (rearrange(per_clip(x)[:, 0], "b -> b 1 1 1 1") for x in (s_pred, s_gt))
    m_pred = (pt[:, 1:] - pt[:, :1]) / sp
    m_gt = (gt[:, 1:] - gt[:, :1]) / sg
    both = v[:, 1:] & v[:, :1]
    err = torch.where(both[..., None], m_pred - m_gt, torch.zeros_like(m_pred)).norm(dim=-1)
    return err.sum() / both.sum().clamp_min(1)


def object_relative_depth(pred: torch.Tensor, target: torch.Tensor, on_object: torch.Tensor, valid: torch.Tensor,
                          z_min: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of |d̂_p − d_p| over the object pixels of B pointmaps (L_depth of the module docstring).

    pred, target: (B, H, W, 3) in the anchor camera (any scale each); on_object, valid: (B, H, W) bool. Room pixels
    are valid & ~on_object. Returns (sum over pixels, number of pixels): scalars, the sum in the graph of ``pred``.
    A pair with no usable room pixel adds nothing.

    >>> gt = torch.rand(2, 4, 5, 3) + 1; obj = torch.zeros(2, 4, 5, dtype=torch.bool); obj[:, 1:3, 1:3] = True
    >>> v = torch.ones_like(obj); pred = gt * 3                      # any global scale: no error
    >>> [round(float(x), 6) for x in object_relative_depth(pred, gt, obj, v)]
    [0.0, 8.0]
    >>> pred[obj] *= 1.1                                               # objects 10 % too far
    >>> round(float(object_relative_depth(pred, gt, obj, v)[0] / 8), 4)
    0.0953
    """
    _check_pointmap("pred", pred)
    assert target.shape == pred.shape and on_object.shape == valid.shape == pred.shape[:-1], \
        (tuple(pred.shape), tuple(target.shape), tuple(on_object.shape), tuple(valid.shape))
    zp, zt = pred[..., 2], target[..., 2].to(pred.dtype).nan_to_num(0.0)
    ok = valid & (zt > z_min) & (zp.detach() > z_min)
    lp, lt = torch.log(zp.clamp_min(z_min)), torch.log(zt.clamp_min(z_min))
    room = ok & ~on_object
    nan = torch.tensor(float("nan"), device=pred.device)
    med = lambda x: torch.nanmedian(torch.where(room, x, nan).flatten(1), dim=1).values  # noqa: E731
    mp, mt = med(lp.detach()), med(lt)                                 # (B,) the room's median log depth
    use = ok & on_object & rearrange(torch.isfinite(mp) & torch.isfinite(mt), "b -> b 1 1")
    d = (lp - rearrange(mp.nan_to_num(0.0), "b -> b 1 1")) - (lt - rearrange(mt.nan_to_num(0.0), "b -> b 1 1"))
    return torch.where(use, d.abs(), torch.zeros_like(d)).sum(), use.sum()


class PretrainLoss:
    """The pretraining objective: L = w_track · L_track + w_recon · L_recon (both DUSt3R confidence losses),
    plus the optional dynamic-regression, object-regression, object-depth and motion terms (module docstring).

    Call with a ``PairOutput``-like object (fields track, recon, conf_track, conf_recon, each (B, H, W, ·))
    and :class:`PairTargets`; returns :class:`LossTerms`.
    """

    def __init__(self, alpha: float = ALPHA, track_weight: float = 1.0, recon_weight: float = 1.0,
                 dynamic_factor: float | None = DYNAMIC_CONF_FACTOR, dynamic_regression: float = 0.0,
                 motion_weight: float = 0.0, object_regression: float = 0.0, object_depth: float = 0.0) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be ≥ 0, got {alpha}")
        if dynamic_regression < 0:
            raise ValueError(f"dynamic_regression must be ≥ 0, got {dynamic_regression}")
        if motion_weight < 0:
            raise ValueError(f"motion_weight must be ≥ 0, got {motion_weight}")
        if object_regression < 0 or object_depth < 0:
            raise ValueError(f"object_regression and object_depth must be ≥ 0, got {object_regression}, {object_depth}")
        self.object_depth = object_depth
        self.dynamic_regression = dynamic_regression
        self.object_regression = object_regression
        self.motion_weight = motion_weight
        self.alpha = alpha
        self.track_weight = track_weight
        self.recon_weight = recon_weight
        self.dynamic_factor = dynamic_factor

    def __call__(self, out, targets: PairTargets, frames: int | None = None) -> LossTerms:
        """frames: S pairs per clip (the batch is whole clips, self-pair first); needed when motion_weight > 0."""
        if (self.motion_weight or self.object_regression) and frames is None:
            raise ValueError("motion_weight > 0 needs frames= (pairs per clip) to find each clip's self-pair")
        for name in ("track", "recon"):
            if getattr(out, name).shape != getattr(targets, name).shape:
                raise ValueError(f"prediction {name} has shape {tuple(getattr(out, name).shape)} but the "
                                 f"target has {tuple(getattr(targets, name).shape)}; same resolution needed")
        pred_track, pred_recon, s_pred = normalise_pair(out.track.float(), out.recon.float(), targets.valid_recon)
        gt_track, gt_recon, s_gt = normalise_pair(targets.track.float(), targets.recon.float(),
                                               targets.valid_recon)
        conf_track = out.conf_track.float()
        if self.dynamic_factor is not None:
            conf_track = dynamic_confidence(conf_track, targets.dynamic, targets.valid_track,
                                            self.dynamic_factor)
        l_track, e_track = confidence_regression(pred_track, gt_track, conf_track, targets.valid_track,
                                                 self.alpha)
        l_recon, e_recon = confidence_regression(pred_recon, gt_recon, out.conf_recon.float(),
                                                 targets.valid_recon, self.alpha)
        total = self.track_weight * l_track + self.recon_weight * l_recon
        vt, vr = targets.valid_track, targets.valid_recon
        vd = vt & targets.dynamic
        if self.dynamic_regression:   # + w · mean over moving pixels of ‖X̂ − X̄‖ (no confidence to hide behind)
            total = total + self.dynamic_regression * (e_track * vd).sum() / vd.sum().clamp_min(1)
        l_object = None
        if self.object_regression:
            if targets.on_object is None:
                raise ValueError("object_regression > 0 needs PairTargets.on_object (train.loop.clip_pairs sets it)")
            vo = vr & targets.on_object
            self_pair = (torch.arange(vt.shape[0], device=vt.device) % frames == 0)[:, None, None]
            va = vd & self_pair
            l_object = (e_recon * vo).sum() / vo.sum().clamp_min(1) + (e_track * va).sum() / va.sum().clamp_min(1)
            total = total + self.object_regression * l_object
        l_depth = None
        if self.object_depth:
            if targets.on_object is None:
                raise ValueError("object_depth > 0 needs PairTargets.on_object (train.loop.clip_pairs sets it)")
            rs, rn = object_relative_depth(out.recon.float(), targets.recon, targets.on_object, vr)
            ts, tn = object_relative_depth(out.track.float(), targets.track, targets.dynamic, vt)
            l_depth = (rs + ts) / (rn + tn).clamp_min(1)
            total = total + self.object_depth * l_depth
        l_motion = None
        if self.motion_weight:
            l_motion = motion_regression(out.track.float(), targets.track.float(), vt, s_pred, s_gt, frames)
            total = total + self.motion_weight * l_motion
        with torch.no_grad():
            track_err = e_track.sum() / vt.sum().clamp_min(1)
            recon_err = e_recon.sum() / vr.sum().clamp_min(1)
            dyn_err = (e_track * vd).sum() / vd.sum() if vd.any() \
                else torch.tensor(float("nan"), device=total.device)
        return LossTerms(total=total, track=l_track, recon=l_recon, track_err=track_err.detach(),
                         recon_err=recon_err.detach(), track_err_dynamic=dyn_err.detach(),
                         motion=None if l_motion is None else l_motion.detach(),
                         object=None if l_object is None else l_object.detach(),
                         object_depth=None if l_depth is None else l_depth.detach())
