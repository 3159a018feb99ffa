r"""``masked_conv3d``: a masked (partial) dilated 3D convolution with a fused BN + ReLU epilogue.

This is the hot op of 3DCN (paper Table 1, top; Wang et al. AAAI 2019 §2a): every layer is a
partial convolution (Liu et al. 2018) so that hole voxels neither feed the convolution nor scale
its output down.

Exact formula, per batch item, output voxel ``p`` and output channel ``k`` (``t`` runs over the
``kT*kH*kW`` taps, ``|W| = kT*kH*kW`` is the window size, padding voxels count as holes)::

    acc_k(p) = sum_t sum_c weight[k, c, t] * x[c, p*stride - padding + t*dilation] * mask[...]
    s(p)     = sum_t mask[p*stride - padding + t*dilation]          (float32; float64 for float64)
    u(p)     = 1 if s(p) > eps else 0,                              eps = 1e-6
    r(p)     = u(p) * |W| / max(s(p), eps)
    v_k(p)   = r(p) * acc_k(p) + u(p) * bias_k                      (0 at holes, bias included)
    y_k(p)   = bn_scale_k * v_k(p) + bn_shift_k                     (only with ``bn``)
    out_k(p) = activation(y_k(p)),   new_mask(p) = u(p)

So a hole output (``u = 0``) is ``activation(bn_shift_k)`` with ``bn``, **not 0**: the same value
an unfused ``BatchNorm3d`` after the convolution gives it, and 0 without ``bn``.
The mask is single-channel, taken as a constant (no gradient), 1 = valid and 0 = hole; soft masks
in [0, 1] follow the same formula. The convolution of a bf16/fp16 input is rounded to that dtype
before the float32 epilogue, in every backend.

Backends behind the one registered op ``torch.ops.combcn.masked_conv3d`` (see :func:`backends`):
the native CPU kernel (oneDNN convolution in ``channels_last_3d`` plus one fused pass for the
count, ratio, bias, batch norm, activation and new mask), the native CUDA kernels (cuDNN
convolution plus a fused count + epilogue kernel; a direct fully fused kernel for C_in <= 4), and
the pure-PyTorch reference (:mod:`combcn.ops.reference`) where no native kernel is available.
Native outputs are ``channels_last_3d`` tensors (the layout the next layer wants).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from combcn.ops import _ext
from combcn.ops.reference import ACTIVATIONS, EPS, masked_conv3d_reference

__all__ = ["EPS", "MaskedConv3d", "masked_conv3d"]

IntOr3 = int | Sequence[int]
BatchNorm = nn.BatchNorm3d | tuple[Tensor, Tensor] | None


def _triple(value: Any, name: str, minimum: int) -> tuple[int, int, int]:
    if isinstance(value, bool):
        raise ValueError(f"masked_conv3d: `{name}` must be an int or 3 ints, got {value!r}")
    if isinstance(value, int):
        values = (value, value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3:
        values = tuple(value)
    else:
        raise ValueError(f"masked_conv3d: `{name}` must be an int or 3 ints (T, H, W), got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"masked_conv3d: `{name}` must hold ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"masked_conv3d: `{name}` must be >= {minimum} in every dimension, got {value!r}")
    return values  # type: ignore[return-value]


def _check_tensor(value: Any, name: str, dim: int, shape: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"masked_conv3d: `{name}` must be a Tensor{shape}, got {type(value).__name__}")
    if value.dim() != dim:
        raise ValueError(
            f"masked_conv3d: `{name}` must be Tensor{shape} ({dim} dims), got shape {tuple(value.shape)}"
        )
    return value


def _fold_bn(bn: BatchNorm, c_out: int, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Fold inference batch norm into ``(scale, shift)`` with ``BN(v) = scale * v + shift``."""
    if bn is None:
        return None, None
    if isinstance(bn, nn.BatchNorm3d):
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("masked_conv3d: `bn` must track running statistics to be folded")
        inv = torch.rsqrt(bn.running_var.float() + bn.eps)
        scale = inv if bn.weight is None else bn.weight.float() * inv
        shift = -bn.running_mean.float() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.float()
        scale, shift = scale.detach(), shift.detach()
    elif isinstance(bn, tuple) and len(bn) == 2 and all(isinstance(t, Tensor) for t in bn):
        scale, shift = bn
    else:
        raise ValueError("masked_conv3d: `bn` must be None, an nn.BatchNorm3d or a (scale, shift) pair")
    for t, what in ((scale, "scale"), (shift, "shift")):
        if t.shape != (c_out,):
            raise ValueError(f"masked_conv3d: `bn` {what} must be Tensor[{c_out}], got {tuple(t.shape)}")
        if t.device != like.device:
            raise ValueError(f"masked_conv3d: `bn` {what} is on {t.device}, `x` on {like.device}")
    return scale.to(like.dtype), shift.to(like.dtype)


def masked_conv3d(
    x: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOr3 = 1,
    padding: IntOr3 | str = 0,
    dilation: IntOr3 = 1,
    *,
    bn: BatchNorm = None,
    activation: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Masked (partial) dilated 3D convolution; formula in the module docstring.

    Args:
        x (Tensor[N, C_in, T, H, W]): features, float32/bfloat16 (CPU) or float32/bfloat16/float16 (CUDA);
            float64 works everywhere (for gradcheck). Any strides (``channels_last_3d`` is fastest).
        mask (Tensor[N, 1, T, H, W]): 1 = valid, 0 = hole; any floating dtype or bool, same device as ``x``.
        weight (Tensor[C_out, C_in, kT, kH, kW]): same dtype and device as ``x``.
        bias (Tensor[C_out] or None): added at valid outputs only.
        stride (int or (int, int, int)): >= 1; the network uses (1, 1, 1) and (1, 2, 2).
        padding (int, (int, int, int) or "same"): zero padding; ``"same"`` means
            ``dilation * (kernel - 1) // 2`` per dimension (odd kernels only), i.e. same size at stride 1.
        dilation (int or (int, int, int)): >= 1; the network uses (1, d, d), d in 1, 2, 4, 8.
        bn (nn.BatchNorm3d, (scale, shift) or None): inference batch norm applied after the partial
            convolution, running statistics folded into ``scale * v + shift`` (Tensor[C_out] each).
            Not differentiated: for training, apply ``nn.BatchNorm3d`` after the op (see
            :class:`MaskedConv3d`).
        activation (None or "relu"): applied last.

    Returns:
        (out, new_mask): out (Tensor[N, C_out, T', H', W']) in ``x.dtype``; new_mask
        (Tensor[N, 1, T', H', W']) in ``x.dtype``, 1 where the window held a valid input.
        ``T' = (T + 2 * padding_T - dilation_T * (kT - 1) - 1) // stride_T + 1``, likewise H', W'.

    Raises:
        ValueError: naming the argument, for wrong ranks, shapes, dtypes, devices or parameters.

    Under ``torch.autocast``, ``x``, ``weight`` and ``bias`` are cast to the autocast dtype first.
    """
    x = _check_tensor(x, "x", 5, "[N, C_in, T, H, W]")
    mask = _check_tensor(mask, "mask", 5, "[N, 1, T, H, W]")
    weight = _check_tensor(weight, "weight", 5, "[C_out, C_in, kT, kH, kW]")
    if not x.is_floating_point():
        raise ValueError(f"masked_conv3d: `x` must be a floating-point tensor, got {x.dtype}")
    if torch.is_autocast_enabled(x.device.type) and weight.is_floating_point():
        # Under autocast, run in the autocast dtype like a convolution would (the op has no autocast kernel).
        low = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(low), weight.to(low)
        bias = None if bias is None else bias.to(low)
    if mask.shape[1] != 1:
        raise ValueError(f"masked_conv3d: `mask` must have 1 channel (C = 1), got shape {tuple(mask.shape)}")
    if (mask.shape[0],) + tuple(mask.shape[2:]) != (x.shape[0],) + tuple(x.shape[2:]):
        raise ValueError(
            f"masked_conv3d: `mask` shape {tuple(mask.shape)} does not match `x` shape {tuple(x.shape)} "
            "in N, T, H, W"
        )
    if mask.device != x.device:
        raise ValueError(f"masked_conv3d: `mask` is on {mask.device}, `x` on {x.device}")
    if not (mask.is_floating_point() or mask.dtype == torch.bool):
        raise ValueError(f"masked_conv3d: `mask` must be floating point or bool, got {mask.dtype}")
    if weight.device != x.device or weight.dtype != x.dtype:
        raise ValueError(
            f"masked_conv3d: `weight` ({weight.dtype}, {weight.device}) must match "
            f"`x` ({x.dtype}, {x.device})"
        )
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"masked_conv3d: `weight` has C_in = {weight.shape[1]} but `x` has {x.shape[1]} channels"
        )
    c_out = weight.shape[0]
    if bias is not None:
        bias = _check_tensor(bias, "bias", 1, f"[{c_out}]")
        if bias.shape[0] != c_out or bias.device != x.device or bias.dtype != x.dtype:
            raise ValueError(
                f"masked_conv3d: `bias` must be Tensor[{c_out}] of {x.dtype} on {x.device}, "
                f"got {tuple(bias.shape)} {bias.dtype} on {bias.device}"
            )
    stride3 = _triple(stride, "stride", 1)
    dilation3 = _triple(dilation, "dilation", 1)
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding != "same":
            raise ValueError(f"masked_conv3d: `padding` must be ints or 'same', got {padding!r}")
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"masked_conv3d: `padding`='same' needs an odd kernel, got {kernel}")
        padding3 = (
            dilation3[0] * (kernel[0] - 1) // 2,
            dilation3[1] * (kernel[1] - 1) // 2,
            dilation3[2] * (kernel[2] - 1) // 2,
        )
    else:
        padding3 = _triple(padding, "padding", 0)
    out_size = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, p, d, k, s in zip(x.shape[2:], padding3, dilation3, kernel, stride3, strict=True)
    ]
    if min(out_size) < 1:
        raise ValueError(
            f"masked_conv3d: `x` of size {tuple(x.shape[2:])} is too small for kernel {kernel} with "
            f"dilation {dilation3} and padding {padding3} (output would be {tuple(out_size)})"
        )
    act = "none" if activation is None else activation
    if act not in ACTIVATIONS:
        raise ValueError(f"masked_conv3d: `activation` must be None or 'relu', got {activation!r}")
    bn_scale, bn_shift = _fold_bn(bn, c_out, x)
    mask = mask.to(x.dtype)
    args = (x, mask, weight, bias, bn_scale, bn_shift, [*stride3], [*padding3], [*dilation3], act, EPS)
    if _ext.has_kernel(x.device.type):
        out, new_mask = torch.ops.combcn.masked_conv3d(*args)
        return out, new_mask
    geometry = (stride3, padding3, dilation3)
    return masked_conv3d_reference(x, mask, weight, bias, bn_scale, bn_shift, *geometry, act, EPS)


class MaskedConv3d(nn.Module):
    """Partial 3D convolution layer (+ optional batch norm and ReLU), the nn.Module face of the op.

    In training mode batch norm runs as an ordinary ``nn.BatchNorm3d`` after the op (batch
    statistics, hole outputs included, exactly the fused formula's placement); in eval mode its
    running statistics are folded into the fused epilogue.

    Args:
        in_channels, out_channels: C_in and C_out.
        kernel_size, stride, padding, dilation: as :func:`masked_conv3d` (``padding="same"`` allowed).
        bias: learn a partial-convolution bias (default True; redundant before batch norm).
        batch_norm: follow with batch norm (default False).
        activation: None or "relu" (default None).

    Shape:
        forward(x (Tensor[N, C_in, T, H, W]), mask (Tensor[N, 1, T, H, W])) ->
        (Tensor[N, C_out, T', H', W'], Tensor[N, 1, T', H', W']).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOr3,
        stride: IntOr3 = 1,
        padding: IntOr3 | str = 0,
        dilation: IntOr3 = 1,
        bias: bool = True,
        batch_norm: bool = False,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        kernel = _triple(kernel_size, "kernel_size", 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = kernel
        self.stride = _triple(stride, "stride", 1)
        self.dilation = _triple(dilation, "dilation", 1)
        self.padding: tuple[int, int, int] | str = (
            padding if isinstance(padding, str) else _triple(padding, "padding", 0)
        )
        if activation not in (None, *ACTIVATIONS):
            raise ValueError(f"MaskedConv3d: `activation` must be None or 'relu', got {activation!r}")
        self.activation = None if activation == "none" else activation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *kernel))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.bn = nn.BatchNorm3d(out_channels) if batch_norm else None
        self.reset_parameters()
        _ext.load()  # build/load the native op now, not inside a torch.compile trace

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Conv3d`` (Kaiming-uniform weight, uniform bias)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.bn is not None and self.training:
            out, new_mask = masked_conv3d(
                x, mask, self.weight, self.bias, self.stride, self.padding, self.dilation
            )
            out = self.bn(out)
            if self.activation == "relu":
                out = torch.relu(out)
            return out, new_mask
        return masked_conv3d(
            x,
            mask,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            bn=self.bn,
            activation=self.activation,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
            f"activation={self.activation}"
        )
