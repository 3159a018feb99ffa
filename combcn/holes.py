"""Synthetic holes, the one place where training, fine-tuning, evaluation and the engine draw them.

Every generator is deterministic for its ``rng`` and returns a float32 array [T, H, W] with 1 = hole
(or None where it cannot make a usable hole).

Training (:class:`combcn.train.windows.WindowSampler`):

- :func:`box_hole`: the paper's hole (§4): one rectangle per clip, each side drawn in
  [0.375, 0.5] of the crop size, uniformly placed, the same in every frame.
- :func:`stroke_hole`: free-form brush strokes that drift and wobble over time (paper Fig. 4, "random holes").
- :func:`object_hole`: an object silhouette taken from a clip's ``masks/`` and moved along its own track
  (or, where only one mask frame exists, along a random straight track).

Fine-tuning on a shot: :func:`mixed_hole` (a third each of the box, strokes and :func:`moving_box_hole`).

Evaluation (``combcn eval --holes``): the box, plus two moving families whose truth is always known
because the hole is only a matte cut into real frames, never an object that is really there:

- :func:`moving_stroke_hole`: a group of brush strokes carried rigidly along a smooth path across the
  window, like an object passing through;
- :func:`silhouette_hole`: a real object's silhouette sequence (from :func:`object_tracks` of some
  clip's mask files) scaled and placed on the window, moving and deforming as the object did.
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


def moving_box_hole(
    rng: np.random.Generator, t: int, h: int, w: int, lo: float = 0.375, hi: float = 0.5
) -> np.ndarray:
    """A paper-sized box (sides uniform in [lo, hi] of the size) moving linearly between two random places.

    Returns:
        float32 [T, H, W], 1 = hole.
    """
    bh = int(rng.integers(round(lo * h), round(hi * h) + 1))
    bw = int(rng.integers(round(lo * w), round(hi * w) + 1))
    y0, x0 = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
    y1, x1 = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
    hole = np.zeros((t, h, w), np.float32)
    for f in range(t):
        a = f / max(1, t - 1)
        top, left = int(round(y0 + a * (y1 - y0))), int(round(x0 + a * (x1 - x0)))
        hole[f, top : top + bh, left : left + bw] = 1.0
    return hole


def mixed_hole(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """The fine-tuning mix: a third each of :func:`box_hole`, :func:`stroke_hole` and
    :func:`moving_box_hole` (a moving occluder, like most removal mattes).

    Returns:
        float32 [T, H, W], 1 = hole.
    """
    kind = rng.random()
    if kind < 1 / 3:
        return box_hole(rng, t, h, w)
    if kind < 2 / 3:
        return stroke_hole(rng, t, h, w)
    return moving_box_hole(rng, t, h, w)


def smooth_path(
    rng: np.random.Generator, t: int, low: np.ndarray, high: np.ndarray, min_travel: float
) -> np.ndarray:
    """A smooth path of ``t`` points inside the box [low, high]: a quadratic Bezier curve from a start to
    an end at least ``min_travel`` apart (where the box allows), bent through a random control point.

    Args:
        low, high (ndarray[2]): corners of the allowed region, (y, x).
        min_travel: fewest pixels between the path's ends.

    Returns:
        ndarray[T, 2] float64 (y, x) positions.
    """
    start = end = rng.uniform(low, high)
    for _ in range(16):  # redraw the end until it is far enough (bounded: tiny regions give up)
        end = rng.uniform(low, high)
        if np.hypot(*(end - start)) >= min_travel:
            break
    control = rng.uniform(low, high)
    a = np.linspace(0.0, 1.0, t)[:, None]
    return (1 - a) ** 2 * start + 2 * (1 - a) * a * control + a**2 * end


def moving_stroke_hole(
    rng: np.random.Generator,
    t: int,
    h: int,
    w: int,
    *,
    strokes: tuple[int, int] = (1, 3),
    area: tuple[float, float] = (0.01, 0.2),
    travel: float = 0.3,
) -> np.ndarray:
    """Free-form brush strokes drawn once and carried rigidly along a :func:`smooth_path` across the window.

    The strokes are polylines of random thickness (1/25 to 1/10 of the short side) around one centre,
    so together they read as one object; the path's ends are at least ``travel`` x the short side
    apart. A shape whose mean area per frame falls outside ``area`` (fraction of the frame) is redrawn.

    Returns:
        float32 [T, H, W], 1 = hole.
    """
    import cv2

    size = min(h, w)
    hole = np.zeros((t, h, w), np.float32)
    for _ in range(32):  # a few redraws at most; the last one is kept whatever its area
        shapes = []
        for _ in range(int(rng.integers(strokes[0], strokes[1] + 1))):
            k = int(rng.integers(3, 7))
            pts = np.cumsum(rng.normal(0.0, size * 0.12, size=(k, 2)), axis=0)  # (x, y) around 0
            shapes.append((pts - pts.mean(axis=0), int(rng.integers(max(2, size // 25), max(3, size // 10)))))
        reach = max(float(np.abs(p).max()) for p, _ in shapes)
        margin = np.minimum([h / 2, w / 2], reach * 0.5)  # the centre stays inside; half the shape may leave
        path = smooth_path(rng, t, margin, np.array([h, w]) - margin, travel * size)
        for f in range(t):
            canvas = np.zeros((h, w), np.uint8)
            for pts, thick in shapes:
                p = pts + path[f, ::-1]
                cv2.polylines(canvas, [np.round(p).astype(np.int32)], False, 1, thick, lineType=cv2.LINE_8)
            hole[f] = canvas
        if area[0] <= hole.mean() <= area[1] and hole.reshape(t, -1).max(axis=1).all():
            break
    return hole


def object_tracks(
    masks: np.ndarray, mask_index: list[int], *, min_area: float = 0.002
) -> list[tuple[int, np.ndarray]]:
    """Every object's silhouette sequences in a clip's masks, cropped to where they move.

    A *track* is a run of consecutive frames (consecutive ``mask_index``) in which the object covers at
    least ``min_area`` of the frame; a clip with only one mask frame gives tracks of one frame.

    Args:
        masks (ndarray[M, H, W] uint8 or int): object ids, 0 = background.
        mask_index: frame number of each mask (ascending).
        min_area: smallest fraction of the frame an object must cover in each frame of a track.

    Returns:
        list of (first frame, silhouettes ndarray[L, h, w] bool) cropped to the union of the track's
        silhouettes, ordered by object id then first frame.
    """
    masks = np.asarray(masks)
    m, hh, ww = masks.shape
    out: list[tuple[int, np.ndarray]] = []
    for obj in (int(v) for v in np.unique(masks) if v != 0):
        binary = masks == obj
        present = binary.reshape(m, -1).mean(axis=1) >= min_area
        f = 0
        while f < m:
            if not present[f]:
                f += 1
                continue
            end = f + 1
            while end < m and present[end] and mask_index[end] == mask_index[end - 1] + 1:
                end += 1
            run = binary[f:end]
            union = run.any(axis=0)
            ys, xs = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
            out.append((int(mask_index[f]), run[:, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1].copy()))
            f = end
    return out


def silhouette_hole(
    rng: np.random.Generator,
    track: np.ndarray,
    t: int,
    h: int,
    w: int,
    *,
    area: tuple[float, float] = (0.03, 0.12),
    dilate: float = 0.01,
    min_travel: float = 0.05,
) -> np.ndarray:
    """A real object's silhouette sequence pasted on a ``t``-frame window of size h x w as a hole.

    The track is cut to ``t`` frames (a random run; a shorter track plays forwards then backwards), maybe
    mirrored, scaled so the silhouette covers a fraction of the frame drawn in ``area`` (less if its
    path would not fit), and placed at random. It moves and changes shape as the object did; a track
    whose silhouette travels less than ``min_travel`` x the short side (a still object, or a single
    mask frame) is carried along a :func:`smooth_path` as well, so the hole always moves. Each frame is
    dilated by ``dilate`` x the short side (removal mattes are drawn a little wide).

    Args:
        track (ndarray[L, h0, w0] bool): silhouettes from :func:`object_tracks`.

    Returns:
        float32 [T, H, W], 1 = hole.
    """
    import cv2

    track = np.asarray(track, bool)
    n = track.shape[0]
    if n >= t:
        first = int(rng.integers(0, n - t + 1))
        order = list(range(first, first + t))
    else:
        bounce = list(range(n)) + list(range(n - 2, 0, -1)) or [0]  # 0..n-1..1, repeated
        order = [bounce[f % len(bounce)] for f in range(t)]
    seq = track[order]
    if rng.random() < 0.5:
        seq = seq[:, :, ::-1]
    union: np.ndarray = np.asarray(seq.any(axis=0))
    ys, xs = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    seq = seq[:, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    mean_area = float(seq.reshape(t, -1).sum(axis=1).mean())
    size = min(h, w)
    scale = np.sqrt(rng.uniform(*area) * h * w / max(mean_area, 1.0))
    scale = min(scale, 0.9 * h / seq.shape[1], 0.9 * w / seq.shape[2])  # the whole path fits the frame
    sh, sw = max(1, round(seq.shape[1] * scale)), max(1, round(seq.shape[2] * scale))
    centres = np.array([np.argwhere(s).mean(axis=0) if s.any() else (np.nan, np.nan) for s in seq]) * scale
    centres = centres[~np.isnan(centres).any(axis=1)]
    moves = (
        len(centres) > 1
        and float(np.hypot(*(centres.max(axis=0) - centres.min(axis=0)))) >= min_travel * size
    )
    if moves:
        offsets = np.repeat(rng.uniform([0, 0], [h - sh + 1, w - sw + 1])[None], t, axis=0)
    else:
        offsets = smooth_path(rng, t, np.zeros(2), np.array([h - sh, w - sw], float), 0.3 * size)
    radius = max(1, round(dilate * size))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    hole = np.zeros((t, h, w), np.uint8)
    for f in range(t):
        sil = cv2.resize(seq[f].astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST)
        y, x = (int(round(v)) for v in offsets[f])
        y, x = min(max(y, 0), h - sh), min(max(x, 0), w - sw)
        hole[f, y : y + sh, x : x + sw] = sil
        hole[f] = cv2.dilate(hole[f], kernel)
    return hole.astype(np.float32)
