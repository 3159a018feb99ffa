"""Tests of the smooth pre-fill (push-pull) and of the residual model built on it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from combcn.errors import ConfigError
from combcn.model import Inpainter, ModelConfig, load_model, read_weights, save_weights
from combcn.model.prefill import cleanplate_fill, pushpull_fill

TINY = 0.125


def _box(t: int = 4, h: int = 24, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(0))
    hole = torch.zeros(1, 1, t, h, w)
    hole[..., 6:18, 8:20] = 1.0
    return frames, hole


@pytest.mark.parametrize("fill", [pushpull_fill, cleanplate_fill])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_known_pixels_bit_exact(
    fill: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dtype: torch.dtype
) -> None:
    frames, hole = _box()
    frames = frames.to(dtype)
    out = fill(frames, hole)
    assert out.dtype == dtype and out.shape == frames.shape
    known = (hole == 0).expand_as(frames)
    assert torch.equal(out[known], frames[known])
    assert not torch.equal(out[~known], frames[~known])


class TestPushPull:
    def test_constant_surroundings_give_that_constant(self) -> None:
        frames = torch.full((1, 3, 5, 16, 24), 0.3)
        hole = torch.zeros(1, 1, 5, 16, 24)
        hole[..., 2:14, 3:20] = 1.0
        frames[(hole > 0).expand_as(frames)] = 0.9  # what is under the hole must not matter
        out = pushpull_fill(frames, hole)
        assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-6)

    def test_nearer_side_weighs_more(self) -> None:
        # left of the hole 0, right of it 1: the fill rises from left to right
        frames = torch.zeros(1, 1, 1, 16, 32)
        frames[..., 16:] = 1.0
        hole = torch.zeros(1, 1, 1, 16, 32)
        hole[..., 8:24] = 1.0
        row = pushpull_fill(frames, hole, time=False)[0, 0, 0, 8, 8:24]
        assert float(row[0]) < 0.5 < float(row[-1])
        assert float(row[-1] - row[0]) > 0.3

    def test_time_brings_other_frames_in(self) -> None:
        # frame 0 entirely hole, frame 1 a known constant: space-time fills frame 0 with that constant
        frames = torch.zeros(1, 3, 2, 8, 8)
        frames[:, :, 1] = 0.7
        hole = torch.zeros(1, 1, 2, 8, 8)
        hole[:, :, 0] = 1.0
        assert torch.allclose(pushpull_fill(frames, hole, time=True)[:, :, 0], torch.tensor(0.7), atol=1e-6)
        # each frame on its own: nothing known in frame 0, the documented 0.5
        assert torch.allclose(pushpull_fill(frames, hole, time=False)[:, :, 0], torch.tensor(0.5))

    def test_nothing_known(self) -> None:
        frames = torch.rand(1, 3, 3, 8, 8)
        out = pushpull_fill(frames, torch.ones(1, 1, 3, 8, 8))
        assert torch.equal(out, torch.full_like(out, 0.5))

    @settings(max_examples=40, deadline=None)
    @given(
        t=st.integers(1, 5),
        h=st.integers(1, 23),
        w=st.integers(1, 23),
        time=st.booleans(),
        seed=st.integers(0, 2**16),
    )
    def test_fill_stays_within_known_range(self, t: int, h: int, w: int, time: bool, seed: int) -> None:
        # every fill value is a weighted average of known values: never outside their range
        g = torch.Generator().manual_seed(seed)
        frames = torch.rand(1, 2, t, h, w, generator=g)
        hole = (torch.rand(1, 1, t, h, w, generator=g) < 0.6).float()
        hole.view(-1)[0] = 0.0  # at least one known pixel
        out = pushpull_fill(frames, hole, time=time)
        known = (hole == 0).expand_as(frames)
        lo = frames[known].min()
        hi = frames[known].max()
        assert torch.equal(out[known], frames[known])
        if not time:  # frames with nothing known fall back to 0.5 when filled one by one
            return
        assert float(out.min()) >= float(lo) - 1e-6 and float(out.max()) <= float(hi) + 1e-6

    def test_exception(self) -> None:
        frames, hole = _box()
        with pytest.raises(ValueError, match="Tensor"):
            pushpull_fill(frames, hole[:, :, :2])
        with pytest.raises(ValueError, match="Tensor"):
            pushpull_fill(frames[0], hole[0])


class TestCleanPlate:
    def test_moving_object_reveals_the_background(self) -> None:
        # a locked-off plate with an object sliding across it: every hole pixel is seen in most frames
        t, h, w = 9, 16, 40
        background = torch.rand(1, 3, 1, h, w, generator=torch.Generator().manual_seed(3)).expand(
            1, 3, t, h, w
        )
        frames = background.clone()
        hole = torch.zeros(1, 1, t, h, w)
        for i in range(t):
            hole[..., i, 4:12, 4 * i : 4 * i + 6] = 1.0
            frames[:, :, i, 4:12, 4 * i : 4 * i + 6] = 0.0  # the object
        out = cleanplate_fill(frames, hole)
        assert torch.equal(out, background)

    def test_static_hole_is_steady_and_smooth(self) -> None:
        # never-known pixels: one spatial fill of the median frame, the same in every frame
        frames = torch.zeros(1, 3, 5, 24, 24)
        frames[..., :, 12:] = 1.0  # left half 0, right half 1
        frames += 0.01 * torch.rand(1, 3, 5, 24, 24, generator=torch.Generator().manual_seed(1))
        hole = torch.zeros(1, 1, 5, 24, 24)
        hole[..., 6:18, 6:18] = 1.0
        out = cleanplate_fill(frames, hole)
        fill = out[..., 6:18, 6:18]
        assert torch.equal(fill, fill[:, :, :1].expand_as(fill))
        assert float(fill[0, 0, 0, 6, 0]) < 0.5 < float(fill[0, 0, 0, 6, -1])
        assert float(fill.min()) >= -0.01 and float(fill.max()) <= 1.02

    def test_nothing_known(self) -> None:
        out = cleanplate_fill(torch.rand(2, 3, 3, 8, 8), torch.ones(2, 1, 3, 8, 8))
        assert torch.equal(out, torch.full_like(out, 0.5))

    def test_exception(self) -> None:
        frames, hole = _box()
        with pytest.raises(ValueError, match="Tensor"):
            cleanplate_fill(frames, hole[:, :, :2])


class TestResidualModel:
    @pytest.mark.parametrize("prefill", ["smooth", "plate"])
    @pytest.mark.parametrize("variant", ["combined", "3dcn", "2dcn"])
    def test_untrained_model_returns_its_prefill(self, variant: str, prefill: str) -> None:
        # the residual networks' last layers start at zero: the first output is the pre-fill itself
        model = Inpainter(ModelConfig(width=TINY, prefill=prefill, variant=variant)).eval()  # type: ignore[arg-type]
        frames, hole = _box()
        with torch.no_grad():
            out = model(frames, hole)
        if variant == "3dcn":  # 3DCN alone: its low-res pre-fill, upsampled
            known = (hole == 0).expand_as(frames)
            assert torch.equal(out[known], frames[known])
            return
        fill = cleanplate_fill if prefill == "plate" else pushpull_fill
        assert torch.allclose(out, fill(frames, hole).clamp(0, 1), atol=1e-6)

    @pytest.mark.parametrize(
        ("conv", "prefill"), [("plain", "smooth"), ("masked", "smooth"), ("masked", "plate")]
    )
    def test_train_step_moves_off_the_prefill(self, conv: str, prefill: str) -> None:
        torch.manual_seed(0)
        model = Inpainter(ModelConfig(width=TINY, prefill=prefill, conv=conv)).train()  # type: ignore[arg-type]
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        frames, hole = _box(t=3, h=16, w=16)
        hole = torch.zeros_like(hole)
        hole[..., 4:12, 4:12] = 1.0
        for _ in range(3):
            pred = model.predict(frames, hole)
            assert pred.low is not None
            loss = ((pred.full - frames).abs() * hole).mean() + (pred.low - pred.low_input).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(frames, hole)
        fill = cleanplate_fill if prefill == "plate" else pushpull_fill
        assert not torch.allclose(out, fill(frames, hole).clamp(0, 1), atol=1e-4)
        known = (hole == 0).expand_as(frames)
        assert torch.equal(out[known], frames[known])

    def test_weights_round_trip_keep_prefill(self, tmp_path: object) -> None:
        from pathlib import Path

        path = Path(str(tmp_path)) / "w.pt"
        save_weights(Inpainter(ModelConfig(width=TINY, prefill="plate")), path)
        assert load_model(path).config.prefill == "plate"
        payload = read_weights(path)
        assert payload["config"]["prefill"] == "plate"

    def test_files_without_prefill_key_are_the_paper_model(self, tmp_path: object) -> None:
        # weights written before the option existed load as the paper's mean pre-fill
        from pathlib import Path

        path = Path(str(tmp_path)) / "old.pt"
        save_weights(Inpainter(ModelConfig(width=TINY)), path)
        payload = torch.load(path, weights_only=True)
        del payload["config"]["prefill"]
        torch.save(payload, path)
        assert load_model(path).config.prefill == "mean"

    def test_exception(self) -> None:
        with pytest.raises(ConfigError, match="prefill"):
            ModelConfig(prefill="median")  # type: ignore[arg-type]
