"""Your own video: read a file or a folder of frames into the network's input size, without distorting it.

Glossary: T frames, H W network image size (rows, columns), H0 W0 original frame size, s scale (network pixels
per original pixel), (x0, y0) crop offset in scaled pixels, K intrinsics (3, 3).

Reading streams: frames are decoded one at a time (PyAV for .mp4/.mov/.webm/.mkv/.avi, Pillow for a folder of
.png/.jpg frames sorted naturally, so ``frame_2.png`` comes before ``frame_10.png``), every kept frame is brought
to the network size at once, and only the small result is kept. Memory is bounded by one full-resolution frame
plus T network-size frames, however large or long the video.

Geometry (pixel centres at integer coordinates, docs/method.md §1): a *uniform* scale s = max(H / H0, W / W0) so the
scaled frame covers the network size, then a centre crop. With edge coordinates (centre + 0.5) this is
    u_net + 0.5 = s (u0 + 0.5) − x0,   v_net + 0.5 = s (v0 + 0.5) − y0,
    x0 = (s W0 − W) / 2,  y0 = (s H0 − H) / 2   (fractional offsets are kept: the warp is exact).
For intrinsics K = [[f, 0, cx], [0, f, cy], [0, 0, 1]] this gives
    f_net = s f0,   cx_net = s (cx0 + 0.5) − 0.5 − x0,   cy_net = s (cy0 + 0.5) − 0.5 − y0,
so a focal found on network images maps back to the original video (:func:`intrinsics_to_original`). Downscaling
first averages k x k blocks (k = floor(1 / (2 s)), exact box filter, no aliasing), then warps with the residual
scale by bilinear interpolation.

Portrait videos (H0 > W0): we use a *portrait network size* (the preset's (H, W) swapped, e.g. 96x64 for tiny)
rather than rotating the frames: the network takes any multiple of its patch size (RoPE has no fixed position
table), and the geometry stays that of the real camera (no 90° turn to undo on the poses). ``portrait="crop"``
keeps the landscape size and crops the middle band instead.
Other inputs: grayscale frames become 3 equal channels; alpha is dropped; 16-bit PNGs are scaled to [0, 1];
a frame whose size differs from the first frame's is an error (videos that change resolution mid-stream must
be re-encoded first); fewer than ``min_frames`` (default 2) frames is an error.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from st4r_lite.app.frames import (
    FrameTransform,
    network_size,
    plan_transform,
    transform_frame,
)
from st4r_lite.errors import InputError
from st4r_lite.runtime import atomic_write

__all__ = ["Video", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES", "read_video", "iter_frames", "write_video", "natural_key", "probe"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# ----------------------------------------------------------------------------------------------- geometry
# ----------------------------------------------------------------------------------------------- reading
def natural_key(name: str) -> list:
    """Sort key where digit runs compare as numbers: 'f2.png' < 'f10.png'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _check_source(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"video {str(path)!r} does not exist")
    if path.is_dir():
        return "folder"
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{str(path)!r}: unknown video type {path.suffix!r}; give a video file "
                         f"({', '.join(VIDEO_SUFFIXES)}) or a folder of frames ({', '.join(IMAGE_SUFFIXES)})")
    try:
        with open(path, "rb"):
            pass
    except PermissionError as err:
        raise PermissionError(f"cannot read video {str(path)!r}: permission denied") from err
    return "file"


def _import_av():
    try:
        import av
    except ImportError as err:
        raise ImportError("reading video files needs PyAV: pip install av (or 'st4r_lite[video]'); a folder of "
                          "PNG/JPG frames works without it") from err
    return av


def _av_errors(av) -> tuple[type[BaseException], ...]:
    """PyAV's decode errors (``av.FFmpegError`` since PyAV 14, ``av.AVError`` before) plus OSError."""
    return tuple(e for e in (getattr(av, "FFmpegError", None), getattr(av, "AVError", None), OSError,
                             UnicodeDecodeError) if e is not None)


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode frames one at a time: (H0, W0, 3) uint8 RGB for videos; images as stored (gray, RGBA, 16-bit...).

    Raises ValueError naming the file when it cannot be opened or decoding fails part-way (truncated file).
    """
    path = Path(path)
    if _check_source(path) == "folder":
        files = _frame_files(path)
        for f in files:
            try:
                with Image.open(f) as img:
                    if img.mode == "P":
                        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                    elif img.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L"):
                        img = img.convert("RGB")
                    a = np.asarray(img)
                    if img.mode.startswith("I;16"):
                        a = a.astype(np.uint16)
            except (OSError, SyntaxError) as err:
                raise InputError(f"cannot read frame {str(f)!r}: {err}") from err
            yield a
        return
    av = _import_av()
    try:
        container = av.open(str(path))
    except _av_errors(av) as err:
        raise InputError(f"cannot open video {str(path)!r} (not a video, or damaged; an .mp4 cut short loses "
                         f"its index, so no frame can be decoded): {err}") from err
    with container:
        if not container.streams.video:
            raise InputError(f"{str(path)!r} has no video stream")
        expected = _declared_frames(container)
        n = 0
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
                n += 1
        except _av_errors(av) as err:
            raise InputError(f"decoding {str(path)!r} failed after {n} frame(s)"
                             f"{f' of {expected} declared' if expected else ''} (truncated or damaged file?): "
                             f"{err}") from err
        if expected and n < expected - 1:  # one frame of slack: durations are rounded
            warnings.warn(f"{str(path)!r} ended early: {n} frame(s) decoded of the {expected} its header "
                          "declares (truncated file?); using the frames that were decoded", stacklevel=2)


def _declared_frames(container) -> int:
    """Frames the container says the video has (its frame count, else duration x frame rate); 0 if unknown."""
    stream = container.streams.video[0]
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate
    if container.duration and rate:
        return int(round(container.duration / 1_000_000 * float(rate)))
    return 0


def probe(path: str | Path) -> tuple[tuple[int, int], float | None]:
    """((H0, W0), fps or None) from the first frame (fps from the container for video files)."""
    path = Path(path)
    fps = None
    if _check_source(path) == "file":
        av = _import_av()
        try:
            with av.open(str(path)) as c:
                if c.streams.video and c.streams.video[0].average_rate:
                    fps = float(c.streams.video[0].average_rate)
        except _av_errors(av) as err:
            raise InputError(f"cannot open video {str(path)!r} (not a video, or damaged): {err}") from err
    for frame in iter_frames(path):
        return tuple(int(v) for v in np.asarray(frame).shape[:2]), fps
    raise InputError(f"{str(path)!r} has no frames")


@dataclass
class Video:
    """A video at network size. frames: (T, 3, H, W) float32 in [0, 1]; frame_indices: (T,) indices in the source;
    transform: how each original frame became a network frame; fps: of the source (None for folders)."""

    frames: torch.Tensor
    frame_indices: list[int]
    transform: FrameTransform
    source: str
    fps: float | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def read_video(path: str | Path, size=None, *, stride: int = 1, start: int = 0, max_frames: int | None = None,
               portrait: str = "native", min_frames: int = 2) -> Video:
    """Read frames ``start, start + stride, ...`` (at most ``max_frames``) of a video file or frame folder.

    size: the network size: a ModelConfig / preset name (portrait handling by ``portrait``, see
    :func:`network_size`), an explicit (H, W) (used as given), or None (the ``tiny`` preset). Returns a :class:`Video` with
    frames (T, 3, H, W) in [0, 1]. Raises ValueError for fewer than ``min_frames`` frames, a frame size that
    changes mid-video, or an unreadable / truncated file; FileNotFoundError for a missing path.
    """
    if stride < 1 or start < 0 or (max_frames is not None and max_frames < 1):
        raise InputError(f"need stride >= 1, start >= 0, max_frames >= 1; got {stride}, {start}, {max_frames}")
    path = Path(path)
    (H0, W0), fps = probe(path)
    if isinstance(size, (tuple, list)):  # an explicit size is used as given
        out_size = (int(size[0]), int(size[1]))
    else:
        out_size = network_size("tiny" if size is None else size, (H0, W0), portrait)
    tf = plan_transform((H0, W0), out_size)
    frames, indices = [], []
    for i, frame in enumerate(iter_frames(path)):
        shape = np.asarray(frame).shape[:2]
        if tuple(shape) != (H0, W0):
            raise InputError(f"{str(path)!r}: frame {i} is {shape[0]}x{shape[1]} but frame 0 is {H0}x{W0}; "
                             "frames must all have one size (re-encode the video, e.g. ffmpeg -vf scale=...)")
        if i < start or (i - start) % stride:
            continue
        frames.append(torch.from_numpy(transform_frame(frame, tf)))
        indices.append(i)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if len(frames) < min_frames:
        total = "no frames" if not frames else f"{len(frames)} frame(s)"
        raise InputError(f"{str(path)!r} gave {total} with start={start}, stride={stride}; need at least "
                         f"{min_frames} (pairs (0, t) need a second frame)")
    video = torch.stack(frames).permute(0, 3, 1, 2).contiguous()
    return Video(video, indices, tf, str(path), None if fps is None else fps / stride)


# ----------------------------------------------------------------------------------------------- writing
def write_video(path: str | Path, frames, fps: float = 10.0, codec: str | None = None) -> Path:
    """Encode frames into a video file (atomically), or a folder of PNGs when ``path`` has no video suffix.

    frames: (T, 3, H, W) float in [0, 1] (tensor or array) or an iterable of (H, W, 3) uint8 arrays (streamed:
    long synthetic videos never sit in memory). Video: H.264 (yuv420p) for .mp4/.mov/.mkv, VP9 for .webm;
    odd sizes are padded by one replicated pixel row/column (yuv420p needs even sizes).
    """
    path = Path(path)
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        if arr.ndim != 4 or arr.shape[1] != 3:
            raise ValueError(f"frames must be (T, 3, H, W) in [0, 1], got shape {arr.shape}")
        frames = ((np.clip(a.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8) for a in arr)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        path.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(frames):
            with atomic_write(path / f"frame_{i:05d}.png", "wb") as h:
                Image.fromarray(f).save(h, format="PNG")
        return path
    av = _import_av()
    codec = codec or ("libvpx-vp9" if path.suffix.lower() == ".webm" else "libx264")
    with atomic_write(path, "wb") as handle:
        with av.open(handle, "w", format=path.suffix.lower().lstrip(".").replace("mkv", "matroska")
                     .replace("m4v", "mp4")) as out:
            stream = None
            for f in frames:
                f = np.ascontiguousarray(f)
                if stream is None:
                    h, w = f.shape[0] + f.shape[0] % 2, f.shape[1] + f.shape[1] % 2
                    stream = out.add_stream(codec, rate=int(round(fps)))
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": "18", "preset": "veryfast"}
                if f.shape[0] % 2 or f.shape[1] % 2:
                    f = np.pad(f, ((0, f.shape[0] % 2), (0, f.shape[1] % 2), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    out.mux(packet)
            if stream is None:
                raise ValueError(f"no frames to write to {str(path)!r}")
            for packet in stream.encode():
                out.mux(packet)
    return path
