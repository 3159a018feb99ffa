"""The engine runs the model's CombCN at plate resolution over what no frame shows (combcn/engine/core.py,
``_Window._at_plate``): on which pixels, with which inputs, and what reaches the output.

The plate network here is a stand-in that records its inputs and adds a checkerboard to the
working-size fill; the network itself is tested in tests/model/test_plate.py, and trained weights
through ``combcn eval`` (docs/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_model

from combcn.engine import Engine


class Checker:
    """Records each call; returns the working-size fill plus a +-0.2 checkerboard on the wanted hole."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def fill(self, rows, hole, coarse, *, want=None, origin=None):
        self.calls.append({"rows": rows.copy(), "hole": hole.copy(), "want": want, "origin": origin})
        out = np.array(coarse, np.float32, copy=True)
        need = hole if want is None else hole & want
        yy, xx = np.indices(hole.shape)
        board = np.where((yy + xx) % 2 == 0, 0.2, -0.2).astype(np.float32)
        out[need] = np.clip(out[need] + board[need][:, None], 0.0, 1.0)
        return out


def _shot(t: int = 12, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A locked-off plate (smooth gradient + fixed texture) and a static box matte: pure synthesis."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([0.3 + 0.3 * xx / w, 0.4 + 0.2 * yy / h, np.full((h, w), 0.5, np.float32)], -1)
    frame = np.clip(base + 0.05 * rng.standard_normal((h, w, 3)).astype(np.float32), 0, 1)
    plate = np.repeat(frame[None], t, 0)
    matte = np.zeros((t, h, w), np.float32)
    matte[:, 30:60, 40:80] = 1.0
    return plate, matte


@pytest.fixture(scope="module")
def renders() -> dict:
    plate, matte = _shot()
    plain = Engine(model=tiny_model(window=12, resolution=32), device="cpu").inpaint(
        plate, matte, shaper="none", probe=False
    )
    model = tiny_model(window=12, resolution=32)
    checker = Checker()
    model.plate = checker
    out = Engine(model=model, device="cpu").inpaint(plate, matte, shaper="none", probe=False)
    return {"plate": plate, "matte": matte, "plain": plain, "out": out, "calls": checker.calls}


class TestAtPlate:
    def test_smoke(self, renders: dict) -> None:
        assert renders["calls"]

    def test_key_frames_only(self, renders: dict) -> None:
        # one 12-frame window: the synthesis of frames 0, 8 and 11 is kept and carried to the rest
        assert sorted(c["origin"][0] for c in renders["calls"]) == [0, 8, 11]

    def test_its_hole_is_what_no_frame_shows_at_plate_resolution(self, renders: dict) -> None:
        matte = renders["matte"]
        for call in renders["calls"]:
            p, y0, x0 = call["origin"]
            hole = call["hole"]
            h, w = hole.shape
            assert np.array_equal(hole, matte[p, y0 : y0 + h, x0 : x0 + w] > 0)  # a static box: all of it
            # the plate's own pixels around it, at plate resolution (nothing scaled)
            rows, truth = call["rows"], renders["plate"][p, y0 : y0 + h, x0 : x0 + w]
            assert np.array_equal(rows[~hole], truth[~hole])

    def test_its_detail_reaches_every_frame_and_nothing_else_changes(self, renders: dict) -> None:
        plate, matte, plain, out = renders["plate"], renders["matte"], renders["plain"], renders["out"]
        inside = matte > 0
        assert np.array_equal(out[~inside], plate[~inside])
        for f in range(plate.shape[0]):
            diff = np.abs(out[f] - plain[f])[inside[f]].mean()
            assert diff > 0.05, f"frame {f}: the plate network's fill did not reach it ({diff:.3f})"

    def test_probe_asks_for_its_own_holes_only(self) -> None:
        plate, matte = _shot(t=8, h=128, w=192)
        matte[:] = 0.0
        matte[:, 40:70, 60:100] = 1.0
        model = tiny_model(window=8, resolution=32)
        checker = Checker()
        model.plate = checker
        Engine(model=model, device="cpu").inpaint(plate, matte, shaper="none", probe=True)
        probed = [c for c in checker.calls if c["want"] is not None]
        assert probed
        for call in probed:
            assert call["want"].any() and not (call["want"] & ~call["hole"]).any()
