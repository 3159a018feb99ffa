"""The arithmetic behind the benchmark tables (bench/): numbers quoted in BENCHMARKS.md rest on it."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_op():
    spec = importlib.util.spec_from_file_location("bench_op", BENCH / "bench_op.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layer", range(8))
def test_useful_macs_counts_the_taps_on_real_input(layer: int) -> None:
    # Independent count: convolve an all-ones volume with an all-ones kernel under the layer's padding,
    # stride and dilation; each output then holds how many of its taps fall on real input.
    bench_op = load_bench_op()
    name, c_in, c_out, frames, size, k, s, d = bench_op.LAYERS[layer]
    ones = torch.ones(1, 1, frames, size, size, dtype=torch.float64)
    kernel = torch.ones(1, 1, k, k, k, dtype=torch.float64)
    padding = ((k - 1) // 2, d * (k - 1) // 2, d * (k - 1) // 2)
    taps = F.conv3d(ones, kernel, None, (1, s, s), padding, (1, d, d)).sum().item()
    assert bench_op.useful_macs(c_in, c_out, frames, size, k, s, d) == int(taps) * c_in * c_out, name


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc on this machine")
def test_fma_peak_builds_and_reports(tmp_path: Path) -> None:
    binary = tmp_path / "fma_peak"
    build = ["gcc", "-O2", "-Wall", "-Werror", "-mavx512f", "-mavx512bf16", str(BENCH / "fma_peak.c"), "-o"]
    subprocess.run([*build, str(binary)], check=True, capture_output=True, text=True)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx512_bf16" not in flags:
        pytest.skip("built; running it needs a CPU with AVX512-BF16")
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True, timeout=120).stdout
    # It reports both rates; which is faster depends on the CPU (BENCHMARKS.md), so no test compares them.
    rates = re.search(r"\(vdpbf16ps zmm\) (\d+) GFLOP/s, float32 FMA \(zmm\) (\d+) GFLOP/s", out)
    assert rates is not None, out
    assert all(float(rate) > 0 for rate in rates.groups()), out
