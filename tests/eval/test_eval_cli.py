"""``combcn eval`` end to end on a tiny generated clip folder with a tiny model; window cutting."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from combcn.cli import main
from combcn.eval import clips


def _write_clip(folder: Path, frames: int, width: int = 48, height: int = 40, seed: int = 0) -> Path:
    """A moving gradient with noise, as PNG frames 00000.png..., plus a masks/ folder to ignore."""
    folder.mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for t in range(frames):
        image = np.stack([(xx + 2 * t) / width, yy / height, 0.5 + 0 * xx], axis=-1)
        image = np.clip(image * 200 + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{t:05d}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"{t:05d}.png"), np.zeros((height, width), np.uint8))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    _write_clip(root / "alpha", 7, seed=1)
    _write_clip(root / "beta", 9, seed=2)
    _write_clip(root / "short", 3, seed=3)
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from combcn.model import Inpainter, ModelConfig, save_weights

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    out = {}
    for variant in ("combined", "2dcn"):
        model = Inpainter(ModelConfig(width=0.0625, window=4, resolution=32, variant=variant))
        out[variant] = save_weights(model, folder / f"{variant}.pt")
    return out


def test_paper_box_sizes_and_determinism() -> None:
    boxes = [clips.paper_box(np.random.default_rng(i), 128) for i in range(200)]
    for top, left, h, w in boxes:
        assert 48 <= h <= 64 and 48 <= w <= 64
        assert 0 <= top <= 128 - h and 0 <= left <= 128 - w
    assert len({(h, w) for _, _, h, w in boxes}) > 20  # sides vary independently
    assert clips.paper_box(np.random.default_rng(5), 128) == clips.paper_box(np.random.default_rng(5), 128)


def test_load_windows_is_deterministic_for_a_seed(data: Path) -> None:
    dirs = [data / "alpha", data / "beta"]
    a = clips.load_windows(dirs, window=4, size=32, per_clip=2, seed=7)
    b = clips.load_windows(dirs, window=4, size=32, per_clip=2, seed=7)
    c = clips.load_windows(dirs, window=4, size=32, per_clip=2, seed=8)
    assert [(w.clip, w.start, w.box) for w in a] == [(w.clip, w.start, w.box) for w in b]
    assert [w.box for w in a] != [w.box for w in c]
    assert [(w.clip, w.start) for w in a] == [("alpha", 0), ("alpha", 3), ("beta", 0), ("beta", 5)]
    for w in a:
        assert w.truth.shape == (1, 3, 4, 32, 32) and w.hole.shape == (1, 1, 4, 32, 32)
        top, left, h, wd = w.box
        assert 12 <= h <= 16 and 12 <= wd <= 16
        assert w.hole.sum().item() == 4 * h * wd  # same box in every frame
        assert torch.equal(w.hole[0, 0, 0], w.hole[0, 0, -1])


def test_eval_cli_model_compare_and_baselines(
    data: Path, tiny_weights: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = tmp_path / "val.json"
    split.write_text(json.dumps({"train": ["x"], "val": ["beta"]}))
    out = tmp_path / "results"
    argv = [
        "eval",
        "alpha",
        "--split",
        str(split),
        "--data",
        str(data),
        "--weights",
        str(tiny_weights["combined"]),
        "--compare",
        f"2dcn={tiny_weights['2dcn']}",
        "-W",
        "4",
        "-S",
        "32",
        "-o",
        str(out),
        "--progress",
        "none",
        "--examples",
        "2",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| method |")
    result = json.loads((out / "results.json").read_text())
    assert result["clips"] == ["alpha", "beta"]
    rows = result["summary"]
    assert list(rows) == [
        "combcn",
        "3dcn@16",
        "3dcn↑32",
        "2dcn",
        "telea",
        "navier_stokes",
        "temporal_median",
        "cleanplate",
        "tracked_plate",
    ]
    for stats in rows.values():
        assert stats["windows"] == 2
        assert stats["hole_mae"] > 0 and np.isfinite(stats["temporal_error"])
        assert 0 < stats["ssim"] <= 1
    assert result["models"]["2dcn"]["config"]["variant"] == "2dcn"
    md = (out / "results.md").read_text()
    assert "command: `combcn eval alpha" in md and "| telea |" in md
    assert "per clip" in md and "| method | alpha | beta |" in md
    # every full-size row against the main model, window by window; the half-size 3DCN row is not
    gaps = result["gaps_to_model"]["hole_mae"]
    assert set(gaps) == set(rows) - {"combcn", "3dcn@16"}
    for row, g in gaps.items():
        per = [w["scores"][row]["hole_mae"] - w["scores"]["combcn"]["hole_mae"] for w in result["windows"]]
        assert g["gap"] == pytest.approx(float(np.mean(per)))
        assert min(per) - 1e-9 <= g["low"] <= g["gap"] <= g["high"] <= max(per) + 1e-9
    assert "each method minus combcn, window by window" in md
    sheet = cv2.imread(str(out / "examples.png"))
    # 2 windows x (truth, input, combcn, 3dcn upsampled, 2dcn, 5 baselines) tiles of 32 px
    assert sheet.shape == (2 * 32, 10 * 32, 3)


def test_eval_cli_unknown_clip(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["eval", "gamma", "--data", str(data), "--no-model", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown clip 'gamma'" in err and "alpha" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_eval_cli_too_short_clip(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "eval",
            "alpha",
            "short",
            "--data",
            str(data),
            "--no-model",
            "-W",
            "4",
            "-S",
            "32",
            "-o",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "clip 'short' has 3 frames" in err and "at least 4" in err
    assert not (tmp_path / "o").exists()


def test_eval_cli_bad_options(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["eval", "alpha", "--data", str(data), "--baselines", "telea,magic", "-o", str(tmp_path)]) == 2
    )
    assert "unknown baseline(s) magic" in capsys.readouterr().err
    assert main(["eval", "alpha", "--data", str(data), "--compare", "nopath", "-o", str(tmp_path)]) == 2
    assert "NAME=WEIGHTS" in capsys.readouterr().err
    assert main(["eval", "alpha", "--data", str(data), "--compare", "telea=x.pt", "-o", str(tmp_path)]) == 2
    assert "telea used twice" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "alpha",
                "--data",
                str(data),
                "--weights",
                str(tmp_path / "missing.pt"),
                "-W",
                "4",
                "-S",
                "32",
                "-o",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "weights file not found" in capsys.readouterr().err


def test_read_split_forms(tmp_path: Path) -> None:
    text = tmp_path / "val.txt"
    text.write_text("alpha  # held out\n\nbeta\n")
    config = tmp_path / "train.yaml"
    config.write_text("model: {width: 0.25}\ndata:\n  val_clips: [bees, makeup]\n")
    listing = tmp_path / "val.json"
    listing.write_text('["a", "b"]')
    assert clips.read_split(text) == ["alpha", "beta"]
    assert clips.read_split(config) == ["bees", "makeup"]
    assert clips.read_split(listing) == ["a", "b"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"val": 3}')
    with pytest.raises(clips.InputError, match="list of clip names"):
        clips.read_split(bad)


def test_stroke_holes_move_and_are_deterministic(data: Path) -> None:
    a = clips.load_windows([data / "beta"], window=4, size=32, hole="strokes", seed=3)
    b = clips.load_windows([data / "beta"], window=4, size=32, hole="strokes", seed=3)
    assert a[0].box is None
    assert torch.equal(a[0].hole, b[0].hole)
    assert a[0].hole.sum() > 0
    with pytest.raises(clips.ConfigError, match="unknown hole kind"):
        clips.load_windows([data / "beta"], window=4, size=32, hole="blob")
