#!/usr/bin/env python3
"""Cost of the camera-tracked clean plate (``model.track``) against the rest of a model forward.

One process, the same windows for every case, interleaved round by round, median over rounds:

- ``forward (track on)``: the shipped model's forward on a 32-frame 128x128 window;
- ``forward (track off)``: the same model with ``config.track = False`` (baseline, ratio 1);
- ``tracked plate alone``: :func:`combcn.model.track.tracked_plate_fill`;
- ``locked-off plate alone``: :func:`combcn.model.prefill.cleanplate_fill`.

Windows: a synthetic pan (2 px per frame over blurred noise, a 56 px box hole), which the track
accepts, and a locked-off version of it, which it snaps back to the locked-off plate.

    python bench/bench_track.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from combcn.model import load_model
from combcn.model.prefill import cleanplate_fill
from combcn.model.track import tracked_plate_fill


def window(step: int, t: int = 32, size: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    width = size + t * step + 4
    layers = []
    for _ in range(3):
        fine = cv2.GaussianBlur(rng.random((size, width)).astype(np.float32), (0, 0), 1.5)
        coarse = cv2.GaussianBlur(rng.random((size, width)).astype(np.float32), (0, 0), 6.0)
        layer = 0.6 * fine + 0.4 * coarse
        layers.append((layer - layer.min()) / (layer.max() - layer.min()))
    scene = np.stack(layers)
    frames = np.stack([scene[:, :, i * step : i * step + size] for i in range(t)], 1)[None]
    hole = torch.zeros(1, 1, t, size, size)
    hole[..., 36:92, 36:92] = 1.0
    x = torch.from_numpy(np.ascontiguousarray(frames))
    return torch.where(hole > 0, torch.zeros_like(x), x), hole


def _cases(
    on: torch.nn.Module, off: torch.nn.Module, frames: torch.Tensor, hole: torch.Tensor
) -> dict[str, Callable[[], object]]:
    return {
        "forward (track off)": lambda: off(frames, hole),
        "forward (track on)": lambda: on(frames, hole),
        "tracked plate alone": lambda: tracked_plate_fill(frames, hole),
        "locked-off plate alone": lambda: cleanplate_fill(frames, hole),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    on = load_model()
    off = load_model()
    off.config = dataclasses.replace(off.config, track=False)
    on.config = dataclasses.replace(on.config, track=True)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, torch {torch.__version__}, {args.threads} thread(s)")
    for name, (frames, hole) in {"pan": window(2), "locked off": window(0)}.items():
        cases = _cases(on, off, frames, hole)
        times: dict[str, list[float]] = {k: [] for k in cases}
        with torch.inference_mode():
            for fn in cases.values():
                fn()  # warm-up
            for _ in range(args.rounds):
                for key, fn in cases.items():
                    start = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - start)
        tracked = bool(tracked_plate_fill(frames, hole)[2][0])
        base = statistics.median(times["forward (track off)"])
        print(f"\n{name} window (32 x 128 x 128; track used: {tracked})")
        print("| case | median s | ratio vs forward (track off) |")
        print("|---|---:|---:|")
        for key, values in times.items():
            med = statistics.median(values)
            print(f"| {key} | {med:.3f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
