"""Images through OpenImageIO, keeping everything a pipeline cares about.

An :class:`ImageData` holds the pixels of one part of a file in their stored type (half stays
``float16``, 8-bit stays ``uint8``) together with the part's full ``ImageSpec`` (channels, data and
display windows, compression, metadata) and, for multi-part EXRs, every other part verbatim, so a
frame written back with only some pixels changed is otherwise a bit-exact copy.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from combcn.errors import ConfigError, InputError, OutputError

log = logging.getLogger("combcn.io")

#: Pixel types a user may ask for on output.
PIXEL_TYPES = {"half": "half", "float": "float", "uint8": "uint8", "uint16": "uint16"}

#: EXR compressions OIIO knows; OIIO silently turns unknown names into zip, so we check first.
EXR_COMPRESSIONS = ("none", "rle", "zips", "zip", "piz", "pxr24", "b44", "b44a", "dwaa", "dwab")

Part = int | str | None

#: EXR compressions that change pixel values (bit-exact copy-through needs a lossless one).
LOSSY_COMPRESSIONS = {"dwaa", "dwab", "b44", "b44a"}
_warned_lossy: set[str] = set()


@dataclass
class ImageData:
    """One image part in memory.

    Attributes:
        pixels (ndarray[H, W, C]): the data window's pixels in the stored type (float16, float32,
            uint8, uint16; float64 when channels have mixed types, which converts back exactly).
        spec (oiio.ImageSpec): the part's spec (windows, channel names/types, metadata).
        part (int): index of the part in its file.
        parts (list[tuple[oiio.ImageSpec, ndarray]]): every part of the file, for multi-part copy-through
            (entry ``part`` is replaced by ``spec``/``pixels`` when writing).
    """

    pixels: np.ndarray
    spec: oiio.ImageSpec
    part: int = 0
    parts: list[tuple[oiio.ImageSpec, np.ndarray]] = field(default_factory=list)

    @property
    def channel_names(self) -> list[str]:
        return list(self.spec.channelnames)


def _open(path: str | Path) -> oiio.ImageInput:
    """Open for reading with colour as stored: no premultiplication of unassociated-alpha formats
    (PNG, TIFF), so untouched pixels write back bit-exact (the spec keeps oiio:UnassociatedAlpha)."""
    if not Path(path).exists():
        raise InputError("file not found; check the pattern and the frame range", path=path)
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)
    inp = oiio.ImageInput.open(str(path), config)
    if inp is None:
        raise InputError(
            f"cannot read this image ({oiio.geterror().strip() or 'unknown format'}); "
            "is it complete and in a format OpenImageIO reads (EXR, DPX, TIFF, PNG, JPG)?",
            path=path,
        )
    return inp


def _part_names(inp: oiio.ImageInput) -> list[str]:
    names: list[str] = []
    index = 0
    while inp.seek_subimage(index, 0):
        names.append(str(inp.spec().getattribute("name") or f"part{index}"))
        index += 1
    return names


def _select_part(inp: oiio.ImageInput, part: Part, path: str | Path) -> int:
    if part is None or part == 0:
        return 0
    names = _part_names(inp)
    if isinstance(part, int):
        if 0 <= part < len(names):
            return part
        raise InputError(f"has {len(names)} part(s); part {part} does not exist", path=path)
    if part in names:
        return names.index(part)
    raise InputError(
        f"has no part named {part!r}; its parts are: {', '.join(names)}. Pick one with --part", path=path
    )


def _pixel_error(inp: oiio.ImageInput) -> str:
    """What OpenImageIO said when pixels could not be decoded, in one line."""
    said = " ".join((inp.geterror().strip() or oiio.geterror().strip() or "no reason given").split())
    return (
        f"OpenImageIO cannot decode the pixels: {said}; if the file was cut short (full disk, "
        "interrupted copy) re-render or re-copy it"
    )


def read_header(path: str | Path, part: Part = None) -> oiio.ImageSpec:
    """The spec of one part of ``path`` without reading pixels."""
    inp = _open(path)
    try:
        index = _select_part(inp, part, path)
        inp.seek_subimage(index, 0)
        return oiio.ImageSpec(inp.spec())
    finally:
        inp.close()


def _stored_format(spec: oiio.ImageSpec) -> str:
    # Mixed per-channel types (e.g. RGB half + Z float) read as double, which holds every one exactly.
    if len(spec.channelformats) and len({str(t) for t in spec.channelformats}) > 1:
        return "double"
    return "unknown"


def _read_part(inp: oiio.ImageInput, index: int, path: str | Path) -> tuple[oiio.ImageSpec, np.ndarray]:
    inp.seek_subimage(index, 0)
    spec = oiio.ImageSpec(inp.spec())
    pixels = inp.read_image(index, 0, 0, spec.nchannels, _stored_format(spec))
    if pixels is None:
        raise InputError(_pixel_error(inp), path=path)
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return spec, pixels.reshape(spec.height, spec.width, spec.nchannels)


def read_image(path: str | Path, part: Part = None, *, all_parts: bool = True) -> ImageData:
    """Read one part of an image (and, with ``all_parts``, every other part for copy-through).

    Args:
        path: the file.
        part: part index or name for multi-part EXRs (None = the first).
        all_parts: also read the other parts (needed to write the file back whole).

    Returns:
        ImageData: pixels (ndarray[H, W, C], stored type) and spec of the part.
    """
    inp = _open(path)
    try:
        index = _select_part(inp, part, path)
        spec, pixels = _read_part(inp, index, path)
        parts: list[tuple[oiio.ImageSpec, np.ndarray]] = []
        if all_parts:
            i = 0
            while inp.seek_subimage(i, 0):
                parts.append((spec, pixels) if i == index else _read_part(inp, i, path))
                i += 1
        return ImageData(pixels=pixels, spec=spec, part=index, parts=parts)
    finally:
        inp.close()


def read_rows(path: str | Path, part: Part, y0: int, y1: int, channels: tuple[int, int]) -> np.ndarray:
    """Rows ``y0 .. y1-1`` (counted from the top of the data window) of channels ``[c0, c1)``.

    Reading only what a crop needs keeps I/O proportional to the hole, not the plate.

    Returns:
        ndarray[y1 - y0, W, c1 - c0] in the stored type (float64 for mixed channel types).
    """
    inp = _open(path)
    try:
        index = _select_part(inp, part, path)
        inp.seek_subimage(index, 0)
        spec = inp.spec()
        c0, c1 = channels
        if spec.tile_width > 0:  # tiled files have no scanline API: read the tiles that hold the rows
            rows = inp.read_image(index, 0, c0, c1, _stored_format(spec))
            if rows is not None:
                rows = np.asarray(rows).reshape(spec.height, spec.width, c1 - c0)[y0:y1]
        else:
            rows = inp.read_scanlines(
                index, 0, spec.y + y0, spec.y + y1, spec.z, c0, c1, _stored_format(spec)
            )
        if rows is None:
            raise InputError(_pixel_error(inp), path=path)
        return np.asarray(rows).reshape(y1 - y0, spec.width, c1 - c0)
    finally:
        inp.close()


def output_spec(
    spec: oiio.ImageSpec, *, compression: str | None = None, pixel_type: str | None = None
) -> oiio.ImageSpec:
    """A copy of ``spec`` with an optional compression and pixel type override."""
    out = oiio.ImageSpec(spec)
    if pixel_type is not None:
        if pixel_type not in PIXEL_TYPES:
            raise ConfigError(f"unknown pixel type {pixel_type!r}; use one of {', '.join(PIXEL_TYPES)}")
        out.set_format(oiio.TypeDesc(PIXEL_TYPES[pixel_type]))
        out.channelformats = ()
    if compression is not None:
        base = compression.split(":")[0]
        if base not in EXR_COMPRESSIONS and base not in ("lzw", "zip", "jpeg", "packbits", "none"):
            raise ConfigError(
                f"unknown compression {compression!r}; EXR takes {', '.join(EXR_COMPRESSIONS)} "
                "(dwaa:45 sets a level)"
            )
        out.attribute("compression", compression)
    return out


def check_writable_folder(path: str | Path, *, create: bool = False) -> None:
    """Raise :class:`OutputError` unless the folder of ``path`` is (or can be made) writable.

    Args:
        path: an output file.
        create: make the folder; otherwise only check the nearest existing ancestor (writes nothing).
    """
    folder = Path(path).absolute().parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"cannot create the output folder: {existing} is a file; check the -o path", path=folder
        )
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the output folder ({exc.strerror}); check the -o path", path=folder
            ) from None
        existing = folder
    probe = existing / f".combcn-write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch()  # os.access lies for root and on read-only mounts; try it
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"the output folder is not writable ({exc.strerror}); pick another -o or fix its permissions",
            path=folder,
        ) from None


def temp_path_for(path: str | Path) -> Path:
    """A unique hidden temporary name beside ``path``, same extension (OIIO picks the format by it)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.combcn-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{p.suffix}")


def stale_temp_files(path: str | Path) -> list[Path]:
    """Temporary files left next to ``path`` by an interrupted write."""
    p = Path(path)
    if not p.parent.is_dir():
        return []
    return sorted(p.parent.glob(f".{p.stem}.combcn-tmp-*{p.suffix}"))


def write_image_atomic(
    path: str | Path,
    data: ImageData,
    *,
    compression: str | None = None,
    pixel_type: str | None = None,
) -> Path:
    """Write ``data`` (every part, every channel, its spec) to ``path`` atomically.

    The image goes to a temporary file in the same folder that is renamed over ``path`` only
    once complete, so a killed render never leaves a half-written frame under the final name.
    """
    path = Path(path)
    creator = oiio.ImageOutput.create(str(path))
    if creator is None:
        raise OutputError(
            f"no image writer for this extension ({oiio.geterror().strip()}); "
            "use .exr, .dpx, .tif, .png or .jpg",
            path=path,
        )
    parts = data.parts or [(data.spec, data.pixels)]
    parts = [(data.spec, data.pixels) if i == data.part else p for i, p in enumerate(parts)]
    if len(parts) > 1 and not creator.supports("multiimage"):
        log.warning("%s: this format holds one part; writing only part %d", path, data.part)
        parts = [(data.spec, data.pixels)]
    specs = [output_spec(s, compression=compression, pixel_type=pixel_type) for s, _ in parts]
    lossy = {str(sp.get_string_attribute("compression")).split(":")[0] for sp in specs} & LOSSY_COMPRESSIONS
    if lossy and path.suffix.lower() == ".exr" and not lossy <= _warned_lossy:
        _warned_lossy.update(lossy)
        log.warning(
            "%s: compression %s is lossy, so pixels outside the matte are re-encoded and may differ from "
            "the input; use --compression zip or piz to keep them bit-exact",
            path,
            ", ".join(sorted(lossy)),
        )
    tmp = temp_path_for(path)
    try:
        ok = creator.open(str(tmp), specs) if len(specs) > 1 else creator.open(str(tmp), specs[0])
        for i, ((_, pixels), spec) in enumerate(zip(parts, specs, strict=True)):
            if i > 0:
                ok = ok and creator.open(str(tmp), spec, "AppendSubimage")
            ok = ok and creator.write_image(np.ascontiguousarray(pixels))
        ok = creator.close() and ok
        if not ok:
            raise OutputError(
                f"writing failed: {creator.geterror().strip() or oiio.geterror().strip()}", path=path
            )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
