"""WorldTrack / TAPVid-3D ``.npz`` sequences: writer, reader, synthetic benchmark sets (docs/method.md §3, §7).

Glossary of dimension letters: T frames, H, W image rows / columns, N tracks (queries), S sequences.

File keys (the TAPVid-3D layout plus the WorldTrack extras; ours also carry ``is_dynamic`` and ``meta_json``):
- ``images_jpeg_bytes`` (T,)  one encoded image per frame (ours: JPEG quality 95, 4:4:4, as a fixed-width byte
  string array so it loads without pickle; the official release uses an object array of ``bytes``, which
  ``world.npy_bytes`` parses without unpickling: this package never unpickles a file);
- ``tracks_XYZ`` (T, N, 3) each track's point in the camera coordinates of frame t (metres, OpenCV);
- ``visibility`` (T, N) bool; ``fx_fy_cx_cy`` (4,); ``extrinsics_w2c`` (T, 4, 4) world -> camera of frame t;
- ``depth_map`` (T, H, W) z-depth (optional); ``queries_xyt`` (N, 3) query pixel (x, y) and frame t (optional).

World frame: the benchmark re-bases every file on its frame 0, E_t <- E_t E_0^-1, so that the world is the
camera of frame 0 (docs/method.md §1) whatever world the file was written in: T_world_cam_t = (E_t E_0^-1)^-1 = E_0 E_t^-1
and a track in the world is x_world = T_world_cam_t x_cam_t.

Our synthetic benchmark files are written deterministically (same arguments -> same bytes: fixed zip
timestamps, fixed JPEG settings) and atomically (``runtime.atomic_write``).
``python -m st4r_lite.studies.world_stats --out data/world_stats.json`` records the world's occlusion statistics
and generation speed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from st4r_lite.errors import InputError
from st4r_lite.geometry.pinhole import grid_query_pixels
from st4r_lite.geometry.track_metrics import DYNAMIC_MIN_MOTION
from st4r_lite.runtime import atomic_write
from st4r_lite.world.npy_bytes import read_bytes_array

MAX_TRACKS = 8192          # default cap of tracks per synthetic sequence (an even pixel grid beyond it)
JPEG_QUALITY = 95
REQUIRED_KEYS = ("images_jpeg_bytes", "tracks_XYZ", "visibility", "fx_fy_cx_cy")


@dataclass
class WorldTrackSequence:
    """One sequence as stored in a WorldTrack ``.npz`` (numpy arrays; shapes in the module docstring).

    images (T, H, W, 3) uint8; tracks_XYZ (T, N, 3) float32 in each frame's camera; visibility (T, N) bool;
    fx_fy_cx_cy (4,) float64; extrinsics_w2c (T, 4, 4) float64; depth_map (T, H, W) float32 | None;
    queries_xyt (N, 3) float32 | None; is_dynamic (N,) bool | None; meta: dict (ours: domain, seed, ...)."""

    images: np.ndarray
    tracks_XYZ: np.ndarray
    visibility: np.ndarray
    fx_fy_cx_cy: np.ndarray
    extrinsics_w2c: np.ndarray
    depth_map: np.ndarray | None = None
    queries_xyt: np.ndarray | None = None
    is_dynamic: np.ndarray | None = None
    meta: dict | None = None

    @property
    def num_frames(self) -> int:
        return self.images.shape[0]

    @property
    def num_tracks(self) -> int:
        return self.tracks_XYZ.shape[1]

    @property
    def height(self) -> int:
        return self.images.shape[1]

    @property
    def width(self) -> int:
        return self.images.shape[2]

    def K(self) -> np.ndarray:
        """Intrinsics (3, 3) [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""
        fx, fy, cx, cy = (float(x) for x in self.fx_fy_cx_cy)
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def T_world_cam(self) -> np.ndarray:
        """Camera-to-world poses (T, 4, 4) re-based on frame 0: T_world_cam_t = E_0 E_t^-1 (so [0] = I)."""
        E = self.extrinsics_w2c.astype(np.float64)
        return E[:1] @ np.linalg.inv(E)

    def tracks_world(self) -> np.ndarray:
        """Tracks (T, N, 3) in the world frame (camera of frame 0): x_world = T_world_cam_t x_cam_t."""
        P = self.T_world_cam()
        X = self.tracks_XYZ.astype(np.float64)
        return np.einsum("tij,tnj->tni", P[:, :3, :3], X) + P[:, None, :3, 3]


# --------------------------------------------------------------------------------------------- writing
def _encode_jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return buf.getvalue()


def _decode_image(data) -> np.ndarray:
    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.asarray(im.convert("RGB"))


def _check_sequence(seq: WorldTrackSequence) -> None:
    T = seq.images.shape[0] if seq.images.ndim == 4 else -1
    if seq.images.ndim != 4 or seq.images.shape[-1] != 3 or seq.images.dtype != np.uint8 or T < 1:
        raise ValueError(f"images must be uint8 (T, H, W, 3) with T >= 1; got {seq.images.dtype} "
                         f"{seq.images.shape}")
    N = seq.tracks_XYZ.shape[1] if seq.tracks_XYZ.ndim == 3 else -1
    expected = {"tracks_XYZ": (seq.tracks_XYZ, (T, N, 3)), "visibility": (seq.visibility, (T, N)),
                "fx_fy_cx_cy": (seq.fx_fy_cx_cy, (4,)), "extrinsics_w2c": (seq.extrinsics_w2c, (T, 4, 4))}
    if seq.depth_map is not None:
        expected["depth_map"] = (seq.depth_map, seq.images.shape[:3])
    if seq.queries_xyt is not None:
        expected["queries_xyt"] = (seq.queries_xyt, (N, 3))
    if seq.is_dynamic is not None:
        expected["is_dynamic"] = (seq.is_dynamic, (N,))
    for key, (arr, shape) in expected.items():
        if tuple(arr.shape) != tuple(shape) or N < 0:
            raise ValueError(f"{key} has shape {tuple(arr.shape)}, expected {shape} (T frames, N tracks)")


def _write_npz(handle, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed, but with fixed zip timestamps so that equal arrays give equal bytes."""
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asanyarray(value), allow_pickle=False)


def save_npz(path, seq: WorldTrackSequence) -> Path:
    """Write ``seq`` as a WorldTrack ``.npz`` (keys in the module docstring), atomically; returns the path."""
    _check_sequence(seq)
    frames = [_encode_jpeg(np.ascontiguousarray(im)) for im in seq.images]
    arrays = {
        "images_jpeg_bytes": np.array(frames, dtype=f"S{max(len(b) for b in frames)}"),
        "tracks_XYZ": seq.tracks_XYZ.astype(np.float32),
        "visibility": seq.visibility.astype(bool),
        "fx_fy_cx_cy": seq.fx_fy_cx_cy.astype(np.float64),
        "extrinsics_w2c": seq.extrinsics_w2c.astype(np.float64),
    }
    for key in ("depth_map", "queries_xyt", "is_dynamic"):
        value = getattr(seq, key)
        if value is not None:
            arrays[key] = value.astype(bool if key == "is_dynamic" else np.float32)
    if seq.meta:
        arrays["meta_json"] = np.array(json.dumps(seq.meta, sort_keys=True))
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        _write_npz(handle, arrays)
    return path


# --------------------------------------------------------------------------------------------- reading
def _read_key(path: Path, data, key: str):
    """``data[key]`` loaded without ever unpickling: object arrays are refused (InputError naming the key), except
    frames stored the official way (an object array of ``bytes``), parsed by ``npy_bytes`` without running it."""
    try:
        return data[key]
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise InputError(f"{path}: key {key!r} cannot be read: {err}") from err
    if key == "images_jpeg_bytes":  # the official release: an object array of JPEG bytes
        with data.zip.open(f"{key}.npy") as stream:
            try:
                return read_bytes_array(stream, key)
            except InputError as err:
                raise InputError(f"{path}: {err}") from None
    raise InputError(f"{path}: {key} is a pickled object array; st4r-lite never unpickles files (a pickle can "
                     f"run code). A WorldTrack file stores {key} as a plain numeric array: re-save it with "
                     f"np.asarray(value, dtype=np.float32) in an environment you trust")


def load_npz(path) -> WorldTrackSequence:
    """Read a WorldTrack / TAPVid-3D ``.npz`` (ours, or the official release files).

    Accepts frames as a byte-string array or an object array of ``bytes`` (or already decoded (T, H, W, 3)
    uint8); ``extrinsics_w2c`` as (T, 4, 4) or (T, 3, 4) (missing: identity, i.e. tracks stay in each frame's
    camera); ``depth_map`` (T, H, W[, 1]) and ``queries_xyt`` optional. Raises InputError naming the missing or
    malformed key, FileNotFoundError for a missing file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WorldTrack file {str(path)!r} does not exist or is not a file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{path} is not a readable .npz file ({err}); expected a WorldTrack / TAPVid-3D "
                         f"file with keys {', '.join(REQUIRED_KEYS)}") from err
    if not hasattr(data, "files"):
        raise InputError(f"{path} holds a single array, not an .npz archive with keys {', '.join(REQUIRED_KEYS)}")
    with contextlib.closing(data):
        missing = [k for k in REQUIRED_KEYS if k not in data.files]
        if missing:
            raise InputError(f"{path} is missing the key(s) {', '.join(missing)} (it has: "
                             f"{', '.join(sorted(data.files)) or 'none'}); a WorldTrack file needs "
                             f"{', '.join(REQUIRED_KEYS)}")
        raw = _read_key(path, data, "images_jpeg_bytes")
        try:
            if raw.dtype == np.uint8 and raw.ndim == 4:
                images = raw
            else:
                images = np.stack([_decode_image(b) for b in raw.reshape(-1)])
        except Exception as err:  # any decoding failure is a malformed file
            raise InputError(f"{path}: images_jpeg_bytes could not be decoded as images ({err})") from err
        T = images.shape[0]
        tracks = np.asarray(_read_key(path, data, "tracks_XYZ"), dtype=np.float32)
        vis = np.asarray(_read_key(path, data, "visibility"))
        if tracks.ndim != 3 or tracks.shape[0] != T or tracks.shape[2] != 3:
            raise InputError(f"{path}: tracks_XYZ has shape {tracks.shape}, expected (T={T}, N, 3)")
        if tracks.shape[1] == 0:
            raise InputError(f"{path}: tracks_XYZ holds no tracks (N = 0); a WorldTrack file needs at least one "
                             "track to score")
        if vis.shape != tracks.shape[:2]:
            raise InputError(f"{path}: visibility has shape {vis.shape}, expected {tracks.shape[:2]} (T, N)")
        intr = np.asarray(_read_key(path, data, "fx_fy_cx_cy"), dtype=np.float64).reshape(-1)
        if intr.shape != (4,) or not np.isfinite(intr).all() or intr[0] <= 0 or intr[1] <= 0:
            raise InputError(f"{path}: fx_fy_cx_cy must be 4 finite numbers with fx, fy > 0; got {intr}")
        if "extrinsics_w2c" in data.files:
            E = np.asarray(_read_key(path, data, "extrinsics_w2c"), dtype=np.float64)
            if E.ndim == 3 and E.shape[1:] == (3, 4):
                E = np.concatenate([E, np.broadcast_to(np.array([[[0, 0, 0, 1.0]]]), (E.shape[0], 1, 4))], 1)
            if E.shape != (T, 4, 4) or not np.isfinite(E).all():
                raise InputError(f"{path}: extrinsics_w2c has shape {E.shape}, expected ({T}, 4, 4) finite")
            singular = np.flatnonzero(np.abs(np.linalg.det(E[:, :3, :3])) < 1e-6)
            if singular.size:
                raise InputError(f"{path}: extrinsics_w2c of frame(s) {singular[:5].tolist()} are singular (the "
                                 "3x3 rotation block has determinant ~0); each must be an invertible world->camera "
                                 "pose")
        else:
            E = np.broadcast_to(np.eye(4), (T, 4, 4)).copy()
        depth = None
        if "depth_map" in data.files:
            depth = np.asarray(_read_key(path, data, "depth_map"), dtype=np.float32)
            if depth.ndim == 4 and depth.shape[-1] == 1:
                depth = depth[..., 0]
            if depth.shape != images.shape[:3]:
                raise InputError(f"{path}: depth_map has shape {depth.shape}, expected {images.shape[:3]}")
        queries = dyn = None
        if "queries_xyt" in data.files:
            queries = np.asarray(_read_key(path, data, "queries_xyt"), dtype=np.float32)
            if queries.shape != (tracks.shape[1], 3):
                raise InputError(f"{path}: queries_xyt has shape {queries.shape}, expected ({tracks.shape[1]}, 3)")
        if "is_dynamic" in data.files:
            dyn = np.asarray(_read_key(path, data, "is_dynamic")).astype(bool)
            if dyn.shape != (tracks.shape[1],):
                raise InputError(f"{path}: is_dynamic has shape {dyn.shape}, expected ({tracks.shape[1]},)")
        meta = _read_meta(path, data) if "meta_json" in data.files else None
    return WorldTrackSequence(images, tracks, vis.astype(bool), intr, E, depth, queries, dyn, meta)


def _read_meta(path: Path, data) -> dict | None:
    """Our ``meta_json`` key: one JSON string (an object); anything else is ignored."""
    try:
        meta = json.loads(str(_read_key(path, data, "meta_json")))
    except json.JSONDecodeError:
        return None
    return meta if isinstance(meta, dict) else None


# --------------------------------------------------------------------------------------------- tensors
@dataclass
class SequenceTensors:
    """A sequence as evaluation / adaptation use it (torch, world = camera of frame 0).

    video (T, 3, H, W) float32 in [0, 1]; tracks_world (T, N, 3); visibility (T, N) bool; K (3, 3);
    T_world_cam (T, 4, 4) with [0] = I; is_dynamic (N,) bool; query_pixels (N, 2) (u, v); query_frames (N,)
    int64; depth (T, H, W) | None."""

    video: torch.Tensor
    tracks_world: torch.Tensor
    visibility: torch.Tensor
    K: torch.Tensor
    T_world_cam: torch.Tensor
    is_dynamic: torch.Tensor
    query_pixels: torch.Tensor
    query_frames: torch.Tensor
    depth: torch.Tensor | None = None


def sequence_tensors(seq: WorldTrackSequence) -> SequenceTensors:
    """Convert a WorldTrackSequence to SequenceTensors.

    Without ``queries_xyt`` each track's query is its first visible frame t and the projection of
    tracks_XYZ[t] (u = fx x / z + cx, v = fy y / z + cy). Without ``is_dynamic`` a track is dynamic when its
    world position moves more than 5 cm from its frame-0 position (docs/method.md §7, non-finite entries ignored)."""
    tracks = torch.from_numpy(seq.tracks_world()).float()
    vis = torch.from_numpy(np.asarray(seq.visibility, dtype=bool))
    if seq.queries_xyt is not None:
        q = torch.from_numpy(seq.queries_xyt.astype(np.float32))
        query_pixels, query_frames = q[:, :2], q[:, 2].round().long()
    else:
        first = vis.int().argmax(0)  # first visible frame (0 when never visible)
        X = torch.from_numpy(seq.tracks_XYZ.astype(np.float32))[first, torch.arange(seq.num_tracks)]
        fx, fy, cx, cy = (float(x) for x in seq.fx_fy_cx_cy)
        z = X[:, 2].clamp_min(1e-6)
        query_pixels = torch.stack([fx * X[:, 0] / z + cx, fy * X[:, 1] / z + cy], -1)
        query_frames = first.long()
    if seq.is_dynamic is not None:
        dyn = torch.from_numpy(seq.is_dynamic.astype(bool))
    else:
        move = (tracks - tracks[:1]).norm(dim=-1)
        dyn = torch.nan_to_num(move, nan=0.0).amax(0) > DYNAMIC_MIN_MOTION
    video = rearrange(torch.from_numpy(np.ascontiguousarray(seq.images)).float() / 255.0, "t h w c -> t c h w")
    depth = None if seq.depth_map is None else torch.from_numpy(seq.depth_map.astype(np.float32))
    return SequenceTensors(video, tracks, vis, torch.from_numpy(seq.K()).float(),
                           torch.from_numpy(seq.T_world_cam()).float(), dyn, query_pixels, query_frames, depth)


# --------------------------------------------------------------------------------------------- from clips
def query_grid(height: int, width: int, max_tracks: int = MAX_TRACKS) -> torch.Tensor:
    """Flat anchor-pixel indices (N,) of the tracks written per sequence: every pixel when H W <= max_tracks,
    else an even grid with stride s = ceil(sqrt(H W / max_tracks)) starting at s // 2."""
    if max_tracks < 1:
        raise InputError(f"max_tracks must be >= 1, got {max_tracks}")
    if height * width <= max_tracks:
        return torch.arange(height * width)
    uv = grid_query_pixels(height, width, stride=math.ceil(math.sqrt(height * width / max_tracks))).long()
    return uv[:, 1] * width + uv[:, 0]


def clip_to_sequence(clip, b: int = 0, max_tracks: int = MAX_TRACKS) -> WorldTrackSequence:
    """Clip ``b`` of a ``world.Clip`` as a WorldTrackSequence: queries are anchor pixels (u, v, t=0) of
    ``query_grid``; tracks_XYZ[t] = E_t x_world with E_t = T_world_cam[t]^-1 (so E_0 = I)."""
    if not 0 <= b < clip.num_clips:
        raise ValueError(f"clip index b={b} is out of range for a batch of {clip.num_clips} clips")
    H, W = clip.height, clip.width
    idx = query_grid(H, W, max_tracks)
    E = torch.linalg.inv(clip.T_world_cam[b].detach().cpu().double())
    track = rearrange(clip.track_world[b].detach().cpu().double(), "t h w c -> t (h w) c")[:, idx]
    tracks_cam = torch.einsum("tij,tnj->tni", E[:, :3, :3], track) + E[:, None, :3, 3]
    K = clip.K[b].detach().cpu().double()
    rgb = rearrange(clip.rgb[b].detach().cpu(), "t c h w -> t h w c")
    queries = torch.stack([idx % W, idx // W, torch.zeros_like(idx)], -1)
    meta = {"source": "st4r_lite synthetic world", "domain": clip.domain, "seed": int(clip.seeds[b]),
            "frame_gap": float(clip.frame_gap), "queries": "anchor pixels of frame 0"}
    if clip.info:
        meta.update({k: v for k, v in clip.info[b].items() if k in ("camera", "num_objects", "kinds")})
    return WorldTrackSequence(
        images=(rgb * 255).round().clamp(0, 255).to(torch.uint8).numpy(),
        tracks_XYZ=tracks_cam.float().numpy(),
        visibility=rearrange(clip.track_visible[b].detach().cpu(), "t h w -> t (h w)")[:, idx].numpy(),
        fx_fy_cx_cy=np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], dtype=np.float64),
        extrinsics_w2c=E.numpy(),
        depth_map=clip.depth[b].detach().cpu().float().numpy(),
        queries_xyt=queries.float().numpy(),
        is_dynamic=clip.track_dynamic[b].detach().cpu().reshape(-1)[idx].numpy(),
        meta=meta,
    )
