"""Training clips: discovery, decoding (OpenImageIO / PyAV), a uint8 cache, and 32-frame training windows.

A *clip* is one continuous shot. Sources can be

- a folder of frames (``clip/00000.jpg ...``, optional ``clip/masks/00000.png`` object mattes), the
  ``../shared/data/clips`` layout;
- a folder of such clip folders (each sub-folder is a clip; a ``manifest.json`` beside them gives licences);
- a movie file (anything PyAV decodes).

Decoding hundreds of JPEGs per window is too slow on 2 cores, so :func:`build_cache` decodes each clip
once, downscales it (area filter) to ``short_side`` pixels and stores ``<name>.npy`` (uint8
Tensor[T, H, W, 3]) and ``<name>.masks.npy`` (uint8 object ids Tensor[M, H, W]) plus ``<name>.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from combcn.errors import InputError

log = logging.getLogger("combcn.train.data")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".exr", ".tif", ".tiff", ".dpx")
MOVIE_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".mxf", ".m4v")
COMMERCIAL_PREFIXES = ("apache", "mit", "bsd")


@dataclass
class Clip:
    """A decoded (cached) clip.

    Attributes:
        name: unique clip name.
        frames: uint8 array [T, H, W, 3] (often a read-only memmap of the cache).
        masks: uint8 object-id array [M, H, W] or None; ``mask_index[i]`` is the frame of masks[i].
        mask_index: frame numbers (0-based) of the masks.
        licence: licence string from the manifest, if known.
    """

    name: str
    frames: np.ndarray
    masks: np.ndarray | None = None
    mask_index: list[int] = field(default_factory=list)
    licence: str | None = None

    @property
    def length(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class ClipSource:
    """Where a clip comes from before caching: a folder of frames or a movie file."""

    name: str
    path: Path
    licence: str | None = None


def is_commercial(licence: str | None) -> bool:
    """True if the licence string starts with Apache, MIT or BSD (commercially usable)."""
    return bool(licence) and str(licence).strip().lower().startswith(COMMERCIAL_PREFIXES)


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]

    def frame_key(p: Path) -> tuple[int, str]:
        m = re.search(r"(\d+)(?!.*\d)", p.stem)
        return (int(m.group(1)) if m else -1, p.name)

    return sorted(files, key=frame_key)


def discover(sources: Sequence[str | Path]) -> list[ClipSource]:
    """Find clips under each source (folder of frames, folder of clip folders, or movie file).

    Raises:
        InputError: a source does not exist or holds no frames, clips or movies.
    """
    found: list[ClipSource] = []
    for src in sources:
        path = Path(src).expanduser()
        if not path.exists():
            raise InputError("training source not found", path=path)
        if path.is_file():
            if path.suffix.lower() not in MOVIE_EXTS:
                raise InputError(
                    f"not a movie file ({', '.join(MOVIE_EXTS)}) or a folder of frames", path=path
                )
            found.append(ClipSource(path.stem, path))
            continue
        if _frame_files(path):
            found.append(ClipSource(path.name, path))
            continue
        licences: dict[str, str] = {}
        manifest = path / "manifest.json"
        if manifest.is_file():
            try:
                entries = json.loads(manifest.read_text())
                licences = {str(e["name"]): str(e.get("licence", "")) for e in entries}
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: cannot read licences (%s); treating them as unknown", manifest, exc)
        children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        n_before = len(found)
        for child in children:
            if child.is_dir() and _frame_files(child):
                found.append(ClipSource(child.name, child, licences.get(child.name)))
            elif child.is_file() and child.suffix.lower() in MOVIE_EXTS:
                found.append(ClipSource(child.stem, child, licences.get(child.stem)))
        if len(found) == n_before:
            raise InputError("no clips found (expected frames, clip folders or movie files)", path=path)
    names = [c.name for c in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"clip names are not unique: {', '.join(dupes)}; rename or list fewer sources")
    return found


def read_image(path: Path) -> np.ndarray:
    """One training frame as uint8 [H, W, 3], in the encoding the engine feeds the model for a plate of
    its type: read through :mod:`combcn.io.plate` (the engine's channel and NaN rules), then the
    engine's default shaper for its pixel type (display-referred 8/16-bit as stored, float plates
    through ACEScct), then quantised."""
    from combcn.engine.shaper import default_shaper_for, get_shaper
    from combcn.io.image import read_image as read_stored
    from combcn.io.plate import check_finite, rgb_channels, rgb_of

    data = read_stored(path, all_parts=False)
    rgb = [0, 0, 0] if data.spec.nchannels < 3 else rgb_channels(data.spec, path)
    linear = rgb_of(data, rgb)
    check_finite(linear, path)
    shaped = get_shaper(default_shaper_for(data.pixels.dtype)).encode(linear)
    out: np.ndarray = (np.clip(shaped, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def _read_pixels(path: Path) -> np.ndarray:
    """The first part of an image in its stored type, [H, W, C] (through :mod:`combcn.io`)."""
    from combcn.io.image import read_image as read_stored

    return read_stored(path, all_parts=False).pixels


def read_mask(path: Path) -> np.ndarray:
    """Read an object matte (palette/grey/RGB PNG) as uint8 ids [H, W] (0 = background)."""
    a = _read_pixels(path)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.shape[2] == 1:
        return np.ascontiguousarray(a[:, :, 0])
    if a.ndim == 3:
        # colour palettes: one id per distinct colour; the most frequent colour is the background
        flat = a[:, :, :3].astype(np.int32)
        key = (flat[:, :, 0] << 16) | (flat[:, :, 1] << 8) | flat[:, :, 2]
        values, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        order = np.argsort(-counts)  # id 0 = background, then by decreasing area
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return np.clip(rank[inv.reshape(key.shape)], 0, 255).astype(np.uint8)
    return a.astype(np.uint8)


def _resize(img: np.ndarray, short_side: int, *, nearest: bool = False) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = short_side / min(h, w)
    if s >= 1.0:
        return img
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(img, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def decode(source: ClipSource, short_side: int) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Decode a clip, downscaled so its short side is ``short_side``: (frames uint8 [T, H, W, 3],
    masks uint8 [M, H, W] or None, mask frame indices). Raises InputError naming the bad file."""
    if source.path.is_file():
        import av

        frames = []
        try:
            with av.open(str(source.path)) as container:
                for frame in container.decode(video=0):
                    frames.append(_resize(frame.to_ndarray(format="rgb24"), short_side))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"cannot decode movie ({exc})", path=source.path) from exc
        if not frames:
            raise InputError("movie has no video frames", path=source.path)
        return np.stack(frames), None, []
    files = _frame_files(source.path)
    frames = [_resize(read_image(f), short_side) for f in files]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise InputError(f"frames differ in size ({sorted(shapes)})", path=source.path)
    stack = np.stack(frames)
    masks = None
    index: list[int] = []
    mask_dir = source.path / "masks"
    if mask_dir.is_dir():
        by_stem = {f.stem: i for i, f in enumerate(files)}
        arrs = []
        for m in _frame_files(mask_dir):
            if m.stem not in by_stem:
                continue
            a = read_mask(m)
            a = _resize(a, short_side, nearest=True) if a.shape[:2] != stack.shape[1:3] else a
            if a.shape[:2] != stack.shape[1:3]:
                import cv2

                a = cv2.resize(a, (stack.shape[2], stack.shape[1]), interpolation=cv2.INTER_NEAREST)
            arrs.append(a)
            index.append(by_stem[m.stem])
        if arrs:
            masks = np.stack(arrs)
    return stack, masks, index


def _save_npy(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _source_stamp(source: ClipSource) -> dict[str, Any]:
    if source.path.is_file():
        st = source.path.stat()
        return {"path": str(source.path), "files": 1, "mtime": st.st_mtime}
    files = _frame_files(source.path)
    return {
        "path": str(source.path),
        "files": len(files),
        "mtime": max((f.stat().st_mtime for f in files), default=0.0),
    }


def load_cached(source: ClipSource, cache_dir: str | Path, short_side: int) -> Clip:
    """Return the clip from the cache, decoding and caching it first if missing or stale."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    meta_path = cache / f"{source.name}.json"
    stamp = {**_source_stamp(source), "short_side": short_side}
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = {}
    if meta.get("stamp") != stamp or not (cache / f"{source.name}.npy").is_file():
        frames, masks, index = decode(source, short_side)
        _save_npy(cache / f"{source.name}.npy", frames)
        if masks is not None:
            _save_npy(cache / f"{source.name}.masks.npy", masks)
        meta = {"stamp": stamp, "mask_index": index, "licence": source.licence, "shape": list(frames.shape)}
        meta_path.write_text(json.dumps(meta))
        log.info("cached %s: %s", source.name, frames.shape)
    frames = np.load(cache / f"{source.name}.npy", mmap_mode="r")
    masks = None
    if meta.get("mask_index"):
        masks = np.load(cache / f"{source.name}.masks.npy", mmap_mode="r")
    return Clip(source.name, frames, masks, list(meta.get("mask_index", [])), source.licence)


def check_clip(clip: Clip, window: int, resolution: int) -> None:
    """Raise InputError if the clip is too short for a window or too small for a crop."""
    t, h, w, _ = clip.frames.shape
    if t < window:
        raise InputError(
            f"clip {clip.name!r} has {t} frames, fewer than the window of {window}; "
            "lower data.window or drop the clip"
        )
    if min(h, w) < resolution:
        raise InputError(
            f"clip {clip.name!r} is {w}x{h}, smaller than the {resolution}px crop; "
            "lower data.resolution or drop the clip"
        )


def load_clips(
    sources: Iterable[ClipSource], cache_dir: str | Path, *, short_side: int, window: int, resolution: int
) -> list[Clip]:
    """Load (and cache) every clip; clips that are unreadable, too short or too small are skipped
    with a warning naming the clip, so a long run does not die on one bad clip."""
    clips = []
    for source in sources:
        try:
            clip = load_cached(source, cache_dir, short_side)
            check_clip(clip, window, resolution)
        except InputError as exc:
            log.warning("skipping clip %s: %s", source.name, exc)
            continue
        clips.append(clip)
    return clips


def split_by_clip(
    names: Sequence[str], val_clips: Sequence[str] | None, val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split clip names into (train, validation), by clip never by sample (paper §9 item 10).

    ``val_clips`` lists them explicitly; else ``val_fraction`` of the clips (at least one if there are
    two or more) is drawn with ``seed``.
    """
    names = sorted(names)
    if val_clips:
        missing = sorted(set(val_clips) - set(names))
        if missing:
            log.warning("validation clips not found (or skipped): %s", ", ".join(missing))
        val = [n for n in names if n in set(val_clips)]
    else:
        k = int(round(len(names) * val_fraction))
        if val_fraction > 0 and len(names) >= 2:
            k = max(1, k)
        rng = np.random.default_rng(seed)
        val = sorted(rng.choice(names, size=min(k, len(names) - 1), replace=False).tolist()) if k else []
    train = [n for n in names if n not in set(val)]
    return train, val
