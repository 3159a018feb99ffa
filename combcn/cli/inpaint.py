"""``combcn inpaint``: inpaint an image sequence (or movie) under a matte and write the result.

Progress goes to stderr as a bar (``--progress bar``), or to stdout as one JSON object per line
(``--progress json``, for host adapters and farms)::

    {"event": "frame", "frame": 1001, "done": 3, "total": 10}
    {"event": "done", "written": 10, "skipped": 0}
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from combcn.cli import options
from combcn.errors import ConfigError

log = logging.getLogger("combcn.cli.inpaint")

EPILOG = """\
examples:
  combcn inpaint plate.####.exr --matte roto.####.exr -o clean/plate.####.exr
  combcn inpaint plate.%04d.exr --matte-channel matte.A -o clean/plate.%04d.exr --frames 1001-1050
  combcn inpaint shot.mov --matte shot_matte.####.png -o clean/shot.####.png --shaper none
  combcn inpaint plate.####.exr -m roto.####.exr -o clean/plate.####.exr --reference 1012=paint.1012.exr

Frames outside --frames are read for temporal context but never written, so a farm can split a shot
into chunks; with --context unset, chunked renders are bit-identical to a single render. Outputs are
written atomically (temp file + rename); exit code 0 means every requested frame was written. SIGTERM
and Ctrl-C stop cleanly (exit 143 and 130): the frame in flight is dropped, the frames written are
complete, and --resume renders the rest. A lock file beside the outputs keeps two renders of the
same frames from running at once; renders of different --frames chunks run together.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "inpaint",
        help="inpaint an image sequence (or movie) under a matte and write the result",
        description="Fill what the matte marks in an image sequence (EXR, DPX, TIFF, PNG, JPG) or movie, "
        "stably across frames, and write a sequence in the input's format and pixel type. Pixels outside "
        "the (feathered) matte, other channels, windows and metadata are copied bit-exact.",
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=32),
        epilog=EPILOG,
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="plate: plate.####.exr, plate.%%04d.exr, plate.@@@@.exr, one image, or a movie (mov/mp4)",
    )
    p.add_argument(
        "-m",
        "--matte",
        metavar="MATTE",
        default=None,
        help="matte sequence or file, 1 = remove (default: the plate's alpha)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUTPUT",
        required=True,
        help="output pattern, e.g. clean/plate.####.exr (frame numbers are kept)",
    )
    p.add_argument(
        "-f",
        "--frames",
        metavar="SET",
        type=options.frame_set,
        default=None,
        help="frames to write: 1001-1100, 1001-1100x2, 1001,1005 (default: all on disk)",
    )
    p.add_argument(
        "-c",
        "--matte-channel",
        metavar="NAME",
        default=None,
        help="matte channel (default: A, else Y, R or the first; on the plate itself: its alpha)",
    )
    p.add_argument(
        "--part",
        metavar="NAME|N",
        default=None,
        help="multi-part EXR plate: part name or index (default: the first)",
    )
    p.add_argument(
        "--matte-part", metavar="NAME|N", default=None, help="multi-part EXR matte: part name or index"
    )
    p.add_argument("-i", "--invert", action="store_true", help="invert the matte (for mattes where 1 = keep)")
    p.add_argument(
        "-t",
        "--threshold",
        metavar="X",
        type=options.matte_threshold,
        default=0.5,
        help="matte values above X are removed, 0-1 (default: 0.5)",
    )
    p.add_argument(
        "-e",
        "--expand",
        metavar="PX",
        type=options.matte_expand,
        default=0,
        help=f"grow the hole by PX pixels, negative erodes, at most {options.MAX_MATTE_PX} (default: 0)",
    )
    p.add_argument(
        "-F",
        "--feather",
        metavar="PX",
        type=options.matte_feather,
        default=0.0,
        help=f"soft edge of PX pixels outside the hole, 0-{options.MAX_MATTE_PX} (default: 0)",
    )
    p.add_argument(
        "-s",
        "--shaper",
        metavar="NAME",
        default=None,
        help="colour shaper into the model's range: acescct, log, srgb, none "
        "(default: acescct for float plates, none for 8/16-bit files and movies)",
    )
    p.add_argument(
        "-C",
        "--context",
        metavar="N",
        type=options.integer(0, options.MAX_CONTEXT),
        default=None,
        help="at most N frames read beyond --frames for temporal context (default: what the window "
        "grid needs, up to one model window; then chunks equal a single render)",
    )
    p.add_argument(
        "--overlap",
        metavar="N",
        type=options.integer(0, options.MODEL_WINDOW - 1),
        default=None,
        help=f"frames shared by consecutive temporal windows, cross-faded, 0-{options.MODEL_WINDOW - 1} "
        "(default: a quarter of the model's window, 8)",
    )
    p.add_argument(
        "--no-propagate",
        dest="propagate",
        action="store_false",
        help="let the network fill every hole pixel at its working size, instead of first carrying in, "
        "at plate resolution, what other frames show (default: propagate)",
    )
    p.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="fill what no frame shows with the network without measuring it first; by default holes of "
        "the matte's shape are cut into known pixels beside it, the network and Telea are scored there, "
        "the better fills, and its expected error is logged and written to each output's metadata as "
        "combcn:expectedError (default: probe)",
    )
    p.add_argument(
        "--reach",
        metavar="N",
        type=int,
        default=0,
        help="also search N frames beyond each 32-frame window for what the hole hides (read, never "
        "written; chunked renders still equal a single render) (default: 0)",
    )
    p.add_argument(
        "-R",
        "--reference",
        metavar="FRAME=FILE|PATTERN",
        action="append",
        default=None,
        help="a frame the artist cleaned (the plate's frame with the hole painted) or a clean plate, "
        "placed at FRAME: its pixels inside that frame's matte are carried along the motion to the "
        "other frames, ahead of synthesis. Repeatable; a pattern (clean.####.exr) gives every frame "
        "on disk. Chunked renders read each reference they need (default: none)",
    )
    p.add_argument(
        "--reference-wins",
        action="store_true",
        help="the reference wins wherever it reaches (default: a frame that shows the point itself, "
        "nearer in time than the reference, wins)",
    )
    p.add_argument(
        "--qc",
        action="store_true",
        help="add channels fill.revealed (1 where the value came from another frame, 2 from a "
        "reference frame, 0 where the network made it) and fill.offset (the frame offset it came "
        "from) to each output EXR",
    )
    p.add_argument(
        "--margin",
        metavar="X",
        type=options.number(0.0, options.MAX_MARGIN),
        default=0.5,
        help=f"spatial context around the hole, as a fraction of its size, 0-{options.MAX_MARGIN:g} "
        "(default: 0.5)",
    )
    p.add_argument(
        "-d",
        "--device",
        metavar="DEV",
        default=None,
        help="cpu or cuda (default: cuda when available, else cpu)",
    )
    p.add_argument(
        "-j",
        "--threads",
        metavar="N",
        type=options.threads,
        default=None,
        help=(
            "CPU threads for torch, OpenCV and OpenImageIO, 1 or more; propagation fills this many "
            "frames at once (default: all cores)"
        ),
    )
    p.add_argument(
        "-w",
        "--weights",
        metavar="PATH",
        default=None,
        help="weights file (default: the shipped weights, or random init with a warning)",
    )
    p.add_argument(
        "-r",
        "--resume",
        action="store_true",
        help="skip frames whose output already exists and render the rest",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output frames")
    p.add_argument(
        "--no-track",
        dest="track",
        action="store_const",
        const=False,
        default=None,
        help="use the locked-off clean plate even where the camera moves (default: as the weights "
        "say; the shipped weights track the camera and fall back to the locked-off plate where the "
        "track does not fit the shot)",
    )
    p.add_argument(
        "--compression",
        metavar="NAME",
        default=None,
        help="output compression (default: as the input), e.g. zip, piz, dwaa:45",
    )
    p.add_argument(
        "--pixel-type",
        metavar="TYPE",
        default=None,
        choices=["half", "float", "uint8", "uint16"],
        help="output pixel type: half, float, uint8, uint16 (default: as the input)",
    )
    p.add_argument(
        "--lossy-ok",
        action="store_true",
        help="accept an output format or compression that changes pixels outside the matte (JPEG, "
        "EXR dwaa/dwab/b44/b44a, lossy WebP, ...); refused otherwise",
    )
    p.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip the pre-pass that reads every frame for NaN/Inf and full mattes",
    )
    p.add_argument(
        "-p",
        "--progress",
        choices=["bar", "json", "none"],
        default="bar",
        help="progress as a bar on stderr, JSON lines on stdout, or none (default: bar)",
    )
    p.set_defaults(func=run)


def _part(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def run(args: argparse.Namespace) -> int:
    from combcn.engine.sequence import render_sequence

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; pick one")
    bar: Any = None
    progress_mode = args.progress

    def progress(event: dict[str, Any]) -> None:
        nonlocal bar
        if progress_mode == "bar" and bar is None:
            from tqdm import tqdm

            bar = tqdm(total=event["total"], unit="frame", desc="combcn inpaint", file=sys.stderr)
        if event["event"] != "frame":
            return  # the JSON stream carries only frame and done events (the host adapters' contract)
        if progress_mode == "json":
            print(json.dumps(event), flush=True)
        elif bar is not None:
            bar.update(1)

    try:
        report = render_sequence(
            args.source,
            args.matte,
            args.output,
            args.frames,
            matte_channel=args.matte_channel,
            part=_part(args.part),
            matte_part=_part(args.matte_part),
            shaper=args.shaper,
            resume=args.resume,
            overwrite=args.overwrite,
            compression=args.compression,
            pixel_type=args.pixel_type,
            check=args.check,
            weights=args.weights,
            device=args.device,
            threads=args.threads,
            track=args.track,
            progress=progress,
            threshold=args.threshold,
            invert=args.invert,
            expand=args.expand,
            feather=args.feather,
            context=args.context,
            overlap=args.overlap,
            margin=args.margin,
            propagate=args.propagate,
            reach=args.reach,
            probe=args.probe,
            qc=args.qc,
            lossy_ok=args.lossy_ok,
            references=args.reference,
            reference_wins=args.reference_wins,
        )
    finally:
        if bar is not None:
            bar.close()
    if progress_mode == "json":
        print(
            json.dumps({"event": "done", "written": len(report.written), "skipped": len(report.skipped)}),
            flush=True,
        )
    log.info("%d frame(s) written, %d skipped -> %s", len(report.written), len(report.skipped), args.output)
    return 0
