"""Colour shapers: scene-linear values into the model's working range [0, 1] and back.

A shaper is a pair of monotonic curves ``encode`` (linear -> working) and ``decode`` (working ->
linear). Encoded values are clipped to [0, 1] only for what the model sees; pixels outside the hole
are never passed through a shaper (they are copied), so values above 1 or below 0 there survive.

- ``acescct``: the ACEScct curve (S-2016-001), the default for float EXR plates. Working range
  [0, 1] covers linear -0.0069 .. 222.9.
- ``log``: a pure log2 curve with a linear toe covering 14 stops around 18% grey
  (linear 2^-9.8 .. 2^4.2 ~ 18.4), for plates that should spend the model's range on mid-tones.
- ``srgb``: the sRGB transfer curve (IEC 61966-2-1), continued as a straight line above linear 1.0
  so it stays invertible. The shipped weights were trained on sRGB-encoded frames, so this is what
  their fills match best. The working range [0, 1] covers linear 0 .. 1, so fills never exceed 1.0
  linear. For plates made from display footage, and plates with no highlights in or around the hole.
- ``none``: identity, for display-referred footage (8/16-bit PNG, JPG, DPX, TIFF, movies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from combcn.errors import ConfigError

# ACEScct constants (Academy S-2016-001, section 4.4).
_CCT_A = 10.5402377416545
_CCT_B = 0.0729055341958355
_CCT_X_BRK = 0.0078125
_CCT_Y_BRK = 0.155251141552511

# sRGB (IEC 61966-2-1): linear segment below X_BRK; above linear 1.0 a straight line with the curve's
# slope at 1.0 (1.055 / 2.4).
_SRGB_X_BRK = 0.0031308
_SRGB_Y_BRK = 0.04045
_SRGB_SLOPE_1 = 1.055 / 2.4


@dataclass(frozen=True)
class Shaper:
    """A named encode/decode pair working on float32 arrays of any shape."""

    name: str

    def encode(self, linear: np.ndarray) -> np.ndarray:
        """Linear values -> working values (float32, not clipped)."""
        x = np.asarray(linear, dtype=np.float32)
        if self.name == "none":
            return x.copy()
        if self.name == "acescct":
            safe = np.maximum(x, _CCT_X_BRK)
            return np.where(x <= _CCT_X_BRK, _CCT_A * x + _CCT_B, (np.log2(safe) + 9.72) / 17.52).astype(
                np.float32
            )
        if self.name == "log":
            return _log_encode(x)
        if self.name == "srgb":
            curve = 1.055 * np.power(np.clip(x, _SRGB_X_BRK, 1.0), 1.0 / 2.4) - 0.055
            out = np.where(x <= _SRGB_X_BRK, 12.92 * x, curve)
            return np.where(x > 1.0, 1.0 + (x - 1.0) * _SRGB_SLOPE_1, out).astype(np.float32)
        raise AssertionError(self.name)

    def decode(self, working: np.ndarray) -> np.ndarray:
        """Working values -> linear values (float32)."""
        y = np.asarray(working, dtype=np.float32)
        if self.name == "none":
            return y.copy()
        if self.name == "acescct":
            return np.where(
                y <= _CCT_Y_BRK, (y - _CCT_B) / _CCT_A, np.exp2(np.minimum(y, 2.0) * 17.52 - 9.72)
            ).astype(np.float32)
        if self.name == "log":
            return _log_decode(y)
        if self.name == "srgb":
            curve = np.power((np.clip(y, _SRGB_Y_BRK, 1.0) + 0.055) / 1.055, 2.4)
            out = np.where(y <= _SRGB_Y_BRK, y / 12.92, curve)
            return np.where(y > 1.0, 1.0 + (y - 1.0) / _SRGB_SLOPE_1, out).astype(np.float32)
        raise AssertionError(self.name)


# log: y = (log2(x) - LO) / (HI - LO) above the toe, a straight line through 0 below it, with the
# same value and slope at the toe point so the curve is smooth and invertible.
_LOG_LO, _LOG_HI = math.log2(0.18) - 7.32, math.log2(0.18) + 6.68
_LOG_TOE = 2.0**_LOG_LO * 2.0  # one stop above the bottom of the range
_LOG_TOE_Y = (math.log2(_LOG_TOE) - _LOG_LO) / (_LOG_HI - _LOG_LO)
_LOG_SLOPE = 1.0 / (_LOG_TOE * math.log(2.0) * (_LOG_HI - _LOG_LO))


def _log_encode(x: np.ndarray) -> np.ndarray:
    safe = np.maximum(x, _LOG_TOE)
    above = (np.log2(safe) - _LOG_LO) / (_LOG_HI - _LOG_LO)
    below = _LOG_TOE_Y + (x - _LOG_TOE) * _LOG_SLOPE
    return np.where(x >= _LOG_TOE, above, below).astype(np.float32)


def _log_decode(y: np.ndarray) -> np.ndarray:
    above = np.exp2(np.minimum(y, 2.0) * (_LOG_HI - _LOG_LO) + _LOG_LO)
    below = _LOG_TOE + (y - _LOG_TOE_Y) / _LOG_SLOPE
    return np.where(y >= _LOG_TOE_Y, above, below).astype(np.float32)


SHAPERS: dict[str, str] = {
    "acescct": "ACEScct log curve (default for float EXR plates)",
    "log": "log2 curve, 14 stops around 18% grey",
    "srgb": "sRGB curve, what the shipped weights were trained on (fills stay <= 1.0 linear)",
    "none": "no shaping (display-referred footage: 8/16-bit files, movies)",
}


def get_shaper(name: str) -> Shaper:
    """The shaper called ``name``; :class:`ConfigError` for unknown names."""
    key = name.strip().lower()
    if key not in SHAPERS:
        raise ConfigError(f"unknown shaper {name!r}; use one of: {', '.join(SHAPERS)}")
    return Shaper(key)


def default_shaper_for(dtype: np.dtype | type, *, movie: bool = False) -> str:
    """``acescct`` for float (scene-linear) pixels, ``none`` for integer (display-referred) ones."""
    if movie:
        return "none"
    return "acescct" if np.issubdtype(np.dtype(dtype), np.floating) else "none"
