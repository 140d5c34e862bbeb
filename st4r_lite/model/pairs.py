"""The pairs (anchor, j) of a video through the network: each frame encoded once, the pairs decoded in chunks.

Glossary: B videos (clips), T frames per video, H W image size, N tokens per frame, C_enc encoder width,
M pairs asked for (``idx``).

St4RTrack answers every pair (anchor, j) of a video. The encoder sees one image at a time, so a frame's tokens
do not depend on the pair it is in: the anchor is encoded once and shared by all its pairs, and only the two
decoders and the heads run per pair:

    tokens_j          = encode(frame_j)                                   (once per frame)
    output(anchor, j) = heads(decode(tokens_anchor, tokens_j))            (``chunk`` pairs at a time)

This gives the plain pair forward's numbers (``model(img_anchor, img_other)``, up to float summation order)
with one encoder pass per frame instead of two per pair. It is the one loop over pairs: inference
(``network.predict_video``, tokens encoded chunk by chunk so memory is bounded by ``chunk``, not T),
pretraining (B clips per step, under DDP: :class:`PairRunner` is a Module) and test-time adaptation (the
encoder is frozen there, so every frame's tokens are computed once with :meth:`PairRunner.encode` and reused
by every step). Gradients flow whenever the caller's autograd mode allows them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from st4r_lite.model.network import PairOutput, check_images

__all__ = ["FrameTokens", "PairRunner", "predict_video"]


@dataclass
class FrameTokens:
    """Encoder output of every frame of B videos: tokens (B, T, N, C_enc) after enc_norm, pos (B, T, N, 2);
    image_hw: the frames' (H, W); images: the frames (B, T, 3, H, W) in [-1, 1], kept for a model whose heads
    read the pixels (``ModelConfig.reads_pixels``), else None."""

    tokens: Tensor
    pos: Tensor
    image_hw: tuple[int, int]
    images: Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.tokens.shape[1])


def _videos(frames: Tensor) -> Tensor:
    """(T, 3, H, W) or (B, T, 3, H, W) -> (B, T, 3, H, W)."""
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (T, 3, H, W) or (B, T, 3, H, W) in [-1, 1], got {tuple(frames.shape)}")
    return frames


def _cat_pairs(parts: list[PairOutput], B: int) -> PairOutput:
    """Chunks of pairs (B·m_i rows each, order (b, j)) -> one PairOutput of B·M rows in (b, j) order."""
    if len(parts) == 1:
        return parts[0]
    def field(name: str) -> Tensor:
        xs = [getattr(p, name) for p in parts]
        return torch.cat([x.unflatten(0, (B, -1)) for x in xs], dim=1).flatten(0, 1)
    return PairOutput(**{f.name: field(f.name) for f in fields(PairOutput)})


class PairRunner(nn.Module):
    """Runs the pairs (anchor, j) of B videos through ``model`` (see the module docstring).

    chunk: frames per encoder pass and pairs (per video) per decoder pass; None = all at once.
    anchor: index of the anchor frame in every video. A Module, so that DDP can wrap it.
    """

    def __init__(self, model: nn.Module, chunk: int | None = None, anchor: int = 0) -> None:
        super().__init__()
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1 (or None for all at once), got {chunk}")
        if anchor < 0:
            raise ValueError(f"anchor index must be >= 0, got {anchor}")
        self.model, self.chunk, self.anchor = model, chunk, anchor

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """(B, m, 3, H, W) -> tokens (B, m, N, C), pos (B, m, N, 2), ``chunk`` frames per encoder pass."""
        B, m = frames.shape[:2]
        flat = frames.flatten(0, 1)
        step = flat.shape[0] if self.chunk is None else self.chunk
        enc, pos = zip(*(self.model.encode(flat[s:s + step].to(self._device())) for s in range(0, flat.shape[0], step)))
        return torch.cat(enc).unflatten(0, (B, m)), torch.cat(pos).unflatten(0, (B, m))

    def encode(self, frames: Tensor) -> FrameTokens:
        """Every frame's tokens: frames (T, 3, H, W) or (B, T, 3, H, W) in [-1, 1] -> FrameTokens (B, T, ...)."""
        frames = _videos(frames)
        check_images(frames[0, :1], frames[0, :1], self.model.config.patch_size)
        images = frames if self.model.config.reads_pixels else None
        return FrameTokens(*self._encode(frames), tuple(frames.shape[-2:]), images)

    def forward(self, frames: Tensor | None = None, idx: Tensor | None = None, *, tokens: FrameTokens | None = None,
                out_device: torch.device | str | None = None, progress: bool = False) -> PairOutput:
        """PairOutput of the pairs (anchor, j), j in ``idx`` (M,) (default: every frame), of every video.

        frames: (T, 3, H, W) or (B, T, 3, H, W) in [-1, 1] (encoded ``chunk`` at a time as the pairs need them;
        they may stay on the CPU) or tokens: from :meth:`encode` (reused, nothing encoded). Returns B·M rows in
        (video b, pair j) order, gathered on ``out_device`` (default: where the model computes); ``progress``
        shows a bar over the chunks.
        """
        if (frames is None) == (tokens is None):
            raise ValueError("give either frames or tokens (from PairRunner.encode)")
        if frames is not None:
            frames = _videos(frames)
            check_images(frames[0, :1], frames[0, :1], self.model.config.patch_size)
        B, T = (frames.shape[:2] if frames is not None else tokens.tokens.shape[:2])
        hw = tuple(frames.shape[-2:]) if frames is not None else None
        if self.anchor >= T:
            raise ValueError(f"anchor index {self.anchor} outside the video's {T} frames")
        idx = torch.arange(T) if idx is None else torch.as_tensor(idx).long().cpu()
        if tokens is not None:
            enc_a, pos_a, hw = tokens.tokens[:, self.anchor], tokens.pos[:, self.anchor], tokens.image_hw
        else:
            enc_a, pos_a = (x[:, 0] for x in self._encode(frames[:, self.anchor:self.anchor + 1]))
        step = len(idx) if self.chunk is None else self.chunk
        parts, starts = [], range(0, len(idx), step)
        for s in (tqdm(starts, desc="pairs", unit="chunk") if progress else starts):
            j = idx[s:s + step]
            if tokens is not None:
                enc_o, pos_o = tokens.tokens[:, j.to(tokens.tokens.device)], tokens.pos[:, j.to(tokens.pos.device)]
            else:
                enc_o, pos_o = self._encode(frames[:, j])
            m = len(j)
            dec1, dec2 = self.model.decode(enc_a[:, None].expand(-1, m, -1, -1).flatten(0, 1),
                                           pos_a[:, None].expand(-1, m, -1, -1).flatten(0, 1),
                                           enc_o.flatten(0, 1), pos_o.flatten(0, 1))
            images = None
            if self.model.config.reads_pixels:
                src = frames if frames is not None else tokens.images
                if src is None:
                    raise ValueError("this model's heads refine from the pixels: encode the tokens with "
                                     "PairRunner.encode (it keeps the frames) or pass frames")
                dev = self._device()
                images = (src[:, self.anchor:self.anchor + 1].expand(-1, m, -1, -1, -1).flatten(0, 1).to(dev),
                          src[:, j.to(src.device)].flatten(0, 1).to(dev))
            out, _, _ = self.model.predict_heads(dec1, dec2, hw, images)
            parts.append(out if out_device is None else out.to(out_device))
        return _cat_pairs(parts, B)



def predict_video(model: nn.Module, video: Tensor, chunk: int = 8, anchor: int = 0, progress: bool = False,
                  out_device: torch.device | str | None = None) -> PairOutput:
    """Run every pair (anchor, t), t = 0..T-1, without gradients, ``chunk`` pairs at a time.

    video: (T, 3, H, W) in [-1, 1] -> PairOutput with B = T (row t = pair (anchor, t)). The anchor is encoded
    once; memory is bounded by ``chunk``, not T. Outputs are gathered on ``out_device`` (default: the video's).
    """
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"video must be (T, 3, H, W) in [-1, 1], got shape {tuple(video.shape)}")
    if not 0 <= anchor < video.shape[0]:
        raise ValueError(f"anchor index {anchor} outside the video's {video.shape[0]} frames")
    runner = PairRunner(model, chunk=chunk, anchor=anchor)
    with torch.no_grad():
        return runner(video, out_device=video.device if out_device is None else out_device, progress=progress)
