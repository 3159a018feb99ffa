"""Opening plates and mattes: the one reader every part of combcn uses.

A :class:`Plate` is a numbered run of frames on disk (an image sequence pattern, a single image used
for every frame, a folder of frames, or a movie). Everything that decides what its pixels mean lives
here, once: which channels are R, G, B and which is the matte, how a matte's data window is laid onto
the plate's, how stored integers become floats, and what happens to NaN and Inf. The engine, training,
finetune and evaluation all read through it, so one plate means one thing everywhere.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import OpenImageIO as oiio

from combcn.errors import InputError
from combcn.io.image import ImageData, Part, read_header, read_image, read_rows
from combcn.io.movie import MovieReader, is_movie
from combcn.io.sequence import SequencePattern

log = logging.getLogger("combcn.io")

#: File extensions a folder of frames may hold.
IMAGE_EXTENSIONS = {".exr", ".dpx", ".tif", ".tiff", ".png", ".jpg", ".jpeg"}

Windows = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]


def to_unit(pixels: np.ndarray) -> np.ndarray:
    """Stored pixels -> float32 (integers scaled to [0, 1], floats as they are), C-contiguous (a
    channel selection's strides would make every OpenCV call on it copy the whole image first)."""
    if np.issubdtype(pixels.dtype, np.integer):
        return pixels.astype(np.float32, order="C") / float(np.iinfo(pixels.dtype).max)
    if pixels.dtype == np.float16 and pixels.size >= 1 << 16:
        # numpy widens half floats one at a time; torch's vectorised conversion is ~5x faster on a
        # plate (and exact: every half is a float32)
        import torch

        out: np.ndarray = torch.from_numpy(np.ascontiguousarray(pixels)).float().numpy()
        return out
    return pixels.astype(np.float32, order="C")


def windows_of(spec: oiio.ImageSpec) -> Windows:
    """((x, y, width, height) of the data window, (x, y, width, height) of the display window)."""
    return (spec.x, spec.y, spec.width, spec.height), (
        spec.full_x,
        spec.full_y,
        spec.full_width,
        spec.full_height,
    )


def rgb_channels(spec: oiio.ImageSpec, path: str | Path) -> list[int]:
    """Indices of the R, G, B channels (the first three channels when none are named R, G, B;
    a single-channel image is read as grey)."""
    names = list(spec.channelnames)
    if all(c in names for c in ("R", "G", "B")):
        return [names.index(c) for c in ("R", "G", "B")]
    if len(names) >= 3:
        log.warning("%s: no channels named R, G, B; inpainting %s", path, ", ".join(names[:3]))
        return [0, 1, 2]
    raise InputError(
        f"has channels {', '.join(names)}; combcn needs three colour channels (R, G, B)", path=path
    )


def matte_channel_index(
    spec: oiio.ImageSpec, channel: str | None, path: str | Path, *, own_alpha: bool
) -> int:
    """Index of the matte channel.

    ``channel`` names it exactly; None picks, on a separate matte, A then Y then R then the first
    channel, and on the plate itself (``own_alpha``) its alpha channel.
    """
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


def align_matte(values: np.ndarray, matte_spec: oiio.ImageSpec, plate_spec: oiio.ImageSpec) -> np.ndarray:
    """Matte values laid onto the plate's data window (zero where the matte's data window has none).

    Args:
        values (ndarray[h, w]): the matte channel over the matte's data window.

    Returns:
        ndarray[H, W] float32 over the plate's data window.
    """
    (mx, my, mw, mh), _ = windows_of(matte_spec)
    (px, py, pw, ph), _ = windows_of(plate_spec)
    if (mx, my, mw, mh) == (px, py, pw, ph):
        return values.astype(np.float32)
    out = np.zeros((ph, pw), np.float32)
    x0, x1 = max(mx, px), min(mx + mw, px + pw)
    y0, y1 = max(my, py), min(my + mh, py + ph)
    if x1 > x0 and y1 > y0:
        out[y0 - py : y1 - py, x0 - px : x1 - px] = values[y0 - my : y1 - my, x0 - mx : x1 - mx]
    return out


def check_finite(rgb: np.ndarray, path: str | Path, frame: int | None = None) -> None:
    """The NaN/Inf policy: colour channels must be finite; refuse with one line otherwise."""
    if not np.isfinite(rgb).all():
        raise InputError(
            "the plate has NaN or Inf pixels in R, G or B; fix them first "
            "(e.g. oiiotool in.exr --fixnan box3 -o fixed.exr)",
            path=path,
            frame=frame,
        )


def _movie_spec(pixels: np.ndarray) -> oiio.ImageSpec:
    spec = oiio.ImageSpec(
        pixels.shape[1], pixels.shape[0], 3, "uint16" if pixels.dtype == np.uint16 else "uint8"
    )
    spec.channelnames = ("R", "G", "B")
    return spec


def _number(path: Path) -> int | None:
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else None


class Plate:
    """Frames of an image sequence, a single image, a folder of frames or a movie.

    Args:
        path: ``plate.####.exr`` (also ``%04d``, ``@@@@``), one image (used for every frame), a folder
            of images (frames numbered by the last number in each name, else 1, 2, ...), or a movie
            (frames 1 .. N).
        part: part index or name of multi-part EXRs.
        what: ``"plate"`` or ``"matte"``, for messages.

    Attributes:
        frames (list[int]): frame numbers on disk, ascending.
        static (bool): one image stands for every frame (a still matte).
    """

    def __init__(self, path: str | Path, *, part: Part = None, what: str = "plate"):
        self.what = what
        self.part = part
        self.path = str(path)
        self.movie: MovieReader | None = None
        self.pattern: SequencePattern | None = None
        self._files: dict[int, Path] | None = None
        if is_movie(path):
            self.movie = MovieReader(path)
            self.frames = self.movie.frames
        elif Path(path).is_dir():
            files = sorted(p for p in Path(path).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            numbers = [_number(p) for p in files]
            if None in numbers or len(set(numbers)) != len(numbers):
                numbers = list(range(1, len(files) + 1))
            self._files = {int(n): p for n, p in sorted(zip(numbers, files, strict=True))}  # type: ignore[arg-type]
            self.frames = list(self._files)
        else:
            self.pattern = SequencePattern(path)
            self.frames = self.pattern.frames_on_disk()
        if not self.frames:
            raise InputError(
                f"no {what} frames found here; check the folder, the name and the frame token "
                "(#### = 4 digits, %04d, @@@@)",
                path=path,
            )
        self._frame_set = set(self.frames)
        self.static = self.pattern is not None and not self.pattern.has_token

    def file(self, frame: int) -> str:
        """The file that holds ``frame`` (the movie itself for a movie)."""
        if self._files is not None:
            return str(self._files.get(frame, Path(self.path) / f"<frame {frame}>"))
        return self.path if self.pattern is None else str(self.pattern.path(frame))

    def _require(self, frame: int) -> None:
        if frame not in self._frame_set and not self.static:
            raise InputError(f"{self.what} frame is missing", path=self.file(frame), frame=frame)

    def header(self, frame: int) -> oiio.ImageSpec:
        """The spec of ``frame`` without reading pixels (a movie reports its stream's)."""
        if self.movie is not None:
            return _movie_spec(
                np.zeros((self.movie.height, self.movie.width, 3), np.uint16 if self.movie.deep else np.uint8)
            )
        self._require(frame)
        try:
            return read_header(self.file(frame), self.part)
        except InputError as exc:
            raise InputError(exc.message, path=exc.path, frame=frame) from None

    def read(self, frame: int, *, all_parts: bool = False) -> ImageData:
        """Pixels (stored type) and spec of ``frame``; ``all_parts`` also keeps every other part
        of a multi-part file, so the frame can be written back whole."""
        if self.movie is not None:
            pixels = self.movie.read(frame)
            return ImageData(pixels=pixels.copy(), spec=_movie_spec(pixels))
        self._require(frame)
        try:
            return read_image(self.file(frame), self.part, all_parts=all_parts)
        except InputError as exc:
            raise InputError(exc.message, path=exc.path, frame=frame) from None

    def read_rgb(self, frame: int, rgb: list[int], rows: tuple[int, int] | None = None) -> np.ndarray:
        """Only the colour channels ``rgb`` of ``frame`` (optionally only rows ``[y0, y1)``).

        Returns:
            ndarray[rows, W, 3] float32 in plate units (integers scaled to [0, 1]).
        """
        if self.movie is not None or self.static or self._files is not None:
            pixels = self.read(frame).pixels
            pixels = pixels if rows is None else pixels[rows[0] : rows[1]]
            return to_unit(pixels[..., rgb])
        self._require(frame)
        lo, hi = min(rgb), max(rgb) + 1
        try:
            if rows is None:
                rows = (0, read_header(self.file(frame), self.part).height)
            pixels = read_rows(self.file(frame), self.part, rows[0], rows[1], (lo, hi))
        except InputError as exc:
            raise InputError(exc.message, path=exc.path, frame=frame) from None
        return to_unit(pixels[..., [c - lo for c in rgb]])

    def close(self) -> None:
        """Release a movie decoder (image files hold nothing open)."""
        if self.movie is not None:
            self.movie.close()


def rgb_of(data: ImageData, rgb: list[int], box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The colour channels of an opened frame: ndarray[H, W, 3] float32 in plate units (with ``box``,
    ``(y0, y1, x0, x1)``, only that region: ndarray[y1-y0, x1-x0, 3])."""
    pixels = data.pixels if box is None else data.pixels[box[0] : box[1], box[2] : box[3]]
    return channels_to_unit(pixels, rgb)


def channels_to_unit(pixels: np.ndarray, channels: list[int]) -> np.ndarray:
    """``to_unit(pixels[..., channels])``, the same values: where the image has few more channels than
    are asked for, every channel is widened in one pass and the channels picked from the float32 result
    (NumPy gathers half floats about as slowly as it widens them, so this takes half the time)."""
    if pixels.shape[-1] > len(channels) + 1:
        return to_unit(pixels[..., channels])
    wide = to_unit(pixels)
    if list(channels) == list(range(wide.shape[-1])):
        return wide
    if wide.ndim != 3 or wide.size == 0:
        return np.ascontiguousarray(wide[..., channels])
    # OpenCV copies the channels in one pass (NumPy's gather of 3 of 4 float32 channels took 24 ms a
    # 1080p frame, this 3): a copy, the same bits
    out = np.empty(wide.shape[:2] + (len(channels),), np.float32)
    cv2.mixChannels([wide], [out], [v for i, c in enumerate(channels) for v in (c, i)])
    return out


def read_rgb_image(path: str | Path) -> np.ndarray:
    """One image's colour as float32 [H, W, 3] in plate units (grey images repeat their one channel).

    For training and evaluation inputs: R, G, B picked by name as the engine does; refuses NaN/Inf.
    """
    data = read_image(path, all_parts=False)
    names = data.channel_names
    if len(names) < 3:
        rgb = [0, 0, 0]
    else:
        rgb = rgb_channels(data.spec, path)
    pixels = rgb_of(data, rgb)
    check_finite(pixels, path)
    return pixels


def read_matte_image(path: str | Path, channel: str | None = None) -> np.ndarray:
    """One matte image as float32 [H, W] in [0, 1] units (channel as :func:`matte_channel_index`)."""
    data = read_image(path, all_parts=False)
    index = matte_channel_index(data.spec, channel, path, own_alpha=False)
    return to_unit(data.pixels[..., index])
