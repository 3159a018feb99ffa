"""``combcn finetune``: adapt the weights to one shot, self-supervised.

Cuts synthetic holes into the shot's known pixels, away from the matte (the region to remove is
never used as a target), trains for ``--minutes`` or ``--steps``, and writes a weights file that
``combcn inpaint --weights`` loads. Weights are also written every few minutes, so stopping early
(Ctrl-C) still leaves a usable file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path
from typing import Any

from combcn.cli import DefaultsHelpFormatter, options
from combcn.errors import ConfigError, OutputError

log = logging.getLogger("combcn.finetune")


def run(args: argparse.Namespace) -> int:
    import torch

    from combcn.engine import resolve_device
    from combcn.io import FrameSet
    from combcn.model import DEFAULT_WEIGHTS, load_model, read_weights, save_weights
    from combcn.train import finetune as ft

    if args.steps is None and args.minutes is None:
        raise ConfigError("give --steps N or --minutes M (how long to train)")
    output = Path(args.output)
    if output.suffix != ".pt":
        raise ConfigError(f"--output must be a .pt weights file, got {str(output)!r}")
    base = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    if output.exists() and not args.overwrite:
        raise OutputError("already exists; pass --overwrite to replace it", path=output)
    if output.exists() and base.exists() and output.resolve() == base.resolve():
        raise OutputError("is the base weights file; write the adapted weights elsewhere", path=output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder ({exc.strerror})", path=output.parent) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = load_model(args.weights, device=resolve_device(args.device))
    base_provenance: dict[str, Any] = {}
    if base.is_file():
        base_provenance = dict(read_weights(base).get("provenance") or {})
    frames = FrameSet.parse(args.frames).frames if args.frames else None
    shot = ft.load_shot(
        args.source,
        args.matte,
        frames=frames,
        matte_channel=args.matte_channel,
        invert=args.invert,
        threshold=args.threshold,
        expand=args.expand,
        shaper=args.shaper,
        resolution=int(model.resolution),
        window=int(args.window or model.window),
        progress=args.progress == "bar",
    )
    started = dt.datetime.now(dt.timezone.utc)

    def save(m: torch.nn.Module, report: ft.FinetuneReport) -> None:
        provenance = {
            "name": output.stem,
            "base_weights": str(base) if base.is_file() else "random initialisation",
            "base": {
                k: base_provenance[k] for k in ("name", "iterations", "trained_on") if k in base_provenance
            },
            "finetuned_on": {
                "source": args.source,
                "matte": args.matte,
                "frames": f"{shot.frames[0]}-{shot.frames[-1]} ({len(shot.frames)} frames)",
                "shaper": shot.shaper,
                "working_scale": round(shot.scale, 4),
            },
            "steps": report.steps,
            "wall_time_h": round(report.seconds / 3600.0, 4),
            "lr": args.lr,
            "precision": report.precision,
            "seed": args.seed,
            "validation": {
                "metric": "hole MAE (0-255) on held-out synthetic holes of this shot",
                "before": report.val_before,
                "after": report.val_after,
            },
            "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        }
        save_weights(m, output, provenance=provenance)  # type: ignore[arg-type]
        log.info("wrote %s (%d steps)", output, report.steps)

    report = ft.finetune(
        model,
        shot,
        steps=args.steps,
        minutes=args.minutes,
        lr=args.lr,
        window=args.window,
        keep_away=args.keep_away,
        seed=args.seed,
        precision=args.precision,
        val_windows=args.val_windows,
        progress=args.progress == "bar",
        checkpoint=save,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    print(
        f"adapted {report.steps} steps in {report.seconds / 60:.1f} min; "
        f"training loss {report.loss_first:.2f} -> {report.loss_last:.2f}; "
        f"held-out hole MAE {report.val_before:.2f} -> {report.val_after:.2f} "
        f"(0-255); wrote {output}"
    )
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="adapt the weights to one shot, self-supervised",
        description=__doc__,
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("source", help="plate: image sequence pattern (plate.####.exr, plate.%%04d.exr) or movie")
    p.add_argument("-m", "--matte", required=True, help="matte sequence pattern or movie (1 = remove)")
    p.add_argument("-o", "--output", required=True, help="weights file to write (.pt)")
    p.add_argument(
        "-w", "--weights", default=None, help="weights to start from (default: the shipped weights)"
    )
    p.add_argument(
        "-f",
        "--frames",
        type=options.frame_set,
        default=None,
        help="frames to learn from, e.g. 1001-1100 (default: all)",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "-n", "--steps", type=options.integer(1), default=None, help="optimiser steps to train"
    )
    length.add_argument(
        "-M",
        "--minutes",
        type=options.number(0.0, lo_open=True),
        default=None,
        help="wall-clock minutes to train",
    )
    p.add_argument(
        "-c", "--matte-channel", default=None, help="matte channel (default: A, else R/Y, else the first)"
    )
    p.add_argument("-i", "--invert", action="store_true", help="the matte is 1 where to keep")
    p.add_argument(
        "-T",
        "--threshold",
        type=options.matte_threshold,
        default=0.5,
        help="matte values above this are the hole",
    )
    p.add_argument(
        "-e",
        "--expand",
        type=options.matte_expand,
        default=0,
        help="grow the matte by this many plate pixels",
    )
    p.add_argument(
        "-s",
        "--shaper",
        default=None,
        help="working-range curve: acescct, log, srgb or none (default: acescct for float plates, else none)",
    )
    p.add_argument(
        "--lr", type=options.number(0.0, 1.0, lo_open=True), default=1e-4, help="Adam learning rate"
    )
    p.add_argument(
        "-W",
        "--window",
        type=options.integer(2, 1024),
        default=None,
        help="frames per training sample (default: the model's)",
    )
    p.add_argument(
        "-k",
        "--keep-away",
        type=options.integer(0, options.MAX_MATTE_PX),
        default=4,
        help="working-resolution pixels kept between the matte and any synthetic hole",
    )
    p.add_argument(
        "--val-windows",
        type=options.integer(0, 10_000),
        default=2,
        help="held-out synthetic-hole windows scored before/after",
    )
    p.add_argument(
        "--checkpoint-minutes",
        type=options.number(0.0, lo_open=True),
        default=5.0,
        help="write the weights this often",
    )
    p.add_argument("--seed", type=options.seed, default=0, help="random seed (crops, holes)")
    p.add_argument(
        "-p",
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="training arithmetic: auto = bf16 autocast on GPUs and on CPUs with AMX or AVX-512-bf16 "
        "(2-5x faster there), fp32 elsewhere (bf16 is far slower without those instructions)",
    )
    p.add_argument("-d", "--device", default="cpu", help="torch device")
    p.add_argument(
        "-t",
        "--threads",
        type=options.threads_or_default,
        default=0,
        help="torch CPU threads (0 = torch's default)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--progress", choices=["bar", "none"], default="bar", help="progress display")
    p.set_defaults(func=run)
