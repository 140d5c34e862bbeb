"""Settings of one test-time adaptation run (docs/method.md §6): :class:`AdaptConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from st4r_lite.adapt.occlusion import OCCLUSION_TAU, SIGMA_FORMS
from st4r_lite.adapt.variants import get_variant
from st4r_lite.errors import InputError

__all__ = ["AdaptConfig", "PARAM_SETS", "ALIGN_WHERE", "RELEASED"]

PARAM_SETS = ("track", "all_but_encoder")
ALIGN_WHERE = ("all", "recon_confident")


@dataclass
class AdaptConfig:
    """Settings of one adaptation run.

    The defaults are this package's recipe for the tiny model on world v2, chosen by the sensitivity table
    (``python -m st4r_lite.studies.adapt_compare --sensitivity``, recorded in data/adapt_sensitivity_quick.json)
    against the released recipe (``RELEASED``: decoder stack 1 + head 1 only, 15 steps at 3e-5, L_traj weight
    0.5):
    - ``reanchor = True``: after the steps the anchor's points whose depth disagrees with the mono-depth by more
      than ``reanchor_tau`` move to it along their rays, every frame's track with them (``adapt.reanchor``). On the
      `wild` clips the anchor's geometry, not the motion, limits the tiny model's tracks
      (``studies.adapt_ceiling``), and the steps alone do not carry the mono-depth into the tracks; this is where
      the measured gain comes from (+13.2 APD on 12 wild clips with the steps, +2.4 without re-anchoring).
    - ``w_traj = 0``: L_traj compares reprojections through cameras solved from the model's own recon maps; their
      error (ATE ~0.1 m on 5 m rooms) is pushed into the tracks. L_align asks the same of the tracks in 3D
      (track_j(p) = recon_j(x̃_j)) without any camera.
    - ``params = "all_but_encoder"``, 15 steps at 3e-5: L_depth also corrects the recon maps that L_align reads;
      longer or stronger steps lose more (``studies.adapt_curve``: the longer the adaptation, the lower the APD,
      while every loss keeps falling).
    """

    variant: str = "robust"
    steps: int = 15
    lr: float = 3e-5
    schedule: str = "cosine"        # "cosine" (to 0 after warm-up) or "constant"
    warmup: int = 0
    params: str = "all_but_encoder"  # PARAM_SETS
    w_traj: float = 0.0             # the released code's weight is 0.5 (see RELEASED)
    w_depth: float = 10.0
    w_align: float = 5.0
    align_where: str = "all"        # ALIGN_WHERE: "all", or "recon_confident": L_align (and L_traj) only where
                                    # C_recon(x̃_j) > C_track_j(p), the recon read there is the more confident branch
    tau: float = OCCLUSION_TAU      # occlusion mask tolerance, relative to the reconstruction's depth
    sigma_form: str = "laplace"     # SIGMA_FORMS
    sigma_lr_mult: float = 10.0     # the zero-initialised sigma head learns faster
    query_stride: int = 4
    pose_every: int = 5             # re-solve the cameras every that many steps (always with pose_grad)
    pose_stride: int = 2            # PnP on every pose_stride-th pixel (4x faster, same pose)
    pose_hypotheses: int = 64       # RANSAC hypotheses per frame
    pose_grad: bool = False         # differentiable Gauss–Newton step through PnP
    pairs_per_step: int | None = 8  # pairs (0, j) per step: pair 0 + a random subset (None = all T)
    cameras: str = "pred"           # "pred" (PnP on recon, the method) or "gt" (diagnostic: true cameras)
    reanchor: bool = True           # after the steps, move the anchor's points to the mono-depth along their rays
                                    # and every frame's track with them (adapt.reanchor); needs a mono-depth
    reanchor_tau: float = 0.05      # ... only where model and mono-depth disagree by more than this (log depth)
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        get_variant(self.variant)
        if self.params not in PARAM_SETS:
            raise InputError(f"params must be one of {PARAM_SETS}, got {self.params!r}")
        if self.sigma_form not in SIGMA_FORMS:
            raise InputError(f"sigma_form must be one of {SIGMA_FORMS}, got {self.sigma_form!r}")
        if self.align_where not in ALIGN_WHERE:
            raise InputError(f"align_where must be one of {ALIGN_WHERE}, got {self.align_where!r}")
        if self.cameras not in ("pred", "gt"):
            raise InputError(f"cameras must be 'pred' or 'gt', got {self.cameras!r}")
        if self.schedule not in ("cosine", "constant"):
            raise InputError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        counts = (self.pose_every, self.query_stride, self.pose_stride, self.pose_hypotheses,
                  2 if self.pairs_per_step is None else self.pairs_per_step - 1)
        if self.steps < 0 or self.lr <= 0 or self.tau < 0 or self.reanchor_tau < 0 or min(counts) < 1:
            raise InputError("need steps >= 0, lr > 0, tau >= 0, reanchor_tau >= 0 and pose_every, query_stride, "
                             "pose_stride, pose_hypotheses >= 1, pairs_per_step >= 2; got "
                             f"{self.steps}, {self.lr}, {self.tau}, {self.reanchor_tau}, {counts}")


# The released code's settings (St4RTrack's test-time adaptation, scaled to this package): an AdaptConfig change.
RELEASED = {"params": "track", "steps": 15, "lr": 3e-5, "w_traj": 0.5}
