"""Typed option values shared by every verb's parser: one parser, one set of range checks.

Each factory returns an argparse ``type=`` callable. A bad value raises
:class:`argparse.ArgumentTypeError`, which argparse prefixes with the option's name, and
:class:`OneLineParser` prints as a single line, e.g.::

    combcn inpaint: error: argument -e/--expand: '1000000000' is out of range; give a whole
    number of pixels from -1000 to 1000 (see 'combcn inpaint --help')      <- one line, wrapped here

Bounds that several verbs share live here so one option means the same thing everywhere.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

# Matte grow/erode and feather, in plate pixels: beyond this the morphology kernel alone costs minutes.
MAX_MATTE_PX = 1000
# The shipped model's window in frames; consecutive windows must share fewer frames than one window.
MODEL_WINDOW = 32
MAX_THREADS = 1024
MAX_MARGIN = 10.0
# Temporal context beyond --frames, in frames (many times any model window).
MAX_CONTEXT = 10_000


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)


def _fmt(x: float) -> str:
    return f"{x:g}"


def integer(lo: int | None = None, hi: int | None = None, *, unit: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number in ``[lo, hi]`` (either bound may be None = open).

    Args:
        lo, hi: inclusive bounds.
        unit: word for the message, e.g. "pixels".
    """
    if lo is not None and hi is not None:
        allowed = f"a whole number{' of ' + unit if unit else ''} from {lo} to {hi}"
    elif lo is not None:
        allowed = f"a whole number{' of ' + unit if unit else ''} >= {lo}"
    elif hi is not None:
        allowed = f"a whole number{' of ' + unit if unit else ''} <= {hi}"
    else:
        allowed = "a whole number"

    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {allowed}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; give {allowed}")
        return value

    parse.__name__ = "integer"
    return parse


def number(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, unit: str = ""
) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); NaN/Inf refused.

    Args:
        lo, hi: bounds (None = open on that side).
        lo_open: exclude ``lo`` itself (for "must be > 0").
        unit: word for the message, e.g. "pixels".
    """
    what = f"a finite number{' of ' + unit if unit else ''}"
    if lo is not None and hi is not None:
        low, high = ("above", "and at most") if lo_open else ("from", "to")
        allowed = f"{what} {low} {_fmt(lo)} {high} {_fmt(hi)}"
    elif lo is not None:
        allowed = f"{what} {'>' if lo_open else '>='} {_fmt(lo)}"
    elif hi is not None:
        allowed = f"{what} <= {_fmt(hi)}"
    else:
        allowed = what

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {allowed}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite; give {allowed}")
        low_bad = lo is not None and (value <= lo if lo_open else value < lo)
        if low_bad or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; give {allowed}")
        return value

    parse.__name__ = "number"
    return parse


def frame_set(text: str) -> str:
    """An argparse type: a frame set (``1001-1100``, ``1001-1100x2``, ``1001,1005``), kept as text."""
    from combcn.errors import ConfigError
    from combcn.io.frames import FrameSet

    try:
        FrameSet.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# The options several verbs share, as ready-made types.
threads = integer(1, MAX_THREADS)
threads_or_default = integer(0, MAX_THREADS)  # 0 = torch's default
matte_threshold = number(0.0, 1.0)
matte_expand = integer(-MAX_MATTE_PX, MAX_MATTE_PX, unit="pixels")
matte_feather = number(0.0, float(MAX_MATTE_PX), unit="pixels")
seed = integer(0, 2**63 - 1)
