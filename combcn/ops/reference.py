"""Pure-PyTorch reference of :func:`combcn.ops.masked_conv3d`: the test oracle and the fallback.

Slow and obvious on purpose: every step of the partial convolution (Liu et al. 2018, Eq. 1-2)
is a separate tensor operation, so a reader can check it against the
formula in :mod:`combcn.ops.masked_conv3d`. It is differentiable for ``x``, ``weight`` and ``bias``
through ordinary autograd (the mask is treated as a constant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Threshold on the window's valid count ``s``: a window is valid when ``s > EPS``. Binary masks
#: give integer counts, so this only matters for soft masks; 1e-6 (not 1e-8) so fp16 never divides
#: by an underflowed count (fp16's smallest subnormal is about 6e-8, so 1e-8 rounds to 0).
EPS = 1e-6

ACTIVATIONS = ("none", "relu")


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Counts, ratios and the epilogue are computed in float32 (float64 for float64 inputs)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def masked_conv3d_reference(
    x: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    bn_scale: Tensor | None,
    bn_shift: Tensor | None,
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    dilation: tuple[int, int, int],
    activation: str = "none",
    eps: float = EPS,
) -> tuple[Tensor, Tensor]:
    """Masked (partial) dilated 3D convolution with an optional inference BN + activation epilogue.

    Arguments are already validated and normalised by :func:`combcn.ops.masked_conv3d`.

    Args:
        x (Tensor[N, C_in, T, H, W]): features.
        mask (Tensor[N, 1, T, H, W]): 1 = valid, 0 = hole.
        weight (Tensor[C_out, C_in, kT, kH, kW]): convolution weight.
        bias (Tensor[C_out] or None): partial-convolution bias (added at valid outputs only).
        bn_scale, bn_shift (Tensor[C_out] or None): folded inference batch norm ``y = scale * v + shift``.
        stride, padding, dilation: 3-tuples (T, H, W).
        activation: ``"none"`` or ``"relu"``.
        eps: valid-count threshold, see :data:`EPS`.

    Returns:
        out (Tensor[N, C_out, T', H', W']) in ``x.dtype`` and new_mask (Tensor[N, 1, T', H', W']) in
        ``x.dtype``, 1 where the window held a valid input.
    """
    acc = _accumulate_dtype(x.dtype)
    kt, kh, kw = weight.shape[2:]
    window = float(kt * kh * kw)
    mask = mask.detach()
    with torch.no_grad():
        ones = torch.ones(1, 1, kt, kh, kw, dtype=acc, device=x.device)
        count = F.conv3d(mask.to(acc), ones, None, stride, padding, dilation)
        valid = (count > eps).to(acc)
        ratio = valid * window / count.clamp_min(eps)
    conv = F.conv3d(x * mask.to(x.dtype), weight, None, stride, padding, dilation)
    y = ratio * conv.to(acc)
    if bias is not None:
        y = y + valid * bias.to(acc).view(1, -1, 1, 1, 1)
    if bn_scale is not None and bn_shift is not None:
        y = y * bn_scale.to(acc).view(1, -1, 1, 1, 1) + bn_shift.to(acc).view(1, -1, 1, 1, 1)
    if activation == "relu":
        y = torch.relu(y)
    return y.to(x.dtype), valid.to(x.dtype)
