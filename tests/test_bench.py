"""The arithmetic and the report formats behind the benchmark tables (bench/): the numbers quoted in
BENCHMARKS.md rest on them."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
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


GPU_CHECK = BENCH / "gpu_check.sh"
#: What a top-level line of gpu_check.sh may run outside ``step`` (which puts ``timeout`` on it): shell
#: builtins and commands that return at once.
INSTANT = {"step", "skipped", "echo", "mkdir", "cd", "set", "export", "trap", "exit", "tee", ":", "[", "if"}
INSTANT |= {"then", "else", "fi", "!"}
LEADERS = {"&&", "||", "|", ";", "if", "then", "else", "!"}


def _logical_lines(text: str) -> list[str]:
    """The script's lines with heredoc bodies left out and backslash continuations joined."""
    lines, heredoc, pending = [], None, ""
    for raw in text.splitlines():
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        found = re.search(r"<<-?'?(\w+)'?", raw)
        if found:
            heredoc = found.group(1)
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    return lines


def _functions_and_top_level(text: str) -> tuple[dict[str, list[str]], list[str]]:
    functions: dict[str, list[str]] = {}
    top: list[str] = []
    current = None
    for line in _logical_lines(text):
        defined = re.match(r"^(\w+)\(\) \{", line)
        if defined:
            current = defined.group(1)
            functions[current] = []
        elif current is not None and line == "}":
            current = None
        elif current is not None:
            functions[current].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            top.append(line.strip())
    return functions, top


def test_gpu_check_parses() -> None:
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True, capture_output=True, text=True, timeout=30)


def test_gpu_check_runs_every_command_under_a_time_limit() -> None:
    functions, top = _functions_and_top_level(GPU_CHECK.read_text())
    assert any(
        re.match(r'timeout --kill-after="\$GRACE" "\$limit" "\$@"', line.strip())
        for line in functions["step"]
    )
    for line in top:
        for substituted in re.findall(r"\$\((?!\()\s*\"?([^\s\")]+)", line):
            assert substituted in {"mktemp", "nproc", "dirname"}, f"$({substituted} ...) in: {line}"
        if re.match(r"^\w+=", line) or line.startswith(("export ", "trap ")):
            continue  # assignments: their $(...) are instant (above)
        words = list(shlex.shlex(line, posix=True, punctuation_chars=True))
        # the words in a command's place: the first, and each after a separator or a keyword
        firsts = [words[0]] + [w for before, w in zip(words, words[1:], strict=False) if before in LEADERS]
        for first in firsts:
            assert first in INSTANT, f"runs {first!r} without a time limit: {line}"
    # top-level commands are instant (above), so a function runs only as `step ... bash -c FUNCTION`
    runs = [line for line in top if "bash -c " in line]
    assert all(re.match(r'^step "[^"]+" "\$L_\w+" "[^"]+" bash -c \w+$', line) for line in runs), runs
    for name in set(functions) - {"step", "skipped"}:
        assert any(line.endswith(f"bash -c {name}") for line in runs), f"{name} never runs as a step"
    assert any("bash -c cuda_backend" in line for line in top), "the backend query must be a step"


def test_gpu_check_limits_sum_under_eight_minutes() -> None:
    text = GPU_CHECK.read_text()
    limits = {name: int(value) for name, value in re.findall(r"^(L_\w+)=(\d+)$", text, re.M)}
    grace = int(re.search(r"^GRACE=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    steps = int(re.search(r"^STEPS=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    _, top = _functions_and_top_level(text)
    used = [re.match(r'^step "[^"]+" "\$(L_\w+)"', line) for line in top if line.startswith("step ")]
    assert all(used), "every step's limit is one of the L_* limits"
    names = [m.group(1) for m in used if m]
    assert sorted(names) == sorted(limits) and len(names) == steps, "each limit is one step's, once"
    summed = re.search(r"^LIMITS=\$\(\((.*)\)\)$", text, re.M)
    assert summed is not None and sorted(summed.group(1).replace(" ", "").split("+")) == sorted(limits)
    assert sum(limits.values()) + steps * grace < 480, f"{sum(limits.values())} s + {steps} x {grace} s"


def test_gpu_check_without_a_working_python_fails_fast_and_removes_a_stale_lock(tmp_path: Path) -> None:
    """With a python that fails at once (as a broken CUDA build would leave the op), every step ends
    at once, the CUDA steps are skipped (nothing named 'fused' is timed), the exit status is non-zero,
    and the stale build lock is gone; the summary says what the limits sum to."""
    lock = tmp_path / "ext/py312_cu124/combcn_ops/lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "OUT": str(tmp_path / "out"),
        "PYTHON": "false",
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"),
        "COMBCN_CACHE": str(tmp_path / "cache"),
    }
    run = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert not lock.exists()
    summary = (tmp_path / "out/summary.md").read_text()
    limits = re.match(r"gpu_check: 9 steps, time limits summing to (\d+) s \((\d+) s with", summary)
    assert limits is not None and int(limits.group(2)) < 480, summary
    assert "- build: FAILED" in summary and "- benchmark: SKIPPED" in summary, summary
    assert "gpu_check: FAILED" in run.stderr
    for name in ("machine.txt", "build.log", "tests.log", "bench.md", "render.md", "summary.md"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "removing a stale build lock" in (tmp_path / "out/build.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: there is nothing to refuse")
def test_bench_op_refuses_cuda_without_a_gpu() -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH / "bench_op.py"), "--device", "cuda", "-r", "1", "-l", "L1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "refusing to time the reference" in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert "| L1" not in run.stdout


def test_bench_op_refuses_a_cuda_kernel_that_did_not_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU, but the op's CUDA build failed (the CPU kernel only): 'fused' would be the reference."""
    bench_op = load_bench_op()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    note = "CUDA build failed (RuntimeError: nvcc died): CPU kernel only"
    monkeypatch.setattr(
        bench_op, "backends", lambda: {"cuda": {"compiled": False, "active": False, "note": note}}
    )
    problem = bench_op.fused_unavailable(torch.device("cuda"))
    assert problem is not None and note in problem
    monkeypatch.setattr(
        bench_op, "backends", lambda: {"cuda": {"compiled": True, "active": True, "note": ""}}
    )
    assert bench_op.fused_unavailable(torch.device("cuda")) is None


def load_bench_engine():
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH / "bench_engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestBenchEngine:
    def test_sizes(self) -> None:
        bench = load_bench_engine()
        assert bench.parse_size("1080p") == (1920, 1080)
        assert bench.parse_size("4K") == (3840, 2160)
        assert bench.parse_size("96x64") == (96, 64)
        with pytest.raises(Exception, match="use 1080p, 4k or WxH"):
            bench.parse_size("big")

    @pytest.mark.parametrize("matte", ["ellipse", "strokes", "objects"])
    def test_mattes_move_and_cover_part_of_the_frame(self, matte: str) -> None:
        bench = load_bench_engine()
        holes = bench.MATTE_MAKERS[matte](6, 96, 64)
        assert holes.shape == (6, 64, 96) and holes.dtype == bool
        assert 0.005 < holes.mean() < 0.5
        assert all(frame.any() for frame in holes)
        assert not (holes[0] == holes[-1]).all(), "the matte moves"

    def test_static_matte_never_moves_and_is_not_run_unless_asked(self) -> None:
        bench = load_bench_engine()
        holes = bench.MATTE_MAKERS["static"](5, 100, 50)
        assert holes.shape == (5, 50, 100) and abs(holes.mean() - 0.16) < 0.01
        assert all((frame == holes[0]).all() for frame in holes)
        assert "static" in bench.MATTES and "static" not in bench.DEFAULT_MATTES

    def test_breakdown_restores_what_it_wraps(self) -> None:
        bench = load_bench_engine()
        import combcn.engine.propagate as propagate
        import combcn.engine.sequence as sequence

        before = (propagate._trace, propagate.Propagator.fill, sequence.to_unit, sequence.ThreadPoolExecutor)
        breakdown = bench.Breakdown()
        breakdown.install()
        try:
            assert propagate._trace is not before[0] and sequence.to_unit is not before[2]
            assert propagate.Propagator.__dict__["fill"] is not before[1]
        finally:
            breakdown.uninstall()
        after = (propagate._trace, propagate.Propagator.fill, sequence.to_unit, sequence.ThreadPoolExecutor)
        assert after == before

    @pytest.mark.parametrize(
        ("prefix", "part"), [("combcn-motion", "motion"), ("combcn-propagate", "sampling/blending")]
    )
    def test_breakdown_counts_each_pool_as_its_part(self, prefix: str, part: str) -> None:
        """Propagation's two pools: a task on the motion pool is motion, one on the fill pool
        sampling/blending, and the main thread's wait for them goes to that part."""
        bench = load_bench_engine()
        import combcn.engine.propagate as propagate

        breakdown = bench.Breakdown()
        breakdown.install()
        try:
            with propagate.ThreadPoolExecutor(2, thread_name_prefix=prefix) as pool:
                list(pool.map(lambda _: time.sleep(0.05), range(2)))
        finally:
            breakdown.uninstall()
        other = "sampling/blending" if part == "motion" else "motion"
        assert breakdown.thread[part] > 0.05 and breakdown.thread[other] == 0.0
        assert breakdown.wall[part] > 0.04 and breakdown.wall[other] == 0.0

    @pytest.mark.slow
    def test_speed_reports_every_matte_and_every_part(self, tmp_path: Path) -> None:
        """A tiny plate, two frames, each matte: the table and the JSON carry every figure and every
        part of the breakdown (no assertion on speed); ``--keep`` keeps each run's files."""
        bench = load_bench_engine()
        kept = tmp_path / "kept"
        run = subprocess.run(
            [sys.executable, str(BENCH / "bench_engine.py"), "speed", "-s", "64x48", "-f", "2", "-j", "1"]
            + ["--keep", str(kept)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        lines = run.stdout.strip().splitlines()
        result = json.loads(lines[-1])
        assert result["engine_threads"] == 1
        parts = [*bench.PARTS, "other"]
        assert set(parts) >= {"motion", "tracing", "sampling/blending", "synthesis", "I/O", "guards"}
        assert [r["matte"] for r in result["runs"]] == ["ellipse", "strokes", "objects"]
        for r in result["runs"]:
            assert r["size"] == "64x48" and r["frames"] == 2
            for key in ("engine_s_per_frame", "engine_cpu_s_per_frame", "copy_through_s_per_frame"):
                assert r[key] > 0, key
            for key in ("ratio_vs_copy", "cpu_ratio_vs_copy", "peak_rss_mb", "load_avg_at_start"):
                assert isinstance(r[key], (int, float)), key
            assert list(r["breakdown"]["parts"]) == parts
            for name, part in r["breakdown"]["parts"].items():
                assert set(part) == {"wall_s", "share", "thread_s", "cpu_s"}, name
                assert all(v >= 0 for v in part.values()), name
            shares = sum(p["share"] for p in r["breakdown"]["parts"].values())
            assert shares == pytest.approx(1.0, abs=0.02)
            assert r["breakdown"]["functions_per_frame"]["combcn.engine.propagate:_trace"]["calls"] > 0
        text = "\n".join(lines[:-1])
        for header in ("| plate | matte (area) |", "| plate, matte | " + " | ".join(parts) + " |"):
            assert header in text
        assert text.count("| 64x48, ") == 6  # two breakdown rows per run
        for matte in ("ellipse", "strokes", "objects"):
            assert sorted(p.name for p in (kept / f"64x48-{matte}").glob("*.exr")) == [
                "o.1001.exr",
                "o.1002.exr",
            ]
        cpu = result["machine"]["cpu"]
        assert cpu["model"]
        assert set(cpu["flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}

    @pytest.mark.slow
    def test_memory_reports_each_length(self) -> None:
        run = subprocess.run(
            [sys.executable, str(BENCH / "bench_engine.py"), "memory", "-l", "2", "3", "-s", "64x48"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert [r["frames"] for r in result["runs"]] == [2, 3]
        assert [r["written"] for r in result["runs"]] == [2, 3]
        assert result["peak_ratio_longest_vs_shortest"] > 0


class TestPeakRss:
    @pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
    def test_a_child_does_not_report_its_parents_peak(self) -> None:
        """The bench's children are started from a parent that wrote the plate: a child's peak is its own."""
        numpy = pytest.importorskip("numpy")
        held = numpy.ones(1536 * 2**20 // 8)  # the parent's peak: at least 1.5 GB touched
        del held
        code = (
            "import importlib.util, sys; spec = importlib.util.spec_from_file_location('b', sys.argv[1]); "
            "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b); print(b._rss_mb())"
        )
        run = subprocess.run(
            [sys.executable, "-c", code, str(BENCH / "bench_engine.py")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert float(run.stdout.strip().splitlines()[-1]) < 1000.0  # its own: about 250 MB


class TestHeapArenas:
    """The bound on glibc's heaps that keeps the memory bench's peak flat with the sequence's length
    (``combcn.engine.sequence.bound_heap_arenas``), called through a stand-in C library."""

    class _Libc:
        def __init__(self, answer: int) -> None:
            self.calls: list[tuple[int, int]] = []
            self.answer = answer

        def mallopt(self, parameter: int, value: int) -> int:
            self.calls.append((parameter, value))
            return self.answer

    def test_smoke(self) -> None:
        import os

        from combcn.engine.sequence import bound_heap_arenas

        libc = self._Libc(1)
        assert bound_heap_arenas(libc) is True
        assert libc.calls == [(-8, max(2, os.cpu_count() or 2))]  # M_ARENA_MAX, a heap per core

    def test_refused(self) -> None:
        from combcn.engine.sequence import bound_heap_arenas

        assert bound_heap_arenas(self._Libc(0)) is False
