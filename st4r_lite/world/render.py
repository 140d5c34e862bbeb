"""The synthetic 4D world: batched analytic ray casting of moving textured primitives with exact dense ground truth.

Glossary of dimension letters: B clips, T frames, H, W image rows / columns, P = H*W pixels, K objects of a clip.

A clip is a box-shaped textured room (the camera is inside it, so every ray hits something and depth is finite)
with K moving objects (world version 2, ``scene.WORLD_VERSION``: balls, boxes and upright "persons" of narrow
class sizes, resting on the floor and moving along it, rendered as spheres, boxes and capped cylinders;
scene.py samples them and their smooth rigid + optional non-rigid motion; raycast.py intersects them; textures.py colours them in object coordinates).
Per pixel of frame t we keep the nearest hit: its object id (0 = room), its z-depth, its world point, and its
local coordinates (the correspondence). Anchor tracks follow every pixel of frame 0:

    track(t) = A(t) x_local + c(t)      (room points are static)
    visible(t) = projects inside frame t  and  the ray through its exact (sub-pixel) projection first hits
                 the same object at depth z_t (|t_hit - z_t| <= VIS_TOL * z_t)

The visibility test re-casts one ray per track and frame (the continuous depth buffer) rather than reading the
rendered depth at the nearest pixel centre: on grazing surfaces (a far floor) half a pixel changes the depth
by several per cent, and on silhouettes the pixel centre misses the object, which would mark visible points as
occluded.

World frame = camera of frame 0 (T_world_cam[:, 0] = I): scenes are built in a scene frame, then re-based.
Clip b is generated from seed + b only (its own torch.Generator), one clip at a time, so it does not depend on
the batch size. Time: frame i is at tau = i * frame_gap (frame units); larger gaps = faster apparent motion.

Domains (DOMAIN_SHIFT below gives the exact differences; ground truth of `wild` is exact, the shift is in the
scene statistics and in image formation, never in the labels):
- `pretrain`: clean, Kubric-like: checker / stripes / value-noise-blob textures with vivid colours (the floor a
  checkerboard of 0.5 m squares), 2-4 objects, a 55-65 deg field of view, constant white directional light +
  ambient (Lambertian), no noise, no blur.
- `wild`: held-out shift standing in for real video: other texture families (dots, marble, rings) with muted
  colours and a floor of unknown texture scale, 3-6 objects that start closer (more occlusion), a 50-70 deg
  field of view, 1.7x faster object and camera motion and 2.5x camera shake, more non-rigid persons, a light that turns, flickers and is tinted, Blinn-Phong
  highlights, motion blur (3 sub-frame renders over a 0.4-0.9 frame shutter), a random tone curve (gamma
  0.8-1.25), vignetting and Gaussian sensor noise (sigma 0.01-0.04).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import torch

from st4r_lite.errors import InputError
from st4r_lite.geometry.track_metrics import DYNAMIC_MIN_MOTION
from st4r_lite.world.raycast import INTERSECT, KINDS, intersect_room, local_normals, room_normals
from st4r_lite.world.scene import (
    DOMAIN_CONFIGS,
    WORLD_VERSION,
    DomainConfig,
    SceneSpec,
    camera_poses,
    light_at,
    object_motion,
    sample_scene,
    shifted_config,
)
from st4r_lite.world.textures import shade_albedo

DOMAINS = ("pretrain", "wild")
VIS_TOL = 0.01          # relative depth tolerance of the (exact-ray) visibility test
MAX_SIZE = 2048
_CHUNK = 1 << 21        # ray-object tests per rendering chunk (bounds memory)

DOMAIN_SHIFT: dict[str, dict[str, str]] = {
    aspect: {d: str(getattr(DOMAIN_CONFIGS[d], aspect)) for d in DOMAINS}
    for aspect in ("num_objects", "object_families", "floor_families", "wall_families", "palette", "speed",
                   "shake", "nonrigid_prob", "depth_range", "size_scale", "fov_deg", "light_change", "specular",
                   "noise_sigma", "blur_subframes", "shutter", "gamma", "vignette")
}


@dataclass
class Clip:
    """A batch of B synthetic clips; world frame = camera of frame 0 of each clip.

    rgb (B, T, 3, H, W) float32 in [0, 1]; depth (B, T, H, W) z-depth metres, finite > 0;
    points_world (B, T, H, W, 3) frame t's visible surface at time t; object_id (B, T, H, W) int64, 0 = room;
    K (B, 3, 3); T_world_cam (B, T, 4, 4) with T_world_cam[:, 0] = I;
    track_world (B, T, H, W, 3) where each anchor (frame-0) pixel's surface point is at time t;
    track_visible (B, T, H, W) bool; track_dynamic (B, H, W) bool (on an object and moves > 5 cm);
    domain; seeds (B,); frame_gap; info: per clip {camera kind, number of objects, focal}.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    points_world: torch.Tensor
    object_id: torch.Tensor
    K: torch.Tensor
    T_world_cam: torch.Tensor
    track_world: torch.Tensor
    track_visible: torch.Tensor
    track_dynamic: torch.Tensor
    domain: str
    seeds: list[int]
    frame_gap: float = 1.0
    info: list[dict] = field(default_factory=list)

    def to(self, device) -> Clip:
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    @property
    def num_clips(self) -> int:
        return self.rgb.shape[0]

    @property
    def num_frames(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[3]

    @property
    def width(self) -> int:
        return self.rgb.shape[4]


def _check_args(batch: int, frames: int, height: int, width: int, domain: str, seed: int, frame_gap: float) -> None:
    if domain not in DOMAINS:
        raise InputError(f"unknown domain {domain!r}; valid domains are {', '.join(DOMAINS)}")
    for name, value in (("batch", batch), ("frames", frames), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive whole number, got {value!r}")
    for name, value in (("height", height), ("width", width)):
        if not 8 <= value <= MAX_SIZE:
            raise InputError(f"{name}={value} is not supported: use 8 <= {name} <= {MAX_SIZE} pixels")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a whole number >= 0, got {seed!r}")
    if not (isinstance(frame_gap, int | float) and math.isfinite(frame_gap) and frame_gap > 0):
        raise InputError(f"frame_gap must be a finite number > 0, got {frame_gap!r}")


def _unit3(x: torch.Tensor) -> torch.Tensor:
    """x (T, 3, P) scaled to unit length along dim 1 (a sum of squares: faster than a strided norm on CPU)."""
    return x * torch.rsqrt((x * x).sum(1, keepdim=True).clamp_min(1e-18))


def _gather_cols(per_obj: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """per_obj (T, K, C), idx (T, P) -> (T, C, P): row idx[t, p] of frame t for every pixel."""
    T, _, C = per_obj.shape
    return torch.gather(per_obj.transpose(1, 2), 2, idx[:, None, :].expand(T, C, idx.shape[1]))


def _render(spec: SceneSpec, tau: torch.Tensor, rays: torch.Tensor, device: torch.device, shade: bool = True
            ) -> dict[str, torch.Tensor]:
    """Ray-cast and shade frames at times tau (T,). rays (3, P) or per frame (T, 3, P): camera directions, z = 1.

    Returns rgb (T, 3, P), depth (T, P), ids (T, P) int64, tex (T, 3, P) texture coordinates of the hit
    (object-local for objects, scene metres for the room); with shade=False only depth and ids."""
    f32 = dict(device=device, dtype=torch.float32)
    cam_R, cam_o = camera_poses(spec.camera_kind, spec.camera, tau)
    R, c, s = object_motion(spec, tau)
    A_inv = (R / s[..., None, :]).transpose(-1, -2)  # diag(1/s) R^T
    light_dir, light_col = light_at(spec, tau)
    lo, hi = spec.room_lo.to(**f32), spec.room_hi.to(**f32)
    kind = spec.kind.to(device)
    mats = spec.materials.to(device)
    ambient, ks = float(spec.light["ambient"]), float(spec.light["specular"])
    K = len(spec.kind)
    bounds = [int((spec.kind < k).sum()) for k in range(len(KINDS) + 1)]
    out = {"rgb": [], "depth": [], "ids": [], "tex": []} if shade else {"depth": [], "ids": []}
    step = max(1, _CHUNK // (rays.shape[-1] * max(K, 1)))
    for a in range(0, len(tau), step):
        sl = slice(a, a + step)
        Rc, oc = cam_R[sl].to(**f32), cam_o[sl].to(**f32)
        d = Rc @ (rays[sl] if rays.dim() == 3 else rays)  # (t, 3, P)
        depth = intersect_room(oc, d, lo, hi)
        ids = torch.zeros_like(depth, dtype=torch.int64)
        if K:
            Ai, cc = A_inv[sl].to(**f32), c[sl].to(**f32)
            o_l = (Ai @ (oc[:, None, :] - cc)[..., None]).squeeze(-1)  # (t, K, 3)
            d_l = Ai @ d[:, None]  # (t, K, 3, P)
            t_obj = torch.cat([INTERSECT[name](o_l[:, bounds[k]:bounds[k + 1]], d_l[:, bounds[k]:bounds[k + 1]])
                               for k, name in enumerate(KINDS) if bounds[k + 1] > bounds[k]], dim=1)
            t_min, idx = t_obj.min(dim=1)
            hit = t_min < depth
            depth = torch.where(hit, t_min, depth)
            ids = torch.where(hit, idx + 1, ids)
        if not shade:
            out["depth"].append(depth)
            out["ids"].append(ids)
            continue
        if K:
            d_hit = torch.gather(d_l, 1, idx[:, None, None, :].expand(-1, 1, 3, -1)).squeeze(1)
            x_local = _gather_cols(o_l, idx) + depth[:, None] * d_hit
            n_local = local_normals(x_local, kind[idx])
            Ai_p = _gather_cols(Ai.flatten(-2), idx).unflatten(1, (3, 3))  # (t, 3, 3, P)
            n_obj = (Ai_p * n_local[:, :, None]).sum(1)  # A^-T n_local
        x_scene = oc[..., None] + depth[:, None] * d
        normal, face = room_normals(x_scene, lo, hi)
        material = torch.where(face == 3, 0, 1)  # floor (y = hi, y points down) or walls / ceiling
        tex = x_scene
        if K:
            normal = torch.where(hit[:, None], n_obj, normal)
            material = torch.where(hit, ids + 1, material)
            tex = torch.where(hit[:, None], x_local, x_scene)
        normal = _unit3(normal)
        albedo = shade_albedo(tex.transpose(1, 2).reshape(-1, 3), material.reshape(-1), mats)
        albedo = albedo.reshape(tex.shape[0], -1, 3).transpose(1, 2)
        L, col = light_dir[sl].to(**f32)[..., None], light_col[sl].to(**f32)[..., None]
        lambert = (normal * L).sum(1, keepdim=True).clamp_min(0)
        rgb = albedo * (ambient + (1 - ambient) * lambert) * col
        if ks > 0:
            view = -_unit3(d)
            half = _unit3(view + L)
            rgb = rgb + ks * (normal * half).sum(1, keepdim=True).clamp_min(0) ** 24 * col
        for key, value in (("rgb", rgb.clamp(0, 1)), ("depth", depth), ("ids", ids), ("tex", tex)):
            out[key].append(value)
    return {k: torch.cat(v) for k, v in out.items()}


def _tracks(spec: SceneSpec, tau: torch.Tensor, ids0: torch.Tensor, tex0: torch.Tensor, device: torch.device
            ) -> torch.Tensor:
    """Scene positions (T, P, 3) of every anchor pixel at times tau: A(t) x_local + c(t), or static room points."""
    room = tex0.T.expand(len(tau), -1, -1)
    if len(spec.kind) == 0:
        return room.contiguous()
    R, c, s = object_motion(spec, tau)
    A = (R * s[..., None, :]).to(device=device, dtype=torch.float32)  # R diag(s)
    obj = (ids0 - 1).clamp_min(0)
    moved = (A[:, obj] @ tex0.T[None, :, :, None]).squeeze(-1) + c.to(device=device, dtype=torch.float32)[:, obj]
    return torch.where((ids0 > 0)[None, :, None], moved, room)


def _visibility(spec: SceneSpec, tau: torch.Tensor, track: torch.Tensor, ids0: torch.Tensor,
                cam_R: torch.Tensor, cam_o: torch.Tensor, H: int, W: int, device: torch.device) -> torch.Tensor:
    """track (T, P, 3) scene points -> visible (T, P) bool (exact-ray test, see the module docstring).

    x_cam = R^T (x - o); the ray through its projection has camera direction x_cam / z (z component 1), so
    its hit parameter is directly comparable with z."""
    f = spec.focal
    X = (track - cam_o[:, None]) @ cam_R  # R^T (x - o) as rows: camera coordinates
    z = X[..., 2]
    front = z > 1e-6
    zs = torch.where(front, z, torch.ones_like(z))
    u = torch.round(f * X[..., 0] / zs + (W - 1) / 2)
    v = torch.round(f * X[..., 1] / zs + (H - 1) / 2)
    inside = front & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    rays = torch.where(inside[..., None], X / zs[..., None], torch.tensor([0.0, 0.0, 1.0], device=device))
    hit = _render(spec, tau, rays.transpose(1, 2).contiguous(), device, shade=False)
    return inside & (hit["ids"] == ids0[None]) & ((hit["depth"] - z).abs() <= VIS_TOL * z)


def _image_formation(rgb: torch.Tensor, spec: SceneSpec, H: int, W: int) -> torch.Tensor:
    """Wild-domain camera effects on rgb (T, 3, H, W): tone curve, vignetting, Gaussian sensor noise."""
    post = spec.post
    rgb = rgb.clamp(0, 1) ** post["gamma"]
    if post["vignette"] > 0:
        v = torch.linspace(-1, 1, H, device=rgb.device)[:, None]
        u = torch.linspace(-1, 1, W, device=rgb.device)[None, :]
        rgb = rgb * (1 - post["vignette"] * (u * u + v * v) / 2)
    if post["noise"] > 0:
        gen = torch.Generator().manual_seed((spec.seed * 1_000_003 + 977) % (2**62))
        rgb = rgb + post["noise"] * torch.randn(rgb.shape, generator=gen).to(rgb.device)
    return rgb.clamp(0, 1)


def _one_clip(seed: int, config: DomainConfig, frames: int, H: int, W: int, frame_gap: float,
              device: torch.device) -> dict:
    spec = sample_scene(seed, config, H, W)
    f = spec.focal
    tau = torch.arange(frames, dtype=torch.float64) * frame_gap
    u = torch.arange(W, device=device, dtype=torch.float32)
    v = torch.arange(H, device=device, dtype=torch.float32)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    rays = torch.stack([(uu - (W - 1) / 2) / f, (vv - (H - 1) / 2) / f, torch.ones_like(uu)]).reshape(3, -1)
    buf = _render(spec, tau, rays, device)
    rgb = buf["rgb"]
    n_sub = spec.config.blur_subframes
    if n_sub > 1:  # motion blur: average renders spread over the shutter, the centre one is the GT frame
        for j in range(n_sub):
            offset = spec.post["shutter"] * (j / (n_sub - 1) - 0.5)
            if abs(offset) > 1e-12:
                rgb = rgb + _render(spec, tau + offset, rays, device)["rgb"]
        rgb = rgb / n_sub
    rgb = rgb.reshape(frames, 3, H, W)
    if spec.config.noise_sigma[1] > 0 or spec.config.gamma != (1.0, 1.0):
        rgb = _image_formation(rgb, spec, H, W)

    cam_R, cam_o = camera_poses(spec.camera_kind, spec.camera, tau)
    ids0, tex0 = buf["ids"][0], buf["tex"][0]
    track = _tracks(spec, tau, ids0, tex0, device)
    cR, co = cam_R.to(device=device, dtype=torch.float32), cam_o.to(device=device, dtype=torch.float32)
    visible = _visibility(spec, tau, track, ids0, cR, co, H, W, device)

    T_scene_cam = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
    T_scene_cam[:, :3, :3], T_scene_cam[:, :3, 3] = cam_R, cam_o
    T_world_scene = torch.linalg.inv(T_scene_cam[0])
    T_world_cam = T_world_scene @ T_scene_cam
    T_world_cam[0] = torch.eye(4, dtype=torch.float64)
    Twc = T_world_cam.to(device=device, dtype=torch.float32)
    Tws = T_world_scene.to(device=device, dtype=torch.float32)
    points_cam = buf["depth"][:, None] * rays  # (T, 3, P): unproject(depth) = depth * K^-1 (u, v, 1)
    points_world = Twc[:, :3, :3] @ points_cam + Twc[:, :3, 3:]
    track_world = track @ Tws[:3, :3].T + Tws[:3, 3]
    moved = (track_world - track_world[:1]).norm(dim=-1).amax(0)
    K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], dtype=torch.float32, device=device)
    return {
        "rgb": rgb, "depth": buf["depth"].reshape(frames, H, W),
        "points_world": points_world.transpose(1, 2).reshape(frames, H, W, 3),
        "object_id": buf["ids"].reshape(frames, H, W), "K": K, "T_world_cam": Twc,
        "track_world": track_world.reshape(frames, H, W, 3), "track_visible": visible.reshape(frames, H, W),
        "track_dynamic": ((ids0 > 0) & (moved > DYNAMIC_MIN_MOTION)).reshape(H, W),
        "info": {"camera": spec.camera_kind, "num_objects": len(spec.kind), "focal": f, "world_version": WORLD_VERSION,
                 "kinds": [KINDS[k] for k in spec.kind.tolist()]},
    }


def generate_clips(batch: int, *, frames: int, height: int, width: int, domain: str = "pretrain", seed: int = 0,
                   frame_gap: float = 1.0, device="cpu", shift: dict | None = None) -> Clip:
    """Render ``batch`` clips of the synthetic 4D world with dense exact ground truth (see Clip for shapes).

    Clip b comes from seed + b only (independent of batch size); ``frame_gap`` scales the time between frames
    (frame i is at tau = i * frame_gap). Deterministic on the CPU; on a GPU the scene and the noise are the same
    but float round-off may differ in the last bits.

    ``shift`` (studies of domain shift only): DomainConfig fields to change for this call, e.g.
    ``{"size_scale": 1.6}``; the named domains themselves never change.
    """
    _check_args(batch, frames, height, width, domain, seed, frame_gap)
    config = shifted_config(domain, shift)
    device = torch.device(device)
    per_clip = [_one_clip(seed + b, config, frames, height, width, float(frame_gap), device) for b in range(batch)]
    stacked = {k: torch.stack([c[k] for c in per_clip]) for k in per_clip[0] if k != "info"}
    return Clip(**stacked, domain=domain, seeds=[seed + b for b in range(batch)], frame_gap=float(frame_gap),
                info=[c["info"] for c in per_clip])


def project_tracks(clip: Clip) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project every anchor track into every frame with the ground-truth cameras.

    x_cam = T_world_cam[t]^-1 x_world;  (u, v) = (f x / z + cx, f y / z + cy).
    Returns uv (B, T, H, W, 2) pixels, z (B, T, H, W) camera depth, inside (B, T, H, W) bool: in front of the
    camera and the nearest pixel centre lies in the image (the rule the visibility test uses)."""
    B, T, H, W = clip.depth.shape
    T_cam_world = torch.linalg.inv(clip.T_world_cam.double())
    X = torch.einsum("btij,bthwj->bthwi", T_cam_world[..., :3, :3], clip.track_world.double())
    X = X + T_cam_world[:, :, None, None, :3, 3]
    z = X[..., 2]
    zs = torch.where(z > 1e-6, z, torch.ones_like(z))
    K = clip.K.double()[:, None, None, None]
    u = K[..., 0, 0] * X[..., 0] / zs + K[..., 0, 2]
    v = K[..., 1, 1] * X[..., 1] / zs + K[..., 1, 2]
    ur, vr = torch.round(u), torch.round(v)
    inside = (z > 1e-6) & (ur >= 0) & (ur <= W - 1) & (vr >= 0) & (vr <= H - 1)
    return torch.stack([u, v], -1).float(), z.float(), inside


@dataclass
class RayHits:
    """What rays through arbitrary (sub-)pixels of given frames hit. depth (T, P) z-depth in the frame's camera;
    object_id (T, P) int64 (0 = room); points_world (T, P, 3) in the clip's world frame (camera of frame 0)."""

    depth: torch.Tensor
    object_id: torch.Tensor
    points_world: torch.Tensor


def cast_rays(seed: int, pixels: torch.Tensor, frame_index: torch.Tensor, *, height: int, width: int,
              domain: str = "pretrain", frame_gap: float = 1.0) -> RayHits:
    """Re-render clip ``seed`` (the one generate_clips makes from that seed) through sub-pixel positions.

    pixels (T, P, 2) (u, v) per listed frame; frame_index (T,) frame numbers. A ray through (u, v) of frame t
    has camera direction ((u - cx) / f, (v - cy) / f, 1), so its hit parameter is the z-depth. Used to check the
    ground truth exactly: a visible track must be hit by the ray through its own projection."""
    _check_args(1, 1, height, width, domain, seed, frame_gap)
    if pixels.dim() != 3 or pixels.shape[-1] != 2 or frame_index.shape != pixels.shape[:1]:
        raise ValueError(f"pixels must be (T, P, 2) and frame_index (T,); got {tuple(pixels.shape)}, "
                         f"{tuple(frame_index.shape)}")
    spec = sample_scene(seed, DOMAIN_CONFIGS[domain], height, width)
    f, cx, cy = spec.focal, (width - 1) / 2, (height - 1) / 2
    tau = frame_index.double() * frame_gap
    cam_R, cam_o = camera_poses(spec.camera_kind, spec.camera, torch.zeros(1, dtype=torch.float64))
    T_scene_cam0 = torch.eye(4, dtype=torch.float64)
    T_scene_cam0[:3, :3], T_scene_cam0[:3, 3] = cam_R[0], cam_o[0]
    T_world_scene = torch.linalg.inv(T_scene_cam0)
    depth, ids, pts = [], [], []
    for t in range(len(tau)):
        uv = pixels[t].double()
        rays = torch.stack([(uv[:, 0] - cx) / f, (uv[:, 1] - cy) / f, torch.ones_like(uv[:, 0])])
        buf = _render(spec, tau[t:t + 1], rays.float(), torch.device("cpu"))
        R, o = camera_poses(spec.camera_kind, spec.camera, tau[t:t + 1])
        x_scene = o[0][:, None] + R[0] @ (buf["depth"][0].double() * rays)  # (3, P)
        x_world = T_world_scene[:3, :3] @ x_scene + T_world_scene[:3, 3:]
        depth.append(buf["depth"][0])
        ids.append(buf["ids"][0])
        pts.append(x_world.T.float())
    return RayHits(torch.stack(depth), torch.stack(ids), torch.stack(pts))
