"""Inpaint a sequence on disk: validate everything first, then stream windows and write frames.

Order of work (nothing is written until every check has passed):

1. resolve the plate (image sequence or movie), matte, channels and output pattern;
2. check outputs: not the input, folder writable, format and compression bit-exact outside the matte
   (unless ``lossy_ok``), existing frames refused unless ``resume`` (skip those that read back
   complete, with the size, channels and pixel type this render writes) or ``overwrite``;
3. plan the temporal windows that touch the frames to write (context frames outside ``frames`` are
   read, never written) and check every frame they read: present, same size, matte aligned, RGB
   finite, matte not covering a whole frame (the first window's worth of frames stays decoded for the
   render, with each frame's colour range outside its hole for the guard);
4. take the output lock (one render per output pattern and frame set, see
   :class:`~combcn.engine.guards.OutputLock`) and render window by window; each fill passes the
   :class:`~combcn.engine.guards.FillGuard` and each frame is written atomically (temp file + rename)
   as soon as it is final, with every channel, window, pixel type and metadata of its input.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import platform
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio

from combcn.engine.core import (
    Box,
    FrameFill,
    References,
    RenderSettings,
    composite,
    needed_windows,
    reference_span,
    render_windows,
)
from combcn.engine.engine import Engine, matte_options, render_settings
from combcn.engine.guards import (
    FillGuard,
    OutputLock,
    Outside,
    channel_range,
    lossy_reason,
    outside_range,
    remove_stale_locks,
)
from combcn.engine.matte import MatteOptions, bbox, shape_matte
from combcn.engine.propagate import PropagationSettings, propagation_settings
from combcn.engine.shaper import default_shaper_for, get_shaper
from combcn.errors import ConfigError, InputError, OutputError
from combcn.io.frames import FrameSet
from combcn.io.image import (
    ImageData,
    channel_types,
    check_writable_folder,
    stale_temp_files,
    verify_image,
    write_image_atomic,
)
from combcn.io.plate import (
    Plate,
    align_matte,
    check_finite,
    matte_channel_index,
    rgb_channels,
    rgb_of,
    to_unit,
    windows_of,
)
from combcn.io.sequence import SequencePattern

log = logging.getLogger("combcn.engine")

ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass
class Report:
    """What a sequence render did.

    Attributes:
        output: the output pattern.
        written: frame numbers written, in order.
        skipped: frame numbers skipped because complete outputs existed (``resume``).
        seconds: wall time of the whole call.
        warnings: warnings raised on the way (also logged).
    """

    output: str
    written: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(1, len(self.written))

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "written": self.written,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "seconds_per_frame": round(self.seconds_per_frame, 3),
            "warnings": self.warnings,
        }


def _check_output_pattern(
    output: str, plate: Plate, matte: Plate | None, targets: list[int]
) -> SequencePattern:
    out = SequencePattern(output)
    if not out.has_token and len(targets) > 1:
        raise ConfigError(
            f"output {output!r} has no frame token but {len(targets)} frames are to be written; "
            "use a pattern like out.####.exr"
        )
    for src in (plate, matte):
        if src is None:
            continue
        same = (
            Path(src.path).resolve() == Path(output).resolve()
            if src.pattern is None
            else src.pattern.same_files_as(out)
            or any(Path(src.file(f)).resolve() == out.path(f).resolve() for f in targets[:1])
        )
        if same:
            raise OutputError(
                f"the output pattern names the {src.what} files; combcn never writes over its input. "
                "Give another -o",
                path=output,
            )
    return out


def _missing_in(frames: Sequence[int], step: int) -> list[int]:
    present = set(frames)
    return [f for f in range(frames[0], frames[-1] + 1, step) if f not in present]


@dataclass(frozen=True)
class SequenceOptions:
    """How a sequence is read and written (everything but the model and the window layout).

    Attributes:
        matte_channel: channel of the matte (default A, Y, R or the first; on the plate, its alpha).
        part, matte_part: multi-part EXR part (index or name) of the plate / matte.
        shaper: ``acescct`` / ``log`` / ``srgb`` / ``none``; None = the default for the plate's type.
        resume: skip frames whose output already exists and reads back complete, as this render
            would write it (size, channels, pixel type); render the others again.
        overwrite: replace existing outputs.
        compression, pixel_type: output overrides (default: as the input).
        check: read every frame before rendering to check NaN/Inf and full mattes (recommended).
        qc: add ``fill.revealed`` and ``fill.offset`` channels to each output (EXR only).
        lossy_ok: accept an output format or compression that changes pixels outside the matte
            (JPEG, DWAA/DWAB/B44 EXR, ...); refused otherwise.
        references: frames the artist filled (the plate's frame with the hole painted, or a clean
            plate placed at a frame): ``{frame number: file}``, a pattern of cleaned frames
            (``clean.####.exr``: every frame on disk), ``"1012=clean.exr"``, or a list of these. Only
            the RGB inside that frame's matte is used; it is carried along the motion to the other
            frames, ahead of synthesis.
        reference_wins: the reference wins wherever it reaches (default: a frame that shows the
            point itself, nearer in time than the reference, wins).
    """

    matte_channel: str | None = None
    part: int | str | None = None
    matte_part: int | str | None = None
    shaper: str | None = None
    resume: bool = False
    overwrite: bool = False
    compression: str | None = None
    pixel_type: str | None = None
    check: bool = True
    qc: bool = False
    lossy_ok: bool = False
    references: Any = None
    reference_wins: bool = False


@dataclass
class Plan:
    """What a render will read and write, decided before any pixel is read.

    Attributes:
        plate, matte: the opened inputs (``matte`` None: the plate's own channel).
        out: the output pattern.
        seq: every plate frame number on disk (positions index into it).
        to_write: frame numbers to render; ``skipped``: complete outputs kept (resume).
        read_frames: every frame number a window reads (targets plus context).
        rgb, m_index: colour channel indices of the plate, matte channel index.
        first_spec: the plate's spec (every frame read must match its windows and channels).
        shaper: the shaper's name.
        windows: the number of temporal windows that will run.
        warnings: warnings raised while planning (also logged).
        references: per reference frame number, where its image is (its reader and the frame to read).
    """

    plate: Plate
    matte: Plate | None
    out: SequencePattern
    seq: list[int]
    to_write: list[int]
    skipped: list[int]
    read_frames: list[int]
    rgb: list[int]
    m_index: int
    first_spec: oiio.ImageSpec
    shaper: str
    windows: int
    warnings: list[str] = field(default_factory=list)
    references: dict[int, tuple[Plate, int]] = field(default_factory=dict)

    @property
    def matte_source(self) -> Plate:
        return self.matte if self.matte is not None else self.plate

    def alpha(self, data: ImageData) -> np.ndarray:
        """The raw matte values of an opened matte frame, on the plate's data window."""
        return align_matte(to_unit(data.pixels[..., self.m_index]), data.spec, self.first_spec)


def _targets(plate: Plate, frames: str | FrameSet | Sequence[int] | None) -> list[int]:
    if frames is None:
        targets = list(plate.frames)
    elif isinstance(frames, str):
        targets = FrameSet.parse(frames).frames
    else:
        targets = FrameSet(frames).frames
    if not targets:
        raise ConfigError("no frames to write")
    missing = [f for f in targets if f not in set(plate.frames)]
    if missing:
        raise InputError(
            f"plate frame(s) missing: {FrameSet(missing)}; render or copy them, or narrow --frames",
            path=plate.file(missing[0]),
            frame=missing[0],
        )
    return targets


def _existing_outputs(
    out: SequencePattern,
    targets: list[int],
    opts: SequenceOptions,
    expected: oiio.ImageSpec,
    types: list[str] | None,
    warnings: list[str],
) -> list[int]:
    """Frames whose complete output exists and is kept (``resume``); refuse existing ones otherwise.

    Args:
        expected: the spec this render writes (windows, channel names).
        types: the channel types the output format stores (None: unknown, not checked).
        warnings: gets one line per existing frame that is rendered again.
    """
    existing = [f for f in targets if out.path(f).exists()]
    if not existing:
        return []
    if not opts.resume:
        if opts.overwrite:
            return []
        raise OutputError(
            f"{len(existing)} output frame(s) exist ({FrameSet(existing)}); use --resume to keep them and "
            "render the rest, or --overwrite to replace them",
            path=out.path(existing[0]),
        )
    creator = oiio.ImageOutput.create(str(out.path(existing[0])))
    part = opts.part if creator is not None and creator.supports("multiimage") else None
    kept = []
    for f in existing:
        why = verify_image(out.path(f), expected, part, types=types)
        if why is None:
            kept.append(f)
            continue
        message = (
            f"{out.path(f)}: frame {f}: existing output is incomplete or not what this render writes "
            f"({why}); rendering it again"
        )
        log.warning(message)
        warnings.append(message)
    return kept


def _check_lossless(
    out: SequencePattern, spec: oiio.ImageSpec, opts: SequenceOptions, warnings: list[str]
) -> list[str] | None:
    """Refuse (unless ``lossy_ok``) an output that would change pixels outside the matte.

    Returns:
        the channel types the output format stores (None: unknown).
    """
    reason, stored = lossy_reason(out, spec, compression=opts.compression, pixel_type=opts.pixel_type)
    if reason is not None:
        if not opts.lossy_ok:
            raise OutputError(f"{reason}, or pass --lossy-ok to accept it", path=str(out))
        message = f"{out}: {reason} (accepted with --lossy-ok)"
        log.warning(message)
        warnings.append(message)
    return None if stored is None else channel_types(stored)


_NUMBERED = re.compile(r"^(-?\d+)=(.+)$")


def _reference_files(given: Any, plate: Plate) -> dict[int, tuple[Plate, int]]:
    """Where each reference frame's image is: ``{frame number: file}``, ``"FRAME=FILE"``, a pattern of
    cleaned frames (every frame on disk), or a list of these.

    Raises:
        InputError: a reference without a frame number, of a frame the plate does not have, or one
            that cannot be found; ConfigError: a frame given twice or a value of another kind.
    """
    if given is None:
        return {}
    items = list(given.items()) if isinstance(given, dict) else None
    if items is None:
        items = []
        for entry in given if isinstance(given, list | tuple) else [given]:
            if isinstance(entry, dict):
                items.extend(entry.items())
            elif isinstance(entry, str | Path):
                numbered = _NUMBERED.match(str(entry))
                if numbered:
                    items.append((int(numbered.group(1)), numbered.group(2)))
                else:
                    items.append((None, entry))
            else:
                raise ConfigError(f"a reference is a file with its frame number, or a pattern; got {entry!r}")
    out: dict[int, tuple[Plate, int]] = {}

    def add(frame: int, reader: Plate) -> None:
        if frame in out:
            raise ConfigError(
                f"frame {frame} is given two references ({out[frame][0].file(frame)} and "
                f"{reader.file(frame)}); give one"
            )
        if frame not in set(plate.frames):
            raise InputError(
                f"the reference is for frame {frame}, which the plate does not have "
                f"({FrameSet(plate.frames)}); number it as the plate frame it cleans",
                path=reader.file(frame),
                frame=frame,
            )
        out[frame] = (reader, frame)

    for frame, path in items:
        if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int | np.integer)):
            raise ConfigError(f"a reference's frame number must be a whole number, got {frame!r}")
        if frame is not None:
            reader = Plate(path, what="reference")
            if reader.pattern is not None and reader.pattern.has_token:
                reader_frames = reader.frames
                if int(frame) not in reader_frames:
                    raise InputError(
                        "the reference pattern has no file for this frame", path=reader.file(int(frame))
                    )
            add(int(frame), reader)
            continue
        if not SequencePattern(path).has_token:
            raise InputError(
                "the reference has no frame number; give it as FRAME=FILE (e.g. 1012=clean.1012.exr) "
                "or as a pattern of cleaned frames (clean.####.exr)",
                path=path,
            )
        reader = Plate(path, what="reference")
        for f in reader.frames:
            add(f, reader)
    return out


def load_references(plan: Plan, wins: bool = False) -> References | None:
    """Read every reference once (RGB, on the plate's data window): display window equal to the plate's,
    RGB finite.

    Raises:
        InputError: with the reference's file and frame.
    """
    if not plan.references:
        return None
    positions = {f: i for i, f in enumerate(plan.seq)}
    arrays: dict[int, np.ndarray] = {}
    for frame, (reader, number) in sorted(plan.references.items()):
        data = reader.read(number)
        path = reader.file(number)
        if windows_of(data.spec)[1] != windows_of(plan.first_spec)[1]:
            raise InputError(
                f"the reference is {data.spec.full_width}x{data.spec.full_height} but the plate is "
                f"{plan.first_spec.full_width}x{plan.first_spec.full_height}; give the plate's frame with "
                "the hole painted, at the plate's resolution",
                path=path,
                frame=frame,
            )
        channels = rgb_channels(data.spec, path) if data.spec.nchannels >= 3 else [0, 0, 0]
        rgb = np.stack(
            [align_matte(to_unit(data.pixels[..., c]), data.spec, plan.first_spec) for c in channels], -1
        )
        if not np.isfinite(rgb).all():
            raise InputError(
                "the reference has NaN or Inf pixels in R, G or B; fix them first", path=path, frame=frame
            )
        arrays[positions[frame]] = rgb
    return References(
        tuple(sorted(arrays)),
        lambda p, b: arrays[p][b[0] : b[1], b[2] : b[3]].copy(),
        bool(wins),
    )


def plan(
    source: str | Path,
    matte: str | Path | None,
    output: str | Path,
    frames: str | FrameSet | Sequence[int] | None,
    opts: SequenceOptions,
    *,
    window: int,
    settings: RenderSettings,
    reach: int = 0,
) -> Plan:
    """Resolve inputs, outputs and the frames to read; headers only (no plate pixels; with ``resume``
    existing outputs are decoded to verify them, and a small probe tries the output format in a
    temporary folder). ``to_write`` empty: nothing to do.

    Raises:
        InputError, ConfigError, OutputError: with the file and frame, before anything is written.
    """
    plate = Plate(source, part=opts.part, what="plate")
    matte_src = Plate(matte, part=opts.matte_part, what="matte") if matte is not None else None
    targets = _targets(plate, frames)
    references = _reference_files(opts.references, plate)
    out = _check_output_pattern(str(output), plate, matte_src, targets)
    check_writable_folder(out.path(targets[0]))
    written_spec = plate.header(targets[0])
    if opts.qc:
        written_spec = qc_spec(written_spec)
    warnings: list[str] = []
    types = _check_lossless(out, written_spec, opts, warnings)
    skipped = _existing_outputs(out, targets, opts, written_spec, types, warnings)
    to_write = [f for f in targets if f not in set(skipped)]
    seq = plate.frames
    first_spec = plate.header(to_write[0] if to_write else targets[0])
    rgb = rgb_channels(first_spec, plate.file(targets[0]))
    if not to_write:
        return Plan(plate, matte_src, out, seq, [], skipped, [], rgb, 0, first_spec, "none", 0, warnings)
    positions = {f: i for i, f in enumerate(seq)}
    windows, (first, last) = needed_windows(len(seq), [positions[f] for f in to_write], window, settings)
    first, last = max(0, first - reach), min(len(seq), last + reach)
    for w in windows:  # each window also reads the nearest reference either side (core.reference_span)
        lo, hi = reference_span(
            [positions[f] for f in references], max(0, w.start - reach), min(len(seq), w.end + reach)
        )
        first, last = min(first, lo), max(last, hi)
    read_frames = seq[first:last]
    step = reduce(math.gcd, [b - a for a, b in zip(seq, seq[1:], strict=False)], 0) or 1
    gaps = _missing_in(read_frames, step)
    if gaps:
        raise InputError(
            f"plate frame(s) missing inside the sequence: {FrameSet(gaps)}; temporal windows need every "
            "frame. Render or copy them (or hold neighbours)",
            path=plate.file(gaps[0]),
            frame=gaps[0],
        )
    if matte_src is not None and matte_src.movie is None and not matte_src.static:
        no_matte = [f for f in read_frames if f not in set(matte_src.frames)]
        if no_matte:
            raise InputError(
                f"matte frame(s) missing: {FrameSet(no_matte)}; the matte needs every plate frame "
                "that is read (including context frames around --frames)",
                path=matte_src.file(no_matte[0]),
                frame=no_matte[0],
            )
    matte_of = matte_src if matte_src is not None else plate
    m_first = first_spec if matte_src is None else matte_src.header(read_frames[0])
    m_index = matte_channel_index(
        m_first, opts.matte_channel, matte_of.file(read_frames[0]), own_alpha=matte_src is None
    )
    stored = oiio.TypeDesc(first_spec.format).basetype in (oiio.FLOAT, oiio.HALF, oiio.DOUBLE)
    shaper = opts.shaper or default_shaper_for(
        np.float32 if stored else np.uint8, movie=plate.movie is not None
    )
    return Plan(
        plate,
        matte_src,
        out,
        seq,
        to_write,
        skipped,
        read_frames,
        rgb,
        m_index,
        first_spec,
        shaper,
        len(windows),
        warnings,
        references,
    )


def _check_plate_frame(plan: Plan, frame: int, spec: oiio.ImageSpec) -> None:
    if windows_of(spec) != windows_of(plan.first_spec) or list(spec.channelnames) != list(
        plan.first_spec.channelnames
    ):
        raise InputError(
            f"differs from frame {plan.read_frames[0]} (size/windows {windows_of(spec)} vs "
            f"{windows_of(plan.first_spec)}, or channels); every plate frame must have the same size "
            "and channels",
            path=plan.plate.file(frame),
            frame=frame,
        )


def _check_matte_frame(plan: Plan, frame: int, spec: oiio.ImageSpec) -> None:
    if plan.matte is None:
        return
    if windows_of(spec)[1] != windows_of(plan.first_spec)[1]:
        raise InputError(
            f"matte is {spec.full_width}x{spec.full_height} but the plate is "
            f"{plan.first_spec.full_width}x{plan.first_spec.full_height} (display windows differ); "
            "give a matte rendered at the plate's resolution",
            path=plan.matte.file(frame),
            frame=frame,
        )
    if plan.m_index >= spec.nchannels:
        raise InputError(
            "has fewer channels than the first matte frame", path=plan.matte.file(frame), frame=frame
        )


@dataclass
class Checked:
    """What the check pass read, kept for the render so that a frame is decoded once where memory allows.

    Attributes:
        any_hole: whether any frame read has a hole (True when pixels were not read: unknown).
        plates: the first frames read (up to ``keep``), opened as the render opens them (every part).
        alphas: those frames' compositing alpha: (its shape, the hole's box, the alpha in the box), the
            box None where the frame has no hole.
        outside: per frame with a hole, its colour's range outside the hole's box (for the
            :class:`~combcn.engine.guards.FillGuard`, which then scans the box alone).
    """

    any_hole: bool = True
    plates: dict[int, ImageData] = field(default_factory=dict)
    alphas: dict[int, tuple[tuple[int, int], Box | None, np.ndarray | None]] = field(default_factory=dict)
    outside: dict[int, Outside] = field(default_factory=dict)

    def alpha(self, frame: int) -> np.ndarray | None:
        """The kept alpha of ``frame`` as ndarray[H, W] float32 (given out once; None: not kept)."""
        kept = self.alphas.pop(frame, None)
        if kept is None:
            return None
        shape, box, inside = kept
        alpha = np.zeros(shape, np.float32)
        if box is not None and inside is not None:
            alpha[box[0] : box[1], box[2] : box[3]] = inside
        return alpha


def check(plan: Plan, m_opts: MatteOptions, *, pixels: bool, keep: int = 0) -> Checked:
    """Check every frame the render reads, each opened once: same size and channels, matte aligned
    and, with ``pixels``, RGB finite and the matte not covering a whole frame.

    Args:
        keep: how many of the first frames read to keep decoded for the render (with ``pixels``).

    Returns:
        what the render can use of what was read (:class:`Checked`).
    """
    checked = Checked(any_hole=not pixels)
    for i, f in enumerate(plan.read_frames):
        if not pixels:
            _check_plate_frame(plan, f, plan.plate.header(f) if plan.plate.movie is None else plan.first_spec)
            if plan.matte is not None and plan.matte.movie is None:
                _check_matte_frame(plan, f, plan.matte.header(f))
            continue
        data = plan.plate.read(f, all_parts=i < keep)
        _check_plate_frame(plan, f, data.spec)
        mdata = data if plan.matte is None else plan.matte.read(f)
        _check_matte_frame(plan, f, mdata.spec)
        alpha = shape_matte(plan.alpha(mdata), m_opts)
        box = bbox(alpha)
        outside = _colour_range(plan, f, data, box)
        if alpha.min() > 0:
            raise InputError(
                "the matte covers the whole frame: there is nothing left to fill from. Check the matte "
                "(--invert? --threshold?)",
                path=plan.matte_source.file(f),
                frame=f,
            )
        checked.any_hole |= box is not None
        if outside is not None:
            checked.outside[f] = outside
        if i < keep:
            checked.plates[f] = data
            inside = None if box is None else alpha[box[0] : box[1], box[2] : box[3]].copy()
            checked.alphas[f] = (alpha.shape, box, inside)
    return checked


def _colour_range(plan: Plan, frame: int, data: ImageData, box: Box | None) -> Outside | None:
    """Refuse a frame whose colour holds NaN or Inf; its colour's range outside ``box`` (None: no box).
    One pass over the frame: the range of every part is finite exactly when every pixel is."""
    if data.pixels.shape[-1] <= len(plan.rgb) + 1:  # every channel widened, as channels_to_unit does
        wide, colour = to_unit(data.pixels), plan.rgb
    else:
        wide, colour = rgb_of(data, plan.rgb), [0, 1, 2]
    if box is None:
        outside, ranges = None, [channel_range(wide)]
    else:
        outside = outside_range(wide, box)
        ranges = [channel_range(wide[box[0] : box[1], box[2] : box[3]])]
        ranges += [] if outside.span is None else [outside.span]
    check_finite(np.stack([r[i][colour] for r in ranges for i in (0, 1)]), plan.plate.file(frame), frame)
    if outside is None or outside.span is None:
        return outside
    return Outside(outside.box, (outside.span[0][colour], outside.span[1][colour]))


class _OpenFrames:
    """Plate frames opened once for the stream pass (every part, for writing back), kept while a
    window, its propagation reach or a pending write may still need them."""

    def __init__(self, plan: Plan, capacity: int, opened: dict[int, ImageData] | None = None):
        self.plan = plan
        self.capacity = max(2, capacity)
        self.frames: OrderedDict[int, ImageData] = OrderedDict()
        #: frames the check pass decoded, not yet asked for: they join ``frames`` when first asked for,
        #: as if read then (kept in ``frames`` from the start, the ones the first window does not touch
        #: would be the first let go)
        self.pending = dict(opened or {})

    def get(self, frame: int) -> ImageData:
        data = self.frames.get(frame)
        if data is None:
            data = self.pending.pop(frame, None)
            if data is None:
                data = self.plan.plate.read(frame, all_parts=True)
            self.frames[frame] = data
            while len(self.frames) > self.capacity:
                self.frames.popitem(last=False)
        else:
            self.frames.move_to_end(frame)
        return data


QC_CHANNELS = ("fill.revealed", "fill.offset")
#: ``fill.revealed`` of a pixel whose value came from a reference frame (1: another frame of the plate)
QC_REFERENCED = 2.0
#: output metadata: the hole MAE (0-255 of the working range) that probe holes cut into the plate's
#: known pixels measured for what no frame shows (written where the frame's fill synthesised any)
EXPECTED_ERROR_ATTRIBUTE = "combcn:expectedError"


def with_qc(data: ImageData, frame_fill: FrameFill) -> ImageData:
    """``data`` plus the two QC channels (float): in ``fill.revealed`` 1 where the fill came from another
    frame, ``QC_REFERENCED`` (2) where it came from a reference frame, 0 elsewhere; the source frame's
    offset in ``fill.offset`` (0 elsewhere, and on a reference frame itself). Every other channel is
    untouched."""
    h, w = data.pixels.shape[:2]
    revealed = np.zeros((h, w), np.float32)
    offset = np.zeros((h, w), np.float32)
    if frame_fill.box is not None and frame_fill.revealed is not None and frame_fill.offset is not None:
        y0, y1, x0, x1 = frame_fill.box
        inside = frame_fill.alpha is not None and frame_fill.alpha > 0
        marked = frame_fill.revealed.astype(np.float32)
        if frame_fill.referenced is not None:
            marked = np.where(frame_fill.referenced, QC_REFERENCED, marked)
        revealed[y0:y1, x0:x1] = np.where(inside, marked, 0.0)
        offset[y0:y1, x0:x1] = np.where(inside, frame_fill.offset, 0.0)
    spec = qc_spec(data.spec)
    stored = data.pixels.dtype
    pixels = np.concatenate([data.pixels, np.stack([revealed, offset], -1).astype(stored)], -1)
    return ImageData(pixels=pixels, spec=spec, part=data.part, parts=data.parts)


def qc_spec(spec: oiio.ImageSpec) -> oiio.ImageSpec:
    """``spec`` with the two QC channels appended (float where channels have their own types).

    Raises:
        ConfigError: the plate is stored as integers (the QC channels need a float file).
    """
    if oiio.TypeDesc(spec.format).basetype not in (oiio.FLOAT, oiio.HALF, oiio.DOUBLE):
        raise ConfigError("--qc needs a float output (EXR); this plate is stored as integers. Drop --qc")
    out = oiio.ImageSpec(spec)
    names = list(out.channelnames) + list(QC_CHANNELS)
    formats = channel_types(out)
    out.nchannels = len(names)
    out.channelnames = tuple(names)
    if out.channelformats:
        out.channelformats = tuple(oiio.TypeDesc(f) for f in formats + ["float", "float"])
    return out


#: glibc's ``mallopt`` parameter for the most heaps (arenas) its allocator keeps for threads
_M_ARENA_MAX = -8


def bound_heap_arenas(libc: Any = None) -> bool:
    """Bound glibc's heaps for threads to one per core (at least two; glibc's own bound is eight per
    core) for the rest of the process: a render's threads (propagation's, the writer, the pools of
    OpenCV and OpenImageIO) each allocate their frames' arrays in a heap of their own, and the memory
    freed in one is not reused by the others, so the peak grew from window to window (1080p: 3151 to
    3854 MB by frame 167; 3131 to 3414 by frame 119, then flat to frame 262, with two). Where the C
    library is not glibc, nothing. ``libc``: the library to call (tests).

    Returns:
        whether the bound was set.
    """
    if libc is None:
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return False
    return bool(libc.mallopt(_M_ARENA_MAX, max(2, os.cpu_count() or 2)))


def stream(
    plan: Plan,
    engine: Engine,
    opts: SequenceOptions,
    m_opts: MatteOptions,
    settings: RenderSettings,
    propagation: PropagationSettings,
    report: Report,
    progress: ProgressCallback | None,
    guard: FillGuard,
    references: References | None = None,
    checked: Checked | None = None,
) -> None:
    """Render window by window and write each frame atomically as soon as it is final, each fill
    checked by ``guard`` first. The output folder exists (made before the lock is taken).

    Files are written by one background thread (OpenImageIO's encoding and the disk overlap the next
    frame's work) with at most two frames in flight; a frame counts as written, in order, once its
    file is complete, and every frame handed over is complete before this returns or raises. What the
    check pass kept (``checked``: decoded frames, alphas, ranges outside the holes) is used, not read
    again.
    """
    checked = checked or Checked()
    for f in plan.to_write:
        for stale in stale_temp_files(plan.out.path(f)):
            stale.unlink(missing_ok=True)
    capacity = engine.window + 2 * propagation.reach + 4
    opened = _OpenFrames(plan, capacity, checked.plates)
    checked.plates = {}
    seq = plan.seq

    def rgb_at(position: int, box: Box) -> np.ndarray:
        return rgb_of(opened.get(seq[position]), plan.rgb, box)

    def alpha_at(position: int) -> np.ndarray:
        frame = seq[position]
        kept = checked.alpha(frame)
        if kept is not None:
            return kept
        data = opened.get(frame) if plan.matte is None else plan.matte.read(frame)
        return shape_matte(plan.alpha(data), m_opts)

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="combcn-write")
    in_flight: deque[tuple[int, Future[Path]]] = deque()

    def written(keep: int) -> None:
        """Wait until at most ``keep`` writes are in flight; count the finished ones (raising the
        first write error)."""
        while len(in_flight) > keep or (in_flight and in_flight[0][1].done()):
            frame, job = in_flight.popleft()
            job.result()
            report.written.append(frame)
            if progress is not None:
                progress(
                    {
                        "event": "frame",
                        "frame": frame,
                        "done": len(report.written),
                        "total": len(plan.to_write),
                    }
                )

    def emit(position: int, frame_fill: FrameFill) -> None:
        frame = seq[position]
        data = opened.get(frame)
        box, outside = frame_fill.box, checked.outside.pop(frame, None)
        if box is not None and outside is not None and outside.box == box:
            box_rgb = rgb_of(data, plan.rgb, box)
            frame_fill = guard.check(
                box_rgb, frame_fill, path=plan.out.path(frame), frame=frame, outside=outside
            )
        elif box is not None:
            frame_fill = guard.check(
                rgb_of(data, plan.rgb), frame_fill, path=plan.out.path(frame), frame=frame
            )
        spec = data.spec
        if frame_fill.expected_error is not None:  # what the probe holes measured (docs/ENGINE.md)
            spec = oiio.ImageSpec(spec)
            spec.attribute(EXPECTED_ERROR_ATTRIBUTE, float(frame_fill.expected_error))
        out = ImageData(pixels=data.pixels.copy(), spec=spec, part=data.part, parts=data.parts)
        out.pixels[..., plan.rgb] = composite(data.pixels[..., plan.rgb], frame_fill)
        if opts.qc:
            out = with_qc(out, frame_fill)
        written(1)
        job = writer.submit(
            write_image_atomic,
            plan.out.path(frame),
            out,
            compression=opts.compression,
            pixel_type=opts.pixel_type,
        )
        in_flight.append((frame, job))

    if progress is not None:
        progress({"event": "start", "total": len(plan.to_write)})
    positions = {f: i for i, f in enumerate(seq)}
    try:
        render_windows(
            engine.model,
            len(seq),
            [positions[f] for f in plan.to_write],
            rgb_at,
            alpha_at,
            emit,
            shaper=get_shaper(plan.shaper),
            settings=settings,
            device=engine.device,
            propagation=propagation,
            references=references,
        )
        written(0)
    finally:
        writer.shutdown(wait=True)  # a frame handed over is finished (atomically), also on an error


_ENGINE_KEYS = ("weights", "device", "model", "threads", "track")


def render_sequence(
    source: str | Path,
    matte: str | Path | None = None,
    output: str | Path | None = None,
    frames: str | FrameSet | Sequence[int] | None = None,
    *,
    engine: Engine | None = None,
    progress: ProgressCallback | None = None,
    options: SequenceOptions | None = None,
    **keywords: Any,
) -> Report:
    """Inpaint ``source`` under ``matte`` and write ``output``: :func:`plan`, :func:`check`, :func:`stream`.

    Args:
        source: plate pattern (``plate.####.exr``, ``%04d``, ``@@@@``), single image, folder or movie.
        matte: matte pattern/file/movie; None = the plate's own alpha (or ``matte_channel``).
        output: output pattern; frame numbers are kept.
        frames: frames to write (``"1001-1100x2"``, a :class:`FrameSet` or numbers); None = all.
        engine: a loaded :class:`Engine`; else one is made from ``weights``/``device``/``model``/
            ``threads``/``track`` keywords (see :class:`Engine`).
        progress: called with ``{"event": "start", "total"}`` before rendering, then
            ``{"event": "frame", "frame", "done", "total"}`` per written frame.
        options: a :class:`SequenceOptions`; its fields may also be given as keywords.
        **keywords: :class:`SequenceOptions` fields (``references``, ``reference_wins``, ...);
            threshold, invert, expand, feather (matte); overlap, margin, context (windows); propagate,
            reach (propagation); the engine keywords.

    Returns:
        Report: frames written and skipped, timings, warnings.
    """
    started = time.perf_counter()
    bound_heap_arenas()  # (before the check pass's readers take heaps of their own)
    if output is None:
        raise ConfigError("no output given; pass output= (or -o) with a pattern like out.####.exr")
    rest = dict(keywords)
    names = {f.name for f in fields(SequenceOptions)}
    given = {k: rest.pop(k) for k in list(rest) if k in names}
    opts = SequenceOptions(**{**(vars(options) if options is not None else {}), **given})
    make_engine = {k: rest.pop(k) for k in list(rest) if k in _ENGINE_KEYS}
    m_opts = matte_options(rest)
    settings = render_settings(rest)
    propagation = propagation_settings(rest)
    if rest:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(rest))}")
    if opts.references and not propagation.enabled:
        raise ConfigError("reference frames are carried by propagation; drop --no-propagate")
    if engine is not None and make_engine.get("track") is not None:
        raise ConfigError("pass track= to the Engine you give, not to render_sequence")
    if engine is None:
        engine = Engine(**make_engine)
    report = Report(output=str(output))
    the_plan = plan(
        source, matte, output, frames, opts, window=engine.window, settings=settings, reach=propagation.reach
    )
    lock: OutputLock | None = None
    guard = FillGuard()
    try:
        report.warnings.extend(the_plan.warnings)
        report.warnings.extend(remove_stale_locks(the_plan.out))  # finished frames or not
        if not the_plan.to_write:
            report.skipped = the_plan.skipped
            log.info("all %d frame(s) already exist; nothing to do", len(report.skipped))
            return report
        report.skipped = the_plan.skipped
        checked = check(the_plan, m_opts, pixels=opts.check, keep=engine.window + 2 * propagation.reach + 4)
        if not checked.any_hole:
            message = "the matte is empty in every frame read: the plate is copied through unchanged"
            log.warning(message)
            report.warnings.append(message)
        references = load_references(the_plan, opts.reference_wins)
        log.info(
            "inpainting %d frame(s) of %s (reading %d-%d, %d window(s), shaper %s, propagation %s) -> %s",
            len(the_plan.to_write),
            the_plan.plate.path,
            the_plan.read_frames[0],
            the_plan.read_frames[-1],
            the_plan.windows,
            the_plan.shaper,
            "on" if propagation.enabled else "off",
            output,
        )
        check_writable_folder(the_plan.out.path(the_plan.to_write[0]), create=True)
        lock = OutputLock(the_plan.out, the_plan.to_write)
        lock.acquire()
        report.warnings.extend(lock.warnings)
        with engine.threads_for_call():
            stream(
                the_plan,
                engine,
                opts,
                m_opts,
                settings,
                propagation,
                report,
                progress,
                guard,
                references,
                checked,
            )
    finally:
        if lock is not None:
            lock.release()
        clamped = guard.warning()
        if clamped is not None:
            clamped = f"{output}: {clamped}"
            log.warning(clamped)
            report.warnings.append(clamped)
        the_plan.plate.close()
        if the_plan.matte is not None:
            the_plan.matte.close()
        report.seconds = time.perf_counter() - started
    if len(report.written) != len(the_plan.to_write):  # pragma: no cover - guarded by render_windows
        raise OutputError(
            f"only {len(report.written)} of {len(the_plan.to_write)} frames were written", path=output
        )
    log.info(
        "wrote %d frame(s), skipped %d, %.2f s/frame",
        len(report.written),
        len(report.skipped),
        report.seconds_per_frame,
    )
    return report
