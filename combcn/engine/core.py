"""The window loop: frames and mattes in, fills out, one temporal window at a time.

:func:`render_windows` is shared by the array API and the sequence renderer. It asks for each
frame's RGB and alpha when a window needs them and hands each frame's fill to ``emit`` as soon as
no later window can change it, so memory holds one window of working-size crops plus the fills of
the frames in flight, never the sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from combcn.engine.matte import bbox
from combcn.engine.shaper import Shaper
from combcn.engine.windows import Crop, Window, plan_crop, plan_windows

log = logging.getLogger("combcn.engine")

Box = tuple[int, int, int, int]


@dataclass
class FrameFill:
    """The fill of one frame, ready to composite.

    Attributes:
        box: ``(y0, y1, x0, x1)`` of the frame's hole (alpha > 0) in plate pixels, or None (no hole).
        fill (ndarray[y1-y0, x1-x0, 3] float32): fill values in the plate's units (shaper decoded).
        alpha (ndarray[y1-y0, x1-x0] float32): compositing alpha inside ``box``.
    """

    box: Box | None
    fill: np.ndarray | None
    alpha: np.ndarray | None


@dataclass(frozen=True)
class RenderSettings:
    """How windows are laid out and cropped.

    Attributes:
        overlap: frames shared by consecutive windows (cross-faded); None = a quarter of the window.
        margin: spatial context around the hole, as a fraction of the hole box's longer side.
        context: frames beyond the written ones that may be read (None = as many as the window
            grid needs, which makes chunked renders identical to a single render).
    """

    overlap: int | None = None
    margin: float = 0.5
    context: int | None = None


def composite(plate_rgb: np.ndarray, frame_fill: FrameFill) -> np.ndarray:
    """Blend a fill into plate RGB; pixels where alpha == 0 keep their stored values bit-exact.

    Args:
        plate_rgb (ndarray[H, W, 3]): any dtype (float16/32/64, uint8/16); not modified.
        frame_fill: the fill of this frame.

    Returns:
        ndarray[H, W, 3] of the same dtype.
    """
    out = plate_rgb.copy()
    if frame_fill.box is None or frame_fill.fill is None or frame_fill.alpha is None:
        return out
    y0, y1, x0, x1 = frame_fill.box
    region = out[y0:y1, x0:x1]
    alpha = frame_fill.alpha[..., None]
    dtype = plate_rgb.dtype
    if np.issubdtype(dtype, np.integer):
        top = float(np.iinfo(dtype).max)
        base = region.astype(np.float32) / top
        blended = alpha * frame_fill.fill + (1.0 - alpha) * base
        values = np.clip(np.rint(blended * top), 0, top).astype(dtype)
    else:
        base = region.astype(np.float32)
        blended = alpha * frame_fill.fill + (1.0 - alpha) * base
        if dtype == np.float16:  # no Inf from an out-of-range fill
            blended = np.clip(blended, -65504.0, 65504.0)
        values = blended.astype(dtype)
    region[...] = np.where(alpha > 0, values, region)
    return out


class _Accumulator:
    """Cross-fade sum of one frame's fills over the windows that cover it (in working units)."""

    def __init__(self, box: Box, alpha: np.ndarray):
        self.box = box
        self.alpha = alpha
        y0, y1, x0, x1 = box
        self.total = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        self.weight = 0.0


def _to_working(rows: np.ndarray, crop: Crop, shaper: Shaper) -> torch.Tensor:
    """Plate RGB rows ``crop.y0 .. crop.y1`` -> shaped, clipped, scaled crop Tensor[3, h, w]."""
    region = rows[:, crop.x0 : crop.x1]
    shaped = np.clip(shaper.encode(region), 0.0, 1.0)
    t = torch.from_numpy(np.ascontiguousarray(shaped.transpose(2, 0, 1)))
    if crop.scaled:
        t = F.interpolate(t[None], size=(crop.height, crop.width), mode="area")[0]
    return t


def _hole_to_working(box: Box | None, alpha: np.ndarray | None, crop: Crop) -> torch.Tensor:
    """A frame's alpha inside ``box`` -> hole Tensor[1, h, w] (1 where any covered pixel has alpha > 0)."""
    region = np.zeros((crop.y1 - crop.y0, crop.x1 - crop.x0), np.float32)
    if box is not None and alpha is not None:
        y0, y1, x0, x1 = box
        region[y0 - crop.y0 : y1 - crop.y0, x0 - crop.x0 : x1 - crop.x0] = alpha > 0
    t = torch.from_numpy(region)[None]
    if crop.scaled:
        t = (F.interpolate(t[None], size=(crop.height, crop.width), mode="area")[0] > 0).float()
    return t


def needed_windows(
    n: int, targets: Iterable[int], length: int, settings: RenderSettings
) -> tuple[list[Window], tuple[int, int]]:
    """The windows of the global grid that touch ``targets`` (positions), and the readable range.

    Returns:
        (windows clipped to the readable range, (first, last + 1) positions that will be read).
    """
    wanted = sorted(set(targets))
    if not wanted:
        return [], (0, 0)
    lo, hi = 0, n
    if settings.context is not None:
        lo, hi = max(0, wanted[0] - settings.context), min(n, wanted[-1] + 1 + settings.context)
    wanted_set = set(wanted)
    windows: list[Window] = []
    clipped = False
    overlap = length // 4 if settings.overlap is None else settings.overlap
    for w in plan_windows(n, length, overlap):
        if not any(p in wanted_set for p in range(w.start, w.end)):
            continue
        start, end = max(w.start, lo), min(w.end, hi)
        clipped |= (start, end) != (w.start, w.end)
        windows.append(Window(start, end, w.previous_overlap, w.next_overlap))
    if clipped:
        log.warning(
            "--context %d cuts some temporal windows short: chunk edges may differ slightly from a "
            "single render (leave --context unset for identical results)",
            settings.context,
        )
    first = min(w.start for w in windows)
    last = max(w.end for w in windows)
    return windows, (first, last)


def render_windows(
    model: torch.nn.Module,
    n: int,
    targets: Iterable[int],
    rgb_at: Callable[[int, int, int], np.ndarray],
    alpha_at: Callable[[int], np.ndarray],
    emit: Callable[[int, FrameFill], None],
    *,
    shaper: Shaper,
    settings: RenderSettings,
    device: torch.device,
) -> None:
    """Inpaint the frames at ``targets`` (sequence positions ``0 .. n-1``), window by window.

    Args:
        model: an :class:`combcn.model.Inpainter` (attributes ``window``, ``resolution``).
        n: length of the whole sequence (the window grid is anchored at position 0).
        targets: positions whose fills are wanted, emitted in increasing order.
        rgb_at: (position, y0, y1) -> plate RGB rows ``y0 .. y1-1``, ndarray[y1-y0, W, 3] float32 in
            plate units (finite); only the rows a crop needs are asked for.
        alpha_at: position -> compositing alpha ndarray[H, W] float32 in [0, 1].
        emit: called once per target with its :class:`FrameFill`, as soon as it is final.
        shaper: working-range curve.
        settings: overlap, margin, context.
        device: where the model runs.
    """
    wanted = sorted(set(targets))
    windows, _ = needed_windows(n, wanted, int(getattr(model, "window", 32)), settings)
    resolution = int(getattr(model, "resolution", 128))
    # Per frame in flight: its hole box and the alpha inside it only (memory follows the holes).
    alphas: dict[int, tuple[Box | None, np.ndarray | None]] = {}
    plate_size: list[int] = []
    accumulators: dict[int, _Accumulator] = {}
    emitted: set[int] = set()
    wanted_set = set(wanted)
    tracking = bool(getattr(getattr(model, "config", None), "track", False))
    run_windows = tracked_windows = 0

    def alpha_info(position: int) -> tuple[Box | None, np.ndarray | None]:
        if position not in alphas:
            alpha = alpha_at(position)
            plate_size[:] = alpha.shape
            box = bbox(alpha)
            alphas[position] = (box, None if box is None else alpha[box[0] : box[1], box[2] : box[3]].copy())
        return alphas[position]

    for k, window in enumerate(windows):
        positions = list(range(window.start, window.end))
        infos = {p: alpha_info(p) for p in positions}
        boxes = [b for b, _ in infos.values() if b is not None]
        if boxes:
            union = (
                min(b[0] for b in boxes),
                max(b[1] for b in boxes),
                min(b[2] for b in boxes),
                max(b[3] for b in boxes),
            )
            height, width = plate_size
            crop = plan_crop(union, height, width, resolution=resolution, margin=settings.margin)
            frames = torch.stack(
                [_to_working(rgb_at(p, crop.y0, crop.y1), crop, shaper) for p in positions], 1
            )
            holes = torch.stack(
                [_hole_to_working(b, a, crop) for b, a in infos.values()],
                1,
            )
            log.debug("window %d-%d: crop %s", window.start, window.end - 1, crop)
            with torch.inference_mode():
                out = model(frames[None].to(device), holes[None].to(device))[0].float().cpu()
            run_windows += 1
            last = getattr(model, "last_tracked", None)
            tracked_windows += int(tracking and last is not None and bool(last.any()))
            crop_h, crop_w = crop.y1 - crop.y0, crop.x1 - crop.x0
            for i, p in enumerate(positions):
                box, alpha = infos[p]
                if box is None or alpha is None or p not in wanted_set:
                    continue
                frame_out = out[:, i]
                if crop.scaled:
                    frame_out = F.interpolate(
                        frame_out[None], size=(crop_h, crop_w), mode="bilinear", align_corners=False
                    )[0]
                y0, y1, x0, x1 = box
                piece = frame_out[:, y0 - crop.y0 : y1 - crop.y0, x0 - crop.x0 : x1 - crop.x0]
                acc = accumulators.get(p)
                if acc is None:
                    acc = accumulators[p] = _Accumulator(box, alpha)
                w = window.weight(p)
                acc.total += w * piece.permute(1, 2, 0).numpy()
                acc.weight += w
        # Frames before the next window are final.
        final_before = windows[k + 1].start if k + 1 < len(windows) else n
        for p in wanted:
            if p >= final_before:
                break
            if p in emitted:
                continue
            acc = accumulators.pop(p, None)
            if acc is None:
                emit(p, FrameFill(None, None, None))
            else:
                fill = shaper.decode(np.clip(acc.total / acc.weight, 0.0, 1.0))
                emit(p, FrameFill(acc.box, fill, acc.alpha))
            emitted.add(p)
        for p in [p for p in alphas if p < final_before]:
            del alphas[p]
    missing = [p for p in wanted if p not in emitted]
    if missing:  # pragma: no cover - a bug, not a user error
        raise AssertionError(f"frames at positions {missing[:5]} were never rendered")
    if tracking and run_windows:
        log.info(
            "camera track: the clean plate followed the camera in %d of %d window(s) (the rest: "
            "locked off, or the track did not fit the shot)",
            tracked_windows,
            run_windows,
        )
