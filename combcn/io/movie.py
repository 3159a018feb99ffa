"""Movie files (mov, mp4, ...) as input, decoded through PyAV. Frames are numbered from 1."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from combcn.errors import InputError

log = logging.getLogger("combcn.io")

MOVIE_EXTENSIONS = {"mov", "mp4", "m4v", "mkv", "avi", "webm", "mxf"}


def is_movie(path: str | Path) -> bool:
    """True when ``path`` has a movie file extension."""
    return Path(str(path)).suffix.lower().lstrip(".") in MOVIE_EXTENSIONS


class MovieReader:
    """Decode frames of a movie in any order, cheaply when requests go forward.

    Args:
        path: the movie file.
        cache: decoded frames kept for re-reads (a temporal window's worth is enough).

    Frames are ``ndarray[H, W, 3]`` uint8 (8-bit sources) or uint16 (deeper sources), sRGB-encoded
    as stored; frame numbers start at 1.
    """

    def __init__(self, path: str | Path, *, cache: int = 80):
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("movie file not found", path=path)
        self._av: Any = av
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                self.width = int(stream.codec_context.width)
                self.height = int(stream.codec_context.height)
                self.pix_fmt = str(stream.codec_context.pix_fmt or "")
                count = int(stream.frames or 0)
                if count == 0:  # some containers do not store it: count by decoding once
                    count = sum(1 for _ in container.decode(stream))
        except (av.error.FFmpegError, IndexError) as exc:
            raise InputError(
                f"cannot read this movie ({exc}); is it a video file PyAV/FFmpeg decodes?", path=path
            ) from None
        self.count = count
        self.deep = any(tag in self.pix_fmt for tag in ("10", "12", "16"))
        self._container: Any = None
        self._iter: Any = None
        self._next = 1

    @property
    def frames(self) -> list[int]:
        """Frame numbers 1..count."""
        return list(range(1, self.count + 1))

    def _restart(self) -> None:
        self.close()
        self._container = self._av.open(str(self.path))
        self._iter = self._container.decode(self._container.streams.video[0])
        self._next = 1

    def read(self, frame: int) -> np.ndarray:
        """Frame ``frame`` (1-based) as ``ndarray[H, W, 3]`` uint8 or uint16."""
        if frame in self._cache:
            self._cache.move_to_end(frame)
            return self._cache[frame]
        if not 1 <= frame <= self.count:
            raise InputError(f"has frames 1-{self.count}; frame {frame} does not exist", path=self.path)
        if self._iter is None or frame < self._next:
            self._restart()
        while self._next <= frame:
            try:
                decoded = next(self._iter)
            except StopIteration:
                raise InputError(f"ends after frame {self._next - 1}", path=self.path, frame=frame) from None
            array = decoded.to_ndarray(format="rgb48le" if self.deep else "rgb24")
            self._cache[self._next] = array
            self._next += 1
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._cache[frame]

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._iter = None
