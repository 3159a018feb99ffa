#!/usr/bin/env python3
"""Engine benchmark: seconds a frame on the plates users render, where the time goes, and peak memory
against sequence length.

Speed (``speed``): a synthetic half RGBA EXR sequence (zip) at 1920x1080 and/or 3840x2160 with one of
three mattes, rendered by ``combcn.inpaint_sequence`` with the shipped model (its weights and config,
camera track included):

- ``ellipse``: one ellipse over 10 % of the frame, moving left to right;
- ``strokes``: brush strokes carried along a path, as ``combcn eval --holes strokes`` draws them
  (:func:`combcn.holes.moving_stroke_hole`), over 6-14 % of the frame (eval draws 1-20 %);
- ``objects``: two object silhouettes moving across the frame, as ``combcn eval --holes objects`` draws
  them (:func:`combcn.holes.silhouette_hole`), from the bundled sample's object matte (a dog jumping);
- ``static`` (only when asked for): one box, 0.4 of the frame's width and height, that never moves: on
  this locked-off plate no frame shows what it hides, so all of it is synthesised (the probes, the
  networks at working size and at plate resolution).

Each size and matte runs in its own child process, so that its peak RSS is its own; in that process,
first the baseline: copying the same plate through OpenImageIO (read every channel, atomic write), then
the render, timed from the outside (nothing in the engine changes): each part of
:data:`PARTS` is the time spent in its functions, a nested part's time left to that part.

Memory (``memory``): peak RSS of a child process that renders N frames of a plate (written by the
parent beforehand) with a narrow random model, loaded before the baseline is taken; run for 100 and
1000 frames, the peak must not grow with N.

    python bench/bench_engine.py speed [--size 1080p 4k] [--matte ellipse strokes objects] [--frames 40]
        [--threads N]
    python bench/bench_engine.py memory [--lengths 100 1000] [--size 128x72] [--width 0.125] [--matte ellipse]
    python bench/bench_engine.py plate OUT_FOLDER [--size 1080p] [--matte strokes] [--frames 40]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import importlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio
import torch

from combcn.io import ImageData, read_image, write_image_atomic

SIZES = {"1080p": (1920, 1080), "4k": (3840, 2160)}
MATTES = ("ellipse", "strokes", "objects", "static")
#: what ``speed`` runs unless told: the mattes users render most
DEFAULT_MATTES = ("ellipse", "strokes", "objects")
#: where the bundled object matte lies (a real silhouette track for the ``objects`` matte)
SAMPLE = Path(__file__).resolve().parents[1] / "combcn" / "data" / "sample"

#: The parts of a render and the functions (``module:qualified name``) whose time is theirs. Propagation
#: fills a window's frames on worker threads: their time in a target's fill that is not tracing is
#: sampling/blending. The output is written by a background thread.
PARTS: dict[str, tuple[str, ...]] = {
    "motion": ("combcn.engine.propagate:Propagator.__init__",),  # proxy greys + optical flow + layers
    "tracing": ("combcn.engine.propagate:_trace",),
    "sampling/blending": (
        "combcn.engine.propagate:Propagator.fill",
        "combcn.engine.propagate:_candidates",
        "combcn.engine.propagate:_align_many",
        "combcn.engine.propagate:_blend",
        "combcn.engine.propagate:_combine",
        "combcn.engine.core:_Window._join",
        "combcn.engine.core:composite",
    ),
    "synthesis": (
        "combcn.engine.core:_Window._synthesise",
        "combcn.engine.core:_Window._probe",
        "combcn.engine.core:_Window._telea",
    ),
    "I/O": (
        "combcn.io.plate:Plate.read",
        "combcn.io.plate:Plate.header",
        "combcn.io.plate:to_unit",  # half floats widened to float32
        "combcn.io.image:read_image",
        "combcn.io.image:read_header",
        "combcn.io.image:read_rows",
        "combcn.io.image:write_image_atomic",
    ),
    "guards": (
        "combcn.engine.sequence:check",
        "combcn.engine.guards:FillGuard.check",
        "combcn.engine.guards:known_range",
        "combcn.engine.guards:lossy_reason",
        "combcn.engine.guards:remove_stale_locks",
        "combcn.engine.guards:OutputLock.acquire",
        "combcn.engine.guards:OutputLock.release",
    ),
}
#: the main thread's wait for propagation's workers (shared out by what the workers did) and for writes
_WAIT = "wait"
#: propagation's thread pools (by thread name prefix) and the part a task on each is: the frame pairs'
#: motion, measured side by side, and the targets' fills
_POOLS = ("combcn-motion", "combcn-propagate")


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process so far: less sensitive to other load than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    """This process's peak RSS (MB) since it started its program: Linux's ``VmHWM``. (``ru_maxrss`` of a
    child starts at its parent's peak, carried over the fork: a memory run's 1000-frame child reported
    the 2.4 GB its parent held while writing the plate as its baseline.)"""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_size(text: str) -> tuple[int, int]:
    """``1080p``, ``4k`` or ``WxH`` -> (width, height)."""
    if text.lower() in SIZES:
        return SIZES[text.lower()]
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: use 1080p, 4k or WxH") from None
    return width, height


def _size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def ellipse_matte(frames: int, width: int, height: int, fraction: float = 0.10) -> np.ndarray:
    """bool [T, H, W]: an ellipse over ``fraction`` of the frame (aspect 1.6:1) moving left to right."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ry = np.sqrt(fraction * width * height / (np.pi * 1.6))
    rx = 1.6 * ry
    out = np.zeros((frames, height, width), bool)
    for i in range(frames):
        cx = width * (0.3 + 0.4 * i / max(1, frames - 1))
        out[i] = (((xx - cx) / rx) ** 2 + ((yy - height * 0.5) / ry) ** 2) <= 1.0
    return out


def stroke_matte(frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """bool [T, H, W]: ``combcn eval``'s moving strokes (:func:`combcn.holes.moving_stroke_hole`), drawn
    over 6-14 % of the frame (eval's range is 1-20 %) so that they compare with the ellipse's 10 %."""
    from combcn.holes import moving_stroke_hole

    rng = np.random.default_rng(seed)
    return moving_stroke_hole(rng, frames, height, width, area=(0.06, 0.14)) > 0


def object_matte(frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """bool [T, H, W]: two object silhouettes (:func:`combcn.holes.silhouette_hole`, each placed and
    scaled on its own) from the bundled sample's object matte, moving as the object did."""
    from combcn.holes import object_tracks, silhouette_hole
    from combcn.io.plate import read_matte_image

    files = sorted(SAMPLE.glob("matte.*.exr"))
    masks = np.stack([read_matte_image(f) > 0.5 for f in files]).astype(np.uint8)
    _, track = max(object_tracks(masks, list(range(len(files)))), key=lambda found: len(found[1]))
    rng = np.random.default_rng(seed)
    out = np.zeros((frames, height, width), bool)
    for _ in range(2):
        out |= silhouette_hole(rng, track, frames, height, width) > 0
    return out


def static_matte(frames: int, width: int, height: int) -> np.ndarray:
    """bool [T, H, W]: a box over 0.4 x 0.4 of the frame, centred, the same in every frame."""
    out = np.zeros((frames, height, width), bool)
    bh, bw = int(round(0.4 * height)), int(round(0.4 * width))
    y0, x0 = (height - bh) // 2, (width - bw) // 2
    out[:, y0 : y0 + bh, x0 : x0 + bw] = True
    return out


MATTE_MAKERS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "ellipse": ellipse_matte,
    "strokes": stroke_matte,
    "objects": object_matte,
    "static": static_matte,
}


def make_plate(
    folder: Path, frames: int, width: int, height: int, matte: str = "ellipse"
) -> tuple[str, str, float]:
    """Write ``plate.####.exr`` (half RGBA, zip) and ``matte.####.exr`` (half A) from frame 1001.

    Returns:
        (plate pattern, matte pattern, the matte's mean area as a fraction of the frame).
    """
    folder.mkdir(parents=True, exist_ok=True)
    spec = oiio.ImageSpec(width, height, 4, "half")
    spec.channelnames = ("R", "G", "B", "A")
    spec.attribute("compression", "zip")
    mspec = oiio.ImageSpec(width, height, 1, "half")
    mspec.channelnames = ("A",)
    mspec.attribute("compression", "zip")
    holes = MATTE_MAKERS[matte](frames, width, height)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(0)
    base = np.stack([xx / width * 2.0, yy / height, 0.3 + 0.2 * np.sin(xx / 40.0), np.ones_like(xx)], -1)
    del xx, yy
    for i in range(frames):
        noise = rng.normal(0, 0.01, (height, width, 1)).astype(np.float32)
        pixels = (base + noise * np.array([1, 1, 1, 0], np.float32)).astype(np.float16)
        write_image_atomic(folder / f"plate.{1001 + i:04d}.exr", ImageData(pixels, spec))
        hole = holes[i].astype(np.float16)[..., None]
        write_image_atomic(folder / f"matte.{1001 + i:04d}.exr", ImageData(hole, mspec))
    return str(folder / "plate.####.exr"), str(folder / "matte.####.exr"), float(holes.mean())


def cpu_model() -> dict[str, object]:
    """The CPU's model name and the flags torch's kernels care about, from /proc/cpuinfo."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "flags": [f for f in wanted if f in flags],
    }


def machine() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


class Breakdown:
    """Time of each of :data:`PARTS`, measured by wrapping their functions where the engine finds them
    (module attributes and class attributes; nothing in the engine is edited).

    Three sums per part, each function's time less that of nested parts' functions (exclusive):

    - ``wall``: the main thread's seconds, its waits for propagation's workers shared out by what the
      workers did in them (tracing or sampling): these sum, with ``other``, to the render's wall time;
    - ``thread``: wall seconds summed over every thread (propagation's workers and the writer
      included), a thread's time waiting for a core on a loaded machine included;
    - ``cpu``: CPU seconds of the threads that called the part's functions (``time.thread_time``), what
      the part costs the machine whatever its load; the pools that torch, OpenCV and OpenImageIO run
      inside a call are not counted (the process's CPU time less these sums is ``other``'s).

    Per function: its inclusive thread-seconds and calls.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        self.thread: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self.cpu: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self.wall: dict[str, float] = dict.fromkeys([*PARTS, _WAIT], 0.0)
        self.workers: dict[str, float] = dict.fromkeys(PARTS, 0.0)  # propagation's workers only
        self.functions: dict[str, list[float]] = {}
        self.undo: list[Callable[[], None]] = []

    # -- timing
    def _stack(self) -> list[list[float]]:
        stack = getattr(self.local, "stack", None)
        if stack is None:
            stack = self.local.stack = []
        return stack

    def timed(self, part: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            stack = self._stack()
            frame = [time.perf_counter(), 0.0, time.thread_time(), 0.0]  # start, nested: wall, CPU
            stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                stack.pop()
                elapsed = time.perf_counter() - frame[0]
                cpu = time.thread_time() - frame[2]
                if stack:
                    stack[-1][1] += elapsed
                    stack[-1][3] += cpu
                self._add(part, name, elapsed, elapsed - frame[1], cpu - frame[3])

        return wrapper

    def _add(self, part: str, name: str, elapsed: float, exclusive: float, cpu: float) -> None:
        thread = threading.current_thread()
        with self.lock:
            if part != _WAIT:
                self.thread[part] += exclusive
                self.cpu[part] += cpu
                entry = self.functions.setdefault(name, [0.0, 0])
                entry[0] += elapsed
                entry[1] += 1
            if thread is threading.main_thread():
                self.wall[part] += exclusive
            elif thread.name.startswith(_POOLS) and part != _WAIT:
                self.workers[part] += exclusive

    def _waited(self, seconds: float, before: dict[str, float]) -> None:
        """Share the main thread's ``seconds`` of waiting on propagation's workers out among the parts
        the workers spent their time in (since ``before``)."""
        with self.lock:
            done = {part: self.workers[part] - before[part] for part in PARTS}
            total = sum(done.values())
            for part, spent in done.items():
                if total > 0:
                    self.wall[part] += seconds * spent / total
            if total <= 0:
                self.wall["sampling/blending"] += seconds

    # -- installing
    def _replace(self, owner: Any, attribute: str, value: Any) -> None:
        old = owner.__dict__[attribute] if isinstance(owner, type) else getattr(owner, attribute)
        setattr(owner, attribute, value)
        self.undo.append(lambda: setattr(owner, attribute, old))

    def install(self) -> None:
        """Wrap every function of :data:`PARTS` where the engine looks it up, and the thread pools of
        propagation (its workers) and of the sequence writer (the main thread's wait for a write)."""
        for part, names in PARTS.items():
            for name in names:
                module_name, qualified = name.split(":")
                module = importlib.import_module(module_name)
                if "." in qualified:
                    owner_name, attribute = qualified.split(".")
                    owner = getattr(module, owner_name)
                    self._replace(owner, attribute, self.timed(part, name, owner.__dict__[attribute]))
                    continue
                original = getattr(module, qualified)
                wrapped = self.timed(part, name, original)
                for other in list(sys.modules.values()):  # every module that imported it by name
                    if getattr(other, "__name__", "").startswith("combcn") and any(
                        value is original for value in vars(other).values()
                    ):
                        for attribute, value in list(vars(other).items()):
                            if value is original:
                                self._replace(other, attribute, wrapped)
        self._replace(
            importlib.import_module("combcn.engine.propagate"), "ThreadPoolExecutor", self._workers()
        )
        self._replace(importlib.import_module("combcn.engine.sequence"), "ThreadPoolExecutor", self._writer())

    def uninstall(self) -> None:
        while self.undo:
            self.undo.pop()()

    def _workers(self) -> type:
        breakdown = self

        class Workers(concurrent.futures.ThreadPoolExecutor):
            """Propagation's pools: a frame pair's motion on a worker is motion, a target's fill is
            sampling/blending (less its tracing); the main thread's wait for all of them is shared out
            by what they did."""

            def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **kwargs: Any) -> Any:  # type: ignore[override]
                if self._thread_name_prefix.startswith("combcn-motion"):
                    one = breakdown.timed("motion", "combcn.engine.propagate:Propagator._pairs.one", fn)
                else:
                    one = breakdown.timed(
                        "sampling/blending", "combcn.engine.propagate:Propagator.fill.one", fn
                    )
                with breakdown.lock:
                    before = dict(breakdown.workers)
                start = time.perf_counter()
                results = list(super().map(one, *iterables, **kwargs))
                breakdown._waited(time.perf_counter() - start, before)
                stack = breakdown._stack()
                if stack:  # the wait is shared out above, not the enclosing function's own time
                    stack[-1][1] += time.perf_counter() - start
                return iter(results)

        return Workers

    def _writer(self) -> type:
        breakdown = self

        class Writer(concurrent.futures.ThreadPoolExecutor):
            """The sequence's writer: the main thread's wait for a write is I/O."""

            def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                future = super().submit(fn, *args, **kwargs)
                future.result = breakdown.timed("I/O", "wait for a write", future.result)  # type: ignore[method-assign]
                return future

        return Writer

    # -- reporting
    def report(self, wall_total: float, cpu_total: float, frames: int) -> dict[str, object]:
        """Per part: wall seconds a frame and its share of the wall time, thread and CPU seconds a frame;
        ``other``: the wall and the process's CPU time no part accounts for."""
        other = max(0.0, wall_total - sum(self.wall[p] for p in PARTS))
        other_cpu = max(0.0, cpu_total - sum(self.cpu[p] for p in PARTS))
        parts = {
            part: {
                "wall_s": round(self.wall[part] / frames, 3),
                "share": round(self.wall[part] / wall_total, 3) if wall_total else 0.0,
                "thread_s": round(self.thread[part] / frames, 3),
                "cpu_s": round(self.cpu[part] / frames, 3),
            }
            for part in PARTS
        }
        parts["other"] = {
            "wall_s": round(other / frames, 3),
            "share": round(other / wall_total, 3) if wall_total else 0.0,
            "thread_s": round(other / frames, 3),
            "cpu_s": round(other_cpu / frames, 3),
        }
        functions = {
            name: {"s": round(seconds / frames, 4), "calls": int(calls)}
            for name, (seconds, calls) in sorted(self.functions.items(), key=lambda kv: -kv[1][0])
        }
        return {"parts": parts, "functions_per_frame": functions}


def speed_child(args: argparse.Namespace) -> dict[str, object]:
    """One size and matte, the plate already written in ``args.child``: copy-through, then the render."""
    import combcn
    from combcn.engine import Engine
    from combcn.model import load_model

    folder = Path(args.child)
    plate = str(folder / "in" / "plate.####.exr")
    matte = str(folder / "in" / "matte.####.exr")
    engine = Engine(model=load_model(None, device="cpu"), device="cpu", threads=args.threads)
    frames = list(range(1001, 1001 + args.frames))
    rss_loaded = _rss_mb()
    # The baseline: copy-through (read every channel + atomic write), the I/O floor of any render.
    load_start = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), _cpu_s()
    for f in frames:
        write_image_atomic(folder / f"copy.{f:04d}.exr", read_image(plate.replace("####", f"{f:04d}")))
    copy_s = (time.perf_counter() - t0) / len(frames)
    copy_cpu = (_cpu_s() - c0) / len(frames)
    # The engine: read, shape, propagate, synthesise, composite, guard, write.
    breakdown = Breakdown()
    breakdown.install()
    try:
        t0, c0 = time.perf_counter(), _cpu_s()
        combcn.inpaint_sequence(plate, matte, str(folder / "out/o.####.exr"), engine=engine)
        wall = time.perf_counter() - t0
        cpu = _cpu_s() - c0
    finally:
        breakdown.uninstall()
    engine_cpu = cpu / len(frames)
    engine_s = wall / len(frames)
    return {
        "engine_s_per_frame": round(engine_s, 3),
        "engine_cpu_s_per_frame": round(engine_cpu, 3),
        "copy_through_s_per_frame": round(copy_s, 3),
        "copy_through_cpu_s_per_frame": round(copy_cpu, 3),
        "ratio_vs_copy": round(engine_s / copy_s, 2),
        "cpu_ratio_vs_copy": round(engine_cpu / copy_cpu, 2),
        "rss_after_model_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "load_avg_at_start": round(load_start, 2),
        "load_avg_at_end": round(os.getloadavg()[0], 2),
        "breakdown": breakdown.report(wall, cpu, len(frames)),
    }


def _run_child(cmd: list[str], what: str) -> dict[str, Any]:
    """Run a child of this script (its own process: its own peak RSS) and read the JSON of its last
    line; its stderr is shown and the bench stops where it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def speed(args: argparse.Namespace) -> dict[str, object]:
    runs = []
    for size in args.size:
        for matte in args.matte:
            with tempfile.TemporaryDirectory(prefix="combcn-bench-") as tmp:
                t0 = time.perf_counter()
                _, _, area = make_plate(Path(tmp) / "in", args.frames, size[0], size[1], matte=matte)
                made = time.perf_counter() - t0
                cmd = [sys.executable, __file__, "speed", "--child", tmp, "--frames", str(args.frames)]
                if args.threads is not None:
                    cmd += ["--threads", str(args.threads)]
                run = _run_child(cmd, f"the {_size_name(size)} {matte} run")
                if args.keep is not None:  # the render's files, to compare two trees' bit for bit
                    shutil.copytree(
                        Path(tmp) / "out", args.keep / f"{_size_name(size)}-{matte}", dirs_exist_ok=True
                    )
            runs.append(
                {
                    "size": _size_name(size),
                    "matte": matte,
                    "matte_area": round(area, 3),
                    "frames": args.frames,
                    "plate_written_s": round(made, 1),
                    **run,
                }
            )
            done = runs[-1]
            print(
                f"{done['size']} {matte}: {done['engine_s_per_frame']} s a frame, {done['ratio_vs_copy']}x "
                f"the copy-through, peak RSS {done['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    print(table(runs))
    return {
        "bench": "speed",
        "plate": "half RGBA EXR (zip), locked-off synthetic plate; the shipped model",
        "engine_threads": args.threads if args.threads is not None else os.cpu_count(),
        "runs": runs,
        "machine": machine(),
    }


def table(runs: list[dict[str, Any]]) -> str:
    """The runs as Markdown: one row per run, then each run's breakdown: wall s a frame (share of the
    wall time), then CPU s a frame."""
    lines = [
        "| plate | matte (area) | frames | engine wall s | CPU s | copy-through wall s | CPU s "
        "| ratio wall / CPU | peak RSS MB | load start-end |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['size']} | {r['matte']} ({r['matte_area']:.1%}) | {r['frames']} "
            f"| {r['engine_s_per_frame']} "
            f"| {r['engine_cpu_s_per_frame']} | {r['copy_through_s_per_frame']} "
            f"| {r['copy_through_cpu_s_per_frame']} | {r['ratio_vs_copy']} / {r['cpu_ratio_vs_copy']} "
            f"| {r['peak_rss_mb']:.0f} | {r['load_avg_at_start']}-{r['load_avg_at_end']} |"
        )
    parts = [*PARTS, "other"]
    lines += ["", "| plate, matte | " + " | ".join(parts) + " |", "|---|" + "---:|" * len(parts)]
    for r in runs:
        cells = [
            f"{p['wall_s']} ({p['share']:.0%})" for p in (r["breakdown"]["parts"][name] for name in parts)
        ]
        lines.append(f"| {r['size']}, {r['matte']} | " + " | ".join(cells) + " |")
    lines += ["", "| plate, matte (CPU s a frame) | " + " | ".join(parts) + " |"]
    lines.append("|---|" + "---:|" * len(parts))
    for r in runs:
        cells = [str(r["breakdown"]["parts"][name]["cpu_s"]) for name in parts]
        lines.append(f"| {r['size']}, {r['matte']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_child(args: argparse.Namespace) -> dict[str, object]:
    import combcn
    from combcn.engine import Engine
    from combcn.model import Inpainter, ModelConfig, to_channels_last

    folder = Path(args.child)
    torch.manual_seed(0)
    model = to_channels_last(Inpainter(ModelConfig(width=args.width))).eval()
    engine = Engine(model=model, device="cpu")
    with torch.inference_mode():  # one small window so oneDNN's buffers count in the baseline
        engine.model(torch.rand(1, 3, 4, 64, 64), torch.zeros(1, 1, 4, 64, 64))
    baseline = _rss_mb()
    t0 = time.perf_counter()
    report = combcn.inpaint_sequence(
        str(folder / "in/plate.####.exr"),
        str(folder / "in/matte.####.exr"),
        str(folder / "out/o.####.exr"),
        engine=engine,
    )
    return {
        "frames": args.child_frames,
        "written": len(report.written),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "growth_mb": round(_rss_mb() - baseline, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def memory(args: argparse.Namespace) -> dict[str, object]:
    """Each length in its own child process, its plate written here first (so that the child's peak
    RSS is the render's)."""
    size = _size_name(args.size[0])
    runs = []
    for n in args.lengths:
        with tempfile.TemporaryDirectory(prefix="combcn-bench-mem-") as tmp:
            make_plate(Path(tmp) / "in", n, args.size[0][0], args.size[0][1], matte=args.matte)
            cmd = [sys.executable, __file__, "memory", "--child", tmp, "--child-frames", str(n)]
            runs.append(_run_child([*cmd, "--width", str(args.width)], f"the {n}-frame run"))
        done = runs[-1]
        print(
            f"{size} {n} frames: peak RSS {done['peak_rss_mb']:.0f} MB "
            f"(baseline {done['baseline_rss_mb']:.0f}), {done['seconds']} s",
            file=sys.stderr,
            flush=True,
        )
    return {
        "bench": "memory",
        "plate": f"{size} half RGBA EXR, {args.matte} matte (the property is growth with length)",
        "model": f"Inpainter width={args.width} (window 32, resolution 128), random init",
        "runs": runs,
        "peak_ratio_longest_vs_shortest": round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter
    s = sub.add_parser("speed", help="seconds a frame and where they go", formatter_class=defaults)
    s.add_argument("-f", "--frames", type=int, default=40, help="frames per run")
    s.add_argument(
        "-s", "--size", type=parse_size, nargs="+", default=[SIZES["1080p"]], help="1080p, 4k or WxH"
    )
    s.add_argument(
        "-m", "--matte", nargs="+", choices=MATTES, default=list(DEFAULT_MATTES), help="mattes to run"
    )
    s.add_argument(
        "-j",
        "--threads",
        type=int,
        default=None,
        help="the engine's threads (torch, OpenCV, OpenImageIO; "
        "propagation fills this many frames at once); default: every core",
    )
    s.add_argument(
        "-k", "--keep", type=Path, default=None, help="copy each run's output files to KEEP/SIZE-MATTE"
    )
    s.add_argument("--child", default=None, help=argparse.SUPPRESS)
    m = sub.add_parser("memory", help="peak RSS against sequence length", formatter_class=defaults)
    m.add_argument("-l", "--lengths", type=int, nargs="+", default=[100, 1000], help="frames per run")
    m.add_argument("-s", "--size", type=parse_size, nargs=1, default=[(128, 72)], help="1080p, 4k or WxH")
    m.add_argument("-w", "--width", type=float, default=0.125, help="the random model's width multiplier")
    m.add_argument("-m", "--matte", choices=MATTES, default="ellipse")
    m.add_argument("--child", default=None, help=argparse.SUPPRESS)
    m.add_argument("--child-frames", type=int, default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("plate", help="write the synthetic plate and matte only", formatter_class=defaults)
    p.add_argument("folder", type=Path)
    p.add_argument("-f", "--frames", type=int, default=40)
    p.add_argument("-s", "--size", type=parse_size, default=SIZES["1080p"], help="1080p, 4k or WxH")
    p.add_argument("-m", "--matte", choices=MATTES, default="ellipse")
    args = parser.parse_args()
    if args.mode == "speed" and args.child is not None:
        result = speed_child(args)
    elif args.mode == "speed":
        result = speed(args)
    elif args.mode == "plate":
        plate, matte, area = make_plate(
            args.folder, args.frames, args.size[0], args.size[1], matte=args.matte
        )
        result = {"plate": plate, "matte": matte, "matte_area": round(area, 4)}
    elif args.child is not None:
        result = memory_child(args)
    else:
        result = memory(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
