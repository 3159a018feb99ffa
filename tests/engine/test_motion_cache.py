"""Motion shared across a render's windows: each frame pair measured once, pairs forgotten once no
later window reads them, and the fill the same as with every window measuring its own."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from helpers import one_thread, tiny_model  # noqa: F401 (fixture)

from combcn.engine import Engine
from combcn.engine.propagate import MotionCache

pytestmark = pytest.mark.usefixtures("one_thread")

T, H, W = 14, 48, 64
#: window 8, overlap 4: windows [0, 8), [4, 12), [6, 14), each sharing frames with the next
OPTIONS: dict[str, Any] = {"shaper": "none", "overlap": 4, "probe": False}


def _shot(width: int = W) -> tuple[np.ndarray, np.ndarray]:
    """A textured plate panning a pixel a frame, and a still box matte (every window's region is the
    same, so the windows' motion is the same measurement)."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.random((H, width + T, 3), np.float32), (0, 0), 1.5)
    plate = np.stack([texture[:, i : i + width] for i in range(T)]).astype(np.float32)
    matte = np.zeros((T, H, width), np.float32)
    matte[:, 18:30, 26:38] = 1.0
    return plate, matte


@pytest.fixture
def engine() -> Engine:
    return Engine(model=tiny_model(window=8, resolution=32), device="cpu", threads=1)


class _CountingFlow:
    """DIS optical flow that records which frame pairs (by their proxy pixels) it measured."""

    def __init__(self, create: Any, calls: list[tuple[bytes, bytes]], *args: Any):
        self.dis = create(*args)
        self.calls = calls

    def calc(self, a: np.ndarray, b: np.ndarray, flow: Any) -> np.ndarray:
        self.calls.append((a.tobytes(), b.tobytes()))
        out: np.ndarray = self.dis.calc(a, b, flow)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dis, name)


class TestMotionCache:
    def test_each_frame_pair_is_measured_once(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[tuple[bytes, bytes]] = []
        create = cv2.DISOpticalFlow_create  # type: ignore[attr-defined]
        monkeypatch.setattr(cv2, "DISOpticalFlow_create", lambda *a: _CountingFlow(create, calls, *a))
        plate, matte = _shot()
        engine.inpaint(plate, matte, **OPTIONS)
        assert len(calls) == len(set(calls)), "a frame pair's motion was measured twice"
        assert len(calls) == 2 * (T - 1)  # each neighbouring pair, forward and backward

    def test_fill_is_the_same_as_each_window_measuring_its_own(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        plate, matte = _shot()
        shared = engine.inpaint(plate, matte, **OPTIONS)
        monkeypatch.setattr(MotionCache, "pair", lambda self, key, measure: measure())
        own = engine.inpaint(plate, matte, **OPTIONS)
        np.testing.assert_array_equal(shared, own)

    def test_memory_is_bounded(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        kept: list[list[int]] = []  # after each window: the first positions of the pairs still kept
        forget = MotionCache.forget_before

        def forget_before(self: MotionCache, position: int) -> None:
            forget(self, position)
            kept.append(sorted(key[0] for key in self._pairs))
            assert all(p >= position for p in kept[-1])

        monkeypatch.setattr(MotionCache, "forget_before", forget_before)
        plate, matte = _shot()
        engine.inpaint(plate, matte, **OPTIONS)
        # window [0, 8) keeps the pairs [4, 7) the next window reads, [4, 12) keeps [6, 11), the last none
        assert kept == [[4, 5, 6], [6, 7, 8, 9, 10], []]

    def test_a_moving_hole_keeps_one_region(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        regions: list[set[tuple]] = []  # at each pair asked for: the regions (and proxies) kept
        pair = MotionCache.pair

        def spy(self: MotionCache, key: Any, measure: Any) -> Any:
            found = pair(self, key, measure)
            regions.append({k[1:] for k in self._pairs})
            return found

        monkeypatch.setattr(MotionCache, "pair", spy)
        plate, matte = _shot(width=320)
        matte[...] = 0.0
        for i in range(T):  # 8 pixels a frame: each window's holes, and so its region, differ
            matte[i, 18:26, 2 + 8 * i : 10 + 8 * i] = 1.0
        engine.inpaint(plate, matte, **OPTIONS)
        assert len(set.union(*regions)) == 3  # the three windows' regions: nothing shared
        assert all(len(kept) == 1 for kept in regions)  # another region's pairs were dropped

    def test_a_pair_is_known_by_its_region_and_proxy(self) -> None:
        cache = MotionCache()
        made: list[int] = []

        def measure() -> Any:
            made.append(1)
            return object()

        for key in [(0, (0, 8, 0, 8), (8, 8)), (0, (0, 8, 0, 8), (8, 8)), (0, (0, 9, 0, 8), (8, 9))]:
            cache.pair(key, measure)  # type: ignore[arg-type]
        assert len(made) == 2 and len(cache) == 2
        cache.forget_other((0, 9, 0, 8), (8, 9))
        assert len(cache) == 1
        cache.forget_before(1)
        assert len(cache) == 0
