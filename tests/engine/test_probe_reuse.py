"""A probe verdict taken by the next windows over the same place (``core.Measured``): what no frame
shows is measured about once per region of a long shot, not in every window. The engine runs with a
tiny random model and real OpenCV motion: these test which windows probe, what they report and say,
not the fill's quality."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import one_thread, tiny_model  # noqa: F401 (fixture)

from combcn.engine import Engine, core, probe

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 96, 160


def _background(seed: int = 0) -> np.ndarray:
    """A plate-like still background: a gradient and blurred noise, in [0, 1], ndarray[H, W, 3]."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((H, W, 3)).astype(np.float32), (0, 0), 1.5)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    base = 0.25 + 0.2 * (xs / W)[..., None] + 0.1 * (ys / H)[..., None]
    return np.clip(base + 0.3 * (noise - noise.mean()), 0.0, 1.0).astype(np.float32)


def _box_matte(frames: int) -> np.ndarray:
    matte = np.zeros((frames, H, W), np.float32)
    matte[:, 36:60, 68:96] = 1.0
    return matte


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", model=tiny_model(window=4, resolution=32))


class TestVerdictReused:
    @staticmethod
    def _count_probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
        calls: list[tuple[int, int]] = []
        real = core._Window._probe

        def counted(self: core._Window, *args: object) -> probe.Verdict | None:
            calls.append((self.window.start, self.window.end - 1))
            return real(self, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(core._Window, "_probe", counted)
        return calls

    def test_windows_over_the_same_place_take_the_first_s_verdict(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        # 16 frames, windows of 4: five windows over one static box; the first probes, the next
        # REUSE_WINDOWS take its verdict, the one after measures again
        assert core.REUSE_WINDOWS == 3
        calls = self._count_probes(monkeypatch)
        plate = np.repeat(_background()[None], 16, axis=0).copy()
        with caplog.at_level("INFO", logger="combcn.engine"):
            out, expected = engine.inpaint_with_report(plate, _box_matte(16), shaper="none")
        assert calls == [(0, 3), (12, 15)]
        assert caplog.text.count("lies over the same place as in window 0-3") == 3
        assert "measured on probe holes in 2 window(s) and taken from there by 3 more" in caplog.text
        assert sorted(expected) == list(range(16))
        assert len({round(v, 9) for t, v in expected.items() if t < 12}) == 1
        hole = _box_matte(16) > 0
        assert np.array_equal(out[~hole], plate[~hole])

    def test_a_hole_elsewhere_is_measured_again(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls = self._count_probes(monkeypatch)
        plate = np.repeat(_background()[None], 8, axis=0).copy()
        matte = np.zeros((8, H, W), np.float32)
        matte[:4, 30:54, 12:40] = 1.0  # left, then right: the boxes do not meet
        matte[4:, 30:54, 120:148] = 1.0
        engine.inpaint(plate, matte, shaper="none")
        # windows 0-3 (the left) and 4-7 (the right): the second measures its own place
        assert calls == [(0, 3), (4, 7)]

    def test_fits_by_overlap_and_camera(self) -> None:
        verdict = probe.Verdict("telea", 10.0, {}, 2)
        measured = core.Measured((10, 50, 10, 50), False, verdict, (0, 31))
        assert measured.fits((10, 50, 10, 50), False)
        assert measured.fits((14, 54, 10, 50), False)  # moved by a tenth: IoU 0.82
        assert not measured.fits((10, 50, 10, 50), True)  # the camera stopped
        assert not measured.fits((30, 70, 30, 70), False)  # IoU 0.14
        assert not core.Measured((10, 50, 10, 50), False, verdict, (0, 31), reused=3).fits(
            (10, 50, 10, 50), False
        )
