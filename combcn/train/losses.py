"""Losses of the paper (§3, Eq. 1-3): masked L1 inside the hole, normalised by the hole's area;
and one that is not in the paper, :func:`temporal_l1`, a flicker term (``train.temporal``).

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


def temporal_l1(pred: Tensor, target: Tensor, hole: Tensor, eps: float = 1e-6) -> Tensor:
    """Flicker term: masked L1 between the prediction's and the truth's frame-to-frame changes.

    The training form of :func:`combcn.eval.metrics.temporal_error`: for each t >= 1,
    ``|(pred_t - pred_{t-1}) - (target_t - target_{t-1})|`` over the pixels that are hole in frame t
    or t-1, normalised by their number (and channels). A fill off by a constant costs nothing; one
    that changes where the truth does not (flicker) does.

    pred, target (Tensor[N, C, T, H, W]), hole (Tensor[N, 1, T, H, W], 1 = hole) -> scalar Tensor;
    0 for T < 2 or no hole.
    """
    if pred.shape[2] < 2:
        return pred.float().sum() * 0.0
    d_pred = pred.float()[:, :, 1:] - pred.float()[:, :, :-1]
    d_true = target.float()[:, :, 1:] - target.float()[:, :, :-1]
    pair = torch.maximum(hole[:, :, 1:], hole[:, :, :-1])
    return masked_l1(d_pred, d_true, pair, eps)


def loss_3dcn(pred: Prediction, frames: Tensor) -> Tensor:
    """Eq. 1 at 3DCN resolution against the area-downsampled ground truth."""
    assert pred.low is not None
    return masked_l1(pred.low, downsample(frames), pred.low_hole)


def loss_combcn(pred: Prediction, frames: Tensor, hole: Tensor) -> Tensor:
    """Eq. 2 at full resolution."""
    return framewise_masked_l1(pred.full, frames, (hole > 0).to(torch.float32))


def total_loss(
    pred: Prediction, frames: Tensor, hole: Tensor, alpha: float = 1.0, temporal: float = 0.0
) -> dict[str, Tensor]:
    """Eq. 3: ``L_3DCN + alpha * L_CombCN`` (terms missing in a variant are left out), plus
    ``temporal * alpha *`` :func:`temporal_l1` of CombCN's output when ``temporal`` > 0.

    Returns a dict with "total" and, where present, "3dcn", "combcn" and "temporal" (scalar Tensors).
    """
    out: dict[str, Tensor] = {}
    total = frames.new_zeros(())
    if pred.low is not None:
        out["3dcn"] = loss_3dcn(pred, frames)
        total = total + out["3dcn"]
    if pred.full is not None and (pred.low is None or pred.full.shape != pred.low.shape):
        out["combcn"] = loss_combcn(pred, frames, hole)
        total = total + alpha * out["combcn"]
        if temporal > 0:
            out["temporal"] = temporal_l1(pred.full, frames, (hole > 0).to(torch.float32))
            total = total + temporal * alpha * out["temporal"]
    out["total"] = total
    return out
