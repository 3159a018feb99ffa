"""Pure-PyTorch reference of :func:`combcn.ops.masked_conv3d`: the test oracle and the fallback.

Slow and obvious on purpose: every step of the partial convolution (Liu et al. 2018, Eq. 1-2)
is a separate tensor operation, so a reader can check it against the
formula in :mod:`combcn.ops.masked_conv3d`. It is differentiable for ``x``, ``weight`` and ``bias``
through ordinary autograd (the mask is treated as a constant).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

#: Threshold on the window's valid count ``s``: a window is valid when ``s > EPS``. Binary masks
#: give integer counts, so this only matters for soft masks; 1e-6 (not 1e-8) so fp16 never divides
#: by an underflowed count (fp16's smallest subnormal is about 6e-8, so 1e-8 rounds to 0).
EPS = 1e-6

ACTIVATIONS = ("none", "relu")


def conv_output_size(n: int, k: int, s: int, p: int, d: int) -> int:
    """Output extent of one dimension, floor semantics: ``(n + 2p - d(k - 1) - 1) // s + 1``.

    0 when the padded input ``n + 2p`` is smaller than the dilated kernel ``d(k - 1) + 1``: every caller
    (the Python function, the fake kernel, and ``conv_output_size`` in ``native/ops/masked_conv3d_common.h``
    for the C++ kernels) refuses such an input with an error instead of computing a partial window.
    """
    span = n + 2 * p - d * (k - 1)
    if span < 1:
        return 0
    return (span - 1) // s + 1


@contextmanager
def _cudnn_tf32(device: torch.device, allow_tf32: bool) -> Iterator[None]:
    """cuDNN's TF32 switch set to ``allow_tf32`` for the block (torch's default is on; the contract's off)."""
    if device.type != "cuda" or torch.backends.cudnn.allow_tf32 == allow_tf32:
        yield
        return
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32  # process-wide, as torch offers it; restored below
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


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
    allow_tf32: bool = False,
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
        allow_tf32: let a float32 convolution on CUDA use TF32 (default: full float32).

    Returns:
        out (Tensor[N, C_out, T', H', W']) in ``x.dtype`` and new_mask (Tensor[N, 1, T', H', W']) in
        ``x.dtype``, 1 where the window held a valid input.
    """
    # Autocast off: the result is computed in x.dtype, as the native kernels compute it.
    with torch.autocast(x.device.type, enabled=False), _cudnn_tf32(x.device, allow_tf32):
        return _reference(
            x, mask, weight, bias, bn_scale, bn_shift, stride, padding, dilation, activation, eps
        )


def _reference(
    x: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    bn_scale: Tensor | None,
    bn_shift: Tensor | None,
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    dilation: tuple[int, int, int],
    activation: str,
    eps: float,
) -> tuple[Tensor, Tensor]:
    acc = _accumulate_dtype(x.dtype)
    kt, kh, kw = weight.shape[2:]
    window = float(kt * kh * kw)
    mask = mask.detach()
    with torch.no_grad():
        ones = torch.ones(1, 1, kt, kh, kw, dtype=acc, device=x.device)
        count = F.conv3d(mask.to(acc), ones, None, stride, padding, dilation)
        valid = (count > eps).to(acc)
        ratio = valid * window / count.clamp_min(eps)
    # x * mask is IEEE (a NaN or Inf at a hole tap gives NaN); the convolution is rounded to x.dtype.
    conv = F.conv3d(x * mask.to(x.dtype), weight, None, stride, padding, dilation)
    # A hole output ignores x: 0 * NaN would otherwise leak a NaN from the window into it.
    y = torch.where(valid > 0, ratio * conv.to(acc), torch.zeros((), dtype=acc, device=x.device))
    if bias is not None:
        y = y + valid * bias.to(acc).view(1, -1, 1, 1, 1)
    if bn_scale is not None and bn_shift is not None:
        y = y * bn_scale.to(acc).view(1, -1, 1, 1, 1) + bn_shift.to(acc).view(1, -1, 1, 1, 1)
    if activation == "relu":
        y = torch.relu(y)  # NaN and -0 pass, as in the native kernels
    return y.to(x.dtype), valid.to(x.dtype)
