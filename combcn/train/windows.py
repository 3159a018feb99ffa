"""Training windows: a random 32-frame, 128x128 crop of a clip with a synthetic hole (paper §4, §5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from combcn.errors import ConfigError
from combcn.train.data import Clip
from combcn.train.holes import box_hole, object_hole, stroke_hole


@dataclass(frozen=True)
class HoleMix:
    """Probabilities of each hole kind per window (normalised; 0 disables a kind)."""

    box: float = 0.5
    strokes: float = 0.3
    objects: float = 0.2

    def __post_init__(self) -> None:
        values = (self.box, self.strokes, self.objects)
        if min(values) < 0 or sum(values) <= 0:
            raise ConfigError(f"hole probabilities must be >= 0 and not all 0, got {values}")


def crop_frames(frames: np.ndarray, start: int, t: int, crop: tuple[int, int, int], size: int) -> np.ndarray:
    """frames uint8 [T0, H, W, 3] -> float32 [t, size, size, 3] in [0, 1] (area filter when shrinking)."""
    import cv2

    y, x, side = crop
    out = np.empty((t, size, size, 3), np.float32)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    for f in range(t):
        patch = np.asarray(frames[start + f, y : y + side, x : x + side])
        if side != size:
            patch = cv2.resize(patch, (size, size), interpolation=interp)
        out[f] = patch
    return out * np.float32(1.0 / 255.0)


class WindowSampler:
    """Deterministic source of training windows: ``sample(i)`` depends only on (seed, i).

    Args:
        clips: clips to draw from (each with at least ``window`` frames and ``resolution`` pixels).
        window: frames per window (paper: 32).
        resolution: output size (paper: 128).
        holes: hole-kind probabilities.
        seed: base seed.
        augment: random rescale (crop side in [resolution, short side]), horizontal flip, time reversal.
        mask_clips: clips whose ``masks`` give object silhouettes (default: those in ``clips`` with masks).
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        *,
        window: int = 32,
        resolution: int = 128,
        holes: HoleMix | None = None,
        seed: int = 0,
        augment: bool = True,
        mask_clips: Sequence[Clip] | None = None,
    ) -> None:
        if not clips:
            raise ConfigError("no usable clips to sample windows from")
        self.clips = list(clips)
        self.window = window
        self.resolution = resolution
        self.holes = holes or HoleMix()
        self.seed = seed
        self.augment = augment
        self.mask_clips = [
            c for c in (mask_clips if mask_clips is not None else clips) if c.masks is not None
        ]

    def _crop(self, rng: np.random.Generator, clip: Clip) -> tuple[int, tuple[int, int, int]]:
        t, h, w, _ = clip.frames.shape
        start = int(rng.integers(0, t - self.window + 1))
        short = min(h, w)
        side = int(rng.integers(self.resolution, short + 1)) if self.augment else short
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        return start, (y, x, side)

    def hole(self, rng: np.random.Generator, kind: str) -> np.ndarray:
        t, r = self.window, self.resolution
        if kind == "strokes":
            return stroke_hole(rng, t, r, r)
        if kind == "objects" and self.mask_clips:
            src = self.mask_clips[int(rng.integers(0, len(self.mask_clips)))]
            assert src.masks is not None
            start, crop = self._crop(rng, src)
            out = object_hole(rng, src.masks, src.mask_index, start, t, crop, r)
            if out is not None:
                return out
        return box_hole(rng, t, r, r)

    def sample(
        self, index: int, *, kind: str | None = None, clip_index: int | None = None
    ) -> tuple[Tensor, Tensor, str]:
        """Window ``index``: (frames Tensor[3, T, R, R] float32 in [0, 1], hole Tensor[1, T, R, R] 1 = hole,
        clip name). ``kind`` forces a hole kind ("box", "strokes", "objects"); ``clip_index`` the clip."""
        rng = np.random.default_rng([self.seed, index])
        pick = int(rng.integers(0, len(self.clips)))
        clip = self.clips[pick if clip_index is None else clip_index % len(self.clips)]
        start, crop = self._crop(rng, clip)
        frames = crop_frames(clip.frames, start, self.window, crop, self.resolution)
        if self.augment:
            if rng.random() < 0.5:
                frames = frames[:, :, ::-1]
            if rng.random() < 0.5:
                frames = frames[::-1]
        if kind is None:
            p = np.array([self.holes.box, self.holes.strokes, self.holes.objects], np.float64)
            kind = ["box", "strokes", "objects"][int(rng.choice(3, p=p / p.sum()))]
        hole = self.hole(rng, kind)
        f = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).contiguous()
        return f, torch.from_numpy(hole)[None], clip.name

    def batch(self, indices: Sequence[int], *, kind: str | None = None) -> tuple[Tensor, Tensor]:
        """Stack windows: (Tensor[N, 3, T, R, R], Tensor[N, 1, T, R, R])."""
        items = [self.sample(i, kind=kind) for i in indices]
        return torch.stack([a for a, _, _ in items]), torch.stack([b for _, b, _ in items])
