"""The settings of one pretraining run (:class:`TrainConfig`): stored in its checkpoint, compared on ``--resume``.

Every field has its default here and a ``st4r-lite pretrain`` flag; ``docs/method.md`` §4 explains the losses and
the schedule they set. ``world_shift`` trains on a candidate world (``world.scene.shifted_config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from st4r_lite.errors import InputError
from st4r_lite.model.config import ModelConfig, get_config
from st4r_lite.world.scene import shifted_config


@dataclass
class TrainConfig:
    """Everything that defines a pretraining run (stored in its checkpoint; a resume must match it)."""

    preset: str = "tiny"
    steps: int = 1000
    batch: int = 2              # clips per step and per rank (B); pairs per step = B · frames · ranks
    frames: int = 4             # S frames per clip = pairs per clip (anchor 0 with every k, self-pair included)
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 0.8
    max_frame_gap: float = 3.0  # curriculum: gaps grow from 1 to this (in the world's frame units)
    gap_ramp: float = 0.5       # fraction of training over which the largest gap grows
    domain: str = "pretrain"
    seed: int = 0
    track_weight: float = 1.0
    recon_weight: float = 1.0
    dynamic_factor: float = 5.0  # moving pixels' C := factor · max C(static) (released code); 0 switches it off
    dynamic_regression: float = 0.0  # + w · mean ‖X̂ − X̄‖ over moving pixels (train.losses); 0 = off
    object_regression: float = 0.0  # + w · L_object: objects' geometry in every frame and at the anchor, no
                                # confidence, no motion asked (train.losses); 0 = off
    object_depth: float = 0.0   # + w · L_depth: each object pixel's log depth relative to the room's median, the
                                # room held still (train.losses); 0 = off
    motion_weight: float = 0.0  # + w · L_motion: every anchor pixel's motion from the self-pair (train.losses); 0 = off
    match_weight: float = 0.0   # + w · L_match: the track branch's head-0 cross-attention taught the true
                                # correspondent token (train.correspondence); 0 = off
    init: str = ""              # start from these weights (a training checkpoint, a model file or a released
                                # name) with a fresh optimiser and schedule: fine-tuning; "" = random init
    pixel_refine: int = 0       # width of the heads' image-guided refinement (ModelConfig.pixel_refine); 0 = the
                                # preset's. An --init without one starts it at zero (the init's function exactly)
    match_track: int = 0        # width of the matched-geometry tracking (ModelConfig.match_track); 0 = the preset's.
                                # An --init without one adds it with its gate nearly closed
    match_register: bool = False  # the matched tracking registers frame k's found geometry onto the track first
                                # (ModelConfig.match_register); needs match_track
    match_pixel: bool = False   # the matched tracking reads the lookup at a pixel (ModelConfig.match_pixel); its
                                # looked-up pixels are then also supervised (match_flow_loss) under match_head_weight
    match_refine: int = 0       # radius of the lookup's local correlation refinement (ModelConfig.match_refine)
    match_gate_weight: float = 0.0  # + w · L_gate: the matched tracking's gate taught to open on moving objects
                                # (train.correspondence.match_gate_loss); needs match_head_weight; 0 = off
    match_head_weight: float = 0.0  # + w · L_match_head: the matched tracking's logits taught the true correspondent
                                # token (train.correspondence.match_head_loss); needs match_track; 0 = off
    refine_lr_mult: float = 1.0  # learning rate of the modules added from scratch (pixel refinement, matched
                                # tracking) = lr x this (a fresh module on pretrained weights learns faster)
    train_only: list = field(default_factory=list)  # module-name prefixes that train (e.g. ["match_track"]); the
                                # rest is frozen: a stage that teaches an added module on a finished network
                                # without moving its geometry (and at a third of the step's cost); [] = all
    world_shift: dict = field(default_factory=dict)  # DomainConfig fields changed for training and held-out
                                # clips alike (world.scene.shifted_config), e.g. {"depth_range": [1.2, 2.6]}:
                                # a candidate world measured before it becomes a version; {} = the domain as named

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "frames"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.frames < 2:
            raise InputError(f"frames must be ≥ 2 (anchor + at least one other frame), got {self.frames}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise InputError(f"lr and grad_clip must be > 0, got {self.lr} and {self.grad_clip}")
        if self.warmup < 0:
            raise InputError(f"warmup must be ≥ 0, got {self.warmup}")
        if self.object_regression < 0 or self.object_depth < 0:
            raise InputError(f"object_regression and object_depth must be ≥ 0, got {self.object_regression}, "
                             f"{self.object_depth}")
        if self.dynamic_regression < 0:
            raise InputError(f"dynamic_regression must be ≥ 0, got {self.dynamic_regression}")
        if self.motion_weight < 0 or self.match_weight < 0:
            raise InputError(f"motion_weight and match_weight must be ≥ 0, got {self.motion_weight}, {self.match_weight}")
        if self.dynamic_factor < 0:
            raise InputError(f"dynamic_factor must be ≥ 0 (0 = no dynamic reweighting), got {self.dynamic_factor}")
        if self.refine_lr_mult <= 0:
            raise InputError(f"refine_lr_mult must be > 0, got {self.refine_lr_mult}")
        if self.refine_lr_mult != 1 and not (self.pixel_refine or self.match_track):
            raise InputError(f"refine_lr_mult {self.refine_lr_mult} sets the learning rate of added modules, but "
                             "there is none: add --pixel-refine WIDTH or --match-track WIDTH, or drop --refine-lr-mult")
        if self.pixel_refine < 0 or self.match_track < 0:
            raise InputError(f"pixel_refine and match_track must be ≥ 0 (0 = the preset's), got {self.pixel_refine}, "
                             f"{self.match_track}")
        if (self.match_register or self.match_pixel or self.match_refine) and not self.match_track:
            raise InputError("match_register, match_pixel and match_refine shape the matched tracking's lookup: add "
                             "--match-track WIDTH")
        if self.match_refine < 0 or (self.match_refine and not self.match_pixel):
            raise InputError(f"match_refine {self.match_refine} must be ≥ 0 and refines pixel lookups: add --match-pixel")
        if self.match_gate_weight < 0 or (self.match_gate_weight and not self.match_head_weight):
            raise InputError(f"match_gate_weight {self.match_gate_weight} must be ≥ 0 and is added with the lookup's "
                             "supervision: add --match-head-weight W")
        if self.match_head_weight < 0 or (self.match_head_weight and not self.match_track):
            raise InputError(f"match_head_weight {self.match_head_weight} must be ≥ 0 and needs the matched tracking "
                             "(--match-track WIDTH)")
        self.train_only = [str(x) for x in self.train_only]
        if any(not x for x in self.train_only):
            raise InputError(f"train_only names module prefixes (e.g. match_track), got {self.train_only}")
        # lists, not tuples: the shift is stored in the checkpoint and compared on --resume
        self.world_shift = {str(k): (list(map(float, v)) if isinstance(v, tuple | list) else float(v))
                            for k, v in dict(self.world_shift).items()}
        shifted_config(self.domain, self.shift())  # an unknown or malformed field fails here, not mid-run

    def model_config(self) -> ModelConfig:
        """The architecture this run trains: the preset, with ``pixel_refine`` and ``match_track`` when set."""
        config = get_config(self.preset)
        if self.pixel_refine:
            config = config.with_(pixel_refine=self.pixel_refine)
        if self.match_track:
            config = config.with_(match_track=self.match_track, match_register=self.match_register,
                                  match_pixel=self.match_pixel, match_refine=self.match_refine)
        return config

    def shift(self) -> dict | None:
        """The world shift as ``generate_clips`` takes it (ranges as tuples); None when there is none."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.world_shift.items()} or None

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
