"""An engine factory for the robustness tests: the first fill of the first server hangs.

``COMBCN_TEST_MARKER`` names a file: the hanging fill writes its server's pid there (so the test can
kill that server mid-render) and sleeps ``COMBCN_TEST_SLEEP`` seconds. Once the marker exists, later
servers get the real engine, so the tests also see the plugin recover with a fresh server.
"""

from __future__ import annotations

import os
import time

import numpy as np

from combcn.serve.engine import FillFn, load_engine
from combcn.serve.protocol import FillParams


def factory(weights: str | None, device: str | None) -> FillFn:
    marker = os.environ["COMBCN_TEST_MARKER"]
    if os.path.exists(marker):
        return load_engine(weights, device)

    def hang(frames: np.ndarray, matte: np.ndarray, params: FillParams) -> np.ndarray:
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        time.sleep(float(os.environ.get("COMBCN_TEST_SLEEP", "60")))
        raise RuntimeError("the slow test engine woke up")

    return hang
