"""Random scenes and their smooth motion for the synthetic 4D world (sampling only; rendering is in world.py).

Glossary of dimension letters: T frames (times), K moving objects of one clip, M materials.

Scene frame (where scenes are built): OpenCV-like, x right, y DOWN, z forward; the room is the axis-aligned box
[room_lo, room_hi] (floor at y = room_hi[1]); camera 0 sits near the origin looking along +z, slightly down.
world.py re-bases everything on camera 0 afterwards. Time tau is in frame units: frame i is at tau = i * frame_gap.

World version 2 (WORLD_VERSION): the depth cues real video has. Objects belong to classes with narrow size
priors (OBJECT_CLASSES: a "ball" of radius 0.22-0.30 m, a "box" of 0.44-0.60 m sides, a "person" 1.6-1.8 m
tall), rest on the floor and move along it; the floor is a checkerboard of known 0.5 m squares; the field of
view is narrow (55-65 deg in `pretrain`) and the camera is at eye height (1.4-1.7 m) in a room of a few metres.
Version 1 drew floating objects of loosely bounded size and a 45-75 deg field of view, which made the depth of a
moving object ambiguous from two views (see studies/ceiling).

Motions (all smooth and bounded, so large frame gaps stay inside the room):
- object centre    c(tau) = c0 + sum_k a_k (sin(w_k tau + phi_k) - sin(phi_k))   (a_k horizontal: on the floor)
- object rotation  R(tau) = exp([u]x (spin tau + wob sin(w_r tau) + roll s_1(tau))) R0       (u a unit axis)
    ball:  rolls without slipping, u = a_1/|a_1| x down, roll = 1 / radius, s_1 = sin(w_1 tau + phi_1) - sin(phi_1)
    box, person: turn about the vertical axis (u = down), roll = 0
- object scale     s(tau) = s0 * (1 + alpha * sin(w_s tau + psi))  (per axis; only a person's girth pulses)
- camera           R_cam(tau) = R_y(yaw) R_x(pitch) R_z(roll), centre p(tau), by kind:
    orbit:     yaw = A sin(w tau) about a vertical axis through a target q in front; p = q + R_y(yaw)(p0 - q)
    handheld:  slow pan yaw = A sin(w tau), centre fixed, plus shake
    forward:   p = p0 + D sin(w tau) * heading (moves forward, about D w metres per frame at first), small sway
  every kind adds a hand-shake of small sinusoids to the centre and to yaw / pitch / roll.
Every sampled number comes from the clip's own torch.Generator (float64 on the CPU), so a clip is a pure
function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import roma
import torch

from st4r_lite.errors import InputError
from st4r_lite.world.raycast import KINDS
from st4r_lite.world.textures import Materials, sample_material, stack_materials

CAMERA_KINDS = ("orbit", "handheld", "forward")
WORLD_VERSION = 2
OBJECT_CLASSES = ("ball", "box", "person")  # rendered as KINDS ("sphere", "box", "cylinder"), in that order


@dataclass(frozen=True)
class DomainConfig:
    """Everything that differs between the `pretrain` and `wild` domains (see world.DOMAIN_SHIFT)."""

    num_objects: tuple[int, int]          # inclusive range of moving objects
    object_families: tuple[str, ...]      # texture families of objects
    floor_families: tuple[str, ...]
    wall_families: tuple[str, ...]
    palette: str                          # 'vivid' or 'muted'
    speed: float                          # multiplier of every angular frequency (objects and camera)
    shake: float                          # multiplier of camera shake amplitude
    nonrigid_prob: float                  # probability that an object's scale pulses (non-rigid)
    depth_range: tuple[float, float]      # initial object depth in front of camera 0 (m)
    size_scale: float                     # multiplier of object sizes
    fov_deg: tuple[float, float]          # horizontal field of view range (degrees)
    light_change: bool                    # light direction / intensity / colour vary over time
    specular: tuple[float, float]         # Blinn-Phong specular strength range
    noise_sigma: tuple[float, float]      # Gaussian sensor noise std range (RGB in [0, 1])
    blur_subframes: int                   # renders averaged per frame (1 = no motion blur)
    shutter: tuple[float, float]          # exposure time in frame units (motion blur length)
    gamma: tuple[float, float]            # tone curve rgb ** gamma
    vignette: tuple[float, float]         # darkening at the image corners
    object_speed: float = 1.0             # multiplier of the objects' speeds only (paths, spins, pulses); the
                                          # camera keeps ``speed``. 1.0 in both named domains of world v2


DOMAIN_CONFIGS: dict[str, DomainConfig] = {
    "pretrain": DomainConfig(
        num_objects=(2, 4), object_families=("checker", "stripes", "blobs"), floor_families=("checker",),
        wall_families=("stripes", "blobs"), palette="vivid", speed=1.0, shake=1.0, nonrigid_prob=0.35,
        depth_range=(1.6, 4.0), size_scale=1.0, fov_deg=(55.0, 65.0), light_change=False, specular=(0.0, 0.0), noise_sigma=(0.0, 0.0),
        blur_subframes=1, shutter=(0.0, 0.0), gamma=(1.0, 1.0), vignette=(0.0, 0.0)),
    "wild": DomainConfig(
        num_objects=(3, 6), object_families=("dots", "marble", "rings"), floor_families=("marble", "rings"),
        wall_families=("dots", "marble"), palette="muted", speed=1.7, shake=2.5, nonrigid_prob=0.5,
        depth_range=(1.5, 4.5), size_scale=1.0, fov_deg=(50.0, 70.0), light_change=True, specular=(0.15, 0.45),
        noise_sigma=(0.01, 0.04), blur_subframes=3, shutter=(0.4, 0.9), gamma=(0.8, 1.25), vignette=(0.1, 0.35)),
}


def shifted_config(domain: str, shift: dict | None = None) -> DomainConfig:
    """DOMAIN_CONFIGS[domain] with the fields in ``shift`` replaced (numbers, or (lo, hi) pairs for ranges).

    >>> shifted_config("wild", {"size_scale": 1.6}).size_scale
    1.6
    """
    base = DOMAIN_CONFIGS[domain]
    if not shift:
        return base
    known = {f.name: getattr(base, f.name) for f in fields(DomainConfig)}
    changes = {}
    for key, value in shift.items():
        if key not in known:
            raise InputError(f"unknown domain setting {key!r}; choose from {', '.join(sorted(known))}")
        old = known[key]
        if isinstance(old, tuple) and all(isinstance(x, int | float) for x in old):
            if not (isinstance(value, tuple | list) and len(value) == len(old)):
                raise InputError(f"{key} is a range: give {len(old)} numbers (e.g. lo:hi), got {value!r}")
            value = tuple(type(o)(v) for o, v in zip(old, value))
        elif isinstance(old, int | float) and not isinstance(old, bool):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InputError(f"{key} must be a number, got {value!r}")
            value = type(old)(value)
        else:
            raise InputError(f"{key} cannot be shifted from the command line (only numbers and number ranges)")
        changes[key] = value
    return replace(base, **changes)


def parse_shift(items: list[str]) -> dict:
    """Command-line ``KEY=NUMBER`` / ``KEY=LO:HI`` items -> a shift for :func:`shifted_config` (checked there).

    >>> parse_shift(["size_scale=1.6", "fov_deg=68:75"])
    {'size_scale': 1.6, 'fov_deg': (68.0, 75.0)}
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = tuple(float(v) for v in value.split(":")) if ":" in value else float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise InputError(f"--shift {item!r}: expected KEY=NUMBER or KEY=LO:HI (a DomainConfig field)")
    return out


def add_shift_argument(parser, purpose: str = "a candidate world") -> None:
    """Add the repeatable ``--shift KEY=VALUE`` option (read it with :func:`parse_shift`) to an argparse parser."""
    parser.add_argument("--shift", action="append", default=[], metavar="KEY=VALUE",
                        help=f"{purpose}: a DomainConfig field changed (repeatable), e.g. --shift depth_range=1.2:2.6 "
                        "or --shift object_speed=1.5")


def shift_flags(items: list[str]) -> str:
    """The ``--shift`` items as they were given, for a record's command line.

    >>> shift_flags(["object_speed=1.5", "depth_range=1.2:2.6"])
    ' --shift object_speed=1.5 --shift depth_range=1.2:2.6'
    """
    return "".join(f" --shift {item}" for item in items)


@dataclass
class SceneSpec:
    """All random parameters of one clip (float64 CPU tensors). Object k has id k + 1, kind KINDS[kind[k]]."""

    seed: int
    config: DomainConfig
    focal: float
    room_lo: torch.Tensor   # (3,)
    room_hi: torch.Tensor   # (3,)
    camera_kind: str
    camera: dict[str, torch.Tensor]
    kind: torch.Tensor      # (K,) int64, sorted; index into KINDS and OBJECT_CLASSES
    c0: torch.Tensor        # (K, 3)
    path_amp: torch.Tensor  # (K, 2, 3)
    path_w: torch.Tensor    # (K, 2)
    path_phase: torch.Tensor  # (K, 2)
    R0: torch.Tensor        # (K, 3, 3)
    spin_axis: torch.Tensor  # (K, 3)
    spin: torch.Tensor      # (K,)
    wobble: torch.Tensor    # (K, 2) amplitude, frequency
    roll: torch.Tensor      # (K,) rotation per metre along the first path direction (1/radius for a ball, else 0)
    s0: torch.Tensor        # (K, 3)
    scale_amp: torch.Tensor  # (K, 3) (0 for rigid objects)
    scale_w: torch.Tensor   # (K,)
    scale_phase: torch.Tensor  # (K, 3)
    materials: Materials    # floor, walls, then one per object
    light: dict[str, torch.Tensor]
    post: dict[str, float]  # wild image formation: noise sigma, shutter, gamma, vignette


def _u(gen: torch.Generator, lo: float, hi: float, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _sign(gen: torch.Generator, shape=()) -> torch.Tensor:
    return torch.where(torch.rand(shape, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0).double()


def _unit(gen: torch.Generator, shape=()) -> torch.Tensor:
    v = torch.randn((*shape, 3), generator=gen, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def rot_x(a: torch.Tensor) -> torch.Tensor:
    """Rotation about x by angle a (...) -> (..., 3, 3)."""
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def rot_y(a: torch.Tensor) -> torch.Tensor:
    """Rotation about y (the vertical axis of the scene frame) by angle a (...) -> (..., 3, 3)."""
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def rot_z(a: torch.Tensor) -> torch.Tensor:
    """Rotation about z (the optical axis) by angle a (...) -> (..., 3, 3)."""
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


def _sample_camera(gen: torch.Generator, cfg: DomainConfig) -> tuple[str, dict[str, torch.Tensor]]:
    kind = CAMERA_KINDS[int(torch.randint(3, (1,), generator=gen))]
    sp, sh = cfg.speed, cfg.shake * (2.0 if kind == "handheld" else 1.0)
    cam = {
        "pitch0": _u(gen, -0.35, -0.12),
        "shake_pos_amp": _u(gen, 0.003, 0.015, (2, 3)) * sh,
        "shake_pos_w": _u(gen, 0.3, 0.9, (2, 3)) * sp,
        "shake_pos_phase": _u(gen, 0, 2 * math.pi, (2, 3)),
        "shake_rot_amp": _u(gen, 0.002, 0.008, (2, 3)) * sh,
        "shake_rot_w": _u(gen, 0.3, 0.9, (2, 3)) * sp,
        "shake_rot_phase": _u(gen, 0, 2 * math.pi, (2, 3)),
    }
    if kind == "orbit":
        cam.update(radius=_u(gen, 2.5, 4.0), amp=_u(gen, 0.2, 0.45) * _sign(gen), w=_u(gen, 0.03, 0.07) * sp)
    elif kind == "handheld":
        cam.update(amp=_u(gen, 0.1, 0.35) * _sign(gen), w=_u(gen, 0.03, 0.08) * sp)
    else:
        cam.update(dist=_u(gen, 0.5, 1.2), w=_u(gen, 0.03, 0.06) * sp, amp=_u(gen, 0.05, 0.15) * _sign(gen),
                   w_yaw=_u(gen, 0.05, 0.12) * sp)
    return kind, cam


def camera_poses(camera_kind: str, cam: dict[str, torch.Tensor], tau: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera rotations R_scene_cam (T, 3, 3) and centres (T, 3) at times tau (T,) (float64).

    ``camera_kind`` and ``cam`` are SceneSpec.camera_kind and SceneSpec.camera."""
    if camera_kind not in CAMERA_KINDS:
        raise InputError(f"unknown camera kind {camera_kind!r}; choose from {CAMERA_KINDS}")
    t = tau.double()

    def waves(amp, w, phase):  # sum over 2 sinusoids -> (T, 3)
        return (amp * torch.sin(w * t[:, None, None] + phase)).sum(1)

    shake_p = waves(cam["shake_pos_amp"], cam["shake_pos_w"], cam["shake_pos_phase"])
    shake_r = waves(cam["shake_rot_amp"], cam["shake_rot_w"], cam["shake_rot_phase"])
    pitch = cam["pitch0"] + shake_r[:, 0]
    zero = torch.zeros(3, dtype=torch.float64)
    if camera_kind == "orbit":
        yaw = cam["amp"] * torch.sin(cam["w"] * t)
        target = cam["radius"] * torch.stack([zero[0], -torch.sin(cam["pitch0"]), torch.cos(cam["pitch0"])])
        centre = target + torch.einsum("tij,j->ti", rot_y(yaw), zero - target)
    elif camera_kind == "handheld":
        yaw = cam["amp"] * torch.sin(cam["w"] * t)
        centre = zero.expand(len(t), 3)
    else:
        yaw = cam["amp"] * torch.sin(cam["w_yaw"] * t)
        ahead = cam["dist"] * torch.sin(cam["w"] * t)
        centre = torch.stack([0.15 * torch.sin(ahead), 0.03 * torch.sin(3 * ahead), ahead], -1)
    R = rot_y(yaw + shake_r[:, 1]) @ rot_x(pitch) @ rot_z(shake_r[:, 2])
    return R, centre + shake_p


def sample_scene(seed: int, domain_config: DomainConfig, height: int, width: int) -> SceneSpec:
    """Sample every random parameter of one clip from torch.Generator().manual_seed(seed)."""
    cfg = domain_config
    gen = torch.Generator().manual_seed(int(seed))
    fov = math.radians(float(_u(gen, *cfg.fov_deg)))  # horizontal field of view
    focal = (width / 2) / math.tan(fov / 2)
    floor, ceiling = float(_u(gen, 1.4, 1.7)), float(_u(gen, 1.0, 1.5))  # camera height, ceiling above it
    hx, back, front = float(_u(gen, 2.5, 3.5)), float(_u(gen, 1.5, 2.5)), float(_u(gen, 4.5, 6.5))
    room_lo = torch.tensor([-hx, -ceiling, -back], dtype=torch.float64)
    room_hi = torch.tensor([hx, floor, front], dtype=torch.float64)
    camera_kind, camera = _sample_camera(gen, cfg)

    lo, hi = cfg.num_objects
    k = int(torch.randint(lo, hi + 1, (1,), generator=gen))
    kind = torch.sort(torch.randint(len(KINDS), (k,), generator=gen)).values
    ball, box, person = (kind == 0), (kind == 1), (kind == 2)
    size = cfg.size_scale
    # class size priors (half extents of the unit primitive along its local axes, metres)
    radius = _u(gen, 0.22, 0.30, (k, 1))
    s_ball = radius.expand(k, 3)
    s_box = _u(gen, 0.22, 0.30, (k, 3))
    s_person = torch.cat([_u(gen, 0.20, 0.25, (k, 1)).expand(k, 2), _u(gen, 0.80, 0.90, (k, 1))], -1)
    s0 = torch.where(ball[:, None], s_ball, torch.where(box[:, None], s_box, s_person)) * size
    half_height = torch.where(person, s0[:, 2], s0[:, 1])  # a person's local z axis is turned to vertical
    # initial centres: in camera 0's view cone at the sampled depth, then set down on the floor
    depth = _u(gen, *cfg.depth_range, (k,))
    tan_x = math.tan(fov / 2)
    cam0 = torch.stack([depth * tan_x * _u(gen, -0.8, 0.8, (k,)), torch.zeros(k, dtype=torch.float64), depth], -1)
    R_cam0, p_cam0 = camera_poses(camera_kind, camera, torch.zeros(1, dtype=torch.float64))
    c0 = cam0 @ R_cam0[0].T + p_cam0[0]
    c0 = torch.minimum(torch.maximum(c0, room_lo + 1.2), room_hi - 1.2)
    c0[:, 1] = room_hi[1] - half_height  # resting on the floor (y points down)
    sp = cfg.speed * cfg.object_speed
    # horizontal paths: a main direction at walking / rolling speed 4-9 cm per frame, plus a small sway
    heading = _u(gen, 0, 2 * math.pi, (k, 2))
    dirs = torch.stack([torch.cos(heading), torch.zeros_like(heading), torch.sin(heading)], -1)  # (K, 2, 3)
    path_w = torch.stack([_u(gen, 0.05, 0.1, (k,)), _u(gen, 0.1, 0.25, (k,))], -1) * sp
    amp = torch.stack([_u(gen, 0.04, 0.09, (k,)) * sp / path_w[:, 0], _u(gen, 0.03, 0.12, (k,))], -1)
    amp[:, 1] = torch.where(ball, 0.0, amp[:, 1])  # a rolling ball goes straight
    path_amp = dirs * amp[..., None]
    path_phase = _u(gen, 0, 2 * math.pi, (k, 2))
    yaw0 = _u(gen, 0, 2 * math.pi, (k,))
    upright = rot_x(torch.full((k,), math.pi / 2, dtype=torch.float64))  # local z (cylinder axis) -> vertical
    R0 = rot_y(yaw0) @ torch.where(person[:, None, None], upright, torch.eye(3, dtype=torch.float64))
    down = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    roll_axis = torch.linalg.cross(dirs[:, 0], down.expand(k, 3))
    spin_axis = torch.where(ball[:, None], roll_axis, down.expand(k, 3))
    roll = torch.where(ball, 1.0 / s0[:, 0], torch.zeros(k, dtype=torch.float64))
    spin = torch.where(ball, 0.0, _u(gen, 0.0, 0.05, (k,)) * _sign(gen, (k,)) * sp)
    wobble = torch.stack([torch.where(ball, 0.0, _u(gen, 0.0, 0.3, (k,))), _u(gen, 0.05, 0.2, (k,)) * sp], -1)
    nonrigid = ((_u(gen, 0, 1, (k,)) < cfg.nonrigid_prob) & person).double()[:, None]
    scale_amp = _u(gen, 0.04, 0.12, (k, 3)) * nonrigid * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    scale_w = _u(gen, 0.1, 0.3, (k,)) * sp
    scale_phase = _u(gen, 0, 2 * math.pi, (k, 3))

    floor_freq = (2.0, 2.0) if cfg.floor_families == ("checker",) else (0.8, 2.0)  # 0.5 m squares: a known scale
    mats = [sample_material(gen, cfg.floor_families, cfg.palette, floor_freq),
            sample_material(gen, cfg.wall_families, cfg.palette, (0.5, 1.5))]
    mats += [sample_material(gen, cfg.object_families, cfg.palette, (1.0, 3.0)) for _ in range(k)]
    materials = stack_materials(mats, gen)
    light_dir = torch.stack([_u(gen, -0.6, 0.6), torch.tensor(-1.0, dtype=torch.float64), _u(gen, -0.6, 0.3)])
    light = {
        "dir": light_dir / light_dir.norm(), "ambient": _u(gen, 0.35, 0.5),
        "yaw_w": _u(gen, 0.05, 0.15) * _sign(gen) * float(cfg.light_change),
        "flicker": _u(gen, 0.15, 0.35) * float(cfg.light_change), "flicker_w": _u(gen, 0.1, 0.4),
        "tint": 1.0 + _u(gen, -0.25, 0.25, (3,)) * float(cfg.light_change),
        "specular": _u(gen, *cfg.specular),
    }
    post = {"noise": float(_u(gen, *cfg.noise_sigma)), "shutter": float(_u(gen, *cfg.shutter)),
            "gamma": float(_u(gen, *cfg.gamma)), "vignette": float(_u(gen, *cfg.vignette))}
    return SceneSpec(int(seed), cfg, focal, room_lo, room_hi, camera_kind, camera, kind, c0, path_amp, path_w,
                     path_phase, R0, spin_axis, spin, wobble, roll, s0, scale_amp, scale_w, scale_phase, materials,
                     light, post)


def object_motion(spec: SceneSpec, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Object rotation R (T, K, 3, 3), centre c (T, K, 3) and scale s (T, K, 3) at times tau (T,) (float64).

    Local -> scene: x = R diag(s) x_local + c."""
    t = tau.double()[:, None]  # (T, 1)
    wave = torch.sin(spec.path_w * t[..., None] + spec.path_phase) - torch.sin(spec.path_phase)  # (T, K, 2)
    c = spec.c0 + (wave[..., None] * spec.path_amp).sum(-2)
    along = (wave[..., 0] * spec.path_amp[:, 0].norm(dim=-1))  # (T, K) metres along the first path direction
    angle = spec.spin * t + spec.wobble[:, 0] * torch.sin(spec.wobble[:, 1] * t) + spec.roll * along  # (T, K)
    R = roma.rotvec_to_rotmat(spec.spin_axis * angle[..., None]) @ spec.R0
    s = spec.s0 * (1 + spec.scale_amp * torch.sin(spec.scale_w[:, None] * t[..., None] + spec.scale_phase))
    return R, c, s


def light_at(spec: SceneSpec, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Directional light towards the light source (T, 3) and its colour (T, 3) at times tau (float64)."""
    L = spec.light
    t = tau.double()
    direction = rot_y(L["yaw_w"] * t) @ L["dir"]
    intensity = 1 + L["flicker"] * torch.sin(L["flicker_w"] * t)
    return direction, intensity[:, None] * L["tint"]
