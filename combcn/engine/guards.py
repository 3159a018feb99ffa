"""Guards on what a render writes: fills the model got wrong, formats that would change the plate,
and two renders writing the same frames at once.

- :class:`FillGuard` refuses a fill with NaN or Inf (broken weights) and clamps fill values far
  outside what the frame shows elsewhere (a hole too large for the model), counting what it clamped;
  the range outside the hole's box can be measured once, when the frame is read (:func:`outside_range`).
- :func:`lossy_reason` says why an output format or compression cannot keep pixels outside the matte
  bit-exact (None when it can).
- :class:`OutputLock` is a lock file beside the outputs, one per output pattern and frame set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import OpenImageIO as oiio

from combcn.engine.core import Box, FrameFill
from combcn.errors import CombcnError, ModelError, OutputError
from combcn.io.frames import FrameSet
from combcn.io.image import LOSSY_COMPRESSIONS, LOSSY_FORMATS, round_trip
from combcn.io.sequence import SequencePattern

log = logging.getLogger("combcn.engine")

#: Fill values may pass the known range of their frame by this fraction of that range (per channel),
#: plus ``RANGE_FLOOR`` in plate units: shading a little beyond what the frame shows (a highlight the
#: hole half hides) is plausible, anything further is the network inventing light.
RANGE_MARGIN = 0.1
RANGE_FLOOR = 1.0 / 256.0


@dataclass
class FillGuard:
    """Checks each frame's fill before it is composited; one per render.

    Attributes:
        pixels: fill pixels clamped so far.
        frames: frames with at least one clamped pixel.
        clamped: those frames' numbers.
    """

    pixels: int = 0
    frames: int = 0
    clamped: list[int] = field(default_factory=list)

    def check(
        self,
        plate_rgb: np.ndarray,
        frame_fill: FrameFill,
        *,
        path: str | Path | None,
        frame: int,
        outside: Outside | None = None,
    ) -> FrameFill:
        """The fill of one frame, with values far outside the frame's known range clamped into it.

        Args:
            plate_rgb (ndarray[H, W, 3] float32): the frame's colour in plate units; with ``outside``,
                only the fill's box (ndarray[y1-y0, x1-x0, 3]).
            frame_fill: its fill (``fill`` in plate units over ``box``).
            path, frame: the output file and frame number, for the message.
            outside: the frame's range outside ``frame_fill.box``, measured when the frame was read
                (:func:`outside_range`): only the box is scanned here.

        Raises:
            ModelError: the fill holds NaN or Inf (nothing of this frame is to be written).
            ValueError: ``outside`` was measured around another box.
        """
        if frame_fill.box is None or frame_fill.fill is None or frame_fill.alpha is None:
            return frame_fill
        if frame_fill.fill.size == 0:
            return frame_fill
        fill = frame_fill.fill
        # the fill's range per channel, in one fast pass: NaN or Inf shows in it, and a fill inside the
        # frame's known range needs no per-pixel look
        fill_lo, fill_hi = channel_range(np.ascontiguousarray(fill))
        if not (np.isfinite(fill_lo).all() and np.isfinite(fill_hi).all()):
            bad = ~np.isfinite(fill).all(axis=-1)
            raise ModelError(
                f"the model produced NaN or Inf in {int(bad.sum())} fill pixel(s), so nothing was written "
                "for this frame; the weights are broken (a diverged finetune?): render with other "
                "weights (-w)",
                path=path,
                frame=frame,
            )
        if outside is None:
            span = known_range(plate_rgb, frame_fill.box, frame_fill.alpha <= 0)
        else:
            if outside.box != frame_fill.box:
                raise ValueError(
                    f"the range was measured around {outside.box}, the fill is over {frame_fill.box}"
                )
            span = _with_box(outside.span, plate_rgb, frame_fill.alpha <= 0)
        if span is None:
            return frame_fill
        lo, hi = span
        slack = RANGE_MARGIN * (hi - lo) + RANGE_FLOOR
        lo, hi = lo - slack, hi + slack
        if (fill_lo >= lo).all() and (fill_hi <= hi).all():
            return frame_fill
        # Only what is composited counts. Pixels marked revealed are checked too: after the cross-fade
        # of windows they can still hold network values. (Channel by channel: a reduction over a last
        # axis of 3 is slow in NumPy.)
        beyond = (fill[..., 0] < lo[0]) | (fill[..., 0] > hi[0])
        for c in range(1, fill.shape[-1]):
            beyond |= (fill[..., c] < lo[c]) | (fill[..., c] > hi[c])
        beyond &= frame_fill.alpha > 0
        count = int(beyond.sum())
        if count == 0:
            return frame_fill
        self.pixels += count
        self.frames += 1
        self.clamped.append(frame)
        clamped = np.where(beyond[..., None], np.clip(fill, lo, hi), fill).astype(np.float32)
        return dataclasses.replace(frame_fill, fill=clamped)

    def warning(self) -> str | None:
        """The one warning of a render (None when nothing was clamped)."""
        if self.pixels == 0:
            return None
        return (
            f"{self.pixels} fill pixel(s) in {self.frames} frame(s) ({FrameSet(self.clamped)}) were far "
            "brighter or darker than anything the frame shows outside the hole and were clamped to its "
            f"range (+{RANGE_MARGIN:.0%}); the hole is likely too large for the model: check those frames, "
            "shrink the matte or paint a clean plate"
        )


@dataclass(frozen=True)
class Outside:
    """A frame's per-channel range outside its hole's box: the part of its known range that no fill can
    change, so it can be measured once, when the frame is read, and the box alone scanned at the guard.

    Attributes:
        box: ``(y0, y1, x0, x1)``, the hole's bounding box.
        span: (min, max), each ndarray[3], of the pixels outside ``box`` (None: the box is the frame).
    """

    box: Box
    span: tuple[np.ndarray, np.ndarray] | None


def outside_range(pixels: np.ndarray, box: Box) -> Outside:
    """The per-channel range of ``pixels`` (ndarray[H, W, C]) outside ``box``, NaN in a channel that holds
    NaN (so a non-finite frame shows in the result)."""
    parts = _outside(pixels, box)
    return Outside(box, _union([channel_range(p) for p in parts]) if parts else None)


def known_range(
    plate_rgb: np.ndarray, box: Box, known_in_box: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (min, max) of a frame's finite pixels outside the hole, or None when there are none.

    Args:
        plate_rgb (ndarray[H, W, 3] float32): the frame.
        box: ``(y0, y1, x0, x1)``, the hole's bounding box.
        known_in_box (ndarray[y1-y0, x1-x0] bool): the pixels of the box outside the hole.
    """
    y0, y1, x0, x1 = box
    span = _with_box(outside_range(plate_rgb, box).span, plate_rgb[y0:y1, x0:x1], known_in_box)
    if span is None or (np.isfinite(span[0]).all() and np.isfinite(span[1]).all()):
        return span
    # NaN or Inf among them (the reader refuses those, but the API takes any array): the finite ones
    parts = _outside(plate_rgb, box) + [plate_rgb[y0:y1, x0:x1][known_in_box][None]]
    values = np.concatenate([p.reshape(-1, 3) for p in parts])
    values = values[np.isfinite(values).all(axis=-1)]
    if values.size == 0:
        return None
    return values.min(axis=0), values.max(axis=0)


def _outside(pixels: np.ndarray, box: Box) -> list[np.ndarray]:
    """The frame around the box in four slices (no full-frame copy), the empty ones left out."""
    y0, y1, x0, x1 = box
    parts = [pixels[:y0], pixels[y1:], pixels[y0:y1, :x0], pixels[y0:y1, x1:]]
    return [p for p in parts if p.size]


def _with_box(
    span: tuple[np.ndarray, np.ndarray] | None, box_rgb: np.ndarray, known_in_box: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """``span`` (the range outside the box) widened by the box's known pixels (None: neither has any)."""
    if not known_in_box.any():
        return span
    parts = [] if span is None else [span]
    whole = channel_range(np.ascontiguousarray(box_rgb))
    if box_rgb.ndim == 3 and np.isfinite(whole[0]).all() and np.isfinite(whole[1]).all():
        # finite: OpenCV's masked minimum and maximum per channel, the same numbers in a fraction of the
        # time of a gather and a reduction over its first axis (1080p strokes: 10 against 150 ms)
        mask = np.ascontiguousarray(known_in_box).view(np.uint8)
        found = [cv2.minMaxLoc(plane, mask)[:2] for plane in cv2.split(box_rgb)]
        parts.append(
            (np.array([f[0] for f in found], box_rgb.dtype), np.array([f[1] for f in found], box_rgb.dtype))
        )
    else:  # (NaN where a known pixel holds one: OpenCV would pass over it)
        parts.append(channel_range(box_rgb[known_in_box][None]))
    return _union(parts)


def _union(ranges: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.min([r[0] for r in ranges], axis=0), np.max([r[1] for r in ranges], axis=0)


def channel_range(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (min, max) of ``pixels`` (ndarray[h, w, C], rows contiguous; NaN where any is NaN):
    each row taken as one run of ``w * C`` values, so the reductions run along long contiguous rows (a
    reduction over an [N, C] array's first axis is some thirty times slower)."""
    c = pixels.shape[-1]
    rows = pixels.reshape(pixels.shape[0], -1)
    return rows.min(axis=0).reshape(-1, c).min(axis=0), rows.max(axis=0).reshape(-1, c).max(axis=0)


def lossy_reason(
    out: SequencePattern, spec: oiio.ImageSpec, *, compression: str | None, pixel_type: str | None
) -> tuple[str | None, oiio.ImageSpec | None]:
    """Why writing ``spec``'s image to ``out`` would change pixels outside the matte, and the spec the
    format stores (None when the format cannot be probed).

    Returns:
        (what is lossy, that pixels outside the matte would change, and the lossless alternative, in
        one line; None when the output keeps them bit-exact), stored spec.
    """
    sample = out.path(1001)
    creator = oiio.ImageOutput.create(str(sample))
    fmt = creator.format_name() if creator is not None else out.extension
    given = compression is not None
    method = str(compression if given else spec.get_string_attribute("compression") or "").split(":")[0]
    changes = "so pixels outside the matte would not stay bit-exact"
    if fmt in LOSSY_FORMATS:
        what = f"{LOSSY_FORMATS[fmt]} is lossy, {changes}; write EXR, PNG or TIFF"
        return what, _stored(out, spec, compression, pixel_type)
    if fmt == "openexr" and method in LOSSY_COMPRESSIONS:
        option = (
            f"--compression {method} is" if given else f"the plate's compression {method}, kept on output, is"
        )
        return f"{option} lossy, {changes}; use --compression zip or piz", _stored(
            out, spec, compression, pixel_type
        )
    exact, stored = round_trip(sample, spec, compression=compression, pixel_type=pixel_type)
    if exact:
        return None, stored
    asked = pixel_type or _type_name(spec)
    return (
        f"{fmt} stores these {asked} pixels as {_type_name(stored)} ({stored.nchannels} "
        f"channel(s)), {changes}; write EXR or a format that holds {asked}",
        stored,
    )


def _type_name(spec: oiio.ImageSpec) -> str:
    types = {str(t) for t in spec.channelformats} or {str(spec.format)}
    return "/".join(sorted(types))


def _stored(
    out: SequencePattern, spec: oiio.ImageSpec, compression: str | None, pixel_type: str | None
) -> oiio.ImageSpec | None:
    try:
        return round_trip(out.path(1001), spec, compression=compression, pixel_type=pixel_type)[1]
    except OutputError:
        return None


#: A lock whose owner has not refreshed it for this long is stale (its host died or lost the share).
LOCK_STALE_S = 600.0
#: How often the owner refreshes its lock's modification time.
LOCK_HEARTBEAT_S = 30.0
_LOCK_SUFFIX = ".combcn-lock"


def _pattern_key(out: SequencePattern) -> str:
    if not out.has_token:
        return out.prefix
    token = "#" * out.padding if out.padding else "%d"
    return f"{out.prefix}{token}{out.suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_locks(out: SequencePattern) -> list[str]:
    """Remove the stale locks (see :class:`OutputLock`) that renders of ``out`` left beside it, of
    any frames: a render killed after its last frame leaves one that no later render would take over.

    Returns:
        One warning per lock removed (also logged).
    """
    folder = Path(out.path(0)).parent
    warnings = []
    for path in sorted(folder.glob(f"{glob.escape(f'.{_pattern_key(out)}.')}*{_LOCK_SUFFIX}")):
        owner = OutputLock._read(path)
        if not OutputLock._stale(path, owner):
            continue
        who = "unknown owner" if owner is None else f"pid {owner.get('pid')} on {owner.get('host')}"
        message = f"{path}: removed a stale lock ({who}, no longer running)"
        log.warning(message)
        warnings.append(message)
        path.unlink(missing_ok=True)
    return warnings


class OutputLock:
    """A lock file beside the outputs: one render per output pattern and frame set at a time.

    The file ``.<pattern>.<first>-<last>.<digest>.combcn-lock`` holds the owner's pid, host, start
    time and frames. Renders of disjoint frame sets (farm chunks) take different files and run
    together; a render whose frames overlap a live lock's refuses (of two that start at once, the
    later-started one refuses). A lock is stale when its pid is gone on this host or it has not been
    refreshed for :data:`LOCK_STALE_S` seconds (the owner refreshes it in a thread); a stale lock is
    taken over with a warning (and every render of the pattern removes the stale ones it finds, see
    :func:`remove_stale_locks`).

    Args:
        out: the output pattern.
        frames: the frames this render is asked to write.
    """

    def __init__(self, out: SequencePattern, frames: list[int]):
        self.out = out
        self.frames = sorted(set(frames))
        key = _pattern_key(out)
        digest = hashlib.sha1(",".join(map(str, self.frames)).encode()).hexdigest()[:8]
        folder = Path(out.path(self.frames[0])).parent
        self.path = folder / f".{key}.{self.frames[0]}-{self.frames[-1]}.{digest}{_LOCK_SUFFIX}"
        self._siblings = f".{key}.*{_LOCK_SUFFIX}"
        self.owner: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "frames": str(FrameSet(self.frames)),
        }
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.warnings: list[str] = []

    def _describe(self, path: Path, owner: dict[str, Any]) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(owner.get("started", 0))))
        return (
            f"another combcn render (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started "
            f"{started}, frames {owner.get('frames', '?')}) is writing these frames (lock {path}); wait "
            "for it to finish, or if it is gone delete the lock file and run again"
        )

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    @staticmethod
    def _stale(path: Path, owner: dict[str, Any] | None) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        if owner is None:  # being written this instant, or garbage left by a crash
            return age > LOCK_STALE_S
        if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1))):
            return True
        return age > LOCK_STALE_S

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.owner, f)
        return True

    def _take_over(self, path: Path, owner: dict[str, Any] | None) -> None:
        who = "unknown owner" if owner is None else f"pid {owner.get('pid')} on {owner.get('host')}"
        message = f"{path}: taking over a stale lock ({who}, no longer running)"
        log.warning(message)
        self.warnings.append(message)
        path.unlink(missing_ok=True)

    def _overlapping(self) -> list[tuple[Path, dict[str, Any] | None]]:
        mine = set(self.frames)
        found = []
        for path in sorted(self.path.parent.glob(self._siblings)):
            if path == self.path:
                continue
            owner = self._read(path)
            if owner is None:  # created this instant: its owner is writing it
                time.sleep(0.5)
                owner = self._read(path)
            try:
                theirs = set(FrameSet.parse(str((owner or {}).get("frames", ""))).frames)
            except CombcnError:
                theirs = mine  # unreadable: assume it overlaps
            if mine & theirs:
                found.append((path, owner))
        return found

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputError` naming the live lock in the way."""
        for _ in range(3):
            if self._create():
                break
            owner = self._read(self.path)
            if owner is None:  # created this instant: its owner is writing it
                time.sleep(0.5)
                owner = self._read(self.path)
            if not self._stale(self.path, owner):
                raise OutputError(self._describe(self.path, owner or {}), path=self.out.path(self.frames[0]))
            self._take_over(self.path, owner)
        else:
            raise OutputError(
                f"cannot take the lock {self.path}; another render keeps taking it. Run again",
                path=self.out.path(self.frames[0]),
            )
        try:
            mine = (float(self.owner["started"]), str(self.owner["host"]), int(self.owner["pid"]))
            for path, owner in self._overlapping():
                if owner is None or self._stale(path, owner):
                    if owner is not None:
                        self._take_over(path, owner)
                    continue
                theirs = (
                    float(owner.get("started", 0)),
                    str(owner.get("host", "")),
                    int(owner.get("pid", 0)),
                )
                if theirs < mine:
                    raise OutputError(self._describe(path, owner), path=self.out.path(self.frames[0]))
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        self._beat = threading.Thread(target=self._heartbeat, name="combcn-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Remove the lock if this render still owns it."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        owner = self._read(self.path)
        if (
            owner is not None
            and owner.get("pid") == self.owner["pid"]
            and owner.get("host") == self.owner["host"]
        ):
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
