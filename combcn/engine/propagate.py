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
2. **Tracing.** Each hole pixel is followed along each motion hypothesis (the background layers,
   the scene flow where there are movers), frame to frame (chained consecutive flows, never one
   jump to a far frame), forwards and backwards, to the nearest frame where that point is known and
   every step was consistent.
3. **Sampling.** Its value is sampled, at plate resolution, from those frames' plate pixels (bicubic),
   where the trace put it plus the small shift that aligns the ring of known pixels around the hole
   with the target (the chained flow's drift), with an exposure gain between the frames measured on
   that ring, plus the smooth shading the gain leaves there. Where the nearest source before and
   the nearest after agree, they are blended by how well each fits that ring (by temporal distance
   where it is too small to tell). Where they disagree, never: a second look further along each
   trace decides where it sides with one; else each connected region of such pixels takes the one
   source that fits the ring better over it (something under the hole moved on its own: one pose,
   not two translucent ones).
4. **Choosing the motion.** Each hypothesis is weighed, per patch of pixels, by how well its sources
   agree and fit the ring near them; the pixel takes their weighted fill, or the heaviest alone
   where their values disagree.
5. **Locked-off floor.** On a locked-off window, each hole pixel some frame shows is held at least
   as good as a temporal median of the frames that show it (those that fit the ring near it, where
   any does): the median where the sources disagreed, where it fits the ring better, and where
   nothing was recovered; the still background's value where its sources and the median agree.

Everything is deterministic (no random state), so chunked farm renders equal a single render.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, NamedTuple

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
#: A witness (a second source along the same trace) lies this many frames or more beyond the first.
WITNESS = 3
#: A trusted pixel whose flow is this far (proxy pixels) from every layer's motion moves on its own.
MOVER = 1.5
#: Known pixels this close to a hole (proxy pixels) are not sampled: matte edges, motion blur, shadow.
EDGE = 1
#: A forward and a backward source that differ by more than this (relative, in plate units) disagree:
#: witnesses, else each source's misfit, decide between them (a plain blend would ghost).
AGREE = 0.15
#: Where two sources disagree and no witness settles it, the regions of such pixels within this many
#: proxy pixels of each other are one region, which takes one source (:func:`_blend`): the two poses
#: of a limb that moved meet at its joint, and each side of it must show the same one.
REGION_GAP = 2
#: Two motion hypotheses' values that disagree are never blended (:func:`_combine`): where one that
#: weighs at least this differs from the heaviest, the heaviest is taken alone.
VISIBLE = 0.01
#: A source's misfit and shading on the ring are interpolated into the hole on cells of this many
#: proxy pixels.
SPREAD_CELL = 4
#: A source whose ring, carried along the same motion, differs from the target's by more than this
#: (relative) fits nothing around the hole: where every source a pixel has misfits so, the pixel is
#: left to the network (a guess carried from another frame is worse than a synthesised fill there:
#: a non-rigid mover, a face turning, measured on held-out clips).
MISFIT = 0.25
#: A source's ring is aligned with the target's (:func:`_align`) when it has at least ``ALIGN_POINTS``
#: points (measured on at most ``ALIGN_SAMPLE`` of them, in at most ``ALIGN_STEPS`` Gauss-Newton
#: steps), by a shift of at most ``ALIGN_MAX`` proxy pixels that brings the ring's error below
#: ``ALIGN_GAIN`` of what it was.
ALIGN_POINTS = 24
ALIGN_SAMPLE = 400
ALIGN_STEPS = 3
ALIGN_MAX = 1.5
ALIGN_GAIN = 0.9
#: Motion hypotheses are weighed by how well they fit (:func:`_combine`): per pixel, their score
#: (relative disagreement of the two sources plus misfit on the ring), averaged over ``PATCH`` plate
#: pixels; one that scores ``CHOICE_SOFTNESS`` worse than the best weighs 1/e of it. With a source on
#: one side only the disagreement counts as ``ONE_SIDED``; with no misfit measured the misfit counts
#: as ``UNMEASURED`` (any hypothesis that was measured wins).
CHOICE_SOFTNESS = 0.01
ONE_SIDED = 0.3
UNMEASURED = 9.0
PATCH = (9, 9)
#: On a locked-off shot, a motion other than the background's recovers a pixel only where its doubt
#: (disagreement plus misfit) is below this. The background is known exactly there (it does not
#: move), so a pixel it cannot fill is one where something came or went, and a loose fit of another
#: motion is more often chance than a mover (measured: the locked-off held-out clip, and a newcomer
#: in the frames the hole is in).
ALTERNATIVE_FIT = 0.15


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


#: What :meth:`Propagated.get` reads: per kind, the trailing shape and dtype of its arrays.
_KINDS: dict[str, tuple[tuple[int, ...], Any]] = {
    "values": ((3,), np.float32),
    "revealed": ((), bool),
    "offset": ((), np.float32),
}


class _Packed:
    """An array kept as the bit mask of its non-zero pixels and their values, losslessly (a pixel is
    zero when every one of its values is, bit for bit: -0.0 is kept). A target's results lie over its
    hole's box, and a thin hole (strokes) leaves most of the box zero: at 4K the dense arrays of a
    window's targets took 0.5 GB.

    Args:
        array (ndarray[h, w, ...]): any dtype of 1, 2, 4 or 8 bytes.
    """

    __slots__ = ("shape", "dtype", "mask", "pixels")

    def __init__(self, array: np.ndarray):
        self.shape, self.dtype = array.shape, array.dtype
        flat = np.ascontiguousarray(array).reshape(array.shape[0] * array.shape[1], -1)
        bits = flat.view(f"u{flat.dtype.itemsize}")
        nonzero = bits[:, 0] != 0
        for c in range(1, bits.shape[1]):  # (a reduction over a short last axis is slow in NumPy)
            nonzero |= bits[:, c] != 0
        self.mask = np.packbits(nonzero)
        self.pixels = np.compress(nonzero, flat, 0)  # (as flat[nonzero], in a fraction of the time)

    @classmethod
    def at(cls, shape: tuple[int, ...], where: np.ndarray, values: np.ndarray) -> _Packed:
        """``_Packed`` of an array of ``shape`` that is zero but for ``values`` (ndarray[K, ...], cast to
        its dtype) at the flat pixel indices ``where`` (ndarray[K], ascending): the same as packing that
        array, without making it."""
        out = cls.__new__(cls)
        out.shape, out.dtype = shape, values.dtype
        rows = np.ascontiguousarray(values).reshape(len(values), int(np.prod(values.shape[1:])))
        bits = rows.view(f"u{rows.dtype.itemsize}")
        nonzero = bits[:, 0] != 0
        for c in range(1, bits.shape[1]):
            nonzero |= bits[:, c] != 0
        mask = np.zeros(shape[0] * shape[1], bool)
        mask[np.compress(nonzero, where)] = True
        out.mask = np.packbits(mask)
        out.pixels = np.compress(nonzero, rows, 0)
        return out

    def unpack(self) -> np.ndarray:
        """The array, as a new one."""
        count = self.shape[0] * self.shape[1]
        out = np.zeros((count, self.pixels.shape[1]), self.dtype)
        out[np.flatnonzero(np.unpackbits(self.mask, count=count))] = self.pixels
        return out.reshape(self.shape)


class _PackedArrays(dict):  # type: ignore[type-arg]
    """Per target index, an array stored as :class:`_Packed`: set and read as plain arrays (each
    read gives a new array)."""

    def __setitem__(self, key: int, array: np.ndarray | _Packed) -> None:
        super().__setitem__(key, array if isinstance(array, _Packed) else _Packed(np.asarray(array)))

    def __getitem__(self, key: int) -> np.ndarray:
        return self.packed(key).unpack()

    def packed(self, key: int) -> _Packed:
        found: _Packed = super().__getitem__(key)
        return found


@dataclass
class Propagated:
    """What propagation recovered for the target frames of one window, over ``region``.

    Each target's results are kept over its hole's bounding box only (a hole is a small part of a large
    plate), and of those only the non-zero pixels (:class:`_Packed`); :meth:`get` reads them over any
    plate box. ``values``, ``revealed`` and ``offset`` are set and read as plain arrays.

    Attributes:
        region: ``(y0, y1, x0, x1)`` in plate pixels.
        boxes (dict[int, Box]): per target index, its hole's bounding box in plate pixels.
        values (dict[int, ndarray[h, w, 3] float32]): per target, over its box, plate-unit values (valid
            where ``revealed``).
        revealed (dict[int, ndarray[h, w] bool]): over its box, hole pixels another frame showed.
        offset (dict[int, ndarray[h, w] float32]): over its box, the frame offset (source minus target)
            each revealed pixel mostly came from; 0 elsewhere.
        locked_off: the window's background did not move.
    """

    region: Box
    boxes: dict[int, Box]
    values: dict[int, np.ndarray]
    revealed: dict[int, np.ndarray]
    offset: dict[int, np.ndarray]
    locked_off: bool

    def __post_init__(self) -> None:
        for kind in _KINDS:
            given = getattr(self, kind)
            if not isinstance(given, _PackedArrays):
                packed = _PackedArrays()
                for t, array in given.items():
                    packed[t] = array
                setattr(self, kind, packed)

    def get(self, kind: str, t: int, box: Box) -> np.ndarray:
        """``values``, ``revealed`` or ``offset`` of target ``t`` over the plate box ``box`` (zero,
        False, 0 where nothing was recovered), as a new array."""
        y0, y1, x0, x1 = box
        channels, dtype = _KINDS[kind]
        if t in self.boxes and self.boxes[t] == box:
            same: np.ndarray = getattr(self, kind)[t]
            return same
        out = np.zeros((y1 - y0, x1 - x0) + channels, dtype)
        if t not in self.boxes:
            return out
        stored = getattr(self, kind)[t]
        sy0, sy1, sx0, sx1 = self.boxes[t]
        cy0, cy1, cx0, cx1 = max(y0, sy0), min(y1, sy1), max(x0, sx0), min(x1, sx1)
        if cy1 > cy0 and cx1 > cx0:
            out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = stored[
                cy0 - sy0 : cy1 - sy0, cx0 - sx0 : cx1 - sx0
            ]
        return out


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


def _squared(vectors: np.ndarray) -> np.ndarray:
    """Squared length of 2-vectors (ndarray[..., 2]): ndarray[...]. (Written out: a reduction over a
    last axis of 2 or 3 is some twenty times slower in NumPy than the same arithmetic on its columns.)"""
    out: np.ndarray = vectors[..., 0] ** 2 + vectors[..., 1] ** 2
    return out


def _length(vectors: np.ndarray) -> np.ndarray:
    """Length of 2-vectors (ndarray[..., 2]): ndarray[...]."""
    out: np.ndarray = np.sqrt(_squared(vectors))
    return out


def _largest(magnitudes: np.ndarray) -> np.ndarray:
    """Largest of each pixel's three values (ndarray[..., 3] float, none below +0.0: magnitudes):
    ndarray[...], the same numbers as ``np.maximum`` over them. (Compared as unsigned integers, which
    order as such floats do, a NaN above everything as ``np.maximum`` would return it: NumPy compares
    strided integers several times faster than floats.)"""
    bits = np.ascontiguousarray(magnitudes).view(f"u{magnitudes.dtype.itemsize}")
    out = np.maximum(bits[..., 0], bits[..., 1])
    np.maximum(out, bits[..., 2], out=out)
    found: np.ndarray = out.view(magnitudes.dtype)
    return found


def _mean(rgb: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
    """The mean of each pixel's three values (ndarray[N, 3]), each times ``gain`` (ndarray[3]) first
    when given: ndarray[N], the same numbers as ``(rgb * gain).mean(-1)`` (summed in the same order)."""
    if gain is None:
        out: np.ndarray = (rgb[:, 0] + rgb[:, 1] + rgb[:, 2]) / np.float32(3)
    else:
        out = (rgb[:, 0] * gain[0] + rgb[:, 1] * gain[1] + rgb[:, 2] * gain[2]) / np.float32(3)
    return out


def _beyond(rgb: np.ndarray, floor: float) -> np.ndarray:
    """Whether each of a pixel's three values (ndarray[N, 3]) exceeds ``floor`` in magnitude: ndarray[N]."""
    magnitude = np.abs(rgb)
    out: np.ndarray = (magnitude[:, 0] > floor) & (magnitude[:, 1] > floor) & (magnitude[:, 2] > floor)
    return out


def membrane_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill where ``known`` is False by push-pull over an image pyramid (a smooth membrane-like
    interpolation from the known pixels). values ndarray[H, W, C] float32, known ndarray[H, W] bool, or
    ndarray[H, W, C] bool to give each channel known pixels of its own."""
    if known.all() or not known.any():
        return values if known.all() else np.zeros_like(values)
    w = known.astype(np.float32).reshape(known.shape[0], known.shape[1], -1)
    channels = w.shape[2]
    # one known mask for several channels is repeated per channel where it meets them (the same
    # numbers: NumPy broadcasts over a short last axis some ten times slower)
    repeat = values.shape[2] if channels == 1 and values.ndim == 3 and values.shape[2] > 1 else 1

    def wide(x: np.ndarray) -> np.ndarray:
        return cv2.merge([x] * repeat).reshape(x.shape[0], x.shape[1], repeat) if repeat > 1 else x

    sums: list[np.ndarray] = [values * wide(w)]
    weights: list[np.ndarray] = [w]
    while min(weights[-1].shape[:2]) > 1:
        h, wd = weights[-1].shape[:2]
        size = (max(1, wd // 2), max(1, h // 2))
        sums.append(cv2.resize(sums[-1], size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1))
        weights.append(
            cv2.resize(weights[-1], size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], channels)
        )
    level = sums[-1] / wide(np.maximum(weights[-1], 1e-6))
    for s, wt in zip(reversed(sums[:-1]), reversed(weights[:-1]), strict=True):
        h, wd = wt.shape[:2]
        up = cv2.resize(level, (wd, h), interpolation=cv2.INTER_LINEAR).reshape(h, wd, -1)
        own = s / wide(np.maximum(wt, 1e-6))
        # a cell with any known pixel mostly keeps its own mean (np.clip written out, its lower bound
        # left out: the weights, means of 0 and 1, are never below 0)
        alpha = wide(np.minimum(wt * 4.0, 1.0))
        level = alpha * own + (1.0 - alpha) * up
    out: np.ndarray = np.where(wide(w) > 0 if repeat > 1 else known.reshape(w.shape), values, level)
    return out


def _homography_flow(
    flow: np.ndarray, usable: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Fit the background's motion to ``flow`` at ``usable`` pixels.

    Returns:
        (the fitted flow ndarray[H, W, 2], or None when too few pixels; inlier mask ndarray[H, W] bool;
        the homography ndarray[3, 3] it is made from (:func:`_plane_flow`), or None).
    """
    h, w = usable.shape
    stride = max(1, int(np.sqrt(usable.sum() / 2500.0)))
    ys, xs = np.nonzero(usable[::stride, ::stride])
    ys, xs = ys * stride, xs * stride
    inliers = np.zeros((h, w), bool)
    if len(xs) < 12:
        return None, inliers, None
    src = np.stack([xs, ys], 1).astype(np.float32)
    dst = src + flow[ys, xs]
    matrix, _ = cv2.findHomography(src, dst, cv2.RANSAC, INLIER, maxIters=500, confidence=0.995)
    if matrix is None:
        return None, inliers, None
    fitted = _plane_flow(matrix, (h, w))
    residual = _length(flow - fitted)
    inliers = usable & (residual < INLIER)
    return fitted, inliers, matrix


def _plane_flow(matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The motion a homography (ndarray[3, 3]) gives each pixel of a grid of ``shape``: ndarray[h, w, 2]
    float32 (the same numbers each time: a pair keeps the matrix, not the field, until it is used)."""
    grid, gx, gy = _grid(shape)
    pts = grid @ matrix.T.astype(np.float32)
    z = pts[..., 2]
    z = np.where(np.abs(z) < 1e-6, 1e-6, z)
    out = np.empty(shape + (2,), np.float32)
    out[..., 0] = pts[..., 0] / z - gx
    out[..., 1] = pts[..., 1] / z - gy
    return out


@lru_cache(maxsize=8)
def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pixel's homogeneous coordinates ``(x, y, 1)`` (ndarray[h, w, 3] float32), and ``x`` and ``y``
    (ndarray[h, w] each), read-only: shared by every plane fitted at that proxy size."""
    h, w = shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.stack([gx, gy, np.ones_like(gx)], -1)
    for array in (grid, gx, gy):
        array.flags.writeable = False
    return grid, gx, gy


def _sample(
    field: np.ndarray, xs: np.ndarray, ys: np.ndarray, interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """Samples of ``field`` (ndarray[H, W, C]) at points (clamped to the edge), bilinear unless told:
    ndarray[N, C]."""
    count = len(xs)
    if count == 0:
        return np.zeros((0,) + field.shape[2:], np.float32)
    cols = min(count, 4096)  # remap takes a 2-D map; rows of 4096 points stay inside its size limits
    rows = -(-count // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:count], my[:count] = xs, ys  # float32 as a 2-D map would hold them: the same samples
    out = cv2.remap(
        field,
        mx.reshape(rows, cols),
        my.reshape(rows, cols),
        interpolation,
        borderMode=cv2.BORDER_REPLICATE,
    )
    result: np.ndarray = out.reshape(rows * cols, -1)[:count]
    return result


def _dis() -> Any:
    """OpenCV's DIS optical flow as propagation measures it."""
    dis = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
        cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
    )
    dis.setFinestScale(0)  # matched on the proxy itself, not on half of it (the preset's)
    dis.setPatchStride(4)  # (the preset's 3: a quarter more time for no measured gain)
    return dis


def _consistent(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Forward-backward check: True where ``backward`` at the end of ``forward`` cancels it."""
    _, gx, gy = _grid(forward.shape[:2])
    back = cv2.remap(
        backward,
        gx + forward[..., 0],
        gy + forward[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    err = _squared(forward + back)
    bound = FB_A1 * (_squared(forward) + _squared(back)) + FB_A2
    out: np.ndarray = err < bound
    return out


#: A frame pair's place in a render, for :class:`MotionCache`: (the pair's first sequence position,
#: the plate region, the proxy size (width, height)).
PairKey = tuple[int, Box, tuple[int, int]]


class _PairMotion:
    """The motion measured between two neighbouring proxy frames ``a`` and ``b``: the flow each way,
    where it is trusted, each direction's motion layers, and (on demand) a layer's background motion
    and the scene flow. All of it depends on the two frames and their holes alone, never on the
    window, so windows that share the pair share it (read-only).

    Attributes:
        forward, backward (ndarray[h, w, 2]): measured flow a -> b and b -> a.
        trusted (tuple of ndarray[h, w] bool): where each is trusted (outside the grown holes, passing
            the forward-backward check).
        planes (tuple of lists of ndarray[h, w] bool): each direction's motion layers (:func:`_layers`),
            as the pixels that follow each plane.
        still: every plane 0 was fitted and moves less than ``STATIC_MOTION``.

    A plane's homography is kept until its background motion is made from it (the cache then holds
    the background alone).
    """

    def __init__(self, dis: Any, greys: tuple[np.ndarray, np.ndarray], grown: tuple[np.ndarray, np.ndarray]):
        self.grown = grown
        self.forward = dis.calc(greys[0], greys[1], None)
        self.backward = dis.calc(greys[1], greys[0], None)
        self.trusted = (
            ~grown[0] & _consistent(self.forward, self.backward),
            ~grown[1] & _consistent(self.backward, self.forward),
        )
        layers = (_layers(self.forward, self.trusted[0]), _layers(self.backward, self.trusted[1]))
        self.still = all(
            fitted is not None and _typical_motion(fitted, inliers) < STATIC_MOTION
            for fitted, inliers, _ in (layers[0][0], layers[1][0])
        )
        self.planes = tuple([inliers for _, inliers, _ in found] for found in layers)
        # each plane's homography, not its fitted field: a locked-off shot never asks for plane 0's
        self._fits = {
            (d, k): matrix for d, found in enumerate(layers) for k, (_, _, matrix) in enumerate(found)
        }
        self._backgrounds: dict[tuple[int, int], np.ndarray] = {}
        self._scene: dict[int, np.ndarray] = {}

    def background(self, direction: int, layer: int) -> np.ndarray:
        """Plane ``layer``'s motion everywhere (direction 0: a -> b, 1: b -> a): ndarray[h, w, 2]."""
        key = (direction, min(layer, len(self.planes[direction]) - 1))
        if key not in self._backgrounds:
            flow = (self.forward, self.backward)[direction]
            matrix, inliers = self._fits.pop(key), self.planes[direction][key[1]]
            fitted = None if matrix is None else _plane_flow(matrix, inliers.shape)
            self._backgrounds[key] = _background(flow, fitted, inliers, self.grown[direction])
        return self._backgrounds[key]

    def scene(self, direction: int) -> np.ndarray:
        """The measured flow where trusted, interpolated smoothly elsewhere: ndarray[h, w, 2]."""
        if direction not in self._scene:
            flow = (self.forward, self.backward)[direction]
            self._scene[direction] = membrane_fill(flow, self.trusted[direction])
        return self._scene[direction]


class MotionCache:
    """Each frame pair's motion, measured once for a whole render and shared by the windows that read
    the pair over the same region at the same proxy size (their inputs are then identical: the plate
    as shot and the matte's holes), so overlapping windows do not measure the frames they share again.

    Memory stays bounded: :meth:`forget_before` drops the pairs no later window reads, and
    :meth:`forget_other` those of another region (a moving hole's next window reads none of them).
    """

    def __init__(self) -> None:
        self._pairs: dict[PairKey, _PairMotion] = {}

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, key: object) -> bool:
        return key in self._pairs

    def pair(self, key: PairKey, measure: Callable[[], _PairMotion]) -> _PairMotion:
        """The pair at ``key``, measured by ``measure()`` if it is not kept yet."""
        found = self._pairs.get(key)
        if found is None:
            found = self._pairs[key] = measure()
        return found

    def forget_before(self, position: int) -> None:
        """Drop the pairs whose first frame lies before sequence ``position``."""
        for key in [k for k in self._pairs if k[0] < position]:
            del self._pairs[key]

    def forget_other(self, region: Box, size: tuple[int, int]) -> None:
        """Drop the pairs measured over another region or at another proxy size."""
        for key in [k for k in self._pairs if k[1:] != (region, size)]:
            del self._pairs[key]


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

    Pixels whose trusted flow follows no layer (by more than ``MOVER`` proxy pixels) are *movers*: a
    person, a car, anything moving on its own, or background that no plane describes (strong parallax,
    water, foliage). Where there are any, a third hypothesis joins the layers, the *scene* flow: the
    measured flow wherever it is trusted, interpolated smoothly into the holes. It carries what moves
    with its surroundings rather than with a plane.

    Args:
        pairs: each neighbouring pair's measured motion, frame ``i`` to ``i + 1``.
        shape: the proxy's (h, w).
        each: how the pairs' layers, movers and scene flow are made (``map``, or a thread pool's).

    Attributes:
        forward, backward (list[list[ndarray[h, w, 2]]]): per layer, per frame pair ``(i, i + 1)``.
        second (list[ndarray[h, w] bool]): per frame, the pixels seen moving with layer 1.
        movers (list[ndarray[h, w] bool]): per frame, the pixels seen moving with no layer.
        scene_forward, scene_backward (list[ndarray[h, w, 2]]): per frame pair, the scene flow (empty
            when no frame has movers).
        locked_off: layer 0 does not move.
    """

    def __init__(self, pairs: list[_PairMotion], shape: tuple[int, int], each: Callable[..., Any] = map):
        n = len(pairs) + 1
        self.locked_off = all(p.still for p in pairs)
        self.forward: list[list[np.ndarray]] = [[]]
        self.backward: list[list[np.ndarray]] = [[]]
        self.second: list[np.ndarray] = []
        self.movers: list[np.ndarray] = [np.zeros(shape, bool) for _ in range(n)]
        self.scene_forward: list[np.ndarray] = []
        self.scene_backward: list[np.ndarray] = []
        if not pairs:
            return
        second = any(len(p.planes[0]) > 1 or len(p.planes[1]) > 1 for p in pairs)
        self.forward = [[] for _ in range(2 if second else 1)]
        self.backward = [[] for _ in range(2 if second else 1)]
        # which pixels of each frame move with the second plane (its inliers, from either pair)
        self.second = [np.zeros(shape, bool) for _ in range(n)]
        for i, p in enumerate(pairs):
            if len(p.planes[0]) > 1:
                self.second[i] |= p.planes[0][1]
            if len(p.planes[1]) > 1:
                self.second[i + 1] |= p.planes[1][1]
        zero = np.zeros(shape + (2,), np.float32)
        layers, locked_off = len(self.forward), self.locked_off

        def motions(p: _PairMotion) -> list[tuple[np.ndarray, np.ndarray]]:
            """The pair's motion in each layer, forward and backward (each pair by ``each``: a pair's
            layers are made on one thread, pairs side by side)."""
            return [
                (zero, zero) if k == 0 and locked_off else (p.background(0, k), p.background(1, k))
                for k in range(layers)
            ]

        for found in each(motions, pairs):
            for k, (forward, backward) in enumerate(found):
                self.forward[k].append(forward)
                self.backward[k].append(backward)

        def moving(i: int) -> tuple[np.ndarray, np.ndarray]:
            p = pairs[i]
            return (
                _movers(p.forward, [layer[i] for layer in self.forward], p.trusted[0]),
                _movers(p.backward, [layer[i] for layer in self.backward], p.trusted[1]),
            )

        for i, (ahead, behind) in enumerate(each(moving, range(len(pairs)))):
            self.movers[i] |= ahead
            self.movers[i + 1] |= behind
        if any(m.any() for m in self.movers):
            for forward, backward in each(lambda p: (p.scene(0), p.scene(1)), pairs):
                self.scene_forward.append(forward)
                self.scene_backward.append(backward)


def _movers(flow: np.ndarray, layers: list[np.ndarray], trusted: np.ndarray) -> np.ndarray:
    """Trusted pixels whose flow follows none of the ``layers``' motions (by more than ``MOVER`` proxy
    pixels and a fifth of that motion), specks removed, edges grown by a pixel."""
    apart = np.full(trusted.shape, True)
    for motion in layers:
        bound = np.maximum(MOVER, 0.2 * _length(motion))
        apart &= _length(flow - motion) > bound
    found = (apart & trusted).astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    out: np.ndarray = cv2.dilate(cv2.morphologyEx(found, cv2.MORPH_OPEN, kernel), kernel) > 0
    return out


def _typical_motion(fitted: np.ndarray, inliers: np.ndarray) -> float:
    """The median length of a fitted motion over the pixels that follow it (proxy pixels)."""
    if not inliers.any():
        return float("inf")
    return float(np.median(_length(fitted[inliers])))


def _layers(
    flow: np.ndarray, usable: np.ndarray
) -> list[tuple[np.ndarray | None, np.ndarray, np.ndarray | None]]:
    """The dominant plane's fitted motion, inliers and homography (:func:`_homography_flow`), and a
    second plane's where the pixels the first does not explain are many and move differently (by more
    than a pixel)."""
    fitted, inliers, matrix = _homography_flow(flow, usable)
    layers = [(fitted, inliers, matrix)]
    rest = usable & ~inliers
    if fitted is not None and rest.sum() >= max(40, 0.02 * usable.sum()):
        fitted2, inliers2, matrix2 = _homography_flow(flow, rest)
        if fitted2 is not None and inliers2.sum() >= 30:
            apart = float(_length(fitted2 - fitted)[inliers2].mean())
            if apart > 0.75:
                layers.append((fitted2, inliers2, matrix2))
    return layers


def _background(
    flow: np.ndarray, fitted: np.ndarray | None, inliers: np.ndarray, hole: np.ndarray
) -> np.ndarray:
    """The background's motion everywhere: measured at the inliers, fitted plus interpolated residual
    elsewhere (without a fit: the measured flow outside the hole, interpolated into it)."""
    if fitted is None:
        return membrane_fill(flow, ~hole) if (~hole).any() else np.zeros_like(flow)
    residual = membrane_fill(
        np.where(np.stack([inliers] * 2, -1), flow - fitted, 0.0).astype(np.float32), inliers
    )
    out: np.ndarray = (fitted + residual).astype(np.float32)
    return out


@dataclass
class _Trace:
    """One direction's tracing from frame ``t``: for each hole point, the frame index where it was
    found known (-1: none) and its proxy position there; for each frame, the ring points known there
    and their positions (to compare exposure)."""

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
) -> tuple[_Trace, _Trace]:
    """Follow points of frame ``t`` frame by frame in ``direction`` along one layer's motion
    (``forward``/``backward`` per frame pair; ``static``: it is zero): hole points until each lands on
    a known pixel, ring points (known in ``t``) alongside them, for as long as hole points remain.

    Returns:
        the nearest frame where each point is known, and a *witness*: the next frame where it is known
        again, ``WITNESS`` to ``3 * WITNESS`` frames further (a second look at the same scene point, to
        tell which of two disagreeing sources is right).
    """
    n = len(known)
    count = len(xs)
    source = np.full((2, count), -1, np.int32)
    found_x = np.zeros((2, count), np.float32)
    found_y = np.zeros((2, count), np.float32)
    # the points still followed (ascending) and where they are, kept compact: each step filters them
    idx = np.arange(count)
    px, py = xs.astype(np.float32), ys.astype(np.float32)
    h, w = known[0].shape
    ring_at: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    ring = is_ring
    s = t
    while not ring.all():  # (some hole point is still followed)
        nxt = s + direction
        if not 0 <= nxt < n:
            break
        if not static:
            flows = forward[s] if direction > 0 else backward[nxt]
            step = _sample(flows, px, py)
            px = px + step[:, 0]
            py = py + step[:, 1]
            inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
            if not inside.all():  # (each filter below is skipped where it would keep every point)
                idx, px, py, ring = (np.compress(inside, a) for a in (idx, px, py, ring))
        # the nearest proxy pixel's flat index, in float32 (exact: a proxy has far fewer than 2**24
        # pixels), each lookup by np.take (np.compress and np.take: the same elements as indexing by a
        # mask or an index array, in a fraction of the time)
        nearest = np.rint(py) * np.float32(w)
        nearest += np.rint(px)
        at = np.take(known[nxt].reshape(-1), nearest.astype(np.intp))
        on_ring = at & ring
        ring_at[nxt] = (np.compress(on_ring, idx), np.compress(on_ring, px), np.compress(on_ring, py))
        first = np.take(source[0], idx)
        gap = np.abs(nxt - first)
        hole_at = at & ~ring
        for rank, hit in enumerate((hole_at & (first < 0), hole_at & (first >= 0) & (gap >= WITNESS))):
            if hit.any():
                found = np.compress(hit, idx)
                source[rank, found] = nxt
                found_x[rank, found] = np.compress(hit, px)
                found_y[rank, found] = np.compress(hit, py)
        going = ~((first >= 0) & ((np.take(source[1], idx) >= 0) | (gap >= 3 * WITNESS)))
        if not going.all():
            idx, px, py, ring = (np.compress(going, a) for a in (idx, px, py, ring))
        s = nxt
    return (
        _Trace(source[0], found_x[0], found_y[0], ring_at),
        _Trace(source[1], found_x[1], found_y[1], ring_at),
    )


def _gain_bounds(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The range an exposure gain is clamped to, per channel, given the ratio of the target frame's
    level to the source's (ndarray[3]): [2/3, 3/2] while the frames' levels are within that of each
    other, else stretched to 2/3 and 3/2 of that ratio, so that the gain follows a single bright or
    dark frame (a flash, a strobe) or a fade, while a ring whose median lies is still held near 1."""
    ratio = np.where((levels >= 2.0 / 3.0) & (levels <= 1.5), 1.0, levels).astype(np.float32)
    low: np.ndarray = np.float32(2.0 / 3.0) * np.minimum(ratio, np.float32(1.0))
    high: np.ndarray = np.float32(1.5) * np.maximum(ratio, np.float32(1.0))
    return low, high


def _level(small: np.ndarray, known: np.ndarray) -> np.ndarray:
    """A frame's exposure level, per channel: the mean of its known proxy pixels (ndarray[3])."""
    if not known.any():
        return np.ones(3, np.float32)
    # (np.compress: the same pixels, in the same order, as small[known], in less time)
    chosen = np.compress(known.reshape(-1), small.reshape(-1, small.shape[-1]), 0)
    if chosen.dtype != np.float32:
        return np.maximum(chosen.mean(0), 1e-3).astype(np.float32)
    # chosen.mean(0), the same numbers in a fifth of the time: OpenCV sums the rows one after another in
    # float32, as NumPy does along a first axis, and the total is divided as np.mean divides it
    total = cv2.reduce(chosen, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32F).reshape(-1)
    mean = np.true_divide(total, np.intp(len(chosen)), out=total, casting="unsafe")
    out: np.ndarray = np.maximum(mean, 1e-3).astype(np.float32)
    return out


def _exposure_gain(target: np.ndarray, warped: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
    """Per-channel gain that matches ``warped`` ring values (ndarray[N, 3]) to ``target``'s: the median
    of the per-point ratios (robust to ring points that landed on another surface), clamped to
    :func:`_gain_bounds` of ``levels`` (the target frame's level over the source's; None: alike, so
    [2/3, 3/2]); 1 where the ring is too small to tell or the change is below half a percent."""
    valid = _beyond(warped, 1e-3) & _beyond(target, 1e-3)
    if valid.sum() < 16:
        return np.ones(3, np.float32)
    # the median per channel, by hand: np.median's checks cost more than the sort on a ring this size
    ratios = np.compress(valid, target.T, 1) / np.compress(valid, warped.T, 1)
    half = ratios.shape[1] // 2
    if ratios.shape[1] % 2:
        gain = np.partition(ratios, half, axis=1)[:, half]
    else:
        middle = np.partition(ratios, (half - 1, half), axis=1)
        gain = (middle[:, half - 1] + middle[:, half]) / 2
    low, high = _gain_bounds(np.ones(3, np.float32) if levels is None else levels)
    gain = np.clip(gain, low, high)
    out: np.ndarray = np.where(np.abs(gain - 1.0) < 0.005, 1.0, gain).astype(np.float32)
    return out


@contextmanager
def _mapper(jobs: int, name: str) -> Iterator[Callable[..., Any]]:
    """``map`` where one thread will do, else a pool's ``map`` over as many threads as OpenCV may use
    (at most ``jobs``), its threads named ``name``."""
    workers = max(1, min(cv2.getNumThreads(), jobs))
    if workers == 1:
        yield map
        return
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        yield pool.map


class Propagator:
    """The motion of one window (plus reach), measured once; :meth:`fill` carries pixels along it.

    Args:
        rgb (list of ndarray[h, w, 3] float32): every frame of the window plus its reach, over
            ``region``, in plate units (finite).
        holes (list of ndarray[h, w] bool): the same frames' holes (True = to fill); the motion is
            measured around them.
        settings: the proxy size (``reach`` is the caller's: it decides how many frames are passed).
        region: where ``rgb`` lies on the plate, ``(y0, y1, x0, x1)``.
        cache: frame pairs measured by earlier windows of the same render, and where this one's are
            kept (None: measure every pair here).
        start: the sequence position of ``rgb[0]`` (what ``cache`` knows a pair by).
    """

    def __init__(
        self,
        rgb: list[np.ndarray],
        holes: list[np.ndarray],
        settings: PropagationSettings,
        *,
        region: Box,
        cache: MotionCache | None = None,
        start: int = 0,
    ):
        h, w = holes[0].shape
        scale = min(1.0, settings.proxy / max(h, w))
        self.size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
        self.scale = (self.size[0] / w, self.size[1] / h)
        self.region = region
        cache = MotionCache() if cache is None else cache
        shape = (self.size[1], self.size[0])
        # pairs are measured, and their motion layers made, as many at once as OpenCV may use threads
        # (DIS runs on one core, and OpenCV and NumPy let go of the interpreter in their loops): a
        # pair's motion is the same whichever thread makes it
        with _mapper(len(rgb) - 1, "combcn-motion") as each:
            self.motion = _Motion(self._pairs(rgb, holes, cache, start, each), shape, each)

    def _pairs(
        self,
        rgb: list[np.ndarray],
        holes: list[np.ndarray],
        cache: MotionCache,
        start: int,
        each: Callable[..., Any],
    ) -> list[_PairMotion]:
        """Each neighbouring pair's motion, from ``cache`` where it is kept, else measured (and kept),
        the frames and pairs made by ``each`` (``map``, or a thread pool's), each thread with its own
        DIS."""
        cache.forget_other(self.region, self.size)
        local = threading.local()
        frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # a frame's grey and grown hole, once

        def frame(i: int) -> tuple[np.ndarray, np.ndarray]:
            if i not in frames:
                grown = cv2.dilate(self._small(holes[i]).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
                frames[i] = (_grey(rgb[i], self.size), grown)
            return frames[i]

        def measure(i: int) -> _PairMotion:
            if not hasattr(local, "dis"):
                local.dis = _dis()
            (grey_a, grown_a), (grey_b, grown_b) = frame(i), frame(i + 1)
            return _PairMotion(local.dis, (grey_a, grey_b), (grown_a, grown_b))

        keys = [(start + i, self.region, self.size) for i in range(len(rgb) - 1)]
        missing = [i for i, key in enumerate(keys) if key not in cache]
        needed = sorted({j for i in missing for j in (i, i + 1)})

        def pair(i: int) -> _PairMotion:
            return cache.pair(keys[i], partial(measure, i))

        list(each(frame, needed))  # (each frame once, before the pairs that share it)
        return list(each(pair, range(len(keys))))

    def _small(self, hole: np.ndarray) -> np.ndarray:
        """A proxy pixel is hole if any plate pixel under it is."""
        out: np.ndarray = cv2.resize(hole.astype(np.float32), self.size, interpolation=cv2.INTER_AREA) > 0
        return out

    def fill(
        self, rgb: list[np.ndarray], holes: list[np.ndarray], targets: list[int], *, scene: bool = True
    ) -> Propagated:
        """Fill the holes of ``targets`` from the frames that show what they hide.

        Args:
            rgb, holes: as for the constructor, or the same frames with more of them known (a
                synthesised key frame's fill pasted in, its hole cleared).
            targets: indices into ``rgb`` of the frames to fill.
            scene: also try the scene flow where there are movers (False: the background layers
                alone; what is carried is a key frame's invented background).

        Returns:
            Propagated: per target, the recovered values, which pixels were recovered, and from where.
        """
        # frames and targets are independent: as many at once as OpenCV may use threads (NumPy and
        # OpenCV let go of the interpreter in their loops); each one's result is the same however they
        # are spread
        with _mapper(len(targets), "combcn-propagate") as each:
            return self._fill(rgb, holes, targets, scene, each)

    def _fill(
        self,
        rgb: list[np.ndarray],
        holes: list[np.ndarray],
        targets: list[int],
        scene: bool,
        each: Callable[..., Any],
    ) -> Propagated:
        """:meth:`fill`, the frames' proxies and each target's fill made by ``each`` (``map``, or a thread
        pool's)."""
        motion = self.motion
        region = self.region
        edge = np.ones((2 * EDGE + 1, 2 * EDGE + 1), np.uint8)

        def frame(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            """Frame ``i``'s plate, proxy hole, known proxy pixels, proxy and exposure level (the gain
            between two frames may follow it: a flash, a fade)."""
            plate = np.ascontiguousarray(rgb[i], np.float32)  # OpenCV copies strided images per call
            small_hole = self._small(holes[i])
            known_i = ~(cv2.dilate(small_hole.astype(np.uint8), edge) > 0)
            small = cv2.resize(plate, self.size, interpolation=cv2.INTER_AREA)
            return plate, small_hole, known_i, small, _level(small, known_i)

        frames = list(each(frame, range(len(rgb))))
        rgb, small_holes, known, small_rgb, levels = ([f[k] for f in frames] for k in range(5))
        out = Propagated(self.region, {}, {}, {}, {}, motion.locked_off)
        # with two layers, a layer's point is known only where that layer is what the frame shows
        layer_known = [known]
        if len(motion.forward) > 1:
            seconds = [cv2.dilate(m.astype(np.uint8), edge) > 0 for m in motion.second]
            layer_known = [
                [k & ~m for k, m in zip(known, seconds, strict=True)],
                [k & m for k, m in zip(known, seconds, strict=True)],
            ]
        flows = [
            (motion.forward[k], motion.backward[k], k == 0 and motion.locked_off, layer_known[k])
            for k in range(len(motion.forward))
        ]
        if motion.scene_forward and scene:
            flows.append((motion.scene_forward, motion.scene_backward, False, known))
        ring_kernel = np.ones((9, 9), np.uint8)

        def one(t: int) -> tuple[Box, _Packed, _Packed, _Packed] | None:
            hy, hx = np.nonzero(holes[t])
            if len(hy) == 0:
                return None
            track = cv2.dilate(small_holes[t].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            ring = (cv2.dilate(track.astype(np.uint8), ring_kernel) > 0) & known[t]
            ys, xs = np.nonzero(track | ring)
            is_ring = ring[ys, xs]
            pixels = _Pixels(hy, hx, self.scale, ys, xs, small_rgb[t])
            hypotheses = []
            for forward, backward, static, own in flows:
                (fwd, fwd_witness), (bwd, bwd_witness) = (
                    _trace(forward, backward, static, own, t, xs, ys, is_ring, d) for d in (1, -1)
                )
                near = [_candidates(rgb, small_rgb, levels, pixels, t, xs, ys, tr) for tr in (fwd, bwd)]
                # where the two nearest sources disagree, two more looks along the same traces
                spread = _disagreement(*near)  # inf where a side has no source: nothing to settle there
                disputed = np.flatnonzero(np.isfinite(spread) & (spread > AGREE))
                witnesses = [
                    _candidates(rgb, small_rgb, levels, pixels, t, xs, ys, tr, disputed)
                    for tr in (fwd_witness, bwd_witness)
                ]
                hypotheses.append(_blend(near[0], near[1], spread, witnesses, pixels))
            fill = _combine(hypotheses, pixels, motion.locked_off)
            if motion.locked_off and scene:  # (the key frames' carry moves invented content: no floor)
                small = (small_rgb, known, levels)
                fill = _floor(rgb, holes, small, t, pixels, (ys[is_ring], xs[is_ring]), fill, hypotheses[0])
            value, source = fill.value, fill.source
            box = pixels.box
            got = np.flatnonzero(source >= 0)
            where = pixels.flat[got]  # (ascending: the hole pixels are in row-major order)
            shape = (box[1] - box[0], box[3] - box[2])
            return (  # packed here, on the worker, from the recovered pixels alone (no dense box)
                (box[0] + region[0], box[1] + region[0], box[2] + region[2], box[3] + region[2]),
                _Packed.at(shape + (3,), where, np.take(value, got, 0).astype(np.float32, copy=False)),
                _Packed.at(shape, where, np.ones(len(got), bool)),
                _Packed.at(shape, where, (source[got] - t).astype(np.float32)),
            )

        results = list(each(one, targets))
        for t, result in zip(targets, results, strict=True):  # in the targets' order
            if result is not None:
                out.boxes[t] = result[0]
                for kind, packed in zip(_KINDS, result[1:], strict=True):
                    getattr(out, kind)[t] = packed  # (kept as it is: set as an array, it is packed)
        return out


def propagate(
    rgb: list[np.ndarray],
    holes: list[np.ndarray],
    targets: list[int],
    settings: PropagationSettings,
    *,
    region: Box,
) -> Propagated:
    """Measure the motion and fill the holes of ``targets`` from the frames that show what they hide
    (:class:`Propagator` in one call)."""
    return Propagator(rgb, holes, settings, region=region).fill(rgb, holes, targets)


class _Pixels:
    """The hole pixels of one target (plate pixels of the region, row-major) and where they lie among
    the proxy points traced for it, shared by every trace of that target.

    Attributes:
        hy, hx (ndarray[N] int): plate pixel rows and columns within the region.
        gx, gy (ndarray[N] float32): the same, as coordinates.
        origin, span: the proxy box around the traced points: its corner ``(oy, ox)`` and size
            ``(bh, bw)``.
        px, py (ndarray[N] float32): the pixels' positions in that box (proxy pixel centres mapped).
        nearest (ndarray[N] int): the flat index in the box of each pixel's nearest proxy point (-1:
            off the box).
        box: the pixels' bounding box ``(y0, y1, x0, x1)`` within the region.
        points (ndarray[P] int): the flat index in the proxy box of each traced point.
        colours (ndarray[P, 3] float32): the traced points' colours in the target's proxy (when given).
        cell_grid: the size ``(gh, gw)`` of the grid of ``SPREAD_CELL`` cells over the proxy box.
        cells (ndarray[P] int): the flat index in that grid of each traced point's cell.
        cx, cy (ndarray[N] float32): the pixels' positions on that grid (where the cells of
            :func:`_smooth` and :func:`_ring_cells` are sampled).
        coordinates (ndarray[N, 6] float32): ``px``, ``py``, ``cx``, ``cy``, ``gx``, ``gy`` side by side.
    """

    def __init__(
        self,
        hy: np.ndarray,
        hx: np.ndarray,
        scale: tuple[float, float],
        ys: np.ndarray,
        xs: np.ndarray,
        target: np.ndarray | None = None,
    ):
        self.hy, self.hx = hy, hx
        self.gx, self.gy = hx.astype(np.float32), hy.astype(np.float32)
        self.origin = oy, ox = int(ys.min()), int(xs.min())
        self.span = bh, bw = int(ys.max()) + 1 - oy, int(xs.max()) + 1 - ox
        self.px = (self.gx + 0.5) * scale[0] - 0.5 - ox
        self.py = (self.gy + 0.5) * scale[1] - 0.5 - oy
        rx, ry = np.rint(self.px).astype(np.int64), np.rint(self.py).astype(np.int64)
        self.nearest = np.where((rx >= 0) & (rx < bw) & (ry >= 0) & (ry < bh), ry * bw + rx, -1)
        self.scale = scale
        self.box = y0, y1, x0, x1 = (int(hy.min()), int(hy.max()) + 1, int(hx.min()), int(hx.max()) + 1)
        #: each pixel's flat index in the bounding box (one index, not two, per lay-out and look-up)
        self.flat = (hy - y0) * (x1 - x0) + (hx - x0)
        self.points = (ys - oy) * bw + xs - ox
        self.colours = None if target is None else target[ys, xs]
        self.cell_grid = _, gw = -(-bh // SPREAD_CELL), -(-bw // SPREAD_CELL)
        self.cells = ((ys - oy) // SPREAD_CELL) * gw + (xs - ox) // SPREAD_CELL
        self.cx, self.cy = (self.px + 0.5) / SPREAD_CELL - 0.5, (self.py + 0.5) / SPREAD_CELL - 0.5
        self.coordinates = np.stack([self.px, self.py, self.cx, self.cy, self.gx, self.gy], 1)

    def grid(self, values: np.ndarray, fill: float = 0) -> np.ndarray:
        """Per-pixel ``values`` (ndarray[N] or ndarray[N, C]) laid out over the bounding box (ndarray[h, w]
        or ndarray[h, w, C]), ``fill`` elsewhere."""
        y0, y1, x0, x1 = self.box
        out = np.full((y1 - y0, x1 - x0) + values.shape[1:], fill, values.dtype)
        if values.ndim == 1:
            out.reshape(-1)[self.flat] = values
        else:  # (each pixel's values as one item: a row at a time is several times slower)
            item = np.dtype((np.void, values.itemsize * values.shape[1]))
            out.view(item).reshape(-1)[self.flat] = np.ascontiguousarray(values).view(item).reshape(-1)
        return out

    def of(self, grid: np.ndarray) -> np.ndarray:
        """The values of a bounding-box grid (ndarray[h, w] or ndarray[h, w, C]) at the hole pixels:
        ndarray[N] or ndarray[N, C]."""
        out: np.ndarray = np.take(
            np.ascontiguousarray(grid).reshape(len(grid) * grid.shape[1], -1), self.flat, 0
        )
        return out.reshape(out.shape[0]) if grid.ndim == 2 else out


#: One trace's result per hole pixel: values (ndarray[N, 3], exposure matched), temporal distance to
#: the source (inf: none), the source's index (-1: none), and the misfit around it: how far the source,
#: carried along the same motion, differs from the target on the ring of known pixels near the hole
#: (relative, interpolated in from the ring; nan: not measured).
_Candidate = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class _Fill(NamedTuple):
    """One motion hypothesis' fill per hole pixel (:func:`_blend`).

    Attributes:
        value (ndarray[N, 3]): the value.
        source (ndarray[N]): the frame it (mostly) came from (-1: nothing recovered).
        doubt (ndarray[N]): the disagreement left between the two sources plus their misfit.
        two_sided (ndarray[N] bool): it had a source on both sides.
        distance (ndarray[N]): how many frames away its main source lies.
        misfit (ndarray[N]): the misfit of what was taken (nan: not measured).
        disputed (ndarray[N] bool): its two sources disagreed (by more than ``AGREE``).
    """

    value: np.ndarray
    source: np.ndarray
    doubt: np.ndarray
    two_sided: np.ndarray
    distance: np.ndarray
    misfit: np.ndarray
    disputed: np.ndarray


def _candidates(
    rgb: list[np.ndarray],
    small_rgb: list[np.ndarray],
    levels: list[np.ndarray],
    pixels: _Pixels,
    t: int,
    xs: np.ndarray,
    ys: np.ndarray,
    trace: _Trace,
    only: np.ndarray | None = None,
) -> _Candidate:
    """Sample, at plate resolution, the sources one trace found for frame ``t``'s hole pixels (those
    indexed by ``only`` when given; the rest get no source).

    Each hole pixel takes the source of its nearest traced proxy point; its displacement is that of the
    points that reached the same source, interpolated bilinearly from those points alone (weights
    renormalised where a neighbour went to another source), plus the shift that best aligns the ring
    of known pixels around the hole with the source (:func:`_align`); its value is the source frame's
    plate pixels there, bicubic, times the exposure gain between the frames (bounded by
    :func:`_gain_bounds` of the frames' ``levels``, ndarray[3] per frame: see :func:`_level`).
    """
    sx, sy = pixels.scale
    count = len(pixels.hy)
    value = np.zeros((count, 3), np.float32)
    misfit = np.full(count, np.nan, np.float32)
    if only is not None and len(only) == 0:
        return value, np.full(count, np.inf, np.float32), np.full(count, -1, np.int32), misfit
    # each hole pixel is served by the source of its nearest traced point
    bh, bw = pixels.span
    label = np.full(bh * bw + 1, -1, np.int32)  # the last: off the box
    flat = pixels.points
    label[flat] = trace.source
    if only is None:
        serving = np.take(label, pixels.nearest)
    else:  # (looked up at those pixels alone: a witness is wanted where the sources disagree)
        serving = np.full(count, -1, np.int32)
        serving[only] = label[pixels.nearest[only]]
    src_of = serving
    dist = np.abs(serving - t).astype(np.float32)
    dist[serving < 0] = np.inf
    # each traced point's displacement to where its source shows it, and a weight of 1
    # (in float32: a float32 less a small whole number rounds as its exact float64 difference does)
    moved = np.stack(
        [trace.x - xs.astype(np.float32), trace.y - ys.astype(np.float32), np.ones(len(xs), np.float32)], -1
    )
    served = serving if only is None else serving[only]
    # the pixels, and the traced points, of each source, in increasing order (one sort each, not a
    # comparison of every pixel per source)
    pixels_of, points_of = _groups(served), _groups(trace.source)
    disp = np.zeros((bh * bw, 3), np.float32)  # one source's points at a time, cleared after it
    rows = value.view(np.dtype((np.void, 12))).reshape(-1)  # a pixel's three values as one item
    # the ring points of t known in each source: where the trace put them, refined all at once (their
    # colours in t against the source's, exposure matched), then each source's exposure gain, all at once
    colours = small_rgb[t][ys, xs] if pixels.colours is None else pixels.colours
    sources = [s for s in pixels_of if s >= 0]
    none = (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))
    rings = [trace.ring_at.get(s, none) for s in sources]
    exposures = [levels[t] / levels[s] for s in sources]
    targets = [np.take(colours, ring_idx, 0) for ring_idx, _, _ in rings]
    shifts = _align_many(
        [
            (small_rgb[s], ring_x, ring_y, target, exposure)
            for s, (_, ring_x, ring_y), target, exposure in zip(
                sources, rings, targets, exposures, strict=True
            )
        ]
    )
    ring_sources = [
        _sample(small_rgb[s], ring_x + shift_x, ring_y + shift_y)
        for s, (_, ring_x, ring_y), (shift_x, shift_y) in zip(sources, rings, shifts, strict=True)
    ]
    gains = _exposure_gains(targets, ring_sources, np.stack(exposures) if sources else np.ones((0, 3)))
    if not sources:
        return value, dist, src_of, misfit
    # each source's pixels, one run after another: per-source work (sampling its frame, its ring) is
    # done run by run, the arithmetic on every pixel once over all runs (the same numbers)
    runs = [pixels_of[s] if only is None else only[pixels_of[s]] for s in sources]
    counts = [len(run) for run in runs]
    ends = np.cumsum(counts).tolist()
    order = np.concatenate(runs)
    # the pixels' positions in the proxy box, on its cells and on the plate, in run order (each run a
    # slice; one np.take of them stacked costs a fraction of six gathers)
    px_o, py_o, cx_o, cy_o, gx_o, gy_o = np.take(pixels.coordinates, order, 0).T
    spread = np.empty((len(order), 3), np.float32)
    for i, s in enumerate(sources):
        pick = points_of.get(s, np.zeros(0, np.int64))
        at = flat[pick]
        disp[at] = np.take(moved, pick, 0)
        run = slice(ends[i] - counts[i], ends[i])
        spread[run] = _sample(disp.reshape(bh, bw, 3), px_o[run], py_o[run])
        disp[at] = 0.0
    weight = np.maximum(spread[:, 2].copy(), 1e-6)  # (np.maximum of a strided column is several times slower)
    shift = np.repeat(np.array(shifts, np.float32).reshape(-1, 2), counts, axis=0)
    dx, dy = spread[:, 0] / weight + shift[:, 0], spread[:, 1] / weight + shift[:, 1]
    at_x, at_y = gx_o + dx / sx, gy_o + dy / sy
    sampled = np.empty((len(order), 3), np.float32)
    # what the gain leaves on each ring, smoothed into the hole (-0.0, which adds nothing, for a ring
    # too small to tell), and the misfit
    shading = np.full((len(order), 3), -0.0, np.float32)
    for i, s in enumerate(sources):
        run = slice(ends[i] - counts[i], ends[i])
        sampled[run] = _sample(rgb[s], at_x[run], at_y[run], cv2.INTER_CUBIC)
        ring_idx, ring_target, ring_source, gain = rings[i][0], targets[i], ring_sources[i], gains[i]
        if len(ring_idx) < 16:  # too small a ring to tell
            continue
        left = ring_target - ring_source * gain
        size = _largest(np.abs(left))
        level = np.maximum(_largest(np.abs(ring_target)), 0.05)
        # what the gain leaves on the ring is mostly shading that varies across the frame (vignetting,
        # light falling off): its smooth part, from all but the worst fifth of the ring (points that
        # landed on another surface), is added in where it is under a quarter of the value (more is
        # another surface, not shading: a passer-by in the source frame must not be painted over)
        kept = size <= np.partition(size, int(0.8 * len(size)) - 1)[int(0.8 * len(size)) - 1]
        # one interpolation for both: the shading from the kept points, the misfit from all (a
        # witness is only compared by its value: its misfit is never read)
        cells = _ring_cells(
            pixels.cells[ring_idx], pixels.cell_grid, left, kept, None if only is not None else size / level
        )
        around = _sample(cells, cx_o[run], cy_o[run])
        shading[run] = around[:, :3]
        if only is None:
            misfit[runs[i]] = around[:, 3]
    carried = sampled * np.repeat(gains, counts, axis=0)
    small = _largest(np.abs(shading)) <= MISFIT * np.maximum(_largest(np.abs(carried)), 0.05)
    shading[~small] = 0.0
    carried += shading
    rows[order] = carried.view(rows.dtype).reshape(-1)
    return value, dist, src_of, misfit


def _groups(labels: np.ndarray) -> dict[int, np.ndarray]:
    """The indices of each value of ``labels`` (ndarray[N] int, frame indices or -1), ascending, by
    value ascending."""
    order = np.argsort(labels.astype(np.int16), kind="stable")  # (a radix sort on 16 bits)
    counts = np.bincount(labels + 1)  # (the values are -1 and up: counted, not sorted again)
    ends = np.cumsum(counts).tolist()
    return {v - 1: order[ends[v] - c : ends[v]] for v, c in enumerate(counts.tolist()) if c}


@lru_cache(maxsize=4096)
def _spread(count: int) -> np.ndarray:
    """``ALIGN_SAMPLE`` indices spread evenly over ``count`` (read-only: shared by every call)."""
    out = np.linspace(0, count - 1, ALIGN_SAMPLE).astype(np.int64)
    out.flags.writeable = False
    return out


def _align(
    source: np.ndarray,
    ring_x: np.ndarray,
    ring_y: np.ndarray,
    target: np.ndarray,
    levels: np.ndarray | None = None,
) -> tuple[float, float]:
    """The shift (proxy pixels) that, added to where the trace put the ring points in the source,
    best matches their colours in the target: Gauss-Newton on the grey level, exposure matched, the
    worst fifth of the points (something that moved, a matte edge) left out of each step.

    A chain of frame-to-frame flows drifts by a fraction of a pixel per step; the ring, known in both
    frames, shows how far. Kept only where it is small (at most ``ALIGN_MAX``) and lowers the ring's
    error by at least ``1 - ALIGN_GAIN``; else (0, 0).

    Args:
        source (ndarray[h, w, 3]): the source frame's proxy.
        ring_x, ring_y (ndarray[N] float32): the ring points' traced positions in it.
        target (ndarray[N, 3] float32): their colours in the target frame.
        levels (ndarray[3]): the target frame's exposure level over the source's (None: alike).
    """
    return _align_many([(source, ring_x, ring_y, target, levels)])[0]


#: A ring to align (:func:`_align_many`): the source proxy, the ring's traced positions in it, their
#: colours in the target, the target's exposure level over the source's (None: alike).
_Ring = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]


def _align_many(rings: list[_Ring]) -> list[tuple[float, float]]:
    """:func:`_align` of many rings at once (a target's rings in all its sources): the same shifts,
    bit for bit. The arithmetic on every point is done for all rings together; only the sampling
    (each ring in its own frame) and each ring's sums (NumPy's on its own points, as one ring
    alone would sum them) are done ring by ring: the per-ring fixed cost was most of the time."""
    shifts = [(0.0, 0.0)] * len(rings)
    todo = []
    for i, (source, ring_x, ring_y, target, levels) in enumerate(rings):
        if len(ring_x) < ALIGN_POINTS:
            continue
        if len(ring_x) > ALIGN_SAMPLE:  # evenly spread over the ring: plenty to measure two numbers
            every = _spread(len(ring_x))
            ring_x, ring_y, target = ring_x[every], ring_y[every], np.take(target, every, 0)
        todo.append((i, source, ring_x, ring_y, target, np.ones(3, np.float32) if levels is None else levels))
    if not todo:
        return shifts
    k = len(todo)
    sizes = [len(ring[2]) for ring in todo]
    width = max(sizes)
    # the rings side by side, one a row, padded (the padding is never read: ``valid``)
    xs, ys = np.zeros((k, width), np.float32), np.zeros((k, width), np.float32)
    target = np.zeros((k, width, 3), np.float32)
    for row, (_, _, ring_x, ring_y, colours, _) in enumerate(todo):
        xs[row, : sizes[row]], ys[row, : sizes[row]], target[row, : sizes[row]] = ring_x, ring_y, colours
    valid = np.arange(width) < np.array(sizes)[:, None]
    keep = (0.8 * np.array(sizes)).astype(np.int64)  # (int() of each)
    grey_target = _mean(target.reshape(-1, 3)).reshape(k, width)
    offsets = np.array([[0, 0], [0.5, 0], [-0.5, 0], [0, 0.5], [0, -0.5]], np.float32)
    shift = np.zeros((k, 2), np.float32)
    samples = np.zeros((k, 5, width, 3), np.float32)

    def around(rows: np.ndarray) -> None:
        """Sample each of ``rows``' sources at its points moved by its ``shift`` and at their four
        half-pixel neighbours (into ``samples``)."""
        at_x = xs[rows, None] + shift[rows, 0, None, None] + offsets[None, :, :1]
        at_y = ys[rows, None] + shift[rows, 1, None, None] + offsets[None, :, 1:]
        for j, row in enumerate(rows.tolist()):
            n = sizes[row]
            found = _sample(todo[row][1], at_x[j, :, :n].ravel(), at_y[j, :, :n].ravel())
            samples[row, :, :n] = found.reshape(5, n, 3)

    def kept(err: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per row, the points whose error is among its ``keep`` smallest."""
        ordered = np.sort(np.where(valid[rows], err, np.inf), 1)
        out: np.ndarray = valid[rows] & (err <= ordered[np.arange(len(rows)), keep[rows] - 1][:, None])
        return out

    active = np.arange(k)
    around(active)  # (the points themselves, row 0 of each: the exposure is matched there)
    gain = _exposure_gains(
        [target[row, : sizes[row]] for row in range(k)],
        [samples[row, 0, : sizes[row]] for row in range(k)],
        np.stack([ring[5] for ring in todo]),
    )
    before = np.zeros(k)
    ends = np.zeros(k, bool)  # the rows whose shift is measured (not given up): checked at the end
    for step_index in range(ALIGN_STEPS):
        if not len(active):
            break
        if step_index:
            around(active)
        g = gain[active, None, None]
        found = samples[active]
        grey = (
            found[..., 0] * g[..., 0] + found[..., 1] * g[..., 1] + found[..., 2] * g[..., 2]
        ) / np.float32(3)
        r = grey_target[active] - grey[:, 0]
        err = np.abs(r)
        use = kept(err, active)
        gx_all, gy_all = grey[:, 1] - grey[:, 2], grey[:, 3] - grey[:, 4]
        going = []
        for j, row in enumerate(active.tolist()):
            u = use[j]
            if step_index == 0:
                before[row] = float(err[j][u].mean())
            gx, gy, ru = gx_all[j][u], gy_all[j][u], r[j][u]
            a11, a12, a22 = float(gx @ gx), float(gx @ gy), float(gy @ gy)
            det = a11 * a22 - a12 * a12
            if det <= 1e-9 * max(a11 * a22, 1e-30):  # no texture on the ring to align by
                continue
            b1, b2 = float(gx @ ru), float(gy @ ru)
            step = np.array([(a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det], np.float32)
            shift[row] = shift[row] + step
            if float(np.hypot(*shift[row])) > ALIGN_MAX:
                continue
            if float(np.hypot(*step)) < 0.02 or step_index == ALIGN_STEPS - 1:
                ends[row] = True
            else:
                going.append(row)
        active = np.array(going, np.int64)
    for row in np.flatnonzero(ends).tolist():
        n = sizes[row]
        moved = _sample(todo[row][1], xs[row, :n] + shift[row, 0], ys[row, :n] + shift[row, 1])
        err = np.abs(grey_target[row, :n] - _mean(moved, gain[row]))
        if (
            float(err[err <= np.partition(err, keep[row] - 1)[keep[row] - 1]].mean())
            < ALIGN_GAIN * before[row]
        ):
            shifts[todo[row][0]] = (float(shift[row, 0]), float(shift[row, 1]))
    return shifts


def _exposure_gains(target: list[np.ndarray], warped: list[np.ndarray], levels: np.ndarray) -> np.ndarray:
    """:func:`_exposure_gain` of many rings at once, the same numbers: per ring, its ``target`` and
    ``warped`` values (ndarray[N_i, 3]) and the target frame's level over the source's (``levels``,
    ndarray[K, 3]); ndarray[K, 3]. Only the medians are taken ring by ring."""
    count = len(target)
    out = np.ones((count, 3), np.float32)
    if not count:
        return out
    target_all, warped_all = np.concatenate(target), np.concatenate(warped)
    valid = _beyond(warped_all, 1e-3) & _beyond(target_all, 1e-3)
    counts = np.bincount(np.repeat(np.arange(count), [len(x) for x in target])[valid], minlength=count)
    measured = counts >= 16
    if not measured.any():
        return out
    # every ring's ratios, by channel, one ring after another
    ratios = np.compress(valid, target_all.T, 1) / np.compress(valid, warped_all.T, 1)
    ends = np.cumsum(counts).tolist()
    gain = np.ones((count, 3), np.float32)
    for i in np.flatnonzero(measured).tolist():
        mine, half = ratios[:, ends[i] - counts[i] : ends[i]], int(counts[i]) // 2
        if counts[i] % 2:
            gain[i] = np.partition(mine, half, axis=1)[:, half]
        else:
            middle = np.partition(mine, (half - 1, half), axis=1)
            gain[i] = (middle[:, half - 1] + middle[:, half]) / 2
    low, high = _gain_bounds(levels)
    gain = np.clip(gain, low, high)
    gain = np.where(np.abs(gain - 1.0) < 0.005, 1.0, gain).astype(np.float32)
    out[measured] = gain[measured]
    return out


def _smooth(
    values: np.ndarray, ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], use: np.ndarray
) -> np.ndarray:
    """Values known at some pixels (``ys``, ``xs``; ndarray[K, C]) of a grid of ``shape``,
    interpolated smoothly over it: push-pull on cells of ``SPREAD_CELL`` pixels (it varies slowly),
    ndarray[gh, gw, C] over the cells. ``use`` (ndarray[K, C] bool): which points count, per column."""
    gh, gw = -(-shape[0] // SPREAD_CELL), -(-shape[1] // SPREAD_CELL)
    cell = (ys // SPREAD_CELL) * gw + xs // SPREAD_CELL
    columns = values.reshape(len(values), -1)
    width = columns.shape[1]
    # every column in one count: bin (cell, column) sums its points in their order, as a count per
    # column would (the same sums, in float64)
    index = (cell[:, None] * width + np.arange(width)).reshape(-1)
    sums = np.bincount(
        index, weights=np.where(use, columns, 0.0).reshape(-1), minlength=gh * gw * width
    ).reshape(gh * gw, width)
    counts = np.bincount(index[use.reshape(-1)], minlength=gh * gw * width).reshape(gh * gw, width)
    seen = counts > 0
    grid = np.where(seen, sums / np.maximum(counts, 1), 0.0).astype(np.float32)
    out: np.ndarray = membrane_fill(grid.reshape(gh, gw, -1), seen.reshape(gh, gw, -1))
    return out


def _ring_cells(
    cell: np.ndarray, grid: tuple[int, int], left: np.ndarray, kept: np.ndarray, misfit: np.ndarray | None
) -> np.ndarray:
    """:func:`_smooth` of a ring's points in their ``cell`` (ndarray[K] int, flat indices on a ``grid``
    of ``(gh, gw)`` cells): ``left`` (ndarray[K, 3]) from the ``kept`` points (ndarray[K] bool), then
    ``misfit`` (ndarray[K]) from every point, when given: ndarray[gh, gw, 3 or 4] float32, the same
    numbers. (Each column counted on its own: a point left out adds a zero to its cell's sum, which
    never changes a sum that starts at +0.0.)"""
    size = grid[0] * grid[1]
    width = 3 if misfit is None else 4
    sums = np.empty((size, width))
    counts = np.empty((size, width), np.int64)
    at, kept_left = np.compress(kept, cell), np.compress(kept, left, 0)
    for c in range(3):
        sums[:, c] = np.bincount(at, weights=kept_left[:, c], minlength=size)
    counts[:, :3] = np.bincount(at, minlength=size)[:, None]
    if misfit is not None:
        sums[:, 3] = np.bincount(cell, weights=misfit, minlength=size)
        counts[:, 3] = np.bincount(cell, minlength=size)
    seen = counts > 0
    # (a cell without points has a sum of +0.0: 0 / 1, as the mean's ``where`` would give it)
    grid_means = (sums / np.maximum(counts, 1)).astype(np.float32)
    out: np.ndarray = membrane_fill(
        grid_means.reshape(grid[0], grid[1], width), seen.reshape(grid[0], grid[1], width)
    )
    return out


def _disagreement(forward: _Candidate, backward: _Candidate) -> np.ndarray:
    """Per pixel, how far the forward and backward sources differ, relative to their level (inf where
    one is missing)."""
    (vf, _, sf, _), (vb, _, sb, _) = forward, backward
    level = np.maximum(_largest(np.maximum(np.abs(vf), np.abs(vb))), 0.05)
    out: np.ndarray = np.where((sf >= 0) & (sb >= 0), _largest(np.abs(vf - vb)) / level, np.inf)
    return out


def _combine(hypotheses: list[_Fill], pixels: _Pixels, locked_off: bool) -> _Fill:
    """Per hole pixel, the motion hypotheses' fills, each weighted by how well it fits there.

    ``hypotheses`` are the background layers, then, where there are movers, the scene flow; each is
    given as its :func:`_blend`. A right motion shows itself twice: its sources before and after
    agree (the same scene point seen twice), and each, carried along that motion, matches the target
    on the known ring near the pixel (its misfit); the doubt counts both. Averaged over a ``PATCH`` of
    the pixels a hypothesis recovered (neighbours move alike: no salt and pepper of motions), it
    weighs ``exp(-(doubt - least) / CHOICE_SOFTNESS)``, counted only where it recovered the pixel:
    nearly a choice of one motion per patch, soft where two fit alike. Where the values of two
    hypotheses that weigh anything (``VISIBLE``) disagree (by more than ``AGREE``), the heaviest is
    taken alone: two motions carry two poses, and their blend would be a double exposure. The
    dominant background recovers a pixel wherever :func:`_blend` did; another motion where it had a
    source on both sides, or, with a source on one side only, where the background recovered the
    pixel too from a source at least as far away (one far source of a second plane pasted blocks of
    sky into a dog on the bundled sample); on a locked-off shot only where its doubt is also below
    ``ALTERNATIVE_FIT``. (Measured on held-out clips against a hard choice that kept the dominant
    background unless another motion's sources agreed clearly better: lower on moving holes, most
    where a mover is under the hole, since the background's sources there agree as well as the
    mover's; see docs/RESULTS.md.)

    Returns:
        per hole pixel, the combined fill: the value; the frame its heaviest hypothesis mostly took
        it from (-1: no hypothesis recovered it); that hypothesis' doubt, sides, distance, misfit and
        whether its sources disagreed.
    """
    sources = np.stack([h.source for h in hypotheses])
    score = np.stack([h.doubt for h in hypotheses])
    recovered = sources >= 0
    # another motion than the dominant background's recovers a pixel where it shows it twice (before
    # and after), or competes with the background's value from a source no farther away; on a
    # locked-off shot only where it also fits well
    two_sided = np.stack([h.two_sided for h in hypotheses])
    distance = np.stack([h.distance for h in hypotheses])
    recovered[1:] &= two_sided[1:] | (recovered[0] & (distance[1:] <= distance[0]))
    if locked_off:
        recovered[1:] &= score[1:] < ALTERNATIVE_FIT
    if len(hypotheses) > 1:
        # each hypothesis' score where it recovered a pixel and that mask, side by side, averaged over
        # the patch in one box filter (it filters each channel on its own: the same sums)
        parts = np.empty((len(pixels.flat), 2 * len(hypotheses)), np.float32)
        for k, (sc, r) in enumerate(zip(score, recovered, strict=True)):
            parts[:, 2 * k], parts[:, 2 * k + 1] = np.where(r, sc, 0.0), r
        patch = pixels.of(cv2.blur(pixels.grid(parts), PATCH))
        score = np.stack(
            [patch[:, 2 * k] / np.maximum(patch[:, 2 * k + 1].copy(), 1e-6) for k in range(len(hypotheses))]
        )
    least = np.where(recovered, score, np.inf).min(0)
    least = np.where(np.isfinite(least), least, 0.0)
    weight = np.where(recovered, np.exp(-np.maximum(score - least, 0.0) / CHOICE_SOFTNESS), 0.0)
    total = weight.sum(0)
    weight /= np.maximum(total, 1e-12)
    heaviest = np.argmax(weight, 0)
    chosen = [heaviest == k for k in range(1, len(hypotheses))]  # (each pick below reads them)
    planes = np.stack([h.value.T for h in hypotheses])  # [hypothesis, channel, pixel]
    if len(hypotheses) > 1:  # two poses are never blended: the heaviest alone where another differs
        # each other hypothesis that weighs anything against the heaviest (never apart from itself),
        # compared channel by channel over every pixel (a gather of the pairs cost five times more)
        top = _pick(list(planes), chosen)
        alone_mask = np.zeros(len(heaviest), bool)
        for k, plane in enumerate(planes):
            weighs = (weight[k] >= VISIBLE) & (heaviest != k)
            if weighs.any():
                alone_mask |= weighs & (_apart_planes(plane, top) > AGREE)
        alone = np.flatnonzero(alone_mask)
        weight[:, alone] = 0.0
        weight[heaviest[alone], alone] = 1.0
    value = _weighted(weight, planes)
    source = np.where(total > 0, _pick([h.source for h in hypotheses], chosen), -1)
    return _Fill(
        value,
        source,
        *(_pick([h[kind] for h in hypotheses], chosen) for kind in range(2, len(_Fill._fields))),
    )


def _weighted(weight: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """The sum over the first axis of ``weight`` (ndarray[K, N]) times values laid out by channel
    (``planes``, ndarray[K, 3, N]), as ndarray[N, 3] float32: the same sums, in the same order, as
    ``(weight[..., None] * planes.transpose(0, 2, 1)).sum(0)`` (a last axis of three is slow in NumPy)."""
    mixed = weight[0] * planes[0]
    for k in range(1, len(planes)):
        mixed += weight[k] * planes[k]
    out: np.ndarray = np.ascontiguousarray(mixed.T, np.float32)
    return out


def _pick(arrays: list[np.ndarray], index: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Per element, the value of ``arrays[index]`` there (arrays alike, ``index`` over their last
    axis, or ``[index == k for k in range(1, len(arrays))]`` made once for several picks): a new
    array, the same as a gather from their stack."""
    chosen = [index == k for k in range(1, len(arrays))] if isinstance(index, np.ndarray) else index
    out = arrays[0].copy() if len(arrays) == 1 else arrays[0]
    for k in range(1, len(arrays)):
        out = np.where(chosen[k - 1], arrays[k], out)
    return out


def _blend(
    fwd: _Candidate, bwd: _Candidate, spread: np.ndarray, witnesses: list[_Candidate], pixels: _Pixels
) -> _Fill:
    """Blend each hole pixel's forward and backward sources as two measurements of one value where
    they agree; where they disagree, take one of them, never a blend of both.

    Where the two agree (``spread``, their :func:`_disagreement`, at most ``AGREE``), each is weighted
    by the inverse square of its misfit (how well it fits the known pixels around the hole; the one
    with half the other's misfit weighs 0.8), by temporal distance where the misfit was not measured
    (too small a ring to tell). Where they disagree and both witnesses (later looks along the same
    traces) side with one of them, that one is taken alone: a mover seen in one source frame must not
    ghost into the fill. Where they disagree and no witness settles it, something under the hole
    moved on its own between the two frames (a hand, a leg): each connected region of such pixels
    (regions within ``REGION_GAP`` proxy pixels of each other joined) takes the one source the blend
    would have weighed more over the region as a whole (the better fit to the ring, else the nearer
    in time): one pose, solid, rather than two translucent ones. (Measured on held-out clips:
    blending agreeing sources by the misfit lowers the error against taking the nearer source; its
    inverse square lower than its inverse, and lower than temporal distance.) Where no source fits
    (misfit above ``MISFIT``), nothing is recovered: the network fills the pixel; where a region's
    source does not fit at a pixel, neither does the other's pose: nothing is recovered there either.

    Returns:
        per hole pixel (:class:`_Fill`): the value, the index of the frame it mostly came from (-1:
        none), how doubtful the value is (the disagreement left between the two sources, none where
        they agree within ``AGREE`` or the witnesses settled it, ``ONE_SIDED`` where there is one
        source, plus their misfit weighted as they were taken, ``UNMEASURED`` where neither was
        measured), whether it had a source on both sides, how many frames away the source it mostly
        came from lies, the misfit of what was taken (nan: not measured) and whether the two sources
        disagreed.
    """
    (vf, df, sf, ef), (vb, db, sb, eb) = fwd, bwd
    both = (sf >= 0) & (sb >= 0)
    df_, db_ = np.where(both, df, 1.0), np.where(both, db, 1.0)
    weight_f = np.where(both, db_ / np.maximum(df_ + db_, 1e-6), (sf >= 0).astype(np.float32))
    measured = both & np.isfinite(ef) & np.isfinite(eb) & (ef + eb > 1e-6)
    weight_f = np.where(measured, eb**2 / np.where(measured, ef**2 + eb**2, 1.0), weight_f)
    doubt = np.where(both, np.where(spread > AGREE, spread, 0.0), ONE_SIDED)
    disputed = both & (spread > AGREE)
    unsettled = disputed.copy()
    at_dispute = np.flatnonzero(disputed)
    if len(at_dispute):

        def at(c: _Candidate) -> _Candidate:
            return c[0][at_dispute], c[1][at_dispute], c[2][at_dispute], c[3][at_dispute]

        votes_f = sum((_disagreement(at(fwd), at(w)) < AGREE).astype(np.int32) for w in witnesses)
        votes_b = sum((_disagreement(at(bwd), at(w)) < AGREE).astype(np.int32) for w in witnesses)
        settled = np.abs(votes_f - votes_b) >= 2
        weight_f[at_dispute] = np.where(settled, votes_f > votes_b, weight_f[at_dispute])
        doubt[at_dispute[settled]] = 0.0
        unsettled[at_dispute[settled]] = False
    if unsettled.any():
        weight_f[unsettled] = _one_side_per_region(weight_f, unsettled, pixels)
    # (the weight laid out per channel first: NumPy broadcasts over a last axis of 3 ten times slower)
    share_f = np.stack([weight_f] * 3, -1)
    blended = share_f * vf + (1.0 - share_f) * vb
    # a source fits if its misfit was not measured (too small a ring to tell) or is small
    fits_f = (sf >= 0) & ~(ef > MISFIT)
    fits_b = (sb >= 0) & ~(eb > MISFIT)
    got = np.where(unsettled, np.where(weight_f >= 0.5, fits_f, fits_b), fits_f | fits_b)
    nearer = np.where(got, np.where(weight_f >= 0.5, sf, sb), -1)
    # the misfit of what was taken: each side's as blended, the other's where one was not measured
    mf_, mb_ = np.where(np.isnan(ef), eb, ef), np.where(np.isnan(eb), ef, eb)
    misfit = weight_f * mf_ + (1.0 - weight_f) * mb_
    distance = np.where(weight_f >= 0.5, df, db)
    value = blended.astype(np.float32, copy=False)
    # (each pixel's three values as one item: cleared in half the time of value[~got] = 0.0)
    value.view(np.dtype((np.void, 12))).reshape(-1)[~got] = np.zeros(1, np.dtype((np.void, 12)))[0]
    return _Fill(
        value, nearer, doubt + np.nan_to_num(misfit, nan=UNMEASURED), both, distance, misfit, disputed
    )


def _one_side_per_region(weight_f: np.ndarray, unsettled: np.ndarray, pixels: _Pixels) -> np.ndarray:
    """The forward source's weight (1 or 0) at the ``unsettled`` pixels: per connected region of them
    (joined across gaps of up to ``REGION_GAP`` proxy pixels), the side ``weight_f`` (ndarray[N], the
    forward source's share of a blend) favours on average over the region."""
    gap = max(1, int(round(REGION_GAP / min(pixels.scale))))
    grid = cv2.dilate(pixels.grid(unsettled.astype(np.uint8)), np.ones((2 * gap + 1, 2 * gap + 1), np.uint8))
    _, labels = cv2.connectedComponents(grid, connectivity=8)
    label = pixels.of(labels)[unsettled]
    share = np.bincount(label, weights=weight_f[unsettled]) / np.maximum(np.bincount(label), 1)
    out: np.ndarray = (share[label] >= 0.5).astype(weight_f.dtype)
    return out


def _floor(
    rgb: list[np.ndarray],
    holes: list[np.ndarray],
    small: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]],
    t: int,
    pixels: _Pixels,
    ring: tuple[np.ndarray, np.ndarray],
    fill: _Fill,
    still: _Fill,
) -> _Fill:
    """On a locked-off window, the fill of frame ``t`` held at least as good as a temporal median.

    Per hole pixel, the *median* (:func:`_temporal_median`) of the frames that show it and fit the
    target around it, or of every frame that shows it where none fits. It replaces the fill where
    the fill's two sources disagreed (something moved on its own under the hole: many frames outvote
    two), where it fits the ring better (the median of its frames' misfits below the fill's), and
    where nothing was recovered (measured on the locked-off held-out clip: the network scored a
    third worse than the median there). And where the still background's two sources agree with
    each other and with the median (three looks at one still point), another motion's value gives
    way to the still background's (a scene flow interpolated from a mover beside the hole carries
    it over background that did not move).

    Args:
        rgb (list of ndarray[h, w, 3]): the frames.
        holes (list of ndarray[h, w] bool): their holes.
        small: per frame, the proxy (ndarray[h', w', 3]), the proxy pixels known to a trace
            (ndarray[h', w'] bool) and the exposure level (ndarray[3], :func:`_level`).
        ring: the ring's proxy points ``(ys, xs)``.
        fill: the combined fill (:func:`_combine`).
        still: the still background's own fill (:func:`_blend` of the zero motion).
    """
    frames = [s for s in range(len(rgb)) if s != t]
    if not frames or len(ring[0]) < 16:  # too small a ring to tell
        return fill
    gains, misfit = _misfits(small, t, frames, pixels, ring)
    shows = np.stack([~holes[s][pixels.hy, pixels.hx] for s in frames], -1)
    value, fit, taken = _temporal_median(rgb, frames, pixels, gains, misfit, shows)
    settled = still.two_sided & (still.source >= 0) & ~still.disputed & (taken >= 0)
    settled &= (_apart(still.value, value) <= AGREE) & np.any(still.value != fill.value, -1)
    fill = fill._replace(
        value=np.where(settled[:, None], still.value, fill.value),
        source=np.where(settled, still.source, fill.source),
        misfit=np.where(settled, still.misfit, fill.misfit),
    )
    better = (taken >= 0) & ~settled & (fill.disputed | (fill.source < 0) | (fit < fill.misfit))
    return fill._replace(
        value=np.where(better[:, None], value, fill.value).astype(np.float32),
        source=np.where(better, taken, fill.source),
        misfit=np.where(better, fit, fill.misfit),
    )


def _misfits(
    small: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]],
    t: int,
    frames: list[int],
    pixels: _Pixels,
    ring: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """How well each of ``frames`` (a still shot: no motion) fits frame ``t`` around each hole pixel,
    as a source's misfit: the exposure gain on the ring (ndarray[F, 3]) and the relative difference
    left on it, interpolated into the hole (ndarray[N, F]; inf where too few ring points are known
    in that frame to tell)."""
    small_rgb, known, levels = small
    ry, rx = ring
    target = small_rgb[t][ry, rx]
    scale = np.maximum(_largest(np.abs(target)), 0.05)
    gains, left, seen = [], [], []
    for s in frames:
        on_ring = known[s][ry, rx]
        source = small_rgb[s][ry, rx]
        gain = _exposure_gain(target[on_ring], source[on_ring], levels[t] / levels[s])
        gains.append(gain)
        left.append(_largest(np.abs(target - source * gain)) / scale)
        seen.append(on_ring if on_ring.sum() >= 16 else np.zeros_like(on_ring))
    (oy, ox), (bh, bw) = pixels.origin, pixels.span
    misfit = np.empty((len(pixels.hy), len(frames)), np.float32)
    for j in range(0, len(frames), 4):  # (OpenCV resizes at most 4 channels at once)
        cells = _smooth(
            np.stack(left[j : j + 4], -1), ry - oy, rx - ox, (bh, bw), np.stack(seen[j : j + 4], -1)
        )
        misfit[:, j : j + 4] = _sample(cells, pixels.cx, pixels.cy)
    misfit[:, [not s.any() for s in seen]] = np.inf
    return np.stack(gains), misfit


def _temporal_median(
    rgb: list[np.ndarray],
    frames: list[int],
    pixels: _Pixels,
    gains: np.ndarray,
    misfit: np.ndarray,
    shows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per hole pixel, the temporal median of its values in the ``frames`` that show it (``shows``,
    ndarray[N, F] bool) and fit the target around it (``misfit`` (ndarray[N, F]) at most ``MISFIT``;
    exposure matched by ``gains``, ndarray[F, 3]): a frame whose surroundings differ shows something
    else there, a newcomer that stays, a passer-by, which a median over every frame would take in.
    Where none fits, of every frame that shows it, exposure unmatched (a ring that fits no frame
    tells nothing of exposure). Per channel; but where the two middle values of an even count
    disagree (by more than ``AGREE``), the one frame's value nearest the median: their average would
    be a translucent mix.

    Returns:
        per hole pixel: the value (ndarray[N, 3]), the median misfit of the frames it was taken over
        (ndarray[N]) and the frame whose value is nearest it (ndarray[N], -1: no frame shows it).
    """
    fits = shows & (misfit <= MISFIT)
    some_fit = np.any(fits, axis=1, keepdims=True)
    member = np.where(some_fit, fits, shows)
    count = len(pixels.hy)
    value = np.zeros((count, 3), np.float32)
    fit = np.full(count, np.inf, np.float32)
    taken = np.full(count, -1, np.int64)
    step = max(1, 2**22 // (3 * len(frames)))  # a few million values at a time
    for i in range(0, count, step):
        part = slice(i, i + step)
        use = member[part]
        values = np.stack([rgb[s][pixels.hy[part], pixels.hx[part]] for s in frames], 1)
        values *= np.where(some_fit[part, :, None], gains[None], np.float32(1.0))
        low, high = _middle(values, use)
        median = (low + high) / 2
        rows = np.arange(len(use))
        nearest = np.argmin(np.where(use, np.abs(values - median[:, None]).sum(-1), np.inf), 1)
        value[part] = np.where((_apart(low, high) > AGREE)[:, None], values[rows, nearest], median)
        fit_low, fit_high = _middle(misfit[part][..., None], use)
        fit[part] = (fit_low + fit_high)[:, 0] / 2
        taken[part] = np.where(use.any(1), np.asarray(frames)[nearest], -1)
    return value, fit, taken


def _apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far two values (ndarray[N, 3]) differ, relative to their level, as :func:`_disagreement`."""
    level = np.maximum(_largest(np.maximum(np.abs(a), np.abs(b))), 0.05)
    out: np.ndarray = _largest(np.abs(a - b)) / level
    return out


def _apart_planes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`_apart` of values laid out by channel (ndarray[3, N] each): the same numbers."""
    high = np.maximum(np.abs(a), np.abs(b))
    level = np.maximum(np.maximum(np.maximum(high[0], high[1]), high[2]), 0.05)
    gap = np.abs(a - b)
    out: np.ndarray = np.maximum(np.maximum(gap[0], gap[1]), gap[2]) / level
    return out


def _middle(values: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, per channel, the two middle values of ``values`` (ndarray[N, F, C]) over the columns
    it ``use``s (ndarray[N, F] bool): one value twice for an odd count (their mean is the median);
    ndarray[N, C] each, 0 where a row uses none."""
    ordered = np.sort(np.where(use[..., None], values, np.inf), 1)
    count = use.sum(1)
    rows = np.arange(len(values))
    none = (count == 0)[:, None]
    low = np.where(none, 0.0, ordered[rows, np.maximum(count - 1, 0) // 2])
    high = np.where(none, 0.0, ordered[rows, np.minimum(count // 2, values.shape[1] - 1)])
    return low, high
