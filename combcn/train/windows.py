"""Training windows: a random 32-frame, 128x128 crop of a clip with a synthetic hole (paper §4, §5).

Two options make a window look like what the engine feeds the network in use (docs/MODEL.md,
"Training as it is used"):

- **encoding** (``data.encoding``): a window keeps the clips' sRGB values (what an integer plate is
  fed as), or is turned into scene-linear light (the sRGB EOTF), scaled by a random exposure in stops
  and encoded with a shaper (``acescct``, the engine's default for float plates), clipped to [0, 1];
- **propagation** (``holes.propagate``): the engine's :class:`~combcn.engine.propagate.Propagator`
  runs on the window first; the pixels it recovers are pasted into the network's input and only the
  rest ("unresolved") is the network's hole, as in :meth:`combcn.engine.core._Window.run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from combcn.errors import ConfigError
from combcn.holes import box_hole, object_hole, stroke_hole
from combcn.train.data import Clip

#: Encodings a window can be given (``data.encoding``): ``srgb`` keeps the stored values; the others
#: are shapers applied to the linearised window.
ENCODINGS = ("srgb", "acescct", "log")
#: Fewer unresolved pixels than this in a propagated window: it is trained on its whole hole instead
#: (nothing would be left for the loss).
MIN_UNRESOLVED = 64


@dataclass(frozen=True)
class HoleMix:
    """Probabilities of each hole kind per window (normalised; 0 disables a kind), and the fraction of
    windows that are propagated first (the network's hole is then only what no frame shows)."""

    box: float = 0.5
    strokes: float = 0.3
    objects: float = 0.2
    propagate: float = 0.0

    def __post_init__(self) -> None:
        values = (self.box, self.strokes, self.objects)
        if min(values) < 0 or sum(values) <= 0:
            raise ConfigError(f"hole probabilities must be >= 0 and not all 0, got {values}")
        if not 0.0 <= self.propagate <= 1.0:
            raise ConfigError(f"holes.propagate must be a fraction from 0 to 1, got {self.propagate!r}")


def check_encoding(encoding: Mapping[str, float], exposure: float) -> None:
    """Raise ConfigError unless ``encoding`` maps names of :data:`ENCODINGS` to weights >= 0, not all 0,
    and ``exposure`` (stops either way) is from 0 to 8."""
    if not isinstance(encoding, Mapping) or not encoding:
        raise ConfigError(
            f"data.encoding must be a table such as {{srgb: 0.5, acescct: 0.5}}, got {encoding!r}"
        )
    unknown = sorted(set(encoding) - set(ENCODINGS))
    if unknown:
        raise ConfigError(
            f"data.encoding: unknown encoding(s) {', '.join(unknown)}; use {', '.join(ENCODINGS)}"
        )
    weights = list(encoding.values())
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in weights):
        raise ConfigError(f"data.encoding weights must be numbers, got {dict(encoding)!r}")
    if min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"data.encoding weights must be >= 0 and not all 0, got {dict(encoding)!r}")
    if isinstance(exposure, bool) or not 0.0 <= exposure <= 8.0:
        raise ConfigError(f"data.exposure must be from 0 to 8 stops, got {exposure!r}")


def to_plate(frames: np.ndarray, encoding: str, stops: float = 0.0) -> np.ndarray:
    """Display window -> the plate units propagation works in: the values as they are for ``srgb``
    (an integer plate), scene-linear light times ``2 ** stops`` otherwise (a float plate).
    ndarray[..., 3] float32 -> the same shape."""
    if encoding == "srgb":
        return frames
    from combcn.engine.shaper import get_shaper

    out: np.ndarray = get_shaper("srgb").decode(np.clip(frames, 0.0, 1.0)) * np.float32(2.0**stops)
    return out


def from_plate(plate: np.ndarray, encoding: str) -> np.ndarray:
    """Plate units (see :func:`to_plate`) -> the network's working values in [0, 1] (clipped, as the
    engine clips what it feeds the network)."""
    if encoding == "srgb":
        return np.clip(plate, 0.0, 1.0)
    from combcn.engine.shaper import get_shaper

    return np.clip(get_shaper(encoding).encode(plate), 0.0, 1.0)


def propagate_window(plate: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the engine's propagation on a whole window, as the engine does on a plate.

    Args:
        plate (ndarray[T, H, W, 3] float32): the window in plate units.
        hole (ndarray[T, H, W] float32): 1 = hole.

    Returns:
        (inputs ndarray[T, H, W, 3]: ``plate`` with the recovered hole pixels replaced by their
        propagated values; unresolved ndarray[T, H, W] float32: the hole pixels no frame showed).
    """
    from combcn.engine.propagate import PropagationSettings, Propagator

    t, h, w = hole.shape
    rgb = [np.ascontiguousarray(plate[f]) for f in range(t)]
    holes = [hole[f] > 0 for f in range(t)]
    found = Propagator(rgb, holes, PropagationSettings(), region=(0, h, 0, w)).fill(
        rgb, holes, list(range(t))
    )
    inputs = plate.copy()
    unresolved = hole.copy()
    for f in range(t):
        revealed = found.get("revealed", f, (0, h, 0, w))
        inputs[f][revealed] = found.get("values", f, (0, h, 0, w))[revealed]
        unresolved[f][revealed] = 0.0
    return inputs, unresolved


@dataclass
class TrainingWindow:
    """One training window.

    Attributes:
        frames (Tensor[3, T, R, R] float32 in [0, 1]): the truth, in the window's encoding.
        inputs (Tensor[3, T, R, R]): what the network is given: ``frames`` with propagated values in
            the recovered hole pixels (the same as ``frames`` where nothing was propagated).
        hole (Tensor[1, T, R, R]): the network's hole (1 = hole): the drawn hole less what propagation
            recovered.
        drawn (Tensor[1, T, R, R]): the hole as drawn.
        clip: clip name.
        encoding: ``srgb`` or the shaper the window was encoded with.
    """

    frames: Tensor
    inputs: Tensor
    hole: Tensor
    drawn: Tensor
    clip: str
    encoding: str


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
        encoding: weight of each encoding of :data:`ENCODINGS` per window (default: all ``srgb``).
        exposure: a linearised window is scaled by ``2 ** s``, ``s`` uniform in [-exposure, exposure].
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
        encoding: Mapping[str, float] | None = None,
        exposure: float = 0.0,
    ) -> None:
        if not clips:
            raise ConfigError("no usable clips to sample windows from")
        self.encoding = dict(encoding or {"srgb": 1.0})
        self.exposure = exposure
        check_encoding(self.encoding, exposure)
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

    def draw(self, index: int, *, kind: str | None = None, clip_index: int | None = None) -> TrainingWindow:
        """Window ``index`` (depends only on the seed and ``index``). ``kind`` forces a hole kind ("box",
        "strokes", "objects"); ``clip_index`` the clip."""
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
        # a stream of its own, so the windows and holes above stay those of a run without these options
        extra = np.random.default_rng([self.seed, index, 1])
        names = list(self.encoding)
        weights = np.array([self.encoding[n] for n in names], np.float64)
        encoding = names[int(extra.choice(len(names), p=weights / weights.sum()))]
        stops = float(extra.uniform(-self.exposure, self.exposure)) if self.exposure else 0.0
        propagate = extra.random() < self.holes.propagate
        plate = to_plate(np.ascontiguousarray(frames), encoding, stops)
        inputs, unresolved = plate, hole
        if propagate:
            inputs, unresolved = propagate_window(plate, hole)
            if unresolved.sum() < MIN_UNRESOLVED:  # every pixel recovered: train on the whole hole
                inputs, unresolved = plate, hole
        truth = from_plate(plate, encoding)
        given = truth if inputs is plate else from_plate(inputs, encoding)

        def tensor(a: np.ndarray) -> Tensor:
            return (
                torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(3, 0, 1, 2).contiguous()
            )

        return TrainingWindow(
            frames=tensor(truth),
            inputs=tensor(given),
            hole=torch.from_numpy(np.ascontiguousarray(unresolved))[None],
            drawn=torch.from_numpy(hole)[None],
            clip=clip.name,
            encoding=encoding,
        )

    def sample(
        self, index: int, *, kind: str | None = None, clip_index: int | None = None
    ) -> tuple[Tensor, Tensor, str]:
        """Window ``index``: (frames Tensor[3, T, R, R] float32 in [0, 1], hole Tensor[1, T, R, R] 1 = hole,
        clip name), the truth and the network's hole of :meth:`draw`."""
        w = self.draw(index, kind=kind, clip_index=clip_index)
        return w.frames, w.hole, w.clip

    def batch(self, indices: Sequence[int], *, kind: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Stack windows: (inputs Tensor[N, 3, T, R, R], truth Tensor[N, 3, T, R, R], network hole
        Tensor[N, 1, T, R, R]); see :class:`TrainingWindow`."""
        items = [self.draw(i, kind=kind) for i in indices]
        return (
            torch.stack([w.inputs for w in items]),
            torch.stack([w.frames for w in items]),
            torch.stack([w.hole for w in items]),
        )
