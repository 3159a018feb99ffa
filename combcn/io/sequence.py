"""Sequence patterns: ``plate.####.exr``, ``plate.%04d.exr``, ``plate.@@@@.exr`` and single files."""

from __future__ import annotations

import os
import re
from pathlib import Path

from combcn.errors import InputError

# One frame-number token: a run of '#' (4 digits each when alone, else 1 each), '@' (1 digit each)
# or printf %0Nd / %d.
_TOKEN = re.compile(r"(#+|@+|%0?(\d*)d)")


class SequencePattern:
    """A frame-numbered file name pattern.

    Args:
        pattern: a path with one frame token (``####``, ``#``, ``@@@@``, ``%04d``), or a single
            file with no token (then it is one frame, numbered ``single_frame``).
        single_frame: the frame number given to a pattern without a token.

    Attributes:
        padding (int): digits of the frame number (0 when unpadded ``%d``).
        has_token (bool): False for a single file.
    """

    def __init__(self, pattern: str | os.PathLike[str], *, single_frame: int = 1):
        self.pattern = str(pattern)
        directory, name = os.path.split(self.pattern)
        tokens = list(_TOKEN.finditer(name))
        if len(tokens) > 1:
            raise InputError(
                f"pattern {self.pattern!r} has {len(tokens)} frame tokens; use exactly one "
                "(e.g. plate.####.exr, plate.%04d.exr or plate.@@@@.exr)"
            )
        self.directory = directory
        self.has_token = bool(tokens)
        self.single_frame = single_frame
        if tokens:
            tok = tokens[0]
            text = tok.group(1)
            if text.startswith("#"):
                self.padding = 4 if len(text) == 1 else len(text)
            elif text.startswith("@"):
                self.padding = len(text)
            else:
                self.padding = int(tok.group(2)) if tok.group(2) else 0
            self.prefix = name[: tok.start()]
            self.suffix = name[tok.end() :]
        else:
            self.padding = 0
            self.prefix, self.suffix = name, ""

    def path(self, frame: int) -> Path:
        """The file of ``frame`` (negative frames keep the sign before the padding)."""
        if not self.has_token:
            return Path(self.pattern)
        digits = f"{abs(frame):0{self.padding}d}"
        return Path(self.directory) / f"{self.prefix}{'-' if frame < 0 else ''}{digits}{self.suffix}"

    @property
    def extension(self) -> str:
        """Lower-case extension without the dot (``exr``)."""
        return Path(self.suffix if self.has_token else self.prefix).suffix.lower().lstrip(".")

    def frames_on_disk(self) -> list[int]:
        """Frame numbers whose files exist, sorted."""
        if not self.has_token:
            return [self.single_frame] if Path(self.pattern).is_file() else []
        folder = Path(self.directory or ".")
        if not folder.is_dir():
            return []
        digits = r"\d+" if self.padding == 0 else r"\d{" + str(self.padding) + ",}"
        rx = re.compile("^" + re.escape(self.prefix) + r"(-?" + digits + ")" + re.escape(self.suffix) + "$")
        found: list[int] = []
        with os.scandir(folder) as entries:
            for entry in entries:
                m = rx.match(entry.name)
                if m is not None and entry.is_file():
                    frame = int(m.group(1))
                    if self.path(frame).name == entry.name:  # 0100 with padding 4, not 100
                        found.append(frame)
        return sorted(found)

    def same_files_as(self, other: SequencePattern) -> bool:
        """True when both patterns name the same files (resolved paths, same padding)."""
        a = Path(self.path(1001)).resolve()
        b = Path(other.path(1001)).resolve()
        return a == b and self.has_token == other.has_token

    def __str__(self) -> str:
        return self.pattern

    def __repr__(self) -> str:
        return f"SequencePattern({self.pattern!r})"
