"""Where the model looks: temporal windows with cross-fades and the spatial crop around the hole.

Temporal: a sequence of ``n`` frames is covered by windows of the model's length ``L`` that overlap
by ``overlap`` frames; in an overlap each frame's fill is a weighted mean of both windows' fills with
linear ramps (a cross-fade), so there is no seam. The last window is aligned to the end of the
sequence, so it may start inside its predecessor by more than ``overlap``: the frames before its
own overlap are its *lead*, read as context (the network sees them, propagation takes pixels from
them) but neither propagated nor written, since its predecessor fills them alone. The grid is
anchored at the first frame of the sequence, not of the frames being written, so a chunk of a farm
render computes exactly the same windows as a single render does.

Spatial: each window sees one crop (the same for all its frames, so the 3D convolutions see a
steady picture) around the union of its frames' holes plus a context margin, scaled so its area is
about the model's working resolution squared, with sides multiples of 8 (paper §3: 128 x 128 input).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from combcn.errors import InputError


@dataclass(frozen=True)
class Window:
    """Frames ``start`` .. ``end - 1`` (sequence positions), how many it shares with each neighbour, and
    how many at its start are context only (``lead``: its predecessor fills them alone)."""

    start: int
    end: int
    previous_overlap: int = 0
    next_overlap: int = 0
    lead: int = 0

    @property
    def first(self) -> int:
        """The first position the window fills (``start + lead``)."""
        return self.start + self.lead

    def weight(self, position: int) -> float:
        """Cross-fade weight of the frame at ``position``: (0, 1] where the window fills it, 0 in its
        lead; the weights of the windows filling a frame sum to 1."""
        if position < self.first:
            return 0.0
        w = 1.0
        if self.previous_overlap:
            w = min(w, (position - self.first + 1) / (self.previous_overlap + 1))
        if self.next_overlap:
            w = min(w, (self.end - position) / (self.next_overlap + 1))
        return w


def plan_windows(n: int, length: int, overlap: int) -> list[Window]:
    """Cover positions ``0 .. n-1`` with windows of ``length`` frames overlapping by ``overlap``.

    The last window is aligned to the end; where that puts it more than ``overlap`` frames inside its
    predecessor, the extra frames are its lead (context only) and the two cross-fade over ``overlap``
    frames as every other pair does. A sequence shorter than ``length`` is one window.
    """
    if n <= 0:
        return []
    length = max(1, int(length))
    overlap = max(0, min(int(overlap), length - 1))
    if n <= length:
        return [Window(0, n)]
    starts = sorted(set(list(range(0, n - length, length - overlap)) + [n - length]))
    windows = []
    for i, s in enumerate(starts):
        prev_ov = min(overlap, starts[i - 1] + length - s) if i > 0 else 0
        next_ov = min(overlap, s + length - starts[i + 1]) if i + 1 < len(starts) else 0
        lead = starts[i - 1] + length - s - prev_ov if i > 0 else 0
        windows.append(Window(s, s + length, prev_ov, next_ov, lead))
    return windows


@dataclass(frozen=True)
class Crop:
    """A plate region ``[y0:y1, x0:x1]`` and the working size ``(height, width)`` it is scaled to."""

    y0: int
    y1: int
    x0: int
    x1: int
    height: int
    width: int

    @property
    def scaled(self) -> bool:
        return (self.y1 - self.y0, self.x1 - self.x0) != (self.height, self.width)


def _round8(v: float) -> int:
    return max(8, int(round(v / 8.0)) * 8)


def _place(lo: int, hi: int, size: int, limit: int) -> tuple[int, int]:
    """An interval of ``size`` centred on [lo, hi), shifted to stay inside [0, limit)."""
    size = min(size, limit)
    start = (lo + hi) // 2 - size // 2
    start = min(max(0, start), limit - size)
    return start, start + size


def plan_crop(
    hole_box: tuple[int, int, int, int],
    plate_height: int,
    plate_width: int,
    *,
    resolution: int,
    margin: float,
) -> Crop:
    """The crop a window's model sees.

    Args:
        hole_box: ``(y0, y1, x0, x1)`` union of the window's holes (end exclusive).
        plate_height, plate_width: plate (data window) size.
        resolution: the model's working size (128): crops are scaled to about this squared in area
            and never smaller than it (small holes get at least this much context, unscaled).
        margin: context around the hole as a fraction of the hole box's longer side.
    """
    if plate_height < 8 or plate_width < 8:
        raise InputError(f"the plate is {plate_width}x{plate_height}; combcn needs at least 8x8 pixels")
    y0, y1, x0, x1 = hole_box
    pad = int(math.ceil(margin * max(y1 - y0, x1 - x0))) + 8
    want_h = max(y1 - y0 + 2 * pad, resolution)
    want_w = max(x1 - x0 + 2 * pad, resolution)
    scale = min(1.0, resolution / math.sqrt(want_h * want_w))
    if scale >= 1.0:
        # Unscaled: make the sides multiples of 8 by taking a little more context where the plate allows.
        want_h, want_w = _round8(want_h + 3.999), _round8(want_w + 3.999)
    cy0, cy1 = _place(y0, y1, want_h, plate_height)
    cx0, cx1 = _place(x0, x1, want_w, plate_width)
    h, w = cy1 - cy0, cx1 - cx0
    if scale >= 1.0 and h % 8 == 0 and w % 8 == 0:
        return Crop(cy0, cy1, cx0, cx1, h, w)
    scale = min(1.0, resolution / math.sqrt(h * w))
    return Crop(cy0, cy1, cx0, cx1, _round8(h * scale), _round8(w * scale))


def frames_read(
    frames_on_disk: Iterable[int],
    targets: Iterable[int],
    window: int = 32,
    overlap: int | None = None,
    context: int | None = None,
    reach: int = 0,
) -> list[int]:
    """The frames ``render_sequence`` reads from a plate to write ``targets``: what a host pre-renders.

    The same plan as the engine's own (windows of the grid anchored at the first frame on disk that
    touch a target, clipped to ``context`` frames around the targets), in frame numbers.

    Args:
        frames_on_disk: frame numbers of the plate sequence (any order; duplicates ignored).
        targets: frame numbers to write; each must be in ``frames_on_disk``.
        window: frames per temporal window of the model (``Engine.window``; 32 for the shipped weights).
        overlap: frames shared by consecutive windows; None = a quarter of ``window`` (``--overlap``).
        context: at most this many frames read beyond the targets; None = what the grid needs
            (``--context``).
        reach: frames read beyond the windows on each side for propagation (``--reach``; 0 = none).

    Returns:
        list[int]: the frames read, ascending (a contiguous run of ``frames_on_disk``); [] for no targets.

    Raises:
        InputError: a target is not in ``frames_on_disk``.
    """
    seq = sorted(set(int(f) for f in frames_on_disk))
    wanted = sorted(set(int(f) for f in targets))
    positions = {f: i for i, f in enumerate(seq)}
    missing = [f for f in wanted if f not in positions]
    if missing:
        raise InputError(f"frame(s) {missing[:5]} to write are not among the plate's frames")
    if not wanted:
        return []
    picked = [positions[f] for f in wanted]
    lo, hi = 0, len(seq)
    if context is not None:
        lo, hi = max(0, picked[0] - context), min(len(seq), picked[-1] + 1 + context)
    length = max(1, int(window))
    chosen = set(picked)
    spans = [
        (max(w.start, lo), min(w.end, hi))
        for w in plan_windows(len(seq), length, length // 4 if overlap is None else overlap)
        if any(p in chosen for p in range(w.first, w.end))
    ]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    return seq[max(0, first - max(0, int(reach))) : last + max(0, int(reach))]
