"""An engine factory that records the fill parameters each request carries, then runs the real
engine: ``COMBCN_TEST_PARAMS`` names a file that gets one JSON line of :class:`FillParams` per fill,
with the window's frame count (``frames``) and its reference indices (``references``) added.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from combcn.serve.engine import FillFn, load_engine
from combcn.serve.protocol import FillParams


def factory(weights: str | None, device: str | None) -> FillFn:
    real = load_engine(weights, device)

    def fill(
        frames: np.ndarray,
        matte: np.ndarray,
        params: FillParams,
        references: dict[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        record = {**dataclasses.asdict(params), "frames": len(frames), "references": sorted(references or {})}
        with open(os.environ["COMBCN_TEST_PARAMS"], "a") as f:
            f.write(json.dumps(record) + "\n")
        return real(frames, matte, params, references=references)

    return fill
