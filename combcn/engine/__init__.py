"""The sequence engine: matte, colour shaper, temporal windows and crops around the model.

- :class:`Engine` keeps a model loaded and inpaints arrays (``Engine().inpaint(frames, matte)``).
- :func:`render_sequence` inpaints a sequence on disk (used by ``combcn inpaint`` and
  :func:`combcn.inpaint_sequence`).
"""

from __future__ import annotations

from combcn.engine.core import FrameFill, RenderSettings, composite, render_windows
from combcn.engine.engine import Engine, resolve_device
from combcn.engine.matte import MatteOptions, shape_matte
from combcn.engine.sequence import Report, render_sequence
from combcn.engine.shaper import SHAPERS, Shaper, get_shaper
from combcn.engine.windows import frames_read as frames_read  # re-exported for host adapters

__all__ = [
    "SHAPERS",
    "Engine",
    "FrameFill",
    "MatteOptions",
    "RenderSettings",
    "Report",
    "Shaper",
    "composite",
    "get_shaper",
    "render_sequence",
    "render_windows",
    "resolve_device",
    "shape_matte",
]
