"""The whole model as the engine sees it: pre-fill, r=2 downsampling, 3DCN, CombCN, composite (paper §1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from combcn.model.config import ModelConfig
from combcn.model.networks import BatchNorm2d, BatchNorm3d, CombCN, ThreeDCN
from combcn.model.plate import PlateCombCN
from combcn.model.prefill import cleanplate_fill, pushpull_fill, seen_in_window
from combcn.model.track import tracked_plate_fill

__all__ = ["Inpainter", "Prediction", "downsample", "downsample_hole", "seen_in_window", "to_channels_last"]


@dataclass
class Prediction:
    """Raw network outputs of one forward pass, all in [0, 1] units, not composited except ``guide``.

    Attributes:
        low (Tensor[N, 3, T, H/2, W/2] | None): 3DCN output (None for the 2dcn variant).
        low_hole (Tensor[N, 1, T, H/2, W/2]): the hole at 3DCN resolution (1 = hole).
        low_input (Tensor[N, 3, T, H/2, W/2]): the downsampled input (area filter, before pre-fill).
        full (Tensor[N, 3, T, H, W]): the full-resolution prediction (CombCN, or upsampled 3DCN).
    """

    low: Tensor | None
    low_hole: Tensor
    low_input: Tensor
    full: Tensor


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store 5-D weights as ``channels_last_3d`` and 4-D weights as ``channels_last`` (oneDNN/AMX speed)."""
    for p in module.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        elif p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return module


def downsample(x: Tensor) -> Tensor:
    """Area (2x2 mean) downsampling within frames: Tensor[N, C, T, H, W] -> Tensor[N, C, T, H/2, W/2]."""
    return F.avg_pool3d(x, (1, 2, 2))


def downsample_hole(hole: Tensor) -> Tensor:
    """A low-res pixel is a hole if any of its 2x2 pixels is: Tensor[N, 1, T, H, W] -> [.., H/2, W/2]."""
    return F.max_pool3d(hole, (1, 2, 2))


class Inpainter(nn.Module):
    """3DCN + CombCN video inpainter (Wang et al. 2019), or one of its ablation variants.

    Attributes:
        config (ModelConfig): how the network was built; saved with the weights.
        window (int): frames per window it was trained on (32).
        resolution (int): working size in pixels it was trained on (128).

    ``forward(frames, hole)`` takes frames (Tensor[N, 3, T, H, W], float in [0, 1]) and hole
    (Tensor[N, 1, T, H, W], float, 1 = hole; any value > 0 counts as hole for the network) and returns
    Tensor[N, 3, T, H, W] float32 where pixels with hole == 0 are bit-exact copies of ``frames`` and
    hole pixels are ``hole * fill + (1 - hole) * frames``. H and W must be multiples of 8; any T >= 1.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        self.window = cfg.window
        self.resolution = cfg.resolution
        self.net3d = ThreeDCN(cfg) if cfg.variant in ("combined", "3dcn") else None
        guided = cfg.variant == "combined"
        self.net2d = CombCN(cfg, guided=guided) if cfg.variant in ("combined", "2dcn") else None
        for module in self.modules():
            if isinstance(module, BatchNorm2d | BatchNorm3d):
                module.window_stats = cfg.norm_stats == "window"
        self.residual = cfg.prefill != "mean"
        if self.residual:
            # each network starts as "no correction": the model's first output is its pre-fill
            lasts: list[nn.Module] = []
            if self.net3d is not None:
                lasts.append(self.net3d.l12.conv)
            if self.net2d is not None:
                lasts.append(self.net2d.l17[0])
            for last in lasts:
                assert isinstance(last, nn.Conv2d | nn.Conv3d)
                nn.init.zeros_(last.weight)
                if last.bias is not None:
                    nn.init.zeros_(last.bias)
        #: with ``config.plate``: CombCN at plate resolution, guided by this model's fill (the engine
        #: runs it; :mod:`combcn.model.plate`), else None
        self.plate: PlateCombCN | None = PlateCombCN(cfg) if cfg.plate else None
        self.register_buffer("mean_rgb", torch.tensor(cfg.mean_rgb).view(1, 3, 1, 1, 1), persistent=False)
        #: with ``config.track``: which windows of the last forward used the camera track (Tensor[N]
        #: bool; the engine counts them for its log), else None
        self.last_tracked: Tensor | None = None

    @staticmethod
    def check_inputs(frames: Tensor, hole: Tensor) -> None:
        """Raise ValueError unless frames is [N, 3, T, H, W], hole [N, 1, T, H, W], H and W multiples of 8."""
        if frames.dim() != 5 or frames.shape[1] != 3:
            raise ValueError(f"frames must be Tensor[N, 3, T, H, W], got shape {tuple(frames.shape)}")
        n, _, t, h, w = frames.shape
        if tuple(hole.shape) != (n, 1, t, h, w):
            raise ValueError(f"hole must be shape {(n, 1, t, h, w)}, got {tuple(hole.shape)}")
        if t < 1 or h < 8 or w < 8 or h % 8 or w % 8:
            raise ValueError(f"H and W must be multiples of 8 (and T >= 1), got T={t}, H={h}, W={w}")

    def _normalise(self, x: Tensor) -> Tensor:
        return x * 2.0 - 1.0  # [0, 1] -> [-1, 1]; the net's linear output is read in the same units

    def predict(self, frames: Tensor, hole: Tensor, *, only_3dcn: bool = False) -> Prediction:
        """Run the networks without the final composite (training uses this; see :class:`Prediction`).

        ``only_3dcn`` skips CombCN (3DCN pre-training, paper §3); ``full`` is then the upsampled 3DCN output.
        """
        self.check_inputs(frames, hole)
        n, _, t, h, w = frames.shape
        hole = (hole > 0).to(frames.dtype)
        mean_buf: Tensor = self.mean_rgb  # type: ignore[assignment]
        mean = mean_buf.to(frames.dtype)
        low_input = downsample(frames)
        low_hole = downsample_hole(hole)
        # hole pixels another frame shows: CombCN's fifth input and/or kept as the plate (docs/MODEL.md)
        seen = None
        if self.config.track:  # the camera-tracked plate; low-res: the same plate, downsampled
            filled, seen, tracked = tracked_plate_fill(frames, hole)
            self.last_tracked = tracked
            low_filled = cleanplate_fill(low_input, low_hole)
            if bool(tracked.any()):
                moved = tracked.to(frames.device).view(-1, 1, 1, 1, 1)
                low_filled = torch.where(moved & (low_hole > 0), downsample(filled), low_filled)
        elif self.residual:  # a classical pre-fill; the networks add a correction (docs/MODEL.md)
            prefill = cleanplate_fill if self.config.prefill == "plate" else pushpull_fill
            filled = prefill(frames, hole)
            low_filled = prefill(low_input, low_hole)
        else:  # paper §1: holes pre-filled with the mean
            filled = torch.where(hole > 0, mean, frames)
            low_filled = torch.where(low_hole > 0, mean, downsample(filled))
        if seen is None and (self.config.seen or self.config.keep_seen):
            seen = seen_in_window(hole)
        low = None
        guide = None
        if self.net3d is not None:
            if self.config.conv == "masked":
                x3 = self._normalise(low_filled)
            else:
                x3 = torch.cat([self._normalise(low_filled), low_hole], 1)
            x3 = x3.contiguous(memory_format=torch.channels_last_3d)
            low = (self.net3d(x3, 1.0 - low_hole).float() + 1.0) * 0.5
            if self.residual:
                low = low - 0.5 + low_filled.float()  # [-1, 1] units: normalised pre-fill + correction
            # known low-res pixels pasted back before guiding CombCN (docs/MODEL.md, §9 item 6)
            guide = torch.where(low_hole > 0, low, low_input.float())
        if self.net2d is not None and not (only_3dcn and guide is not None):
            parts = [self._normalise(filled), hole]
            if self.config.seen:
                assert seen is not None
                parts.append(seen)
            x2 = torch.cat(parts, 1)
            x2 = x2.permute(0, 2, 1, 3, 4).reshape(n * t, x2.shape[1], h, w)
            x2 = x2.contiguous(memory_format=torch.channels_last)
            g2 = None
            if guide is not None:
                g2 = self._normalise(guide).permute(0, 2, 1, 3, 4).reshape(n * t, 3, h // 2, w // 2)
                g2 = g2.to(x2.dtype).contiguous(memory_format=torch.channels_last)
            full = self.net2d(x2, g2).float()
            full = (full.reshape(n, t, 3, h, w).permute(0, 2, 1, 3, 4) + 1.0) * 0.5
            if self.residual:
                full = full - 0.5 + filled.float()
        else:
            assert guide is not None
            up = F.interpolate(
                guide.permute(0, 2, 1, 3, 4).reshape(n * t, 3, h // 2, w // 2),
                size=(h, w),
                mode="bilinear",
                align_corners=False,
            )
            full = up.reshape(n, t, 3, h, w).permute(0, 2, 1, 3, 4)
        if self.config.keep_seen:
            # what another frame shows is the background as seen: the clean plate, not a synthesis
            assert seen is not None
            full = torch.where(seen > 0, filled.float(), full)
        return Prediction(low=low, low_hole=low_hole, low_input=low_input, full=full)

    def forward(self, frames: Tensor, hole: Tensor) -> Tensor:
        """frames (Tensor[N, 3, T, H, W] in [0, 1]), hole (Tensor[N, 1, T, H, W], 1 = hole)
        -> Tensor[N, 3, T, H, W] float32, composited: outside the hole the input, bit for bit."""
        frames32 = frames.float()
        fill = self.predict(frames32, hole.to(frames32.dtype)).full.clamp(0.0, 1.0)
        hole32 = hole.to(torch.float32)
        blended = hole32 * fill + (1.0 - hole32) * frames32
        return torch.where(hole32 > 0, blended, frames32)
