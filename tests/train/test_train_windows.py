"""Training windows as the engine feeds the network: ``data.encoding`` / ``data.exposure`` (a window
encoded like a float plate) and ``holes.propagate`` (the engine's propagation first, the network's hole
only what no frame shows). Synthetic clips only, made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_png

from combcn.engine.shaper import get_shaper
from combcn.errors import ConfigError
from combcn.train import trainer as trainer_mod
from combcn.train.config import load_config, parse_config
from combcn.train.data import Clip
from combcn.train.windows import (
    MIN_UNRESOLVED,
    HoleMix,
    WindowSampler,
    from_plate,
    propagate_window,
    to_plate,
)

REPO = Path(__file__).resolve().parents[2]


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random texture, float32 [h, w, 3] in [0.1, 0.9]: structure optical flow can follow."""
    import cv2

    noise = rng.random((h // 4, w // 4, 3)).astype(np.float32)
    big = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    big = cv2.GaussianBlur(big, (0, 0), 1.5)
    big = (big - big.min()) / max(float(big.max() - big.min()), 1e-6)
    return (0.1 + 0.8 * big).astype(np.float32)


def panned_clip(name: str = "pan", frames: int = 10, size: int = 64, step: int = 3, seed: int = 0) -> Clip:
    """A camera panning ``step`` pixels a frame to the right over a textured scene: uint8 [T, S, S, 3]."""
    scene = _texture(np.random.default_rng(seed), size, size + step * frames)
    out = np.stack([scene[:, step * f : step * f + size] for f in range(frames)])
    return Clip(name, (out * 255 + 0.5).astype(np.uint8))


def still_clip(name: str = "still", frames: int = 10, size: int = 64, seed: int = 1) -> Clip:
    """A locked-off shot of a still textured scene: every frame the same."""
    scene = _texture(np.random.default_rng(seed), size, size)
    return Clip(name, np.repeat((scene * 255 + 0.5).astype(np.uint8)[None], frames, axis=0))


def _sampler(clips: list[Clip], **kw: object) -> WindowSampler:
    opts: dict = {"window": 8, "resolution": 64, "seed": 3, "augment": False, **kw}
    return WindowSampler(clips, **opts)


class TestEncoding:
    def test_srgb_default_is_the_stored_values(self) -> None:
        clip = panned_clip()
        w = _sampler([clip]).draw(0)
        assert w.encoding == "srgb" and torch.equal(w.frames, w.inputs) and torch.equal(w.hole, w.drawn)
        start_ok = [
            np.allclose(w.frames.permute(1, 2, 3, 0).numpy(), clip.frames[s : s + 8] / 255.0, atol=1e-6)
            for s in range(3)
        ]
        assert any(start_ok)

    def test_acescct_is_the_same_window_encoded(self) -> None:
        """The encoding draws from its own random stream: the same window and hole, only encoded."""
        clip = panned_clip()
        plain = _sampler([clip]).draw(4)
        cct = _sampler([clip], encoding={"acescct": 1.0}).draw(4)
        assert cct.encoding == "acescct" and torch.equal(plain.drawn, cct.drawn)
        srgb = plain.frames.numpy()
        expected = get_shaper("acescct").encode(get_shaper("srgb").decode(srgb))
        np.testing.assert_allclose(cct.frames.numpy(), expected, atol=1e-6)
        # round trip: ACEScct -> linear -> sRGB gives the stored values back
        back = get_shaper("srgb").encode(get_shaper("acescct").decode(cct.frames.numpy()))
        np.testing.assert_allclose(back, srgb, atol=1e-4)
        # JPG values (linear <= 1) sit in ACEScct's lower half: nothing is clipped
        assert float(cct.frames.max()) <= get_shaper("acescct").encode(np.float32([1.0]))[0] + 1e-6

    def test_exposure_shifts_by_stops(self) -> None:
        clip = panned_clip()
        base = _sampler([clip], encoding={"acescct": 1.0}).draw(2).frames.numpy()
        stops = []
        for i in range(2, 8):  # same window (one clip, no augmentation, fixed start per index) ...
            shifted = _sampler([clip], encoding={"acescct": 1.0}, exposure=2.0).draw(i)
            ref = _sampler([clip], encoding={"acescct": 1.0}).draw(i).frames.numpy()
            # above ACEScct's toe a stop is a constant step of 1 / 17.52
            diff = (shifted.frames.numpy() - ref) * 17.52
            above = (ref > 0.2) & (shifted.frames.numpy() > 0.2)
            assert above.any()
            assert float(diff[above].std()) < 1e-3
            stops.append(float(diff[above].mean()))
        assert all(-2.0 - 1e-3 <= s <= 2.0 + 1e-3 for s in stops) and np.ptp(stops) > 0.1
        assert base.shape == (3, 8, 64, 64)

    def test_mix_draws_both(self) -> None:
        sampler = _sampler([panned_clip()], encoding={"srgb": 1.0, "acescct": 1.0})
        drawn = {sampler.draw(i).encoding for i in range(24)}
        assert drawn == {"srgb", "acescct"}

    def test_encoding_clips(self) -> None:
        """What the network is fed: plate units back to working values, clipped to [0, 1]."""
        frames = np.float32([[0.0, 0.5, 1.0]])
        np.testing.assert_array_equal(from_plate(to_plate(frames, "srgb"), "srgb"), frames)
        bright = from_plate(to_plate(frames, "acescct", stops=8.0), "acescct")
        assert float(bright.max()) <= 1.0 and float(bright.min()) >= 0.0

    def test_exception(self) -> None:
        clip = panned_clip()
        with pytest.raises(ConfigError, match="unknown encoding"):
            _sampler([clip], encoding={"rec709": 1.0})
        with pytest.raises(ConfigError, match="not all 0"):
            _sampler([clip], encoding={"srgb": 0.0})
        with pytest.raises(ConfigError, match="exposure"):
            _sampler([clip], exposure=-1.0)


class TestPropagate:
    def test_pan_leaves_a_smaller_network_hole(self) -> None:
        """A static box on a panning shot: other frames show most of what it hides."""
        clip = panned_clip()
        sampler = _sampler([clip], holes=HoleMix(box=1, strokes=0, objects=0, propagate=1.0))
        for i in range(3):
            w = sampler.draw(i)
            drawn, net = w.drawn.numpy(), w.hole.numpy()
            assert float(net.sum()) < 0.6 * float(drawn.sum())
            assert ((net > 0) <= (drawn > 0)).all()  # the network's hole lies inside the drawn one
            outside = torch.from_numpy(drawn[0] == 0)
            assert torch.equal(w.inputs[:, outside], w.frames[:, outside])
            recovered = (drawn > 0) & (net == 0)
            err = (w.inputs - w.frames).abs().numpy()[:, recovered[0]]
            assert float(err.mean()) < 0.03  # real pixels, carried along the pan
            # the network's input never holds the truth of its own hole
            assert not torch.equal(w.inputs, w.frames)

    def test_locked_off_static_hole_keeps_the_whole_hole(self) -> None:
        """Nothing moves, so no frame shows what the box hides: the network gets the drawn hole."""
        sampler = _sampler([still_clip()], holes=HoleMix(box=1, strokes=0, objects=0, propagate=1.0))
        w = sampler.draw(0)
        assert torch.equal(w.hole, w.drawn) and torch.equal(w.inputs, w.frames)

    def test_moving_hole_on_a_still_shot_falls_back_to_the_whole_hole(self) -> None:
        """A moving stroke over a still scene is fully recovered: nothing would be left for the loss, so
        the window is trained on its drawn hole."""
        clip = still_clip(frames=12)
        found = 0
        sampler = _sampler([clip], holes=HoleMix(box=0, strokes=1, objects=0, propagate=1.0))
        for i in range(6):
            w = sampler.draw(i)
            assert float(w.hole.sum()) >= MIN_UNRESOLVED
            found += int(torch.equal(w.hole, w.drawn))
        assert found >= 1

    def test_propagate_window_direct(self) -> None:
        clip = panned_clip()
        plate = clip.frames[:8].astype(np.float32) / 255.0
        hole = np.zeros((8, 64, 64), np.float32)
        hole[:, 20:44, 20:44] = 1.0
        inputs, unresolved = propagate_window(plate, hole)
        assert inputs.shape == plate.shape and unresolved.shape == hole.shape
        assert unresolved.sum() < hole.sum()
        np.testing.assert_array_equal(inputs[hole == 0], plate[hole == 0])

    def test_off_changes_nothing(self) -> None:
        clip = panned_clip()
        off = _sampler([clip]).draw(1)
        zero = _sampler([clip], holes=HoleMix(propagate=0.0)).draw(1)
        assert torch.equal(off.frames, zero.frames) and torch.equal(off.hole, zero.hole)

    def test_same_seed_same_batch(self) -> None:
        clips = [panned_clip(), still_clip()]
        kw = {"holes": HoleMix(propagate=0.7), "encoding": {"srgb": 1.0, "acescct": 1.0}, "exposure": 1.0}
        a = _sampler(clips, augment=True, **kw).batch([0, 1, 2, 3])
        b = _sampler(clips, augment=True, **kw).batch([0, 1, 2, 3])
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
        c = _sampler(clips, augment=True, **{**kw, "seed": 4}).batch([0, 1, 2, 3])
        assert not torch.equal(a[1], c[1])
        inputs, frames, hole = a
        assert inputs.shape == frames.shape == (4, 3, 8, 64, 64) and hole.shape == (4, 1, 8, 64, 64)


class TestConfig:
    BASE = {"data": {"sources": ["x"], "window": 8, "resolution": 64}}

    def _parse(self, data: dict | None = None, holes: dict | None = None) -> object:
        return parse_config(
            {"data": {**self.BASE["data"], **(data or {})}, "holes": holes or {}}, base_dir=None
        )

    def test_smoke(self) -> None:
        cfg = self._parse({"encoding": {"srgb": 1, "acescct": 3}, "exposure": 1}, {"propagate": 0.5})
        assert cfg.data.encoding == {"srgb": 1.0, "acescct": 3.0} and cfg.data.exposure == 1.0
        assert cfg.holes.propagate == 0.5
        assert cfg.to_dict()["data"]["encoding"] == {"srgb": 1.0, "acescct": 3.0}
        default = self._parse()
        assert default.data.encoding == {"srgb": 1.0} and default.holes.propagate == 0.0

    @pytest.mark.parametrize(
        ("data", "holes", "message"),
        [
            ({"encoding": {"srgb": 1, "linear": 1}}, None, "unknown encoding"),
            ({"encoding": "acescct"}, None, "data.encoding must be a table"),
            ({"encoding": {"srgb": -1, "acescct": 1}}, None, ">= 0"),
            ({"encoding": {"srgb": "half"}}, None, "numbers"),
            ({"exposure": 12}, None, "data.exposure"),
            (None, {"propagate": 1.5}, "holes.propagate"),
            (None, {"propagate": "yes"}, "holes.propagate"),
        ],
    )
    def test_exception(self, data: dict | None, holes: dict | None, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            self._parse(data, holes)

    def test_stage5(self) -> None:
        cfg = load_config(REPO / "configs" / "default_stage5.yaml")
        assert cfg.data.licence == "commercial" and cfg.train.threads == 1
        assert cfg.holes.propagate > 0 and set(cfg.data.encoding) == {"srgb", "acescct"}
        assert cfg.train.init == "combcn/weights/combcn_default.pt" and cfg.train.max_minutes > 0


class TestTrainer:
    def test_train_with_propagation_and_encoding(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A short run on propagated, ACEScct-encoded windows: the model gets the pasted input and the
        loss the truth, over the network's hole."""
        root = tmp_path / "clips"
        for name, clip in (("pan", panned_clip(frames=8)), ("pan2", panned_clip(frames=8, seed=5))):
            (root / name).mkdir(parents=True)
            for f, img in enumerate(clip.frames):
                write_png(root / name / f"{f:05d}.png", img)
        cfg = parse_config(
            {
                "model": {"width": 0.125, "prefill": "plate", "seen": True, "keep_seen": True},
                "data": {
                    "sources": [str(root)],
                    "val_clips": ["pan2"],
                    "cache": str(tmp_path / "cache"),
                    "short_side": 64,
                    "window": 4,
                    "resolution": 32,
                    "encoding": {"acescct": 1.0},
                    "exposure": 1.0,
                },
                "holes": {"box": 1, "strokes": 0, "objects": 0, "propagate": 1.0},
                "train": {
                    "iterations": 3,
                    "pretrain_3dcn": 0,
                    "val_every": 3,
                    "val_samples": 1,
                    "log_every": 1,
                    "checkpoint_minutes": 0.0,
                    "out": str(tmp_path / "run"),
                },
            }
        )
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        real_loss = trainer_mod.total_loss

        def spy(pred, frames, hole, **kw):  # type: ignore[no-untyped-def]
            seen.append((frames.detach().clone(), hole.detach().clone()))
            return real_loss(pred, frames, hole, **kw)

        monkeypatch.setattr(trainer_mod, "total_loss", spy)
        import cv2

        threads = cv2.getNumThreads()
        result = trainer_mod.train(cfg, progress=False)
        assert result.status == "done" and result.iteration == 3
        assert cv2.getNumThreads() == threads  # restored
        sampler = WindowSampler(
            trainer_mod.prepare_data(cfg)[0],
            window=4,
            resolution=32,
            holes=cfg.holes,
            seed=0,
            encoding=cfg.data.encoding,
            exposure=1.0,
        )
        for it, (frames, hole) in enumerate(seen):
            _, truth, net_hole = sampler.batch([it])
            assert torch.equal(frames, truth) and torch.equal(hole, net_hole)


class TestEncodingEval:
    def test_float_plate_method(self) -> None:
        """The window goes to the engine as linear light and comes back in sRGB: outside the hole the
        values survive the round trip, inside they are filled (not the hidden truth, not black)."""
        from combcn.engine import Engine
        from combcn.train.encoding_eval import float_plate_method

        clip = panned_clip(frames=8)
        truth = torch.from_numpy(clip.frames.astype(np.float32) / 255.0).permute(3, 0, 1, 2)[None]
        hole = torch.zeros(1, 1, 8, 64, 64)
        hole[..., 20:40, 24:44] = 1.0
        frames = truth * (1.0 - hole)
        rows = float_plate_method(Engine(None, "cpu"), "m", "acescct", 1.0)(frames, hole)
        out, row_hole = rows["m"]
        assert out.shape == truth.shape and torch.equal(row_hole, hole)
        keep = hole.expand_as(out) == 0
        assert float((out - frames)[keep].abs().max()) < 1e-4
        inside = hole.expand_as(out) > 0
        assert float((out - truth)[inside].abs().mean()) < 0.1 and float(out[inside].mean()) > 0.1
