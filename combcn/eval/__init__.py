"""Evaluation of fills on clips with synthetic holes: metrics, classical baselines, the harness.

- :mod:`combcn.eval.metrics`: hole MAE (paper's metric), PSNR, SSIM, temporal error.
- :mod:`combcn.eval.baselines`: OpenCV Telea and Navier-Stokes per frame, temporal median.
- :mod:`combcn.eval.clips`: 32-frame 128x128 windows with the paper's box holes, deterministic.
- :mod:`combcn.eval.evaluate`: runs methods on windows, scores, summarises (``combcn eval``).
"""

from __future__ import annotations

from combcn.eval.baselines import BASELINES, navier_stokes, telea, temporal_median
from combcn.eval.metrics import hole_mae, psnr, psnr_hole, ssim, temporal_error

__all__ = [
    "BASELINES",
    "hole_mae",
    "navier_stokes",
    "psnr",
    "psnr_hole",
    "ssim",
    "telea",
    "temporal_error",
    "temporal_median",
]
