"""What a key frame synthesises is carried along the motion to the frames between (``core._Window.
_carry_key_frames``); the join that follows keeps the carried pixels as they came and meets the rest
of each frame's synthesised pixels to them and to the plate. The real engine, real OpenCV motion and
a tiny random model (the mechanics of the carry and the join, not the network's quality)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import one_thread, tiny_model  # noqa: F401 (fixture)

from combcn.engine import Engine, core

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, HEIGHT, WIDTH, STEP = 10, 64, 96, 2


def _panning_plate() -> np.ndarray:
    """A textured background the camera pans across, ``STEP`` pixels a frame, with grain that is new
    in every frame (as film's is): each frame's border around the hole differs from the last."""
    rng = np.random.default_rng(21)
    noise = cv2.GaussianBlur(rng.random((HEIGHT, WIDTH + STEP * FRAMES, 3)).astype(np.float32), (0, 0), 2.0)
    wide = np.clip(0.5 + 4.0 * (noise - 0.5), 0.05, 0.95)
    frames = [wide[:, STEP * t : STEP * t + WIDTH] for t in range(FRAMES)]
    grain = [rng.normal(0.0, 0.03, (HEIGHT, WIDTH, 3)) for _ in range(FRAMES)]
    return np.clip(np.stack(frames) + np.stack(grain), 0.0, 1.0).astype(np.float32)


def _matte() -> np.ndarray:
    matte = np.zeros((FRAMES, HEIGHT, WIDTH), np.float32)
    matte[:, 20:44, 30:70] = 1.0  # wider than the pan shows behind it: its middle is synthesised
    return matte


def _render(monkeypatch: pytest.MonkeyPatch, *, keep_carried: bool) -> tuple[np.ndarray, dict]:
    """The engine's output, and per frame between key frames the carried pixels (plate coordinates,
    bool[h, w]) with the values the carry gave them (float[n, 3]). ``keep_carried`` False forgets
    what the carry reached before the join (each frame joined to its own border, as if it had made
    the fill itself)."""
    real = core._Window._carry_key_frames
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def carry(self: core._Window, unresolved: dict, propagated: object, synthesised: dict) -> object:
        joins = real(self, unresolved, propagated, synthesised)  # type: ignore[arg-type]
        for p, reached in self.carried.items():
            box = self.infos[p][0]
            assert box is not None
            values, crop = synthesised[p]
            kept = self.at_holes.get(p)
            dense = kept.dense() if kept is not None else values
            y0, y1, x0, x1 = box
            over = dense[y0 - crop.y0 : y1 - crop.y0, x0 - crop.x0 : x1 - crop.x0]
            where = np.zeros((HEIGHT, WIDTH), bool)
            where[y0:y1, x0:x1] = reached & unresolved[p]
            seen[p] = (where, over[reached & unresolved[p]].copy())
        if not keep_carried:
            self.carried.clear()
        return joins

    monkeypatch.setattr(core._Window, "_carry_key_frames", carry)
    engine = Engine(device="cpu", model=tiny_model(window=FRAMES, resolution=32))
    out: np.ndarray = engine.inpaint(_panning_plate(), _matte(), shaper="none", probe=False)
    return out, seen


def test_carried_pixels_are_kept_as_carried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the key frames the fill carried from them reaches most of the synthesised pixels; the
    output there is the carried fill itself (the frame's own grain at the border does not move it),
    and every pixel outside the matte is the plate's, bit for bit."""
    out, seen = _render(monkeypatch, keep_carried=True)
    plate, hole = _panning_plate(), _matte() > 0
    assert np.array_equal(out[~hole], plate[~hole])
    between = sorted(seen)
    assert between, "nothing was carried"
    reached = sum(int(seen[p][0].sum()) for p in between)
    assert reached > 0.3 * sum(int(hole[p].sum()) for p in between)  # the pan shows the rest
    for p in between:
        where, values = seen[p]
        diff = np.abs(out[p][where] - values)
        # the join's last step keeps a fill within the range its crop shows: nothing else moves them
        assert np.mean(diff < 1e-6) > 0.99, (p, float(diff.max()))


def test_carried_pixels_follow_the_motion_steadier_than_a_join_per_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Joined again to every frame's own border, the carried fill takes on a correction from that
    border's fresh grain in each frame: along the motion it changes more from frame to frame than
    the carried fill kept as it is."""
    kept, seen = _render(monkeypatch, keep_carried=True)
    rejoined, _ = _render(monkeypatch, keep_carried=False)

    def change(out: np.ndarray) -> float:
        # consecutive frames between key frames, compared along the pan (the background moves left)
        total, count = 0.0, 0
        for p in sorted(seen):
            if p - 1 not in seen:
                continue
            where = seen[p][0] & seen[p - 1][0]
            ys, xs = np.nonzero(where[:, : WIDTH - STEP])
            moved = np.abs(out[p][ys, xs] - out[p - 1][ys, xs + STEP])
            total, count = total + float(moved.sum()), count + moved.size
        assert count > 0
        return total / count

    assert not np.array_equal(kept, rejoined)
    assert change(kept) < 0.9 * change(rejoined), (change(kept), change(rejoined))
