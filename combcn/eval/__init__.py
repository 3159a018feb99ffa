"""Evaluation of fills on clips with synthetic holes: metrics, classical baselines, the harness.

- :mod:`combcn.eval.metrics`: hole MAE (paper's metric), PSNR, SSIM, temporal error, detail ratio.
- :mod:`combcn.eval.baselines`: OpenCV Telea and Navier-Stokes per frame, temporal median, the clean
  and tracked plates.
- :mod:`combcn.eval.clips`: windows at a square size or native, with box, moving-stroke or object-
  silhouette holes (drawn by :mod:`combcn.holes`), deterministic.
- :mod:`combcn.eval.evaluate`: runs methods on windows, scores, summarises (``combcn eval``).
"""

from __future__ import annotations

from combcn.eval.baselines import BASELINES, navier_stokes, telea, temporal_median
from combcn.eval.metrics import detail_ratio, hole_mae, psnr, psnr_hole, ssim, temporal_error

__all__ = [
    "BASELINES",
    "detail_ratio",
    "hole_mae",
    "navier_stokes",
    "psnr",
    "psnr_hole",
    "ssim",
    "telea",
    "temporal_error",
    "temporal_median",
]
