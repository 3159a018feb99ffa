"""``combcn eval``: fill quality on clips with synthetic holes, the model against classical baselines.

Cuts windows of consecutive frames from clips, at a square size (default 128: the largest centred
square, resized, the paper's protocol; the model runs directly on it) and/or at the clips' native
size (no crop, no resize; the model runs through the engine, as on a user's plate), with holes of
one or more families: the paper's static box, strokes that move along a path, real object
silhouettes moving along their tracks. Runs the model (and any checkpoints given with ``--compare``)
and the baselines on the same windows, prints a markdown table per resolution and hole family and
writes ``results.md`` and ``results.json`` to the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import json
import logging
import os
import platform
import shlex
import tempfile
from collections.abc import Iterator
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
    for item in args.engine_option or []:
        parts += ["--engine-option", item]
    for item in args.silhouettes or []:
        parts += ["--silhouettes", item]
    if args.no_model:
        parts.append("--no-model")
    if args.reference_middle:
        parts.append("--reference-middle")
    defaults = {
        "baselines": DEFAULT_BASELINES,
        "resolution": "128",
        "holes": "box",
        "window": 32,
        "windows_per_clip": 1,
        "max_windows": 0,
        "examples": 0,
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


def parse_value(text: str) -> Any:
    """An option value from the command line: bool (true/false/yes/no/on/off), None (none/null), int,
    float, else the string itself."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_engine_options(items: list[str]) -> dict[str, Any]:
    """``["propagate=false", "margin=0.75"]`` -> ``{"propagate": False, "margin": 0.75}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"--engine-option takes KEY=VALUE (e.g. margin=0.75), got {item!r}")
        if key in out:
            raise ConfigError(f"--engine-option {key!r} given twice")
        out[key] = parse_value(value)
    return out


def split_engine_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(keywords of the :class:`combcn.engine.Engine` constructor, e.g. ``track``; the rest, for
    :meth:`combcn.engine.Engine.inpaint`)."""
    from combcn.engine import Engine

    own = set(inspect.signature(Engine.__init__).parameters) - {"self", "weights", "device", "model"}
    return {k: v for k, v in options.items() if k in own}, {k: v for k, v in options.items() if k not in own}


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def check_inpaint_options(engine: Any, options: dict[str, Any]) -> None:
    """Fail now, not after the first window, on an option :meth:`Engine.inpaint` does not take."""
    import numpy as np

    with _quiet("combcn.engine"):  # the empty matte's warning is expected here
        engine.inpaint(np.zeros((1, 16, 16, 3), np.float32), np.zeros((1, 16, 16), np.float32), **options)


def _settings(args: argparse.Namespace) -> None:
    """Apply --quick and check the numeric options (ConfigError on a bad one)."""
    if args.quick:
        args.window, args.windows_per_clip = 16, 1
        args.max_windows = args.max_windows or 6
    if args.window < 2:
        raise ConfigError(f"--window must be >= 2; got {args.window}")
    if args.size is not None:  # the old spelling of a square resolution
        args.resolution = str(args.size)


def _add_model(
    args: argparse.Namespace,
    name: str,
    weights: str | None,
    device: Any,
    engine_options: dict[str, Any],
    methods: dict[str, dict[str, Any]],
    descriptions: dict[str, dict[str, str]],
) -> Any:
    """Load one model and add it to every resolution's methods (directly at a square size, through
    an :class:`combcn.engine.Engine` at native); returns its :class:`combcn.model.ModelConfig`."""
    from combcn.engine import Engine
    from combcn.eval.evaluate import engine_method, model_method
    from combcn.model import load_model

    squares = [r for r in methods if r != "native"]
    model: Any = load_model(weights, device=device) if squares else None
    config: Any = None
    if "native" in methods:
        engine_ctor, inpaint_options = split_engine_options(engine_options)
        engine = Engine(weights, device, **engine_ctor)
        check_inpaint_options(engine, inpaint_options)
        methods["native"][name] = engine_method(
            engine, name, inpaint_options, reference_middle=args.reference_middle
        )
        config = model.config if model is not None else engine.model.config
        text = f"{config.variant}, width {config.width:g}, {config.conv} conv; through Engine.inpaint"
        if args.reference_middle:
            text += ", given the true middle frame as a reference"
        descriptions["native"][name] = text
    for resolution in squares:
        config = model.config
        size = int(resolution)
        methods[resolution][name] = model_method(
            model, name, precision=args.precision, with_3dcn=name == args.name
        )
        descriptions[resolution][name] = f"{config.variant}, width {config.width:g}, {config.conv} conv"
        if name == args.name and config.variant == "combined":
            descriptions[resolution][f"3dcn@{size // 2}"] = (
                f"3DCN alone: {name}'s own 3DCN output, at half size"
            )
            descriptions[resolution][f"3dcn↑{size}"] = (
                f"3DCN alone: {name}'s 3DCN output upsampled bilinearly"
            )
    return config


def _group_title(resolution: str, family: str) -> str:
    where = "native resolution" if resolution == "native" else f"{resolution}x{resolution} centre square"
    return f"{where}, {family} holes"


def run(args: argparse.Namespace) -> int:
    import torch

    from combcn.engine import resolve_device
    from combcn.eval.baselines import BASELINES
    from combcn.eval.clips import (
        HOLE_MAX_FRACTION,
        HOLE_MIN_FRACTION,
        iter_windows,
        list_frames,
        parse_families,
        parse_resolutions,
        plan_windows,
        read_split,
        resolve_clips,
        silhouette_tracks,
    )
    from combcn.eval.evaluate import (
        METRICS,
        Method,
        against_baselines,
        baseline_method,
        evaluate_groups,
        example_sheet,
        expected_table,
        gaps_table,
        markdown_table,
        paired_gaps,
        per_clip_table,
    )

    _settings(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    resolutions = parse_resolutions(args.resolution)
    families = parse_families(args.holes)
    chosen = args.baselines.strip()
    baselines = [] if chosen.lower() == "none" else [b.strip() for b in chosen.split(",")]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        known = ", ".join(BASELINES)
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; known: {known}, or 'none'")
    compare = _parse_compare(args.compare or [])
    engine_options = parse_engine_options(args.engine_option or [])
    if args.no_model and not baselines:
        raise ConfigError("nothing to evaluate: --no-model and --baselines none")
    if args.reference_middle and ("native" not in resolutions or args.no_model):
        raise ConfigError(
            "--reference-middle gives the engine a reference frame: it needs a model at --resolution native"
        )
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
    plan = plan_windows(clip_dirs, window=args.window, per_clip=args.windows_per_clip)
    if args.max_windows and len(plan) > args.max_windows:
        plan = plan[: args.max_windows]
    tracks = []
    if "objects" in families:
        if args.silhouettes:
            sources = resolve_clips(args.silhouettes, data)
        else:  # every clip that has masks: those under --data, and the evaluated ones
            pool = [d for d in sorted(data.iterdir()) if d.is_dir()] if data and data.is_dir() else []
            sources = list(dict.fromkeys(pool + clip_dirs))
        tracks = silhouette_tracks([d for d in sources if (d / "masks").is_dir() and list_frames(d)])
        log.info("%d object silhouette track(s) from %d clip(s)", len(tracks), len({t.clip for t in tracks}))
    log.info(
        "%d clip(s), %d window(s) of %d frames; resolutions %s; holes %s",
        len(clip_dirs),
        len(plan),
        args.window,
        ", ".join(resolutions),
        ", ".join(families),
    )

    methods: dict[str, dict[str, Method]] = {r: {} for r in resolutions}
    descriptions: dict[str, dict[str, str]] = {r: {} for r in resolutions}
    models: dict[str, Any] = {}
    model_rows: list[str] = []
    if not args.no_model:
        from combcn.model import DEFAULT_WEIGHTS

        for name, weights in {args.name: args.weights, **compare}.items():
            config = _add_model(args, name, weights, device, engine_options, methods, descriptions)
            path = Path(weights) if weights else DEFAULT_WEIGHTS
            models[name] = {
                "weights": str(path) if path.is_file() else "random initialisation (no shipped weights)",
                "shipped_default": weights is None,
                "config": config.to_dict(),
            }
            model_rows.append(name)
    for resolution in resolutions:
        for b in baselines:
            methods[resolution][b] = baseline_method(b)

    windows = iter_windows(
        plan, window=args.window, resolutions=resolutions, families=families, seed=args.seed, tracks=tracks
    )
    total = len(plan) * len(resolutions) * len(families)
    results = evaluate_groups(
        windows,
        methods.__getitem__,
        total=total,
        progress=args.progress == "bar",
        keep_examples=args.examples,
    )
    command = command_line(args)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description()
    clip_names = [d.name for d in clip_dirs]
    native_note = (
        "; at native resolution the models run through the engine (`Engine.inpaint`, options: "
        + ", ".join(f"{k}={v}" for k, v in {"shaper": "none", **engine_options}.items())
        + ")"
        if "native" in resolutions and not args.no_model
        else ""
    )
    md = (
        f"# combcn eval\n\n"
        f"- command: `{command}`\n- date: {when}\n- machine: {machine}\n"
        f"- clips ({len(clip_names)}): {', '.join(clip_names)}\n"
        f"- windows: {len(plan)} x {args.window} frames, each at {', '.join(resolutions)} with "
        f"{', '.join(families)} holes, seed {args.seed}{native_note}\n"
        f"- holes: box = one box, sides {HOLE_MIN_FRACTION:g}-{HOLE_MAX_FRACTION:g} of the frame's, fixed "
        "(paper §4); strokes = brush strokes carried along a smooth path across the window; objects = a "
        "real object's silhouette sequence from another clip's masks (or this clip's at other frames), "
        "scaled and placed on the window; drift = the training strokes that drift and wobble\n"
        "- metrics: per window, then the mean over windows; MAE and temporal error on a 0-255 scale, "
        "averaged over RGB; detail = sum of |Laplacian| of the grey (Rec. 709) output over hole pixels "
        "divided by the truth's (1 = as sharp as the truth; a blur scores well below); rows `3dcn@N` are "
        "scored at half size against the area-downsampled truth\n"
    )
    printed = ""
    groups_json = []
    for (resolution, family), result in results.items():
        summary = result.summary()
        table = markdown_table(summary, descriptions[resolution])
        title = _group_title(resolution, family)
        section = f"\n## {title}\n\n{table}"
        versus = against_baselines(summary, model_rows, baselines)
        if versus:
            section += f"\nAgainst the best baseline:\n\n{versus}"
        printed += section
        for key in ("hole_mae", "temporal_error", "detail"):
            section += f"\n### {METRICS[key][0]} per clip\n\n{per_clip_table(result, key)}"
        said = expected_table(result)
        if said:
            section += (
                f"\n### The error the engine expected (probe holes) against the error measured\n\n{said}"
            )
        # Is a gap real? Every row against the main model, paired over the same windows.
        gaps: dict[str, dict[str, dict[str, float]]] = {}
        if args.name in result.rows and len(result.windows) > 1:
            for key in ("hole_mae", "temporal_error"):
                gaps[key] = paired_gaps(result, args.name, key)
                if gaps[key]:
                    section += f"\n### {METRICS[key][0]}: each method minus {args.name}, window by window\n\n"
                    section += gaps_table(gaps[key], args.name, key)
        md += section
        groups_json.append(
            {
                "resolution": resolution,
                "holes": family,
                "summary": summary,
                "gaps_to_model": gaps,
                "seconds": result.seconds,
                "windows": result.windows,
            }
        )
    print(printed.lstrip("\n"), end="")
    payload = {
        "command": command,
        "date": when,
        "machine": machine,
        "settings": {
            "window": args.window,
            "resolutions": resolutions,
            "holes": families,
            "windows_per_clip": args.windows_per_clip,
            "windows": len(plan),
            "seed": args.seed,
            "engine_options": {"shaper": "none", **engine_options},
            "precision": args.precision,
            "device": args.device,
        },
        "clips": clip_names,
        "models": models,
        "baselines": {b: BASELINES[b][1] for b in baselines},
        "silhouette_tracks": len(tracks),
        "groups": groups_json,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "results.md", md)
    _write_atomic(out_dir / "results.json", json.dumps(payload, indent=1, default=float) + "\n")
    log.info("wrote %s and %s", out_dir / "results.md", out_dir / "results.json")
    if args.examples:
        for (resolution, family), result in results.items():
            name = "examples.png" if len(results) == 1 else f"examples_{resolution}_{family}.png"
            _write_sheet(out_dir / name, example_sheet(result, tile_height=180))
            log.info(
                "wrote %s (middle frame of %d window(s); columns: %s)",
                out_dir / name,
                len(result.examples),
                ", ".join(result.examples[0]),
            )
    return 0


def _write_sheet(path: Path, sheet: Any) -> None:
    import cv2

    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OutputError("cannot write the example sheet", path=path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
        "-R",
        "--resolution",
        default="128",
        help="comma-separated: a number N scores the largest centred square resized to NxN with the model "
        "run directly (the paper's protocol, 128); 'native' scores each window at the clip's own size, no "
        "crop, no resize, with the model run through the engine as on a user's plate. E.g. 128,native",
    )
    p.add_argument(
        "-S", "--size", type=options.integer(16, 8192), default=None, help=argparse.SUPPRESS
    )  # old form of -R N
    p.add_argument(
        "-H",
        "--holes",
        "--hole",
        default="box",
        help="comma-separated hole families: box (the paper's: one box, sides 0.375-0.5 of the frame, "
        "fixed), strokes (brush strokes moving along a path across the window), objects (real object "
        "silhouettes moving along their tracks, from clips' masks/), drift (the training strokes)",
    )
    p.add_argument(
        "--silhouettes",
        action="append",
        metavar="CLIP",
        help="clip (name under --data, or folder) whose masks/ give the 'objects' silhouettes (repeatable); "
        "default: every clip with masks/ under --data and among the evaluated clips. A window never gets "
        "a silhouette of its own frames",
    )
    p.add_argument(
        "-e",
        "--engine-option",
        action="append",
        metavar="KEY=VALUE",
        help="option of the engine at native resolution (repeatable), e.g. margin=0.75 or track=false; "
        "values are read as bool, int, float or text. shaper defaults to none: the clips are "
        "display-referred JPG/PNG frames, sRGB-encoded in [0, 1], what the shipped weights were trained on",
    )
    p.add_argument(
        "-W", "--window", type=options.integer(2, 1024), default=32, help="frames per window (paper: 32)"
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
        help="stop after this many windows (0 = all); each is scored at every resolution and hole family",
    )
    p.add_argument(
        "-q",
        "--quick",
        action="store_true",
        help="a bounded run: 16-frame windows, one per clip, at most 6 (or --max-windows)",
    )
    p.add_argument("--seed", type=options.seed, default=0, help="seed of the holes")
    p.add_argument(
        "-p",
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="model arithmetic (bf16 autocast: faster on GPUs and on CPUs with AMX or AVX-512-bf16, "
        "far slower without them; fp32 is the reference)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the models (and the engine)")
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
        help="also write examples.png (examples_<resolution>_<holes>.png for several): the middle frame of "
        "the first N windows, every method side by side",
    )
    p.add_argument(
        "--reference-middle",
        action="store_true",
        help="give the engine (at --resolution native) the true frame at each window's middle as a "
        "reference frame, as an artist's cleaned frame; the baselines get nothing (default: off)",
    )
    p.add_argument("--progress", choices=["bar", "none"], default="bar", help="progress display")
    p.set_defaults(func=run)
