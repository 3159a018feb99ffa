"""CombCN at plate resolution (combcn/model/plate.py): tiling, the join of tiles, the start from the
working-size CombCN, and its place in the model and its weights files."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from combcn.errors import ConfigError
from combcn.model import Inpainter, ModelConfig, load_model, save_weights
from combcn.model import plate as plate_mod
from combcn.model.plate import PlateCombCN, from_combcn, tiles

TINY = ModelConfig(width=0.0625, window=4, resolution=32, prefill="plate", plate=True)


def _frame(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.random((h, w, 3), dtype=np.float32)
    coarse = np.full((h, w, 3), 0.4, np.float32)
    hole = np.zeros((h, w), bool)
    hole[h // 4 : 3 * h // 4, w // 5 : 4 * w // 5] = True
    return rows, hole, coarse


def _constant_correction(net: PlateCombCN, value: float) -> PlateCombCN:
    """The network made to add ``value`` ([0, 1] units) everywhere: last weights 0, bias 2 x value."""
    last = net.net.l17[0]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(2.0 * value)
    return net.eval()


class TestTiles:
    def test_smoke(self) -> None:
        assert tiles(100, 200) == [(slice(0, 100), slice(0, 200))]

    def test_cover_with_overlap(self) -> None:
        h, w = 1300, 700
        covered = np.zeros((h, w), int)
        spans = tiles(h, w)
        assert len(spans) > 2
        for ty, tx in spans:
            assert ty.stop - ty.start <= plate_mod.TILE and tx.stop - tx.start <= plate_mod.TILE
            covered[ty, tx] += 1
        assert covered.min() >= 1
        starts = sorted({ty.start for ty, _ in spans})
        stops = sorted({ty.stop for ty, _ in spans})
        assert all(
            stop - start >= plate_mod.OVERLAP for start, stop in zip(starts[1:], stops[:-1], strict=False)
        )


class TestFill:
    def test_untrained_network_returns_the_working_size_fill(self) -> None:
        torch.manual_seed(0)
        net = PlateCombCN(TINY).eval()
        rows, hole, coarse = _frame(60, 90)
        out = net.fill(rows, hole, coarse)
        np.testing.assert_allclose(out, coarse, atol=1e-6)

    def test_only_the_hole_changes(self) -> None:
        net = _constant_correction(PlateCombCN(TINY), 0.1)
        rows, hole, coarse = _frame(60, 90)
        out = net.fill(rows, hole, coarse)
        np.testing.assert_allclose(out[hole], 0.5, atol=1e-5)
        assert np.array_equal(out[~hole], coarse[~hole])

    def test_wanted_pixels_only(self) -> None:
        net = _constant_correction(PlateCombCN(TINY), 0.1)
        rows, hole, coarse = _frame(60, 90)
        want = np.zeros_like(hole)
        want[20:30, 30:40] = True
        out = net.fill(rows, hole, coarse, want=want)
        np.testing.assert_allclose(out[want & hole], 0.5, atol=1e-5)
        assert np.array_equal(out[hole & ~want], coarse[hole & ~want])

    def test_tiles_join_without_a_seam(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # a hole wider than a tile is filled in overlapping tiles; where every tile adds the same,
        # the blend across their overlaps must give exactly that (no seam, no double counting)
        monkeypatch.setattr(plate_mod, "TILE", 48)
        monkeypatch.setattr(plate_mod, "OVERLAP", 16)
        net = _constant_correction(PlateCombCN(TINY), 0.1)
        rows, hole, coarse = _frame(90, 200)
        assert len(tiles(90 + 2 * plate_mod.CONTEXT, 200)) > 4
        out = net.fill(rows, hole, coarse)
        np.testing.assert_allclose(out[hole], 0.5, atol=1e-5)

    def test_tiles_agree_with_one_pass_on_a_real_network(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # with a network whose correction depends on the pixels, tiles of the size used in renders
        # give nearly what one pass over the whole region gives (differences only in the overlaps)
        torch.manual_seed(1)
        net = PlateCombCN(TINY)
        for p in net.parameters():  # every layer live, the last one too
            torch.nn.init.normal_(p, std=0.05) if p.dim() > 1 else None
        net.eval()
        rows, hole, coarse = _frame(120, 300, seed=3)
        whole = net.fill(rows, hole, coarse)
        monkeypatch.setattr(plate_mod, "TILE", 160)
        monkeypatch.setattr(plate_mod, "OVERLAP", 48)
        tiled = net.fill(rows, hole, coarse)
        assert not np.array_equal(whole[hole], coarse[hole])
        assert float(np.abs(tiled - whole)[hole].mean()) < 0.25 * float(np.abs(whole - coarse)[hole].mean())


class TestBounded:
    def test_lightness_only_within_the_plate_detail(self) -> None:
        rng = np.random.default_rng(0)
        pre = np.full((40, 40, 3), 0.5, np.float32)
        pre += 0.02 * rng.standard_normal((40, 40, 1)).astype(np.float32)  # grain of about 0.02
        hole = np.zeros((40, 40), bool)
        hole[10:30, 10:30] = True
        correction = np.zeros((40, 40, 3), np.float32)
        correction[..., 1:] = 0.6  # a strong cyan cast, as an untamed network made on the sample
        out = plate_mod.bounded(correction, pre, hole)
        assert np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2])  # no colour
        assert 0.0 < float(out.max()) < 0.1  # no more than the grain around the hole allows

    def test_nothing_known_nothing_added(self) -> None:
        out = plate_mod.bounded(
            np.ones((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32), np.ones((8, 8), bool)
        )
        assert not out.any()


class TestFromCombCN:
    def test_starts_as_the_working_size_fill_with_its_layers(self) -> None:
        torch.manual_seed(0)
        model = Inpainter(dataclasses.replace(TINY, plate=False, seen=True, keep_seen=True))
        for p in model.net2d.parameters():
            torch.nn.init.normal_(p, std=0.1)
        plate = from_combcn(model.net2d, TINY)
        assert torch.equal(plate.net.l5[0].weight, model.net2d.l5[0].weight)
        assert torch.equal(plate.net.l1[0].weight, model.net2d.l1[0].weight[:, :4])
        rows, hole, coarse = _frame(40, 64)
        np.testing.assert_allclose(plate.eval().fill(rows, hole, coarse), coarse, atol=1e-6)


class TestInModel:
    def test_weights_round_trip(self, tmp_path) -> None:
        torch.manual_seed(0)
        model = Inpainter(TINY)
        assert isinstance(model.plate, PlateCombCN)
        assert any(k.startswith("plate.") for k in model.state_dict())
        with torch.no_grad():
            model.plate.net.l17[0].bias.fill_(0.3)
        path = save_weights(model, tmp_path / "w.pt")
        loaded = load_model(path)
        assert loaded.config.plate
        assert torch.equal(loaded.plate.net.l17[0].bias, model.plate.net.l17[0].bias)
        rows, hole, coarse = _frame(40, 64)
        np.testing.assert_allclose(loaded.plate.fill(rows, hole, coarse)[hole], 0.4 + 0.5 * 0.3, atol=1e-5)

    def test_without_it(self) -> None:
        assert Inpainter(dataclasses.replace(TINY, plate=False)).plate is None

    def test_exception_needs_the_guided_model(self) -> None:
        with pytest.raises(ConfigError, match="plate needs variant 'combined'"):
            ModelConfig(variant="2dcn", plate=True)
