"""The two networks of Wang et al. (AAAI 2019): 3DCN (video, low resolution) and CombCN (per frame).

Layer tables, strides, dilations and skip pairs follow ``docs/research/paper.md`` §2 (Table 1, Fig. 2);
the choices the paper leaves open are listed with their reasons in ``docs/MODEL.md``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from combcn.model.config import ModelConfig


def _masked_conv3d() -> Any:
    """The partial-convolution op (combcn.ops), imported lazily (only ``conv: masked`` needs it)."""
    from combcn.errors import ModelError

    try:
        from combcn.ops import masked_conv3d
    except ImportError as exc:  # the op package predates the op
        raise ModelError(
            "conv 'masked' needs combcn.ops.masked_conv3d, which this installation does not provide; "
            "use conv 'plain' or install the ops (python -m combcn.ops.build)"
        ) from exc
    return masked_conv3d


class _WindowStatsNorm:
    """BatchNorm that can normalise with the current window's own statistics in eval mode.

    Training batches are one window (its frames); at inference the running averages measured much
    worse than the window's own statistics (docs/MODEL.md), so ``window_stats = True`` uses the latter
    without touching the running buffers. The state_dict is that of the plain BatchNorm.
    """

    window_stats: bool = False

    def forward(self, x: Tensor) -> Tensor:
        bn = self  # the nn.BatchNorm base below provides the parameters
        if not bn.training and bn.window_stats:  # type: ignore[attr-defined]
            return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)  # type: ignore[attr-defined]
        return super().forward(x)  # type: ignore[misc]


class BatchNorm3d(_WindowStatsNorm, nn.BatchNorm3d):
    """:class:`nn.BatchNorm3d` with the ``window_stats`` option."""


class BatchNorm2d(_WindowStatsNorm, nn.BatchNorm2d):
    """:class:`nn.BatchNorm2d` with the ``window_stats`` option."""


class Conv3dBlock(nn.Module):
    """3D conv (within-frame stride/dilation) + optional BN + ReLU (paper §2a).

    Args:
        c_in, c_out: channels.
        k: spatial kernel size; the temporal kernel is ``k`` too (cubic kernels, paper §2a [I]).
        stride: within-frame stride, applied as (1, s, s).
        dilation: within-frame dilation, applied as (1, d, d).
        last: the network's last layer: linear, no BN/ReLU.
        masked: use :func:`combcn.ops.masked_conv3d` (partial convolution) instead of a plain conv.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int,
        stride: int = 1,
        dilation: int = 1,
        *,
        last: bool = False,
        masked: bool = False,
    ) -> None:
        super().__init__()
        pad_t = k // 2
        pad_s = dilation * (k // 2)
        self.masked = masked
        self.stride = (1, stride, stride)
        self.padding = (pad_t, pad_s, pad_s)
        self.dilation = (1, dilation, dilation)
        self.conv = nn.Conv3d(c_in, c_out, k, self.stride, self.padding, self.dilation, bias=last or masked)
        self.bn = None if last else BatchNorm3d(c_out)
        self.act = None if last else nn.ReLU(inplace=True)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (Tensor[N, C_in, T, H, W]), valid (Tensor[N, 1, T, H, W], 1 = known) or None ->
        (Tensor[N, C_out, T, H', W'], new valid mask or None)."""
        if self.masked:
            assert valid is not None
            op = _masked_conv3d()
            x, valid = op(
                x,
                valid.to(x.dtype),
                self.conv.weight,
                self.conv.bias,
                self.stride,
                self.padding,
                self.dilation,
            )
        else:
            x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x, valid


class Deconv3dBlock(nn.Module):
    """Transposed 3D conv, x2 within frames, kernel (3, 4, 4), BN + ReLU (paper §2a; temporal kernel
    3 keeps the frame count without cropping, ``docs/MODEL.md``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(c_in, c_out, (3, 4, 4), (1, 2, 2), (1, 1, 1), bias=False)
        self.bn = BatchNorm3d(c_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class ThreeDCN(nn.Module):
    """3DCN: 12-layer 3D conv encoder-decoder on the r=2 downsampled video (paper §2a, Table 1 top).

    Input Tensor[N, 4, T, h, w] (RGB pre-filled + hole channel) for ``conv: plain``, or Tensor[N, 3, T, h, w]
    plus a valid mask for ``conv: masked``; output Tensor[N, 3, T, h, w], linear. h, w multiples of 4.
    U-Net concat skips (Fig. 2a): out4 -> in9, out3 -> in10, out2 -> in11.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.ch
        m = cfg.conv == "masked"
        self.masked = m
        c_in = 3 if m else 4
        # encoder: the masked variant uses partial convolution where holes still exist (layers 1-7)
        self.l1 = Conv3dBlock(c_in, c(16), 5, masked=m)
        self.l2 = Conv3dBlock(c(16), c(32), 3, stride=2, masked=m)
        self.l3 = Conv3dBlock(c(32), c(64), 3, masked=m)
        self.l4 = Conv3dBlock(c(64), c(128), 3, stride=2, masked=m)
        self.l5 = Conv3dBlock(c(128), c(256), 3, dilation=2, masked=m)
        self.l6 = Conv3dBlock(c(256), c(256), 3, dilation=4, masked=m)
        self.l7 = Conv3dBlock(c(256), c(256), 3, dilation=8, masked=m)
        self.l8 = Conv3dBlock(c(256), c(128), 3)
        self.l9 = Deconv3dBlock(c(128) * 2, c(64))
        self.l10 = Conv3dBlock(c(64) * 2, c(32), 3)
        self.l11 = Deconv3dBlock(c(32) * 2, c(16))
        self.l12 = Conv3dBlock(c(16), 3, 3, last=True)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """x (Tensor[N, 3 or 4, T, h, w]), valid (Tensor[N, 1, T, h, w], 1 = known; masked only)
        -> Tensor[N, 3, T, h, w]."""
        v = valid if self.masked else None
        o1, v = self.l1(x, v)
        o2, v = self.l2(o1, None if v is None else v)
        o3, v = self.l3(o2, v)
        o4, v = self.l4(o3, v)
        o5, v = self.l5(o4, v)
        o6, v = self.l6(o5, v)
        o7, _ = self.l7(o6, v)
        o8, _ = self.l8(o7)
        o9 = self.l9(torch.cat([o8, o4], 1))
        o10, _ = self.l10(torch.cat([o9, o3], 1))
        o11 = self.l11(torch.cat([o10, o2], 1))
        out, _ = self.l12(o11)
        return out


class _Conv2d(nn.Sequential):
    """2D conv + BN + ReLU, or a linear conv when ``last`` (paper §2b; GLCIC-style blocks)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, dilation: int = 1, last: bool = False):
        pad = dilation * (k // 2)
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, pad, dilation, bias=last)]
        if not last:
            layers += [BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class _Deconv2d(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), BatchNorm2d(c_out), nn.ReLU(inplace=True)
        )


class CombCN(nn.Module):
    """CombCN: 17-layer 2D encoder-decoder applied frame by frame (paper §2b, Table 1 bottom).

    Input Tensor[B, 4, H, W] (B = N*T frames; RGB pre-filled + hole channel; with ``cfg.seen`` a fifth
    channel, Tensor[B, 5, H, W]: the hole pixels seen in another frame) and, unless ``guided`` is
    False (the 2DCN baseline), the 3DCN output for the same frames Tensor[B, 3, H/2, W/2]. Two separate
    3x3 conv + BN + ReLU branches turn the guidance into maps A and B (128 * width channels at H/2) that
    are added to the output of layer 2 and to the output of layer 14 (the input of layer 15).
    U-Net concat skips (Fig. 2b): the input of layer i (10..16) is cat(out_{i-1}, out_{17-i}).
    Output Tensor[B, 3, H, W], linear. H, W multiples of 4.
    """

    def __init__(self, cfg: ModelConfig, *, guided: bool = True) -> None:
        super().__init__()
        c = cfg.ch
        self.guided = guided
        self.inputs = 5 if cfg.seen else 4
        self.l1 = _Conv2d(self.inputs, c(64), 5)
        self.l2 = _Conv2d(c(64), c(128), 3, stride=2)
        self.l3 = _Conv2d(c(128), c(128), 3)
        self.l4 = _Conv2d(c(128), c(256), 3, stride=2)
        self.l5 = _Conv2d(c(256), c(256), 3)
        self.l6 = _Conv2d(c(256), c(256), 3)
        self.l7 = _Conv2d(c(256), c(256), 3, dilation=2)
        self.l8 = _Conv2d(c(256), c(256), 3, dilation=4)
        self.l9 = _Conv2d(c(256), c(256), 3, dilation=8)
        self.l10 = _Conv2d(c(256) * 2, c(256), 3, dilation=16)
        self.l11 = _Conv2d(c(256) * 2, c(256), 3)
        self.l12 = _Conv2d(c(256) * 2, c(256), 3)
        self.l13 = _Deconv2d(c(256) * 2, c(128))
        self.l14 = _Conv2d(c(128) * 2, c(128), 3)
        self.l15 = _Deconv2d(c(128) * 2, c(64))
        self.l16 = _Conv2d(c(64) * 2, c(32), 3)
        self.l17 = _Conv2d(c(32), 3, 3, last=True)
        if guided:
            self.guide_a = _Conv2d(3, c(128), 3)
            self.guide_b = _Conv2d(3, c(128), 3)

    def forward(self, x: Tensor, guide: Tensor | None = None) -> Tensor:
        """x (Tensor[B, 4 or 5, H, W]), guide (Tensor[B, 3, H/2, W/2] or None) -> Tensor[B, 3, H, W]."""
        if self.guided and guide is None:
            raise ValueError("CombCN built with guidance needs the 3DCN output (guide)")
        o1 = self.l1(x)
        o2 = self.l2(o1)
        if self.guided:
            o2 = o2 + self.guide_a(guide)  # paper §2b: combination at layer 2
        o3 = self.l3(o2)
        o4 = self.l4(o3)
        o5 = self.l5(o4)
        o6 = self.l6(o5)
        o7 = self.l7(o6)
        o8 = self.l8(o7)
        o9 = self.l9(o8)
        o10 = self.l10(torch.cat([o9, o7], 1))
        o11 = self.l11(torch.cat([o10, o6], 1))
        o12 = self.l12(torch.cat([o11, o5], 1))
        o13 = self.l13(torch.cat([o12, o4], 1))
        o14 = self.l14(torch.cat([o13, o3], 1))
        if self.guided:
            o14 = o14 + self.guide_b(guide)  # paper §2b: combination at the input of layer 15
        o15 = self.l15(torch.cat([o14, o2], 1))
        o16 = self.l16(torch.cat([o15, o1], 1))
        return self.l17(o16)
