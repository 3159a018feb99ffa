"""Per-shot adaptation: fine-tune the weights on one shot's own pixels, self-supervised.

The shot's known pixels are the only ground truth there is, so training cuts synthetic holes into
them, *away from the matte* (the region to remove is never a target), and teaches the model to fill
those holes while the matte region is missing too, exactly as at render time. The loss is the
paper's (§3, Eq. 1-3): masked L1 of the 3DCN at half resolution plus the per-frame masked L1 of
CombCN, each normalised by its hole area.

Pixels are prepared as the engine prepares them: the plate is shaped into [0, 1] (``acescct`` for
float plates, none for integer ones) and scaled by the factor the engine's crop around this shot's
matte would use, so the model trains at the scale it will later see.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from combcn.errors import ConfigError, InputError
from combcn.io.plate import align_matte, check_finite, matte_channel_index, rgb_channels, rgb_of, to_unit

log = logging.getLogger("combcn.finetune")

#: Bytes of working-resolution plate (float16 RGB + matte) that a shot may occupy in memory.
MEMORY_LIMIT = 6 * 2**30


@dataclass
class Shot:
    """A shot prepared for training, at working scale.

    Attributes:
        source (str): the plate pattern or movie.
        frames (list[int]): frame numbers, in order.
        plate (ndarray[T, h, w, 3] float16): shaped RGB in [0, 1] of ``region``, scaled by ``scale``.
        matte (ndarray[T, h, w] bool): True where the hole to remove is (alpha > 0), at working scale.
        scale (float): working pixels per plate pixel (<= 1).
        crop (tuple[int, int]): (height, width) of the engine's working crop for this shot.
        plate_size (tuple[int, int]): (height, width) of the plate in plate pixels.
        shaper (str): shaper name.
        region (tuple[int, int, int, int]): (y0, y1, x0, x1) plate region held in ``plate``.
    """

    source: str
    frames: list[int]
    plate: np.ndarray
    matte: np.ndarray
    scale: float
    crop: tuple[int, int]
    plate_size: tuple[int, int]
    shaper: str
    region: tuple[int, int, int, int] = (0, 0, 0, 0)


def load_shot(
    source: str,
    matte: str,
    *,
    frames: Sequence[int] | None = None,
    matte_channel: str | None = None,
    invert: bool = False,
    threshold: float = 0.5,
    expand: int = 0,
    shaper: str | None = None,
    resolution: int = 128,
    window: int = 32,
    margin: float = 0.5,
    overlap: int = 8,
    progress: bool = True,
) -> Shot:
    """Read a plate and its matte into a :class:`Shot` at the engine's working scale.

    The engine crops each temporal window around its matte and scales the crop to about
    ``resolution`` squared (:func:`combcn.engine.windows.plan_crop`); this plans the same windows
    and crops, trains at their median scale, and keeps only the plate region those crops cover plus
    one crop size around it (more context than the model ever sees, a fraction of a large plate).

    Args:
        source: plate pattern (``plate.####.exr``) or movie file.
        matte: matte pattern or movie (1 = remove).
        frames: frame numbers to use (default: every frame of the plate on disk).
        matte_channel: matte channel name (default: A, else R/Y, else the first).
        invert, threshold, expand: as ``combcn inpaint`` (see :class:`combcn.engine.MatteOptions`).
        shaper: ``acescct``, ``log`` or ``none`` (default: by pixel type, as the engine does).
        resolution, window: the model's working size and frames per window.
        margin, overlap: the engine's context margin and window overlap (its defaults).

    Raises:
        InputError: missing or unreadable frames, a matte frame missing or of another size, a matte
            that is empty everywhere or covers every pixel, a shot too big for memory.
    """
    from tqdm import tqdm

    from combcn.engine.matte import MatteOptions, bbox, shape_matte
    from combcn.engine.shaper import default_shaper_for, get_shaper
    from combcn.engine.windows import plan_crop, plan_windows
    from combcn.io.plate import Plate

    plate_seq = Plate(source, what="plate")
    matte_seq = Plate(matte, what="matte")
    on_disk = plate_seq.frames
    wanted = list(frames) if frames is not None else on_disk
    missing = [f for f in wanted if f not in set(on_disk)]
    if missing:
        raise InputError(
            "plate frame missing; check --frames against the files on disk",
            path=plate_seq.file(missing[0]),
            frame=missing[0],
        )
    plate_spec = plate_seq.header(wanted[0])
    rgb_index = rgb_channels(plate_spec, plate_seq.file(wanted[0]))
    matte_frames = set(matte_seq.frames)
    missing = (
        []
        if matte_seq.static or matte_seq.movie is not None
        else [f for f in wanted if f not in matte_frames]
    )
    if missing:
        raise InputError(
            "matte frame missing; the matte must cover every plate frame used",
            path=matte_seq.file(missing[0]),
            frame=missing[0],
        )
    options = MatteOptions(threshold=threshold, invert=invert, expand=expand)

    def read_alpha(f: int) -> np.ndarray:
        data = matte_seq.read(f)
        channel = matte_channel_index(data.spec, matte_channel, matte_seq.file(f), own_alpha=False)
        values = align_matte(to_unit(data.pixels[..., channel]), data.spec, plate_spec)
        return shape_matte(values, options) > 0

    # Pass 1: matte boxes only (a full-resolution matte per frame would not fit for long 4K shots).
    boxes: list[tuple[int, int, int, int] | None] = []
    plate_size: tuple[int, int] | None = None
    everything = True
    for f in tqdm(wanted, desc="read matte", unit="frame", disable=not progress, leave=False):
        alpha = read_alpha(f)
        if plate_size is None:
            plate_size = (int(alpha.shape[0]), int(alpha.shape[1]))
        elif alpha.shape != plate_size:
            raise InputError(
                f"matte is {alpha.shape[1]}x{alpha.shape[0]}, "
                f"other frames are {plate_size[1]}x{plate_size[0]}",
                path=matte_seq.file(f),
                frame=f,
            )
        boxes.append(bbox(alpha))
        everything = everything and bool(alpha.all())
    assert plate_size is not None
    if all(b is None for b in boxes):
        raise InputError(
            "the matte is empty in every frame: nothing to remove, nothing to adapt to; "
            "check --matte-channel / --invert",
            path=matte,
        )
    if everything:
        raise InputError(
            "the matte covers every pixel: no known pixels to learn from; check --invert", path=matte
        )
    height, width = plate_size

    # The engine's windows and crops for this shot (combcn.engine.core.render_windows).
    crops = []
    for w in plan_windows(len(wanted), window, overlap):
        inside = [b for b in boxes[w.start : w.end] if b is not None]
        if inside:
            union = (
                min(b[0] for b in inside),
                max(b[1] for b in inside),
                min(b[2] for b in inside),
                max(b[3] for b in inside),
            )
            crops.append(plan_crop(union, height, width, resolution=resolution, margin=margin))
    scale = float(np.median([c.height / (c.y1 - c.y0) for c in crops]))
    crop_h = max(8, int(round(float(np.median([c.height for c in crops])) / 8)) * 8)
    crop_w = max(8, int(round(float(np.median([c.width for c in crops])) / 8)) * 8)
    reach_y, reach_x = int(np.ceil(crop_h / scale)), int(np.ceil(crop_w / scale))
    ry0, ry1 = max(0, min(c.y0 for c in crops) - reach_y), min(height, max(c.y1 for c in crops) + reach_y)
    rx0, rx1 = max(0, min(c.x0 for c in crops) - reach_x), min(width, max(c.x1 for c in crops) + reach_x)
    work_h = max(crop_h, int(round((ry1 - ry0) * scale)))
    work_w = max(crop_w, int(round((rx1 - rx0) * scale)))
    need = len(wanted) * work_h * work_w * 7
    if need > MEMORY_LIMIT:
        raise InputError(
            f"{len(wanted)} frames at {work_w}x{work_h} need {need / 2**30:.1f} GB; pass --frames with a "
            "shorter range (a few hundred frames are plenty to adapt)",
            path=source,
        )
    log.info(
        "shot %s: %d frames %dx%d; engine crops %dx%d at scale %.3f; learning from plate region "
        "x %d-%d, y %d-%d (%dx%d working px)",
        source,
        len(wanted),
        width,
        height,
        crop_w,
        crop_h,
        scale,
        rx0,
        rx1,
        ry0,
        ry1,
        work_w,
        work_h,
    )

    # Pass 2: the plate region, shaped and scaled like the engine does, and its matte.
    plate = np.empty((len(wanted), work_h, work_w, 3), np.float16)
    matte_work = np.empty((len(wanted), work_h, work_w), bool)
    shaper_name = shaper
    for i, f in enumerate(tqdm(wanted, desc="read plate", unit="frame", disable=not progress, leave=False)):
        data = plate_seq.read(f)
        if data.pixels.shape[:2] != plate_size:
            raise InputError(
                f"plate is {data.pixels.shape[1]}x{data.pixels.shape[0]} but its matte is {width}x{height}",
                path=plate_seq.file(f),
                frame=f,
            )
        if shaper_name is None:
            shaper_name = default_shaper_for(data.pixels.dtype, movie=plate_seq.movie is not None)
            log.info("shaper: %s", shaper_name)
        rgb = rgb_of(data, rgb_index)[ry0:ry1, rx0:rx1]
        check_finite(rgb, plate_seq.file(f), f)
        shaped = np.clip(get_shaper(shaper_name).encode(rgb), 0.0, 1.0)
        plate[i] = cv2.resize(shaped, (work_w, work_h), interpolation=cv2.INTER_AREA)
        alpha = read_alpha(f)[ry0:ry1, rx0:rx1].astype(np.float32)
        # a working pixel is matte if any plate pixel under it is (as the engine's hole)
        matte_work[i] = cv2.resize(alpha, (work_w, work_h), interpolation=cv2.INTER_AREA) > 0
    return Shot(
        source=source,
        frames=list(wanted),
        plate=plate,
        matte=matte_work,
        scale=scale,
        crop=(crop_h, crop_w),
        plate_size=plate_size,
        shaper=str(shaper_name),
        region=(ry0, ry1, rx0, rx1),
    )


@dataclass
class Sample:
    """One training window: truth, the model's input hole, and where the loss is taken.

    Attributes:
        truth (Tensor[1, 3, T, h, w]): shaped pixels in [0, 1].
        hole (Tensor[1, 1, T, h, w]): synthetic hole OR matte: what the model must fill.
        target (Tensor[1, 1, T, h, w]): synthetic hole pixels (never the matte nor near it): the loss mask.
    """

    truth: Tensor
    hole: Tensor
    target: Tensor


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in mask])


def synthetic_hole(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """A synthetic hole of the kinds the model was trained on (:mod:`combcn.holes`).

    A third each: the paper's box (sides 0.375-0.5 of the crop, same place in every frame, §4),
    free-form strokes that drift over time, and a paper-sized box that moves linearly across the
    window (a moving occluder, like most removal mattes).

    Returns:
        ndarray[T, h, w] bool.
    """
    from combcn.holes import mixed_hole

    return mixed_hole(rng, frames, height, width) > 0


def draw_sample(
    shot: Shot, rng: np.random.Generator, *, window: int, keep_away: int, tries: int = 30
) -> Sample:
    """A random training window from the shot with a synthetic hole away from the matte.

    The crop has the engine's working-crop size; half the time it is centred near the matte (the
    context the model sees at render time), otherwise anywhere. The synthetic hole is resampled until
    it keeps ``keep_away`` working pixels from the matte in every frame; the last try has the
    forbidden pixels cut out of it, so the loss never covers the matte or its surroundings.

    Raises:
        InputError: no crop with enough known pixels away from the matte was found.
    """
    n, height, width = shot.matte.shape
    t = min(window, n)
    ch, cw = min(shot.crop[0], height), min(shot.crop[1], width)
    for _ in range(tries):
        start = int(rng.integers(0, n - t + 1))
        matte = shot.matte[start : start + t]
        if rng.random() < 0.5 and matte.any():
            ys, xs = np.nonzero(matte.any(axis=0))
            cy = int(rng.integers(ys.min(), ys.max() + 1)) + int(rng.integers(-ch // 4, ch // 4 + 1))
            cx = int(rng.integers(xs.min(), xs.max() + 1)) + int(rng.integers(-cw // 4, cw // 4 + 1))
            top, left = min(max(0, cy - ch // 2), height - ch), min(max(0, cx - cw // 2), width - cw)
        else:
            top, left = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
        crop_matte = matte[:, top : top + ch, left : left + cw]
        forbidden = _dilate(crop_matte, keep_away)
        best: np.ndarray | None = None
        for _ in range(tries):
            hole = synthetic_hole(rng, t, ch, cw)
            if not (hole & forbidden).any():
                best = hole
                break
            if best is None or (hole & forbidden).sum() < (best & forbidden).sum():
                best = hole
        assert best is not None
        target = best & ~forbidden
        if target.sum() < 0.02 * target.size:  # too little left to learn from: try another crop
            continue
        truth = shot.plate[start : start + t, top : top + ch, left : left + cw].astype(np.float32)
        flip = rng.random() < 0.5
        if flip:
            truth, target, crop_matte = truth[:, :, ::-1], target[:, :, ::-1], crop_matte[:, :, ::-1]
        truth_t = torch.from_numpy(np.ascontiguousarray(truth)).permute(3, 0, 1, 2)[None]
        target_t = torch.from_numpy(np.ascontiguousarray(target))[None, None].float()
        hole_t = torch.maximum(
            target_t, torch.from_numpy(np.ascontiguousarray(crop_matte))[None, None].float()
        )
        return Sample(truth=truth_t, hole=hole_t, target=target_t)
    raise InputError(
        "could not place synthetic holes away from the matte: the matte (plus --keep-away) covers almost "
        "the whole plate. Lower --keep-away or use a longer/wider shot",
        path=shot.source,
    )


def sample_loss(model: torch.nn.Module, sample: Sample) -> Tensor:
    """L_3DCN + L_CombCN (paper Eq. 3, alpha = 1) on one sample; the matte never enters the loss.

    The training code's losses (:mod:`combcn.train.losses`) with the synthetic-hole target as the
    mask instead of the model's input hole (which also holds the matte).
    """
    from combcn.model import downsample, downsample_hole
    from combcn.train.losses import framewise_masked_l1, masked_l1

    pred = model.predict(sample.truth * (1.0 - sample.hole), sample.hole)  # type: ignore[operator]
    loss = framewise_masked_l1(pred.full, sample.truth, sample.target)
    if pred.low is not None:
        # Low-res target: low pixels whose 2x2 block is all synthetic hole (none touches the matte).
        low_target = 1.0 - downsample_hole(1.0 - sample.target)
        loss = loss + masked_l1(pred.low, downsample(sample.truth), low_target)
    return loss


@dataclass
class FinetuneReport:
    """What a fine-tuning run did.

    Attributes:
        steps (int): optimiser steps taken.
        seconds (float): training wall time.
        loss_first, loss_last (float): mean loss (0-255 MAE units) of the first and last 10% of steps.
        val_before, val_after (float): hole MAE (0-255) on the shot's held-out synthetic holes.
        output (str): the weights file written.
        precision (str): the arithmetic used, ``fp32`` or ``bf16`` (``auto`` resolved).
    """

    steps: int = 0
    seconds: float = 0.0
    loss_first: float = math.nan
    loss_last: float = math.nan
    val_before: float = math.nan
    val_after: float = math.nan
    output: str = ""
    history: list[float] = field(default_factory=list)
    precision: str = ""


def _autocast(precision: str, device: torch.device) -> Any:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def validation_mae(model: torch.nn.Module, samples: Sequence[Sample], precision: str) -> float:
    """Mean hole MAE (0-255, paper's metric) of the model's fills on ``samples``' target pixels."""
    from combcn.eval.metrics import hole_mae

    device = next(model.parameters()).device
    values = []
    with torch.no_grad(), _autocast(precision, device):
        for s in samples:
            out = model(s.truth.to(device) * (1.0 - s.hole.to(device)), s.hole.to(device)).float().cpu()
            values.append(float(hole_mae(out, s.truth, s.target)[0]))
    return float(np.mean(values))


def finetune(
    model: torch.nn.Module,
    shot: Shot,
    *,
    steps: int | None = None,
    minutes: float | None = None,
    lr: float = 1e-4,
    window: int | None = None,
    keep_away: int = 4,
    seed: int = 0,
    precision: str = "auto",
    val_windows: int = 2,
    progress: bool = True,
    checkpoint: Callable[[torch.nn.Module, FinetuneReport], None] | None = None,
    checkpoint_minutes: float = 5.0,
) -> FinetuneReport:
    """Train ``model`` in place on synthetic holes in ``shot`` for ``steps`` or ``minutes``.

    The model trains in eval mode, so it optimises exactly the network that will render: BatchNorm
    behaves as at inference (``norm_stats: window`` normalises by the window's own statistics, as
    in training; ``running`` uses the stored averages) and its running buffers are never updated
    from one shot.

    Args:
        model: an :class:`combcn.model.Inpainter` (its ``predict`` is used).
        shot: from :func:`load_shot`.
        steps / minutes: stop after this many optimiser steps / this much wall time (the first
            reached; at least one must be given).
        lr: Adam learning rate (the paper trains from scratch at 1e-3; adapting wants less).
        window: frames per sample (default: the model's window, 32).
        keep_away: working-resolution pixels between the matte and any synthetic hole.
        seed: seeds sampling (the validation holes use ``seed + 1``).
        precision: ``auto`` (bf16 where the device has fast bf16, :func:`combcn.precision.resolve_precision`),
            ``fp32`` or ``bf16`` (autocast).
        val_windows: held-out synthetic-hole windows scored before and after (0 = skip).
        checkpoint: called with the model every ``checkpoint_minutes`` and at the end.

    Raises:
        ConfigError: neither steps nor minutes, or a non-positive one.
    """
    from tqdm import tqdm

    if steps is None and minutes is None:
        raise ConfigError("give --steps or --minutes (how long to train)")
    if (steps is not None and steps < 1) or (minutes is not None and minutes <= 0):
        raise ConfigError(f"--steps must be >= 1 and --minutes > 0, got steps={steps}, minutes={minutes}")
    device = next(model.parameters()).device
    from combcn.precision import cpu_has_fast_bf16, grads_finite, resolve_precision

    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning("bf16 on a CPU without AMX/AVX-512-bf16 is much slower than fp32; use --precision fp32")
    precision = "bf16" if resolve_precision(precision, device) is not None else "fp32"
    log.info("finetune arithmetic: %s on %s", precision, device)
    window = int(window) if window else int(getattr(model, "window", 32))
    rng = np.random.default_rng(seed)
    val_rng = np.random.default_rng(seed + 1)
    val = [draw_sample(shot, val_rng, window=window, keep_away=keep_away) for _ in range(val_windows)]
    report = FinetuneReport(precision=precision)
    model.eval()  # render-time BatchNorm, buffers untouched: see the docstring
    if val:
        report.val_before = validation_mae(model, val, precision)
        log.info("held-out synthetic holes before: hole MAE %.2f (0-255)", report.val_before)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=lr)
    deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
    next_checkpoint = time.monotonic() + 60.0 * checkpoint_minutes
    t0 = time.monotonic()
    bar = tqdm(total=steps, desc="finetune", unit="step", disable=not progress)
    try:
        while (steps is None or report.steps < steps) and (deadline is None or time.monotonic() < deadline):
            sample = draw_sample(shot, rng, window=window, keep_away=keep_away)
            sample = Sample(sample.truth.to(device), sample.hole.to(device), sample.target.to(device))
            with _autocast(precision, device):
                loss = sample_loss(model, sample)
            if not torch.isfinite(loss):
                log.warning(
                    "step %d: loss is %s; stopping with the last good weights", report.steps + 1, loss.item()
                )
                break
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if grads_finite(model):
                optimiser.step()
            else:  # a bf16 overflow: skip this update rather than poison Adam's state with inf
                log.warning("step %d: non-finite gradient (bf16 overflow?): update skipped", report.steps + 1)
            report.steps += 1
            report.history.append(float(loss.item()) * 255.0)
            bar.update(1)
            bar.set_postfix(loss=f"{report.history[-1]:.2f}")
            if checkpoint is not None and time.monotonic() >= next_checkpoint:
                report.seconds = time.monotonic() - t0
                checkpoint(model, report)
                next_checkpoint = time.monotonic() + 60.0 * checkpoint_minutes
    except KeyboardInterrupt:
        # Ctrl-C: keep what was learnt so far (written below), then stop as interrupted.
        report.seconds = time.monotonic() - t0
        bar.close()
        log.warning("interrupted after %d steps: writing the weights so far", report.steps)
        if checkpoint is not None:
            checkpoint(model, report)
        raise
    finally:
        bar.close()
        report.seconds = time.monotonic() - t0
    if report.history:
        k = max(1, len(report.history) // 10)
        report.loss_first = float(np.mean(report.history[:k]))
        report.loss_last = float(np.mean(report.history[-k:]))
    if val:
        report.val_after = validation_mae(model, val, precision)
        log.info(
            "held-out synthetic holes after %d steps: hole MAE %.2f (was %.2f)",
            report.steps,
            report.val_after,
            report.val_before,
        )
    if checkpoint is not None:
        checkpoint(model, report)
    return report
