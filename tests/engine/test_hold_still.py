"""What no frame shows, on a locked-off window, is smoothed along time (``core._hold_still``): the
function on hand-made fills, and the engine on real OpenCV propagation with a tiny random model
(code paths and the still-or-not decision, not the fill's quality); and the network's fill kept at
its unresolved pixels alone (``core._HoleFill``) changes no output bit."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import one_thread, tiny_model  # noqa: F401 (fixture)

from combcn.engine import Engine, core
from combcn.engine.core import _hold_still, _WindowFill

pytestmark = pytest.mark.usefixtures("one_thread")

#: the shipped smoothing (the tests below turn it off by patching a vanishing sigma in)
SIGMA = core.STILL_SIGMA


def _fill(values: np.ndarray) -> _WindowFill:
    shape = values.shape[:2]
    return _WindowFill(values.astype(np.float32), np.zeros(shape, bool), np.zeros(shape, np.float32))


def test_each_synthesised_pixel_is_the_gaussian_mean_of_its_own_frames_at_its_own_exposure() -> None:
    rng = np.random.default_rng(3)
    frames = 9
    boxes = {t: (10, 20, 30 + t, 42 + t) for t in range(frames)}  # 10 x 12, sliding right 1 px a frame
    # frame 6 is a flash: its level four times the others' (per channel, as its ring would say)
    levels = {t: np.float32([1.0, 0.9, 1.1]) * (4.0 if t == 6 else 1.0 + 0.01 * t) for t in range(frames)}
    values = {t: (rng.random((10, 12, 3)) * levels[t]).astype(np.float32) for t in range(frames)}
    unresolved = {t: rng.random((10, 12)) < 0.7 for t in range(frames)}
    unresolved[4][:] = False  # nothing synthesised in frame 4: it neither changes nor contributes
    fills = {t: _fill(values[t]) for t in range(frames)}
    _hold_still(fills, unresolved, boxes, lambda p, q: levels[p] / levels[q])
    sigma, radius = core.STILL_SIGMA, int(3 * core.STILL_SIGMA)
    for t in range(frames):
        y0, _, x0, _ = boxes[t]
        for y, x in np.ndindex(10, 12):
            got = fills[t].fill[y, x]
            if not unresolved[t][y, x]:  # revealed or known: untouched, bit for bit
                assert np.array_equal(got, values[t][y, x]), (t, y, x)
                continue
            total, weight = np.zeros(3), 0.0
            for q in range(max(0, t - radius), min(frames, t + radius + 1)):
                qy, qx = y0 + y - boxes[q][0], x0 + x - boxes[q][2]
                if 0 <= qy < 10 and 0 <= qx < 12 and unresolved[q][qy, qx]:
                    w = np.exp(-0.5 * ((q - t) / sigma) ** 2)
                    total += w * values[q][qy, qx] * levels[t] / levels[q]
                    weight += w
            np.testing.assert_allclose(got, total / weight, rtol=1e-5, atol=1e-6, err_msg=str((t, y, x)))
    # the flash frame's fill stays at its own level, its neighbours' at theirs
    assert fills[6].fill[unresolved[6]].mean() > 3.0 * fills[5].fill[unresolved[5]].mean()


def test_a_pixel_synthesised_in_one_frame_alone_keeps_its_value() -> None:
    values = {t: np.full((4, 4, 3), 0.1 * (t + 1), np.float32) for t in range(3)}
    unresolved = {t: np.zeros((4, 4), bool) for t in range(3)}
    unresolved[1][2, 2] = True
    fills = {t: _fill(values[t]) for t in range(3)}
    _hold_still(fills, unresolved, {t: (0, 4, 0, 4) for t in range(3)}, None)
    for t in range(3):
        assert np.array_equal(fills[t].fill, values[t])


def _texture(seed: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip(0.5 + 4.0 * (noise - 0.5), 0.05, 0.95).astype(np.float32)


def _render(
    plate: np.ndarray, matte: np.ndarray, sigma: float, monkeypatch: pytest.MonkeyPatch
) -> np.ndarray:
    monkeypatch.setattr(core, "STILL_SIGMA", sigma)
    engine = Engine(device="cpu", model=tiny_model(window=8, resolution=32))
    out: np.ndarray = engine.inpaint(plate, matte, shaper="none", probe=False)
    return out


def test_on_a_locked_off_shot_the_synthesised_fill_shimmers_less(monkeypatch: pytest.MonkeyPatch) -> None:
    """Locked off, eight frames, a static box no frame sees behind; the plate's grain is new in every
    frame (as film's is), so each frame's fill meets a different border. Smoothed along time, the
    fill changes less from frame to frame than each frame's own fill (the smoothing turned off with a
    vanishing sigma), and every pixel outside the matte is the plate's, bit for bit."""
    frames, height, width = 8, 64, 96
    base = _texture(5, height, width)
    rng = np.random.default_rng(6)
    plate = np.stack([base + rng.normal(0, 0.04, base.shape).astype(np.float32) for _ in range(frames)])
    plate = np.clip(plate, 0, 1).astype(np.float32)
    matte = np.zeros((frames, height, width), np.float32)
    matte[:, 20:44, 36:64] = 1.0
    hole = matte > 0
    own = _render(plate, matte, 1e-3, monkeypatch)
    still = _render(plate, matte, SIGMA, monkeypatch)
    for out in (own, still):
        assert np.array_equal(out[~hole], plate[~hole])
    change = lambda x: float(np.abs(np.diff(x, axis=0))[hole[1:]].mean())  # noqa: E731
    assert change(still) < 0.6 * change(own), (change(still), change(own))
    # the mean level of the fill is the same: smoothing moves no pixel outside its own frames' range
    assert abs(float(still[hole].mean()) - float(own[hole].mean())) < 0.01


def test_a_moving_shot_is_not_smoothed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The camera pans 2 pixels a frame past a static box wider than the pan: the middle of the box
    is never seen and is synthesised in every frame, but it moves with the background: held in plate
    coordinates it would smear. The fill must be the same with the smoothing on and off."""
    frames, height, width = 8, 64, 96
    wide = _texture(8, height, width + 2 * frames)
    plate = np.stack([wide[:, 2 * t : 2 * t + width] for t in range(frames)]).astype(np.float32)
    matte = np.zeros((frames, height, width), np.float32)
    matte[:, 20:44, 30:70] = 1.0
    off = _render(plate, matte, 1e-3, monkeypatch)
    on = _render(plate, matte, SIGMA, monkeypatch)
    assert np.array_equal(off, on)


def test_a_flash_frame_keeps_its_exposure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Locked off, eight frames, a static box; frame 4 is eight times as bright (a camera flash). Its
    fill meets its bright border; smoothed with its neighbours' fills at their exposure it would
    come out at a third of it. Its level relative to the frame before must be what it was without the
    smoothing (within 10 %)."""
    frames, height, width = 8, 64, 96
    base = _texture(9, height, width) * 0.1
    rng = np.random.default_rng(10)
    plate = np.stack([base + rng.normal(0, 0.004, base.shape).astype(np.float32) for _ in range(frames)])
    plate = np.clip(plate, 0, None).astype(np.float32)
    plate[4] *= 8.0
    matte = np.zeros((frames, height, width), np.float32)
    matte[:, 20:44, 36:64] = 1.0
    hole = matte > 0
    level = lambda out, t: float(out[t][hole[t]].mean())  # noqa: E731
    own = _render(plate, matte, 1e-3, monkeypatch)
    still = _render(plate, matte, SIGMA, monkeypatch)
    assert level(own, 4) > 6.0 * level(own, 3)  # the fill met the flash's border
    ratio_own, ratio_still = level(own, 4) / level(own, 3), level(still, 4) / level(still, 3)
    assert abs(ratio_still / ratio_own - 1.0) < 0.1, (ratio_still, ratio_own)


@pytest.mark.parametrize("camera", ["still", "pan"])
def test_the_network_fill_kept_at_its_holes_alone_changes_no_bit(
    camera: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where only the join reads the network's fill (the network fills, no other candidate), each
    frame's fill is kept at its unresolved pixels alone (``core._HoleFill``: the memory of a window's
    crops at 4K); the output must be the same bits as with the fills kept over the whole crop, on a
    still camera (smoothed along time) and a pan (key frames carried along the motion)."""
    frames, height, width = 8, 64, 96
    wide = _texture(12, height, width + 2 * frames)
    step = 2 if camera == "pan" else 0
    plate = np.stack([wide[:, step * t : step * t + width] for t in range(frames)]).astype(np.float32)
    matte = np.zeros((frames, height, width), np.float32)
    matte[:, 20:44, 30:70] = 1.0
    kept = _render(plate, matte, SIGMA, monkeypatch)
    real = core._Window._network

    def whole(self: core._Window, *args: object, **kwargs: object) -> object:
        kwargs["at_holes"] = False
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(core._Window, "_network", whole)
    assert np.array_equal(kept, _render(plate, matte, SIGMA, monkeypatch))
