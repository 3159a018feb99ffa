"""Load (or build) and register the native ``combcn::masked_conv3d`` op.

Where the op comes from, first match wins:

1. **prebuilt**: ``combcn/ops/_C.so``, compiled ahead of time by ``setup.py`` into a wheel (``pip wheel .``,
   ``pip install .``). ``_C.json`` beside it records the torch (and CUDA) it was built against; it is
   used only by that torch, and, in a source checkout, only while ``native/ops`` is unchanged.
2. **JIT**: in a source checkout (an editable install), :func:`torch.utils.cpp_extension.load` builds
   ``native/ops`` (ninja, ``MAX_JOBS`` default 2) on first use or by ``python -m combcn.ops.build``,
   cached under ``${COMBCN_CACHE:-~/.cache/combcn}/ext/<torch, python and CUDA version>-<checkout>``
   (one build folder per checkout, so two checkouts never rebuild each other's op), and rebuilt by
   ninja when a source or header changes. CUDA sources join the build only when torch itself has CUDA
   (``torch.cuda._is_compiled()``): the CPU wheel cannot build ``.cu`` files.
3. **reference**: otherwise a one-line warning says why and :func:`combcn.ops.masked_conv3d` uses the
   pure-PyTorch reference; ``combcn info`` shows the same reason. ``COMBCN_NO_EXT=1`` skips the native
   op altogether. Compiler flags for both builds live in :mod:`combcn.ops.build`.

The C++ side declares the schema (``native/ops/registration.cpp``) and the CPU/CUDA kernels;
the fake (meta) kernel and the autograd formula are registered here, in Python, after loading.
"""

from __future__ import annotations

import hashlib
import json
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

from combcn.ops.reference import conv_output_size

log = logging.getLogger("combcn.ops")

NAME = "combcn_ops"
SOURCE_ROOT = Path(__file__).resolve().parents[2] / "native" / "ops"
CPU_SOURCES = ("registration.cpp", "cpu/masked_conv3d_cpu.cpp", "cpu/simd.cpp")
CUDA_SOURCES = ("cuda/masked_conv3d_cuda.cpp", "cuda/masked_conv3d_cuda.cu")
PACKAGE_DIR = Path(__file__).resolve().parent

_lock = threading.Lock()
# source: "prebuilt" | "jit" | None; note: why a prebuilt library present was not used (or None).
_state: dict[str, Any] = {
    "tried": False,
    "loaded": False,
    "cuda": False,
    "error": None,
    "path": None,
    "source": None,
    "note": None,
}


def _flags() -> Any:
    """:mod:`combcn.ops.build`, imported on use: ``python -m combcn.ops.build`` must not find it imported."""
    from combcn.ops import build

    return build


def torch_has_cuda() -> bool:
    """Whether this torch build has CUDA (only then can ``.cu`` sources be built)."""
    return _flags().torch_has_cuda()


def cache_dir() -> Path:
    """Build directory of the JIT extension for this torch/python/CUDA combination and this checkout.

    Ninja's build file names the sources by absolute path: two checkouts sharing one folder would each
    find the other's build stale and rebuild it (and wait on each other's lock), so each gets its own.
    """
    root = Path(os.environ.get("COMBCN_CACHE", "~/.cache/combcn")).expanduser()
    flavour = f"cu{torch.version.cuda}" if torch_has_cuda() else "cpu"
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    checkout = hashlib.sha256(str(SOURCE_ROOT.resolve()).encode("utf-8")).hexdigest()[:10]
    tag = f"torch{torch.__version__.split('+')[0]}-{py}-{flavour}-{checkout}"
    return root / "ext" / tag


def sources(with_cuda: bool) -> list[Path]:
    """The native source files of the op (CUDA ones only when ``with_cuda``)."""
    names = CPU_SOURCES + (CUDA_SOURCES if with_cuda else ())
    return [SOURCE_ROOT / name for name in names]


def prebuilt_path() -> Path:
    """Where an ahead-of-time build of the op lives inside the package (it may be absent)."""
    return PACKAGE_DIR / f"{_flags().PREBUILT_NAME}.so"


def load(verbose: bool = False, *, warn: bool = True) -> bool:
    """Load the extension (prebuilt, else JIT-built) once per process; True when the native op is usable."""
    if _state["tried"]:
        return bool(_state["loaded"])
    with _lock:  # one build per process, even when several threads ask at once
        if _state["tried"]:
            return bool(_state["loaded"])
        return _load_locked(verbose, warn)


def _load_locked(verbose: bool, warn: bool) -> bool:
    _state.update(tried=True, source=None, note=None)
    if os.environ.get("COMBCN_NO_EXT") == "1":
        _state["error"] = "disabled by COMBCN_NO_EXT=1"
        return False
    reasons: list[str] = []
    prebuilt = prebuilt_path()
    if prebuilt.is_file():
        why_not = _load_prebuilt(prebuilt)
        if why_not is None:
            if warn and _state["note"] and torch.cuda.is_available():
                warnings.warn(
                    f"combcn: {_state['note']}; CUDA tensors use the pure-PyTorch reference (slower)",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return True
        reasons.append(f"prebuilt {prebuilt} not used: {why_not}")
    if SOURCE_ROOT.is_dir():  # a source checkout: build from native/ops
        try:
            cuda_note = _load_jit(verbose)
        except Exception as exc:  # any build/load failure means: fall back to the reference
            reasons.append(f"JIT build failed: {_one_line(exc)}")
            log.debug("native op build failed", exc_info=True)
        else:
            _state["note"] = "; ".join([*reasons, *([cuda_note] if cuda_note else [])]) or None
            if reasons:
                log.warning("combcn: %s; using the JIT build instead", reasons[0])
            return True
    elif not prebuilt.is_file():
        reasons.append(
            f"no prebuilt op in this install ({prebuilt} is missing) and no native sources to build one "
            f"({SOURCE_ROOT} is not there: not a source checkout); reinstall combcn with a C++ compiler"
        )
    _state["error"] = "; ".join(reasons)
    if warn:
        warnings.warn(
            f"combcn: native masked_conv3d not available ({_state['error']}); "
            "using the pure-PyTorch reference (slower)",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def _one_line(exc: BaseException) -> str:
    """``Type: last line of the message``: a compiler log's last line is the one that says what failed."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


def _load_prebuilt(library: Path) -> str | None:
    """Load the ahead-of-time build if it was made for this torch; None when loaded, else why not."""
    record_path = library.with_suffix(".json")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        return f"its build record {record_path.name} is unreadable ({exc})"
    built_for = str(record.get("torch"))
    if built_for.split("+")[0] != torch.__version__.split("+")[0]:
        return f"built for torch {built_for}, this is torch {torch.__version__}: reinstall combcn for it"
    with_cuda = bool(record.get("with_cuda")) and torch_has_cuda()
    if with_cuda and record.get("cuda") != torch.version.cuda:
        return f"built for CUDA {record.get('cuda')}, this torch has CUDA {torch.version.cuda}"
    if SOURCE_ROOT.is_dir() and record.get("sources_sha256") != _flags().sources_digest(SOURCE_ROOT):
        return f"{SOURCE_ROOT} changed since it was built"
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError) as exc:
        return _one_line(exc)
    _register_python_side()
    note = None
    if torch_has_cuda() and not record.get("with_cuda"):
        note = "prebuilt without CUDA (the torch it was built with had none)"
    _state.update(loaded=True, cuda=with_cuda, path=str(library), source="prebuilt", note=note)
    return None


def _load_jit(verbose: bool) -> str | None:
    """JIT-build (or find in the cache) and load the extension from ``native/ops``; raises on failure.

    Returns:
        None, or why the CUDA kernel is missing when torch has CUDA but its build failed.
    """
    with_cuda = torch_has_cuda()
    build_dir = cache_dir()
    note = None
    try:
        _build(build_dir, with_cuda, verbose)
    except Exception as exc:
        if not with_cuda:
            raise
        # A broken CUDA toolchain must not cost the CPU kernel: retry without the .cu sources.
        log.warning("native op: CUDA build failed, building the CPU kernel only", exc_info=True)
        note = f"CUDA build failed ({_one_line(exc)}): CPU kernel only"
        with_cuda, build_dir = False, build_dir.with_name(build_dir.name + "-cpuonly")
        _build(build_dir, with_cuda, verbose)
    _register_python_side()
    _state.update(loaded=True, cuda=with_cuda, path=str(build_dir), source="jit")
    return note


def _build(build_dir: Path, with_cuda: bool, verbose: bool) -> None:
    """Compile (ninja, incremental) and load the extension library into this process."""
    missing = [str(p) for p in sources(with_cuda) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"native sources missing: {', '.join(missing)}")
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", "2")
    if with_cuda:
        _flags().prepare_cuda_env()
    from torch.utils.cpp_extension import load as cpp_load

    if not (build_dir / f"{NAME}.so").exists():
        log.info("building the native masked_conv3d op in %s (first use; about 30 s on 2 cores)", build_dir)
    log.debug("loading native op %s from %s (cuda=%s)", NAME, build_dir, with_cuda)
    cpp_load(
        name=NAME,
        sources=[str(p) for p in sources(with_cuda)],
        extra_cflags=_flags().cxx_flags(with_cuda),
        extra_ldflags=_flags().openmp_flags(),
        extra_cuda_cflags=_flags().nvcc_flags() if with_cuda else None,
        extra_include_paths=[str(SOURCE_ROOT)],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose,
    )


def state() -> dict[str, Any]:
    """Load state: tried, loaded, cuda, error, path, source ("prebuilt" | "jit" | None), note."""
    return dict(_state)


def describe_source(st: dict[str, Any] | None = None) -> str:
    """One line: where the native op in use came from, or why the reference is in use."""
    st = state() if st is None else st
    if not st.get("tried"):
        return "not loaded yet"
    if not st.get("loaded"):
        return f"reference fallback: {st.get('error')}"
    prebuilt = st.get("source") == "prebuilt"
    where = f"prebuilt {st.get('path')}" if prebuilt else f"JIT build, cache {st.get('path')}"
    return where + (f" ({st['note']})" if st.get("note") else "")


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
    """Output (T', H', W') of a convolution, floor semantics (works with symbolic sizes).

    Raises:
        ValueError: naming ``x`` when the padded input is smaller than the dilated kernel, as the C++ op.
    """
    if any(n < 1 for n in size):
        raise ValueError(
            f"masked_conv3d: `x` needs at least one frame, row and column, got size {tuple(size)}"
        )
    out = [
        conv_output_size(n, k, s, p, d)
        for n, k, s, p, d in zip(size, kernel, stride, padding, dilation, strict=True)
    ]
    if any(o < 1 for o in out):
        raise ValueError(
            f"masked_conv3d: `x` of size {tuple(size)} with padding {tuple(padding)} is smaller than "
            f"kernel {tuple(kernel)} at dilation {tuple(dilation)}"
        )
    return out


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
        allow_tf32: bool = False,
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
        x, mask, weight, bias, bn_scale, _shift, stride, padding, dilation, activation, eps = inputs[:11]
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
            return (None,) * 12
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
        return grad_x, None, grad_w, grad_bias, None, None, None, None, None, None, None, None

    torch.library.register_autograd("combcn::masked_conv3d", _backward, setup_context=_setup_context)
