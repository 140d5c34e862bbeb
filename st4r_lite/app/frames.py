"""Bringing video frames to the network size: uniform scale + centre crop (:class:`FrameTransform`), the
network size for a video, and the intrinsics between the original video and the network image."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from st4r_lite.errors import InputError
from st4r_lite.model.config import get_config

__all__ = ["FrameTransform", "plan_transform", "network_size", "intrinsics_to_network", "intrinsics_to_original",
           "transform_frame", "sequence_to_network"]


@dataclass(frozen=True)
class FrameTransform:
    """How original frames (H0, W0) became network frames (H, W): uniform ``scale`` then a crop at (crop_x, crop_y).

    orig_size = (H0, W0), out_size = (H, W); crop_x, crop_y are in scaled pixels (edge coordinates), possibly
    fractional. u_net = scale (u0 + 0.5) − 0.5 − crop_x (see the module docstring).
    """

    orig_size: tuple[int, int]
    out_size: tuple[int, int]
    scale: float
    crop_x: float
    crop_y: float

    def pixels_to_network(self, uv: torch.Tensor) -> torch.Tensor:
        """(..., 2) original pixels (u0, v0) -> network pixels (u, v)."""
        off = uv.new_tensor([self.crop_x, self.crop_y])
        return self.scale * (uv + 0.5) - 0.5 - off

    def pixels_to_original(self, uv: torch.Tensor) -> torch.Tensor:
        """(..., 2) network pixels -> original pixels; inverse of :meth:`pixels_to_network`."""
        off = uv.new_tensor([self.crop_x, self.crop_y])
        return (uv + 0.5 + off) / self.scale - 0.5

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> FrameTransform:
        return cls(orig_size=tuple(int(v) for v in d["orig_size"]), out_size=tuple(int(v) for v in d["out_size"]),
                   scale=float(d["scale"]), crop_x=float(d["crop_x"]), crop_y=float(d["crop_y"]))

    def as_array(self) -> np.ndarray:
        """(7,) float64: H0, W0, H, W, scale, crop_x, crop_y (how result.npz stores it)."""
        return np.array([*self.orig_size, *self.out_size, self.scale, self.crop_x, self.crop_y], np.float64)

    @classmethod
    def from_array(cls, a) -> FrameTransform:
        a = np.asarray(a, np.float64).reshape(-1)
        if a.shape != (7,):
            raise ValueError(f"a FrameTransform array has 7 numbers (H0 W0 H W scale crop_x crop_y), got {a.shape}")
        return cls((int(a[0]), int(a[1])), (int(a[2]), int(a[3])), float(a[4]), float(a[5]), float(a[6]))


def plan_transform(orig_size: tuple[int, int], out_size: tuple[int, int]) -> FrameTransform:
    """Uniform scale s = max(H / H0, W / W0) (the scaled frame covers the output) and a centred crop."""
    H0, W0 = (int(v) for v in orig_size)
    H, W = (int(v) for v in out_size)
    if min(H0, W0, H, W) < 1:
        raise InputError(f"frame sizes must be positive, got original {orig_size} and output {out_size}")
    s = max(H / H0, W / W0)
    return FrameTransform((H0, W0), (H, W), s, (s * W0 - W) / 2, (s * H0 - H) / 2)


def network_size(config, orig_size: tuple[int, int], portrait: str = "native") -> tuple[int, int]:
    """The network input (H, W) for a video of ``orig_size`` (H0, W0).

    config: a ModelConfig, a preset name, or an explicit (H, W). Landscape or square videos get the config's
    ``img_size``; portrait ones (H0 > W0) get it swapped when ``portrait="native"`` (default) or keep it when
    ``portrait="crop"``. Both sides must be multiples of the patch size (checked for configs).
    """
    if portrait not in ("native", "crop"):
        raise InputError(f"portrait must be 'native' (portrait network size) or 'crop', got {portrait!r}")
    if isinstance(config, (tuple, list)):
        H, W = (int(v) for v in config)
        patch = 1
    else:
        cfg = get_config(config)
        (H, W), patch = cfg.img_size, cfg.patch_size
    if H % patch or W % patch:
        raise InputError(f"network size {H}x{W} must be multiples of the patch size {patch}")
    if portrait == "native" and orig_size[0] > orig_size[1] and H < W:
        return W, H
    return H, W


def intrinsics_to_network(K_orig: torch.Tensor, tf: FrameTransform) -> torch.Tensor:
    """(..., 3, 3) intrinsics of the original video -> of the network images: f s, s (c + 0.5) − 0.5 − crop."""
    K = torch.as_tensor(K_orig, dtype=torch.float64).clone()
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be (..., 3, 3), got {tuple(K.shape)}")
    s = tf.scale
    K[..., 0, 0] *= s
    K[..., 1, 1] *= s
    K[..., 0, 2] = s * (K[..., 0, 2] + 0.5) - 0.5 - tf.crop_x
    K[..., 1, 2] = s * (K[..., 1, 2] + 0.5) - 0.5 - tf.crop_y
    return K


def intrinsics_to_original(K_net: torch.Tensor, tf: FrameTransform) -> torch.Tensor:
    """(..., 3, 3) intrinsics found on network images -> of the original video: f / s, (c + 0.5 + crop) / s − 0.5."""
    K = torch.as_tensor(K_net, dtype=torch.float64).clone()
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be (..., 3, 3), got {tuple(K.shape)}")
    s = tf.scale
    K[..., 0, 0] /= s
    K[..., 1, 1] /= s
    K[..., 0, 2] = (K[..., 0, 2] + 0.5 + tf.crop_x) / s - 0.5
    K[..., 1, 2] = (K[..., 1, 2] + 0.5 + tf.crop_y) / s - 0.5
    return K


def _rgb_channels(frame: np.ndarray) -> np.ndarray:
    """(H0, W0), (H0, W0, 1|2|3|4) -> (H0, W0, 3) in the same dtype (gray repeated, alpha dropped)."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"a frame must be (H, W) or (H, W, 1..4), got shape {a.shape}")
    if a.shape[-1] in (2, 4):  # gray+alpha or RGBA: drop alpha
        a = a[..., :-1]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a)


def _to_float01(a: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float -> float32 in [0, 1]."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def transform_frame(frame: np.ndarray, tf: FrameTransform) -> np.ndarray:
    """One original frame (H0, W0[, C]) -> (H, W, 3) float32 in [0, 1] by ``tf`` (box pre-filter + exact warp).

    The k x k block average runs in the frame's own dtype (uint8 for videos), so a 4K frame costs ~25 MB, not a
    float copy of 100 MB; its rounding is at most half a grey level.
    """
    import cv2

    rgb = _rgb_channels(frame)
    if rgb.dtype not in (np.uint8, np.uint16):
        rgb = _to_float01(rgb)
    if rgb.shape[:2] != tuple(tf.orig_size):
        raise ValueError(f"frame is {rgb.shape[0]}x{rgb.shape[1]}, the transform expects {tf.orig_size}")
    k = max(1, int(math.floor(1.0 / (2.0 * tf.scale))))
    if k > 1:  # exact k x k block average: pad to a multiple of k (replicate), INTER_AREA at an integer factor
        H0, W0 = rgb.shape[:2]
        ph, pw = (-H0) % k, (-W0) % k
        if ph or pw:
            rgb = cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        rgb = cv2.resize(rgb, (rgb.shape[1] // k, rgb.shape[0] // k), interpolation=cv2.INTER_AREA)
    rgb = _to_float01(rgb)
    sk = tf.scale * k  # block centres: u0 = k (u_a + 0.5) − 0.5, so u_net = s k (u_a + 0.5) − 0.5 − crop_x
    M = np.array([[sk, 0.0, 0.5 * sk - 0.5 - tf.crop_x], [0.0, sk, 0.5 * sk - 0.5 - tf.crop_y]])
    H, W = tf.out_size
    out = cv2.warpAffine(rgb, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0)


def sequence_to_network(seq, config, portrait: str = "native"):
    """A WorldTrack sequence brought to the network size the way ``run`` brings a video (scale + centre crop).

    seq: a ``worldtrack.WorldTrackSequence`` with images (T, H0, W0, 3); config: as :func:`network_size`.
    Returns (seq', tf): images (T, H, W, 3) uint8, fx_fy_cx_cy mapped by :func:`intrinsics_to_network`, depth
    (T, H, W) sampled at the nearest original pixel, queries mapped by ``tf``, and visibility cleared where a
    point falls outside the cropped image; 3D tracks and poses are unchanged (the camera is the same)."""
    T, H0, W0, _ = seq.images.shape
    tf = plan_transform((H0, W0), network_size(config, (H0, W0), portrait))
    H, W = tf.out_size
    if (H, W) == (H0, W0):
        return seq, tf
    images = np.stack([(transform_frame(im, tf) * 255 + 0.5).astype(np.uint8) for im in seq.images])
    fx, fy, cx, cy = (float(v) for v in seq.fx_fy_cx_cy)
    K = intrinsics_to_network(torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), tf).numpy()
    intr = np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], dtype=np.float64)
    depth = None
    if seq.depth_map is not None:
        v0 = np.clip(np.round((np.arange(H) + 0.5 + tf.crop_y) / tf.scale - 0.5).astype(int), 0, H0 - 1)
        u0 = np.clip(np.round((np.arange(W) + 0.5 + tf.crop_x) / tf.scale - 0.5).astype(int), 0, W0 - 1)
        depth = np.ascontiguousarray(seq.depth_map[:, v0][:, :, u0])
    queries = seq.queries_xyt
    if queries is not None:
        queries = queries.copy()
        queries[:, :2] = tf.pixels_to_network(torch.from_numpy(queries[:, :2]).double()).numpy()
    xyz = seq.tracks_XYZ.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intr[0] * xyz[..., 0] / xyz[..., 2] + intr[2]
        v = intr[1] * xyz[..., 1] / xyz[..., 2] + intr[3]
    inside = (xyz[..., 2] > 0) & (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5)
    return dataclasses.replace(seq, images=images, fx_fy_cx_cy=intr, depth_map=depth, queries_xyt=queries,
                               visibility=seq.visibility & inside), tf
