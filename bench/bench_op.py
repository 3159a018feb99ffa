"""Benchmark of the fused ``combcn.ops.masked_conv3d`` at the paper's 3DCN layer shapes.

Compares, in one process and interleaved round by round, the fused op against (a) the unfused
reference composition (:func:`combcn.ops.masked_conv3d_reference`: mask-count conv, conv of
``x * mask``, ratio, bias, BN, ReLU as separate tensor ops) and (b) a bare ``F.conv3d`` of the same
shape (``channels_last_3d`` input, bias, nothing else); on a CPU with AVX-512 also the fused op with
its row passes in plain loops ("scalar rows": the kernels of ``native/ops/cpu/simd.h`` switched off).
"ref / bare" is the most any fusion around the same convolution could make of "ref / fused"; "bare
GFLOP/s" counts the convolution's multiply-adds on real input (not on the zero padding), to compare with
the machine's peak (``bench/fma_peak.c``).
Prints a markdown table of medians (and the ratios of the per-case minima, which a shared machine's
noise disturbs least).

    python bench/bench_op.py [--dtypes float32 bfloat16] [--rounds 11] [--threads 2] [--device cpu] [--tf32]

On CUDA the bare convolution is cuDNN's, in the same precision as the fused op (TF32 only with ``--tf32``).

Layers (paper Table 1, top; batch 1, 32 frames, 64x64 input, "same" padding, BN + ReLU epilogue):
the 3DCN encoder and dilated stack. ``--scale`` divides the channel counts (default 1 = paper).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from combcn.ops import backends, masked_conv3d, masked_conv3d_reference

# (name, C_in, C_out, T, H=W, kernel, spatial stride, spatial dilation): paper Table 1 (3DCN).
LAYERS = [
    ("L1 conv5", 4, 16, 32, 64, 5, 1, 1),
    ("L2 conv3 s2", 16, 32, 32, 64, 3, 2, 1),
    ("L3 conv3", 32, 64, 32, 32, 3, 1, 1),
    ("L4 conv3 s2", 64, 128, 32, 32, 3, 2, 1),
    ("L5 dil2", 128, 256, 32, 16, 3, 1, 2),
    ("L6 dil4", 256, 256, 32, 16, 3, 1, 4),
    ("L7 dil8", 256, 256, 32, 16, 3, 1, 8),
    ("L8 conv3", 256, 128, 32, 16, 3, 1, 1),
]


def timed(fn: Callable[[], object], min_time: float, device: torch.device) -> float:
    """Seconds per call: mean over enough calls to last ``min_time`` (timer and scheduler noise)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    calls, elapsed = 0, 0.0
    sync()
    start = time.perf_counter()
    while elapsed < min_time or calls == 0:
        fn()
        sync()
        calls += 1
        elapsed = time.perf_counter() - start
    return elapsed / calls


def make_cases(
    c_in: int,
    c_out: int,
    frames: int,
    size: int,
    k: int,
    s: int,
    d: int,
    dtype: torch.dtype,
    device: torch.device,
    tf32: bool = False,
) -> dict[str, Callable[[], object]]:
    """The three ways of computing one layer, as closures over freshly made inputs."""
    cl = torch.channels_last_3d
    x = torch.randn(1, c_in, frames, size, size, device=device).to(dtype).contiguous(memory_format=cl)
    mask = (torch.rand(1, 1, frames, size, size, device=device) > 0.3).to(dtype)
    weight = (torch.randn(c_out, c_in, k, k, k, device=device) * 0.05).to(dtype)
    bias = torch.randn(c_out, device=device).to(dtype)
    scale = (torch.rand(c_out, device=device) + 0.5).to(dtype)
    shift = torch.randn(c_out, device=device).to(dtype)
    stride, dilation = (1, s, s), (1, d, d)
    padding = ((k - 1) // 2, d * (k - 1) // 2, d * (k - 1) // 2)
    return {
        "fused": lambda: masked_conv3d(
            x,
            mask,
            weight,
            bias,
            stride,
            padding,
            dilation,
            bn=(scale, shift),
            activation="relu",
            allow_tf32=tf32,
        ),
        "ref": lambda: masked_conv3d_reference(
            x, mask, weight, bias, scale, shift, stride, padding, dilation, "relu", allow_tf32=tf32
        ),
        "bare": lambda: F.conv3d(x, weight, bias, stride, padding, dilation),
        "scalar": lambda: scalar_rows(
            lambda: masked_conv3d(
                x, mask, weight, bias, stride, padding, dilation, bn=(scale, shift), activation="relu"
            )
        ),
    }


def useful_macs(c_in: int, c_out: int, frames: int, size: int, k: int, s: int, d: int) -> int:
    """Multiply-adds of the layer's convolution that touch the input (taps on the zero padding left out)."""

    def taps(n: int, stride: int, dilation: int, pad: int) -> int:
        n_out = (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1
        return sum(0 <= o * stride - pad + j * dilation < n for o in range(n_out) for j in range(k))

    return c_in * c_out * taps(frames, 1, 1, (k - 1) // 2) * taps(size, s, d, d * (k - 1) // 2) ** 2


def scalar_rows(fn: Callable[[], object]) -> object:
    """``fn()`` with the CPU kernel's row passes in plain loops instead of AVX-512 (native/ops/cpu/simd.h)."""
    before = torch.ops.combcn._cpu_simd(-1)
    torch.ops.combcn._cpu_simd(0)
    try:
        return fn()
    finally:
        torch.ops.combcn._cpu_simd(1 if before == "avx512" else 0)


def fused_unavailable(device: torch.device) -> str | None:
    """Why the native op has no kernel in use for ``device`` in this process (None: it has one); then
    "fused" would time the pure-PyTorch reference, so the benchmark refuses to run."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return "--device cuda was asked for, but no CUDA GPU is visible here"
    state = backends()["cpu" if device.type == "cpu" else "cuda"]
    if not state["active"]:
        return f"the native op's {device.type} kernel is not in use ({state['note']})"
    return None


def machine() -> str:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{model}, {os.cpu_count()} cores, torch {torch.__version__} threads {torch.get_num_threads()}, "
        f"capability {torch.backends.cpu.get_cpu_capability()}{gpu}; load average {load[0]:.2f} {load[1]:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-d", "--dtypes", nargs="+", default=["float32", "bfloat16"], help="(default: %(default)s)"
    )
    parser.add_argument("-r", "--rounds", type=int, default=11, help="timed rounds per case (default: 11)")
    parser.add_argument(
        "-m", "--min-time", type=float, default=0.05, help="min seconds per timing (default: 0.05)"
    )
    parser.add_argument("-t", "--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "-s", "--scale", type=int, default=1, help="divide channel counts by this (default: 1)"
    )
    parser.add_argument("-l", "--layers", nargs="*", help="only layers whose name contains one of these")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="CUDA float32: let the fused op and the bare cuDNN conv use TF32 (default: both full float32, "
        "the op's precision contract)",
    )
    parser.add_argument(
        "--no-slow-baselines",
        action="store_true",
        help="skip the bf16 baselines where oneDNN has no bf16 conv (they take seconds per call)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    problem = fused_unavailable(device)
    if problem is not None:
        print(f"bench_op: {problem}: refusing to time the reference as 'fused'", file=sys.stderr)
        return 1
    # The bare convolution gets the op's precision: torch's cuDNN TF32 default would flatter it in float32.
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(0)
    cpu_backend = backends()["cpu" if device.type == "cpu" else "cuda"]
    bf16_onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"machine: {machine()}")
    # The CPU kernel's row passes: AVX-512 where the CPU has it; "scalar rows" times the plain loops.
    simd = cpu_backend["compiled"] and torch.ops.combcn._cpu_simd(-1) == "avx512"
    print(f"backend: {cpu_backend}; oneDNN bf16 conv: {bf16_onednn}; float32 TF32 (CUDA): {args.tf32}")
    print()
    print(
        "| layer | dtype | shape in -> out | fused ms | unfused ref ms | bare conv3d ms | fused / bare "
        "| ref / fused | fused / bare (min) | ref / fused (min) | scalar rows / fused | ref / bare "
        "| bare GFLOP/s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for name, c_in, c_out, frames, size, k, s, d in LAYERS:
            if args.layers and not any(sel in name for sel in args.layers):
                continue
            c_in = max(c_in // args.scale, 1) if c_in > 4 else c_in
            c_out = max(c_out // args.scale, 1)
            cases = make_cases(c_in, c_out, frames, size, k, s, d, dtype, device, args.tf32)
            if device.type != "cpu" or not simd:
                cases.pop("scalar")
            # Without AVX512-BF16/AMX, bf16 F.conv3d takes PyTorch's slow im2col path (seconds per call):
            # time those baselines with one call each (or skip them), the fused op as usual.
            slow = dtype in (torch.bfloat16, torch.float16) and device.type == "cpu" and not bf16_onednn
            if slow and args.no_slow_baselines:
                cases.pop("bare")
                cases.pop("ref")
            times: dict[str, list[float]] = {key: [] for key in cases}
            with torch.no_grad():
                cases["fused"]()
                for key, fn in cases.items():
                    if slow and key in ("bare", "ref"):
                        times[key].append(timed(fn, 0.0, device))
                for _ in range(args.rounds):
                    for key, fn in cases.items():
                        if not (slow and key in ("bare", "ref")):
                            times[key].append(timed(fn, args.min_time, device))
            med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
            # The least-disturbed round: on a shared machine noise only ever adds time.
            low = {key: min(v) * 1e3 for key, v in times.items()}
            shape = f"{c_in}x{frames}x{size}² -> {c_out}, k{k} s{s} d{d}" + (
                " (baselines: 1 call)" if slow else ""
            )
            fused = med["fused"]
            bare, ref = med.get("bare"), med.get("ref")
            cells = [
                f"{fused:.1f}",
                f"{ref:.1f}" if ref else "-",
                f"{bare:.1f}" if bare else "-",
                f"{fused / bare:.3g}" if bare else "-",
                f"{ref / fused:.3g}" if ref else "-",
                f"{low['fused'] / low['bare']:.3g}" if bare else "-",
                f"{low['ref'] / low['fused']:.3g}" if ref else "-",
                f"{med['scalar'] / fused:.3g}" if "scalar" in med else "-",
                # what ref / fused would be if the fused op took no longer than the bare convolution
                f"{ref / bare:.3g}" if ref and bare else "-",
                f"{2 * useful_macs(c_in, c_out, frames, size, k, s, d) / bare / 1e6:.0f}" if bare else "-",
            ]
            print(f"| {name} | {dtype_name} | {shape} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
