"""Camera-tracked clean plate: the window's background, built in one frame's coordinates and
projected into every frame (docs/MODEL.md, "Tracked plate").

The untracked clean plate (:func:`combcn.model.prefill.cleanplate_fill`) takes, per pixel, the
median over time of what the window shows at that pixel. It is right for a locked-off camera and
wrong as soon as the camera moves: the pixel then sees different parts of the scene. A compositor
fixes that with a planar track: track the background, stack the frames in one reference frame's
coordinates, take the clean plate there, and project it back through the track. This module does
the same for one window:

1. track: sparse corners in the known pixels of frame t (``cv2.goodFeaturesToTrack``), followed into
   frame t + 1 with pyramidal Lucas-Kanade, kept only where the backward track returns to the start,
   and a RANSAC similarity (rotation, uniform scale, translation) through them. A pair that yields
   too few points, or an implausible jump, counts as no motion (identity);
2. the consecutive transforms are chained to the middle frame, the reference, and each frame is
   then tracked straight to it from the chained estimate, so errors do not add up;
3. every frame's known pixels are warped into the reference on a canvas with a margin (the camera
   may show more of the scene than one frame does); the per-pixel median over frames is the mosaic;
   its gaps (background no frame shows) are filled by Navier-Stokes inpainting, as the untracked
   plate's are;
4. the mosaic is warped back into each frame: the plate of that frame. A hole pixel is *seen* where
   its value came from real observations rather than from the gap fill;
5. a check: on the known pixels within ``RING_PX`` of the hole, the projected plate must differ from
   the frames by less than ``RING_MARGIN`` times what the locked-off plate (the per-pixel median over
   time) does. A track that followed a foreground object, or a scene no plane describes, fails it.

When no frame moves by ``SNAP_PX`` or more at any corner, or the check fails, the window is treated
as locked off and the untracked plate is used, bit for bit. All of it is deterministic for given
inputs (OpenCV's RANSAC uses a fixed seed), so a farm chunk computes the same plate as a single
render.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger("combcn.model")

#: A frame whose corners move less than this (pixels) relative to the reference is locked off.
SNAP_PX = 0.25
#: Canvas margin of the mosaic on each side, as a fraction of the frame's side.
MARGIN = 0.5
#: Fewest agreeing point tracks a transform between two frames needs.
MIN_TRACKS = 12
#: A consecutive-frame transform that moves a corner by more than this fraction of the frame's
#: larger side is a failed track, not camera motion.
MAX_STEP = 0.25
#: Width (pixels) of the ring of known pixels around the hole on which the track is checked.
RING_PX = 8
#: The tracked plate is used only if its error on that ring is below this fraction of the locked-off
#: plate's (the per-pixel median over time) error there.
RING_MARGIN = 0.75
#: Forward-backward Lucas-Kanade disagreement (pixels) above which a point track is dropped.
MAX_FB_ERROR = 0.5


def _gray_u8(rgb: np.ndarray) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> [H, W] uint8 luma (Rec. 601 weights)."""
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return np.clip(luma * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _corner_shift(h: np.ndarray, width: int, height: int) -> float:
    """Largest distance (pixels) a frame corner moves under the 3x3 transform ``h``."""
    corners = np.array([[0, width, 0, width], [0, 0, height, height], [1, 1, 1, 1]], dtype=np.float64)
    moved = h @ corners
    moved = moved[:2] / moved[2]
    return float(np.abs(moved - corners[:2]).max())


def _features(grey: np.ndarray, usable: np.ndarray) -> np.ndarray | None:
    """Corners of ``grey`` (uint8 [H, W]) at least 4 px inside ``usable`` (bool [H, W]), or None."""
    import cv2

    mask = cv2.erode(usable.astype(np.uint8) * 255, np.ones((9, 9), np.uint8))
    points = cv2.goodFeaturesToTrack(
        grey, maxCorners=300, qualityLevel=0.005, minDistance=4, mask=mask, blockSize=5
    )
    if points is None or len(points) < MIN_TRACKS:
        return None
    return np.asarray(points, dtype=np.float32)


def _fit(a: np.ndarray, b: np.ndarray, points: np.ndarray, guess: np.ndarray | None) -> np.ndarray | None:
    """Similarity (3x3) taking ``points`` of grey frame ``a`` to where Lucas-Kanade finds them in
    ``b`` (starting from ``guess`` applied to them, if given), or None when too few tracks agree."""
    import cv2

    flags = 0
    ahead = None
    if guess is not None:
        ahead = cv2.perspectiveTransform(points, guess).astype(np.float32)
        flags = cv2.OPTFLOW_USE_INITIAL_FLOW
    lk = {"winSize": (15, 15), "maxLevel": 3, "flags": flags}
    ahead, ok_ahead, _ = cv2.calcOpticalFlowPyrLK(a, b, points, ahead, **lk)  # type: ignore[call-overload]
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(b, a, ahead, None, winSize=(15, 15), maxLevel=3)  # type: ignore[call-overload]
    good = (ok_ahead[:, 0] == 1) & (ok_back[:, 0] == 1)
    good &= np.linalg.norm(back - points, axis=2)[:, 0] < MAX_FB_ERROR
    if int(good.sum()) < MIN_TRACKS:
        return None
    m, inliers = cv2.estimateAffinePartial2D(
        points[good], ahead[good], method=cv2.RANSAC, ransacReprojThreshold=1.0
    )
    if m is None or inliers is None or int(inliers.sum()) < MIN_TRACKS or not np.isfinite(m).all():
        return None
    return np.vstack([m, [0.0, 0.0, 1.0]])


def pair_transform(a: np.ndarray, b: np.ndarray, usable: np.ndarray) -> np.ndarray | None:
    """Similarity transform (3x3) taking pixel coordinates of grey frame ``a`` to those of ``b``,
    tracked through pixels where ``usable`` (bool [H, W]) is True, or None when the track fails."""
    height, width = a.shape
    points = _features(a, usable)
    if points is None:
        return None
    h = _fit(a, b, points, None)
    if h is None or _corner_shift(h, width, height) > MAX_STEP * max(width, height):
        return None
    return h


def track_window(rgb: np.ndarray, known: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Transforms taking each frame's pixel coordinates to the middle frame's.

    Consecutive frames are tracked and chained; then each frame is tracked once more straight to
    the middle frame, starting from the chained estimate, so errors do not add up along the chain
    (where that direct track fails, the chained estimate stays).

    Args:
        rgb (np.ndarray[3, T, H, W]): float frames in [0, 1].
        known (np.ndarray[T, H, W]): bool, True outside the hole.

    Returns:
        (transforms, failures): T 3x3 arrays (the middle frame's is the identity) and how many of
        the T - 1 consecutive pairs could not be tracked (treated as no motion).
    """
    t, height, width = rgb.shape[1:]
    limit = MAX_STEP * max(width, height)
    grey = [_gray_u8(rgb[:, i]) for i in range(t)]
    steps: list[np.ndarray] = []
    failures = 0
    for i in range(t - 1):
        h = pair_transform(grey[i], grey[i + 1], known[i] & known[i + 1])
        if h is None:
            failures += 1
            h = np.eye(3)
        steps.append(h)
    ref = t // 2
    out = [np.eye(3) for _ in range(t)]
    for i in range(ref - 1, -1, -1):  # i -> ref = (i + 1 -> ref) after (i -> i + 1)
        out[i] = out[i + 1] @ steps[i]
    for i in range(ref + 1, t):  # i -> ref = (i - 1 -> ref) after (i -> i - 1)
        out[i] = out[i - 1] @ np.linalg.inv(steps[i - 1])
    for i in range(t):
        if i == ref or abs(i - ref) == 1:
            continue  # a neighbour of the reference was tracked straight to it already
        points = _features(grey[i], known[i])
        if points is None:
            continue
        direct = _fit(grey[i], grey[ref], points, out[i])
        # a direct track that lands far from the chain's estimate is a failed track, not a correction
        if direct is not None and _corner_shift(np.linalg.inv(out[i]) @ direct, width, height) < limit:
            out[i] = direct
    return [h / h[2, 2] for h in out], failures


def _ring(is_hole: np.ndarray) -> np.ndarray:
    """Pixels within ``RING_PX`` of the hole, per frame (bool [T, H, W], the hole included)."""
    import cv2

    size = 2 * RING_PX + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return np.stack([cv2.dilate(h.astype(np.uint8), kernel) > 0 for h in is_hole])


def _warp(image: np.ndarray, h: np.ndarray, size: tuple[int, int], border: int) -> np.ndarray:
    import cv2

    return np.asarray(
        cv2.warpPerspective(image, h, size, flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
    )


def _tracked_one(x: np.ndarray, is_hole: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """One window: x [C, T, H, W] float32, is_hole [T, H, W] -> (plate [C, T, H, W], seen [T, H, W])
    or None when the camera is locked off (or the window too short to track)."""
    import cv2

    c, t, height, width = x.shape
    if t < 2 or c < 3:
        return None
    known = ~is_hole
    transforms, failures = track_window(x[:3], known)
    moving = [_corner_shift(h, width, height) >= SNAP_PX for h in transforms]
    if not any(moving):
        return None
    log.debug("tracked plate: %d of %d frames move, %d untracked pair(s)", sum(moving), t, failures)
    mx, my = int(round(width * MARGIN)), int(round(height * MARGIN))
    canvas = (width + 2 * mx, height + 2 * my)
    shift = np.array([[1.0, 0.0, mx], [0.0, 1.0, my], [0.0, 0.0, 1.0]])
    to_canvas = [shift @ (h if m else np.eye(3)) for h, m in zip(transforms, moving, strict=True)]
    stack = torch.full((t, c, canvas[1], canvas[0]), float("nan"))
    for s in range(t):
        src = np.concatenate([x[:, s].transpose(1, 2, 0), known[s][..., None].astype(np.float32)], axis=2)
        warped = _warp(src, to_canvas[s], canvas, cv2.BORDER_CONSTANT)
        valid = torch.from_numpy(warped[..., c] > 0.999)
        values = torch.from_numpy(np.ascontiguousarray(warped[..., :c].transpose(2, 0, 1)))
        stack[s] = torch.where(valid[None], values, stack[s])
    mosaic = torch.nanmedian(stack, dim=0).values.numpy()  # [C, canvas H, canvas W]; NaN: never shown
    real = ~np.isnan(mosaic[0])
    if not real.any():
        return None
    gap = (~real).astype(np.uint8) * 255
    filled = np.stack(
        [
            cv2.inpaint(np.nan_to_num(mosaic[ch], nan=0.0).astype(np.float32), gap, 3, cv2.INPAINT_NS)
            for ch in range(c)
        ]
    )
    src = np.concatenate([filled.transpose(1, 2, 0), real[..., None].astype(np.float32)], axis=2)
    plate = np.empty_like(x)
    seen = np.zeros(is_hole.shape, dtype=bool)
    for i in range(t):
        back = _warp(src, np.linalg.inv(to_canvas[i]), (width, height), cv2.BORDER_REPLICATE)
        plate[:, i] = back[..., :c].transpose(2, 0, 1)
        seen[i] = (back[..., c] > 0.999) & is_hole[i]
    # the track must explain the surroundings of the hole better than a locked-off camera does
    ring = _ring(is_hole) & known
    if ring.any():
        static = torch.nanmedian(torch.from_numpy(np.where(known[None], x, np.nan)), dim=1).values.numpy()
        tracked_err = float(np.abs(plate - x)[:, ring].mean())
        static_err = float(np.abs(static[:, None] - x)[:, ring].mean())
        log.debug("tracked plate: ring error %.4f tracked, %.4f locked off", tracked_err, static_err)
        if not tracked_err < static_err * RING_MARGIN:
            return None
    return plate, seen


def tracked_plate_fill(frames: Tensor, hole: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Fill holes with the camera-tracked clean plate; also say which hole pixels the window shows.

    Args:
        frames (Tensor[N, C, T, H, W]): values in [0, 1] (C >= 3; the first three are tracked), any
            float dtype, any device (the work runs on the CPU).
        hole (Tensor[N, 1, T, H, W]): 1 (or > 0) = hole.

    Returns:
        (fill, seen, tracked): fill of ``frames``' dtype with pixels outside the hole unchanged, bit
        for bit; seen (Tensor[N, 1, T, H, W], ``frames``' dtype) 1 at hole pixels whose fill comes
        from what the window shows (in another frame, after the track), 0 elsewhere; tracked
        (Tensor[N] bool) which windows use the track. A locked-off window gets
        :func:`combcn.model.prefill.cleanplate_fill` and :func:`combcn.model.prefill.seen_in_window`.
    """
    from combcn.model.prefill import check_clip, cleanplate_fill, seen_in_window

    check_clip(frames, hole)
    is_hole = hole > 0
    fill = cleanplate_fill(frames, hole)
    seen = seen_in_window(hole).to(frames.dtype)
    tracked = torch.zeros(frames.shape[0], dtype=torch.bool)
    with torch.no_grad():
        x = frames.detach().float().cpu().numpy()
        holes = is_hole[:, 0].cpu().numpy()
        for n in range(x.shape[0]):
            if not holes[n].any():
                continue
            result = _tracked_one(x[n], holes[n])
            if result is None:
                continue
            plate, seen_n = result
            tracked[n] = True
            fill[n] = torch.where(is_hole[n], torch.from_numpy(plate).to(fill.device, fill.dtype), frames[n])
            seen[n, 0] = torch.from_numpy(seen_n).to(seen.device, seen.dtype)
    return fill, seen, tracked
