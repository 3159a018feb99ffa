"""``combcn eval``: fill quality on clips with synthetic holes, the model against classical baselines.

Cuts 32-frame 128x128 windows from clips with the paper's hole (one 48-64 px box per window at a
fixed position, paper §4), runs the model (and any other checkpoints given with ``--compare``)
and the baselines on the same windows, prints a markdown table and writes ``results.md`` and
``results.json`` to the output folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shlex
import tempfile
from pathlib import Path
from typing import Any

from combcn.cli import DefaultsHelpFormatter, options
from combcn.errors import ConfigError, OutputError

log = logging.getLogger("combcn.eval")

#: Baselines run when --baselines is not given: per-frame, static-plate and tracked-plate fills.
DEFAULT_BASELINES = "telea,navier_stokes,temporal_median,cleanplate,tracked_plate"


def machine_description() -> str:
    """CPU model, core count and torch version/threads, in one line (for results files)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores{gpu}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def command_line(args: argparse.Namespace) -> str:
    """An equivalent ``combcn eval`` command for the results files, rebuilt from the parsed options
    (so it is right however the verb was called: console script, ``python -m`` or in-process)."""
    parts = ["combcn", "eval", *args.clips]
    for flag, value in (
        ("--split", args.split),
        ("--data", args.data),
        ("--weights", None if args.no_model else args.weights),
        ("--name", None if args.name == "combcn" else args.name),
    ):
        if value is not None:
            parts += [flag, str(value)]
    for item in args.compare or []:
        parts += ["--compare", item]
    if args.no_model:
        parts.append("--no-model")
    defaults = {
        "baselines": DEFAULT_BASELINES,
        "window": 32,
        "size": 128,
        "windows_per_clip": 1,
        "max_windows": 0,
        "examples": 0,
        "hole": "box",
        "seed": 0,
        "precision": "fp32",
        "device": "cpu",
        "threads": 0,
    }
    for key, default in defaults.items():
        value = getattr(args, key)
        if value != default:
            parts += ["--" + key.replace("_", "-"), str(value)]
    parts += ["--output", str(args.output)]
    return " ".join(shlex.quote(p) for p in parts)


def _parse_compare(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--compare takes NAME=WEIGHTS (e.g. 2dcn=runs/2dcn/weights.pt), got {item!r}")
        if name in out:
            raise ConfigError(f"--compare name {name!r} given twice")
        out[name] = path
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from combcn.engine import resolve_device
    from combcn.eval.baselines import BASELINES
    from combcn.eval.clips import load_windows, read_split, resolve_clips
    from combcn.eval.evaluate import (
        METRICS,
        Method,
        baseline_method,
        evaluate,
        example_sheet,
        gaps_table,
        markdown_table,
        model_method,
        paired_gaps,
        per_clip_table,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = args.baselines.strip()
    baselines = [] if chosen.lower() == "none" else [b.strip() for b in chosen.split(",")]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        known = ", ".join(BASELINES)
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; known: {known}, or 'none'")
    if args.window < 2 or args.size < 16 or args.size % 8:
        raise ConfigError(
            f"--window must be >= 2 and --size a multiple of 8 >= 16; got {args.window}, {args.size}"
        )
    compare = _parse_compare(args.compare or [])
    if args.no_model and not baselines:
        raise ConfigError("nothing to evaluate: --no-model and --baselines none")
    clash = sorted(({args.name} | set(compare)) & set(baselines)) + (
        [args.name] if args.name in compare else []
    )
    if clash and not args.no_model:
        raise ConfigError(
            f"method name(s) {', '.join(clash)} used twice; rename with --name or --compare NAME="
        )
    device = resolve_device(args.device)  # fail before reading any clip
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError("--output must be a folder", path=out_dir)

    names = list(args.clips)
    if args.split:
        names += read_split(Path(args.split))
    data = Path(args.data) if args.data else None
    clip_dirs = resolve_clips(names, data)
    windows = load_windows(
        clip_dirs,
        window=args.window,
        size=args.size,
        per_clip=args.windows_per_clip,
        seed=args.seed,
        hole=args.hole,
    )
    if args.max_windows and len(windows) > args.max_windows:
        windows = windows[: args.max_windows]
    log.info(
        "%d clip(s), %d window(s) of %d frames at %dx%d",
        len(clip_dirs),
        len(windows),
        args.window,
        args.size,
        args.size,
    )

    methods: dict[str, Method] = {}
    models: dict[str, Any] = {}
    descriptions: dict[str, str] = {}
    if not args.no_model:
        from combcn.model import load_model

        to_load = {args.name: args.weights, **compare}
        for name, weights in to_load.items():
            model = load_model(weights, device=device)
            from combcn.model import DEFAULT_WEIGHTS

            path = Path(weights) if weights else DEFAULT_WEIGHTS
            models[name] = {
                "weights": str(path) if path.is_file() else "random initialisation (no shipped weights)",
                "shipped_default": weights is None,
                "config": model.config.to_dict(),
            }
            methods[name] = model_method(model, name, precision=args.precision, with_3dcn=name == args.name)
            cfg = model.config
            descriptions[name] = f"{cfg.variant}, width {cfg.width:g}, {cfg.conv} conv"
            if name == args.name and cfg.variant == "combined":
                descriptions[f"3dcn@{args.size // 2}"] = f"3DCN alone: {name}'s own 3DCN output, at half size"
                descriptions[f"3dcn↑{args.size}"] = f"3DCN alone: {name}'s 3DCN output upsampled bilinearly"
    for b in baselines:
        methods[b] = baseline_method(b)

    result = evaluate(windows, methods, progress=args.progress == "bar", keep_examples=args.examples)
    summary = result.summary()
    table = markdown_table(summary, descriptions)
    command = command_line(args)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description()
    print(table, end="")

    out_dir.mkdir(parents=True, exist_ok=True)
    clip_names = [d.name for d in clip_dirs]
    hole_text = (
        f"one box hole each (sides {round(0.375 * args.size)}-{round(0.5 * args.size)} px, fixed position)"
        if args.hole == "box"
        else "free-form stroke holes that move over time"
    )
    md = (
        f"# combcn eval\n\n{table}\n"
        f"- command: `{command}`\n- date: {when}\n- machine: {machine}\n"
        f"- clips ({len(clip_names)}): {', '.join(clip_names)}\n"
        f"- windows: {len(windows)} x {args.window} frames at {args.size}x{args.size}, {hole_text}, "
        f"seed {args.seed}\n"
        f"- metrics: per window, then the mean over windows; MAE and temporal error on a 0-255 scale, "
        f"averaged over RGB; `3dcn@{args.size // 2}` is scored at half size against the "
        "area-downsampled truth\n"
    )
    for key in ("hole_mae", "temporal_error"):
        md += f"\n### {METRICS[key][0]} per clip\n\n{per_clip_table(result, key)}"
    # Is a gap real? Every row against the main model, paired over the same windows.
    gaps: dict[str, dict[str, dict[str, float]]] = {}
    if args.name in result.rows and len(result.windows) > 1:
        for key in ("hole_mae", "temporal_error"):
            gaps[key] = paired_gaps(result, args.name, key)
            if gaps[key]:
                md += f"\n### {METRICS[key][0]}: each method minus {args.name}, window by window\n\n"
                md += gaps_table(gaps[key], args.name, key)
    payload = {
        "command": command,
        "date": when,
        "machine": machine,
        "settings": {
            "window": args.window,
            "size": args.size,
            "windows_per_clip": args.windows_per_clip,
            "seed": args.seed,
            "hole": args.hole,
            "precision": args.precision,
            "device": args.device,
        },
        "clips": clip_names,
        "models": models,
        "baselines": {b: BASELINES[b][1] for b in baselines},
        "summary": summary,
        "gaps_to_model": gaps,
        "seconds": result.seconds,
        "windows": result.windows,
    }
    _write_atomic(out_dir / "results.md", md)
    _write_atomic(out_dir / "results.json", json.dumps(payload, indent=1, default=float) + "\n")
    log.info("wrote %s and %s", out_dir / "results.md", out_dir / "results.json")
    if args.examples:
        import cv2

        sheet = example_sheet(result)
        fd, tmp = tempfile.mkstemp(prefix=".examples.", suffix=".png", dir=out_dir)
        os.close(fd)
        try:
            if not cv2.imwrite(tmp, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
                raise OutputError("cannot write the example sheet", path=out_dir / "examples.png")
            os.replace(tmp, out_dir / "examples.png")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        log.info(
            "wrote %s (middle frame of %d window(s); columns: %s)",
            out_dir / "examples.png",
            len(result.examples),
            ", ".join(result.examples[0]),
        )
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure fill quality on clips with synthetic holes, against baselines",
        description=__doc__,
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("clips", nargs="*", help="clip names (looked up under --data) or clip folders")
    p.add_argument(
        "-s",
        "--split",
        metavar="FILE",
        help="file of clip names to add: one per line, or JSON list / {'val': [...]}",
    )
    p.add_argument(
        "-d",
        "--data",
        metavar="DIR",
        help="folder holding one sub-folder of frames per clip (the data/clips layout)",
    )
    p.add_argument(
        "-w",
        "--weights",
        metavar="PATH",
        default=None,
        help="model weights (.pt); default: the shipped weights",
    )
    p.add_argument("-n", "--name", default="combcn", help="row name of the --weights model")
    p.add_argument(
        "-c",
        "--compare",
        action="append",
        metavar="NAME=PATH",
        help="another weights file to evaluate on the same windows (repeatable), e.g. 2dcn=2d.pt",
    )
    p.add_argument("--no-model", action="store_true", help="run only the baselines")
    p.add_argument(
        "-b",
        "--baselines",
        default=DEFAULT_BASELINES,
        help="comma-separated baselines, or 'none' (all: telea, navier_stokes, temporal_median, "
        "cleanplate, tracked_plate, pushpull)",
    )
    p.add_argument(
        "-W", "--window", type=options.integer(2, 1024), default=32, help="frames per window (paper: 32)"
    )
    p.add_argument(
        "-S", "--size", type=options.integer(16, 8192), default=128, help="crop size in pixels (paper: 128)"
    )
    p.add_argument(
        "-k",
        "--windows-per-clip",
        type=options.integer(1, 10_000),
        default=1,
        help="windows per clip, spread evenly over the clip",
    )
    p.add_argument(
        "-m",
        "--max-windows",
        type=options.integer(0),
        default=0,
        help="stop after this many windows (0 = all)",
    )
    p.add_argument("--seed", type=options.seed, default=0, help="seed of the holes")
    p.add_argument(
        "-H",
        "--hole",
        choices=["box", "strokes"],
        default="box",
        help="box: the paper's (one 0.375-0.5 box per window, fixed); strokes: free-form strokes that move",
    )
    p.add_argument(
        "-p",
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="model arithmetic (bf16 autocast: faster on GPUs and on CPUs with AMX or AVX-512-bf16, "
        "far slower without them; fp32 is the reference)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the models")
    p.add_argument(
        "-t",
        "--threads",
        type=options.threads_or_default,
        default=0,
        help="torch CPU threads (0 = torch's default)",
    )
    p.add_argument(
        "-o", "--output", default="runs/eval", metavar="DIR", help="folder for results.md and results.json"
    )
    p.add_argument(
        "-x",
        "--examples",
        type=options.integer(0, 1000),
        default=0,
        metavar="N",
        help="also write examples.png: the middle frame of the first N windows, every method side by side",
    )
    p.add_argument("--progress", choices=["bar", "none"], default="bar", help="progress display")
    p.set_defaults(func=run)
