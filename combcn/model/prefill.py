"""Hole pre-fills: the paper's mean colour, and a smooth space-time push-pull fill.

The paper (§1) pre-fills holes with the training set's mean pixel. ``smooth`` instead starts the
networks from a smooth interpolation of the hole's surroundings, in space and time, and the networks
predict a correction to it (docs/MODEL.md, "Pre-fill"). Both are plain tensor arithmetic with no
parameters, so they run on any device and dtype the model runs on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pushpull_fill"]

#: Weight below which a pyramid cell counts as holding no known pixel.
_EPS = 1e-6


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
    if frames.dim() != 5 or hole.dim() != 5 or hole.shape[1] != 1 or hole.shape[2:] != frames.shape[2:]:
        raise ValueError(
            f"expected frames Tensor[N, C, T, H, W] and hole Tensor[N, 1, T, H, W]; got "
            f"{tuple(frames.shape)} and {tuple(hole.shape)}"
        )
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
