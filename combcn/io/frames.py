"""Frame sets in the farm's words: ``1001-1100``, ``1001-1100x2``, ``1001,1003,1010-1020``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from combcn.errors import ConfigError

# START, START-END, START-ENDxSTEP; also Deadline's START:END and OpenJD's START-END:STEP.
# More frames than any shot: a typo like 1-100000000 is refused before a list of it is built.
MAX_FRAMES = 1_000_000
_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:[-:]\s*(-?\d+)\s*(?:[x:]\s*(\d+))?)?\s*$")


class FrameSet:
    """An ordered set of frame numbers.

    Args:
        frames: frame numbers (sorted, duplicates dropped).

    ``FrameSet.parse("1001-1100x2")`` gives 1001, 1003, ..., 1099; pieces are separated by commas.
    ``1001:1100`` (Deadline) and ``1001-1100:2`` (Open Job Description chunks) are read too.
    """

    def __init__(self, frames: Iterable[int]):
        self._frames: list[int] = sorted(set(int(f) for f in frames))

    @classmethod
    def parse(cls, text: str) -> FrameSet:
        """Parse a frame-set string; raise a one-line :class:`ConfigError` naming the bad piece.

        Refused: empty text, unreadable pieces, reversed ranges (``1008-1001``), steps below 1 and
        sets of more than :data:`MAX_FRAMES` frames.
        """
        frames: list[int] = []
        if not text or not text.strip():
            raise ConfigError("empty frame set; give frames like 1001-1100, 1001-1100x2 or 1001,1005")
        for piece in text.split(","):
            m = _RANGE.match(piece)
            if m is None:
                raise ConfigError(
                    f"cannot read frame set piece {piece.strip()!r} in {text!r}; "
                    "use START-END, START-ENDxSTEP or single frames separated by commas"
                )
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) is not None else start
            step = int(m.group(3)) if m.group(3) is not None else 1
            if end < start:
                raise ConfigError(
                    f"frame range {piece.strip()!r} runs backwards; write it low to high, e.g. {end}-{start}"
                )
            if step < 1:
                raise ConfigError(
                    f"frame range {piece.strip()!r} has step {step}; the step must be 1 or more"
                )
            if len(frames) + (end - start) // step + 1 > MAX_FRAMES:
                raise ConfigError(
                    f"frame set {text!r} holds more than {MAX_FRAMES} frames; give a shorter range"
                )
            frames.extend(range(start, end + 1, step))
        return cls(frames)

    def __iter__(self) -> Iterator[int]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, frame: object) -> bool:
        return frame in set(self._frames)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrameSet) and other._frames == self._frames

    def __hash__(self) -> int:
        return hash(tuple(self._frames))

    @property
    def frames(self) -> list[int]:
        """The frame numbers, sorted."""
        return list(self._frames)

    def __str__(self) -> str:
        """Compact form, e.g. ``1001-1010,1020-1030x2``."""
        out: list[str] = []
        f = self._frames
        i = 0
        while i < len(f):
            j = i
            step = f[i + 1] - f[i] if i + 1 < len(f) else 1
            while j + 1 < len(f) and f[j + 1] - f[j] == step:
                j += 1
            if j == i:
                out.append(str(f[i]))
            elif j == i + 1 and step != 1:
                out.extend([str(f[i]), str(f[j])])
            else:
                out.append(f"{f[i]}-{f[j]}" + (f"x{step}" if step != 1 else ""))
            i = j + 1
        return ",".join(out)

    def __repr__(self) -> str:
        return f"FrameSet({str(self)!r})"
