"""Tests of the arithmetic choice: bf16 only where the machine has fast bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from combcn import precision


@pytest.mark.parametrize(
    ("flags", "fast"),
    [
        ("fpu sse avx2 fma", False),  # AVX2 only: oneDNN's bf16 path is a slow reference loop
        ("fpu avx2 avx512f avx512bw", False),  # AVX-512 without its bf16 extension
        ("fpu avx2 avx512f avx512_bf16", True),  # e.g. AMD Zen 4, Intel Cooper Lake
        ("fpu avx512f amx_bf16 amx_tile", True),  # Intel Sapphire Rapids
    ],
)
def test_cpu_has_fast_bf16_reads_the_flags(tmp_path: Path, flags: str, fast: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
    assert precision.cpu_has_fast_bf16(str(info)) is fast


def test_cpu_has_fast_bf16_without_cpuinfo(tmp_path: Path) -> None:
    assert precision.cpu_has_fast_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("fast", [True, False])
def test_resolve_precision(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert precision.resolve_precision("auto", cpu) == (torch.bfloat16 if fast else None)
    assert precision.resolve_precision("auto", cuda) == torch.bfloat16
    assert precision.resolve_precision("fp32", cuda) is None
    assert precision.resolve_precision("bf16", cpu) == torch.bfloat16


def test_grads_finite() -> None:
    layer = torch.nn.Linear(3, 2)
    assert precision.grads_finite(layer)  # no gradients yet
    layer(torch.ones(1, 3)).sum().backward()
    assert precision.grads_finite(layer)
    assert layer.bias.grad is not None
    layer.bias.grad[0] = float("inf")
    assert not precision.grads_finite(layer)
    layer.bias.grad[0] = float("nan")
    assert not precision.grads_finite(layer)
