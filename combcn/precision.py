"""Which arithmetic a machine runs fastest: bf16 autocast where the hardware has it, else fp32."""

from __future__ import annotations

import torch

__all__ = ["cpu_has_fast_bf16", "grads_finite", "resolve_precision"]


def cpu_has_fast_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU has AMX-bf16 or AVX-512-bf16 instructions.

    oneDNN runs bf16 convolutions with them (measured 2-3x faster than fp32 for a training step on an
    AVX-512-bf16 EPYC, docs/MODEL.md); without them bf16 falls back to reference loops, far slower
    than fp32.
    """
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    names = flags.split()
    return "amx_bf16" in names or "avx512_bf16" in names


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``precision`` (``auto`` | ``fp32`` | ``bf16``) on ``device``, or None for fp32.

    ``auto`` is bf16 on CUDA and on CPUs with fast bf16 (:func:`cpu_has_fast_bf16`), fp32 elsewhere.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def grads_finite(module: torch.nn.Module) -> bool:
    """True when every parameter gradient of ``module`` is finite.

    Training checks this before each optimiser step: a bf16 backward can overflow on a rare window,
    and one inf gradient turns Adam's state, then every weight, into NaN. One host sync per call.
    """
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
