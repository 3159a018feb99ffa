#!/usr/bin/env python3
"""Engine benchmark: seconds per frame on a 1920x1080 plate, and peak memory against sequence length.

Speed (``speed``): a synthetic 1920x1080 half RGBA EXR sequence (zip) with a moving elliptical matte
covering 10% of the frame, rendered by ``combcn.inpaint_sequence`` with the shipped model (its
weights and config, camera track included). Baselines in the same
process: copying the sequence through OpenImageIO (read + atomic write, no model) and the model's
forward pass alone on the same windows.

Memory (``memory``): peak RSS of a child process that renders N frames of a small plate, with the
model loaded before the baseline is taken; run for 100 and 1000 frames, the peak must not grow with N.

    python bench/bench_engine.py speed [--frames 40]
    python bench/bench_engine.py memory [--lengths 100 1000] [--size 128x72] [--width 0.125]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import torch

from combcn.io import ImageData, read_image, write_image_atomic


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process so far: less sensitive to other load than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_plate(
    folder: Path, frames: int, width: int, height: int, matte_fraction: float = 0.10
) -> tuple[str, str]:
    """Write ``plate.####.exr`` (half RGBA, zip) and ``matte.####.exr`` (half A) from frame 1001."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = oiio.ImageSpec(width, height, 4, "half")
    spec.channelnames = ("R", "G", "B", "A")
    spec.attribute("compression", "zip")
    mspec = oiio.ImageSpec(width, height, 1, "half")
    mspec.channelnames = ("A",)
    mspec.attribute("compression", "zip")
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Ellipse with area = matte_fraction of the frame, aspect 1.6:1.
    ry = np.sqrt(matte_fraction * width * height / (np.pi * 1.6))
    rx = 1.6 * ry
    rng = np.random.default_rng(0)
    base = np.stack([xx / width * 2.0, yy / height, 0.3 + 0.2 * np.sin(xx / 40.0), np.ones_like(xx)], -1)
    for i in range(frames):
        noise = rng.normal(0, 0.01, (height, width, 1)).astype(np.float32)
        pixels = (base + noise * np.array([1, 1, 1, 0], np.float32)).astype(np.float16)
        write_image_atomic(folder / f"plate.{1001 + i:04d}.exr", ImageData(pixels, spec))
        cx = width * (0.3 + 0.4 * i / max(1, frames - 1))
        cy = height * 0.5
        matte = ((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) <= 1.0).astype(np.float16)[..., None]
        write_image_atomic(folder / f"matte.{1001 + i:04d}.exr", ImageData(matte, mspec))
    return str(folder / "plate.####.exr"), str(folder / "matte.####.exr")


def machine() -> dict[str, object]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
    }


def speed(args: argparse.Namespace) -> dict[str, object]:
    import combcn
    from combcn.engine import Engine
    from combcn.model import load_model

    with tempfile.TemporaryDirectory(prefix="combcn-bench-") as tmp:
        folder = Path(tmp)
        plate, matte = make_plate(folder / "in", args.frames, 1920, 1080)
        engine = Engine(model=load_model(None, device="cpu"), device="cpu")
        frames = list(range(1001, 1001 + args.frames))
        # Baseline 1: copy-through (read every channel + atomic write), the I/O floor of any render.
        t0, c0 = time.perf_counter(), _cpu_s()
        for f in frames:
            write_image_atomic(folder / f"copy.{f:04d}.exr", read_image(plate.replace("####", f"{f:04d}")))
        copy_s = (time.perf_counter() - t0) / len(frames)
        copy_cpu = (_cpu_s() - c0) / len(frames)
        # The engine: read, shape, crop, model, composite, write.
        load_before = os.getloadavg()[0]
        c0 = _cpu_s()
        report = combcn.inpaint_sequence(plate, matte, str(folder / "out/o.####.exr"), engine=engine)
        engine_s = report.seconds_per_frame
        engine_cpu = (_cpu_s() - c0) / len(frames)
        # Baseline 2: the model alone on one window of the working size the engine used.
        from combcn.engine.windows import plan_crop

        height, width = 1080, 1920
        ry = np.sqrt(0.10 * width * height / (np.pi * 1.6))
        box = (int(540 - ry), int(540 + ry), int(width * 0.3 - 1.6 * ry), int(width * 0.7 + 1.6 * ry))
        crop = plan_crop(box, height, width, resolution=engine.resolution, margin=0.5)
        x = torch.rand(1, 3, engine.window, crop.height, crop.width)
        hole = (torch.rand(1, 1, engine.window, crop.height, crop.width) > 0.7).float()
        with torch.inference_mode():
            engine.model(x, hole)  # warm-up (oneDNN kernel creation)
            t0, c0 = time.perf_counter(), _cpu_s()
            engine.model(x, hole)
            model_window_s = time.perf_counter() - t0
            model_window_cpu = _cpu_s() - c0
        stride = engine.window - engine.window // 4
        return {
            "bench": "speed",
            "plate": "1920x1080 half RGBA EXR (zip), matte 10% of the frame (moving ellipse)",
            "frames": args.frames,
            "model": f"{type(engine.model).__name__} window={engine.window} resolution={engine.resolution}",
            "working_size": [crop.height, crop.width],
            "engine_s_per_frame": round(engine_s, 3),
            "copy_through_s_per_frame": round(copy_s, 3),
            "model_window_s": round(model_window_s, 3),
            "model_s_per_frame_at_stride": round(model_window_s / stride, 3),
            "ratio_engine_vs_copy": round(engine_s / copy_s, 2),
            "cpu_s_per_frame": {
                "engine": round(engine_cpu, 3),
                "copy_through": round(copy_cpu, 3),
                "model_at_stride": round(model_window_cpu / stride, 3),
                "ratio_engine_vs_copy": round(engine_cpu / copy_cpu, 2),
            },
            "load_avg_at_start": round(load_before, 2),
            "machine": machine(),
        }


def memory_child(args: argparse.Namespace) -> dict[str, object]:
    import combcn
    from combcn.engine import Engine
    from combcn.model import Inpainter, ModelConfig, to_channels_last

    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="combcn-bench-mem-") as tmp:
        plate, matte = make_plate(Path(tmp) / "in", args.child_frames, width, height)
        torch.manual_seed(0)
        model = to_channels_last(Inpainter(ModelConfig(width=args.width))).eval()
        engine = Engine(model=model, device="cpu")
        with torch.inference_mode():  # one small window so oneDNN's buffers count in the baseline
            engine.model(torch.rand(1, 3, 4, 64, 64), torch.zeros(1, 1, 4, 64, 64))
        baseline = _rss_mb()
        t0 = time.perf_counter()
        report = combcn.inpaint_sequence(plate, matte, str(Path(tmp) / "out/o.####.exr"), engine=engine)
        return {
            "frames": args.child_frames,
            "written": len(report.written),
            "baseline_rss_mb": round(baseline, 1),
            "peak_rss_mb": round(_rss_mb(), 1),
            "growth_mb": round(_rss_mb() - baseline, 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }


def memory(args: argparse.Namespace) -> dict[str, object]:
    runs = []
    for n in args.lengths:
        cmd = [
            sys.executable,
            __file__,
            "memory",
            "--child-frames",
            str(n),
            "--size",
            args.size,
            "--width",
            str(args.width),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "bench": "memory",
        "plate": f"{args.size} half RGBA EXR, matte 10% (small plate: the property is growth with length)",
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
    s = sub.add_parser("speed")
    s.add_argument("--frames", type=int, default=40)
    m = sub.add_parser("memory")
    m.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    m.add_argument("--size", default="128x72")
    m.add_argument("--width", type=float, default=0.125)
    m.add_argument("--child-frames", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "speed":
        result = speed(args)
    elif args.child_frames is not None:
        result = memory_child(args)
    else:
        result = memory(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
