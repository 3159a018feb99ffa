"""combcn.eval.baselines: every baseline fills the hole and leaves known pixels bit-exact."""

from __future__ import annotations

import pytest
import torch

from combcn.eval import baselines, metrics


def _scene(t: int = 5, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth horizontal ramp that brightens over time, with a box hole (zeroed) in every frame."""
    x = torch.linspace(0.1, 0.9, size).view(1, 1, 1, 1, size)
    truth = (x + 0.01 * torch.arange(t).view(1, 1, t, 1, 1)).expand(1, 3, t, size, size).clone()
    truth[:, 1] *= 0.5
    hole = torch.zeros(1, 1, t, size, size)
    hole[..., 8:16, 6:14] = 1.0
    return truth, hole


@pytest.mark.parametrize("name", list(baselines.BASELINES))
class TestBaselines:
    def test_known_pixels_are_bit_exact(self, name: str) -> None:
        truth, hole = _scene()
        g = torch.Generator().manual_seed(0)
        frames = torch.rand(truth.shape, generator=g) * (1 - hole)  # arbitrary known values
        out = baselines.BASELINES[name][0](frames, hole)
        known = (hole == 0).expand_as(frames)
        assert out.dtype == frames.dtype and out.shape == frames.shape
        assert torch.equal(out[known], frames[known])

    def test_fills_the_hole(self, name: str) -> None:
        truth, hole = _scene()
        frames = truth * (1 - hole)
        out = baselines.BASELINES[name][0](frames, hole)
        inside = (hole > 0).expand_as(frames)
        assert out[inside].min() > 0.05  # the zeros are gone
        # A smooth ramp is easy: every baseline gets within a few 8-bit levels of it.
        assert metrics.hole_mae(out, truth, hole).item() < 8.0

    def test_exception(self, name: str) -> None:
        truth, hole = _scene()
        with pytest.raises(ValueError, match="Tensor\\[N, 1, T, H, W\\]"):
            baselines.BASELINES[name][0](truth, hole[:, :, :2])


def test_temporal_median_takes_the_median_of_known_frames() -> None:
    # One pixel is a hole in frames 1 and 3 only; it is known as 0.1, 0.5, 0.9 elsewhere.
    t, size = 5, 16
    frames = torch.full((1, 3, t, size, size), 0.3)
    frames[..., 0, 4, 4], frames[..., 2, 4, 4], frames[..., 4, 4, 4] = 0.1, 0.9, 0.5
    hole = torch.zeros(1, 1, t, size, size)
    hole[:, :, 1, 4, 4] = hole[:, :, 3, 4, 4] = 1.0
    out = baselines.temporal_median(frames * (1 - hole), hole)
    assert out[0, :, 1, 4, 4].tolist() == pytest.approx([0.5] * 3)
    assert out[0, :, 3, 4, 4].tolist() == pytest.approx([0.5] * 3)


def test_temporal_median_is_static_where_never_known() -> None:
    truth, hole = _scene()
    out = baselines.temporal_median(truth * (1 - hole), hole)
    inside = out[0, :, :, 8:16, 6:14]
    assert torch.equal(inside, inside[:, :1].expand_as(inside))  # same fill in every frame
    assert metrics.hole_mae(out, truth, hole).item() < 8.0


def test_per_frame_baselines_leave_frames_without_hole_untouched() -> None:
    truth, hole = _scene()
    hole[:, :, 2] = 0.0
    out = baselines.telea(truth * (1 - hole), hole)
    assert torch.equal(out[:, :, 2], truth[:, :, 2])
