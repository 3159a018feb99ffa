"""Classical fills the network is measured against, run in the same evaluation.

Every baseline has the model's calling convention: ``fill(frames, hole) -> frames`` with
``frames`` Tensor[N, 3, T, H, W] float in [0, 1] and ``hole`` Tensor[N, 1, T, H, W] (1 = hole), and
returns the clip composited: pixels outside the hole are the input's, bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import cv2
import numpy as np
import torch
from torch import Tensor

from combcn.model.prefill import check_clip, cleanplate_fill, pushpull_fill

__all__ = [
    "BASELINES",
    "telea",
    "navier_stokes",
    "shift_map",
    "temporal_median",
    "cleanplate",
    "pushpull",
    "composite",
]

#: Neighbourhood radius (px) of OpenCV's inpainting, the value OpenCV's own examples use.
INPAINT_RADIUS = 3


def composite(fill: Tensor, frames: Tensor, hole: Tensor) -> Tensor:
    """Fill inside the hole, the input outside it, exactly (no arithmetic on known pixels).

    Args:
        fill (Tensor[N, C, T, H, W]): proposed values.
        frames (Tensor[N, C, T, H, W]): input clip.
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N, C, T, H, W] with ``frames``' dtype.
    """
    return torch.where(hole > 0.5, fill.to(frames.dtype), frames)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] -> uint8 (OpenCV's inpainting rejects 3-channel float)."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _per_frame(
    frames: Tensor, hole: Tensor, fill_one: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> Tensor:
    """Each frame with a hole filled on its own by ``fill_one(image [H, W, 3], hole bool[H, W])``."""
    check_clip(frames, hole)
    plate = frames.detach().cpu().permute(0, 2, 3, 4, 1).numpy()  # [N, T, H, W, 3]
    holes = (hole.detach().cpu()[:, 0] > 0.5).numpy()  # [N, T, H, W]
    fill = np.empty_like(plate)
    for n in range(plate.shape[0]):
        for t in range(plate.shape[1]):
            if not holes[n, t].any():
                fill[n, t] = plate[n, t]
                continue
            fill[n, t] = fill_one(plate[n, t], holes[n, t])
    fill_t = torch.from_numpy(fill).permute(0, 4, 1, 2, 3).to(frames.device)
    return composite(fill_t, frames, hole)


def _opencv(flags: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """OpenCV's inpainting with ``flags`` on one frame, in 8 bits."""

    def fill_one(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        out: np.ndarray = (
            cv2.inpaint(_to_uint8(image), hole.astype(np.uint8) * 255, INPAINT_RADIUS, flags) / 255.0
        )
        return out

    return fill_one


def telea(frames: Tensor, hole: Tensor) -> Tensor:
    """OpenCV Telea (fast marching) inpainting, each frame on its own.

    Args:
        frames (Tensor[N, 3, T, H, W]): clip in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N, 3, T, H, W]: composited fill.
    """
    return _per_frame(frames, hole, _opencv(cv2.INPAINT_TELEA))


def navier_stokes(frames: Tensor, hole: Tensor) -> Tensor:
    """OpenCV Navier-Stokes inpainting, each frame on its own.

    Args:
        frames (Tensor[N, 3, T, H, W]): clip in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N, 3, T, H, W]: composited fill.
    """
    return _per_frame(frames, hole, _opencv(cv2.INPAINT_NS))


def shift_map(frames: Tensor, hole: Tensor) -> Tensor:
    """A shift-map copy of each frame's own pixels into its hole (the engine's patch candidate,
    :func:`combcn.engine.probe.patch`: the shot's dominant patch offsets, searched at reduced scale
    and applied at full size), each frame on its own: the classical exemplar fill (what
    content-aware fills do).

    Args:
        frames (Tensor[N, 3, T, H, W]): clip in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N, 3, T, H, W]: composited fill.
    """
    from combcn.engine.probe import patch

    return _per_frame(frames, hole, lambda image, h: patch(np.ascontiguousarray(image, np.float32), h))


def temporal_median(frames: Tensor, hole: Tensor) -> Tensor:
    """Per pixel, the median over the frames of the window where that pixel is known.

    Pixels never known in the window (a static hole) get a Telea fill of the median frame, so the
    fallback is a clean-plate estimate inpainted spatially, the same in every frame.

    Args:
        frames (Tensor[N, 3, T, H, W]): clip in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N, 3, T, H, W]: composited fill.
    """
    check_clip(frames, hole)
    plate = frames.detach().cpu().double().numpy()  # [N, 3, T, H, W]
    holes = (hole.detach().cpu() > 0.5).numpy()  # [N, 1, T, H, W]
    # nanmedian is slow: use it only at pixels that are hole in some frame (the same values as
    # nanmedian everywhere, since a pixel never in the hole has no NaN to skip)
    median = np.median(plate, axis=2)  # [N, 3, H, W]
    for n in range(plate.shape[0]):
        ever = holes[n, 0].any(axis=0)  # [H, W]
        known = np.where(holes[n][:, :, ever], np.nan, plate[n][:, :, ever])  # [3, T, K]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": handled just below
            median[n][:, ever] = np.nanmedian(known, axis=1)
    fill = np.empty_like(plate)
    for n in range(plate.shape[0]):
        never = np.isnan(median[n, 0])
        clean = np.nan_to_num(median[n]).transpose(1, 2, 0)  # [H, W, 3]
        if never.all():
            clean[:] = 0.5  # nothing known at all: mid-grey is the least-wrong guess
        elif never.any():
            never_mask = never.astype(np.uint8) * 255
            filled = cv2.inpaint(_to_uint8(clean), never_mask, INPAINT_RADIUS, cv2.INPAINT_TELEA)
            clean[never] = filled[never] / 255.0
        fill[n] = clean.transpose(2, 0, 1)[:, None]
    return composite(torch.from_numpy(fill).to(frames.device), frames, hole)


def pushpull(frames: Tensor, hole: Tensor) -> Tensor:
    """Space-time push-pull interpolation (the ``smooth`` pre-fill of the model, with no network).

    Args:
        frames (Tensor[N, 3, T, H, W]): clip in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N, 3, T, H, W]: composited fill.
    """
    return composite(pushpull_fill(frames, hole, time=True), frames, hole)


def cleanplate(frames: Tensor, hole: Tensor) -> Tensor:
    """The window's clean plate (the ``plate`` pre-fill of the model, with no network).

    Like :func:`temporal_median`, with float Navier-Stokes instead of 8-bit Telea where a pixel is
    never known.

    Args:
        frames (Tensor[N, 3, T, H, W]): clip in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N, 3, T, H, W]: composited fill.
    """
    return composite(cleanplate_fill(frames, hole), frames, hole)


def tracked_plate(frames: Tensor, hole: Tensor) -> Tensor:
    """The window's camera-tracked clean plate (the ``track`` plate of the model, with no network):
    :func:`combcn.model.track.tracked_plate_fill`.

    Args:
        frames (Tensor[N, 3, T, H, W]): clip in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N, 3, T, H, W]: composited fill.
    """
    from combcn.model.track import tracked_plate_fill

    return composite(tracked_plate_fill(frames, hole)[0], frames, hole)


#: name -> (fill function, one-line description), in table order.
BASELINES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], str]] = {
    "telea": (telea, f"OpenCV Telea per frame (radius {INPAINT_RADIUS}, 8-bit)"),
    "navier_stokes": (navier_stokes, f"OpenCV Navier-Stokes per frame (radius {INPAINT_RADIUS}, 8-bit)"),
    "shift_map": (
        shift_map,
        "shift-map per frame: dominant patch offsets (He and Sun), searched at reduced scale",
    ),
    "temporal_median": (
        temporal_median,
        "per-pixel median of the window's known values; never-known pixels: Telea on the median frame",
    ),
    "cleanplate": (
        cleanplate,
        "per-pixel median of the window's known values; never-known pixels: Navier-Stokes on the median "
        "frame in float (the model's plate pre-fill alone)",
    ),
    "tracked_plate": (
        tracked_plate,
        "the clean plate built in one frame's coordinates through a similarity track of the background, "
        "projected into each frame (the model's tracked plate alone)",
    ),
    "pushpull": (pushpull, "space-time push-pull interpolation (the model's smooth pre-fill alone)"),
}
