"""Synthetic holes for training and evaluation. Every generator is deterministic for its ``rng``.

All return float32 arrays [T, H, W] with 1 = hole.

- :func:`box_hole`: the paper's hole (§4): one rectangle per clip, each side drawn in
  [0.375, 0.5] of the crop size, uniformly placed, the same in every frame.
- :func:`stroke_hole`: free-form brush strokes that drift and wobble over time (paper Fig. 4, "random holes").
- :func:`object_hole`: an object silhouette taken from a clip's ``masks/`` and moved along its own track
  (or, where only one mask frame exists, along a random straight track).
"""

from __future__ import annotations

import numpy as np


def box_hole(
    rng: np.random.Generator, t: int, h: int, w: int, lo: float = 0.375, hi: float = 0.5
) -> np.ndarray:
    """One box per clip, sides uniform in [lo, hi] of the size, same place in all frames (paper §4)."""
    bh = int(rng.integers(round(lo * h), round(hi * h) + 1))
    bw = int(rng.integers(round(lo * w), round(hi * w) + 1))
    y = int(rng.integers(0, h - bh + 1))
    x = int(rng.integers(0, w - bw + 1))
    hole = np.zeros((t, h, w), np.float32)
    hole[:, y : y + bh, x : x + bw] = 1.0
    return hole


def stroke_hole(
    rng: np.random.Generator,
    t: int,
    h: int,
    w: int,
    *,
    strokes: tuple[int, int] = (1, 4),
    max_area: float = 0.35,
) -> np.ndarray:
    """Free-form strokes (random polylines of random thickness) that translate and wobble over time."""
    import cv2

    hole = np.zeros((t, h, w), np.float32)
    size = min(h, w)
    n = int(rng.integers(strokes[0], strokes[1] + 1))
    shapes = []
    for _ in range(n):
        k = int(rng.integers(3, 7))
        start = rng.uniform([0, 0], [w, h])
        steps = rng.normal(0.0, size * 0.15, size=(k, 2))
        pts = start + np.cumsum(steps, axis=0)
        thick = int(rng.integers(max(2, size // 20), max(3, size // 7)))
        velocity = rng.normal(0.0, size * 0.01, size=2)
        wobble = rng.uniform(0.0, size * 0.01)
        shapes.append((pts, thick, velocity, wobble, rng.uniform(0, 2 * np.pi, size=2)))
    for f in range(t):
        canvas = np.zeros((h, w), np.uint8)
        for pts, thick, velocity, wobble, phase in shapes:
            p = pts + velocity * f + wobble * np.sin(0.3 * f + phase)
            cv2.polylines(canvas, [np.round(p).astype(np.int32)], False, 1, thick, lineType=cv2.LINE_8)
        hole[f] = canvas
    area = hole.mean()
    if area > max_area:  # too big to learn from: fall back to the paper's box
        return box_hole(rng, t, h, w)
    if area < 0.002:
        return box_hole(rng, t, h, w)
    return hole


def object_hole(
    rng: np.random.Generator,
    masks: np.ndarray,
    mask_index: list[int],
    start: int,
    t: int,
    crop: tuple[int, int, int],
    out_size: int,
    *,
    dilate: int = 3,
) -> np.ndarray | None:
    """An object silhouette from a clip's masks, cropped like the frames, moving along its track.

    Args:
        rng: random generator.
        masks: uint8 object ids [M, H, W] (0 = background) of the source clip.
        mask_index: frame number of each mask.
        start: first frame of the window in the source clip.
        t: window length.
        crop: (y, x, side) square crop in source pixels (the same crop as the frames).
        out_size: crop is resized to out_size x out_size.
        dilate: pixels of dilation at ``out_size`` (removal mattes are drawn a little wide).

    Returns:
        float32 [T, out_size, out_size] hole, or None if no usable silhouette is in the crop.
    """
    import cv2

    y, x, side = crop
    frames_with_mask = {fi: i for i, fi in enumerate(mask_index)}
    have_track = all((start + f) in frames_with_mask for f in range(t))
    if have_track:
        seq = np.stack([masks[frames_with_mask[start + f]] for f in range(t)])
    else:
        seq = np.asarray(masks[int(rng.integers(0, len(mask_index)))])[None]
    ids = [int(v) for v in np.unique(seq) if v != 0]
    if not ids:
        return None
    # one object; ids are ranked by area in the cache, so the first few are the real objects
    chosen = ids[int(rng.integers(0, min(len(ids), 6)))]
    binary = (seq == chosen).astype(np.uint8)
    kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
    if have_track:
        out = np.stack(
            [
                cv2.resize(
                    b[y : y + side, x : x + side], (out_size, out_size), interpolation=cv2.INTER_NEAREST
                )
                for b in binary
            ]
        )
    else:
        # one silhouette: crop its bounding box and move it along a random straight track
        ys, xs = np.nonzero(binary[0])
        sil = binary[0, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        scale = out_size / side
        sh, sw = max(1, round(sil.shape[0] * scale)), max(1, round(sil.shape[1] * scale))
        limit = int(out_size * 0.6)
        if max(sh, sw) > limit:  # keep some context visible
            f = limit / max(sh, sw)
            sh, sw = max(1, round(sh * f)), max(1, round(sw * f))
        sil = cv2.resize(sil, (sw, sh), interpolation=cv2.INTER_NEAREST)
        p0 = rng.uniform([0, 0], [out_size - sh, out_size - sw])
        p1 = rng.uniform([0, 0], [out_size - sh, out_size - sw])
        out = np.zeros((t, out_size, out_size), np.uint8)
        for f in range(t):
            a = f / max(1, t - 1)
            py, px = np.round(p0 * (1 - a) + p1 * a).astype(int)
            out[f, py : py + sh, px : px + sw] = sil
    out = np.stack([cv2.dilate(o, kernel) for o in out]).astype(np.float32)
    area = out.mean()
    if area < 0.005 or area > 0.6:
        return None
    return out
