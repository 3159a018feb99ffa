"""``combcn finetune`` on a tiny generated EXR shot with a tiny model: holes avoid the matte, weights load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
import torch

from combcn.cli import main
from combcn.train import finetune as ft

H, W, FRAMES = 48, 64, 8


def _write_exr(path: Path, pixels: np.ndarray, channels: tuple[str, ...]) -> None:
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], len(channels), "half")
    spec.channelnames = channels
    out = oiio.ImageOutput.create(str(path))
    assert out is not None and out.open(str(path), spec)
    assert out.write_image(pixels.astype(np.float16))
    out.close()


def _matte_box(t: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the matte in frame t: a box moving right."""
    return 10, 22, 20 + 2 * t, 32 + 2 * t


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shot")
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    rng = np.random.default_rng(0)
    for t in range(FRAMES):
        rgb = np.stack([(xx + t) / W * 2.0, yy / H, 0.18 + 0 * xx], -1) + rng.normal(0, 0.01, (H, W, 3))
        _write_exr(root / f"plate.{1001 + t:04d}.exr", rgb, ("R", "G", "B"))
        matte = np.zeros((H, W, 1), np.float32)
        y0, y1, x0, x1 = _matte_box(t)
        matte[y0:y1, x0:x1] = 1.0
        _write_exr(root / f"matte.{1001 + t:04d}.exr", matte, ("A",))
    return root


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from combcn.model import Inpainter, ModelConfig, save_weights

    torch.manual_seed(0)
    model = Inpainter(ModelConfig(width=0.0625, window=4, resolution=32))
    return save_weights(model, tmp_path_factory.mktemp("w") / "base.pt")


def test_load_shot_at_the_engines_scale(shot: Path) -> None:
    s = ft.load_shot(
        str(shot / "plate.####.exr"), str(shot / "matte.####.exr"), resolution=32, progress=False
    )
    assert s.frames == list(range(1001, 1001 + FRAMES))
    assert s.shaper == "acescct"  # half-float plate
    assert 0 < s.scale < 1 and s.plate.shape[0] == FRAMES and s.plate.shape[-1] == 3
    assert s.plate.shape[1:3] == s.matte.shape[1:3]
    assert s.crop[0] % 8 == 0 and s.crop[1] % 8 == 0
    # the matte moves right by 2 plate px per frame
    first, last = np.nonzero(s.matte[0].any(0))[0], np.nonzero(s.matte[-1].any(0))[0]
    assert last.min() > first.min()


def test_synthetic_holes_never_touch_the_matte(shot: Path) -> None:
    s = ft.load_shot(
        str(shot / "plate.####.exr"), str(shot / "matte.####.exr"), resolution=32, progress=False
    )
    rng = np.random.default_rng(1)
    for _ in range(40):
        sample = ft.draw_sample(s, rng, window=4, keep_away=2)
        target = sample.target[0, 0].numpy() > 0
        hole = sample.hole[0, 0].numpy() > 0
        assert target.any()
        assert not (target & ~hole).any()  # every scored pixel is a hole for the model
        matte_in_hole = hole & ~target
        # the scored pixels keep at least keep_away px from the matte (dilation by 2 never reaches them)
        import cv2

        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        for t in range(target.shape[0]):
            near = cv2.dilate(matte_in_hole[t].astype(np.uint8), kernel) > 0
            assert not (near & target[t]).any()


def test_loss_ignores_the_matte_region(shot: Path, base_weights: Path) -> None:
    from combcn.model import load_model

    s = ft.load_shot(
        str(shot / "plate.####.exr"), str(shot / "matte.####.exr"), resolution=32, progress=False
    )
    sample = ft.draw_sample(s, np.random.default_rng(2), window=4, keep_away=2)
    model = load_model(base_weights)
    changed = ft.Sample(sample.truth.clone(), sample.hole, sample.target)
    in_matte = ((sample.hole > 0) & (sample.target == 0)).expand_as(changed.truth)
    assert in_matte.any()
    changed.truth[in_matte] = 1.0 - changed.truth[in_matte]  # the object behind the matte changes
    with torch.no_grad():
        assert ft.sample_loss(model, sample).item() == pytest.approx(ft.sample_loss(model, changed).item())


def test_finetune_cli_writes_loadable_weights(
    shot: Path, base_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from combcn.model import load_model, read_weights

    out = tmp_path / "adapted" / "shot.pt"
    argv = [
        "finetune",
        str(shot / "plate.####.exr"),
        "--matte",
        str(shot / "matte.####.exr"),
        "-o",
        str(out),
        "--weights",
        str(base_weights),
        "--steps",
        "3",
        "--window",
        "4",
        "--frames",
        "1001-1006",
        "--val-windows",
        "1",
        "--progress",
        "none",
    ]
    assert main(argv) == 0
    assert "adapted 3 steps" in capsys.readouterr().out
    adapted = load_model(out)
    base = load_model(base_weights)
    assert adapted.config == base.config
    pairs = zip(adapted.state_dict().values(), base.state_dict().values(), strict=True)
    diffs = [not torch.equal(a, b) for a, b in pairs]
    assert any(diffs)
    provenance = read_weights(out)["provenance"]
    assert provenance["steps"] == 3 and provenance["finetuned_on"]["frames"].startswith("1001-1006")
    assert np.isfinite(provenance["validation"]["before"]) and np.isfinite(provenance["validation"]["after"])
    # what combcn inpaint --weights does with it: the engine loads and renders with the adapted weights
    from combcn.engine import Engine

    plate = np.random.default_rng(0).random((4, 40, 40, 3)).astype(np.float32)
    matte = np.zeros((4, 40, 40), np.float32)
    matte[:, 10:20, 12:24] = 1.0
    filled = Engine(weights=out, device="cpu").inpaint(plate, matte)
    assert np.array_equal(filled[matte == 0], plate[matte == 0])
    assert not np.array_equal(filled[matte == 1], plate[matte == 1])
    # the output exists now: a second run must not replace it silently
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("seen", [False, True])
def test_finetune_plate_model(shot: Path, tmp_path: Path, seen: bool) -> None:
    # the shipped default's kind of model (clean-plate pre-fill, residual networks; with seen, the
    # seen input and keep_seen) adapts too
    from combcn.model import Inpainter, ModelConfig

    s = ft.load_shot(
        str(shot / "plate.####.exr"), str(shot / "matte.####.exr"), resolution=32, progress=False
    )
    torch.manual_seed(0)
    model = Inpainter(
        ModelConfig(width=0.0625, window=4, resolution=32, prefill="plate", seen=seen, keep_seen=seen)
    )
    before = [p.detach().clone() for p in model.parameters()]
    report = ft.finetune(model, s, steps=2, window=4, keep_away=2, val_windows=1, progress=False)
    assert report.steps == 2 and report.precision in ("fp32", "bf16")
    assert np.isfinite(report.val_before) and np.isfinite(report.val_after)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), before, strict=True))


def test_finetune_cli_bad_input(
    shot: Path, base_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = [
        "-o",
        str(tmp_path / "x.pt"),
        "--weights",
        str(base_weights),
        "--steps",
        "1",
        "--progress",
        "none",
    ]
    assert (
        main(["finetune", str(shot / "nothing.####.exr"), "--matte", str(shot / "matte.####.exr"), *common])
        == 2
    )
    assert "no plate frames found" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                str(shot / "plate.####.exr"),
                "--matte",
                str(shot / "matte.####.exr"),
                "--frames",
                "1001-1020",
                *common,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "plate frame missing" in err and "1009" in err
    assert (
        main(
            [
                "finetune",
                str(shot / "plate.####.exr"),
                "--matte",
                str(shot / "matte.####.exr"),
                "--matte-channel",
                "Z",
                *common,
            ]
        )
        == 2
    )
    assert "no channel 'Z'" in capsys.readouterr().err
    assert (
        main(
            [
                "finetune",
                str(shot / "plate.####.exr"),
                "--matte",
                str(shot / "matte.####.exr"),
                "-o",
                str(tmp_path / "y.pt"),
                "--weights",
                str(base_weights),
                "--progress",
                "none",
            ]
        )
        == 2
    )
    assert "--steps N or --minutes M" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_empty_matte_is_refused(shot: Path, tmp_path: Path) -> None:
    for t in range(2):
        _write_exr(tmp_path / f"m.{1001 + t:04d}.exr", np.zeros((H, W, 1), np.float32), ("A",))
    with pytest.raises(ft.InputError, match="matte is empty in every frame"):
        ft.load_shot(
            str(shot / "plate.####.exr"),
            str(tmp_path / "m.####.exr"),
            frames=[1001, 1002],
            resolution=32,
            progress=False,
        )


def test_wide_plate_keeps_only_the_region_the_engine_looks_at(tmp_path: Path) -> None:
    # A 256 px wide plate with a matte at its left: the far right is never in an engine crop.
    width = 256
    for t in range(4):
        _write_exr(tmp_path / f"p.{t + 1:04d}.exr", np.full((H, width, 3), 0.18, np.float32), ("R", "G", "B"))
        matte = np.zeros((H, width, 1), np.float32)
        matte[10:22, 8:30] = 1.0
        _write_exr(tmp_path / f"m.{t + 1:04d}.exr", matte, ("A",))
    s = ft.load_shot(
        str(tmp_path / "p.####.exr"), str(tmp_path / "m.####.exr"), resolution=32, progress=False
    )
    y0, y1, x0, x1 = s.region
    assert (y0, x0) == (0, 0) and y1 == H
    assert 30 < x1 < width  # the matte and a crop's worth of context, not the whole plate
    assert s.plate.shape[2] == max(s.crop[1], round(x1 * s.scale))
    assert s.matte[:, :, : round(8 * s.scale)].sum() == 0 and s.matte.any()


def test_interrupt_writes_the_weights_so_far(
    shot: Path, base_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from combcn.model import load_model

    s = ft.load_shot(
        str(shot / "plate.####.exr"), str(shot / "matte.####.exr"), resolution=32, progress=False
    )
    real_draw = ft.draw_sample
    calls = {"n": 0}

    def draw_then_interrupt(*args: object, **kwargs: object) -> ft.Sample:
        calls["n"] += 1
        if calls["n"] == 3:  # the user presses Ctrl-C during the third step
            raise KeyboardInterrupt
        return real_draw(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ft, "draw_sample", draw_then_interrupt)
    saved: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(
            load_model(base_weights),
            s,
            steps=10,
            window=4,
            val_windows=0,
            progress=False,
            checkpoint=lambda m, report: saved.append(report.steps),
        )
    assert saved == [2]
