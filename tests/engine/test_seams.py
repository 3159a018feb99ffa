"""Seams between the frames a hole's recovered pixels came from (``core._soften_seams``): softened where
they speckle (the frames differ by more than their content), left as they are where the frames agree.
The real function on a textured frame whose hole is recovered from several sources."""

from __future__ import annotations

import cv2
import numpy as np

from combcn.engine import core

H, W = 64, 80
BOX = (10, 54, 12, 68)  # the hole's box (y0, y1, x0, x1)
AROUND = (8, 56, 10, 70)  # the box grown by 2 pixels


def _texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.random((H, W, 3)).astype(np.float32), (0, 0), 2.5)
    return np.clip(0.5 + 3.0 * (smooth - 0.5), 0.02, 0.98).astype(np.float32)


def _sources() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per hole pixel of the box, the offset of the frame it came from: blobs a few pixels across (as
    traced points reach different frames), every pixel recovered but a synthesised block."""
    rng = np.random.default_rng(3)
    h, w = BOX[1] - BOX[0], BOX[3] - BOX[2]
    coarse = rng.integers(-3, 4, (h // 6 + 1, w // 6 + 1))
    offset = np.kron(coarse, np.ones((6, 6), np.int64))[:h, :w].astype(np.float32)
    hole = np.ones((h, w), bool)
    revealed = hole.copy()
    revealed[30:40, 40:52] = False  # synthesised
    return hole, revealed, np.where(revealed, offset, 0.0).astype(np.float32)


def _fill(truth: np.ndarray, offset: np.ndarray, revealed: np.ndarray, spread: float) -> np.ndarray:
    """The truth over the box, each source frame's pixels off by its own exposure and a misregistration
    of a pixel or so (``spread``: 0 = the frames agree); the synthesised block flat grey."""
    y0, y1, x0, x1 = BOX
    fill = truth[y0:y1, x0:x1].copy()
    rng = np.random.default_rng(9)
    for o in np.unique(offset[revealed]):
        where = revealed & (offset == o)
        dy, dx = (int(v) for v in np.rint(rng.normal(0, 25 * spread, 2)))
        shifted = np.roll(truth, (dy, dx), (0, 1))[y0:y1, x0:x1]
        gain = 1.0 + spread * rng.normal(0, 1.0, 3).astype(np.float32)
        fill[where] = shifted[where] * gain
    fill[~revealed] = 0.5
    return fill


def _seams(offset: np.ndarray, revealed: np.ndarray) -> np.ndarray:
    seam = np.zeros(offset.shape, bool)
    for a, b in (
        ((slice(1, None),), (slice(None, -1),)),
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
    ):
        d = revealed[a] & revealed[b] & (offset[a] != offset[b])
        seam[a] |= d
        seam[b] |= d
    return seam


def _plate(truth: np.ndarray) -> np.ndarray:
    return truth[AROUND[0] : AROUND[1], AROUND[2] : AROUND[3]].copy()


def test_speckled_seams_are_softened_and_nothing_else_moves() -> None:
    truth = _texture(1)
    hole, revealed, offset = _sources()
    fill = _fill(truth, offset, revealed, spread=0.04)
    out = core._soften_seams(_plate(truth), AROUND, BOX, fill, hole, revealed, offset)
    seam = _seams(offset, revealed)
    assert seam.mean() > 0.3
    changed = np.any(out != fill, -1)
    assert changed[seam].mean() > 0.99
    assert not changed[~seam].any()  # the inside of each patch, the synthesised block
    y0, y1, x0, x1 = BOX
    err_before = np.abs(fill - truth[y0:y1, x0:x1])[seam].mean()
    err_after = np.abs(out - truth[y0:y1, x0:x1])[seam].mean()
    assert err_after < 0.8 * err_before
    # no synthesised value is mixed into a recovered pixel: the same with another synthesised fill
    other = fill.copy()
    other[~revealed] = 0.95
    again = core._soften_seams(_plate(truth), AROUND, BOX, other, hole, revealed, offset)
    assert np.allclose(again[revealed], out[revealed], atol=1e-6)


def test_seams_between_agreeing_frames_are_kept() -> None:
    """A locked-off shot: the frames agree, a seam is as sharp as the rest, the fill comes back as it
    went in (the same array)."""
    truth = _texture(2)
    hole, revealed, offset = _sources()
    fill = _fill(truth, offset, revealed, spread=0.0)
    out = core._soften_seams(_plate(truth), AROUND, BOX, fill, hole, revealed, offset)
    assert out is fill


def test_one_source_has_no_seam() -> None:
    truth = _texture(4)
    hole, revealed, offset = _sources()
    offset = np.where(revealed, 2.0, 0.0).astype(np.float32)
    fill = _fill(truth, offset, revealed, spread=0.04)
    out = core._soften_seams(_plate(truth), AROUND, BOX, fill, hole, revealed, offset)
    assert out is fill
