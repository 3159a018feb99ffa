"""Native ops of combcn: the fused masked (partial) dilated 3D convolution.

- :func:`masked_conv3d` / :class:`MaskedConv3d`: the op and its nn.Module (formula and epsilon in
  :mod:`combcn.ops.masked_conv3d`).
- :func:`masked_conv3d_reference`: the pure-PyTorch reference (test oracle and fallback).
- :func:`backends`: which implementations are compiled and active (printed by ``combcn info``).
"""

from __future__ import annotations

from typing import Any

import torch

from combcn.ops import _ext
from combcn.ops.masked_conv3d import EPS, MaskedConv3d, masked_conv3d
from combcn.ops.reference import masked_conv3d_reference

__all__ = ["EPS", "MaskedConv3d", "backends", "masked_conv3d", "masked_conv3d_reference"]


def backends() -> dict[str, dict[str, Any]]:
    """State of each implementation of ``masked_conv3d`` (building the native op if not yet tried).

    Returns:
        ``{"reference" | "cpu" | "cuda": {"compiled": bool, "active": bool, "note": str}}``;
        ``active`` means the op routes tensors of that device to that implementation in this process.
    """
    native = _ext.load(warn=False)
    st = _ext.state()
    gpu = torch.cuda.is_available()
    if native:
        rows = torch.ops.combcn._cpu_simd(-1)
        cpu_note = (
            f"oneDNN conv (channels_last_3d) + one fused epilogue pass, {rows} row kernels; "
            f"{_ext.describe_source(st)}"
        )
    else:
        cpu_note = f"not built: {st['error']}"
    if st["cuda"]:
        cuda_note = "cuDNN conv + fused count/epilogue kernel; direct kernel for C_in <= 4"
        cuda_note += "" if gpu else " (no GPU visible)"
    elif not _ext.torch_has_cuda():
        cuda_note = "torch has no CUDA (CPU build); .cu sources are only compile-checked"
    else:
        cuda_note = f"not built: {st['error']}"
    return {
        "reference": {
            "compiled": True,
            "active": not native or (gpu and not st["cuda"]),
            "note": "pure PyTorch; the fallback" + ("" if native else " (in use)"),
        },
        "cpu": {"compiled": native, "active": native, "note": cpu_note},
        "cuda": {"compiled": bool(st["cuda"]), "active": bool(st["cuda"]) and gpu, "note": cuda_note},
    }
