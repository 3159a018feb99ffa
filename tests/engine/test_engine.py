"""Matte, shapers, windows and the array engine (tiny random model: code paths, not quality)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from helpers import moving_box_matte, one_thread, tiny_model  # noqa: F401

from combcn.engine import Engine, MatteOptions, get_shaper, shape_matte
from combcn.engine.matte import bbox
from combcn.engine.windows import plan_crop, plan_windows
from combcn.errors import ConfigError, InputError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", model=tiny_model())


class TestShaper:
    @pytest.mark.parametrize("name", ["acescct", "log", "srgb", "none"])
    def test_roundtrip(self, name: str) -> None:
        shaper = get_shaper(name)
        linear = np.array([0.0, 0.001, 0.0078125, 0.18, 1.0, 8.0, 16.0], np.float32)
        np.testing.assert_allclose(shaper.decode(shaper.encode(linear)), linear, rtol=2e-3, atol=1e-4)

    def test_acescct_reference_values(self) -> None:
        # ACEScct (S-2016-001): 18% grey -> 0.4136, linear 1.0 -> 0.5548.
        y = get_shaper("acescct").encode(np.array([0.18, 1.0], np.float32))
        np.testing.assert_allclose(y, [0.41358, 0.55479], atol=1e-4)

    def test_srgb_reference_values(self) -> None:
        # sRGB (IEC 61966-2-1): 18% grey -> 0.4614, 1.0 -> 1.0, and the linear toe below 0.0031308
        y = get_shaper("srgb").encode(np.array([0.001, 0.18, 1.0, 2.0], np.float32))
        np.testing.assert_allclose(y, [0.01292, 0.46135, 1.0, 1.0 + 1.055 / 2.4], atol=1e-4)

    def test_exception(self) -> None:
        with pytest.raises(ConfigError, match="unknown shaper"):
            get_shaper("rec709ish")


class TestMatte:
    def test_threshold_invert(self) -> None:
        m = np.array([[0.0, 0.4, 0.6, 1.0]], np.float32)
        assert shape_matte(m, MatteOptions()).tolist() == [[0, 0, 1, 1]]
        assert shape_matte(m, MatteOptions(invert=True)).tolist() == [[1, 1, 0, 0]]
        assert shape_matte(m, MatteOptions(threshold=0.0)).tolist() == [[0, 1, 1, 1]]

    def test_expand_erode_feather(self) -> None:
        m = np.zeros((21, 21), np.float32)
        m[8:13, 8:13] = 1.0
        assert (shape_matte(m, MatteOptions(expand=2)) > 0).sum() > 25
        assert (shape_matte(m, MatteOptions(expand=-1)) > 0).sum() == 9
        feathered = shape_matte(m, MatteOptions(feather=4))
        assert feathered[10, 10] == 1.0 and 0 < feathered[10, 13] < 1 and feathered[10, 18] == 0
        assert bbox(feathered) == (5, 16, 5, 16)
        assert bbox(np.zeros((4, 4), np.float32)) is None


class TestWindows:
    @pytest.mark.parametrize("n", [1, 5, 32, 33, 60, 100, 1000])
    def test_cardinality_weights_sum_to_one_where_two_overlap(self, n: int) -> None:
        windows = plan_windows(n, 32, 8)
        total: Counter[int] = Counter()
        for w in windows:
            assert w.end - w.start == min(32, n)
            for p in range(w.start, w.end):
                total[p] += w.weight(p)
        assert sorted(total) == list(range(n))
        assert min(total.values()) >= 1.0 - 1e-9

    def test_crop_multiples_of_eight_and_inside_plate(self) -> None:
        for box in [(100, 200, 300, 500), (0, 5, 0, 5), (1000, 1080, 1800, 1920), (0, 1080, 0, 1920)]:
            c = plan_crop(box, 1080, 1920, resolution=128, margin=0.5)
            assert c.height % 8 == 0 and c.width % 8 == 0
            assert 0 <= c.y0 <= box[0] and box[1] <= c.y1 <= 1080
            assert 0 <= c.x0 <= box[2] and box[3] <= c.x1 <= 1920
            assert c.height * c.width <= 2 * 128 * 128


class TestEngine:
    def _plate(self, t: int = 6, dtype: type = np.float32) -> np.ndarray:
        rng = np.random.default_rng(0)
        plate = rng.random((t, 48, 64, 5), dtype=np.float32)
        plate[..., 0] *= 40.0  # scene-linear values far above 1
        plate[..., 1] -= 0.1  # and below 0
        return plate.astype(dtype)

    @pytest.mark.parametrize("dtype", [np.float32, np.float16])
    def test_smoke_bit_exact_outside_matte(self, engine: Engine, dtype: type) -> None:
        plate = self._plate(dtype=dtype)
        matte = moving_box_matte(6, 48, 64)
        out = engine.inpaint(plate, matte)
        assert out.dtype == plate.dtype and out.shape == plate.shape
        outside = matte < 0.5
        np.testing.assert_array_equal(out[outside], plate[outside])
        np.testing.assert_array_equal(out[..., 3:], plate[..., 3:])  # extra channels untouched
        assert np.isfinite(out).all()
        assert not np.array_equal(out[~outside][:, :3], plate[~outside][:, :3])

    def test_feather_blends_and_keeps_far_pixels(self, engine: Engine) -> None:
        plate = self._plate()
        matte = moving_box_matte(6, 48, 64)
        out = engine.inpaint(plate, matte, feather=3, expand=1, shaper="log")
        alpha = np.stack([shape_matte(m, MatteOptions(expand=1, feather=3)) for m in matte])
        np.testing.assert_array_equal(out[alpha == 0], plate[alpha == 0])
        assert (alpha > 0).sum() > (matte > 0.5).sum()

    def test_module_torch_in_torch_out(self, engine: Engine) -> None:
        plate = torch.from_numpy(self._plate(t=3))
        matte = torch.from_numpy(moving_box_matte(3, 48, 64))
        out = engine.inpaint(plate, matte, shaper="none")
        assert isinstance(out, torch.Tensor) and out.dtype == plate.dtype
        assert torch.equal(out[matte < 0.5], plate[matte < 0.5])

    def test_boolean_matte_equals_its_float_matte(self, engine: Engine) -> None:
        plate = self._plate(t=3)
        matte = moving_box_matte(3, 48, 64)
        expected = engine.inpaint(plate, matte)
        np.testing.assert_array_equal(engine.inpaint(plate, matte > 0.5), expected)
        out = engine.inpaint(torch.from_numpy(plate), torch.from_numpy(matte) > 0.5)
        assert isinstance(out, torch.Tensor)
        np.testing.assert_array_equal(out.numpy(), expected)

    def test_windows_longer_than_model_are_deterministic(self, engine: Engine) -> None:
        plate = self._plate(t=11)
        matte = moving_box_matte(11, 48, 64)
        a = engine.inpaint(plate, matte)
        b = engine.inpaint(plate, matte)
        np.testing.assert_array_equal(a, b)

    def test_small_hole_is_filled_unscaled(self, engine: Engine) -> None:
        plate = self._plate(t=3)
        matte = np.zeros((3, 48, 64), np.float32)
        matte[:, 20:23, 30:33] = 1.0  # crop = working size: no resampling of the fill
        out = engine.inpaint(plate, matte)
        np.testing.assert_array_equal(out[matte == 0], plate[matte == 0])
        assert not np.array_equal(out[matte == 1][:, :3], plate[matte == 1][:, :3])

    def test_empty_matte_copies_through(self, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
        plate = self._plate(t=2)
        out = engine.inpaint(plate, np.zeros((2, 48, 64), np.float32))
        np.testing.assert_array_equal(out, plate)
        assert "empty" in caplog.text

    def test_exception(self, engine: Engine) -> None:
        plate = self._plate(t=2)
        matte = moving_box_matte(2, 48, 64)
        with pytest.raises(InputError, match="whole frame"):
            engine.inpaint(plate, np.ones((2, 48, 64), np.float32))
        bad = plate.copy()
        bad[1, 3, 3, 0] = np.nan
        with pytest.raises(InputError, match="NaN"):
            engine.inpaint(bad, matte)
        with pytest.raises(InputError, match="matte must be"):
            engine.inpaint(plate, matte[:, :10])
        with pytest.raises(InputError, match="float32 or float16"):
            engine.inpaint(plate.astype(np.float64), matte)
        with pytest.raises(ConfigError, match="unknown option"):
            engine.inpaint(plate, matte, colour="red")


def test_overlap_as_long_as_the_window_is_refused_not_capped() -> None:
    engine = Engine(model=tiny_model(window=4, resolution=32), device="cpu")
    frames = np.zeros((6, 32, 32, 3), np.float32)
    matte = moving_box_matte(6, 32, 32)
    with pytest.raises(ConfigError, match="--overlap 4 must be less than the model's window of 4"):
        engine.inpaint(frames, matte, overlap=4)
