"""Hole pre-fills besides the paper's mean colour: a space-time push-pull fill and a clean plate.

The paper (§1) pre-fills holes with the training set's mean pixel. ``smooth`` and ``plate`` instead
start the networks from a classical estimate of the hole, and the networks predict a correction to
it (docs/MODEL.md, "Pre-fill"). Neither has parameters or gradients. ``pushpull_fill`` is tensor
arithmetic on the tensors' own device; ``cleanplate_fill`` runs OpenCV on the CPU for one image per
window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_clip", "cleanplate_fill", "pushpull_fill", "seen_in_window"]

#: Weight below which a pyramid cell counts as holding no known pixel.
_EPS = 1e-6


def check_clip(frames: Tensor, hole: Tensor) -> None:
    """Raise ValueError unless frames is Tensor[N, C, T, H, W] and hole Tensor[N, 1, T, H, W] of the
    same T, H, W (the calling convention of the pre-fills and of the eval baselines)."""
    if frames.dim() != 5 or hole.dim() != 5 or hole.shape[1] != 1 or hole.shape[2:] != frames.shape[2:]:
        raise ValueError(
            f"expected frames Tensor[N, C, T, H, W] and hole Tensor[N, 1, T, H, W]; got "
            f"{tuple(frames.shape)} and {tuple(hole.shape)}"
        )


def pushpull_fill(frames: Tensor, hole: Tensor, *, time: bool = True) -> Tensor:
    """Fill holes by push-pull interpolation over a space(-time) pyramid.

    Push: known pixels are averaged level by level (2x2x2 cells, or 1x2x2 without ``time``) until one
    cell remains, each level keeping the fraction of known pixels per cell as its weight. Pull: from
    the coarsest level down, each level's own average is blended over the (trilinearly) upsampled
    coarser level by its weight, so a hole pixel takes the average of its nearest known surroundings,
    in the neighbouring frames too, and the fill varies smoothly. Pixels outside the hole are returned
    unchanged, bit for bit.

    Args:
        frames (Tensor[N, C, T, H, W]): values to fill, any float dtype.
        hole (Tensor[N, 1, T, H, W]): 1 (or > 0) = hole.
        time (bool): pool over time as well as space (False: each frame on its own).

    Returns:
        Tensor[N, C, T, H, W] of ``frames``' dtype. Where nothing at all is known, 0.5.
    """
    check_clip(frames, hole)
    dtype = frames.dtype
    x = frames.float()
    known = (hole <= 0).to(torch.float32)
    sums = [x * known]
    weights = [known]
    while True:
        t, h, w = weights[-1].shape[2:]
        kernel = (2 if time and t > 1 else 1, 2 if h > 1 else 1, 2 if w > 1 else 1)
        if kernel == (1, 1, 1):
            break
        # box average; ceil_mode keeps a last odd row/column/frame (divided by its own size)
        sums.append(F.avg_pool3d(sums[-1], kernel, ceil_mode=True))
        weights.append(F.avg_pool3d(weights[-1], kernel, ceil_mode=True))
    # the coarsest level: the average of everything known (0.5 where nothing is)
    top, top_k = sums[-1], weights[-1]
    coarse = torch.where(top_k > _EPS, top / top_k.clamp_min(_EPS), torch.full_like(top, 0.5))
    for s, k in zip(reversed(sums[:-1]), reversed(weights[:-1]), strict=True):
        up = F.interpolate(coarse, size=s.shape[2:], mode="trilinear", align_corners=False)
        own = s / k.clamp_min(_EPS)
        alpha = (k * 16.0).clamp(0.0, 1.0)  # a cell 1/16 known or more trusts its own average
        coarse = alpha * own + (1.0 - alpha) * up
    return torch.where(hole > 0, coarse.to(dtype), frames)


def cleanplate_fill(frames: Tensor, hole: Tensor) -> Tensor:
    """Fill holes with the window's clean plate: per pixel, the median over time of its known values.

    Pixels that are never known in the window (a static matte) are filled in that median frame by
    OpenCV's Navier-Stokes inpainting (radius 3, in float32, each channel on its own), so the fill
    there is one image, the same in every frame. This is the compositor's clean-plate estimate: exact
    for a moving object over a locked-off background, a steady spatial fill elsewhere. It runs on the
    CPU (OpenCV) for any device's tensors.

    Args:
        frames (Tensor[N, C, T, H, W]): values to fill, any float dtype.
        hole (Tensor[N, 1, T, H, W]): 1 (or > 0) = hole.

    Returns:
        Tensor[N, C, T, H, W] of ``frames``' dtype; pixels outside the hole unchanged, bit for bit.
        Where nothing at all is known, 0.5.
    """
    import cv2
    import numpy as np

    check_clip(frames, hole)
    with torch.no_grad():
        x = frames.detach().float()
        is_hole = hole > 0
        known = torch.where(is_hole, torch.full_like(x, float("nan")), x)
        plate = torch.nanmedian(known, dim=2).values  # [N, C, H, W]; NaN where never known
        never = torch.isnan(plate[:, :1])  # [N, 1, H, W]
        if bool(never.any()):
            plate_np = plate.cpu().numpy()
            never_np = never[:, 0].cpu().numpy()
            for n in range(plate_np.shape[0]):
                gap = never_np[n]
                if not gap.any():
                    continue
                if gap.all():
                    plate_np[n] = 0.5  # nothing known in this window at all
                    continue
                gap_u8 = gap.astype(np.uint8) * 255
                for c in range(plate_np.shape[1]):
                    channel = np.nan_to_num(plate_np[n, c], nan=0.0).astype(np.float32)
                    plate_np[n, c] = cv2.inpaint(channel, gap_u8, 3, cv2.INPAINT_NS)
            plate = torch.from_numpy(plate_np).to(x.device)
        fill = plate[:, :, None].expand_as(x)
    return torch.where(is_hole, fill.to(frames.dtype), frames)


def seen_in_window(hole: Tensor) -> Tensor:
    """Hole pixels that the window shows in another frame: Tensor[N, 1, T, H, W] (1 = hole) -> same
    shape, 1 where a pixel is hole in this frame and known in at least one other frame, else 0.

    There the clean plate is the median of real observations of the background; elsewhere in the hole
    it is a spatial guess. CombCN sees one frame at a time and cannot tell the two apart on its own.
    """
    is_hole = hole > 0
    never = is_hole.all(dim=2, keepdim=True)
    return (is_hole & ~never).to(hole.dtype)
