"""The matte: which pixels to remove, and how the fill is blended back.

From a raw matte (any channel, values in [0, 1], 1 = remove) :func:`shape_matte` makes the
*alpha* used for compositing: optionally inverted, thresholded to a hard hole, grown (expand) or
shrunk (erode), then feathered outwards so the fill blends into the plate. The model fills every
pixel where alpha > 0 (the *hole*); where alpha == 0 the output is the input, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from combcn.errors import ConfigError


@dataclass(frozen=True)
class MatteOptions:
    """How a raw matte becomes the compositing alpha.

    Attributes:
        threshold: matte values above it are hole (before expand/feather).
        invert: use 1 - matte (for mattes where 1 = keep).
        expand: grow the hole by this many pixels (negative erodes).
        feather: width in pixels of the soft edge added outside the hole.
    """

    threshold: float = 0.5
    invert: bool = False
    expand: int = 0
    feather: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.threshold) < 1.0:
            raise ConfigError(f"matte threshold must be in [0, 1), got {self.threshold}")
        if float(self.feather) < 0:
            raise ConfigError(f"feather must be >= 0 pixels, got {self.feather}")

    @property
    def reach(self) -> int:
        """How far (pixels) alpha may extend beyond the thresholded matte."""
        return max(0, int(self.expand)) + int(np.ceil(float(self.feather)))


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def shape_matte(matte: np.ndarray, options: MatteOptions) -> np.ndarray:
    """Raw matte -> compositing alpha.

    Args:
        matte (ndarray[H, W]): raw matte, any float or int type, 1 = remove.
        options: threshold, invert, expand, feather.

    Returns:
        ndarray[H, W] float32 in [0, 1]: 1 = fully replaced by the fill, 0 = untouched.
    """
    m = np.nan_to_num(np.asarray(matte, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if options.invert:
        m = 1.0 - m
    hole: np.ndarray = (m > float(options.threshold)).astype(np.uint8)
    if options.expand > 0:
        hole = np.asarray(cv2.dilate(hole, _disk(int(options.expand))))
    elif options.expand < 0:
        hole = np.asarray(cv2.erode(hole, _disk(-int(options.expand)), borderType=cv2.BORDER_REPLICATE))
    alpha = hole.astype(np.float32)
    if options.feather > 0 and hole.any() and not hole.all():
        # Distance of every keep pixel to the nearest hole pixel; a smoothstep ramp over `feather` px.
        distance = cv2.distanceTransform(1 - hole, cv2.DIST_L2, 5)
        ramp = np.clip(1.0 - distance / float(options.feather), 0.0, 1.0)
        alpha = np.maximum(alpha, ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)
        alpha[distance >= float(options.feather)] = 0.0
    return alpha


def bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(y0, y1, x0, x1)`` (end exclusive) of ``alpha > 0``, or None when empty.

    Args:
        alpha (ndarray[H, W]): compositing alpha.
    """
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
