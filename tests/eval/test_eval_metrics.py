"""combcn.eval.metrics on hand-computable cases, and SSIM against a direct numpy oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from combcn.eval import metrics


def _clip(t: int = 4, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, t, h, w, generator=g)


def _box_hole(t: int = 4, h: int = 16, w: int = 16) -> torch.Tensor:
    hole = torch.zeros(1, 1, t, h, w)
    hole[..., 4:10, 3:11] = 1.0
    return hole


class TestHoleMAE:
    def test_smoke(self) -> None:
        truth, hole = _clip(), _box_hole()
        assert metrics.hole_mae(truth, truth, hole).tolist() == [0.0]

    def test_one_channel_off_by_ten_levels(self) -> None:
        # +10/255 on the red channel only: per-pixel error averaged over RGB is 10/3.
        truth, hole = _clip() * 0.5, _box_hole()
        out = truth.clone()
        out[:, 0] += hole[:, 0] * 10 / 255
        assert metrics.hole_mae(out, truth, hole).item() == pytest.approx(10 / 3, abs=1e-4)

    def test_known_pixels_do_not_count(self) -> None:
        truth, hole = _clip(), _box_hole()
        out = truth + (1 - hole) * 0.7  # wrong everywhere outside the hole
        assert metrics.hole_mae(out, truth, hole).item() == pytest.approx(0.0, abs=1e-12)

    def test_cardinality_4d_and_batch(self) -> None:
        truth, hole = _clip(), _box_hole()
        out = truth.clamp(0, 0.5)
        one = metrics.hole_mae(out[0], truth[0], hole[0])
        two = metrics.hole_mae(torch.cat([out, truth]), torch.cat([truth, truth]), torch.cat([hole, hole]))
        assert one.shape == (1,) and two.shape == (2,)
        assert two[0].item() == pytest.approx(one.item()) and two[1].item() == 0.0

    def test_exception(self) -> None:
        with pytest.raises(ValueError, match="hole must be"):
            metrics.hole_mae(_clip(), _clip(), torch.zeros(1, 3, 4, 16, 16))
        with pytest.raises(ValueError, match="same shape"):
            metrics.hole_mae(_clip(), _clip(h=8), _box_hole())

    def test_no_hole_is_nan(self) -> None:
        assert math.isnan(metrics.hole_mae(_clip(), _clip(seed=1), torch.zeros(1, 1, 4, 16, 16)).item())


class TestPSNR:
    def test_constant_error(self) -> None:
        truth = _clip() * 0.5
        assert metrics.psnr(truth + 0.1, truth).item() == pytest.approx(20.0, abs=1e-4)

    def test_hole_only(self) -> None:
        truth, hole = _clip() * 0.5, _box_hole()
        out = truth + 0.01 * hole
        assert metrics.psnr_hole(out, truth, hole).item() == pytest.approx(40.0, abs=1e-4)
        fraction = hole.mean().item()  # whole-frame MSE is diluted by the known pixels
        assert metrics.psnr(out, truth).item() == pytest.approx(-10 * math.log10(1e-4 * fraction), abs=1e-4)

    def test_exact_is_inf(self) -> None:
        truth, hole = _clip(), _box_hole()
        assert math.isinf(metrics.psnr(truth, truth).item())
        assert math.isinf(metrics.psnr_hole(truth, truth, hole).item())


def _ssim_oracle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Direct SSIM of every 11x11 'valid' window of two [H, W] images, float64, no convolution."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    out = np.empty((a.shape[0] - 10, a.shape[1] - 10))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            out[i, j] = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return out


class TestSSIM:
    def test_identical_is_one(self) -> None:
        truth = _clip()
        assert metrics.ssim(truth, truth).item() == pytest.approx(1.0, abs=1e-6)

    def test_constant_images(self) -> None:
        # Flat images: variances and covariance are 0, SSIM is the luminance term alone.
        a = torch.full((1, 3, 2, 16, 16), 0.2)
        b = torch.full((1, 3, 2, 16, 16), 0.6)
        c1 = 0.01**2
        expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
        assert metrics.ssim(a, b).item() == pytest.approx(expected, abs=1e-7)

    def test_matches_direct_oracle(self) -> None:
        rng = np.random.default_rng(3)
        a = rng.random((18, 20))
        b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
        got = metrics.ssim_map(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0].numpy()
        np.testing.assert_allclose(got, _ssim_oracle(a, b), atol=1e-5)

    def test_hole_ssim_averages_windows_centred_in_the_hole(self) -> None:
        truth, hole = _clip(), _box_hole()
        out = truth.clone()
        out[..., :, 10:] = 0.0  # damage only the right-hand side, partly overlapping the hole
        smap = metrics.ssim_map(out.reshape(-1, 16, 16), truth.reshape(-1, 16, 16)).view(1, 3, 4, 6, 6)
        centre = hole[..., 5:11, 5:11]
        expected = (smap * centre).sum() / (centre.sum() * 3)
        assert metrics.ssim(out, truth, hole).item() == pytest.approx(expected.item(), abs=1e-12)
        assert metrics.ssim(out, truth, hole).item() < 1.0

    def test_exception(self) -> None:
        with pytest.raises(ValueError, match="at least 11x11"):
            metrics.ssim(_clip(h=8, w=8), _clip(h=8, w=8))


class TestTemporalError:
    def test_identical_motion_is_zero(self) -> None:
        # A fill off by a constant in every frame changes exactly as the truth does.
        truth, hole = _clip(t=6) * 0.8, _box_hole(t=6)
        out = truth + 0.1 * hole
        assert metrics.temporal_error(out, truth, hole).item() == pytest.approx(0.0, abs=1e-4)
        assert metrics.hole_mae(out, truth, hole).item() > 20.0

    def test_flicker(self) -> None:
        # Alternating +c / -c offsets: every frame pair differs by 2c from the truth's change.
        truth, hole = _clip(t=5) * 0.5 + 0.25, _box_hole(t=5)
        c = 0.05
        sign = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]).view(1, 1, 5, 1, 1)
        out = truth + c * sign * hole
        assert metrics.temporal_error(out, truth, hole).item() == pytest.approx(2 * c * 255, abs=1e-4)

    def test_static_fill_of_moving_truth(self) -> None:
        # A frozen fill over a truth that brightens by d per frame errs by d * 255 per pair.
        t, d = 4, 0.02
        truth = torch.zeros(1, 3, t, 16, 16) + d * torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1)
        hole = _box_hole(t=t)
        out = torch.where(hole > 0, torch.full_like(truth, 0.5), truth)
        assert metrics.temporal_error(out, truth, hole).item() == pytest.approx(d * 255, abs=1e-6)

    def test_single_frame_or_no_hole_is_nan(self) -> None:
        assert math.isnan(metrics.temporal_error(_clip(t=1), _clip(t=1), _box_hole(t=1)).item())
        no_hole = torch.zeros(1, 1, 4, 16, 16)
        assert math.isnan(metrics.temporal_error(_clip(), _clip(seed=2), no_hole).item())


def test_paired_gaps_known_answer() -> None:
    # Row "b" is 1.0 worse than "a" on every window: gap 1, and an interval of width 0. Row "c" is
    # better on average, by a gap that varies: the interval holds the mean, within the per-window range.
    from combcn.eval.evaluate import EvalResult, gaps_table, paired_gaps

    rng = np.random.default_rng(1)
    result = EvalResult(rows=["a", "3dcn@16", "b", "c"])
    noise = rng.normal(-2.0, 1.5, 40)
    for i in range(40):
        base = 20.0 + i % 7
        result.windows.append(
            {
                "clip": "x",
                "start": i,
                "scores": {
                    "a": {"hole_mae": base},
                    "3dcn@16": {"hole_mae": base / 2},
                    "b": {"hole_mae": base + 1.0},
                    "c": {"hole_mae": base + noise[i] if i != 3 else float("nan")},
                },
            }
        )
    gaps = paired_gaps(result, "a", "hole_mae", resamples=2000)
    assert set(gaps) == {"b", "c"}
    assert gaps["b"] == pytest.approx({"gap": 1.0, "low": 1.0, "high": 1.0, "windows": 40.0})
    kept = np.delete(noise, 3)
    assert gaps["c"]["windows"] == 39 and gaps["c"]["gap"] == pytest.approx(kept.mean())
    assert kept.min() < gaps["c"]["low"] < gaps["c"]["gap"] < gaps["c"]["high"] < 0 < kept.max()
    # reproducible for a seed
    assert paired_gaps(result, "a", "hole_mae", resamples=2000) == gaps
    table = gaps_table(gaps, "a")
    assert "| b | +1.00 | +1.00 to +1.00 |" in table


def _textured(t: int = 4, h: int = 48, w: int = 48, seed: int = 0) -> torch.Tensor:
    """Grey-ish RGB clip with fine detail (noise on a ramp), in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.8, w).view(1, 1, 1, 1, w)
    return (ramp + 0.1 * torch.rand(1, 3, t, h, w, generator=g)).clamp(0.1, 0.9)


def _blur(clip: torch.Tensor, passes: int = 3) -> torch.Tensor:
    """A 3x3 box blur of each frame, ``passes`` times (replicated borders)."""
    n, c, t, h, w = clip.shape
    x = clip.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
    for _ in range(passes):
        x = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return x.reshape(n, t, c, h, w).permute(0, 2, 1, 3, 4)


class TestDetailRatio:
    def test_truth_is_exactly_one(self) -> None:
        truth, hole = _textured(), _box_hole(h=48, w=48)
        assert metrics.detail_ratio(truth, truth, hole).item() == 1.0

    def test_blurred_fill_is_well_below_one(self) -> None:
        truth, hole = _textured(), _box_hole(h=48, w=48)
        out = torch.where(hole > 0, _blur(truth), truth)
        assert metrics.detail_ratio(out, truth, hole).item() < 0.5

    def test_flat_fill_is_zero_and_its_seam_does_not_count(self) -> None:
        truth, hole = _textured(), _box_hole(h=48, w=48)
        out = torch.where(hole > 0, torch.full_like(truth, 0.5), truth)  # a hard seam at the hole's edge
        assert metrics.detail_ratio(out, truth, hole).item() == 0.0

    def test_added_noise_is_above_one(self) -> None:
        truth, hole = _textured(), _box_hole(h=48, w=48)
        g = torch.Generator().manual_seed(5)
        out = torch.where(hole > 0, truth + 0.1 * torch.randn(truth.shape, generator=g), truth)
        assert metrics.detail_ratio(out, truth, hole).item() > 1.2

    def test_known_pixels_do_not_count(self) -> None:
        truth, hole = _textured(), _box_hole(h=48, w=48)
        out = torch.where(hole > 0, truth, _blur(truth))  # blurred outside the hole only
        assert metrics.detail_ratio(out, truth, hole).item() == 1.0

    def test_cardinality_and_nan(self) -> None:
        truth, hole = _textured(), _box_hole(h=48, w=48)
        both = metrics.detail_ratio(
            torch.cat([truth, _blur(truth)]), torch.cat([truth, truth]), hole.repeat(2, 1, 1, 1, 1)
        )
        assert both.shape == (2,) and both[0].item() == 1.0 and both[1].item() < 0.5
        flat = torch.full_like(truth, 0.3)
        assert math.isnan(metrics.detail_ratio(flat, flat, hole).item())  # nothing to be sharp about
        assert math.isnan(metrics.detail_ratio(truth, truth, torch.zeros_like(hole)).item())
        with pytest.raises(ValueError, match="RGB"):
            metrics.detail_ratio(truth[:, :1], truth[:, :1], hole)


def test_score_on_the_hole_box_equals_the_whole_frame() -> None:
    # score() works on the hole's bounding box when the fill is composited; the numbers must be the
    # whole-frame ones (SSIM and PSNR diluted to the frame), and a fill that touches known pixels
    # falls back to the whole frame
    from combcn.eval.evaluate import score

    truth = _textured(t=5, h=64, w=96, seed=3)
    hole = torch.zeros(1, 1, 5, 64, 96)
    for f in range(5):
        hole[..., 20 + f : 34 + f, 30 + 3 * f : 50 + 3 * f] = 1.0
    hole[..., 2, 0:6, 88:96] = 1.0  # a corner piece, at the frame's border, in one frame
    hole[..., 4, 40:42, 2:4] = 1.0  # a speck too small for an SSIM window of its own
    fill = torch.where(hole > 0, _blur(truth), truth)
    got = score(fill, truth, hole)
    o, t_, h = fill.double(), truth.double(), hole.double()
    whole, in_hole = metrics.ssim_whole_and_hole(o, t_, h)
    expected = {
        "hole_mae": metrics.hole_mae(o, t_, h),
        "temporal_error": metrics.temporal_error(o, t_, h),
        "psnr": metrics.psnr(o, t_),
        "psnr_hole": metrics.psnr_hole(o, t_, h),
        "ssim": whole,
        "ssim_hole": in_hole,
        "detail": metrics.detail_ratio(o, t_, h),
    }
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value[0]), rel=1e-6, abs=1e-6), key
    touched = fill.clone()
    touched[..., 0, 0] += 0.5  # a known pixel changed: no shortcut
    worse = score(touched, truth, hole)
    assert worse["psnr"] < got["psnr"] and worse["hole_mae"] == pytest.approx(got["hole_mae"])
