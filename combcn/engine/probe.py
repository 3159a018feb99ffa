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
#: the sizes a probe is tried at, as divisors of the unresolved pixels' box: where the shape does not
#: fit beside the matte at full size (a box over half the frame), it is measured at half size
SCALES = (1, 2)
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
#: many pixels; the offsets it finds are applied at plate resolution, so the fill keeps the plate's
#: own detail
PATCH_PIXELS = 6000
#: the patch side (pixels, at the search's scale) whose matches give the dominant offsets
PATCH = 8
#: how many of the most frequent offsets a hole pixel chooses from
OFFSETS = 40
#: the cost of a seam between two copies (squared working units), beside their disagreement there:
#: fewer, larger copied regions
SEAM = 0.2
#: the candidates, in the order a tie is broken
METHODS = ("network", "telea", "blend", "patch", "network+texture", "telea+texture", "blend+texture")
#: the candidates that copy the plate's texture (joined to the border by their level only)
COPIES = ("patch", "network+texture", "telea+texture", "blend+texture")
#: the scale (Gaussian sigma, pixels) that splits a fill into its smooth part and its texture
TEXTURE_SIGMA = 0.8
#: the band (pixels) around a hole whose detail a copy's texture is brought to
RING = 8
#: the least and most a copy's texture is scaled by to meet the ring's detail
TEXTURE_GAIN = (0.0, 2.0)


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
        method: ``"network"``, ``"telea"``, ``"blend"`` (the mean of the two: :func:`mean_fill`),
            ``"patch"``, or one of the first three with the texture of the fourth
            (``"network+texture"``, ``"telea+texture"``, ``"blend+texture"``: :func:`add_texture`).
        expected: the chosen candidate's hole MAE on the probes (0-255 of the working range).
        scores: every candidate's score.
        probes: how many probe holes were cut.
        scale: the probes' size, as a divisor of the unresolved pixels' (:data:`SCALES`).
    """

    method: str
    expected: float
    scores: dict[str, Score]
    probes: int
    scale: int = 1


def placements(
    box: Box, height: int, width: int, free: Callable[[Box], bool], count: int = PROBES, scale: int = 1
) -> list[tuple[int, int]]:
    """Where a probe of ``box``'s shape, shrunk by ``scale``, fits beside ``box`` on free pixels: left,
    right, above, below, then the diagonals, nearest first; at most ``count``. Each is the shift
    (dy, dx) from ``box``'s top-left corner to the probe's (:func:`probe_size` gives its size; at
    ``scale`` 1 the shift that moves ``box`` itself there). A probe may reach past the frame's edge
    where :data:`INSIDE` of it stays inside (wide holes leave no room for a whole copy).

    Args:
        box: the unresolved pixels' box ``(y0, y1, x0, x1)`` in plate pixels.
        free: says whether a box (plate pixels) is clear of every frame's matte.
    """
    y0, y1, x0, x1 = box
    bh, bw = y1 - y0, x1 - x0
    ph, pw = probe_size(box, scale)
    gap = max(8, round(0.25 * max(ph, pw)))
    above, below = -(ph + gap), bh + gap
    left, right = -(pw + gap), bw + gap
    middle_y, middle_x = (bh - ph) // 2, (bw - pw) // 2
    shifts = [(middle_y, left), (middle_y, right), (above, middle_x), (below, middle_x)]
    shifts += [(sy, sx) for sy in (above, below) for sx in (left, right)]
    out = []
    for dy, dx in shifts:
        moved = (y0 + dy, y0 + dy + ph, x0 + dx, x0 + dx + pw)
        rows = max(0, min(height, moved[1]) - max(0, moved[0]))
        columns = max(0, min(width, moved[3]) - max(0, moved[2]))
        if rows * columns == 0 or rows * columns < INSIDE * ph * pw:
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


def probe_size(box: Box, scale: int) -> tuple[int, int]:
    """(height, width) of a probe of ``box``'s shape shrunk by ``scale``."""
    return -(-(box[1] - box[0]) // scale), -(-(box[3] - box[2]) // scale)


def shrink(hole: np.ndarray, scale: int) -> np.ndarray:
    """``hole`` (bool[h, w]) shrunk by ``scale`` to :func:`probe_size`: a pixel is in the probe where
    at least half of what it covers is, or where any of it is if that leaves nothing (a thin stroke)
    (bool[ceil(h / scale), ceil(w / scale)])."""
    if scale == 1:
        return hole
    h, w = -(-hole.shape[0] // scale), -(-hole.shape[1] // scale)
    shrunk = cv2.resize(hole.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    out: np.ndarray = shrunk >= 0.5
    if not out.any():
        out = shrunk > 0.0
    return out


#: the columns of a box :func:`around` returns start on a multiple of this and span a multiple of it
#: (or reach the array's last column), so that OpenCV's vectorised filters meet the same column groups
#: and row ends over it as over the whole array: a float Gaussian run over a box of any other columns
#: differed in the last bit on 12 of 1500 random boxes, over such boxes on none
COLUMN_GROUP = 32


def around(hole: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """The rows and columns of ``hole``'s (bool[h, w]) bounding box grown by ``margin`` pixels (the
    columns widened to :data:`COLUMN_GROUP`), within the array; None where the hole is empty. A filter
    of radius up to ``margin`` gives the hole's pixels the same values over these as over the whole
    array (a hole on the array's edge keeps that edge)."""
    rows = np.flatnonzero(hole.any(axis=1))
    if not len(rows):
        return None
    columns = np.flatnonzero(hole.any(axis=0))
    h, w = hole.shape
    x0 = max(0, int(columns[0]) - margin)
    x0 -= x0 % COLUMN_GROUP
    x1 = int(columns[-1]) + 1 + margin
    x1 = min(w, x1 + (-(x1 - x0)) % COLUMN_GROUP)
    return slice(max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)), slice(x0, x1)


#: how far (pixels) :func:`detail_of`'s Laplacian and erosion read around a hole; ``BLUR_MARGIN`` adds
#: the reach of the Gaussian of :data:`TEXTURE_SIGMA` (3 pixels at OpenCV's kernel size for it) and one
DETAIL_MARGIN = 2
BLUR_MARGIN = DETAIL_MARGIN + 4


def detail_of(values: np.ndarray, hole: np.ndarray) -> float:
    """Mean |Laplacian| of the grey of ``values`` (ndarray[h, w, 3]) over the hole's interior (the
    pixels whose four neighbours are in the hole too; the whole hole where it is thinner). Computed
    over the hole's box alone (:func:`around`)."""
    box = around(hole, DETAIL_MARGIN)
    if box is None:
        return 0.0
    values, hole = values[box], hole[box]
    grey = values.mean(axis=2).astype(np.float32)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1))
    inner = cv2.erode(hole.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0) > 0
    where = inner if inner.any() else hole
    return float(lap[where].mean()) if where.any() else 0.0


def ring_detail(values: np.ndarray, hole: np.ndarray) -> float | None:
    """Mean |Laplacian| of the grey of ``values`` (ndarray[h, w, 3]) over the band of :data:`RING`
    pixels around ``hole`` (bool[h, w]; the band's own interior, as :func:`detail_of` reads a hole):
    how much detail the plate shows beside the hole. None where there is no such band."""
    side = 2 * RING + 1
    grown = cv2.dilate(hole.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
    band = grown & ~hole
    if not band.any():
        return None
    return detail_of(values, band)


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
    twice the values around them; 8 bits would band): ndarray[h, w, 3] float32. Run over the hole's box
    and the band Telea reads around it (its radius, and its marching's own band), which gives the
    whole frame's result at a fraction of its cost on a wide crop."""
    out = np.array(values, np.float32)
    box = around(hole, TELEA_RADIUS + 2)
    if box is None:
        return out
    inside = hole[box]
    mask = inside.astype(np.uint8)
    top = 65535.0
    part = out[box]  # (a view: written in place)
    for c in range(values.shape[2]):
        channel = np.rint(np.clip(values[box][..., c], 0.0, 1.0) * top).astype(np.uint16)
        filled = cv2.inpaint(channel, mask, TELEA_RADIUS, cv2.INPAINT_TELEA).astype(np.float32) / top
        part[..., c][inside] = filled[inside]
    return out


def mean_fill(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The mean of two fills of the same pixels (ndarray[h, w, 3] float32). Where neither fill can
    know what is there, two guesses whose errors differ (the network's learnt structure, Telea's
    diffusion of the border) err less together than either alone: measured on the probe holes of
    locked-off clips, 0.75 less hole MAE than Telea and 0.62 less than the network on average, lower
    than each in 6 probe sets of 9."""
    out: np.ndarray = (0.5 * (first + second)).astype(np.float32)
    return out


def patch_offsets(values: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Where each hole pixel copies its value from: a shift-map completion after He and Sun's
    statistics of patch offsets. Similar patches of the known pixels are matched, the offsets that
    occur most often between them are kept (:func:`dominant_offsets`: the shot's own repetitions),
    and each hole pixel takes one of them, chosen so that neighbouring copies agree where they meet
    and the copies continue the pixels around the hole (:func:`arrange_offsets`). Searched at a scale
    where the hole holds at most :data:`PATCH_PIXELS` pixels, applied at full size. Deterministic.

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
    small = np.clip(cv2.resize(values[: hs * s, : ws * s], (ws, hs), interpolation=cv2.INTER_AREA), 0.0, 1.0)
    # a low-resolution pixel is hole where any of its block is, grown by one so that every full-size
    # hole pixel's block is hole and every source block is wholly known
    block = np.asarray(hole[: hs * s, : ws * s].reshape(hs, s, ws, s).any(axis=(1, 3)), np.uint8)
    small_hole = cv2.dilate(block, np.ones((3, 3), np.uint8)) > 0
    if small_hole.all():
        return offsets
    # the shot's dominant offsets, and the shifts that reach past the hole's box on each side (the
    # middle of a wide hole has no source a short offset away)
    hy, hx = np.nonzero(small_hole)
    bh, bw = int(hy.max() - hy.min()) + 1, int(hx.max() - hx.min()) + 1
    beside = [(dy, dx) for dy in (-bh, 0, bh) for dx in (-bw, 0, bw) if (dy, dx) != (0, 0)]
    dominant = dominant_offsets(small, small_hole)
    # and the strongest offsets repeated until they reach past the hole (a pattern's period, carried)
    for dy, dx in dominant[:4].tolist():
        reach = max(bh, bw) // max(1, abs(dy), abs(dx)) + 1
        beside += [(k * dy, k * dx) for k in range(2, min(reach, 12) + 1)]
    candidates = np.unique(np.concatenate([dominant, np.array(beside, np.int32)]), axis=0)
    small_offsets = arrange_offsets(small, small_hole, candidates)
    ys, xs = np.nonzero(hole)
    by, bx = np.minimum(ys // s, hs - 1), np.minimum(xs // s, ws - 1)
    offsets[ys, xs] = small_offsets[by, bx] * s
    return offsets


def dominant_offsets(values: np.ndarray, hole: np.ndarray, count: int = OFFSETS) -> np.ndarray:
    """The offsets that occur most often between a known patch and its most similar known patch
    (at least a patch away): ndarray[k, 2] int32 (dy, dx), most frequent first, k <= ``count``.

    Patches of :data:`PATCH` pixels on a grid of half that step, compared on their 2x2-block means;
    the offsets' histogram is smoothed and its local peaks kept."""
    h, w = hole.shape
    p, step = PATCH, max(1, PATCH // 2)
    known = ~hole
    # top-left corners of wholly known patches (an integral image counts the hole pixels in each)
    counts = cv2.integral(hole.astype(np.uint8))
    ys, xs = np.mgrid[0 : h - p + 1 : step, 0 : w - p + 1 : step]
    ys, xs = ys.ravel(), xs.ravel()
    inside = counts[ys + p, xs + p] - counts[ys, xs + p] - counts[ys + p, xs] + counts[ys, xs]
    ys, xs = ys[inside == 0], xs[inside == 0]
    if len(ys) < 2 or not known.any():
        return np.zeros((0, 2), np.int32)
    # each patch as its 2x2-block means: a quarter of the numbers, most of what tells patches apart
    coarse = cv2.resize(values, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    half = p // 2
    features = np.stack(
        [coarse[y // 2 : y // 2 + half, x // 2 : x // 2 + half].ravel() for y, x in zip(ys, xs, strict=True)]
    ).astype(np.float32)
    norms = (features**2).sum(axis=1)
    near = np.empty(len(features), np.int64)
    for i in range(0, len(features), 1024):
        part = features[i : i + 1024]
        d = norms[i : i + 1024, None] + norms[None] - 2.0 * part @ features.T
        close = (np.abs(ys[i : i + 1024, None] - ys[None]) < p) & (
            np.abs(xs[i : i + 1024, None] - xs[None]) < p
        )
        d[close] = np.inf
        # among equally close matches (a repeating pattern), the nearest
        d += 1e-6 * ((ys[i : i + 1024, None] - ys[None]) ** 2 + (xs[i : i + 1024, None] - xs[None]) ** 2)
        near[i : i + 1024] = np.argmin(d, axis=1)
    dy, dx = ys[near] - ys, xs[near] - xs
    histogram = np.zeros((2 * h + 1, 2 * w + 1), np.float32)
    np.add.at(histogram, (dy + h, dx + w), 1.0)
    histogram = cv2.GaussianBlur(histogram, (0, 0), np.sqrt(2.0))
    peaks = (histogram == cv2.dilate(histogram, np.ones((3, 3), np.uint8))) & (histogram > 0)
    py, px = np.nonzero(peaks)
    order = np.lexsort((px, py, -histogram[py, px]))[:count]
    return np.stack([py[order] - h, px[order] - w], axis=1).astype(np.int32)


def arrange_offsets(
    values: np.ndarray, hole: np.ndarray, candidates: np.ndarray, sweeps: int = 3
) -> np.ndarray:
    """One of ``candidates`` (ndarray[k, 2]) per hole pixel of ``values`` (ndarray[h, w, 3]): the copy
    whose source is known and that agrees best with its four neighbours, the known ones (the copy
    continues them) and the filled ones (where two copies meet, both sources should show the same
    thing on both sides of the seam). Filled from the hole's edge inwards, one ring at a time, then
    ``sweeps`` passes of the same choice over a checkerboard. Returns ndarray[h, w, 2] int32."""
    h, w = hole.shape
    ys, xs = np.nonzero(hole)
    n = len(ys)
    index = np.full((h, w), -1, np.int64)
    index[ys, xs] = np.arange(n)
    # each candidate's source for each hole pixel, and whether it is a known pixel
    sy = ys[:, None] + candidates[None, :, 0]
    sx = xs[:, None] + candidates[None, :, 1]
    valid = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    sy, sx = np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)
    valid &= ~hole[sy, sx]
    copies = values[sy, sx]  # [n, k, 3]
    steps = ((-1, 0), (1, 0), (0, -1), (0, 1))
    labels = np.full(n, -1, np.int64)

    def costs(which: np.ndarray) -> np.ndarray:
        """Cost of each candidate for the hole pixels ``which`` (indices), given the labels so far."""
        total = np.where(valid[which], 0.0, np.inf)
        for dy, dx in steps:
            qy, qx = ys[which] + dy, xs[which] + dx
            onto = (qy >= 0) & (qy < h) & (qx >= 0) & (qx < w)
            qy, qx = np.clip(qy, 0, h - 1), np.clip(qx, 0, w - 1)
            q = index[qy, qx]
            # a known neighbour: the copy's pixel beside the source should be that neighbour
            ny = np.clip(sy[which] + dy, 0, h - 1)
            nx = np.clip(sx[which] + dx, 0, w - 1)
            beside = values[ny, nx]  # [m, k, 3]
            is_known = onto & (q < 0)
            err = ((beside - values[qy, qx][:, None]) ** 2).sum(-1)
            total += np.where(is_known[:, None], err, 0.0)
            # a filled neighbour with label b: the two copies should agree at both pixels
            labelled = onto & (q >= 0)
            b = np.where(labelled, labels[np.maximum(q, 0)], -1)
            has = labelled & (b >= 0)
            if has.any():
                rows = np.nonzero(has)[0]
                bb = b[rows]
                qq = q[rows]
                here = ((copies[which[rows]] - copies[which[rows], bb][:, None]) ** 2).sum(-1)
                there = ((copies[qq] - copies[qq, bb][:, None]) ** 2).sum(-1)
                pair = here + there + SEAM
                pair[~valid[qq, bb]] = SEAM
                pair[np.arange(len(rows)), bb] = 0.0  # the same copy on both sides: no seam
                total[rows] += pair
        return total

    def choose(which: np.ndarray) -> None:
        if len(which):
            labels[which] = np.argmin(costs(which), axis=1)

    distance = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L1, 3)[ys, xs]
    for ring in np.unique(distance):
        choose(np.nonzero(distance == ring)[0])
    parity = (ys + xs) % 2
    for _ in range(sweeps):
        for colour in (0, 1):
            choose(np.nonzero(parity == colour)[0])
    out = np.zeros((h, w, 2), np.int32)
    ok = valid[np.arange(n), labels]
    out[ys[ok], xs[ok]] = candidates[labels[ok]]
    return out


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


def copy_texture(
    values: np.ndarray, hole: np.ndarray, offsets: np.ndarray, exclude: np.ndarray | None = None
) -> np.ndarray:
    """The plate's texture (``values``'s part above :data:`TEXTURE_SIGMA`, ndarray[h, w, 3]) copied
    into ``hole`` along ``offsets`` (:func:`patch_offsets`); 0 where a hole pixel has no known source.
    Each pixel carries its source's own fine detail: taking the texture of the copy instead would turn
    every seam between two copied regions into an edge (real shots' copies have a seam within a pixel
    of 37-71 % of their hole pixels). The texture is taken from the known pixels alone (``exclude``,
    bool[h, w], default ``hole``, is left out of the blur it is measured against): what the matte
    covers, or the black of an emptied hole, must not put its edge into the sources beside it."""
    return copy_fine(fine_of(values, hole if exclude is None else exclude), hole, offsets)


def fine_of(values: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """The texture :func:`copy_texture` copies: ``values``'s part above :data:`TEXTURE_SIGMA`, measured
    against a blur of the pixels outside ``exclude`` alone, 0 at ``exclude`` (ndarray[h, w, 3] float32).
    It depends on ``values`` outside ``exclude`` alone."""
    known = (~exclude).astype(np.float32)
    weight = np.maximum(cv2.GaussianBlur(known, (0, 0), TEXTURE_SIGMA), 1e-6)
    low = cv2.GaussianBlur(values * known[..., None], (0, 0), TEXTURE_SIGMA) / weight[..., None]
    fine: np.ndarray = ((values - low) * known[..., None]).astype(np.float32)
    return fine


def copy_fine(fine: np.ndarray, hole: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``fine`` (:func:`fine_of`) copied into ``hole`` along ``offsets``; 0 where a hole pixel has no
    known source (ndarray[h, w, 3] float32)."""
    out, missing = apply_offsets(fine, hole, offsets)
    out[missing] = 0.0
    return out


def value_range(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The least and the most value per channel of ``values`` (ndarray[h, w, 3]) at ``where``
    (bool[h, w]), as ndarray[2, 3] (what :func:`add_texture` reads of ``within``); empty where nothing
    is."""
    if not where.any():
        return np.zeros((0, 3), values.dtype)
    mask = where.astype(np.uint8)
    # (OpenCV's masked search, exact: twenty times faster than NumPy's gather or masked reductions)
    found = [cv2.minMaxLoc(np.ascontiguousarray(values[..., c]), mask)[:2] for c in range(values.shape[2])]
    return np.array(found, values.dtype).T


def add_texture(
    smooth: np.ndarray,
    texture: np.ndarray,
    hole: np.ndarray,
    gain: float = 1.0,
    within: np.ndarray | None = None,
) -> np.ndarray:
    """``smooth``'s fill of ``hole`` with its fine detail replaced by ``texture`` times ``gain``: its
    part below :data:`TEXTURE_SIGMA` (the shape and level: a smooth fill's error is lowest there) plus
    the plate's copied texture (:func:`copy_texture`), which a smooth fill lacks. Both ndarray[h, w, 3]
    float32 over the same pixels, working units; pixels outside the hole are ``smooth``'s. The sum
    stays within the range of values ``smooth`` and ``within`` (the plate's pixels, any shape with 3
    channels last) show: a dark grain over a dark level would otherwise go past black. Computed over
    the hole's box (:func:`around`)."""
    lo, hi = smooth.min(axis=(0, 1)), smooth.max(axis=(0, 1))
    if within is not None and within.size:
        lo = np.minimum(lo, within.reshape(-1, 3).min(axis=0))
        hi = np.maximum(hi, within.reshape(-1, 3).max(axis=0))
    out: np.ndarray = np.array(smooth, np.float32)
    box = around(hole, BLUR_MARGIN)
    if box is None:
        return out
    low = cv2.GaussianBlur(smooth[box], (0, 0), TEXTURE_SIGMA)
    out[box] = np.where(hole[box][..., None], np.clip(low + gain * texture[box], lo, hi), smooth[box])
    return out


def texture_gain(smooth: np.ndarray, texture: np.ndarray, hole: np.ndarray, target: float | None) -> float:
    """The factor on ``texture`` (:func:`add_texture`) that gives ``hole`` the detail ``target`` (mean
    |Laplacian| of the grey, working units: :func:`ring_detail` of the plate around the hole), within
    :data:`TEXTURE_GAIN`; 1 without a target. A copy from a smoother or busier place, or from a median
    of frames (which has lost the grain each frame shows), meets the detail around the hole. The smooth
    part's and the texture's |Laplacian|s are taken to add in quadrature, then the factor is corrected
    once by the detail it gives."""
    if target is None:
        return 1.0
    box = around(hole, BLUR_MARGIN)
    if box is None:
        return 1.0
    smooth, texture, hole = smooth[box], texture[box], hole[box]
    low = cv2.GaussianBlur(smooth, (0, 0), TEXTURE_SIGMA)
    least, most = TEXTURE_GAIN
    own, added = detail_of(low, hole), detail_of(texture, hole)
    if added <= 0.0:
        return 1.0
    gain = float(np.clip(np.sqrt(max(target**2 - own**2, 0.0)) / added, least, most))
    reached = detail_of(low + gain * texture, hole)
    if gain > 0.0 and reached > 0.0:
        gain = float(np.clip(gain * target / reached, least, most))
    return gain


def choose(scores: dict[str, Score], probes: int) -> Verdict:
    """The candidate with the lowest :attr:`Score.value` (on a tie, the first of :data:`METHODS`)."""
    order = {name: i for i, name in enumerate(METHODS)}
    best = min(scores, key=lambda name: (scores[name].value, order.get(name, len(order))))
    return Verdict(best, scores[best].mae, scores, probes)
