"""Losses of the paper (§3, Eq. 1-3): masked L1 inside the hole, normalised by the hole's area.

Values are in [0, 1] pixel units; multiply by 255 for the paper's Table 2 scale.
"""

from __future__ import annotations

import torch
from torch import Tensor

from combcn.model.inpainter import Prediction, downsample


def masked_l1(pred: Tensor, target: Tensor, hole: Tensor, eps: float = 1e-6) -> Tensor:
    """Eq. 1: ``||M * (pred - target)||_1 / ||M||_1``, averaged over channels.

    pred, target (Tensor[N, C, T, H, W]), hole (Tensor[N, 1, T, H, W], 1 = hole) -> scalar Tensor:
    mean absolute error per hole pixel and channel. 0 if there is no hole.
    """
    err = (pred.float() - target.float()).abs() * hole
    return err.sum() / (hole.sum() * pred.shape[1] + eps)


def framewise_masked_l1(pred: Tensor, target: Tensor, hole: Tensor, eps: float = 1e-6) -> Tensor:
    """Eq. 2: mean over frames of each frame's masked L1 (frames without hole pixels are left out).

    pred, target (Tensor[N, C, T, H, W]), hole (Tensor[N, 1, T, H, W]) -> scalar Tensor.
    """
    err = ((pred.float() - target.float()).abs() * hole).sum(dim=(1, 3, 4))  # [N, T]
    area = hole.sum(dim=(1, 3, 4)) * pred.shape[1]
    has = area > 0
    if not bool(has.any()):
        return err.sum() * 0.0
    return (err[has] / (area[has] + eps)).mean()


def loss_3dcn(pred: Prediction, frames: Tensor) -> Tensor:
    """Eq. 1 at 3DCN resolution against the area-downsampled ground truth."""
    assert pred.low is not None
    return masked_l1(pred.low, downsample(frames), pred.low_hole)


def loss_combcn(pred: Prediction, frames: Tensor, hole: Tensor) -> Tensor:
    """Eq. 2 at full resolution."""
    return framewise_masked_l1(pred.full, frames, (hole > 0).to(torch.float32))


def total_loss(pred: Prediction, frames: Tensor, hole: Tensor, alpha: float = 1.0) -> dict[str, Tensor]:
    """Eq. 3: ``L_3DCN + alpha * L_CombCN`` (terms missing in a variant are left out).

    Returns a dict with "total" and, where present, "3dcn" and "combcn" (all scalar Tensors).
    """
    out: dict[str, Tensor] = {}
    total = frames.new_zeros(())
    if pred.low is not None:
        out["3dcn"] = loss_3dcn(pred, frames)
        total = total + out["3dcn"]
    if pred.full is not None and (pred.low is None or pred.full.shape != pred.low.shape):
        out["combcn"] = loss_combcn(pred, frames, hole)
        total = total + alpha * out["combcn"]
    out["total"] = total
    return out
