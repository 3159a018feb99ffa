"""The last temporal window is aligned to the end of the sequence; where that puts it more than the
grid's overlap inside its predecessor, the extra frames are its lead: the network sees them and
propagation takes pixels from them, but the window neither propagates into them nor writes them, and
the two windows cross-fade over the grid's overlap as every other pair does. The real engine, real
OpenCV motion and a tiny random model (the windows' mechanics, not the network's quality)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers import one_thread, tiny_model  # noqa: F401 (fixture)

from combcn.engine import Engine, core
from combcn.engine.windows import Window, frames_read, plan_windows

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW, FRAMES, HEIGHT, WIDTH = 8, 12, 48, 64


@pytest.mark.parametrize("n", [9, 12, 20, 40, 61, 100, 1000])
@pytest.mark.parametrize("part", [0, 4, 2])
def test_windows_cross_fade_over_the_overlap_alone(n: int, part: int) -> None:
    """With overlaps up to half the window: every frame's weights sum to one; no frame is filled by
    more than two windows, and two consecutive windows share at most ``overlap`` filled frames; a
    window fills nothing in its lead."""
    length = 32 if n > 20 else WINDOW
    overlap = length // part if part else 0
    windows = plan_windows(n, length, overlap)
    total: Counter[float] = Counter()
    filled_by: Counter[int] = Counter()
    for w in windows:
        assert w.end - w.start == min(length, n) and 0 <= w.lead < length
        for p in range(w.start, w.end):
            weight = w.weight(p)
            assert (weight == 0.0) == (p < w.first)
            total[p] += weight
            filled_by[p] += weight > 0
    assert sorted(total) == list(range(n))
    assert all(abs(v - 1.0) < 1e-9 for v in total.values())
    assert max(filled_by.values()) <= 2
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.end - b.first == b.previous_overlap == a.next_overlap <= overlap
    assert all(w.lead == 0 for w in windows[:-1])


def test_the_end_aligned_window_leads_in() -> None:
    """40 frames of 32-frame windows overlapping by 8: the second window starts at 8 (aligned to the
    end) and fills from 24, cross-fading with the first over 24-31."""
    first, last = plan_windows(40, 32, 8)
    assert first == Window(0, 32, 0, 8, 0)
    assert last == Window(8, 40, 8, 0, 16)
    assert [first.weight(p) for p in (8, 23, 24, 31)] == [1.0, 1.0, 8 / 9, 1 / 9]
    assert [last.weight(p) for p in (8, 23, 24, 31, 32)] == [0.0, 0.0, 1 / 9, 8 / 9, 1.0]
    # a host writing frames the first window fills alone reads that window's frames alone
    assert frames_read(range(40), range(10, 20)) == list(range(32))
    assert frames_read(range(40), [30]) == list(range(40))


def _plate_and_matte() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    plate = rng.random((FRAMES, HEIGHT, WIDTH, 3)).astype(np.float32)
    matte = np.zeros((FRAMES, HEIGHT, WIDTH), np.float32)
    for t in range(FRAMES):  # a hole moving across the frame: propagation has sources
        x = 8 + 3 * t
        matte[t, 16:32, x : x + 12] = 1.0
    return plate, matte


def test_the_lead_is_read_not_propagated_nor_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second window propagates into its own frames alone; the frames its lead covers come from
    the first window alone, so a render of just those frames writes them bit for bit the same."""
    targets: list[tuple[int, list[int]]] = []
    real = core.Propagator.fill

    def fill(self: core.Propagator, rgb: list, holes: list, wanted: list[int], **kw: object) -> object:
        if kw.get("scene", True):  # (not the key frames' carry)
            targets.append((len(rgb), list(wanted)))
        return real(self, rgb, holes, wanted, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(core.Propagator, "fill", fill)
    engine = Engine(device="cpu", model=tiny_model(window=WINDOW, resolution=32))
    plate, matte = _plate_and_matte()
    out = engine.inpaint(plate, matte, shaper="none", probe=False, overlap=2)
    # windows 0-7 and 4-11 (aligned to the end): the second fills 6-11, reads 4-11
    assert [len(t) for _, t in targets] == [8, 6]
    assert targets[1] == (8, list(range(2, 8)))
    hole = matte > 0
    assert np.array_equal(out[~hole], plate[~hole])
    assert np.isfinite(out).all()
    # frames 0-5: the first window's alone (a render of the first 8 frames fills them the same)
    alone = engine.inpaint(plate[:WINDOW], matte[:WINDOW], shaper="none", probe=False, overlap=2)
    assert np.array_equal(out[:6], alone[:6])
    assert not np.array_equal(out[6:8], alone[6:8])  # the cross-fade with the second window
