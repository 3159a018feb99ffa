"""Build, load and register the native ``combcn::masked_conv3d`` op (``native/ops``).

The extension is JIT-built with :func:`torch.utils.cpp_extension.load` (ninja, ``MAX_JOBS`` default
2) on first use or by ``python -m combcn.ops.build``, cached under
``${COMBCN_CACHE:-~/.cache/combcn}/ext/<torch, python and CUDA version>``, and rebuilt by ninja when a
source or header changes. CUDA sources join the build only when torch itself has CUDA
(``torch.cuda._is_compiled()``): the CPU wheel cannot build ``.cu`` files.
If the build fails, a one-line warning says so and :func:`combcn.ops.masked_conv3d` uses the
pure-PyTorch reference. ``COMBCN_NO_EXT=1`` skips the native op altogether.

The C++ side declares the schema (``native/ops/registration.cpp``) and the CPU/CUDA kernels;
the fake (meta) kernel and the autograd formula are registered here, in Python, after loading.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("combcn.ops")

NAME = "combcn_ops"
SOURCE_ROOT = Path(__file__).resolve().parents[2] / "native" / "ops"
CPU_SOURCES = ("registration.cpp", "cpu/masked_conv3d_cpu.cpp", "cpu/simd.cpp")
CUDA_SOURCES = ("cuda/masked_conv3d_cuda.cpp", "cuda/masked_conv3d_cuda.cu")

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "loaded": False, "cuda": False, "error": None, "path": None}


def torch_has_cuda() -> bool:
    """Whether this torch build has CUDA (only then can ``.cu`` sources be built)."""
    return bool(torch.cuda._is_compiled() and torch.version.cuda)


def cache_dir() -> Path:
    """Build directory of the extension for this torch/python/CUDA combination."""
    root = Path(os.environ.get("COMBCN_CACHE", "~/.cache/combcn")).expanduser()
    flavour = f"cu{torch.version.cuda}" if torch_has_cuda() else "cpu"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    tag = f"torch{torch.__version__.split('+')[0]}-{py}-{flavour}"
    return root / "ext" / tag


def sources(with_cuda: bool) -> list[Path]:
    """The native source files of the op (CUDA ones only when ``with_cuda``)."""
    names = CPU_SOURCES + (CUDA_SOURCES if with_cuda else ())
    return [SOURCE_ROOT / name for name in names]


def load(verbose: bool = False, *, warn: bool = True) -> bool:
    """Build (if needed) and load the extension once per process; True when the native op is usable."""
    if _state["tried"]:
        return bool(_state["loaded"])
    with _lock:  # one build per process, even when several threads ask at once
        if _state["tried"]:
            return bool(_state["loaded"])
        return _load_locked(verbose, warn)


def _load_locked(verbose: bool, warn: bool) -> bool:
    _state["tried"] = True
    if os.environ.get("COMBCN_NO_EXT") == "1":
        _state["error"] = "disabled by COMBCN_NO_EXT=1"
        return False
    with_cuda = torch_has_cuda()
    build_dir = cache_dir()
    try:
        try:
            _build(build_dir, with_cuda, verbose)
        except Exception:
            if not with_cuda:
                raise
            # A broken CUDA toolchain must not cost the CPU kernel: retry without the .cu sources.
            log.warning("native op: CUDA build failed, building the CPU kernel only", exc_info=True)
            with_cuda, build_dir = False, build_dir.with_name(build_dir.name + "-cpuonly")
            _build(build_dir, with_cuda, verbose)
    except Exception as exc:  # any build/load failure means: fall back to the reference
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else type(exc).__name__
        _state["error"] = f"{type(exc).__name__}: {reason}"
        log.debug("native op build failed", exc_info=True)
        if warn:
            warnings.warn(
                f"combcn: native masked_conv3d not available ({_state['error']}); "
                "using the pure-PyTorch reference (slower)",
                RuntimeWarning,
                stacklevel=3,
            )
        return False
    _register_python_side()
    _state.update(loaded=True, cuda=with_cuda, path=str(build_dir))
    return True


def _build(build_dir: Path, with_cuda: bool, verbose: bool) -> None:
    """Compile (ninja, incremental) and load the extension library into this process."""
    missing = [str(p) for p in sources(with_cuda) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"native sources missing: {', '.join(missing)}")
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", "2")
    if with_cuda:
        # /usr/local/bin/nvcc may be a wrapper script, which misleads CUDA_HOME detection.
        if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").is_file():
            os.environ["CUDA_HOME"] = "/usr/local/cuda"
        if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"  # nothing to detect the arch from
    from torch.utils.cpp_extension import load as cpp_load

    # -ffp-contract=off: the AVX-512 row kernels (native/ops/cpu/simd.h) must round like the scalar loops.
    cflags = ["-O3", "-ffp-contract=off", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"]
    cflags += ["-DCOMBCN_WITH_CUDA"] if with_cuda else []
    # at::parallel_for is a header template: compiled without OpenMP it runs serially. Linux torch wheels
    # ship libgomp.so.1 and load it first, so the extension's libgomp.so.1 resolves to that same runtime
    # (one thread pool, sized by torch.set_num_threads).
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") and torch.backends.openmp.is_available() else []
    cflags += openmp
    if not (build_dir / f"{NAME}.so").exists():
        log.info("building the native masked_conv3d op in %s (first use; about 30 s on 2 cores)", build_dir)
    log.debug("loading native op %s from %s (cuda=%s)", NAME, build_dir, with_cuda)
    cpp_load(
        name=NAME,
        sources=[str(p) for p in sources(with_cuda)],
        extra_cflags=cflags,
        extra_ldflags=openmp,
        extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr"] if with_cuda else None,
        extra_include_paths=[str(SOURCE_ROOT)],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose,
    )


def state() -> dict[str, Any]:
    """Build state: tried, loaded, cuda, error, path."""
    return dict(_state)


def has_kernel(device_type: str) -> bool:
    """Whether the native op has a kernel for ``device_type`` ("cpu" or "cuda") in this process.

    Under ``torch.compile`` tracing nothing can be built, so a process whose first call is compiled
    gets the reference there; :class:`~combcn.ops.MaskedConv3d` loads the op when constructed.
    """
    if not _state["tried"]:
        if torch.compiler.is_compiling():
            return False
        load()
    if not _state["loaded"]:
        return False
    return device_type == "cpu" or (device_type == "cuda" and bool(_state["cuda"]))


def output_size(
    size: tuple[int, ...], kernel: tuple[int, ...], stride: list[int], padding: list[int], dilation: list[int]
) -> list[Any]:
    """Output (T', H', W') of a convolution (works with symbolic sizes)."""
    return [
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel, stride, padding, dilation, strict=True)
    ]


def window_ratio(
    mask: Tensor,
    kernel: tuple[int, ...],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    eps: float,
) -> tuple[Tensor, Tensor]:
    """(ratio r, valid u) of the formula in :mod:`combcn.ops.masked_conv3d`, in float32 (float64)."""
    acc = torch.float64 if mask.dtype == torch.float64 else torch.float32
    ones = torch.ones(1, 1, *kernel, dtype=acc, device=mask.device)
    count = F.conv3d(mask.to(acc), ones, None, stride, padding, dilation)
    valid = (count > eps).to(acc)
    return valid * (float(kernel[0] * kernel[1] * kernel[2]) / count.clamp_min(eps)), valid


def _register_python_side() -> None:
    """Fake kernel and autograd for ``combcn::masked_conv3d`` (once per process)."""

    @torch.library.register_fake("combcn::masked_conv3d")
    def _fake(
        x: Tensor,
        mask: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        bn_scale: Tensor | None,
        bn_shift: Tensor | None,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        activation: str,
        eps: float,
    ) -> tuple[Tensor, Tensor]:
        size = output_size(tuple(x.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)
        out = torch.empty(
            (x.shape[0], weight.shape[0], *size),
            dtype=x.dtype,
            device=x.device,
            memory_format=torch.channels_last_3d,
        )
        new_mask = torch.empty((x.shape[0], 1, *size), dtype=x.dtype, device=x.device)
        return out, new_mask

    def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        x, mask, weight, bias, bn_scale, _shift, stride, padding, dilation, activation, eps = inputs
        out = output[0] if activation == "relu" else None
        ctx.save_for_backward(x, mask, weight, bn_scale, out)
        ctx.conv = (list(stride), list(padding), list(dilation))
        ctx.eps = eps
        ctx.has_bias = bias is not None

    def _backward(ctx: Any, grad_out: Tensor | None, _grad_mask: Tensor | None) -> tuple[Any, ...]:
        # Partial-conv backward: dX = M * convT(r * dY'), dW = corr(r * dY', X * M), db = sum(u * dY').
        x, mask, weight, bn_scale, out = ctx.saved_tensors
        stride, padding, dilation = ctx.conv
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        if grad_out is None or not (need_x or need_w or need_b):
            return (None,) * 11
        ratio, valid = window_ratio(mask, tuple(weight.shape[2:]), stride, padding, dilation, ctx.eps)
        grad = grad_out.to(ratio.dtype)
        if out is not None:
            grad = grad * (out > 0)
        if bn_scale is not None:
            grad = grad * bn_scale.to(grad.dtype).view(1, -1, 1, 1, 1)
        grad_bias = (grad * valid).sum((0, 2, 3, 4)).to(x.dtype) if (need_b and ctx.has_bias) else None
        grad_x = grad_w = None
        if need_x or need_w:
            grad_conv = (grad * ratio).to(x.dtype)
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_conv,
                x * mask,
                weight,
                None,
                stride,
                padding,
                dilation,
                False,
                [0, 0, 0],
                1,
                [need_x, need_w, False],
            )
            if grad_x is not None:
                grad_x = grad_x * mask
        return grad_x, None, grad_w, grad_bias, None, None, None, None, None, None, None

    torch.library.register_autograd("combcn::masked_conv3d", _backward, setup_context=_setup_context)
