"""Evaluation windows cut from clips: 32-frame, 128x128 crops with the paper's box hole (paper §4, §9 end).

A clip is a folder of frames named in frame order (the ``data/clips`` layout: ``NNNNN.jpg``, with an
optional ``masks/`` subfolder that is ignored here). Every choice is deterministic for a seed: the
window start frames, and the hole box of each window.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
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
        box (tuple[int, int, int, int] | None): the box hole as (top, left, height, width) in crop
            pixels; None for free-form holes.
        truth (Tensor[1, 3, T, S, S]): the crop in [0, 1], float32.
        hole (Tensor[1, 1, T, S, S]): 1 = hole, float32 (for a box: inside it, in every frame).
    """

    clip: str
    start: int
    box: tuple[int, int, int, int] | None
    truth: Tensor
    hole: Tensor


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


def paper_box(rng: np.random.Generator, size: int) -> tuple[int, int, int, int]:
    """One hole box (top, left, height, width): sides drawn independently in [0.375, 0.5] x size,
    position uniform with the box inside the crop (paper §4; §9 item 9).

    Drawn by the training code's :func:`combcn.train.holes.box_hole`, so evaluation holes are the
    very kind the model is validated on during training.
    """
    from combcn.train.holes import box_hole

    hole = box_hole(rng, 1, size, size, HOLE_MIN_FRACTION, HOLE_MAX_FRACTION)[0] > 0
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
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError("cannot read this frame (missing, truncated or not an image)", path=path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


HOLE_KINDS = ("box", "strokes")


def load_windows(
    clip_dirs: Sequence[Path],
    *,
    window: int = 32,
    size: int = 128,
    per_clip: int = 1,
    seed: int = 0,
    hole: str = "box",
) -> list[Window]:
    """Cut evaluation windows from clips.

    Each window is ``window`` consecutive frames, each frame's largest centred square resized to
    ``size`` (the paper's Caltech preprocessing, §5), with one box hole at a fixed position in
    every frame (paper §4). The box depends only on ``seed``, the clip name and the window's start.
    ``hole="strokes"`` uses the training code's free-form strokes that drift over time instead
    (:func:`combcn.train.holes.stroke_hole`; paper Fig. 4's "random holes", not in its tables).

    Raises:
        InputError: a clip has fewer than ``window`` frames, frames smaller than ``size`` / 2, or
            an unreadable frame (the message names the clip or file).
    """
    if hole not in HOLE_KINDS:
        raise ConfigError(f"unknown hole kind {hole!r}; use one of {', '.join(HOLE_KINDS)}")
    out: list[Window] = []
    for clip_dir in clip_dirs:
        frames = list_frames(clip_dir)
        if len(frames) < window:
            raise InputError(
                f"clip {clip_dir.name!r} has {len(frames)} frames; evaluation needs at least {window} "
                f"(one window). Drop it from the list or pass a smaller --window",
                path=clip_dir,
            )
        first = _read_rgb(frames[0])
        if min(first.shape[:2]) < size // 2:
            raise InputError(
                f"clip {clip_dir.name!r} frames are {first.shape[1]}x{first.shape[0]}; too small for "
                f"{size}x{size} crops (need at least {size // 2} px on the short side)",
                path=frames[0],
            )
        for start in window_starts(len(frames), window, per_clip):
            crops = [centre_square(_read_rgb(p), size) for p in frames[start : start + window]]
            shapes = {c.shape for c in crops}
            if len(shapes) != 1:
                raise InputError(
                    f"clip {clip_dir.name!r} frames change size within the window", path=clip_dir
                )
            clip_seed = zlib.crc32(clip_dir.name.encode("utf-8"))
            rng = np.random.default_rng([seed, clip_seed, start])
            truth = torch.from_numpy(np.stack(crops)).permute(3, 0, 1, 2)[None].float() / 255.0
            if hole == "strokes":
                from combcn.train.holes import stroke_hole

                box = None
                holes = torch.from_numpy(stroke_hole(rng, window, size, size))[None, None].float()
            else:
                box = paper_box(rng, size)
                holes = torch.zeros(1, 1, window, size, size)
                top, left, h, w = box
                holes[..., top : top + h, left : left + w] = 1.0
            out.append(Window(clip=clip_dir.name, start=start, box=box, truth=truth, hole=holes))
        log.debug("clip %s: %d frames, %d window(s)", clip_dir.name, len(frames), len(out))
    return out
