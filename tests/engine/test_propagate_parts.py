"""Propagation's storage and work-sharing: the packed results, the per-source grouping, the rings aligned
and gain-matched all at once, the pick and mix of motion hypotheses (compared channel by channel) and the
pairs measured on several threads each give exactly what the plain computation gives."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from test_propagate import H, W, synthetic_shot

from combcn.engine import propagate as propagate_module
from combcn.engine.propagate import (
    AGREE,
    Propagated,
    PropagationSettings,
    Propagator,
    _align_many,
    _apart,
    _apart_planes,
    _combine,
    _exposure_gain,
    _exposure_gains,
    _Fill,
    _groups,
    _level,
    _mean,
    _Packed,
    _pick,
    _Pixels,
    _weighted,
)


def _sparse(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A box mostly zero, with values where a thin hole would be."""
    out = np.zeros(shape, dtype)
    where = rng.random(shape[:2]) < 0.3
    out[where] = rng.normal(size=(int(where.sum()),) + shape[2:]).astype(dtype)
    return out


class TestPacked:
    def test_smoke(self) -> None:
        values = _sparse(np.random.default_rng(0), (7, 11, 3), np.float32)
        packed = _Packed(values)
        assert packed.pixels.shape[0] == int(np.any(values != 0, -1).sum())
        np.testing.assert_array_equal(packed.unpack(), values)

    @pytest.mark.parametrize(
        ("shape", "dtype"), [((5, 9, 3), np.float32), ((5, 9), bool), ((5, 9), np.float32)]
    )
    def test_lossless_bit_for_bit(self, shape: tuple[int, ...], dtype: type) -> None:
        """Negative zero and NaN come back as they were (a test of value, not of bits, would miss -0.0)."""
        array = _sparse(np.random.default_rng(1), shape, dtype)
        if dtype is np.float32:
            array.reshape(-1)[:3] = [-0.0, np.nan, np.inf]
        back = _Packed(array).unpack()
        assert back.dtype == array.dtype and back.shape == array.shape
        assert back.tobytes() == array.tobytes()

    @pytest.mark.parametrize(
        ("shape", "dtype"),
        [((5, 9, 3), np.float32), ((5, 9), bool), ((5, 9), np.float32), ((4, 6, 3), np.float32)],
    )
    def test_at_is_the_packed_dense_array(self, shape: tuple[int, ...], dtype: type) -> None:
        """Packing values at given pixels equals packing the dense array that holds them (a value of
        zero is not kept, -0.0 is), and with no pixels at all, an empty pack."""
        rng = np.random.default_rng(len(shape))
        where = np.flatnonzero(rng.random(shape[0] * shape[1]) < 0.4)
        if shape == (4, 6, 3):
            where = where[:0]
        values = rng.normal(size=(len(where),) + shape[2:]).astype(dtype)
        if dtype is np.float32 and len(where) > 3:
            values.reshape(len(where), -1)[:3] = [[0.0], [-0.0], [np.nan]]
        dense = np.zeros(shape, dtype)
        dense.reshape((shape[0] * shape[1],) + shape[2:])[where] = values
        packed, expected = _Packed.at(shape, where, values), _Packed(dense)
        assert packed.shape == expected.shape and packed.dtype == expected.dtype
        assert packed.mask.tobytes() == expected.mask.tobytes()
        assert packed.pixels.shape == expected.pixels.shape
        assert packed.pixels.tobytes() == expected.pixels.tobytes()
        assert packed.unpack().tobytes() == dense.tobytes()

    def test_module(self) -> None:
        """Arrays set into a :class:`Propagated` are packed and read back as new arrays, and ``get`` over
        the stored box or any other box reads what the dense array held."""
        rng = np.random.default_rng(2)
        values = _sparse(rng, (6, 8, 3), np.float32)
        revealed = np.any(values != 0, -1)
        offset = np.where(revealed, 3.0, 0.0).astype(np.float32)
        out = Propagated((0, 20, 0, 20), {}, {}, {}, {}, False)
        out.boxes[0] = (4, 10, 5, 13)
        out.values[0], out.revealed[0], out.offset[0] = values, revealed, offset
        assert isinstance(dict.__getitem__(out.values, 0), _Packed)
        first = out.values[0]
        first[...] = 7.0  # a read is a new array: what is stored does not change
        np.testing.assert_array_equal(out.values[0], values)
        np.testing.assert_array_equal(out.get("values", 0, (4, 10, 5, 13)), values)
        wider = out.get("values", 0, (2, 12, 3, 15))
        np.testing.assert_array_equal(wider[2:8, 2:10], values)
        assert not wider[:2].any() and not wider[:, :2].any()
        np.testing.assert_array_equal(out.get("revealed", 0, (5, 7, 6, 9)), revealed[1:3, 1:4])
        assert not out.get("offset", 1, (0, 3, 0, 3)).any()  # no such target: zero

    def test_dicts_given_are_packed(self) -> None:
        values = _sparse(np.random.default_rng(3), (4, 5, 3), np.float32)
        out = Propagated((0, 4, 0, 5), {0: (0, 4, 0, 5)}, {0: values}, {0: values[..., 0] != 0}, {}, True)
        assert isinstance(dict.__getitem__(out.values, 0), _Packed)
        np.testing.assert_array_equal(out.values[0], values)


class TestGroups:
    def test_cardinality(self) -> None:
        """Each label's indices, ascending, as ``np.flatnonzero(labels == label)`` gives them."""
        labels = np.random.default_rng(4).integers(-1, 40, 5000).astype(np.int32)
        groups = _groups(labels)
        assert list(groups) == sorted(set(labels.tolist()))
        for label, indices in groups.items():
            np.testing.assert_array_equal(indices, np.flatnonzero(labels == label))

    def test_empty(self) -> None:
        assert _groups(np.zeros(0, np.int32)) == {}


class TestMean:
    @pytest.mark.parametrize("with_gain", [False, True])
    def test_same_bits_as_numpy_mean(self, with_gain: bool) -> None:
        """The grey level :func:`_align` measures by: the same bits as NumPy's mean over the channels
        (summed in NumPy's order), over values of very different sizes, where the order shows."""
        rng = np.random.default_rng(8)
        rgb = (rng.random((20000, 3)) * rng.choice([1e-3, 1.0, 1e3], (20000, 3))).astype(np.float32)
        gain = np.array([0.9, 1.0, 1.2], np.float32) if with_gain else None
        expected = (rgb * gain).mean(-1) if gain is not None else rgb.mean(-1)
        found = _mean(rgb, gain)
        assert found.dtype == expected.dtype
        assert found.tobytes() == expected.tobytes()


class TestMany:
    """A target's rings in all its sources, aligned and gain-matched at once: each the same bits as
    alone."""

    @staticmethod
    def _rings(
        rng: np.random.Generator,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
        h, w = 60, 80
        image = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5) * 2 + 0.1
        rings = []
        for _ in range(int(rng.integers(1, 8))):
            source = np.roll(image, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), (0, 1))
            count = int(rng.choice([5, 30, 200, 450, 900]))  # too few to align, some, more than sampled
            ys, xs = rng.integers(2, h - 2, count), rng.integers(2, w - 2, count)
            ring_x = np.clip(xs + rng.normal(0, 0.6, count), 0, w - 1).astype(np.float32)
            ring_y = np.clip(ys + rng.normal(0, 0.6, count), 0, h - 1).astype(np.float32)
            target = (image[ys, xs] * np.float32(rng.uniform(0.8, 1.2))).astype(np.float32)
            levels = rng.uniform(0.5, 2.0, 3).astype(np.float32) if rng.random() < 0.5 else None
            rings.append((source, ring_x, ring_y, target, levels))
        return rings

    def test_align_many_equals_each_alone(self) -> None:
        rng = np.random.default_rng(21)
        for _ in range(20):
            rings = self._rings(rng)
            assert _align_many(rings) == [_align_many([ring])[0] for ring in rings]

    def test_exposure_gains_equal_each_alone(self) -> None:
        rng = np.random.default_rng(22)
        for _ in range(30):
            sizes = rng.integers(0, 400, int(rng.integers(1, 8)))
            # values near the floor (not compared) and of either sign; an even and an odd count of each
            target = [
                (rng.normal(0, 1, (n, 3)) * rng.choice([1e-4, 1.0], (n, 3))).astype(np.float32) for n in sizes
            ]
            warped = [(t * rng.normal(1, 0.3, t.shape)).astype(np.float32) for t in target]
            levels = rng.uniform(0.4, 2.5, (len(sizes), 3)).astype(np.float32)
            found = _exposure_gains(target, warped, levels)
            expected = np.stack(
                [_exposure_gain(t, w, lv) for t, w, lv in zip(target, warped, levels, strict=True)]
            )
            assert found.tobytes() == expected.tobytes()

    def test_none(self) -> None:
        assert _align_many([]) == []
        assert _exposure_gains([], [], np.ones((0, 3), np.float32)).shape == (0, 3)


class TestPick:
    @pytest.mark.parametrize("count", [1, 2, 3])
    def test_same_as_a_gather_of_the_stack(self, count: int) -> None:
        rng = np.random.default_rng(9)
        arrays = [rng.normal(size=500).astype(np.float32) for _ in range(count)]
        index = rng.integers(0, count, 500)
        found = _pick(arrays, index)
        np.testing.assert_array_equal(found, np.stack(arrays)[index, np.arange(500)])
        found[:] = 7.0  # a new array, also for one hypothesis
        assert not any(np.shares_memory(found, a) for a in arrays)

    def test_planes(self) -> None:
        """Arrays laid out by channel ([channel, pixel]) pick per pixel."""
        rng = np.random.default_rng(10)
        planes = [rng.normal(size=(3, 200)).astype(np.float32) for _ in range(3)]
        index = rng.integers(0, 3, 200)
        expected = np.take_along_axis(np.stack(planes), index[None, None], 0)[0]
        np.testing.assert_array_equal(_pick(planes, index), expected)


class TestWeighted:
    @pytest.mark.parametrize("count", [1, 2, 3])
    def test_same_bits_as_the_sum_over_the_stack(self, count: int) -> None:
        """How :func:`_combine` mixes its hypotheses: the same bits as NumPy's sum over the stack."""
        rng = np.random.default_rng(11)
        weight = rng.random((count, 5000)).astype(np.float32)
        weight /= weight.sum(0)
        values = (rng.normal(size=(count, 5000, 3)) * rng.choice([1e-3, 1.0, 1e3], (count, 5000, 3))).astype(
            np.float32
        )
        expected = (weight[..., None] * values).sum(0).astype(np.float32)
        found = _weighted(weight, np.ascontiguousarray(values.transpose(0, 2, 1)))
        assert found.dtype == np.float32 and found.flags.c_contiguous
        assert found.tobytes() == expected.tobytes()


class TestApartPlanes:
    def test_same_numbers_as_apart(self) -> None:
        rng = np.random.default_rng(5)
        a, b = rng.normal(size=(1000, 3)).astype(np.float32), rng.normal(size=(1000, 3)).astype(np.float32)
        a[:10] = 0.0  # the level's floor
        expected = _apart(a, b)
        found = _apart_planes(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T))
        assert found.dtype == expected.dtype
        assert found.tobytes() == expected.tobytes()


class TestLevel:
    @pytest.mark.parametrize("size", [(1, 1), (37, 53), (360, 640)])
    def test_same_bits_as_the_numpy_mean(self, size: tuple[int, int]) -> None:
        """A frame's level, summed by OpenCV: the same bits as NumPy's mean of its known pixels."""
        rng = np.random.default_rng(size[0])
        small = (rng.random(size + (3,)) * rng.choice([0.01, 1.0, 50.0], 3)).astype(np.float32)
        known = rng.random(size) < 0.6
        known[0, 0] = True
        expected = np.maximum(small[known].mean(0), 1e-3).astype(np.float32)
        assert _level(small, known).tobytes() == expected.tobytes()
        assert (_level(small, np.zeros(size, bool)) == 1).all()


class TestCombine:
    def test_two_poses_are_never_blended(self) -> None:
        """Two hypotheses that both weigh: where their values differ by more than ``AGREE`` the heaviest
        is taken alone (its value, bit for bit), where they agree their weighted mix."""
        yy, xx = np.mgrid[0:10, 0:20]
        pixels = _Pixels(yy.ravel(), xx.ravel(), (1.0, 1.0), yy.ravel(), xx.ravel())
        n = 200
        apart = xx.ravel() >= 10
        both = np.ones(n, bool)
        rest = (np.full(n, np.nan), np.zeros(n, bool))  # misfit, disputed: not read here
        first = _Fill(
            np.full((n, 3), 0.5, np.float32), np.full(n, 3), np.full(n, 0.1), both, np.full(n, 2.0), *rest
        )
        second_value = np.where(apart[:, None], 0.9, 0.52) * np.ones((n, 3))
        second = _Fill(
            second_value.astype(np.float32), np.full(n, 5), np.full(n, 0.102), both, np.full(n, 2.0), *rest
        )
        assert (_apart(first.value, second.value)[apart] > AGREE).all()
        fill = _combine([first, second], pixels, locked_off=False)
        assert (fill.value[apart] == np.float32(0.5)).all() and (fill.source == 3).all()
        assert ((fill.value[~apart] > 0.505) & (fill.value[~apart] < 0.515)).all()


class TestMotionThreads:
    def test_pairs_measured_side_by_side_equal_pairs_measured_one_by_one(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With several OpenCV threads the pairs are measured on the motion threads, each with its own
        DIS; every motion layer is bit for bit the one a single thread measures."""
        plate, _, matte = synthetic_shot("pan", exposure=0.03)
        holes = [m > 0 for m in matte]
        threads_seen: set[str] = set()
        measure = propagate_module._PairMotion.__init__

        def spy(self: object, *args: object) -> None:
            threads_seen.add(threading.current_thread().name.rsplit("_", 1)[0])
            measure(self, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(propagate_module._PairMotion, "__init__", spy)
        motions = []
        before = cv2.getNumThreads()
        try:
            for threads in (1, 3):
                cv2.setNumThreads(threads)
                motions.append(
                    Propagator(list(plate), holes, PropagationSettings(), region=(0, H, 0, W)).motion
                )
        finally:
            cv2.setNumThreads(before)
        assert "combcn-motion" in threads_seen and "MainThread" in threads_seen
        one, many = motions
        assert one.locked_off == many.locked_off
        for name in ("forward", "backward"):
            for layer_one, layer_many in zip(getattr(one, name), getattr(many, name), strict=True):
                for a, b in zip(layer_one, layer_many, strict=True):
                    assert a.tobytes() == b.tobytes()
        for name in ("second", "movers", "scene_forward", "scene_backward"):
            for a, b in zip(getattr(one, name), getattr(many, name), strict=True):
                assert a.tobytes() == b.tobytes()


class TestPlaneFlow:
    def test_the_matrix_gives_the_fitted_field_again(self) -> None:
        """A pair keeps a plane's homography and makes its field when asked: the same bits as the fit's."""
        gy, gx = np.mgrid[0:40, 0:60].astype(np.float32)
        flow = np.stack([0.02 * gx + 0.5, -0.01 * gy + 0.25], -1).astype(np.float32)
        fitted, inliers, matrix = propagate_module._homography_flow(flow, np.ones((40, 60), bool))
        assert fitted is not None and matrix is not None and inliers.mean() > 0.9
        again = propagate_module._plane_flow(matrix, (40, 60))
        assert again.dtype == np.float32 and again.tobytes() == fitted.tobytes()
