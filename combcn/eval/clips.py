"""Evaluation windows cut from clips, at one or more resolutions, with holes of one or more families.

A clip is a folder of frames named in frame order (the ``data/clips`` layout: ``NNNNN.jpg``, with an
optional ``masks/`` subfolder of object masks named like the frames). A window is ``T`` consecutive
frames, either at the clip's own size (``native``: no crop, no resize) or as the largest centred
square resized to ``S`` x ``S`` (the paper's protocol, §5). Hole families (all drawn by
:mod:`combcn.holes`, the code training uses):

- ``box``: the paper's box (§4), sides 0.375-0.5 of the frame's, the same place in every frame;
- ``strokes``: brush strokes carried along a smooth path across the window;
- ``objects``: a real object's silhouette sequence from some clip's ``masks/`` (another clip's, or the
  same clip's at frames outside the window), scaled and placed on the window;
- ``drift``: the training strokes that drift and wobble (the old ``--hole strokes``).

The truth under every hole is known: a hole is only a matte cut into real frames, never an object
that is really in them. Every choice is deterministic for a seed: window starts, holes, and which
silhouette goes where; a window's frames are read once for all its resolutions and families.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from combcn.errors import ConfigError, InputError

log = logging.getLogger("combcn.eval")

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

#: Hole side range as a fraction of the crop side: [0.375 l, 0.5 l] (paper §4; 48-64 px at 128).
HOLE_MIN_FRACTION = 0.375
HOLE_MAX_FRACTION = 0.5


@dataclass
class Window:
    """One evaluation sample.

    Attributes:
        clip (str): clip name (its folder's name).
        start (int): index of the first frame in the clip's sorted frame list.
        box (tuple[int, int, int, int] | None): the box hole as (top, left, height, width) in window
            pixels; None for other holes.
        truth (Tensor[1, 3, T, H, W]): the frames in [0, 1], float32 (H = W = S for a square window).
        hole (Tensor[1, 1, T, H, W]): 1 = hole, float32.
        resolution (str): ``"native"`` or the square's side, e.g. ``"128"``.
        family (str): the hole family (:data:`HOLE_FAMILIES`).
        source (str | None): for ``objects``, where the silhouette comes from (``clip:first frame``).
    """

    clip: str
    start: int
    box: tuple[int, int, int, int] | None
    truth: Tensor
    hole: Tensor
    resolution: str = "128"
    family: str = "box"
    source: str | None = None


def list_frames(clip_dir: Path) -> list[Path]:
    """The clip's frame files in name order (sub-folders such as ``masks/`` are not frames)."""
    return sorted(p for p in clip_dir.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def read_split(path: Path) -> list[str]:
    """Clip names from a split file.

    Accepted forms: a text file with one name per line (``#`` starts a comment); a JSON or YAML
    list of names; a JSON or YAML object whose ``val``/``validation``/``valid``/``clips`` key holds
    that list; or a ``combcn train`` config (YAML), whose ``data.val_clips`` are its held-out clips.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read the split file ({exc.strerror})", path=path) from exc
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        return [n for n in names if n]
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json and yaml raise their own error types, with line numbers
        raise InputError(f"split file cannot be parsed ({exc})", path=path) from exc
    if isinstance(data, dict) and "base" in data:  # a training config that inherits: follow its chain
        from combcn.train.config import resolve_config

        data = resolve_config(path)
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "val_clips" in data["data"]:
        data = data["data"]["val_clips"]
    if isinstance(data, dict):
        for key in ("val", "validation", "valid", "clips", "val_clips"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
        raise InputError(
            "split file must hold a non-empty list of clip names (or an object with a 'val' list, "
            "or a training config with data.val_clips)",
            path=path,
        )
    return list(data)


def resolve_clips(names: Sequence[str], data: Path | None) -> list[Path]:
    """Clip folders for ``names``: a name is looked up under ``data``; a path to a folder is taken as is.

    Raises:
        InputError: a clip is unknown (with the clips that do exist), or no clip was given.
    """
    if not names:
        raise InputError("no clips to evaluate: give clip names, clip folders, or --split FILE")
    out = []
    for name in names:
        direct = Path(name)
        if direct.is_dir() and ("/" in name or data is None):
            out.append(direct)
            continue
        if data is None:
            raise InputError(f"unknown clip {name!r}: not a folder; pass --data DIR to look clips up by name")
        candidate = data / name
        if not candidate.is_dir():
            known = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
            hint = f"clips in {data}: {', '.join(known[:40])}" + (" ..." if len(known) > 40 else "")
            hint = hint if known else "that folder has no clips"
            raise InputError(f"unknown clip {name!r}; {hint}", path=data)
        out.append(candidate)
    return out


def paper_box(rng: np.random.Generator, size: int, width: int | None = None) -> tuple[int, int, int, int]:
    """One hole box (top, left, height, width) in a ``size`` x ``width`` frame (square by default): sides
    drawn independently in [0.375, 0.5] of the frame's, position uniform with the box inside it
    (paper §4; §9 item 9).

    Drawn by :func:`combcn.holes.box_hole`, as training draws it, so evaluation holes are the very
    kind the model is validated on during training.
    """
    from combcn.holes import box_hole

    hole = box_hole(rng, 1, size, width or size, HOLE_MIN_FRACTION, HOLE_MAX_FRACTION)[0] > 0
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def window_starts(frame_count: int, window: int, per_clip: int) -> list[int]:
    """``per_clip`` start frames spread evenly over the clip (fewer if the clip is short; no repeats)."""
    last = frame_count - window
    if per_clip <= 1:
        return [last // 2]
    starts = sorted({int(round(v)) for v in np.linspace(0, last, per_clip)})
    return starts


def centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of an [H, W, 3] image, resized to size x size (area filter)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interp)


def _read_rgb(path: Path) -> np.ndarray:
    """One clip frame as uint8 RGB, read through :mod:`combcn.io.plate` (the engine's rules)."""
    from combcn.io.plate import read_rgb_image

    out: np.ndarray = (np.clip(read_rgb_image(path), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


#: Hole families in table order; see the module docstring.
HOLE_FAMILIES = ("box", "strokes", "objects", "drift")
HOLE_KINDS = HOLE_FAMILIES  # the old name

#: Fewest frames a silhouette track needs to count as moving with its object (shorter ones are stills).
MIN_TRACK_FRAMES = 8


@dataclass(frozen=True)
class Track:
    """One object's silhouettes over consecutive frames of a clip (:func:`combcn.holes.object_tracks`).

    Attributes:
        clip (str): the clip whose masks it comes from.
        first (int): frame index (in the clip's sorted frames) of ``masks[0]``.
        masks (ndarray[L, h, w] bool): the silhouettes, cropped to their union.
    """

    clip: str
    first: int
    masks: np.ndarray

    @property
    def length(self) -> int:
        return int(self.masks.shape[0])


def parse_resolutions(text: str) -> list[str]:
    """``"128,native"`` -> ``["128", "native"]``; each item ``native`` or a square side (a multiple
    of 8, >= 16).

    Raises:
        ConfigError: an unknown or repeated item.
    """
    out: list[str] = []
    for item in (p.strip().lower() for p in str(text).split(",")):
        if item != "native" and not (item.isdigit() and int(item) >= 16 and int(item) % 8 == 0):
            raise ConfigError(
                f"--resolution takes 'native' or a square side (a multiple of 8, >= 16), comma-separated; "
                f"got {item!r}"
            )
        if item in out:
            raise ConfigError(f"--resolution lists {item!r} twice")
        out.append(item)
    return out


def parse_families(text: str) -> list[str]:
    """``"box,strokes"`` -> ``["box", "strokes"]``, checked against :data:`HOLE_FAMILIES`."""
    out = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    unknown = [f for f in out if f not in HOLE_FAMILIES]
    if unknown or not out or len(set(out)) != len(out):
        raise ConfigError(
            f"--holes takes distinct families from {', '.join(HOLE_FAMILIES)}, comma-separated; got {text!r}"
        )
    return out


def read_masks(clip_dir: Path) -> tuple[np.ndarray, list[int]] | None:
    """A clip's object masks: (ids ndarray[M, H, W] int32, frame index of each), or None without any.

    A mask belongs to the frame with the same file stem. Grey masks give their values as ids; colour
    (palette) masks one id per colour, the same colour the same id in every frame; 0 / black is
    background.

    Raises:
        InputError: an unreadable mask file, or masks of different sizes.
    """
    from combcn.io import read_image

    folder = clip_dir / "masks"
    if not folder.is_dir():
        return None
    frame_of = {p.stem: i for i, p in enumerate(list_frames(clip_dir))}
    ids, index = [], []
    for path in list_frames(folder):
        if path.stem not in frame_of:
            continue
        try:
            pixels = np.asarray(read_image(path, all_parts=False).pixels)
        except Exception as exc:  # OpenImageIO raises its own types
            raise InputError(f"cannot read this object mask ({exc})", path=path) from exc
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.shape[2] >= 3:
            rgb = pixels[:, :, :3].astype(np.int64)
            key = (rgb[:, :, 0] << 32) | (rgb[:, :, 1] << 16) | rgb[:, :, 2]
        else:
            key = pixels[:, :, 0].astype(np.int64)
        ids.append(key)
        index.append(frame_of[path.stem])
    if not ids:
        return None
    if len({a.shape for a in ids}) != 1:
        raise InputError("object masks change size within the clip", path=folder)
    stack = np.stack(ids)
    order = np.argsort(index, kind="stable")
    values = np.unique(np.concatenate([np.unique(k) for k in ids]))  # far cheaper than one big unique
    # colour keys -> 0..K in key order, so black (0) stays background
    dense = np.searchsorted(values, stack).astype(np.int32) + (0 if values[0] == 0 else 1)
    return dense[order], [index[i] for i in order]


def silhouette_tracks(clip_dirs: Sequence[Path]) -> list[Track]:
    """Every object track (:func:`combcn.holes.object_tracks`) in the masks of ``clip_dirs``.

    Tracks of at least :data:`MIN_TRACK_FRAMES` frames, or, where no clip has one, every track (still
    silhouettes that :func:`combcn.holes.silhouette_hole` moves along a path). Ordered by clip name.
    """
    from combcn.holes import object_tracks

    def tracks_of(dirs: list[Path]) -> list[Track]:
        out: list[Track] = []
        for clip_dir in dirs:
            found = read_masks(clip_dir)
            if found is not None:
                out += [Track(clip_dir.name, first, m) for first, m in object_tracks(*found)]
        return out

    dirs = sorted(clip_dirs, key=lambda d: d.name)
    # clips with too few mask files cannot hold a moving track: read them only if nothing else has one
    counts = {d: len(list_frames(d / "masks")) if (d / "masks").is_dir() else 0 for d in dirs}
    tracks = tracks_of([d for d in dirs if counts[d] >= MIN_TRACK_FRAMES])
    moving = [t for t in tracks if t.length >= MIN_TRACK_FRAMES]
    return moving or tracks + tracks_of([d for d in dirs if 0 < counts[d] < MIN_TRACK_FRAMES])


def pick_track(
    rng: np.random.Generator, tracks: Sequence[Track], clip: str, start: int, window: int
) -> Track | None:
    """A track for a window of ``clip`` (frames ``start`` to ``start + window - 1``).

    Another clip's track where there is one; else this clip's, cut to frames outside the window (the
    same object at another time, never the object that is in these frames); None if neither exists.
    """
    others = [t for t in tracks if t.clip != clip]
    if others:  # a clip first, then one of its tracks: a clip with many objects does not crowd out the rest
        sources = sorted({t.clip for t in others})
        source = sources[int(rng.integers(0, len(sources)))]
        mine = [t for t in others if t.clip == source]
        return mine[int(rng.integers(0, len(mine)))]
    shifted = []
    for t in tracks:
        before = max(0, min(t.length, start - t.first))
        after_from = max(0, start + window - t.first)
        after = max(0, t.length - after_from)
        if before >= after and before > 0:
            shifted.append(Track(t.clip, t.first, t.masks[:before]))
        elif after > 0:
            shifted.append(Track(t.clip, t.first + after_from, t.masks[after_from:]))
    return shifted[int(rng.integers(0, len(shifted)))] if shifted else None


def make_hole(
    family: str,
    rng: np.random.Generator,
    t: int,
    h: int,
    w: int,
    track: Track | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """One window's hole of ``family``: (float32 [T, H, W] 1 = hole, the box as (top, left, height,
    width) for ``box`` else None). ``objects`` needs ``track``."""
    from combcn import holes

    if family == "box":
        box = paper_box(rng, h, w)
        top, left, bh, bw = box
        hole = np.zeros((t, h, w), np.float32)
        hole[:, top : top + bh, left : left + bw] = 1.0
        return hole, box
    if family == "strokes":
        return holes.moving_stroke_hole(rng, t, h, w), None
    if family == "drift":
        return holes.stroke_hole(rng, t, h, w), None
    if family == "objects":
        if track is None:
            raise ValueError("the objects family needs a silhouette track")
        return holes.silhouette_hole(rng, track.masks, t, h, w), None
    raise ConfigError(f"unknown hole family {family!r}; use one of {', '.join(HOLE_FAMILIES)}")


def _family_rng(seed: int, clip: str, start: int, family: str) -> np.random.Generator:
    # box and drift keep the draws of the single-family evaluation, so old results reproduce
    extra = [] if family in ("box", "drift") else [HOLE_FAMILIES.index(family)]
    return np.random.default_rng([seed, zlib.crc32(clip.encode("utf-8")), start, *extra])


def _check_clip(clip_dir: Path, frames: list[Path], window: int, resolutions: Sequence[str]) -> None:
    if len(frames) < window:
        raise InputError(
            f"clip {clip_dir.name!r} has {len(frames)} frames; evaluation needs at least {window} "
            f"(one window). Drop it from the list or pass a smaller --window",
            path=clip_dir,
        )
    squares = [int(r) for r in resolutions if r != "native"]
    first = _read_rgb(frames[0])
    need = max([s // 2 for s in squares] + [SSIM_MIN])
    if min(first.shape[:2]) < need:
        what = f"{max(squares)}x{max(squares)} crops" if squares else "SSIM"
        raise InputError(
            f"clip {clip_dir.name!r} frames are {first.shape[1]}x{first.shape[0]}; too small for "
            f"{what} (need at least {need} px on the short side)",
            path=frames[0],
        )


#: SSIM's window side: the smallest frame it can score.
SSIM_MIN = 11


def plan_windows(clip_dirs: Sequence[Path], *, window: int, per_clip: int) -> list[tuple[Path, int]]:
    """(clip folder, start frame) of every window, in clip order; reads no pixels."""
    return [(d, start) for d in clip_dirs for start in window_starts(len(list_frames(d)), window, per_clip)]


def iter_windows(
    plan: Sequence[tuple[Path, int]],
    *,
    window: int = 32,
    resolutions: Sequence[str] = ("128",),
    families: Sequence[str] = ("box",),
    seed: int = 0,
    tracks: Sequence[Track] = (),
) -> Iterator[Window]:
    """The windows of ``plan`` (:func:`plan_windows`): for each, every resolution x family, its frames
    read once. Lazily, so a plate-size evaluation holds one window's frames at a time.

    Raises:
        InputError: a clip too short or too small, an unreadable frame, frames that change size, or
            the ``objects`` family with no silhouette to use (the message says what to pass).
    """
    checked: set[Path] = set()
    for clip_dir, start in plan:
        frames = list_frames(clip_dir)
        if clip_dir not in checked:
            _check_clip(clip_dir, frames, window, resolutions)
            checked.add(clip_dir)
        raw = [_read_rgb(p) for p in frames[start : start + window]]
        if len({r.shape for r in raw}) != 1:
            raise InputError(f"clip {clip_dir.name!r} frames change size within the window", path=clip_dir)
        for resolution in resolutions:
            images = raw if resolution == "native" else [centre_square(r, int(resolution)) for r in raw]
            truth = torch.from_numpy(np.stack(images)).permute(3, 0, 1, 2)[None].float() / 255.0
            t, h, w = truth.shape[2:]
            for family in families:
                rng = _family_rng(seed, clip_dir.name, start, family)
                track = None
                if family == "objects":
                    track = pick_track(rng, tracks, clip_dir.name, start, window)
                    if track is None:
                        raise InputError(
                            f"no object silhouettes to cut an 'objects' hole into clip {clip_dir.name!r}: no "
                            "clip folder given has masks/ with an object outside this window. Pass "
                            "--silhouettes with clips that have masks, or drop 'objects' from --holes"
                        )
                hole, box = make_hole(family, rng, t, h, w, track)
                yield Window(
                    clip=clip_dir.name,
                    start=start,
                    box=box,
                    truth=truth,
                    hole=torch.from_numpy(hole)[None, None],
                    resolution=resolution,
                    family=family,
                    source=None if track is None else f"{track.clip}:{track.first}",
                )
        log.debug("clip %s: window at frame %d cut", clip_dir.name, start)


def load_windows(
    clip_dirs: Sequence[Path],
    *,
    window: int = 32,
    size: int = 128,
    per_clip: int = 1,
    seed: int = 0,
    hole: str = "box",
    tracks: Sequence[Track] = (),
) -> list[Window]:
    """Every window of ``clip_dirs`` at one square ``size`` with one hole family, as a list
    (:func:`iter_windows` for several resolutions and families, lazily).

    Raises:
        ConfigError: an unknown hole family.
        InputError: as :func:`iter_windows`.
    """
    families = parse_families(hole)
    plan = plan_windows(clip_dirs, window=window, per_clip=per_clip)
    return list(
        iter_windows(
            plan, window=window, resolutions=[str(size)], families=families, seed=seed, tracks=tracks
        )
    )
