"""Reading and writing plates: sequence patterns, frame sets, images (OpenImageIO) and movies (PyAV).

- :class:`FrameSet` parses ``1001-1100``, ``1001-1100x2``, ``1001,1005,1010-1020``.
- :class:`SequencePattern` resolves ``plate.####.exr``, ``plate.%04d.exr``, ``plate.@@@@.exr``.
- :func:`read_header`, :func:`read_image`, :func:`write_image_atomic` keep every channel, window,
  pixel type and metadata of an image so that untouched pixels round-trip bit-exact.
- :class:`MovieReader` decodes mov/mp4 input through PyAV.
"""

from __future__ import annotations

from combcn.io.frames import FrameSet
from combcn.io.image import ImageData, read_header, read_image, write_image_atomic
from combcn.io.movie import MovieReader, is_movie
from combcn.io.sequence import SequencePattern

__all__ = [
    "FrameSet",
    "ImageData",
    "MovieReader",
    "SequencePattern",
    "is_movie",
    "read_header",
    "read_image",
    "write_image_atomic",
]
