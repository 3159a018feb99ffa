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
#: A window whose fitted background motion stays below this (proxy pixels) everywhere is locked off.
STATIC_MOTION = 0.25
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
    matrix, _ = cv2.findHomography(src, dst, cv2.RANSAC, 1.0, maxIters=500, confidence=0.995)
    if matrix is None:
        return None, inliers
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    pts = np.stack([gx, gy, np.ones_like(gx)], -1) @ matrix.T.astype(np.float32)
    fitted = pts[..., :2] / np.where(np.abs(pts[..., 2:]) < 1e-6, 1e-6, pts[..., 2:]) - np.stack([gx, gy], -1)
    residual = np.linalg.norm(flow - fitted, axis=-1)
    inliers = usable & (residual < 1.0)
    return fitted.astype(np.float32), inliers


def _sample(field: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``field`` (ndarray[H, W, C]) at points (clamped to the edge): ndarray[N, C]."""
    h, w = field.shape[:2]
    x = np.clip(xs, 0.0, w - 1.001)
    y = np.clip(ys, 0.0, h - 1.001)
    x0 = x.astype(np.int32)
    y0 = y.astype(np.int32)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    top = field[y0, x0] * (1 - fx) + field[y0, x0 + 1] * fx
    bottom = field[y0 + 1, x0] * (1 - fx) + field[y0 + 1, x0 + 1] * fx
    out: np.ndarray = top * (1 - fy) + bottom * fy
    return out


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
    """The background's motion between neighbouring proxy frames, forward and backward.

    Measured flow is kept where it is trustworthy background motion: outside the (grown) holes, passing
    the forward-backward check, and within a pixel of the RANSAC homography fitted to the background.
    Everywhere else (the holes, moving foreground, flow that fails the check) the motion is the fitted
    homography plus the trusted pixels' residual, interpolated smoothly. So a traced point always moves
    with the background, also through frames where something else covers it.
    """

    def __init__(self, greys: list[np.ndarray], holes: list[np.ndarray]):
        n = len(greys)
        self.locked_off = True
        self.forward: list[np.ndarray] = []
        self.backward: list[np.ndarray] = []
        if n < 2:
            return
        dis = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
            cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
        )
        grown = [cv2.dilate(h.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0 for h in holes]
        fits = []
        for i in range(n - 1):
            f = dis.calc(greys[i], greys[i + 1], None)
            b = dis.calc(greys[i + 1], greys[i], None)
            usable_f = ~grown[i] & _consistent(f, b)
            usable_b = ~grown[i + 1] & _consistent(b, f)
            ff, fin = _homography_flow(f, usable_f)
            bf, bin_ = _homography_flow(b, usable_b)
            fits.append((f, ff, fin, b, bf, bin_))
            for fitted in (ff, bf):
                if fitted is None or float(np.abs(fitted).max()) >= STATIC_MOTION:
                    self.locked_off = False
        if self.locked_off:
            zero = np.zeros(greys[0].shape + (2,), np.float32)
            self.forward = [zero] * (n - 1)
            self.backward = [zero] * (n - 1)
            return
        for i, (f, ff, fin, b, bf, bin_) in enumerate(fits):
            self.forward.append(_background(f, ff, fin, grown[i]))
            self.backward.append(_background(b, bf, bin_, grown[i + 1]))


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
    motion: _Motion,
    known: list[np.ndarray],
    t: int,
    xs: np.ndarray,
    ys: np.ndarray,
    is_ring: np.ndarray,
    direction: int,
) -> _Trace:
    """Follow points of frame ``t`` frame by frame in ``direction``: hole points until each lands on a
    known pixel, ring points (known in ``t``) alongside them, for as long as hole points remain."""
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
        if not motion.locked_off:
            flows = motion.forward[s] if direction > 0 else motion.backward[nxt]
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
    """Per-channel gain that matches ``warped`` ring values (ndarray[N, 3]) to ``target``'s, clamped."""
    if len(target) < 16:
        return np.ones(3, np.float32)
    a = target.sum(0)
    b = warped.sum(0)
    gain = np.where(np.abs(b) > 1e-6, a / np.where(np.abs(b) > 1e-6, b, 1.0), 1.0)
    gain = np.clip(gain, 2.0 / 3.0, 1.5)
    return np.where(np.abs(gain - 1.0) < 0.005, 1.0, gain).astype(np.float32)


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
    ring_kernel = np.ones((9, 9), np.uint8)
    for t in targets:
        hole = holes[t]
        if not hole.any():
            continue
        track = cv2.dilate(small_holes[t].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ring = (cv2.dilate(track.astype(np.uint8), ring_kernel) > 0) & known[t]
        ys, xs = np.nonzero(track | ring)
        is_ring = ring[ys, xs]
        candidates = []
        for direction in (1, -1):
            trace = _trace(motion, known, t, xs.astype(np.float32), ys.astype(np.float32), is_ring, direction)
            candidates.append(trace)
        values, revealed, offset = _sample_plate(
            rgb, small_rgb, hole, t, xs, ys, is_ring, candidates, (sx, sy)
        )
        out.values[t] = values
        out.revealed[t] = revealed
        out.offset[t] = offset
    return out


def _sample_plate(
    rgb: list[np.ndarray],
    small_rgb: list[np.ndarray],
    hole: np.ndarray,
    t: int,
    xs: np.ndarray,
    ys: np.ndarray,
    is_ring: np.ndarray,
    traces: list[_Trace],
    scale: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the plate-resolution sources the traces found for frame ``t``'s hole, blend, match gain."""
    h, w = hole.shape
    sh, sw = small_rgb[0].shape[:2]
    sx, sy = scale
    hy, hx = np.nonzero(hole)
    y0, y1, x0, x1 = int(hy.min()), int(hy.max()) + 1, int(hx.min()), int(hx.max()) + 1
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    sub_hole = hole[y0:y1, x0:x1]
    # each plate pixel's proxy position (pixel centres)
    px = (gx + 0.5) * sx - 0.5
    py = (gy + 0.5) * sy - 0.5
    results = []
    for trace in traces:
        value = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        dist = np.full((y1 - y0, x1 - x0), np.inf, np.float32)
        src_of = np.full((y1 - y0, x1 - x0), -1, np.int32)
        for s in sorted(set(trace.source[trace.source >= 0].tolist()), key=lambda s: abs(s - t)):
            pick = trace.source == s
            # displacement field of the points that reached s, smoothly spread over the proxy
            disp = np.zeros((sh, sw, 2), np.float32)
            have = np.zeros((sh, sw), bool)
            disp[ys[pick], xs[pick], 0] = trace.x[pick] - xs[pick]
            disp[ys[pick], xs[pick], 1] = trace.y[pick] - ys[pick]
            have[ys[pick], xs[pick]] = True
            label = np.zeros((sh, sw), np.float32)
            label[ys[pick & ~is_ring], xs[pick & ~is_ring]] = 1.0
            disp = _fill_smooth(disp, have)
            d = np.stack(
                [
                    cv2.remap(disp[..., c], px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                    for c in (0, 1)
                ],
                -1,
            )
            mine = (
                cv2.remap(label, px, py, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                > 0.5
            )
            mine &= sub_hole & (src_of < 0)
            if not mine.any():
                continue
            mapx = gx + d[..., 0] / sx
            mapy = gy + d[..., 1] / sy
            sampled = cv2.remap(rgb[s], mapx, mapy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
            # exposure: ring points of t that also reached s, target colour against warped source colour
            ring_idx, ring_x, ring_y = trace.ring_at.get(s, (np.zeros(0, np.int64), np.zeros(0), np.zeros(0)))
            gain = _exposure_gain(
                small_rgb[t][ys[ring_idx], xs[ring_idx]], _sample(small_rgb[s], ring_x, ring_y)
            )
            value[mine] = sampled[mine] * gain
            dist[mine] = abs(s - t)
            src_of[mine] = s
        results.append((value, dist, src_of))
    (vf, df, sf), (vb, db, sb) = results
    both = (sf >= 0) & (sb >= 0)
    df_, db_ = np.where(both, df, 1.0), np.where(both, db, 1.0)
    weight_f = np.where(both, db_ / np.maximum(df_ + db_, 1e-6), (sf >= 0).astype(np.float32))
    scale_ref = np.maximum(np.maximum(np.abs(vf), np.abs(vb)).max(-1), 0.05)
    disagree = both & (np.abs(vf - vb).max(-1) > AGREE * scale_ref)
    weight_f = np.where(disagree, (df <= db).astype(np.float32), weight_f)
    blended = weight_f[..., None] * vf + (1.0 - weight_f[..., None]) * vb
    got = sub_hole & ((sf >= 0) | (sb >= 0))
    nearer = np.where(weight_f >= 0.5, sf, sb)
    values = np.zeros((h, w, 3), np.float32)
    revealed = np.zeros((h, w), bool)
    offset = np.zeros((h, w), np.float32)
    values[y0:y1, x0:x1] = np.where(got[..., None], blended, 0.0)
    revealed[y0:y1, x0:x1] = got
    offset[y0:y1, x0:x1] = np.where(got, nearer - t, 0).astype(np.float32)
    return values, revealed, offset
