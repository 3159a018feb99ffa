"""Inpaint a sequence on disk: validate everything first, then stream windows and write frames.

Order of work (nothing is written until every check has passed):

1. resolve the plate (image sequence or movie), matte, channels and output pattern;
2. check outputs: not the input, folder writable, existing frames refused unless ``resume`` (skip
   them) or ``overwrite``;
3. plan the temporal windows that touch the frames to write (context frames outside ``frames`` are
   read, never written) and check every frame they read: present, same size, matte aligned, RGB
   finite, matte not covering a whole frame;
4. render window by window; each frame is written atomically (temp file + rename) as soon as it is
   final, with every channel, window, pixel type and metadata of its input.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio

from combcn.engine.core import FrameFill, composite, needed_windows, render_windows
from combcn.engine.engine import Engine, matte_options, render_settings
from combcn.engine.matte import MatteOptions, shape_matte
from combcn.engine.shaper import default_shaper_for, get_shaper
from combcn.errors import ConfigError, InputError, OutputError
from combcn.io.frames import FrameSet
from combcn.io.image import (
    ImageData,
    check_writable_folder,
    read_header,
    read_image,
    read_rows,
    stale_temp_files,
    write_image_atomic,
)
from combcn.io.movie import MovieReader, is_movie
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


class Source:
    """Frames of an image sequence (or single image) or a movie, read as :class:`ImageData`.

    Args:
        path: a pattern (``plate.####.exr``), a single image or a movie.
        part: part index or name of multi-part EXRs.
        what: ``"plate"`` or ``"matte"``, for messages.
    """

    def __init__(self, path: str | Path, *, part: int | str | None = None, what: str = "plate"):
        self.what = what
        self.part = part
        self.movie: MovieReader | None = None
        self.pattern: SequencePattern | None = None
        if is_movie(path):
            self.movie = MovieReader(path)
            self.frames = self.movie.frames
        else:
            self.pattern = SequencePattern(path)
            self.frames = self.pattern.frames_on_disk()
        if not self.frames:
            raise InputError(
                f"no {what} frames found for this pattern; check the folder, the name and the frame "
                "token (#### = 4 digits, %04d, @@@@)",
                path=path,
            )
        self.path = str(path)
        #: one image used for every frame (a still matte)
        self.static = self.pattern is not None and not self.pattern.has_token

    def file(self, frame: int) -> str:
        return self.path if self.pattern is None else str(self.pattern.path(frame))

    def _movie_spec(self, pixels: np.ndarray) -> oiio.ImageSpec:
        spec = oiio.ImageSpec(
            pixels.shape[1], pixels.shape[0], 3, "uint16" if pixels.dtype == np.uint16 else "uint8"
        )
        spec.channelnames = ("R", "G", "B")
        return spec

    def header(self, frame: int) -> oiio.ImageSpec:
        """The spec of ``frame`` (no pixels read for image files)."""
        if self.movie is not None:
            return self._movie_spec(self.movie.read(frame))
        if frame not in self._frame_set and not self.static:
            raise InputError(f"{self.what} frame is missing", path=self.file(frame), frame=frame)
        return read_header(self.file(frame), self.part)

    @property
    def _frame_set(self) -> set[int]:
        if not hasattr(self, "_frames_cache"):
            self._frames_cache = set(self.frames)
        return self._frames_cache

    def read_rgb(self, frame: int, rgb: list[int], rows: tuple[int, int] | None = None) -> np.ndarray:
        """Only the R, G, B channels (indices ``rgb``) of ``frame``, optionally only some rows.

        Returns:
            ndarray[rows, W, 3] float32 (integers scaled to [0, 1]).
        """
        if self.movie is not None or self.static:
            pixels = self.read(frame).pixels
            pixels = pixels if rows is None else pixels[rows[0] : rows[1]]
            return to_unit(pixels[..., rgb])
        if frame not in self._frame_set:
            raise InputError(f"{self.what} frame is missing", path=self.file(frame), frame=frame)
        lo, hi = min(rgb), max(rgb) + 1
        if rows is None:
            rows = (0, read_header(self.file(frame), self.part).height)
        try:
            pixels = read_rows(self.file(frame), self.part, rows[0], rows[1], (lo, hi))
        except InputError as exc:
            raise InputError(exc.message, path=exc.path, frame=frame) from None
        return to_unit(pixels[..., [c - lo for c in rgb]])

    def read(self, frame: int, *, all_parts: bool = False) -> ImageData:
        """Pixels and spec of ``frame``."""
        if self.movie is not None:
            pixels = self.movie.read(frame)
            return ImageData(pixels=pixels.copy(), spec=self._movie_spec(pixels))
        if frame not in self._frame_set and not self.static:
            raise InputError(f"{self.what} frame is missing", path=self.file(frame), frame=frame)
        try:
            return read_image(self.file(frame), self.part, all_parts=all_parts)
        except InputError as exc:
            raise InputError(exc.message, path=exc.path, frame=frame) from None


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """Stored pixels -> float32 (integers scaled to [0, 1])."""
    if np.issubdtype(pixels.dtype, np.integer):
        return pixels.astype(np.float32) / float(np.iinfo(pixels.dtype).max)
    return pixels.astype(np.float32)


def rgb_channels(spec: oiio.ImageSpec, path: str) -> list[int]:
    """Indices of the R, G, B channels (the first three channels when not named R, G, B)."""
    names = list(spec.channelnames)
    if all(c in names for c in ("R", "G", "B")):
        return [names.index(c) for c in ("R", "G", "B")]
    if len(names) >= 3:
        log.warning("%s: no channels named R, G, B; inpainting %s", path, ", ".join(names[:3]))
        return [0, 1, 2]
    raise InputError(
        f"has channels {', '.join(names)}; combcn needs three colour channels (R, G, B)", path=path
    )


def matte_channel_index(spec: oiio.ImageSpec, channel: str | None, path: str, *, own_alpha: bool) -> int:
    """Index of the matte channel; ``None`` picks A (then Y, R, the first) or, on the plate, its alpha."""
    names = list(spec.channelnames)
    if channel is not None:
        if channel in names:
            return names.index(channel)
        raise InputError(
            f"has no channel {channel!r}; its channels are: {', '.join(names)}. "
            "Pick one with --matte-channel",
            path=path,
        )
    if own_alpha:
        if spec.alpha_channel >= 0:
            return int(spec.alpha_channel)
        if "A" in names:
            return names.index("A")
        raise InputError(
            f"no --matte was given and the plate has no alpha channel (channels: {', '.join(names)}); "
            "give a matte sequence with --matte or a channel with --matte-channel",
            path=path,
        )
    for candidate in ("A", "Y", "R"):
        if candidate in names:
            return names.index(candidate)
    return 0


def _windows_of(spec: oiio.ImageSpec) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    return (spec.x, spec.y, spec.width, spec.height), (
        spec.full_x,
        spec.full_y,
        spec.full_width,
        spec.full_height,
    )


def align_matte(values: np.ndarray, matte_spec: oiio.ImageSpec, plate_spec: oiio.ImageSpec) -> np.ndarray:
    """Matte values on the plate's data window (zero where the matte's data window has no pixels).

    Args:
        values (ndarray[h, w]): matte channel over the matte's data window.
    Returns:
        ndarray[H, W] float32 over the plate's data window.
    """
    (mx, my, mw, mh), _ = _windows_of(matte_spec)
    (px, py, pw, ph), _ = _windows_of(plate_spec)
    if (mx, my, mw, mh) == (px, py, pw, ph):
        return values.astype(np.float32)
    out = np.zeros((ph, pw), np.float32)
    x0, x1 = max(mx, px), min(mx + mw, px + pw)
    y0, y1 = max(my, py), min(my + mh, py + ph)
    if x1 > x0 and y1 > y0:
        out[y0 - py : y1 - py, x0 - px : x1 - px] = values[y0 - my : y1 - my, x0 - mx : x1 - mx]
    return out


def _check_output_pattern(
    output: str, plate: Source, matte: Source | None, targets: list[int]
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


def render_sequence(
    source: str | Path,
    matte: str | Path | None = None,
    output: str | Path | None = None,
    frames: str | FrameSet | Sequence[int] | None = None,
    *,
    matte_channel: str | None = None,
    part: int | str | None = None,
    matte_part: int | str | None = None,
    shaper: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compression: str | None = None,
    pixel_type: str | None = None,
    check: bool = True,
    engine: Engine | None = None,
    weights: str | Path | None = None,
    device: str | None = None,
    model: Any = None,
    threads: int | None = None,
    track: bool | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> Report:
    """Inpaint ``source`` under ``matte`` and write ``output``; see the module docstring for the order.

    Args:
        source: plate pattern (``plate.####.exr``, ``%04d``, ``@@@@``), single image or movie.
        matte: matte pattern/file/movie; None = the plate's own alpha (or ``matte_channel``).
        output: output pattern; frame numbers are kept.
        frames: frames to write (``"1001-1100x2"``, a :class:`FrameSet` or numbers); None = all.
        matte_channel: channel of the matte (default A, Y, R or the first; on the plate, its alpha).
        part, matte_part: multi-part EXR part (index or name) of the plate / matte.
        shaper: ``acescct`` / ``log`` / ``none``; default acescct for float plates, none otherwise.
        resume: skip frames whose output already exists and reads back.
        overwrite: replace existing outputs.
        compression, pixel_type: output overrides (default: as the input).
        check: read every frame before rendering to check NaN/Inf and full mattes (recommended).
        engine / weights / device / model / threads / track: the model to use (an :class:`Engine`,
            or how to make one; ``track`` False keeps the locked-off clean plate, see :class:`Engine`).
        progress: called with ``{"event": "start", "total"}`` before rendering, then
            ``{"event": "frame", "frame", "done", "total"}`` per written frame.
        **options: threshold, invert, expand, feather (matte); overlap, margin, context (windows).

    Returns:
        Report: frames written and skipped, timings, warnings.
    """
    started = time.perf_counter()
    if output is None:
        raise ConfigError("no output given; pass output= (or -o) with a pattern like out.####.exr")
    opts = dict(options)
    m_opts: MatteOptions = matte_options(opts)
    settings = render_settings(opts)
    if opts:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(opts))}")

    plate = Source(source, part=part, what="plate")
    matte_src = Source(matte, part=matte_part, what="matte") if matte is not None else None
    seq = plate.frames
    if frames is None:
        targets = list(seq)
    elif isinstance(frames, str):
        targets = FrameSet.parse(frames).frames
    else:
        targets = FrameSet(frames).frames
    if not targets:
        raise ConfigError("no frames to write")
    on_disk = set(seq)
    missing = [f for f in targets if f not in on_disk]
    if missing:
        raise InputError(
            f"plate frame(s) missing: {FrameSet(missing)}; render or copy them, or narrow --frames",
            path=plate.file(missing[0]),
            frame=missing[0],
        )
    report = Report(output=str(output))

    # Outputs: never the input, folder writable, existing files refused unless resume/overwrite.
    out_pattern = _check_output_pattern(str(output), plate, matte_src, targets)
    check_writable_folder(out_pattern.path(targets[0]))
    skipped: list[int] = []
    existing = [f for f in targets if out_pattern.path(f).exists()]
    if existing and resume:
        for f in existing:
            try:
                read_header(out_pattern.path(f))
                skipped.append(f)
            except InputError:
                log.warning("%s: incomplete or unreadable output, rendering it again", out_pattern.path(f))
    elif existing and not overwrite:
        raise OutputError(
            f"{len(existing)} output frame(s) exist ({FrameSet(existing)}); use --resume to keep them and "
            "render the rest, or --overwrite to replace them",
            path=out_pattern.path(existing[0]),
        )
    to_write = [f for f in targets if f not in set(skipped)]
    report.skipped = skipped
    if not to_write:
        log.info("all %d frame(s) already exist; nothing to do", len(targets))
        report.seconds = time.perf_counter() - started
        return report

    # The model (its window length decides what must be read).
    if engine is None:
        engine = Engine(weights, device, model=model, threads=threads, track=track)
    elif track is not None:
        raise ConfigError("pass track= to the Engine you give, not to render_sequence")
    if threads is not None:
        oiio.attribute("threads", int(threads))
    positions = {f: i for i, f in enumerate(seq)}
    windows, (first, last) = needed_windows(
        len(seq), [positions[f] for f in to_write], engine.window, settings
    )
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
    if matte_src is not None:
        no_matte = [f for f in read_frames if f not in set(matte_src.frames)]
        if no_matte and matte_src.movie is None and not matte_src.static:
            raise InputError(
                f"matte frame(s) missing: {FrameSet(no_matte)}; the matte needs every plate frame "
                "that is read (including context frames around --frames)",
                path=matte_src.file(no_matte[0]),
                frame=no_matte[0],
            )

    # Headers: one size for every frame, matte display window == plate display window, channels exist.
    first_spec = plate.header(read_frames[0])
    rgb = rgb_channels(first_spec, plate.file(read_frames[0]))
    plate_windows = _windows_of(first_spec)
    matte_of = matte_src if matte_src is not None else plate
    m_first = matte_of.header(read_frames[0])
    m_index = matte_channel_index(
        m_first, matte_channel, matte_of.file(read_frames[0]), own_alpha=matte_src is None
    )
    for f in read_frames:
        spec = first_spec if f == read_frames[0] else plate.header(f)
        if _windows_of(spec) != plate_windows or list(spec.channelnames) != list(first_spec.channelnames):
            raise InputError(
                f"differs from frame {read_frames[0]} (size/windows {_windows_of(spec)} vs {plate_windows}, "
                "or channels); every plate frame must have the same size and channels",
                path=plate.file(f),
                frame=f,
            )
        if matte_src is not None:
            mspec = matte_src.header(f)
            if _windows_of(mspec)[1] != plate_windows[1]:
                raise InputError(
                    f"matte is {mspec.full_width}x{mspec.full_height} but the plate is "
                    f"{first_spec.full_width}x{first_spec.full_height} (display windows differ); "
                    "give a matte rendered at the plate's resolution",
                    path=matte_src.file(f),
                    frame=f,
                )
            if m_index >= mspec.nchannels:
                raise InputError(
                    "has fewer channels than the first matte frame", path=matte_src.file(f), frame=f
                )

    def alpha_for(frame: int, plate_spec: oiio.ImageSpec | None = None) -> np.ndarray:
        data = matte_of.read(frame)
        values = to_unit(data.pixels[..., m_index])
        values = align_matte(values, data.spec, plate_spec if plate_spec is not None else first_spec)
        return shape_matte(values, m_opts)

    # Pixels: RGB finite, matte not covering a whole frame; an empty matte copies through.
    any_hole = True
    if check:
        any_hole = False
        for f in read_frames:
            if not np.isfinite(plate.read_rgb(f, rgb)).all():
                raise InputError(
                    "the plate has NaN or Inf pixels in R, G or B; fix them first "
                    "(e.g. oiiotool in.exr --fixnan box3 -o fixed.exr)",
                    path=plate.file(f),
                    frame=f,
                )
            alpha = alpha_for(f)
            if alpha.min() > 0:
                raise InputError(
                    "the matte covers the whole frame: there is nothing left to fill from. Check the matte "
                    "(--invert? --threshold?)",
                    path=matte_of.file(f),
                    frame=f,
                )
            any_hole |= bool(alpha.max() > 0)
        if not any_hole:
            message = "the matte is empty in every frame read: the plate is copied through unchanged"
            log.warning(message)
            report.warnings.append(message)

    shaper_name = shaper or default_shaper_for(
        plate.read(read_frames[0]).pixels.dtype, movie=plate.movie is not None
    )
    shaper_obj = get_shaper(shaper_name)
    log.info(
        "inpainting %d frame(s) of %s (reading %d-%d, %d window(s), shaper %s) -> %s",
        len(to_write),
        plate.path,
        read_frames[0],
        read_frames[-1],
        len(windows),
        shaper_name,
        output,
    )
    check_writable_folder(out_pattern.path(to_write[0]), create=True)
    for f in to_write:
        for stale in stale_temp_files(out_pattern.path(f)):
            stale.unlink(missing_ok=True)

    def emit(position: int, frame_fill: FrameFill) -> None:
        frame = seq[position]
        data = plate.read(frame, all_parts=True)
        data.pixels = data.pixels.copy()
        data.pixels[..., rgb] = composite(data.pixels[..., rgb], frame_fill)
        write_image_atomic(out_pattern.path(frame), data, compression=compression, pixel_type=pixel_type)
        report.written.append(frame)
        if progress is not None:
            progress({"event": "frame", "frame": frame, "done": len(report.written), "total": len(to_write)})

    if progress is not None:
        progress({"event": "start", "total": len(to_write)})
    render_windows(
        engine.model,
        len(seq),
        [positions[f] for f in to_write],
        lambda p, y0, y1: plate.read_rgb(seq[p], rgb, (y0, y1)),
        lambda p: alpha_for(seq[p]),
        emit,
        shaper=shaper_obj,
        settings=settings,
        device=engine.device,
    )
    if plate.movie is not None:
        plate.movie.close()
    if len(report.written) != len(to_write):  # pragma: no cover - guarded by render_windows
        raise OutputError(f"only {len(report.written)} of {len(to_write)} frames were written", path=output)
    report.seconds = time.perf_counter() - started
    log.info(
        "wrote %d frame(s), skipped %d, %.2f s/frame",
        len(report.written),
        len(skipped),
        report.seconds_per_frame,
    )
    return report
