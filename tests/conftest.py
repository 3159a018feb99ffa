"""Suite-wide pytest set-up: the machine facts every run should show at its top."""

from __future__ import annotations

import os


def _machine_lines() -> list[str]:
    import torch

    from combcn.precision import cpu_has_fast_bf16

    fast = cpu_has_fast_bf16()
    lines = [
        f"combcn: torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
        f"fast CPU bf16 (AMX or AVX-512-bf16) {'yes' if fast else 'no'}, "
        f"cuda {'yes' if torch.cuda.is_available() else 'no'}, "
        f"threads {torch.get_num_threads()} of {os.cpu_count()} cores",
    ]
    if not fast:
        lines.append(
            "combcn: NOTE this CPU has no AMX/AVX-512-bf16: bf16 conv3d on CPU runs ~500x slower than fp32 "
            "on such CPUs (measured 13 s vs 26 ms); use float32 on CPU, keep bf16 for CUDA or AMX machines"
        )
    return lines


def pytest_report_header(config: object) -> list[str]:
    return _machine_lines()


def pytest_terminal_summary(terminalreporter: object, exitstatus: int, config: object) -> None:
    # Repeat the machine facts at the end too: `pytest -q` hides the header.
    for line in _machine_lines():
        terminalreporter.write_line(line)  # type: ignore[attr-defined]
