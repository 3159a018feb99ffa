"""Measure synthesis on the shot itself: holes of the matte's shape cut into pixels the plate shows.

What no frame shows must be invented, and how well depends on the shot. The plate's own known pixels
hold the truth, so a copy of the matte's unresolved shape, moved beside it onto pixels no frame's
matte touches, can be filled by each candidate and scored against what is really there. The best
candidate fills the real hole, and its score is the expected error a compositor is told before
looking.

Scores are hole MAE in the working range (0-255, shaped values: the units of ``combcn eval`` for
display-referred plates) together with detail (mean |Laplacian| of the fill over the truth's): a
candidate that wins on MAE by blurring is marked down, as a compositor would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]

#: probe holes cut per window (at most)
PROBES = 2
#: a probe may reach past the frame's edge (the part inside is scored) if this share of it is inside
INSIDE = 0.5
#: frames of the window each probe is scored on (spread evenly)
PROBE_FRAMES = 4
#: detail within this band of the truth's costs nothing; outside it the score grows
DETAIL_BAND = (0.85, 1.2)
#: how much each unit of detail outside the band adds to the score (as a fraction of the MAE). A flat
#: fill scores about 0.7x the MAE of the right texture in the wrong phase, so a fill with no detail
#: must cost well over 1/0.7 of its MAE (here 1.85x) not to win by blurring
DETAIL_WEIGHT = 1.0
#: Telea's radius in pixels (OpenCV's)
TELEA_RADIUS = 3
#: the shift-map search runs on the crop scaled down by a whole factor until its hole has at most this
#: many pixels (its graph cut grows faster than the hole: 20-40 s for a 400x200 hole at full size); the
#: offsets it finds are applied at plate resolution, so the fill keeps the plate's own detail
PATCH_PIXELS = 6000
#: the candidates, in the order a tie is broken
METHODS = ("network", "telea", "patch", "network+texture", "telea+texture")
#: the candidates that copy the plate's texture (joined to the border by their level only)
COPIES = ("patch", "network+texture", "telea+texture")
#: the scale (Gaussian sigma, pixels) that splits a fill into its smooth part and its texture
TEXTURE_SIGMA = 1.5


@dataclass(frozen=True)
class Score:
    """One candidate's result on the probe holes.

    Attributes:
        mae: hole MAE, 0-255 of the working range.
        detail: the fill's |Laplacian| over the truth's (1 = as sharp as the plate).
    """

    mae: float
    detail: float

    @property
    def value(self) -> float:
        """MAE, raised where the detail is outside :data:`DETAIL_BAND` (lower is better)."""
        lo, hi = DETAIL_BAND
        off = max(0.0, lo - self.detail) + max(0.0, self.detail - hi)
        return self.mae * (1.0 + DETAIL_WEIGHT * off)


@dataclass(frozen=True)
class Verdict:
    """What the probes chose for a window, and the expected error of its synthesised pixels.

    Attributes:
        method: ``"network"``, ``"telea"``, ``"patch"``, or one of the first two with the texture of
            the third (``"network+texture"``, ``"telea+texture"``: :func:`add_texture`).
        expected: the chosen candidate's hole MAE on the probes (0-255 of the working range).
        scores: every candidate's score.
        probes: how many probe holes were cut.
    """

    method: str
    expected: float
    scores: dict[str, Score]
    probes: int


def placements(
    box: Box, height: int, width: int, free: Callable[[Box], bool], count: int = PROBES
) -> list[tuple[int, int]]:
    """Shifts (dy, dx) that move ``box`` beside itself onto free pixels: left, right, above, below,
    then the diagonals, nearest first; at most ``count``. A moved box may reach past the frame's edge
    where :data:`INSIDE` of it stays inside (wide holes leave no room for a whole copy).

    Args:
        box: the unresolved pixels' box ``(y0, y1, x0, x1)`` in plate pixels.
        free: says whether a box (plate pixels) is clear of every frame's matte.
    """
    y0, y1, x0, x1 = box
    bh, bw = y1 - y0, x1 - x0
    gap = max(8, round(0.25 * max(bh, bw)))
    steps_y, steps_x = bh + gap, bw + gap
    shifts = [(0, -steps_x), (0, steps_x), (-steps_y, 0), (steps_y, 0)]
    shifts += [(sy, sx) for sy in (-steps_y, steps_y) for sx in (-steps_x, steps_x)]
    out = []
    for dy, dx in shifts:
        moved = (y0 + dy, y1 + dy, x0 + dx, x1 + dx)
        rows = max(0, min(height, moved[1]) - max(0, moved[0]))
        columns = max(0, min(width, moved[3]) - max(0, moved[2]))
        if rows * columns == 0 or rows * columns < INSIDE * bh * bw:
            continue
        grown = (
            max(0, moved[0] - gap),
            min(height, moved[1] + gap),
            max(0, moved[2] - gap),
            min(width, moved[3] + gap),
        )
        if free(grown):
            out.append((dy, dx))
        if len(out) == count:
            break
    return out


def detail_of(values: np.ndarray, hole: np.ndarray) -> float:
    """Mean |Laplacian| of the grey of ``values`` (ndarray[h, w, 3]) over the hole's interior (the
    pixels whose four neighbours are in the hole too; the whole hole where it is thinner)."""
    grey = values.mean(axis=2).astype(np.float32)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))
    inner = cv2.erode(hole.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0) > 0
    where = inner if inner.any() else hole
    return float(lap[where].mean()) if where.any() else 0.0


def score(fills: list[np.ndarray], truths: list[np.ndarray], holes: list[np.ndarray]) -> Score:
    """Hole MAE (0-255) and detail ratio of fills against their truths, over all frames' holes.

    Args:
        fills, truths (ndarray[h, w, 3], working units in [0, 1]): per frame, over the same box.
        holes (ndarray[h, w] bool): the probe's pixels.
    """
    errors = [np.abs(f - t)[h] for f, t, h in zip(fills, truths, holes, strict=True) if h.any()]
    if not errors:
        return Score(0.0, 1.0)
    mae = float(np.concatenate(errors).mean()) * 255.0
    own = sum(detail_of(f, h) for f, h in zip(fills, holes, strict=True))
    truth = sum(detail_of(t, h) for t, h in zip(truths, holes, strict=True))
    return Score(mae, own / truth if truth > 0 else 1.0)


def telea(values: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """OpenCV's Telea fill of ``hole`` in ``values`` (ndarray[h, w, 3] float32, working units in
    [0, 1]), each channel on its own in 16 bits (OpenCV's float path overshoots on wide holes, up to
    twice the values around them; 8 bits would band): ndarray[h, w, 3] float32."""
    mask = hole.astype(np.uint8)
    top = 65535.0
    out = np.empty(values.shape, np.float32)
    for c in range(values.shape[2]):
        channel = np.rint(np.clip(values[..., c], 0.0, 1.0) * top).astype(np.uint16)
        out[..., c] = cv2.inpaint(channel, mask, TELEA_RADIUS, cv2.INPAINT_TELEA).astype(np.float32) / top
    out[~hole] = values[~hole]
    return out


def patch_offsets(values: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Where each hole pixel copies its value from: a shift-map completion (OpenCV xphoto's
    ``INPAINT_SHIFTMAP``: the dominant offsets between similar patches of the image, arranged by a
    graph cut into regions that join with the least seam), searched at a scale where the hole holds at
    most :data:`PATCH_PIXELS` pixels and read back as offsets at full size.

    Args:
        values (ndarray[h, w, 3] float32): the crop, working units in [0, 1].
        hole (ndarray[h, w] bool): the pixels to fill.

    Returns:
        ndarray[h, w, 2] int32: (dy, dx) per pixel, 0 outside the hole; a hole pixel whose source
        ``(y + dy, x + dx)`` is in the hole or equal to itself has no source (:func:`apply_offsets`).
    """
    h, w = hole.shape
    offsets = np.zeros((h, w, 2), np.int32)
    if not hole.any():
        return offsets
    s = max(1, int(np.ceil(np.sqrt(hole.sum() / PATCH_PIXELS))))
    hs, ws = h // s, w // s
    if hs < 3 or ws < 3:
        return offsets
    small = cv2.resize(values[: hs * s, : ws * s], (ws, hs), interpolation=cv2.INTER_AREA)
    # a low-resolution pixel is hole where any of its block is, grown by one so that every full-size
    # hole pixel's block is hole and every source block is wholly known
    block = np.asarray(hole[: hs * s, : ws * s].reshape(hs, s, ws, s).any(axis=(1, 3)), np.uint8)
    small_hole = cv2.dilate(block, np.ones((3, 3), np.uint8)) > 0
    if small_hole.all():
        return offsets
    # a tiny value unique to each known pixel makes the copy it ends up in say where it came from
    # (fixed seed: the same crop gives the same fill, as farm chunks must)
    noise = np.asarray(np.random.default_rng(0).uniform(0.0, 1e-4, size=small.shape), np.float32)
    src = np.ascontiguousarray(np.clip(small, 0.0, 1.0) + noise, dtype=np.float32)
    src[small_hole] = 0.0
    out = np.zeros_like(src)
    cv2.xphoto.inpaint(src, (~small_hole).astype(np.uint8) * 255, out, cv2.xphoto.INPAINT_SHIFTMAP)
    ky, kx = np.nonzero(~small_hole)
    where = {src[y, x].tobytes(): (y, x) for y, x in zip(ky.tolist(), kx.tolist(), strict=True)}
    small_offsets = np.zeros((hs, ws, 2), np.int32)
    for y, x in zip(*np.nonzero(small_hole), strict=True):
        found = where.get(out[y, x].tobytes())
        if found is not None:
            small_offsets[y, x] = (found[0] - y, found[1] - x)
    ys, xs = np.nonzero(hole)
    by, bx = np.minimum(ys // s, hs - 1), np.minimum(xs // s, ws - 1)
    offsets[ys, xs] = small_offsets[by, bx] * s
    return offsets


def apply_offsets(values: np.ndarray, hole: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (ndarray[h, w, C]) with each ``hole`` pixel copied from ``(y + dy, x + dx)``
    (:func:`patch_offsets`). Returns (the filled copy, bool[h, w]: hole pixels left without a known
    source, unchanged in the copy)."""
    out = values.copy()
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    sy = np.clip(ys + offsets[ys, xs, 0], 0, h - 1)
    sx = np.clip(xs + offsets[ys, xs, 1], 0, w - 1)
    good = ~hole[sy, sx]
    out[ys[good], xs[good]] = values[sy[good], sx[good]]
    missing = np.zeros_like(hole)
    missing[ys[~good], xs[~good]] = True
    return out, missing


def patch(values: np.ndarray, hole: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """The shift-map fill of ``hole`` in ``values`` (ndarray[h, w, 3] float32, working units in
    [0, 1]) at full resolution, from ``offsets`` (found on these values where not given); pixels left
    without a source get Telea's fill: ndarray[h, w, 3] float32."""
    if offsets is None:
        offsets = patch_offsets(values, hole)
    out, missing = apply_offsets(values, hole, offsets)
    if missing.any():
        out[missing] = telea(out, missing)[missing]
    return out


def add_texture(smooth: np.ndarray, patched: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """``smooth``'s fill of ``hole`` with its fine detail replaced by ``patched``'s: the part of each
    below :data:`TEXTURE_SIGMA` (the shape and level: a smooth fill's error is lowest there) plus the
    part of the plate's copy above it (the texture a smooth fill lacks). Both ndarray[h, w, 3] float32
    over the same pixels, working units; pixels outside the hole are ``smooth``'s. The sum stays within
    the range of values the two show (a dark grain over a dark level would otherwise go past black)."""
    low = cv2.GaussianBlur(smooth, (0, 0), TEXTURE_SIGMA)
    fine = patched - cv2.GaussianBlur(patched, (0, 0), TEXTURE_SIGMA)
    lo = np.minimum(smooth.min(axis=(0, 1)), patched.min(axis=(0, 1)))
    hi = np.maximum(smooth.max(axis=(0, 1)), patched.max(axis=(0, 1)))
    out: np.ndarray = np.where(hole[..., None], np.clip(low + fine, lo, hi), smooth).astype(np.float32)
    return out


def choose(scores: dict[str, Score], probes: int) -> Verdict:
    """The candidate with the lowest :attr:`Score.value` (on a tie, the first of :data:`METHODS`)."""
    order = {name: i for i, name in enumerate(METHODS)}
    best = min(scores, key=lambda name: (scores[name].value, order.get(name, len(order))))
    return Verdict(best, scores[best].mae, scores, probes)
