"""CombCN at plate resolution: the paper's split of the work, scaled to real plates.

Wang et al. run the 3DCN on the video downsampled by r = 2 and CombCN at the input's full resolution,
guided by the 3DCN (paper §2). combcn's window model works on a crop scaled to its 128-pixel working
size, which on a plate is 3-8x below the plate's resolution. :class:`PlateCombCN` is the same 17-layer
CombCN run at the plate's own resolution over the pixels no frame shows, guided by the window model's
fill at the working size (scaled up to the plate): that fill gives the structure and the temporal
coherence, CombCN at plate resolution the detail. How it departs from the paper, and why:
docs/MODEL.md, "CombCN at plate resolution".

The network's input is one frame at plate resolution: the plate's pixels (propagated ones pasted), the
working-size fill in the hole, and the hole; its guidance (maps A and B, paper §2b) is that frame
area-downsampled by 2, as the 3DCN's output is half the input's size in the paper. Its output is a
correction added to the working-size fill (its last layer starts at zero, so an untrained network
returns the working-size fill exactly), kept to lightness and to the amplitude of the detail the plate
shows around the hole (:func:`bounded`). BatchNorm uses its running statistics at inference, so a
tile's result does not depend on the tiles beside it.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from combcn.model.config import ModelConfig
from combcn.model.networks import BatchNorm2d, CombCN

#: pixels of plate around the hole that the network sees (its receptive field reaches further; this
#: is the context the hole's edge needs)
CONTEXT = 64
#: largest tile side in pixels; wider regions are cut into tiles that overlap by :data:`OVERLAP`
TILE = 512
#: pixels two neighbouring tiles share, blended linearly across
OVERLAP = 64


class PlateCombCN(nn.Module):
    """CombCN (paper Table 1 bottom, the channel widths of ``cfg.width``) at plate resolution.

    ``forward(pre, hole)``: pre (Tensor[B, 3, H, W] in [0, 1]: the plate with the working-size fill in
    the hole), hole (Tensor[B, 1, H, W], 1 = hole), H and W multiples of 8 -> Tensor[B, 3, H, W], the
    fill: ``pre`` plus the network's correction (not composited, not clamped).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = CombCN(dataclasses.replace(cfg, seen=False, keep_seen=False, track=False), guided=True)
        last = self.net.l17[0]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        self.running_stats()

    def running_stats(self) -> None:
        """BatchNorm with its running averages at inference (tiles are then independent)."""
        for module in self.modules():
            if isinstance(module, BatchNorm2d):
                module.window_stats = False

    def forward(self, pre: Tensor, hole: Tensor) -> Tensor:
        guide = F.avg_pool2d(pre, 2)
        x = torch.cat([pre * 2.0 - 1.0, (hole > 0).to(pre.dtype)], 1)
        correction = self.net(x, guide * 2.0 - 1.0)
        return pre + 0.5 * correction.to(pre.dtype)  # [-1, 1] units -> [0, 1]

    @torch.inference_mode()
    def fill(
        self,
        rows: np.ndarray,
        hole: np.ndarray,
        coarse: np.ndarray,
        *,
        want: np.ndarray | None = None,
        origin: tuple[int, int, int] | None = None,
    ) -> np.ndarray:
        """The plate-resolution fill of one frame's ``hole``.

        Args:
            rows (ndarray[h, w, 3] float32): the frame's pixels in working units ([0, 1], shaper-encoded),
                propagated pixels pasted.
            hole (ndarray[h, w] bool): the pixels no frame shows (the network's hole).
            coarse (ndarray[h, w, 3] float32): the working-size fill scaled up to this grid, same units.
            want (ndarray[h, w] bool): the hole pixels whose fill is needed (default: all of them);
                the network runs only around these.
            origin: (frame, top, left): where ``rows`` lie in the render; unused here (the engine
                passes it for logs and for the training tool's recorder).

        Returns:
            ndarray[h, w, 3] float32 in [0, 1]: ``coarse`` with the wanted hole pixels refined (every
            other pixel is ``coarse``'s).
        """
        del origin
        out = np.array(coarse, np.float32, copy=True)
        want = hole if want is None else (want & hole)
        if not want.any():
            return out
        h, w = hole.shape
        ys, xs = np.nonzero(want)
        y0, y1 = max(0, int(ys.min()) - CONTEXT), min(h, int(ys.max()) + 1 + CONTEXT)
        x0, x1 = max(0, int(xs.min()) - CONTEXT), min(w, int(xs.max()) + 1 + CONTEXT)
        pre = np.where(hole[..., None], coarse, rows)[y0:y1, x0:x1].astype(np.float32)
        region_hole = hole[y0:y1, x0:x1]
        region_want = want[y0:y1, x0:x1]  # (within the hole: see above)
        total = np.zeros(pre.shape, np.float32)
        weights = np.zeros(pre.shape[:2], np.float32)
        param = next(self.parameters())
        for ty, tx in tiles(y1 - y0, x1 - x0):
            if not region_want[ty, tx].any():
                continue
            result = self._tile(pre[ty, tx], region_hole[ty, tx], param.device)
            ramp = _ramp(ty, y1 - y0)[:, None] * _ramp(tx, x1 - x0)[None, :]
            total[ty, tx] += result * ramp[..., None]
            weights[ty, tx] += ramp
        refined = total / np.maximum(weights, 1e-12)[..., None]
        refined = pre + bounded(refined - pre, pre, region_hole)
        inside = region_want & (weights > 0)
        out[y0:y1, x0:x1][inside] = np.clip(refined[inside], 0.0, 1.0)
        return out

    def _tile(self, pre: np.ndarray, hole: np.ndarray, device: torch.device) -> np.ndarray:
        """One tile through the network, padded by edge replication to multiples of 8."""
        h, w = hole.shape
        ph, pw = -h % 8, -w % 8
        x = torch.from_numpy(np.ascontiguousarray(pre)).permute(2, 0, 1)[None].to(device)
        m = torch.from_numpy(hole.astype(np.float32))[None, None].to(device)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            m = F.pad(m, (0, pw, 0, ph), mode="replicate")
        y = self(x, m)[0, :, :h, :w].float().permute(1, 2, 0).cpu().numpy()
        return np.asarray(y, np.float32)


def bounded(correction: np.ndarray, pre: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The network's ``correction`` (ndarray[h, w, 3], working units) as detail the plate could show:
    its mean over the channels (lightness: the working-size fill keeps its colour), at most the 99th
    percentile of |lightness - its Gaussian (sigma 1.5)| over the known pixels of ``pre`` (no more
    detail than the plate shows around the hole). ndarray[h, w, 3]."""
    known = ~hole
    if int(known.sum()) < 16:
        return np.zeros_like(correction)
    light = pre.mean(axis=2)
    limit = float(np.percentile(np.abs(light - cv2.GaussianBlur(light, (0, 0), 1.5))[known], 99))
    shift = np.clip(correction.mean(axis=2, keepdims=True), -limit, limit)
    return np.broadcast_to(shift, correction.shape).astype(np.float32)


def tiles(height: int, width: int) -> list[tuple[slice, slice]]:
    """The tiles covering a ``height`` x ``width`` region: at most :data:`TILE` a side, neighbours
    overlapping by at least :data:`OVERLAP` pixels."""
    return [(ty, tx) for ty in _spans(height) for tx in _spans(width)]


def _spans(length: int) -> list[slice]:
    if length <= TILE:
        return [slice(0, length)]
    count = math.ceil((length - OVERLAP) / (TILE - OVERLAP))
    starts = np.rint(np.linspace(0, length - TILE, count)).astype(int)
    return [slice(int(s), int(s) + TILE) for s in starts]


def _ramp(span: slice, length: int) -> np.ndarray:
    """Blend weights along one tile side: 1 inside, falling linearly over :data:`OVERLAP` pixels
    towards each end that lies inside the region (another tile covers it), never quite 0."""
    start, stop = span.start, span.stop
    n = stop - start
    ramp = np.ones(n, np.float32)
    steps = (np.arange(min(OVERLAP, n), dtype=np.float32) + 0.5) / OVERLAP
    if start > 0:
        ramp[: steps.size] = np.minimum(ramp[: steps.size], steps)
    if stop < length:
        ramp[n - steps.size :] = np.minimum(ramp[n - steps.size :], steps[::-1])
    return ramp


def from_combcn(net2d: CombCN, cfg: ModelConfig) -> PlateCombCN:
    """A :class:`PlateCombCN` started from a trained working-size CombCN (``net2d``): every layer
    copied (a fifth ``seen`` input channel is dropped: at plate resolution the hole is what no frame
    shows), the last layer zeroed so that it starts as the working-size fill."""
    plate = PlateCombCN(cfg)
    state = {k: v.clone() for k, v in net2d.state_dict().items()}
    first = "l1.0.weight"
    state[first] = state[first][:, :4]
    for key in ("l17.0.weight", "l17.0.bias"):
        if key in state:
            state[key] = torch.zeros_like(state[key])
    plate.net.load_state_dict(state, strict=True)
    return plate
