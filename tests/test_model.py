"""Tests of the network: shapes, composite, input checks, weights files, variants."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from combcn.errors import ConfigError, ModelError
from combcn.model import (
    CombCN,
    Inpainter,
    ModelConfig,
    ThreeDCN,
    build_from_weights,
    default_weights_info,
    load_model,
    read_weights,
    save_weights,
)
from combcn.model import weights as weights_mod

TINY = 0.125  # width multiplier that keeps every test well under a second


def _clip(
    n: int = 1, t: int = 4, h: int = 32, w: int = 40, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(n, 3, t, h, w, generator=g)
    hole = torch.zeros(n, 1, t, h, w)
    hole[..., h // 4 : h // 2, w // 4 : w // 2 + 3] = 1.0
    return frames, hole


class TestThreeDCN:
    def test_cardinality(self) -> None:
        net = ThreeDCN(ModelConfig(width=TINY)).eval()
        out = net(torch.rand(2, 4, 5, 16, 24))
        assert out.shape == (2, 3, 5, 16, 24)  # frame count kept: strides act within frames only

    def test_paper_widths(self) -> None:
        net = ThreeDCN(ModelConfig.paper())
        assert [net.l1.conv.out_channels, net.l4.conv.out_channels, net.l7.conv.out_channels] == [
            16,
            128,
            256,
        ]
        assert net.l5.conv.dilation == (1, 2, 2) and net.l7.conv.dilation == (1, 8, 8)
        assert net.l2.conv.stride == (1, 2, 2) and net.l1.conv.kernel_size == (5, 5, 5)
        assert net.l9.conv.in_channels == 256  # skip 4 -> 8: concat of 128 + 128
        assert net.l12.bn is None and net.l12.act is None  # last layer linear


class TestCombCN:
    def test_cardinality(self) -> None:
        cfg = ModelConfig(width=TINY)
        net = CombCN(cfg).eval()
        out = net(torch.rand(3, 4, 16, 24), torch.rand(3, 3, 8, 12))
        assert out.shape == (3, 3, 16, 24)

    def test_paper_layout(self) -> None:
        net = CombCN(ModelConfig.paper())
        assert net.l10[0].dilation == (16, 16) and net.l10[0].in_channels == 512  # 7 -> 9 skip
        assert net.l16[0].in_channels == 128  # 1 -> 15 skip
        assert net.guide_a[0].out_channels == 128 and net.guide_b[0].out_channels == 128
        assert len(net.l17) == 1  # last layer linear

    def test_exception_needs_guide(self) -> None:
        with pytest.raises(ValueError, match="guide"):
            CombCN(ModelConfig(width=TINY))(torch.rand(1, 4, 16, 16))

    def test_unguided(self) -> None:
        net = CombCN(ModelConfig(width=TINY), guided=False).eval()
        assert net(torch.rand(1, 4, 16, 16)).shape == (1, 3, 16, 16)
        assert not hasattr(net, "guide_a")


class TestInpainter:
    @pytest.mark.parametrize("variant", ["combined", "3dcn", "2dcn"])
    def test_smoke(self, variant: str) -> None:
        model = Inpainter(ModelConfig(width=TINY, variant=variant)).eval()
        frames, hole = _clip()
        with torch.no_grad():
            out = model(frames, hole)
        assert out.shape == frames.shape and out.dtype == torch.float32
        assert model.window == 32 and model.resolution == 128

    def test_composite_exact_outside_hole(self) -> None:
        model = Inpainter(ModelConfig(width=TINY)).eval()
        frames, hole = _clip(t=3)
        hole[..., 0, 0] = 0.25  # a soft matte value: blended, not copied
        with torch.no_grad():
            out = model(frames, hole)
        outside = (hole == 0).expand_as(frames)
        assert torch.equal(out[outside], frames[outside])  # bit-exact copies
        assert not torch.equal(out[~outside], frames[~outside])
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0

    def test_any_t(self) -> None:
        model = Inpainter(ModelConfig(width=TINY)).eval()
        for t in (1, 2, 7):
            frames, hole = _clip(t=t, h=16, w=16)
            with torch.no_grad():
                assert model(frames, hole).shape == (1, 3, t, 16, 16)

    @pytest.mark.parametrize("shape", [(1, 3, 4, 20, 32), (1, 3, 4, 32, 36), (1, 3, 4, 4, 8)])
    def test_exception_hw(self, shape: tuple[int, ...]) -> None:
        model = Inpainter(ModelConfig(width=TINY)).eval()
        frames = torch.rand(*shape)
        hole = torch.zeros(shape[0], 1, *shape[2:])
        with pytest.raises(ValueError, match="multiples of 8"):
            model(frames, hole)

    def test_exception_shapes(self) -> None:
        model = Inpainter(ModelConfig(width=TINY)).eval()
        frames, hole = _clip()
        with pytest.raises(ValueError, match="hole must"):
            model(frames, hole[:, :, :2])
        with pytest.raises(ValueError, match="frames must"):
            model(frames[:, :2], hole)

    @pytest.mark.parametrize("conv", ["plain", "masked"])
    def test_gradcheck_train_step(self, conv: str) -> None:
        torch.manual_seed(0)
        model = Inpainter(ModelConfig(width=TINY, conv=conv)).train()
        frames, hole = _clip(t=3, h=16, w=16)
        pred = model.predict(frames, hole)
        assert pred.low is not None and pred.low.shape == (1, 3, 3, 8, 8)
        (pred.full.mean() + pred.low.mean()).backward()
        first = model.net3d.l1.conv.weight if model.net3d is not None else None
        assert first is not None and first.grad is not None and float(first.grad.abs().sum()) > 0
        assert model.net2d is not None and model.net2d.guide_a[0].weight.grad is not None

    def test_masked_ignores_hole_content(self) -> None:
        # partial convolution + mean pre-fill: what is under the hole must not change the fill
        torch.manual_seed(0)
        model = Inpainter(ModelConfig(width=TINY, conv="masked")).eval()
        frames, hole = _clip(t=2, h=16, w=16)
        other = torch.where(hole > 0, torch.rand_like(frames), frames)
        with torch.no_grad():
            assert torch.allclose(model(frames, hole), model(other, hole), atol=1e-6)

    def test_only_3dcn(self) -> None:
        model = Inpainter(ModelConfig(width=TINY)).eval()
        frames, hole = _clip(t=2, h=16, w=16)
        pred = model.predict(frames, hole, only_3dcn=True)
        assert pred.full.shape == frames.shape

    def test_seen_in_window(self) -> None:
        from combcn.model.inpainter import seen_in_window

        hole = torch.zeros(1, 1, 3, 2, 3)
        hole[..., 0, 0] = 1  # hole in every frame: never seen, the plate there is a guess
        hole[:, :, 1, 1, 1] = 1  # hole in frame 1 only: frames 0 and 2 show it
        seen = seen_in_window(hole)
        expected = torch.zeros_like(hole)
        expected[:, :, 1, 1, 1] = 1
        assert torch.equal(seen, expected)
        assert torch.equal(seen_in_window(torch.zeros(2, 1, 4, 3, 3)), torch.zeros(2, 1, 4, 3, 3))

    @pytest.mark.parametrize("variant", ["combined", "2dcn"])
    def test_seen_channel_reaches_combcn(self, variant: str) -> None:
        torch.manual_seed(0)
        model = Inpainter(ModelConfig(width=TINY, variant=variant, prefill="plate", seen=True)).eval()
        assert model.net2d is not None and model.net2d.l1[0].weight.shape[1] == 5
        frames, hole = _clip(t=3, h=16, w=16)
        moving = hole.clone()
        moving[:, :, 0] = 0  # frame 0 shows the background of frames 1 and 2's hole: seen there
        torch.nn.init.normal_(model.net2d.l17[0].weight)  # a correction that is not zero
        with torch.no_grad():
            base = model(frames, moving)
            model.net2d.l1[0].weight[:, 4] += 1.0  # only the seen channel's weights change
            changed = model(frames, moving)
            static = model(frames, hole)  # nothing seen: the channel is all zero
        assert not torch.allclose(base, changed)
        outside = (moving == 0).expand_as(frames)
        assert torch.equal(changed[outside], frames[outside])
        model.net2d.l1[0].weight.data[:, 4] -= 1.0
        with torch.no_grad():
            assert torch.allclose(model(frames, hole), static, atol=1e-6)

    def test_keep_seen(self) -> None:
        from combcn.model.prefill import cleanplate_fill

        torch.manual_seed(0)
        model = Inpainter(ModelConfig(width=TINY, prefill="plate", seen=True, keep_seen=True)).eval()
        assert model.net2d is not None
        torch.nn.init.normal_(model.net2d.l17[0].weight)  # a correction that is not zero
        frames, hole = _clip(t=3, h=16, w=16)
        hole[:, :, 0] = 0  # frames 1 and 2's hole is shown by frame 0: seen everywhere
        hole[:, :, :, 0, 0] = 1  # ... except one pixel that is hole in every frame
        with torch.no_grad():
            out = model(frames, hole)
        plate = cleanplate_fill(frames, hole)
        seen = (hole > 0) & ~(hole > 0).all(dim=2, keepdim=True)
        seen3 = seen.expand_as(frames)
        assert torch.equal(out[seen3], plate.clamp(0, 1)[seen3])  # seen: the plate, as seen
        never = (hole > 0).all(dim=2, keepdim=True).expand_as(frames)
        assert not torch.allclose(out[never], plate[never])  # never seen: the networks' fill
        outside = (hole == 0).expand_as(frames)
        assert torch.equal(out[outside], frames[outside])


class TestConfig:
    def test_exception(self) -> None:
        with pytest.raises(ConfigError, match="conv"):
            ModelConfig(conv="partial")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="variant"):
            ModelConfig(variant="gan")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="'depth'"):
            ModelConfig.from_dict({"width": 0.5, "depth": 3})
        with pytest.raises(ConfigError, match="seen"):
            ModelConfig(seen="yes")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="keep_seen needs prefill 'plate'"):
            ModelConfig(keep_seen=True, prefill="smooth")

    def test_round_trip(self) -> None:
        cfg = ModelConfig(width=0.5, conv="masked", variant="2dcn", mean_rgb=(0.1, 0.2, 0.3))
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg


class TestWeights:
    def test_round_trip(self, tmp_path: Path) -> None:
        torch.manual_seed(1)
        model = Inpainter(ModelConfig(width=TINY, mean_rgb=(0.3, 0.4, 0.5))).eval()
        for p in model.modules():  # non-trivial BN statistics must survive too
            if isinstance(p, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
                p.running_mean.uniform_(-0.1, 0.1)
        path = save_weights(model, tmp_path / "w.pt", provenance={"iterations": 7})
        payload = torch.load(path, weights_only=True)  # loadable without pickle
        assert payload["provenance"]["iterations"] == 7
        loaded = load_model(path)
        assert loaded.config == model.config and not loaded.training
        frames, hole = _clip(t=2, h=16, w=16)
        with torch.no_grad():
            assert torch.allclose(loaded(frames, hole), model(frames, hole), atol=1e-5)

    def test_half_storage(self, tmp_path: Path) -> None:
        model = Inpainter(ModelConfig(width=TINY)).eval()
        full = save_weights(model, tmp_path / "full.pt")
        half = save_weights(model, tmp_path / "half.pt", half=True)
        assert half.stat().st_size < 0.6 * full.stat().st_size
        loaded = load_model(half)
        assert all(p.dtype == torch.float32 for p in loaded.parameters())

    def test_exception_bad_files(self, tmp_path: Path) -> None:
        with pytest.raises(ModelError, match="not found"):
            load_model(tmp_path / "missing.pt")
        junk = tmp_path / "junk.pt"
        junk.write_bytes(b"this is not a weights file")
        with pytest.raises(ModelError, match="junk.pt"):
            load_model(junk)
        foreign = tmp_path / "foreign.pt"
        torch.save({"weight": torch.zeros(2)}, foreign)
        with pytest.raises(ModelError, match="not a combcn weights file"):
            load_model(foreign)

    def test_exception_mismatch(self, tmp_path: Path) -> None:
        model = Inpainter(ModelConfig(width=TINY))
        path = save_weights(model, tmp_path / "w.pt")
        payload = read_weights(path)
        payload["config"]["width"] = 0.25  # claims another width than its tensors have
        with pytest.raises(ModelError, match="do not match"):
            build_from_weights(payload, path=path)
        payload["config"]["conv"] = "wavelet"
        with pytest.raises(ModelError, match="config is invalid"):
            build_from_weights(payload, path=path)

    def test_default_weights(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setattr(weights_mod, "DEFAULT_WEIGHTS", tmp_path / "combcn_default.pt")
        monkeypatch.setattr(weights_mod, "DEFAULT_PROVENANCE", tmp_path / "PROVENANCE.json")
        assert default_weights_info() is None
        with caplog.at_level(logging.WARNING, logger="combcn.model"):
            model = load_model(None)
        assert "RANDOMLY INITIALISED" in caplog.text and isinstance(model, Inpainter)
        save_weights(Inpainter(ModelConfig(width=TINY)), tmp_path / "combcn_default.pt")
        (tmp_path / "PROVENANCE.json").write_text('{"iterations": 12, "trained_on": ["a"]}')
        info = default_weights_info()
        assert info is not None and info["iterations"] == 12 and info["path"].endswith("combcn_default.pt")
        assert "all_stages" not in info  # one run: no chain to sum
        chain = {"iterations": 5, "wall_time_h": 0.5, "init": {"iterations": 7, "wall_time_h": 0.25}}
        (tmp_path / "PROVENANCE.json").write_text(json.dumps(chain))
        info = default_weights_info()
        assert info is not None and info["all_stages"] == {"stages": 2, "iterations": 12, "wall_time_h": 0.75}
        assert load_model(None).config.width == TINY


def test_shipped_weights_load() -> None:
    """The weights in combcn/weights (if shipped) load and carry provenance for ``combcn info``."""
    info = default_weights_info()
    if not weights_mod.DEFAULT_WEIGHTS.is_file():
        assert info is None
        return
    assert info is not None
    for key in ("trained_on", "config", "iterations", "wall_time_h", "validation", "code_version"):
        assert key in info, key
    assert weights_mod.DEFAULT_WEIGHTS.stat().st_size <= 40 * 1024 * 1024
    model = load_model(None)
    frames, hole = _clip(t=2, h=16, w=16)
    with torch.no_grad():
        out = model(frames, hole)
    assert torch.isfinite(out).all()


def test_norm_stats_window_vs_running() -> None:
    """``norm_stats: window`` normalises with the window's statistics in eval mode, leaving buffers alone."""
    torch.manual_seed(0)
    frames, hole = _clip(t=3, h=16, w=16)
    window = Inpainter(ModelConfig(width=TINY)).eval()
    running = Inpainter(ModelConfig(width=TINY, norm_stats="running")).eval()
    running.load_state_dict(window.state_dict())
    before = {k: v.clone() for k, v in window.state_dict().items()}
    with torch.no_grad():
        a = window.predict(frames, hole).full
        window.train()
        b = window.predict(frames, hole).full  # train mode: batch statistics (and buffer updates)
        window.eval()
        c = running.predict(frames, hole).full
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in running.state_dict().items())
