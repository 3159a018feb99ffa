"""Fill-quality metrics on clips with known ground truth.

All metrics take a filled clip ``output``, the ground truth ``truth`` and the ``hole``:

- ``output``, ``truth``: Tensor[N, 3, T, H, W] (or [3, T, H, W]) float in [0, 1];
- ``hole``: Tensor[N, 1, T, H, W] (or [1, T, H, W]) float, 1 = hole (inside the synthetic hole), 0 = known.

Each returns a Tensor[N] (one value per clip), so callers can average over clips the way the
paper normalises its loss: per sample first (paper §3, Eq. 1-2 and the footnote on the 0-255 scale).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "hole_mae",
    "psnr",
    "psnr_hole",
    "ssim",
    "ssim_map",
    "ssim_whole_and_hole",
    "temporal_error",
    "detail_ratio",
    "gaussian_window",
]

#: Rec. 709 luma weights: the grey image of :func:`detail_ratio` (the clips are sRGB-encoded).
LUMA = (0.2126, 0.7152, 0.0722)

# SSIM constants of Wang et al. 2004: 11-tap Gaussian, sigma 1.5, K1 = 0.01, K2 = 0.03, dynamic range 1.
SSIM_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_batch(output: Tensor, truth: Tensor, hole: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Check shapes and add the batch axis where it is missing; returns float64 tensors."""
    if output.dim() == 4:
        output, truth, hole = output[None], truth[None], hole[None]
    if output.dim() != 5 or output.shape != truth.shape:
        raise ValueError(
            f"output and truth must be Tensor[N, C, T, H, W] of the same shape; got "
            f"{tuple(output.shape)} and {tuple(truth.shape)}"
        )
    n, _, t, h, w = output.shape
    if hole.dim() != 5 or hole.shape[0] != n or hole.shape[1] != 1 or tuple(hole.shape[2:]) != (t, h, w):
        raise ValueError(
            f"hole must be Tensor[N, 1, T, H, W] = [{n}, 1, {t}, {h}, {w}]; got {tuple(hole.shape)}"
        )
    # float64: sums over millions of pixels must not lose the last digit of the 0-255 error.
    return output.double(), truth.double(), (hole > 0.5).double()


def hole_mae(output: Tensor, truth: Tensor, hole: Tensor) -> Tensor:
    """Mean absolute error per hole pixel on a 0-255 scale, averaged over RGB (paper §3 footnote, §6).

    Args:
        output (Tensor[N, C, T, H, W]): filled clip in [0, 1].
        truth (Tensor[N, C, T, H, W]): ground truth in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N]: per clip, sum |output - truth| * 255 over hole pixels and channels divided by
        (hole pixels * C); NaN for a clip without hole pixels.
    """
    output, truth, hole = _as_batch(output, truth, hole)
    err = (output - truth).abs() * hole * 255.0
    count = hole.sum(dim=(1, 2, 3, 4)) * output.shape[1]
    return err.sum(dim=(1, 2, 3, 4)) / count


def _psnr_from_mse(mse: Tensor) -> Tensor:
    # An exact fill has MSE 0: report +inf rather than a made-up cap.
    return torch.where(mse > 0, -10.0 * torch.log10(mse.clamp_min(1e-300)), torch.full_like(mse, math.inf))


def _no_hole(output: Tensor) -> Tensor:
    """An all-known hole Tensor[N, 1, T, H, W] (or [1, T, H, W]) matching ``output``."""
    return torch.zeros_like(output.narrow(-4, 0, 1))


def psnr(output: Tensor, truth: Tensor) -> Tensor:
    """PSNR in dB over the whole clip (every pixel of every frame), peak 1.0.

    Args:
        output (Tensor[N, C, T, H, W]): filled clip in [0, 1].
        truth (Tensor[N, C, T, H, W]): ground truth in [0, 1].

    Returns:
        Tensor[N]: 10 log10(1 / MSE) per clip; +inf where the clip is reproduced exactly.
    """
    output, truth, _ = _as_batch(output, truth, _no_hole(output))
    mse = ((output - truth) ** 2).mean(dim=(1, 2, 3, 4))
    return _psnr_from_mse(mse)


def psnr_hole(output: Tensor, truth: Tensor, hole: Tensor) -> Tensor:
    """PSNR in dB over the hole pixels only (MSE averaged over hole pixels and RGB), peak 1.0.

    Args:
        output (Tensor[N, C, T, H, W]): filled clip in [0, 1].
        truth (Tensor[N, C, T, H, W]): ground truth in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N]: per clip; NaN for a clip without hole pixels, +inf for an exact fill.
    """
    output, truth, hole = _as_batch(output, truth, hole)
    count = hole.sum(dim=(1, 2, 3, 4)) * output.shape[1]
    mse = (((output - truth) ** 2) * hole).sum(dim=(1, 2, 3, 4)) / count
    return torch.where(torch.isnan(mse), mse, _psnr_from_mse(torch.nan_to_num(mse)))


def gaussian_window(size: int = SSIM_SIZE, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 1-D Gaussian taps.

    Returns:
        Tensor[size] float64 summing to 1.
    """
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Local SSIM of two image stacks (Wang et al. 2004), 'valid' windows only (no padding).

    Args:
        a (Tensor[B, H, W]): images in [0, 1] (one channel each).
        b (Tensor[B, H, W]): images in [0, 1].

    Returns:
        Tensor[B, H - 10, W - 10] float64: SSIM of each 11x11 Gaussian-weighted window, indexed by
        the window's top-left corner (the centre pixel is at +5, +5).
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(
            f"ssim_map takes two Tensor[B, H, W] of one shape; got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if a.shape[-1] < SSIM_SIZE or a.shape[-2] < SSIM_SIZE:
        raise ValueError(f"SSIM needs frames of at least {SSIM_SIZE}x{SSIM_SIZE}; got {tuple(a.shape[-2:])}")
    # float32 depthwise convs are ~60x faster than float64 here; subtracting each image's mean first
    # keeps E[x^2] - E[x]^2 from cancelling catastrophically, so SSIM stays within ~1e-6 of float64.
    n = a.shape[0]
    g = gaussian_window().float().to(a.device)
    kx = g.view(1, 1, 1, -1).expand(n, 1, 1, SSIM_SIZE).contiguous()
    ky = g.view(1, 1, -1, 1).expand(n, 1, SSIM_SIZE, 1).contiguous()

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(x, kx, groups=n), ky, groups=n)

    shift_a = a.double().mean(dim=(1, 2), keepdim=True)
    shift_b = b.double().mean(dim=(1, 2), keepdim=True)
    a0 = (a.double() - shift_a).float()[None]
    b0 = (b.double() - shift_b).float()[None]
    mu_a0, mu_b0 = blur(a0), blur(b0)
    var_a = blur(a0 * a0) - mu_a0**2
    var_b = blur(b0 * b0) - mu_b0**2
    cov = blur(a0 * b0) - mu_a0 * mu_b0
    mu_a, mu_b = mu_a0 + shift_a.float()[None], mu_b0 + shift_b.float()[None]
    c1 = (SSIM_K1 * 1.0) ** 2
    c2 = (SSIM_K2 * 1.0) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den)[0].double()


def ssim(output: Tensor, truth: Tensor, hole: Tensor | None = None) -> Tensor:
    """Mean SSIM per clip, over channels and frames.

    Without ``hole``: the mean of the SSIM map of every frame and channel (whole-frame SSIM).
    With ``hole``: the mean over windows whose centre pixel is a hole pixel (hole SSIM); NaN for a
    clip whose hole has no such window (a hole entirely within 5 px of the border).

    Args:
        output (Tensor[N, C, T, H, W]): filled clip in [0, 1].
        truth (Tensor[N, C, T, H, W]): ground truth in [0, 1].
        hole (Tensor[N, 1, T, H, W] | None): 1 = hole.

    Returns:
        Tensor[N] float64.
    """
    whole, in_hole = ssim_whole_and_hole(output, truth, _no_hole(output) if hole is None else hole)
    return whole if hole is None else in_hole


def ssim_whole_and_hole(output: Tensor, truth: Tensor, hole: Tensor) -> tuple[Tensor, Tensor]:
    """Whole-frame and hole SSIM of :func:`ssim` from one SSIM map (half the work of two calls).

    Args:
        output (Tensor[N, C, T, H, W]), truth (Tensor[N, C, T, H, W]), hole (Tensor[N, 1, T, H, W]).

    Returns:
        (Tensor[N], Tensor[N]) float64: whole-frame SSIM, hole SSIM.
    """
    output, truth, hole = _as_batch(output, truth, hole)
    n, c, t, h, w = output.shape
    smap = ssim_map(output.reshape(-1, h, w), truth.reshape(-1, h, w)).view(n, c, t, h - 10, w - 10)
    r = SSIM_SIZE // 2
    centre = hole[..., r : h - r, r : w - r]
    in_hole = (smap * centre).sum(dim=(1, 2, 3, 4)) / (centre.sum(dim=(1, 2, 3, 4)) * c)
    return smap.mean(dim=(1, 2, 3, 4)), in_hole


def temporal_error(output: Tensor, truth: Tensor, hole: Tensor) -> Tensor:
    """Flicker error on a 0-255 scale: how far the fill's frame-to-frame change is from the truth's.

    For each t >= 1: mean over pixels that are hole in frame t or t-1 and over RGB of
    |(output_t - output_{t-1}) - (truth_t - truth_{t-1})| * 255; then the mean over those t whose
    pair has any hole pixel. Zero when the fill moves exactly as the truth does (for example a fill
    off by a constant offset in every frame).

    Args:
        output (Tensor[N, C, T, H, W]): filled clip in [0, 1].
        truth (Tensor[N, C, T, H, W]): ground truth in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N]; NaN for a clip of one frame or without hole pixels.
    """
    output, truth, hole = _as_batch(output, truth, hole)
    n, c, t = output.shape[:3]
    if t < 2:
        return torch.full((n,), math.nan, dtype=torch.float64, device=output.device)
    d_out = output[:, :, 1:] - output[:, :, :-1]
    d_gt = truth[:, :, 1:] - truth[:, :, :-1]
    pair = torch.maximum(hole[:, :, 1:], hole[:, :, :-1])  # [N, 1, T-1, H, W]
    err = ((d_out - d_gt).abs() * pair * 255.0).sum(dim=(1, 3, 4))  # [N, T-1]
    count = pair.sum(dim=(1, 3, 4)) * c
    valid = count > 0
    per_t = torch.where(valid, err / count.clamp_min(1), torch.zeros_like(err))
    frames = valid.sum(dim=1)
    # NaN (not 0) where no pair has a hole: there is nothing to measure.
    nan = torch.full_like(err[:, 0], math.nan)
    return torch.where(frames > 0, per_t.sum(dim=1) / frames.clamp_min(1), nan)


def grey(frames: Tensor) -> Tensor:
    """Rec. 709 luma of RGB frames: Tensor[N, 3, T, H, W] -> Tensor[N, 1, T, H, W]."""
    weights = torch.tensor(LUMA, dtype=frames.dtype, device=frames.device).view(1, 3, 1, 1, 1)
    return (frames * weights).sum(dim=1, keepdim=True)


def _neighbours(image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(centre, up, down, left, right) of each pixel of Tensor[N, 1, T, H, W], borders replicated."""
    n, _, t, h, w = image.shape
    flat = F.pad(image.reshape(n * t, 1, h, w), (1, 1, 1, 1), mode="replicate")
    parts = (
        flat[..., 1:-1, 1:-1],
        flat[..., :-2, 1:-1],
        flat[..., 2:, 1:-1],
        flat[..., 1:-1, :-2],
        flat[..., 1:-1, 2:],
    )
    return tuple(p.reshape(n, 1, t, h, w) for p in parts)  # type: ignore[return-value]


def laplacian(image: Tensor) -> Tensor:
    """4-neighbour Laplacian of each frame, borders replicated: Tensor[N, 1, T, H, W] -> same shape."""
    centre, up, down, left, right = _neighbours(image)
    return up + down + left + right - 4 * centre


def hole_interior(hole: Tensor) -> Tensor:
    """Hole pixels whose four neighbours are hole too: Tensor[N, 1, T, H, W] (1 = hole) -> same, 0/1."""
    return torch.stack(_neighbours((hole > 0.5).to(torch.float64))).amin(dim=0)


def detail_ratio(output: Tensor, truth: Tensor, hole: Tensor) -> Tensor:
    """High-frequency energy inside the hole relative to the truth's: 1.0 = as sharp as the truth.

    The sum over hole pixels (all frames) of |Laplacian| of the grey (Rec. 709 luma) output, divided by
    the same sum for the truth. Only pixels whose four neighbours are hole too count
    (:func:`hole_interior`): there the Laplacian sees filled values alone, so a seam where the fill meets
    the known pixels is not taken for detail. A blurred fill scores well below 1, a noisy or
    over-sharpened one above; it says nothing about whether the detail is the right detail (hole MAE
    and SSIM do).

    Args:
        output (Tensor[N, C, T, H, W]): filled clip in [0, 1].
        truth (Tensor[N, C, T, H, W]): ground truth in [0, 1].
        hole (Tensor[N, 1, T, H, W]): 1 = hole.

    Returns:
        Tensor[N]; NaN for a clip without hole interior pixels or whose truth is flat there.
    """
    output, truth, hole = _as_batch(output, truth, hole)
    if output.shape[1] != 3:
        raise ValueError(f"detail_ratio needs RGB clips (C = 3); got C = {output.shape[1]}")
    inside = hole_interior(hole)
    out_energy = (laplacian(grey(output)).abs() * inside).sum(dim=(1, 2, 3, 4))
    truth_energy = (laplacian(grey(truth)).abs() * inside).sum(dim=(1, 2, 3, 4))
    nan = torch.full_like(out_energy, math.nan)
    return torch.where(truth_energy > 0, out_energy / truth_energy.clamp_min(1e-300), nan)
