"""The public Python API: :func:`inpaint` (arrays) and :func:`inpaint_sequence` (files).

Both are thin faces over :mod:`combcn.engine`; keep an :class:`combcn.engine.Engine` yourself to
reuse one loaded model over many calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from combcn.engine import Engine, Report, render_sequence
from combcn.io.frames import FrameSet

__all__ = ["Engine", "Report", "inpaint", "inpaint_sequence"]

_engines: dict[tuple[str | None, str | None, bool | None, int | None], Engine] = {}


def _engine(
    weights: str | Path | None, device: str | None, track: bool | None, threads: int | None = None
) -> Engine:
    """The loaded engine for these settings, kept for the next call (weights load once a process)."""
    key = (None if weights is None else str(weights), device, track, threads)
    if key not in _engines:
        _engines[key] = Engine(weights, device, track=track, threads=threads)
    return _engines[key]


def inpaint(
    frames: Any,
    matte: Any,
    *,
    weights: str | Path | None = None,
    device: str | None = None,
    model: Any = None,
    track: bool | None = None,
    **options: Any,
) -> Any:
    """Inpaint frames in memory.

    Args:
        frames (ndarray | Tensor [T, H, W, C], float32 or float16): channels 0-2 are RGB (scene-linear
            or display-referred); other channels come back untouched.
        matte (ndarray | Tensor [T, H, W]): numbers in [0, 1], 1 = remove; or booleans (numpy or
            torch), True = remove.
        weights: weights file (None = shipped default); the loaded model is cached per (weights, device).
        device: ``"cpu"``, ``"cuda"`` or None (cuda when present).
        model: a model instance to use instead (e.g. a small one in tests).
        track: None = as the weights say (the shipped ones track the camera); False = the locked-off
            clean plate even where the camera moves.
        **options: ``shaper`` (``acescct`` default / ``log`` / ``none``), ``threshold`` (0.5),
            ``invert``, ``expand`` (px), ``feather`` (px), ``overlap`` (window/4 frames), ``margin`` (0.5),
            ``propagate`` (True: carry what other frames show, at full resolution, before the network
            fills the rest), ``reach`` (0: frames beyond each window also searched), ``references``
            ({frame index: that frame with its hole filled by hand, [H, W, C >= 3]}: carried along the
            motion to the other frames ahead of synthesis; only its RGB inside that frame's matte is
            used), ``reference_wins`` (False: a frame that shows the point itself, nearer in time than
            the reference, wins; True: the reference wins wherever it reaches).

    Returns:
        Same type, dtype and shape as ``frames``; outside the (feathered) matte bit-exact copies.

    Raises:
        combcn.errors.InputError: bad shapes, NaN/Inf, a frame entirely under the matte.
        combcn.errors.ConfigError: unknown option or value.
    """
    if model is not None:
        engine = Engine(device=device, model=model, track=track)
    else:
        engine = _engine(weights, device, track)
    return engine.inpaint(frames, matte, **options)


def inpaint_sequence(
    source: str | Path,
    matte: str | Path | None = None,
    output: str | Path | None = None,
    frames: str | FrameSet | list[int] | None = None,
    **options: Any,
) -> Report:
    """Inpaint an image sequence (or movie) on disk and write the result as a sequence.

    Args:
        source: ``plate.####.exr`` / ``plate.%04d.exr`` / ``plate.@@@@.exr``, one image, or a movie.
        matte: matte sequence/file (None = the plate's alpha or ``matte_channel``).
        output: output pattern (required), e.g. ``clean/plate.####.exr``; frame numbers are kept.
        frames: frames to write, e.g. ``"1001-1100"`` or ``"1001-1100x2"`` (None = all on disk).
        **options: see :func:`combcn.engine.render_sequence` (``matte_channel``, ``part``, ``shaper``,
            ``threshold``, ``invert``, ``expand``, ``feather``, ``context``, ``overlap``, ``margin``,
            ``propagate``, ``reach``, ``qc`` (QC channels in the output), ``references``
            (``{frame number: file}`` of frames the artist cleaned, or a pattern ``clean.####.exr``),
            ``reference_wins``,
            ``resume``, ``overwrite``, ``compression``, ``pixel_type``, ``weights``, ``device``,
            ``model``, ``engine``, ``threads``, ``track``, ``progress``).

    Returns:
        Report: ``written``, ``skipped`` frame numbers, ``seconds``, ``warnings``.
    """
    if options.get("engine") is None and options.get("model") is None:
        options["engine"] = _engine(
            options.pop("weights", None),
            options.pop("device", None),
            options.pop("track", None),
            options.pop("threads", None),
        )
    return render_sequence(source, matte, output, frames, **options)
