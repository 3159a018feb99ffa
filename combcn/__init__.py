"""combcn: temporally stable video inpainting for VFX plates.

The public API (imported lazily so ``import combcn`` stays light):

- :func:`combcn.inpaint`: arrays in, arrays out.
- :func:`combcn.inpaint_sequence`: image sequences (or movies) on disk in, a sequence on disk out.
- :mod:`combcn.errors`: the exceptions raised for problems a user can fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "inpaint", "inpaint_sequence"]

if TYPE_CHECKING:
    from combcn.api import inpaint, inpaint_sequence


def __getattr__(name: str) -> Any:
    if name in ("inpaint", "inpaint_sequence"):
        from combcn import api

        return getattr(api, name)
    raise AttributeError(f"module 'combcn' has no attribute {name!r}")
