"""Propagation: fill a hole from what other frames show, at plate resolution.

The network works at a 128-pixel working size; a hole on a large plate filled there comes back soft.
But where the camera or the removed object moves, most of what a hole hides is visible in some other
frame. This stage finds it and carries those real plate pixels in, at full resolution and in plate
units (scene-linear float stays float); only what no frame shows is left to the network.

For one temporal window (plus ``reach`` frames either side), on the region around the window's holes:

1. **Motion.** Dense optical flow (OpenCV DIS) between neighbouring frames, forward and backward, on
   a grey proxy of bounded size. Inside each hole the measured flow belongs to the object being
   removed: it is replaced by the background's motion, a RANSAC homography fitted on the known
   pixels around the hole plus a residual interpolated smoothly in from the hole's border (taken only
   from pixels that follow the homography, so foreground motion near the hole does not leak in). A
   window whose background does not move (a locked-off shot) gets exactly zero motion. A
   forward-backward consistency check marks where motion cannot be trusted.
2. **Tracing.** Each hole pixel is followed along the completed motion, frame to frame (chained
   consecutive flows, never one jump to a far frame), forwards and backwards, to the nearest frame
   where that point is known and every step was consistent.
3. **Sampling.** Its value is sampled, at plate resolution, from those frames' plate pixels (bicubic),
   with an exposure gain between the frames measured on a ring of known pixels around the hole, and the
   nearest source before and after are blended by temporal distance where they agree.

Everything is deterministic (no random state), so chunked farm renders equal a single render.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from combcn.errors import ConfigError

log = logging.getLogger("combcn.engine")

Box = tuple[int, int, int, int]

#: Forward-backward consistency (squared proxy pixels): |f + b(x + f)|^2 < A1 (|f|^2 + |b|^2) + A2, the
#: thresholds the published flow-propagation systems use.
FB_A1 = 0.01
FB_A2 = 0.5
#: A window whose fitted background motion stays below this (proxy pixels, median over the background)
#: between every pair of frames is locked off.
STATIC_MOTION = 0.25
#: A pixel follows a plane's homography if its flow is within this (proxy pixels) of it.
INLIER = 0.5
#: Known pixels this close to a hole (proxy pixels) are not sampled: matte edges, motion blur, shadow.
EDGE = 1
#: Where a forward and a backward source differ by more than this (relative, in plate units), only
#: the nearer one is used (blending two disagreeing sources ghosts).
AGREE = 0.15


@dataclass(frozen=True)
class PropagationSettings:
    """Whether and how far to propagate.

    Attributes:
        enabled: carry pixels from other frames (False: the network fills every hole pixel).
        reach: frames beyond each temporal window that may also be searched (read, never written).
        proxy: longest side, in pixels, of the proxy the motion is measured on.
    """

    enabled: bool = True
    reach: int = 0
    proxy: int = 640


def propagation_settings(options: dict[str, Any]) -> PropagationSettings:
    """Pop the propagation keywords (``propagate``, ``reach``) out of ``options``."""
    enabled = options.pop("propagate", True)
    reach = options.pop("reach", 0)
    if not isinstance(enabled, bool | np.bool_):
        raise ConfigError(f"propagate must be True or False, got {enabled!r}")
    try:
        reach_i = int(reach)
    except (TypeError, ValueError):
        raise ConfigError(f"--reach must be a whole number of frames, got {reach!r}") from None
    if reach_i != reach or not 0 <= reach_i <= 1000:
        raise ConfigError(f"--reach must be a whole number of frames from 0 to 1000, got {reach!r}")
    return PropagationSettings(enabled=bool(enabled), reach=reach_i)


@dataclass
class Propagated:
    """What propagation recovered for the target frames of one window, over ``region``.

    Attributes:
        region: ``(y0, y1, x0, x1)`` in plate pixels.
        values (dict[int, ndarray[h, w, 3] float32]): per target index, plate-unit values (valid where
            ``revealed``).
        revealed (dict[int, ndarray[h, w] bool]): hole pixels another frame showed.
        offset (dict[int, ndarray[h, w] float32]): the frame offset (source minus target) each revealed
            pixel mostly came from; 0 elsewhere.
        locked_off: the window's background did not move.
    """

    region: Box
    values: dict[int, np.ndarray]
    revealed: dict[int, np.ndarray]
    offset: dict[int, np.ndarray]
    locked_off: bool


def region_around(box: Box, height: int, width: int) -> Box:
    """The plate region propagation works on: the holes' box plus as much again around it (at least
    96 pixels), so background that the camera carries in from beside the hole is in view."""
    y0, y1, x0, x1 = box
    pad = max(96, y1 - y0, x1 - x0)
    return max(0, y0 - pad), min(height, y1 + pad), max(0, x0 - pad), min(width, x1 + pad)


def _grey(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Plate-unit RGB -> uint8 grey proxy (a square-root curve, so dark areas keep their texture)."""
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if rgb.shape[1::-1] != size else rgb
    grey = small @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    top = max(float(np.percentile(grey, 99.5)), 1e-6)
    return (np.sqrt(np.clip(grey / top, 0.0, 1.0)) * 255.0 + 0.5).astype(np.uint8)


def _fill_smooth(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill where ``known`` is False by push-pull over an image pyramid (a smooth membrane-like
    interpolation from the known pixels). values ndarray[H, W, C] float32, known ndarray[H, W] bool."""
    w = known.astype(np.float32)
    if w.all() or not w.any():
        return values if w.all() else np.zeros_like(values)
    sums: list[np.ndarray] = [values * w[..., None]]
    weights: list[np.ndarray] = [w]
    while min(weights[-1].shape) > 1:
        h, wd = weights[-1].shape
        size = (max(1, wd // 2), max(1, h // 2))
        sums.append(cv2.resize(sums[-1], size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1))
        weights.append(cv2.resize(weights[-1], size, interpolation=cv2.INTER_AREA))
    level = sums[-1] / np.maximum(weights[-1], 1e-6)[..., None]
    for s, wt in zip(reversed(sums[:-1]), reversed(weights[:-1]), strict=True):
        h, wd = wt.shape
        up = cv2.resize(level, (wd, h), interpolation=cv2.INTER_LINEAR).reshape(h, wd, -1)
        own = s / np.maximum(wt, 1e-6)[..., None]
        alpha = np.clip(wt * 4.0, 0.0, 1.0)[
            ..., None
        ]  # a cell with any known pixel mostly keeps its own mean
        level = alpha * own + (1.0 - alpha) * up
    out: np.ndarray = np.where(known[..., None], values, level)
    return out


def _homography_flow(flow: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Fit the background's motion to ``flow`` at ``usable`` pixels.

    Returns:
        (the fitted flow ndarray[H, W, 2], or None when too few pixels; inlier mask ndarray[H, W] bool).
    """
    h, w = usable.shape
    stride = max(1, int(np.sqrt(usable.sum() / 2500.0)))
    ys, xs = np.nonzero(usable[::stride, ::stride])
    ys, xs = ys * stride, xs * stride
    inliers = np.zeros((h, w), bool)
    if len(xs) < 12:
        return None, inliers
    src = np.stack([xs, ys], 1).astype(np.float32)
    dst = src + flow[ys, xs]
    matrix, _ = cv2.findHomography(src, dst, cv2.RANSAC, INLIER, maxIters=500, confidence=0.995)
    if matrix is None:
        return None, inliers
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    pts = np.stack([gx, gy, np.ones_like(gx)], -1) @ matrix.T.astype(np.float32)
    fitted = pts[..., :2] / np.where(np.abs(pts[..., 2:]) < 1e-6, 1e-6, pts[..., 2:]) - np.stack([gx, gy], -1)
    residual = np.linalg.norm(flow - fitted, axis=-1)
    inliers = usable & (residual < INLIER)
    return fitted.astype(np.float32), inliers


def _sample(field: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` (ndarray[H, W, C]) at points (clamped to the edge): ndarray[N, C]."""
    count = len(xs)
    if count == 0:
        return np.zeros((0,) + field.shape[2:], np.float32)
    cols = min(count, 4096)  # remap takes a 2-D map; rows of 4096 points stay inside its size limits
    rows = -(-count // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:count], my[:count] = xs, ys
    out = cv2.remap(
        field,
        mx.reshape(rows, cols),
        my.reshape(rows, cols),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    result: np.ndarray = out.reshape(rows * cols, -1)[:count]
    return result


def _consistent(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Forward-backward check: True where ``backward`` at the end of ``forward`` cancels it."""
    h, w = forward.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    back = cv2.remap(
        backward,
        gx + forward[..., 0],
        gy + forward[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    err = np.sum((forward + back) ** 2, -1)
    bound = FB_A1 * (np.sum(forward**2, -1) + np.sum(back**2, -1)) + FB_A2
    out: np.ndarray = err < bound
    return out


class _Motion:
    """The background's motion between neighbouring proxy frames, forward and backward, as one or two
    hypotheses (motion layers).

    Measured flow is kept where it is trustworthy motion of a layer: outside the (grown) holes, passing
    the forward-backward check, and within a pixel of that layer's RANSAC homography. Everywhere else
    (the holes, other movers, flow that fails the check) a layer's motion is its homography plus its
    trusted pixels' residual, interpolated smoothly. Layer 0 is the dominant background (exactly zero
    on a locked-off shot); layer 1, where the pixels layer 0 does not explain hold a second plane
    (parallax: a nearer wall, a building's other face), is that plane. A traced point always moves with
    its layer, also through frames where something else covers it.

    Attributes:
        forward, backward (list[list[ndarray[h, w, 2]]]): per layer, per frame pair ``(i, i + 1)``.
        second (list[ndarray[h, w] bool]): per frame, the pixels seen moving with layer 1.
        locked_off: layer 0 does not move.
    """

    def __init__(self, greys: list[np.ndarray], holes: list[np.ndarray]):
        n = len(greys)
        self.locked_off = True
        self.forward: list[list[np.ndarray]] = [[]]
        self.backward: list[list[np.ndarray]] = [[]]
        self.second: list[np.ndarray] = []
        if n < 2:
            return
        dis = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
            cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
        )
        grown = [cv2.dilate(h.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0 for h in holes]
        pairs = []
        for i in range(n - 1):
            f = dis.calc(greys[i], greys[i + 1], None)
            b = dis.calc(greys[i + 1], greys[i], None)
            pairs.append(
                (
                    _layers(f, ~grown[i] & _consistent(f, b)),
                    _layers(b, ~grown[i + 1] & _consistent(b, f)),
                    f,
                    b,
                )
            )
            for fitted, inliers in (pairs[-1][0][0], pairs[-1][1][0]):
                if fitted is None or _typical_motion(fitted, inliers) >= STATIC_MOTION:
                    self.locked_off = False
        second = any(len(fl) > 1 or len(bl) > 1 for fl, bl, _, _ in pairs)
        self.forward = [[] for _ in range(2 if second else 1)]
        self.backward = [[] for _ in range(2 if second else 1)]
        # which pixels of each frame move with the second plane (its inliers, from either pair)
        self.second = [np.zeros(greys[0].shape, bool) for _ in range(n)]
        for i, (fl, bl, _, _) in enumerate(pairs):
            if len(fl) > 1:
                self.second[i] |= fl[1][1]
            if len(bl) > 1:
                self.second[i + 1] |= bl[1][1]
        zero = np.zeros(greys[0].shape + (2,), np.float32)
        for i, (fl, bl, f, b) in enumerate(pairs):
            for k in range(len(self.forward)):
                if k == 0 and self.locked_off:
                    self.forward[0].append(zero)
                    self.backward[0].append(zero)
                    continue
                ff, fin = fl[min(k, len(fl) - 1)]
                bf, bin_ = bl[min(k, len(bl) - 1)]
                self.forward[k].append(_background(f, ff, fin, grown[i]))
                self.backward[k].append(_background(b, bf, bin_, grown[i + 1]))


def _typical_motion(fitted: np.ndarray, inliers: np.ndarray) -> float:
    """The median length of a fitted motion over the pixels that follow it (proxy pixels)."""
    if not inliers.any():
        return float("inf")
    return float(np.median(np.linalg.norm(fitted[inliers], axis=-1)))


def _layers(flow: np.ndarray, usable: np.ndarray) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """The dominant plane's fitted motion and inliers, and a second plane's where the pixels the first
    does not explain are many and move differently (by more than a pixel)."""
    fitted, inliers = _homography_flow(flow, usable)
    layers = [(fitted, inliers)]
    rest = usable & ~inliers
    if fitted is not None and rest.sum() >= max(40, 0.02 * usable.sum()):
        fitted2, inliers2 = _homography_flow(flow, rest)
        if fitted2 is not None and inliers2.sum() >= 30:
            apart = float(np.linalg.norm(fitted2 - fitted, axis=-1)[inliers2].mean())
            if apart > 0.75:
                layers.append((fitted2, inliers2))
    return layers


def _background(
    flow: np.ndarray, fitted: np.ndarray | None, inliers: np.ndarray, hole: np.ndarray
) -> np.ndarray:
    """The background's motion everywhere: measured at the inliers, fitted plus interpolated residual
    elsewhere (without a fit: the measured flow outside the hole, interpolated into it)."""
    if fitted is None:
        return _fill_smooth(flow, ~hole) if (~hole).any() else np.zeros_like(flow)
    residual = _fill_smooth(np.where(inliers[..., None], flow - fitted, 0.0).astype(np.float32), inliers)
    out: np.ndarray = (fitted + residual).astype(np.float32)
    return out


@dataclass
class _Trace:
    """One direction's tracing from frame ``t``: for each hole point, the frame index where it was
    first found known (-1: none) and its proxy position there; for each frame, the ring points known
    there and their positions (to compare exposure)."""

    source: np.ndarray
    x: np.ndarray
    y: np.ndarray
    ring_at: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _trace(
    forward: list[np.ndarray],
    backward: list[np.ndarray],
    static: bool,
    known: list[np.ndarray],
    t: int,
    xs: np.ndarray,
    ys: np.ndarray,
    is_ring: np.ndarray,
    direction: int,
) -> _Trace:
    """Follow points of frame ``t`` frame by frame in ``direction`` along one layer's motion
    (``forward``/``backward`` per frame pair; ``static``: it is zero): hole points until each lands on
    a known pixel, ring points (known in ``t``) alongside them, for as long as hole points remain."""
    n = len(known)
    count = len(xs)
    source = np.full(count, -1, np.int32)
    found_x = np.zeros(count, np.float32)
    found_y = np.zeros(count, np.float32)
    alive = np.ones(count, bool)
    cx, cy = xs.astype(np.float32).copy(), ys.astype(np.float32).copy()
    h, w = known[0].shape
    ring_at: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    s = t
    while (alive & ~is_ring).any():
        nxt = s + direction
        if not 0 <= nxt < n:
            break
        idx = np.flatnonzero(alive)
        px, py = cx[idx], cy[idx]
        if not static:
            flows = forward[s] if direction > 0 else backward[nxt]
            step = _sample(flows, px, py)
            px = px + step[:, 0]
            py = py + step[:, 1]
            inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
            alive[idx[~inside]] = False
            idx, px, py = idx[inside], px[inside], py[inside]
            cx[idx], cy[idx] = px, py
        at = known[nxt][np.rint(py).astype(np.int32), np.rint(px).astype(np.int32)]
        ring = is_ring[idx]
        ring_at[nxt] = (idx[at & ring], px[at & ring], py[at & ring])
        hit = at & ~ring
        source[idx[hit]] = nxt
        found_x[idx[hit]] = px[hit]
        found_y[idx[hit]] = py[hit]
        alive[idx[hit]] = False
        s = nxt
    return _Trace(source, found_x, found_y, ring_at)


def _exposure_gain(target: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """Per-channel gain that matches ``warped`` ring values (ndarray[N, 3]) to ``target``'s: the median
    of the per-point ratios (robust to ring points that landed on another surface), clamped to
    [2/3, 3/2]; 1 where the ring is too small to tell or the change is below half a percent."""
    valid = (np.abs(warped) > 1e-3).all(1) & (np.abs(target) > 1e-3).all(1)
    if valid.sum() < 16:
        return np.ones(3, np.float32)
    gain = np.median(target[valid] / warped[valid], axis=0)
    gain = np.clip(gain, 2.0 / 3.0, 1.5)
    out: np.ndarray = np.where(np.abs(gain - 1.0) < 0.005, 1.0, gain).astype(np.float32)
    return out


def propagate(
    rgb: list[np.ndarray],
    holes: list[np.ndarray],
    targets: list[int],
    settings: PropagationSettings,
    *,
    region: Box,
) -> Propagated:
    """Fill the holes of ``targets`` from the frames that show what they hide.

    Args:
        rgb (list of ndarray[h, w, 3] float32): every frame of the window plus its reach, over
            ``region``, in plate units (finite).
        holes (list of ndarray[h, w] bool): the same frames' holes (True = to fill).
        targets: indices into ``rgb`` of the frames to fill.
        settings: proxy size (``reach`` is the caller's: it decides how many frames are passed).
        region: where ``rgb`` lies on the plate, ``(y0, y1, x0, x1)``; returned as is.

    Returns:
        Propagated: per target, the recovered values, which pixels were recovered, and from where.
    """
    h, w = holes[0].shape
    scale = min(1.0, settings.proxy / max(h, w))
    size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
    sx, sy = size[0] / w, size[1] / h
    greys = [_grey(x, size) for x in rgb]
    small_holes = [cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0 for m in holes]
    edge = np.ones((2 * EDGE + 1, 2 * EDGE + 1), np.uint8)
    known = [~(cv2.dilate(m.astype(np.uint8), edge) > 0) for m in small_holes]
    motion = _Motion(greys, small_holes)
    small_rgb = [cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in rgb]
    out = Propagated(region, {}, {}, {}, motion.locked_off)
    layer_known: list[list[np.ndarray]] = []
    if len(motion.forward) > 1:
        seconds = [cv2.dilate(m.astype(np.uint8), edge) > 0 for m in motion.second]
        layer_known = [[k & ~m for k, m in zip(known, seconds, strict=True)]]
        layer_known.append([k & m for k, m in zip(known, seconds, strict=True)])
    ring_kernel = np.ones((9, 9), np.uint8)
    for t in targets:
        hole = holes[t]
        if not hole.any():
            continue
        track = cv2.dilate(small_holes[t].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ring = (cv2.dilate(track.astype(np.uint8), ring_kernel) > 0) & known[t]
        ys, xs = np.nonzero(track | ring)
        is_ring = ring[ys, xs]
        xs_f, ys_f = xs.astype(np.float32), ys.astype(np.float32)
        hypotheses = []
        for k in range(len(motion.forward)):
            static = k == 0 and motion.locked_off
            # a layer's point is known only where that layer is what the frame shows there
            own = known if k == 0 and len(motion.forward) == 1 else layer_known[k]
            traces = [
                _trace(motion.forward[k], motion.backward[k], static, own, t, xs_f, ys_f, is_ring, direction)
                for direction in (1, -1)
            ]
            hypotheses.append([_candidates(rgb, small_rgb, hole, t, xs, ys, tr, (sx, sy)) for tr in traces])
        prior = None
        if len(hypotheses) > 1:
            prior = _nearest_layer(small_holes[t], known[t] & motion.second[t], (sx, sy), hole)
        values, revealed, offset = _choose(hypotheses, hole, t, prior)
        out.values[t] = values
        out.revealed[t] = revealed
        out.offset[t] = offset
    return out


_Candidate = tuple[np.ndarray, np.ndarray, np.ndarray]


def _nearest_layer(
    small_hole: np.ndarray, second: np.ndarray, scale: tuple[float, float], hole: np.ndarray
) -> np.ndarray:
    """Over the plate hole's bounding box: True where the nearest pixel outside the (proxy) hole moves
    with layer 1: a hidden pixel most likely belongs to the surface beside it."""
    outside = ~small_hole
    if not outside.any():
        return np.zeros(hole.shape, bool)
    _, labels = cv2.distanceTransformWithLabels(
        small_hole.astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    # DIST_LABEL_PIXEL numbers the zero (outside) pixels from 1 in raster order
    owner = np.concatenate([[False], second[outside]])
    near = owner[labels].astype(np.float32)
    hy, hx = np.nonzero(hole)
    y0, y1, x0, x1 = int(hy.min()), int(hy.max()) + 1, int(hx.min()), int(hx.max()) + 1
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    sx, sy = scale
    out: np.ndarray = cv2.remap(near, (gx + 0.5) * sx - 0.5, (gy + 0.5) * sy - 0.5, cv2.INTER_NEAREST) > 0.5
    return out


def _candidates(
    rgb: list[np.ndarray],
    small_rgb: list[np.ndarray],
    hole: np.ndarray,
    t: int,
    xs: np.ndarray,
    ys: np.ndarray,
    trace: _Trace,
    scale: tuple[float, float],
) -> _Candidate:
    """Sample, at plate resolution, the sources one trace found for frame ``t``'s hole.

    Returns:
        over the hole's bounding box: values (ndarray[h, w, 3], exposure matched), temporal distance
        to the source (inf: none) and the source's index (-1: none).
    """
    sx, sy = scale
    hy, hx = np.nonzero(hole)
    y0, y1, x0, x1 = int(hy.min()), int(hy.max()) + 1, int(hx.min()), int(hx.max()) + 1
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    sub_hole = hole[y0:y1, x0:x1]
    # the proxy box around the traced points, and each plate pixel's position in it (pixel centres)
    oy, ox = int(ys.min()), int(xs.min())
    bh, bw = int(ys.max()) + 1 - oy, int(xs.max()) + 1 - ox
    px = (gx + 0.5) * sx - 0.5 - ox
    py = (gy + 0.5) * sy - 0.5 - oy
    value = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    dist = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
    src_of = np.full((y1 - y0, x1 - x0), -1, np.int32)
    # which source serves each plate pixel: that of its nearest traced proxy point
    label = np.full((bh, bw), -1.0, np.float32)
    label[ys - oy, xs - ox] = trace.source
    serving = cv2.remap(label, px, py, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0)
    serving = np.where(sub_hole, np.rint(serving), -1).astype(np.int32)
    for s in sorted(set(trace.source[trace.source >= 0].tolist()), key=lambda s: abs(s - t)):
        pick = trace.source == s
        mine = serving == s
        if not mine.any():
            continue
        # displacement of the points that reached s, interpolated bilinearly from those points alone
        # (weights renormalised where a neighbour went to another source), at the pixels it serves
        disp = np.zeros((bh, bw, 3), np.float32)
        disp[ys[pick] - oy, xs[pick] - ox] = np.stack(
            [trace.x[pick] - xs[pick], trace.y[pick] - ys[pick], np.ones(int(pick.sum()), np.float32)], -1
        )
        my, mx = np.nonzero(mine)
        r0, r1, c0, c1 = int(my.min()), int(my.max()) + 1, int(mx.min()), int(mx.max()) + 1
        qx, qy = px[r0:r1, c0:c1], py[r0:r1, c0:c1]
        spread = cv2.remap(disp, qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = np.maximum(spread[..., 2], 1e-6)
        dx, dy = spread[..., 0] / weight, spread[..., 1] / weight
        sampled = cv2.remap(
            rgb[s],
            gx[r0:r1, c0:c1] + dx / sx,
            gy[r0:r1, c0:c1] + dy / sy,
            cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REPLICATE,
        )
        # exposure: ring points of t known in s, target colour against the source colour they moved to
        ring_idx, ring_x, ring_y = trace.ring_at.get(s, (np.zeros(0, np.int64), np.zeros(0), np.zeros(0)))
        gain = _exposure_gain(small_rgb[t][ys[ring_idx], xs[ring_idx]], _sample(small_rgb[s], ring_x, ring_y))
        part = mine[r0:r1, c0:c1]
        value[r0:r1, c0:c1][part] = sampled[part] * gain
        dist[r0:r1, c0:c1][part] = abs(s - t)
        src_of[r0:r1, c0:c1][part] = s
    return value, dist, src_of


def _disagreement(forward: _Candidate, backward: _Candidate) -> np.ndarray:
    """Per pixel, how far the forward and backward sources differ, relative to their level (inf where
    one is missing)."""
    (vf, _, sf), (vb, _, sb) = forward, backward
    level = np.maximum(np.maximum(np.abs(vf), np.abs(vb)).max(-1), 0.05)
    out: np.ndarray = np.where((sf >= 0) & (sb >= 0), np.abs(vf - vb).max(-1) / level, np.inf)
    return out


def _choose(
    hypotheses: list[list[_Candidate]], hole: np.ndarray, t: int, prior: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick each pixel's motion layer, then blend its forward and backward sources.

    A pixel follows layer 1 where its sources before and after agree under layer 1 and clearly
    disagree under layer 0 (the same scene point seen twice is the test of a right motion); where that
    cannot be tested (a source on one side only), where ``prior`` says so (the nearest known pixel moves
    with layer 1); elsewhere the dominant background. Sources are blended by temporal distance where
    they agree; where they do not, the nearer one is used alone.
    """
    h, w = hole.shape
    choice: np.ndarray = np.zeros(hypotheses[0][0][1].shape, np.uint8)
    if len(hypotheses) > 1:
        base = _disagreement(*hypotheses[0])
        other = _disagreement(*hypotheses[1])
        testable = np.isfinite(base) | np.isfinite(other)
        has_other = (hypotheses[1][0][2] >= 0) | (hypotheses[1][1][2] >= 0)
        by_test = (other < AGREE) & (other < 0.5 * base)
        by_prior = ~testable & has_other & (prior if prior is not None else False)
        choice = (by_test | by_prior).astype(np.uint8)
        choice = cv2.medianBlur(choice, 5)  # one layer per patch, not per pixel
    pick = choice.astype(bool)

    def merged(c0: _Candidate, c1: _Candidate) -> _Candidate:
        v = np.where(pick[..., None], c1[0], c0[0])
        return v, np.where(pick, c1[1], c0[1]), np.where(pick, c1[2], c0[2])

    (vf, df, sf), (vb, db, sb) = (
        merged(c0, c1) for c0, c1 in zip(hypotheses[0], hypotheses[-1], strict=True)
    )
    both = (sf >= 0) & (sb >= 0)
    df_, db_ = np.where(both, df, 1.0), np.where(both, db, 1.0)
    weight_f = np.where(both, db_ / np.maximum(df_ + db_, 1e-6), (sf >= 0).astype(np.float32))
    disagree = both & (_disagreement((vf, df, sf), (vb, db, sb)) > AGREE)
    weight_f = np.where(disagree, (df <= db).astype(np.float32), weight_f)
    blended = weight_f[..., None] * vf + (1.0 - weight_f[..., None]) * vb
    hy, hx = np.nonzero(hole)
    y0, y1, x0, x1 = int(hy.min()), int(hy.max()) + 1, int(hx.min()), int(hx.max()) + 1
    got = hole[y0:y1, x0:x1] & ((sf >= 0) | (sb >= 0))
    nearer = np.where(weight_f >= 0.5, sf, sb)
    values = np.zeros((h, w, 3), np.float32)
    revealed = np.zeros((h, w), bool)
    offset = np.zeros((h, w), np.float32)
    values[y0:y1, x0:x1] = np.where(got[..., None], blended, 0.0)
    revealed[y0:y1, x0:x1] = got
    offset[y0:y1, x0:x1] = np.where(got, nearer - t, 0).astype(np.float32)
    return values, revealed, offset
