"""Tests of the training pipeline: clips, cache, holes, windows, losses, config, the loop.

Clips are generated here (small PNG sequences written with OpenImageIO, a movie written with PyAV);
nothing reads ../shared. Training runs a tiny network for a handful of iterations only.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_png

from combcn.errors import ConfigError, InputError, ModelError
from combcn.holes import (
    box_hole,
    mixed_hole,
    moving_box_hole,
    moving_stroke_hole,
    object_hole,
    object_tracks,
    silhouette_hole,
    stroke_hole,
)
from combcn.model import load_model
from combcn.train import losses as losses_mod
from combcn.train import trainer as trainer_mod
from combcn.train.config import load_config, parse_config
from combcn.train.data import ClipSource, discover, load_clips, split_by_clip
from combcn.train.losses import framewise_masked_l1, masked_l1, temporal_l1, total_loss
from combcn.train.windows import WindowSampler


def make_clip(
    folder: Path, frames: int = 10, h: int = 48, w: int = 64, seed: int = 0, masks: bool = False
) -> Path:
    """A moving-gradient clip of PNG frames (and, optionally, a moving square object matte)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    if masks:
        (folder / "masks").mkdir()
    for f in range(frames):
        img = (0.5 * base + 0.5 * (np.sin((xx + 2 * f) / 5.0)[..., None] * 127 + 128)).astype(np.uint8)
        write_png(folder / f"{f:05d}.png", img)
        if masks:
            m = np.zeros((h, w), np.uint8)
            m[10:26, 5 + 2 * f : 21 + 2 * f] = 1
            write_png(folder / "masks" / f"{f:05d}.png", m)
    return folder


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    make_clip(root / "alpha", seed=1, masks=True)
    make_clip(root / "beta", seed=2)
    make_clip(root / "gamma", seed=3)
    return root


def _cfg(root: Path, out: Path, **train: object) -> dict:
    return {
        "model": {"width": 0.125},
        "data": {
            "sources": [str(root)],
            "val_clips": ["gamma"],
            "cache": str(out / "cache"),
            "short_side": 48,
            "window": 4,
            "resolution": 32,
        },
        "holes": {"box": 1, "strokes": 1, "objects": 1},
        "train": {
            "iterations": 4,
            "pretrain_3dcn": 2,
            "val_every": 2,
            "val_samples": 1,
            "log_every": 1,
            "checkpoint_minutes": 0.0,
            "out": str(out / "run"),
            **train,
        },
    }


class TestHoles:
    def test_box_paper(self) -> None:
        for seed in range(20):
            hole = box_hole(np.random.default_rng(seed), 5, 128, 128)
            assert (hole == hole[0]).all()  # same place in every frame
            ys, xs = np.nonzero(hole[0])
            assert 48 <= ys.max() - ys.min() + 1 <= 64 and 48 <= xs.max() - xs.min() + 1 <= 64

    def test_deterministic(self) -> None:
        for fn in (lambda r: box_hole(r, 4, 64, 64), lambda r: stroke_hole(r, 6, 64, 64)):
            a, b = fn(np.random.default_rng(7)), fn(np.random.default_rng(7))
            assert np.array_equal(a, b)
            assert not np.array_equal(a, fn(np.random.default_rng(8)))

    def test_strokes_move(self) -> None:
        moving = [
            not np.array_equal(h[0], h[-1])
            for h in (stroke_hole(np.random.default_rng(s), 16, 64, 64) for s in range(5))
        ]
        assert sum(moving) >= 4

    def test_object_track(self) -> None:
        masks = np.zeros((8, 40, 40), np.uint8)
        for f in range(8):
            masks[f, 5:15, 2 + 3 * f : 12 + 3 * f] = 2
        hole = object_hole(np.random.default_rng(0), masks, list(range(8)), 0, 8, (0, 0, 40), 40, dilate=0)
        assert hole is not None
        centres = [np.nonzero(h)[1].mean() for h in hole]
        assert np.allclose(np.diff(centres), 3.0)  # follows its own track
        single = object_hole(np.random.default_rng(0), masks[:1], [0], 0, 8, (0, 0, 40), 40)
        assert single is not None and single.shape == (8, 40, 40)
        assert (
            object_hole(np.random.default_rng(0), np.zeros_like(masks), list(range(8)), 0, 8, (0, 0, 40), 40)
            is None
        )

    def test_moving_families_are_deterministic(self) -> None:
        for fn in (
            lambda r: moving_stroke_hole(r, 8, 48, 80),
            lambda r: moving_box_hole(r, 8, 48, 80),
            lambda r: mixed_hole(r, 8, 48, 80),
        ):
            a, b = fn(np.random.default_rng(3)), fn(np.random.default_rng(3))
            assert a.dtype == np.float32 and a.shape == (8, 48, 80)
            assert np.array_equal(a, b)
            assert not np.array_equal(a, fn(np.random.default_rng(4)))

    def test_moving_strokes_travel_along_a_path(self) -> None:
        for seed in range(8):
            hole = moving_stroke_hole(np.random.default_rng(seed), 12, 64, 96, travel=0.3)
            assert hole.reshape(12, -1).max(axis=1).all()  # a hole in every frame
            assert 0.005 < hole.mean() < 0.25
            # one rigid shape: the first frame's pixels, shifted, are the last frame's (up to the border)
            centres = np.array([np.argwhere(h).mean(axis=0) for h in hole])
            assert np.hypot(*(centres[-1] - centres[0])) > 5.0
            steps = np.hypot(*np.diff(centres, axis=0).T)
            assert steps.max() < 0.3 * 64  # smooth: no frame jumps across the window

    def test_moving_box_keeps_its_size(self) -> None:
        hole = moving_box_hole(np.random.default_rng(1), 6, 64, 64)
        areas = hole.reshape(6, -1).sum(axis=1)
        assert (areas == areas[0]).all() and 24 * 24 <= areas[0] <= 32 * 32

    def test_object_tracks(self) -> None:
        masks = np.zeros((10, 30, 40), np.int32)
        for f in range(10):
            masks[f, 5:15, 2 + 2 * f : 10 + 2 * f] = 7  # object 7 moves right, all frames
        masks[3:6, 20:28, 20:30] = 2  # object 2: frames 3-5 only
        index = list(range(10))
        tracks = object_tracks(masks, index)
        assert [(first, m.shape) for first, m in tracks] == [(3, (3, 8, 10)), (0, (10, 10, 26))]
        first, moving = tracks[1]
        assert np.array_equal(moving[0, :, :8], np.ones((10, 8), bool)) and not moving[0, :, 8:].any()
        gap = object_tracks(masks, [0, 1, 2, 3, 4, 10, 11, 12, 13, 14])  # frames 4 and 10 not consecutive
        assert sorted(m.shape[0] for o, m in gap if m.shape[1] == 10) == [5, 5]

    def test_silhouette_follows_its_track(self) -> None:
        track = np.zeros((12, 10, 40), bool)
        for f in range(12):
            track[f, 2:8, 3 * f : 3 * f + 6] = True  # moves 3 px a frame
        hole = silhouette_hole(np.random.default_rng(0), track, 8, 60, 90, dilate=0.0)
        assert hole.shape == (8, 60, 90) and hole.reshape(8, -1).max(axis=1).all()
        centres = np.array([np.argwhere(h).mean(axis=0) for h in hole])
        steps = np.diff(centres[:, 1])
        assert np.allclose(np.abs(steps), abs(steps[0]), atol=1.01) and abs(steps[0]) > 1.0
        assert np.allclose(centres[:, 0], centres[0, 0])  # the track is horizontal: so is the hole
        again = silhouette_hole(np.random.default_rng(0), track, 8, 60, 90, dilate=0.0)
        assert np.array_equal(hole, again)

    def test_still_silhouette_is_carried_along_a_path(self) -> None:
        still = np.zeros((1, 12, 12), bool)
        still[0, 2:10, 4:8] = True
        hole = silhouette_hole(np.random.default_rng(2), still, 10, 64, 64)
        assert hole.reshape(10, -1).max(axis=1).all()
        centres = np.array([np.argwhere(h).mean(axis=0) for h in hole])
        assert np.hypot(*(centres[-1] - centres[0])) > 5.0  # a still silhouette still moves
        assert 0.01 < hole.mean() < 0.3


class TestData:
    def test_bad_clip_skip(self, tmp_path: Path, clip_root: Path, caplog: pytest.LogCaptureFixture) -> None:
        root = tmp_path / "clips"
        make_clip(root / "good")
        make_clip(root / "short", frames=3)
        make_clip(root / "tiny", h=16, w=16)
        make_clip(root / "broken")
        (root / "broken" / "00004.png").write_bytes(b"not a png")
        with caplog.at_level(logging.WARNING, logger="combcn.train.data"):
            clips = load_clips(discover([root]), tmp_path / "cache", short_side=48, window=4, resolution=32)
        assert [c.name for c in clips] == ["good"]
        text = caplog.text
        assert "short" in text and "fewer than the window" in text
        assert "tiny" in text and "smaller than" in text
        assert "broken" in text and "00004.png" in text

    def test_exception_sources(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match="not found"):
            discover([tmp_path / "nope"])
        (tmp_path / "empty").mkdir()
        with pytest.raises(InputError, match="no clips"):
            discover([tmp_path / "empty"])

    def test_cache_and_masks(self, tmp_path: Path, clip_root: Path) -> None:
        clips = load_clips(discover([clip_root]), tmp_path / "cache", short_side=40, window=4, resolution=32)
        alpha = next(c for c in clips if c.name == "alpha")
        assert alpha.frames.shape == (10, 40, 53, 3) and alpha.frames.dtype == np.uint8
        assert alpha.masks is not None and alpha.mask_index == list(range(10))
        assert (tmp_path / "cache" / "alpha.npy").is_file()
        again = load_clips(discover([clip_root]), tmp_path / "cache", short_side=40, window=4, resolution=32)
        assert np.array_equal(np.asarray(again[0].frames), np.asarray(clips[0].frames))

    def test_movie(self, tmp_path: Path) -> None:
        import av

        path = tmp_path / "shot.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=24)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for f in range(6):
                img = np.full((48, 64, 3), 20 * f, np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        sources = discover([path])
        assert sources == [ClipSource("shot", path)]
        clips = load_clips(sources, tmp_path / "cache", short_side=48, window=4, resolution=32)
        assert clips[0].frames.shape == (6, 48, 64, 3)

    def test_exr_sequence(self, tmp_path: Path) -> None:
        import OpenImageIO as oiio

        folder = tmp_path / "plate"
        folder.mkdir()
        for f in range(5):
            linear = np.full((40, 48, 4), 0.18 * (f + 1), np.float32)  # scene-linear RGBA
            linear[0, 0, :3] = 7.5  # a highlight above 1.0: kept by the shaper, not clipped or wrapped
            path = folder / f"plate.{1001 + f}.exr"
            out = oiio.ImageOutput.create(str(path))
            assert out is not None
            out.open(str(path), oiio.ImageSpec(48, 40, 4, oiio.HALF))
            out.write_image(linear)
            out.close()
        clips = load_clips(discover([folder]), tmp_path / "cache", short_side=40, window=4, resolution=32)
        frames = np.asarray(clips[0].frames)
        assert frames.shape == (5, 40, 48, 3) and frames.dtype == np.uint8
        # the engine's encoding of a float plate (its default shaper), so training sees what use feeds
        from combcn.engine.shaper import get_shaper

        expected = np.uint8(get_shaper("acescct").encode(np.float32([7.5]))[0] * 255.0 + 0.5)
        assert abs(int(frames[0, 0, 0, 0]) - int(expected)) <= 1 and frames[0, 0, 0, 0] > frames[4, 5, 5, 0]
        assert frames[0, 5, 5, 0] < frames[4, 5, 5, 0]

    def test_split_by_clip(self) -> None:
        names = [f"c{i}" for i in range(10)]
        train, val = split_by_clip(names, None, 0.2, seed=3)
        assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == names
        assert split_by_clip(names, None, 0.2, seed=3) == (train, val)
        assert split_by_clip(names, ["c4"], 0.5, seed=0)[1] == ["c4"]

    def test_windows_deterministic(self, tmp_path: Path, clip_root: Path) -> None:
        clips = load_clips(discover([clip_root]), tmp_path / "cache", short_side=48, window=4, resolution=32)
        sampler = WindowSampler(clips, window=4, resolution=32, seed=5)
        for i in range(6):
            f1, h1, n1 = sampler.sample(i)
            f2, h2, n2 = sampler.sample(i)
            assert torch.equal(f1, f2) and torch.equal(h1, h2) and n1 == n2
            assert f1.shape == (3, 4, 32, 32) and h1.shape == (1, 4, 32, 32)
            assert 0.0 <= float(f1.min()) and float(f1.max()) <= 1.0 and float(h1.sum()) > 0
        _, hole, _ = sampler.sample(0, kind="objects")
        assert float(hole.sum()) > 0


class TestLosses:
    def test_masked_l1(self) -> None:
        pred = torch.zeros(1, 3, 2, 4, 4)
        target = torch.ones(1, 3, 2, 4, 4)
        hole = torch.zeros(1, 1, 2, 4, 4)
        hole[..., :2, :2] = 1
        target[..., 2:, 2:] = 100.0  # outside the hole: ignored
        assert float(masked_l1(pred, target, hole)) == pytest.approx(1.0, rel=1e-5)
        # Eq. 2 weighs frames equally: frame 1 has a 4x smaller hole but the same error
        hole[:, :, 1] = 0
        hole[:, :, 1, 0, 0] = 1
        target[:, :, 1] = 3.0
        assert float(framewise_masked_l1(pred, target, hole)) == pytest.approx(2.0, rel=1e-5)
        assert float(framewise_masked_l1(pred, target, torch.zeros_like(hole))) == 0.0

    def test_temporal_l1_matches_the_metric(self) -> None:
        from combcn.eval.metrics import temporal_error
        from combcn.model.inpainter import Prediction

        g = torch.Generator().manual_seed(0)
        truth = torch.rand(1, 3, 5, 8, 8, generator=g)
        hole = torch.zeros(1, 1, 5, 8, 8)
        hole[..., 2:6, 2:6] = 1
        # a fill off by a constant moves exactly as the truth does: no flicker
        assert float(temporal_l1(truth + 0.2, truth, hole)) == pytest.approx(0.0, abs=1e-6)
        flicker = truth.clone()
        flicker[:, :, 1::2] += 0.1  # every other frame brighter: |change| off by 0.1 at every hole pixel
        assert float(temporal_l1(flicker, truth, hole)) == pytest.approx(0.1, rel=1e-4)
        # the same quantity as the eval metric (0-255 there) when every pair has the same hole
        assert float(temporal_l1(flicker, truth, hole)) * 255 == pytest.approx(
            float(temporal_error(flicker, truth, hole)[0]), rel=1e-4
        )
        assert float(temporal_l1(flicker[:, :, :1], truth[:, :, :1], hole[:, :, :1])) == 0.0
        # total_loss adds it, weighted, only when asked
        pred = Prediction(
            low=None, low_hole=hole[..., ::2, ::2], low_input=truth[..., ::2, ::2], full=flicker
        )
        plain = total_loss(pred, truth, hole)
        weighted = total_loss(pred, truth, hole, temporal=2.0)
        assert "temporal" not in plain and float(weighted["temporal"]) == pytest.approx(0.1, rel=1e-4)
        assert float(weighted["total"] - plain["total"]) == pytest.approx(0.2, rel=1e-4)


class TestConfig:
    def test_exception_unknown_keys(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="train.temporal"):
            parse_config({"train": {"temporal": -1.0}})
        with pytest.raises(ConfigError, match="train.iterationz"):
            parse_config({"train": {"iterationz": 3}})
        with pytest.raises(ConfigError, match="section"):
            parse_config({"optimiser": {}})
        with pytest.raises(ConfigError, match="'depth'"):
            parse_config({"model": {"depth": 3}})
        bad = tmp_path / "bad.toml"
        bad.write_text('[data]\nsource = ["x"]\n')
        with pytest.raises(ConfigError, match="data.source") as info:
            load_config(bad)
        assert "bad.toml" in str(info.value)

    def test_yaml_and_toml(self, tmp_path: Path) -> None:
        y = tmp_path / "c.yaml"
        y.write_text("model: {width: 0.5}\ndata: {sources: [a], window: 8, resolution: 64}\ntrain: {lr: 1}\n")
        t = tmp_path / "c.toml"
        t.write_text(
            '[model]\nwidth = 0.5\n[data]\nsources = ["a"]\nwindow = 8\nresolution = 64\n[train]\nlr = 1\n'
        )
        a, b = load_config(y), load_config(t)
        assert a == b and a.model.window == 8 and a.train.lr == 1.0


class TestTrain:
    def test_train_resume_export(self, tmp_path: Path, clip_root: Path) -> None:
        cfg = parse_config(_cfg(clip_root, tmp_path))
        result = trainer_mod.train(cfg, progress=False)
        run = tmp_path / "run"
        assert result.status == "done" and result.iteration == 4
        for name in ("checkpoint.pt", "best.pt", "last.pt", "log.csv", "val.csv", "loss.png", "config.json"):
            assert (run / name).is_file(), name
        rows = list(csv.DictReader(open(run / "log.csv")))
        assert [r["stage"] for r in rows] == ["pretrain_3dcn"] * 2 + ["joint"] * 2
        assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
        with pytest.raises(ConfigError, match="--resume"):
            trainer_mod.train(cfg, progress=False)
        more = parse_config(_cfg(clip_root, tmp_path, iterations=6))
        assert trainer_mod.train(more, resume=True, progress=False).iteration == 6
        assert [int(r["iteration"]) for r in csv.DictReader(open(run / "log.csv"))] == list(range(1, 7))
        dest = tmp_path / "ship" / "combcn_default.pt"
        _, val_clips = trainer_mod.prepare_data(cfg)
        prov = trainer_mod.export_weights(run, dest, validate=val_clips, per_clip=2)
        assert prov["validation"]["windows"] == 2 and set(prov["validation"]["per_clip"]) == {"gamma"}
        assert prov["validation"]["val_full"] > 0 and prov["validation"]["mean_fill"] > 0
        assert prov["validation"]["smooth_fill"] > 0 and prov["validation"]["plate_fill"] > 0
        assert prov["trained_on"] == ["alpha", "beta"] and prov["validation_clips"] == ["gamma"]
        assert (dest.parent / "PROVENANCE.json").is_file()
        assert load_model(dest).config.width == 0.125
        other = parse_config({**_cfg(clip_root, tmp_path, iterations=8), "model": {"width": 0.25}})
        with pytest.raises(ModelError, match="model config"):
            trainer_mod.train(other, resume=True, progress=False)

    def test_train_plate_prefill(self, tmp_path: Path, clip_root: Path) -> None:
        # the shipped default's pre-fill trains, validates and exports like the paper's
        cfg = parse_config(
            {**_cfg(clip_root, tmp_path, iterations=4), "model": {"width": 0.125, "prefill": "plate"}}
        )
        result = trainer_mod.train(cfg, progress=False)
        assert result.status == "done" and result.iteration == 4
        rows = list(csv.DictReader(open(tmp_path / "run" / "val.csv")))
        assert rows and all(np.isfinite(float(r["val_full"])) for r in rows)
        model = load_model(tmp_path / "run" / "last.pt")
        assert model.config.prefill == "plate"
        # training moved the residual networks off zero: the output is no longer the pre-fill alone
        assert model.net2d is not None and float(model.net2d.l17[0].weight.detach().abs().sum()) > 0

    def test_init_continues_from_weights(self, tmp_path: Path, clip_root: Path) -> None:
        first = parse_config(_cfg(clip_root, tmp_path / "a"))
        trainer_mod.train(first, progress=False)
        start = tmp_path / "a" / "run" / "last.pt"
        # a learning rate of 0: the run's weights are exactly the ones it started from
        same = parse_config(_cfg(clip_root, tmp_path / "b", iterations=1, lr=0.0, init=str(start)))
        trainer_mod.train(same, progress=False)
        a = torch.load(start, weights_only=True)
        b = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)
        params = [name for name, _ in load_model(start).named_parameters()]
        assert a["state_dict"].keys() == b["state_dict"].keys() and params
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in params)
        assert b["config"]["mean_rgb"] == a["config"]["mean_rgb"]
        assert b["provenance"]["init"]["weights"] == str(start)
        assert b["provenance"]["init"]["iterations"] == 4
        # a second stage with the flicker term trains on and logs the term
        more = parse_config(
            _cfg(clip_root, tmp_path / "c", iterations=3, pretrain_3dcn=0, temporal=1.0, init=str(start))
        )
        assert trainer_mod.train(more, progress=False).status == "done"
        rows = list(csv.DictReader(open(tmp_path / "c" / "run" / "log.csv")))
        assert rows and all(float(r["loss_temporal"]) >= 0 for r in rows)
        c = torch.load(tmp_path / "c" / "run" / "last.pt", weights_only=True)
        assert not all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in params)
        # model.seen added to a model trained without it: the new input starts at zero weight, so
        # the grown model fills exactly as the one it started from
        grown_cfg = {**_cfg(clip_root, tmp_path / "g", iterations=1, lr=0.0, init=str(start))}
        grown_cfg["model"] = {"width": 0.125, "seen": True}
        trainer_mod.train(parse_config(grown_cfg), progress=False)
        grown = load_model(tmp_path / "g" / "run" / "last.pt")
        assert grown.config.seen and grown.net2d is not None
        assert grown.net2d.l1[0].weight.shape[1] == 5
        assert float(grown.net2d.l1[0].weight.detach()[:, 4].abs().sum()) == 0.0
        frames = torch.rand(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
        hole = torch.zeros(1, 1, 4, 32, 32)
        hole[:, :, 1:, 8:20, 8:20] = 1  # seen in frame 0: the new channel is not all zero
        with torch.no_grad():
            assert torch.allclose(grown(frames, hole), load_model(start)(frames, hole), atol=1e-5)
        # a model cannot lose the channel
        back = {**_cfg(clip_root, tmp_path / "h", init=str(tmp_path / "g" / "run" / "last.pt"))}
        with pytest.raises(ConfigError, match="model.seen"):
            trainer_mod.train(parse_config(back), progress=False)
        # weights of another model shape are refused with the key to fix
        wider = parse_config({**_cfg(clip_root, tmp_path / "d", init=str(start)), "model": {"width": 0.25}})
        with pytest.raises(ConfigError, match="train.init"):
            trainer_mod.train(wider, progress=False)
        missing = parse_config(_cfg(clip_root, tmp_path / "e", init=str(tmp_path / "nope.pt")))
        with pytest.raises(ModelError, match="nope.pt"):
            trainer_mod.train(missing, progress=False)

    def test_stages_seen_then_keep_seen_then_track(self, tmp_path: Path, clip_root: Path) -> None:
        # the shipped default's stages in small: plate model -> + seen input -> + keep_seen -> + track
        def stage(name: str, init: str, **model: object) -> Path:
            cfg = _cfg(clip_root, tmp_path / name, iterations=2, pretrain_3dcn=1, init=init, temporal=1.0)
            cfg["model"] = {"width": 0.125, "prefill": "plate", **model}
            assert trainer_mod.train(parse_config(cfg), progress=False).status == "done"
            return tmp_path / name / "run" / "last.pt"

        first = stage("one", "")
        second = stage("two", str(first), seen=True)
        third = stage("three", str(second), seen=True, keep_seen=True)
        model = load_model(third)
        assert model.config.seen and model.config.keep_seen
        prov = torch.load(third, weights_only=True)["provenance"]
        assert prov["init"]["weights"] == str(second) and prov["init"]["init"]["weights"] == str(first)
        assert prov["init"]["iterations"] == 2 and prov["init"]["init"]["init"] is None
        fourth = stage("four", str(third), seen=True, keep_seen=True, track=True)
        assert load_model(fourth).config.track
        # switching keep_seen or track on does not let the prefill change
        other = _cfg(clip_root, tmp_path / "five", init=str(third))
        other["model"] = {"width": 0.125, "prefill": "smooth", "seen": True}
        with pytest.raises(ConfigError, match="model.keep_seen and model.track changed"):
            trainer_mod.train(parse_config(other), progress=False)

    def test_resumed_log_keeps_its_columns(self, tmp_path: Path) -> None:
        path = tmp_path / "log.csv"
        path.write_text("iteration,loss_total\n1,0.5\n")
        log = trainer_mod._CsvLog(path, ["iteration", "loss_total", "loss_temporal"])
        log.write({"iteration": 2, "loss_total": 0.4, "loss_temporal": 0.1})
        rows = list(csv.DictReader(open(path)))
        assert [r["iteration"] for r in rows] == ["1", "2"] and set(rows[1]) == {"iteration", "loss_total"}

    def test_nan_stops(self, tmp_path: Path, clip_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        real = losses_mod.total_loss
        calls = {"n": 0}

        def poisoned(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
            out = real(*args, **kwargs)  # type: ignore[arg-type]
            calls["n"] += 1
            if calls["n"] >= 3:
                out = {k: v * float("nan") for k, v in out.items()}
            return out

        monkeypatch.setattr(trainer_mod, "total_loss", poisoned)
        cfg = parse_config(_cfg(clip_root, tmp_path, iterations=5, checkpoint_minutes=100.0))
        result = trainer_mod.train(cfg, progress=False)
        assert result.status == "nan" and result.iteration == 2
        assert not (tmp_path / "run" / "checkpoint.pt").exists()  # nothing written from the bad state
        cfg = parse_config(_cfg(clip_root, tmp_path / "b", iterations=5, checkpoint_minutes=0.0))
        calls["n"] = 0  # a checkpoint after every good step, then the poison at step 3
        result = trainer_mod.train(cfg, progress=False)
        ckpt = torch.load(tmp_path / "b" / "run" / "checkpoint.pt", weights_only=True)
        assert result.status == "nan" and ckpt["iteration"] == 2  # the last good state is kept

    def test_non_finite_gradient_skips_the_step(
        self,
        tmp_path: Path,
        clip_root: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        # a finite loss whose backward overflows (as bf16 can): that step is skipped, training goes on
        class InfGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
                return x.clone()

            @staticmethod
            def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
                return grad * float("inf")

        real = losses_mod.total_loss
        calls = {"n": 0}

        def overflowing(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
            out = real(*args, **kwargs)  # type: ignore[arg-type]
            calls["n"] += 1
            if calls["n"] == 2:
                out = {k: InfGrad.apply(v) for k, v in out.items()}
            return out

        monkeypatch.setattr(trainer_mod, "total_loss", overflowing)
        cfg = parse_config(_cfg(clip_root, tmp_path, iterations=4, checkpoint_minutes=100.0))
        with caplog.at_level(logging.WARNING, logger="combcn.train"):
            result = trainer_mod.train(cfg, progress=False)
        assert result.status == "done" and result.iteration == 4
        assert "iteration 2: non-finite gradient" in caplog.text
        model = load_model(tmp_path / "run" / "last.pt")
        assert all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())

    def test_cli_overrides(self, tmp_path: Path, clip_root: Path) -> None:
        # -o, -n and -s replace the config's train.out, train.iterations and train.seed: a replicate of a
        # run with another seed is one flag, and it draws other windows
        import yaml

        from combcn.cli import main

        config = tmp_path / "tiny.yaml"
        config.write_text(yaml.safe_dump(_cfg(clip_root, tmp_path, iterations=9, seed=0)))
        losses = {}
        for seed in (0, 5):
            out = tmp_path / f"seed{seed}"
            args = ["train", str(config), "-o", str(out), "-n", "2", "-s", str(seed), "-p", "none"]
            assert main(args) == 0
            saved = json.loads((out / "config.json").read_text())["train"]
            assert saved["seed"] == seed and saved["iterations"] == 2 and saved["out"] == str(out)
            losses[seed] = [r["loss_total"] for r in csv.DictReader(open(out / "log.csv"))]
            assert len(losses[seed]) == 2
        assert losses[0] != losses[5]

    def test_cli_unknown_key(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        from combcn.cli import main

        bad = tmp_path / "bad.yaml"
        bad.write_text("train: {iterations: 3, learning_rate: 1}\n")
        assert main(["train", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "train.learning_rate" in err and "bad.yaml" in err and "Traceback" not in err
