"""Probe holes: the matte's unresolved shape cut into known pixels, each candidate scored there, and
the expected error reported (combcn/engine/probe.py and its use in the engine)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import one_thread, tiny_model  # noqa: F401

from combcn.engine import Engine, core, probe
from combcn.engine.core import _clone_to_border

pytestmark = pytest.mark.usefixtures("one_thread")


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A plate-like texture: a smooth gradient plus blurred noise, in [0, 1], ndarray[h, w, 3]."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.2)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.3 + 0.3 * (xs / w)[..., None] + 0.1 * (ys / h)[..., None]
    return np.clip(base + 0.6 * (noise - noise.mean()), 0.0, 1.0).astype(np.float32)


class TestPlacements:
    def test_smoke(self) -> None:
        shifts = probe.placements((40, 60, 50, 80), 200, 300, lambda box: True)
        assert len(shifts) == probe.PROBES
        for dy, dx in shifts:  # beside the hole, not on it, inside the plate
            assert (abs(dy) >= 20 or abs(dx) >= 30) and 0 <= 40 + dy and 60 + dy <= 200
            assert 0 <= 50 + dx and 80 + dx <= 300

    def test_avoids_the_matte(self) -> None:
        matte_box = (0, 200, 0, 60)  # a second object down the left of the frame

        def free(box: tuple[int, int, int, int]) -> bool:
            return box[3] <= matte_box[2] or box[2] >= matte_box[3]

        shifts = probe.placements((40, 60, 100, 130), 200, 300, free)
        assert shifts and all(100 + dx - 8 >= 60 for _, dx in shifts)

    def test_a_wide_hole_is_probed_past_the_frame_edge(self) -> None:
        # no whole copy of a hole half the frame wide fits beside it; one with half of it inside does
        shifts = probe.placements((20, 70, 20, 180), 100, 300, lambda box: True)
        assert shifts and all(180 + dx > 300 for _, dx in shifts if dx > 0)

    def test_a_hole_too_large_for_its_copy_is_probed_at_half_size(self) -> None:
        box = (24, 72, 40, 120)  # 48 x 80 of a 96 x 160 frame

        def free(probe_box: tuple[int, int, int, int]) -> bool:  # clear of the hole
            y0, y1, x0, x1 = probe_box
            return y1 <= box[0] or y0 >= box[1] or x1 <= box[2] or x0 >= box[3]

        assert probe.placements(box, 96, 160, free) == []
        shifts = probe.placements(box, 96, 160, free, scale=2)
        assert shifts and probe.probe_size(box, 2) == (24, 40)
        for dy, dx in shifts:
            moved = (box[0] + dy, box[0] + dy + 24, box[2] + dx, box[2] + dx + 40)
            assert free(moved)
            inside = (min(96, moved[1]) - max(0, moved[0])) * (min(160, moved[3]) - max(0, moved[2]))
            assert inside >= probe.INSIDE * 24 * 40

    def test_shrink_keeps_the_shape(self) -> None:
        hole = np.zeros((40, 60), bool)
        hole[10:30, 0:30] = True  # the left half's middle rows
        small = probe.shrink(hole, 2)
        assert small.shape == (20, 30)
        assert small[5:15, 0:15].all() and small.sum() == 150
        assert probe.shrink(hole, 1) is hole
        stroke = np.eye(40, 60, dtype=bool)  # one pixel wide: less than half of every 2 x 2 block
        thin = probe.shrink(stroke, 2)
        assert thin.any() and thin.shape == (20, 30)

    def test_exception_no_room(self) -> None:
        # a hole as big as the plate leaves nowhere to cut a probe
        assert probe.placements((10, 90, 10, 90), 100, 100, lambda box: True) == []


class TestScore:
    def test_a_blur_does_not_win_by_blurring(self) -> None:
        truth = _texture(64, 64)
        hole = np.zeros((64, 64), bool)
        hole[16:48, 16:48] = True
        flat = np.where(hole[..., None], cv2.GaussianBlur(truth, (0, 0), 6.0), truth)  # the truth, blurred
        other = _texture(64, 64, seed=1)  # the right kind of texture, in the wrong phase
        textured = np.where(hole[..., None], other, truth)
        blur, sharp = probe.score([flat], [truth], [hole]), probe.score([textured], [truth], [hole])
        assert blur.mae < sharp.mae  # MAE alone rewards the blur ...
        assert blur.detail < 0.2 and 0.85 <= sharp.detail <= 1.2
        assert probe.choose({"network": blur, "telea": sharp}, 1).method == "telea"  # ... the score does not

    def test_cardinality_exact_fill(self) -> None:
        truth = _texture(32, 32)
        hole = np.zeros((32, 32), bool)
        hole[8:20, 8:20] = True
        s = probe.score([truth], [truth], [hole])
        assert s.mae == 0.0 and s.detail == pytest.approx(1.0)


class TestTelea:
    def test_stays_within_the_values_around_it(self) -> None:
        # OpenCV's float Telea overshoots on wide holes (to twice the values around them): the probe's
        # Telea must not, and must keep every pixel outside the hole as it was.
        rng = np.random.default_rng(3)
        values = (rng.random((120, 200, 3)) * 0.2 + 0.4).astype(np.float32)
        hole = np.zeros((120, 200), bool)
        hole[30:90, 50:150] = True
        out = probe.telea(values, hole)
        assert out[hole].max() <= values[~hole].max() + 1e-3 and out[hole].min() >= values[~hole].min() - 1e-3
        assert np.array_equal(out[~hole], values[~hole])


class TestOverTheHoleBox:
    """The probe's filters run over the hole's box (``probe.around``) and must give the bits that
    OpenCV gives over the whole array: each against the plain whole-array computation, on random
    pictures and holes (some on the array's edge, some scattered, one empty)."""

    @staticmethod
    def _cases(count: int = 40) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(5)
        out = []
        for i in range(count):
            h, w = int(rng.integers(20, 200)), int(rng.integers(20, 700))
            values = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.0)
            texture = ((rng.random((h, w, 3)) - 0.5) * 0.1).astype(np.float32)
            hole = np.zeros((h, w), bool)
            y0, x0 = int(rng.integers(-10, h)), int(rng.integers(-10, w))
            hole[
                max(0, y0) : y0 + int(rng.integers(1, h // 2 + 2)),
                max(0, x0) : x0 + int(rng.integers(1, w // 2 + 2)),
            ] = True
            if i % 4 == 1:
                hole = rng.random((h, w)) < 0.002
            if i == 0:
                hole[:] = False
            out.append((values, texture, hole))
        return out

    def test_telea_is_the_whole_array_s(self) -> None:
        for values, _, hole in self._cases():
            whole = np.empty_like(values)
            for c in range(3):
                channel = np.rint(np.clip(values[..., c], 0.0, 1.0) * 65535.0).astype(np.uint16)
                filled = cv2.inpaint(channel, hole.astype(np.uint8), probe.TELEA_RADIUS, cv2.INPAINT_TELEA)
                whole[..., c] = filled.astype(np.float32) / 65535.0
            whole[~hole] = values[~hole]
            assert np.array_equal(probe.telea(values, hole), whole)

    def test_detail_is_the_whole_array_s(self) -> None:
        for values, _, hole in self._cases():
            lap = np.abs(cv2.Laplacian(values.mean(axis=2).astype(np.float32), cv2.CV_32F, ksize=1))
            inner = cv2.erode(hole.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0) > 0
            where = inner if inner.any() else hole
            whole = float(lap[where].mean()) if where.any() else 0.0
            assert probe.detail_of(values, hole) == whole

    def test_add_texture_is_the_whole_array_s(self) -> None:
        for values, texture, hole in self._cases():
            plate = probe.value_range(values, ~hole)
            low = cv2.GaussianBlur(values, (0, 0), probe.TEXTURE_SIGMA)
            lo, hi = values.min(axis=(0, 1)), values.max(axis=(0, 1))
            if plate.size:
                known = values[~hole]
                assert np.array_equal(plate, np.stack([known.min(axis=0), known.max(axis=0)]))
                lo, hi = np.minimum(lo, plate[0]), np.maximum(hi, plate[1])
            whole = np.where(hole[..., None], np.clip(low + 0.7 * texture, lo, hi), values)
            assert np.array_equal(probe.add_texture(values, texture, hole, 0.7, plate), whole)


def _tiles(h: int, w: int, period: int = 16, seed: int = 0) -> np.ndarray:
    """A repeating pattern (one random tile of ``period`` pixels, tiled): ndarray[h, w, 3] in [0, 1].
    Whatever a hole in it hides is shown again one period away."""
    rng = np.random.default_rng(seed)
    tile = cv2.GaussianBlur(rng.random((period, period, 3)).astype(np.float32), (0, 0), 0.8)
    reps = (h // period + 1, w // period + 1, 1)
    return np.asarray(np.tile(tile, reps)[:h, :w], np.float32)


class TestPatch:
    def test_a_repeating_pattern_is_restored_sharp(self) -> None:
        # a hole large enough to be searched at a lower scale (more than PATCH_PIXELS pixels): the
        # offsets found there, applied at full size, must still land on the pattern, not blur it
        values = _tiles(240, 320)
        hole = np.zeros((240, 320), bool)
        hole[60:180, 100:220] = True
        assert hole.sum() > probe.PATCH_PIXELS
        out = probe.patch(values, hole)
        assert np.array_equal(out[~hole], values[~hole])
        patch_score = probe.score([out], [values], [hole])
        telea_score = probe.score([probe.telea(values, hole)], [values], [hole])
        assert 0.85 <= patch_score.detail <= 1.2 and telea_score.detail < 0.5
        assert patch_score.mae < 0.5 * telea_score.mae

    def test_offsets_point_outside_the_hole_and_are_repeatable(self) -> None:
        values = _texture(96, 128)
        hole = np.zeros((96, 128), bool)
        hole[30:70, 40:90] = True
        offsets = probe.patch_offsets(values, hole)
        assert np.array_equal(offsets, probe.patch_offsets(values, hole))  # farm chunks rely on it
        assert not offsets[~hole].any()
        ys, xs = np.nonzero(hole)
        sy, sx = ys + offsets[ys, xs, 0], xs + offsets[ys, xs, 1]
        inside = (sy >= 0) & (sy < 96) & (sx >= 0) & (sx < 128)
        assert inside.all() and not hole[sy, sx].any()

    def test_a_source_in_the_hole_is_reported_missing(self) -> None:
        values = _texture(32, 32)
        hole = np.zeros((32, 32), bool)
        hole[10:20, 10:20] = True
        offsets = np.zeros((32, 32, 2), np.int32)
        offsets[hole] = (0, 12)  # right of the hole: known, except where it lands on the hole again
        offsets[12, 12] = (2, 2)  # into the hole
        out, missing = probe.apply_offsets(values, hole, offsets)
        assert missing.sum() == 1 and missing[12, 12]
        assert np.array_equal(out[15, 15], values[15, 27]) and np.array_equal(out[~hole], values[~hole])
        filled = probe.patch(values, hole, offsets)
        assert np.isfinite(filled).all() and not np.array_equal(filled[12, 12], values[12, 12])


class TestTexture:
    def test_the_copied_texture_ignores_what_the_excluded_pixels_hold(self) -> None:
        # a locked-off window's frames differ only inside the union of their holes, so the texture of
        # its still plate is measured once for all of them (core's _patch): that needs fine_of to read
        # nothing inside ``exclude``, and copy_texture to be fine_of copied along the offsets
        rng = np.random.default_rng(9)
        values = _texture(64, 128)
        exclude = np.zeros((64, 128), bool)
        exclude[16:48, 40:80] = True
        other = values.copy()
        other[exclude] = rng.random((int(exclude.sum()), 3)).astype(np.float32)
        fine = probe.fine_of(values, exclude)
        assert np.array_equal(fine, probe.fine_of(other, exclude))
        assert not fine[exclude].any() and fine[~exclude].std() > 0.005
        hole = np.zeros_like(exclude)
        hole[20:44, 44:76] = True
        offsets = np.zeros((64, 128, 2), np.int32)
        offsets[..., 1] = 48  # from 48 columns to the right, outside the excluded pixels
        copied = probe.copy_fine(fine, hole, offsets)
        assert np.array_equal(copied, probe.copy_texture(other, hole, offsets, exclude))
        assert np.array_equal(copied[hole], np.roll(fine, -48, axis=1)[hole])

    def test_level_from_the_smooth_fill_detail_from_the_copy(self) -> None:
        hole = np.zeros((64, 128), bool)
        hole[16:48, 16:48] = True
        smooth = np.full((64, 128, 3), 0.5, np.float32)
        smooth[:8] = 0.1  # the range the known pixels show: 0.1-0.9
        smooth[-8:] = 0.9
        ys, xs = np.mgrid[0:64, 0:128]
        checker = (((ys // 2 + xs // 2) % 2) * 0.2 - 0.1).astype(np.float32)[..., None]
        plate = np.broadcast_to(0.3 + checker, (64, 128, 3)).astype(np.float32)  # another level
        offsets = np.zeros((64, 128, 2), np.int32)
        offsets[hole] = (0, 48)  # from beside the hole, in phase with the checker
        texture = probe.copy_texture(plate, hole, offsets)
        out = probe.add_texture(smooth, texture, hole)
        assert np.array_equal(out[~hole], smooth[~hole])
        inner = np.zeros_like(hole)
        inner[20:44, 20:44] = True
        assert abs(float(out[inner].mean()) - 0.5) < 0.01  # the smooth fill's level, not the copy's 0.3
        assert probe.detail_of(out, inner) == pytest.approx(probe.detail_of(plate, inner), rel=0.25)

    def test_a_seam_between_two_copies_is_not_an_edge(self) -> None:
        # two halves copied from places of different level: the copied texture is each source's own,
        # with no step where they meet (a texture taken from the copy would have one)
        rng = np.random.default_rng(2)
        plate = np.full((64, 96, 3), 0.2, np.float32)
        plate[:, 48:] = 0.8
        plate += rng.normal(0.0, 0.01, plate.shape).astype(np.float32)
        hole = np.zeros((64, 96), bool)
        hole[20:44, 30:60] = True
        offsets = np.zeros((64, 96, 2), np.int32)
        offsets[20:44, 30:45] = (-20, -25)  # the dark side
        offsets[20:44, 45:60] = (-20, 30)  # the bright side
        texture = probe.copy_texture(plate, hole, offsets)
        assert float(np.abs(texture[hole]).max()) < 0.06  # grain only: no trace of the 0.6 step
        copy, _ = probe.apply_offsets(plate, hole, offsets)
        old_way = copy - cv2.GaussianBlur(copy, (0, 0), probe.TEXTURE_SIGMA)
        assert float(np.abs(old_way[hole]).max()) > 0.2

    def test_the_ring_detail_is_the_plates_beside_the_hole(self) -> None:
        # grain in the band around the hole, flat beyond it and inside it: the band's detail alone
        rng = np.random.default_rng(5)
        hole = np.zeros((80, 80), bool)
        hole[30:50, 30:50] = True
        band = np.zeros_like(hole)
        band[30 - probe.RING : 50 + probe.RING, 30 - probe.RING : 50 + probe.RING] = True
        band &= ~hole
        values = np.full((80, 80, 3), 0.5, np.float32)
        values[band] += rng.normal(0.0, 0.05, (int(band.sum()), 3)).astype(np.float32)
        values[hole] = 0.9  # a step at the hole's edge is not the plate's detail
        assert probe.ring_detail(values, hole) == pytest.approx(probe.detail_of(values, band))
        assert probe.ring_detail(np.full_like(values, 0.5), hole) == 0.0
        assert probe.ring_detail(values, np.ones_like(hole)) is None

    def test_the_hole_puts_no_edge_into_the_texture_of_the_sources_beside_it(self) -> None:
        # the hole emptied to black (as an evaluation does) or holding the object to remove: the
        # sources right beside it carry their own grain, not the step into the hole
        rng = np.random.default_rng(6)
        plate = (0.6 + rng.normal(0.0, 0.01, (64, 96, 3))).astype(np.float32)
        hole = np.zeros((64, 96), bool)
        hole[20:44, 30:60] = True
        plate[hole] = 0.0
        offsets = np.zeros((64, 96, 2), np.int32)
        offsets[hole] = (0, 30)  # the right half copies the column just right of the hole, and so on
        texture = probe.copy_texture(plate, hole, offsets)
        assert float(np.abs(texture[hole]).max()) < 0.06
        unmasked = plate - cv2.GaussianBlur(plate, (0, 0), probe.TEXTURE_SIGMA)
        assert float(np.abs(unmasked[20:44, 60]).max()) > 0.1  # the step a plain blur would bring

    @pytest.mark.parametrize("amplitude", [0.25, 0.5, 1.0, 2.0])
    def test_the_copys_texture_is_brought_to_the_rings_detail(self, amplitude: float) -> None:
        # a copy whose grain is fainter or busier than the plate's around the hole (the median of a
        # locked-off window's frames has lost the grain): scaled to meet the ring's detail
        rng = np.random.default_rng(7)
        hole = np.zeros((96, 96), bool)
        hole[28:68, 28:68] = True
        plate = (0.5 + rng.normal(0.0, 0.04, (96, 96, 3))).astype(np.float32)
        texture = (amplitude * rng.normal(0.0, 0.04, (96, 96, 3))).astype(np.float32)
        smooth = np.where(hole[..., None], 0.5, plate).astype(np.float32)
        target = probe.ring_detail(plate, hole)
        assert target is not None
        gain = probe.texture_gain(smooth, texture, hole, target)
        lo, hi = probe.TEXTURE_GAIN
        assert lo <= gain <= hi
        out = probe.add_texture(smooth, texture, hole, gain, plate)
        assert np.array_equal(out[~hole], smooth[~hole])
        reached = probe.detail_of(out, hole)
        if amplitude * hi >= 1.0:  # within reach of the gain
            assert reached == pytest.approx(target, rel=0.1)
        else:  # as far as it goes
            assert gain == hi and reached < target
        plain = probe.detail_of(probe.add_texture(smooth, texture, hole), hole)
        assert abs(reached - target) <= abs(plain - target) + 1e-6  # never further than the plain copy
        assert probe.texture_gain(smooth, texture, hole, None) == 1.0

    def test_a_copy_is_joined_by_its_level_and_keeps_its_grain_at_the_edge(self) -> None:
        # the border join of a copy moves its level to the plate's but leaves its grain; the plain join
        # would cancel the grain on every pixel that touches the border
        known = np.full((40, 40, 3), 0.5, np.float32)
        todo = np.zeros((40, 40), bool)
        todo[10:30, 10:30] = True
        ys, xs = np.mgrid[0:40, 0:40]
        grain = (((ys + xs) % 2) * 0.2 - 0.1).astype(np.float32)[..., None]
        net = np.where(todo[..., None], 0.3 + grain, known).astype(np.float32)
        edge = todo & ~(cv2.erode(todo.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        plain = _clone_to_border(net, known, todo)
        level = _clone_to_border(net, known, todo, probe.TEXTURE_SIGMA)
        assert float(plain[edge].std()) < 0.01  # cancelled
        assert float(level[edge].std()) > 0.05  # kept
        assert abs(float(level[todo].mean()) - 0.5) < 0.02  # at the plate's level, not the copy's 0.3

    def test_the_mean_of_two_fills_errs_less_than_either(self) -> None:
        # two guesses with errors of their own (one too bright in places, the other too dark elsewhere)
        rng = np.random.default_rng(3)
        truth = _texture(48, 48)
        first = truth + rng.normal(0.0, 0.1, truth.shape).astype(np.float32)
        second = truth + rng.normal(0.0, 0.1, truth.shape).astype(np.float32)
        mean = probe.mean_fill(first, second)
        assert mean.dtype == np.float32 and mean.shape == truth.shape
        errors = [float(np.abs(f - truth).mean()) for f in (first, second, mean)]
        assert errors[2] < 0.8 * min(errors[:2])
        assert np.array_equal(probe.mean_fill(first, first), first)

    def test_a_tie_goes_to_the_network(self) -> None:
        same = probe.Score(10.0, 1.0)
        scores = {name: same for name in reversed(probe.METHODS)}
        assert probe.choose(scores, 1).method == "network"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", model=tiny_model(window=4, resolution=32))


class TestEngineProbe:
    def _shot(self) -> tuple[np.ndarray, np.ndarray]:
        """A locked-off textured plate with a static box hole: every hole pixel is synthesised."""
        frame = _texture(96, 160)
        plate = np.repeat(frame[None], 6, axis=0).copy()
        matte = np.zeros((6, 96, 160), np.float32)
        matte[:, 36:60, 68:96] = 1.0
        return plate, matte

    #: a static box too large for a copy of it to fit beside it in the 96 x 160 frame; half of it does
    LARGE = (slice(None), slice(24, 72), slice(40, 120))

    def _large_box(self) -> np.ndarray:
        """The matte of :attr:`LARGE` over the six frames of :meth:`_shot`."""
        matte = np.zeros((6, 96, 160), np.float32)
        matte[self.LARGE] = 1.0
        return matte

    @staticmethod
    def _grainy(seed: int) -> np.ndarray:
        """A locked-off plate of a repeating pattern with new grain in every frame (6 x 96 x 160)."""
        rng = np.random.default_rng(seed)
        frame = 0.5 + 0.5 * (_tiles(96, 160) - 0.5)
        return np.clip(frame[None] + rng.normal(0.0, 0.03, (6, 96, 160, 3)), 0.0, 1.0).astype(np.float32)

    def test_expected_error_reported_for_every_frame_and_near_the_measured(self, engine: Engine) -> None:
        plate, matte = self._shot()
        out, expected = engine.inpaint_with_report(plate, matte, shaper="none")
        assert sorted(expected) == list(range(6))
        hole = matte > 0
        measured = float(np.abs(out - plate)[hole].mean()) * 255.0
        # the same texture beside the hole: the probe's figure tells the real hole's error
        assert 0.5 * measured <= expected[0] <= 2.0 * measured
        assert np.array_equal(out[~hole], plate[~hole])

    def test_a_pattern_is_filled_by_the_patch_copy_the_same_in_every_frame(self, engine: Engine) -> None:
        # a locked-off plate of a repeating pattern: the shift-map copy restores it exactly where the
        # network and Telea blur it; the probe must choose it, and the fill must not flicker
        plate = np.repeat(_tiles(96, 160)[None], 6, axis=0).copy()
        _, matte = self._shot()
        out, expected = engine.inpaint_with_report(plate, matte, shaper="none")
        hole = matte > 0
        assert np.array_equal(out[~hole], plate[~hole])
        measured = float(np.abs(out - plate)[hole].mean()) * 255.0
        telea_error = float(np.abs(probe.telea(plate[0], hole[0]) - plate[0])[hole[0]].mean()) * 255.0
        assert measured < 0.5 * telea_error
        # (two windows overlap: their weighted sum may differ from frame to frame in the last bit)
        assert all(np.allclose(out[0][hole[0]], out[t][hole[t]], rtol=0, atol=1e-5) for t in range(1, 6))
        assert expected[0] < 0.5 * telea_error

    def test_probe_off_reports_nothing_and_fills_with_the_network(self, engine: Engine) -> None:
        plate, matte = self._shot()
        out, expected = engine.inpaint_with_report(plate, matte, shaper="none", probe=False)
        assert expected == {}
        assert np.array_equal(out, engine.inpaint(plate, matte, shaper="none", probe=False))

    def test_the_better_candidate_fills(self, engine: Engine) -> None:
        # a smooth ramp: Telea continues it almost exactly, an untrained tiny network does not; the probe
        # must see that and fill the real hole with Telea
        ys, xs = np.mgrid[0:96, 0:160].astype(np.float32)
        ramp = np.stack([0.2 + 0.5 * xs / 160, 0.3 + 0.2 * ys / 96, 0.4 + 0.0 * xs], -1).astype(np.float32)
        plate = np.repeat(ramp[None], 6, axis=0).copy()
        _, matte = self._shot()
        with_probe = engine.inpaint(plate, matte, shaper="none")
        without = engine.inpaint(plate, matte, shaper="none", probe=False)
        hole = matte > 0
        error_with = np.abs(with_probe - plate)[hole].mean()
        error_without = np.abs(without - plate)[hole].mean()
        assert error_with < 0.5 * error_without

    def test_a_blend_fills_with_the_mean_of_the_network_and_telea(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # the probe's choice forced, to see each candidate's fill of the same real hole
        plate, matte = self._shot()
        hole = matte > 0

        def fill_with(method: str) -> np.ndarray:
            def choose(scores: dict[str, probe.Score], probes: int) -> probe.Verdict:
                assert {"blend", "blend+texture"} <= set(scores)  # both scored on the probes
                return probe.Verdict(method, scores[method].mae, scores, probes)

            monkeypatch.setattr(probe, "choose", choose)
            return engine.inpaint(plate, matte, shaper="none")

        network, telea, blend = (fill_with(m) for m in ("network", "telea", "blend"))
        assert np.array_equal(blend[~hole], plate[~hole])
        assert not np.allclose(network[hole], telea[hole], atol=0.01)  # two different guesses
        # their mean, joined to the border as each is (the join is linear in the fill; the output
        # guard's clamp of the untrained network's extremes is not, on a few pixels)
        apart = float(np.abs(network[hole] - telea[hole]).mean())
        assert float(np.abs(blend[hole] - 0.5 * (network[hole] + telea[hole])).mean()) < 0.1 * apart

    def test_a_locked_off_fill_has_the_grain_of_the_plate_around_it(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # a locked-off plate with new grain in every frame: the copy of its median has lost the grain,
        # and the texture is brought back to the detail the plate shows around the hole (fails with the
        # gain held at 1: 0.65 of it). The frames between the key frames carry a cross-fade of the two
        # keys' fills, whose grain differs: 0.85 of the ring's detail midway
        plate = self._grainy(11)
        _, matte = self._shot()
        hole = matte > 0

        def choose(scores: dict[str, probe.Score], probes: int) -> probe.Verdict:
            return probe.Verdict("telea+texture", scores["telea+texture"].mae, scores, probes)

        monkeypatch.setattr(probe, "choose", choose)
        out = engine.inpaint(plate, matte, shaper="none")
        assert np.array_equal(out[~hole], plate[~hole])
        for t in range(6):
            ring = probe.ring_detail(plate[t], hole[t])
            assert ring is not None
            assert 0.8 * ring <= probe.detail_of(out[t], hole[t]) <= 1.15 * ring, t

    def test_a_hole_too_large_for_a_full_size_probe_is_measured_at_half_size(
        self, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        # no copy of the box fits beside it, half of it does: the candidates are scored there, the
        # log says at what size, and the expected error is reported for every frame
        plate, _ = self._shot()
        matte = self._large_box()
        with caplog.at_level("INFO", logger="combcn.engine"):
            out, expected = engine.inpaint_with_report(plate, matte, shaper="none")
        assert "probe hole(s) of its shape at 1/2 of its size" in caplog.text
        assert sorted(expected) == list(range(6)) and all(v > 0 for v in expected.values())
        hole = matte > 0
        assert np.array_equal(out[~hole], plate[~hole])

    def test_the_probes_texture_meets_the_detail_of_the_plate_it_is_cut_into(
        self, engine: Engine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # a plate of one texture and grain everywhere, a box too large for a full-size probe: the
        # texture candidates' detail on the (half-size) probe is the plate's there, whatever the fill
        # of the real hole, four times larger and smooth under Telea, would ask for (0.81-0.87 with the
        # gain measured over both)
        plate, matte = self._grainy(4), self._large_box()
        seen: list[probe.Verdict] = []
        choose = probe.choose

        def keep(scores: dict[str, probe.Score], probes: int) -> probe.Verdict:
            seen.append(choose(scores, probes))
            return seen[-1]

        monkeypatch.setattr(probe, "choose", keep)
        engine.inpaint(plate, matte, shaper="none")
        assert seen
        for verdict in seen:
            for name in ("network+texture", "telea+texture", "blend+texture"):
                assert 0.9 <= verdict.scores[name].detail <= 1.15, (name, verdict.scores[name])

    def test_a_matte_reaching_past_the_unresolved_pixels_is_probed_at_half_size(self, engine: Engine) -> None:
        # beside the static box, a small square of matte moves down the frame: other frames show what
        # it hides, so each frame's matte box reaches past the box of what is left to synthesise (the
        # half-size probe's shape is cut from the latter)
        plate, _ = self._shot()
        matte = self._large_box()
        for t in range(6):
            matte[t, 20 + 8 * t : 30 + 8 * t, 122:130] = 1.0
        out, expected = engine.inpaint_with_report(plate, matte, shaper="none")
        assert sorted(expected) == list(range(6))
        hole = matte > 0
        assert np.array_equal(out[~hole], plate[~hole])
        square = hole.copy()
        square[self.LARGE] = False
        assert float(np.abs(out - plate)[square].max()) < 0.02  # shown by the other frames

    def test_with_no_room_for_a_probe_the_window_says_so_and_the_network_fills(
        self, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        # a box over most of the frame: no probe hole of its shape fits beside it, so nothing is
        # measured or reported; the log says which window and what filled it (the network alone, as
        # with probing off: the same fill), and a render with probing off says nothing of probes
        plate, _ = self._shot()
        matte = np.zeros(plate.shape[:3], np.float32)
        matte[:, 20:76, 30:130] = 1.0
        with caplog.at_level("INFO", logger="combcn.engine"):
            out, expected = engine.inpaint_with_report(plate, matte, shaper="none")
        assert expected == {}
        said = (
            "window 0-3: what no frame shows: no probe hole of its shape fits beside the matte, even at "
            f"1/{probe.SCALES[-1]} of its size"
        )
        assert f"{said}; filled by {core.UNPROBED}" in caplog.text
        caplog.clear()
        with caplog.at_level("INFO", logger="combcn.engine"):
            network = engine.inpaint(plate, matte, shaper="none", probe=False)
        assert "probe" not in caplog.text
        assert core.UNPROBED != "network" or np.array_equal(out, network)
