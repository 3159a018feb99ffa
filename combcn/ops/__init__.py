"""Native ops. Placeholder until the masked_conv3d op lands (issue 2)."""

from __future__ import annotations

from typing import Any


def backends() -> dict[str, dict[str, Any]]:
    return {"reference": {"compiled": True, "active": True, "note": "placeholder"}}
