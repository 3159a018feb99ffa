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


def _write_clip(
    folder: Path, frames: int, width: int = 48, height: int = 40, seed: int = 0, objects: bool = False
) -> Path:
    """A moving gradient with noise, as PNG frames 00000.png..., plus a masks/ folder: empty, or with
    ``objects`` a palette-coloured square walking right and a bar walking down."""
    folder.mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for t in range(frames):
        image = np.stack([(xx + 2 * t) / width, yy / height, 0.5 + 0 * xx], axis=-1)
        image = np.clip(image * 200 + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{t:05d}.png"), image)
        mask = np.zeros((height, width, 3), np.uint8)
        if objects:
            mask[8:18, 2 + 2 * t : 12 + 2 * t] = (0, 0, 128)  # BGR: a dark red square
            mask[2 + t : 6 + t, 30:44] = (0, 128, 0)
        cv2.imwrite(str(folder / "masks" / f"{t:05d}.png"), mask)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    _write_clip(root / "alpha", 7, seed=1)
    _write_clip(root / "beta", 9, seed=2)
    _write_clip(root / "short", 3, seed=3)
    _write_clip(root / "walker", 10, width=56, height=44, seed=4, objects=True)
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
        "-R",
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
    assert printed.startswith("## 32x32 centre square, box holes\n\n| method |")
    result = json.loads((out / "results.json").read_text())
    assert result["clips"] == ["alpha", "beta"]
    (group,) = result["groups"]
    assert (group["resolution"], group["holes"]) == ("32", "box")
    rows = group["summary"]
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
        assert 0 < stats["ssim"] <= 1 and stats["detail"] > 0
    assert result["models"]["2dcn"]["config"]["variant"] == "2dcn"
    md = (out / "results.md").read_text()
    assert "command: `combcn eval alpha" in md and "| telea |" in md
    assert "per clip" in md and "| method | alpha | beta |" in md
    # every full-size row against the main model, window by window; the half-size 3DCN row is not
    gaps = group["gaps_to_model"]["hole_mae"]
    assert set(gaps) == set(rows) - {"combcn", "3dcn@16"}
    for row, g in gaps.items():
        per = [w["scores"][row]["hole_mae"] - w["scores"]["combcn"]["hole_mae"] for w in group["windows"]]
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
            "-S",  # the old spelling of --resolution 32 still works
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


def test_drift_holes_move_and_are_deterministic(data: Path) -> None:
    a = clips.load_windows([data / "beta"], window=4, size=32, hole="drift", seed=3)
    b = clips.load_windows([data / "beta"], window=4, size=32, hole="drift", seed=3)
    assert a[0].box is None
    assert torch.equal(a[0].hole, b[0].hole)
    assert a[0].hole.sum() > 0
    with pytest.raises(clips.ConfigError, match="--holes takes distinct families"):
        clips.load_windows([data / "beta"], window=4, size=32, hole="blob")


def test_parse_resolutions_and_families() -> None:
    assert clips.parse_resolutions("128, native") == ["128", "native"]
    assert clips.parse_families("box,strokes,objects") == ["box", "strokes", "objects"]
    for bad in ("full", "100", "8", "native,native"):
        with pytest.raises(clips.ConfigError, match="--resolution"):
            clips.parse_resolutions(bad)
    for bad in ("box,box", "", "square"):
        with pytest.raises(clips.ConfigError, match="--holes"):
            clips.parse_families(bad)


def _native_frames(folder: Path, start: int, t: int) -> torch.Tensor:
    images = [
        cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        for p in clips.list_frames(folder)[start : start + t]
    ]
    return torch.from_numpy(np.stack(images)).permute(3, 0, 1, 2)[None].float() / 255.0


def test_hole_families_are_deterministic_and_cut_into_known_frames(data: Path) -> None:
    tracks = clips.silhouette_tracks([data / "alpha", data / "walker"])
    assert [t.clip for t in tracks] == ["walker", "walker"]  # alpha's masks are empty
    plan = clips.plan_windows([data / "alpha", data / "beta"], window=4, per_clip=1)
    kwargs = dict(
        window=4, resolutions=["native", "32"], families=["box", "strokes", "objects"], tracks=tracks
    )
    a = list(clips.iter_windows(plan, seed=5, **kwargs))
    b = list(clips.iter_windows(plan, seed=5, **kwargs))
    c = list(clips.iter_windows(plan, seed=6, **kwargs))
    assert [(w.clip, w.resolution, w.family) for w in a][:6] == [
        ("alpha", r, f) for r in ("native", "32") for f in ("box", "strokes", "objects")
    ]
    assert len(a) == 12
    for wa, wb, wc in zip(a, b, c, strict=True):
        assert torch.equal(wa.hole, wb.hole) and wa.source == wb.source
        assert not torch.equal(wa.hole, wc.hole)
        assert set(wa.hole.unique().tolist()) <= {0.0, 1.0}
        assert wa.hole.amax(dim=(0, 1, 3, 4)).min() == 1.0  # a hole in every frame
        if wa.family != "box":
            assert not torch.equal(wa.hole[0, 0, 0], wa.hole[0, 0, -1])  # it moves
        if wa.family == "objects":
            assert wa.source is not None and wa.source.startswith("walker:")
        if wa.resolution == "native":  # the truth is the clip's own frames, untouched
            assert wa.truth.shape[-2:] == (40, 48)
            assert torch.equal(wa.truth, _native_frames(data / wa.clip, wa.start, 4))
        else:
            assert wa.truth.shape[-2:] == (32, 32)


def test_objects_from_the_same_clip_come_from_other_frames(data: Path) -> None:
    tracks = clips.silhouette_tracks([data / "walker"])
    rng = np.random.default_rng(0)
    for start in range(0, 7):
        for _ in range(5):
            track = clips.pick_track(rng, tracks, "walker", start, 4)
            assert track is not None
            frames = set(range(track.first, track.first + track.length))
            assert not frames & set(range(start, start + 4))  # never the frames under the hole
    assert clips.pick_track(rng, [t for t in tracks if t.length == 10][:1], "walker", 0, 10) is None


def test_objects_without_silhouettes_is_one_clear_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "alpha", "--data", str(data), "--no-model", "-W", "4", "-R", "native", "-H", "objects"]
    argv += ["--silhouettes", "beta", "--progress", "none", "-o", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no object silhouettes" in err and "--silhouettes" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_eval_cli_native_families_engine_and_every_baseline(
    data: Path, tiny_weights: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    argv = ["eval", "alpha", "walker", "--data", str(data), "--weights", str(tiny_weights["combined"])]
    argv += ["-W", "4", "-R", "native,32", "-H", "box,strokes,objects", "--engine-option", "margin=0.75"]
    argv += ["--baselines", "telea,navier_stokes,temporal_median,tracked_plate", "--max-windows", "2"]
    argv += ["--examples", "1", "--progress", "none", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    groups = {(g["resolution"], g["holes"]): g for g in result["groups"]}
    assert list(groups) == [(r, f) for r in ("native", "32") for f in ("box", "strokes", "objects")]
    assert result["settings"]["engine_options"] == {"shaper": "none", "margin": 0.75}
    baselines = ["telea", "navier_stokes", "temporal_median", "tracked_plate"]
    for (resolution, family), group in groups.items():
        rows = group["summary"]
        expected = (
            ["combcn", *baselines] if resolution == "native" else ["combcn", "3dcn@16", "3dcn↑32", *baselines]
        )
        assert list(rows) == expected
        for row, stats in rows.items():
            assert stats["windows"] == 2, (resolution, family, row)
            assert np.isfinite(stats["hole_mae"]) and np.isfinite(stats["detail"]) and stats["detail"] > 0
        for w in group["windows"]:
            assert set(w["scores"]) == set(expected)
        if family == "objects":  # alpha's masks are empty: both windows wear walker's silhouettes
            assert all(w["silhouette"].startswith("walker:") for w in group["windows"])
        title = (
            f"## {'native resolution' if resolution == 'native' else '32x32 centre square'}, {family} holes"
        )
        assert title in printed
    md = (out / "results.md").read_text()
    assert md.count("| method | hole MAE (0-255) ↓ | temporal err (0-255) ↓ | PSNR dB ↑") == 6
    assert "detail (truth = 1)" in md and "Against the best baseline" in md
    assert "| telea |" in md and "| tracked_plate |" in md
    assert "Engine.inpaint" in md and "margin=0.75" in md
    assert (out / "examples_native_objects.png").is_file() and (out / "examples_32_box.png").is_file()


def test_native_model_row_is_what_the_engine_gives(
    data: Path, tiny_weights: dict[str, Path], tmp_path: Path
) -> None:
    # the native row is Engine.inpaint's output on the holed frames, scored against the frames
    from combcn.engine import Engine
    from combcn.eval.evaluate import engine_method, score

    plan = clips.plan_windows([data / "beta"], window=4, per_clip=1)
    (native,) = list(clips.iter_windows(plan, window=4, resolutions=["native"], families=["strokes"]))
    engine = Engine(tiny_weights["combined"], "cpu")
    frames = native.truth * (1 - native.hole)
    (row,) = engine_method(engine, "combcn")(frames, native.hole).values()
    direct = engine.inpaint(
        frames[0].permute(1, 2, 3, 0).contiguous().numpy(), native.hole[0, 0].numpy(), shaper="none"
    )
    assert torch.equal(row[0], torch.from_numpy(direct).permute(3, 0, 1, 2)[None].clamp(0, 1))
    known = (native.hole == 0).expand_as(frames)
    assert torch.equal(row[0][known], native.truth[known])  # outside the hole: the plate, bit for bit
    assert np.isfinite(score(row[0], native.truth, native.hole)["hole_mae"])


def test_engine_options_are_parsed_and_checked(
    data: Path, tiny_weights: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from combcn.cli.eval import parse_engine_options, split_engine_options

    options = parse_engine_options(
        ["propagate=false", "margin=0.75", "overlap=2", "shaper=srgb", "context=none"]
    )
    assert options == {"propagate": False, "margin": 0.75, "overlap": 2, "shaper": "srgb", "context": None}
    ctor, inpaint = split_engine_options({"track": False, "margin": 0.5})
    assert ctor == {"track": False} and inpaint == {"margin": 0.5}
    argv = ["eval", "alpha", "--data", str(data), "--weights", str(tiny_weights["combined"]), "-W", "4"]
    argv += ["-R", "native", "--engine-option", "nonsense=1", "-o", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown option(s): nonsense" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    assert main([*argv[:-4], "--engine-option", "margin", "-o", str(tmp_path / "o")]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_quick_bounds_the_run() -> None:
    import argparse

    from combcn.cli.eval import _settings

    args = argparse.Namespace(
        quick=True, window=32, windows_per_clip=4, max_windows=0, size=None, resolution="128"
    )
    _settings(args)
    assert (args.window, args.windows_per_clip, args.max_windows) == (16, 1, 6)
    args = argparse.Namespace(
        quick=True, window=32, windows_per_clip=4, max_windows=2, size=64, resolution="128"
    )
    _settings(args)
    assert args.max_windows == 2 and args.resolution == "64"  # an explicit bound wins; -S N is -R N
