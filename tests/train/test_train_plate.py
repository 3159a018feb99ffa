"""Training CombCN at plate resolution end to end (combcn/train/plate.py): collect what the engine feeds
it on real files, train a few iterations, export weights the engine loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_model, write_png

from combcn.model import load_model, read_weights, save_weights
from combcn.train import plate as train_plate


def _clip(folder: Path, seed: int, t: int = 14, h: int = 64, w: int = 96) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2, yy * 3, np.full((h, w), 120)], -1).astype(np.float32)
    for f in range(t):
        frame = base + rng.normal(0, 12, (h, w, 3)) + 3 * f
        write_png(folder / f"{f:05d}.png", np.clip(frame, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("plate")
    data = root / "clips"
    manifest = []
    for i, (name, licence) in enumerate(
        [
            ("street", "MIT (test)"),
            ("walls", "Apache-2.0 (test)"),
            ("bees", "Apache-2.0 (test)"),
            ("nc", "CC BY-NC 4.0"),
        ]
    ):
        _clip(data / name, i)
        manifest.append({"name": name, "licence": licence})
    (data / "manifest.json").write_text(json.dumps(manifest))
    weights = save_weights(tiny_model(window=12, resolution=32), root / "tiny.pt")
    common = ["--data", str(data), "--weights", str(weights), "--windows-per-clip", "2"]
    assert train_plate.main(["collect", *common, "--out", str(root / "samples"), "--acescct", "0.5"]) == 0
    assert train_plate.main(["collect", *common, "--out", str(root / "val"), "--val"]) == 0
    run = root / "run"
    args = ["train", "--samples", str(root / "samples"), "--val", str(root / "val"), "--out", str(run)]
    args += [
        "--weights",
        str(weights),
        "--iterations",
        "4",
        "--val-every",
        "2",
        "--tile",
        "32",
        "--batch",
        "2",
    ]
    assert train_plate.main(args) == 0
    out = root / "exported.pt"
    assert train_plate.main(["export", str(run / "last.pt"), "-o", str(out), "--weights", str(weights)]) == 0
    return {"root": root, "weights": weights, "run": run, "exported": out}


class TestCollect:
    def test_commercial_clips_only_and_validation_apart(self, workspace: dict) -> None:
        root = workspace["root"]
        assert sorted(p.stem for p in (root / "samples").glob("*.npz")) == ["street", "walls"]
        assert sorted(p.stem for p in (root / "val").glob("*.npz")) == ["bees"]

    def test_samples_are_the_engine_inputs_with_their_truth(self, workspace: dict) -> None:
        samples = train_plate.load_samples(workspace["root"] / "samples")
        assert samples
        for s in samples:
            assert s.hole.any()
            # outside the network's hole the rows are the plate itself, except where propagation
            # pasted what other frames show into the drawn hole (a moving one)
            same = np.abs(s.rows.astype(np.float32) - s.truth.astype(np.float32)).max(axis=2) < 2e-3
            assert same[~s.hole].mean() > 0.6
            assert s.coarse.shape == s.rows.shape == s.truth.shape

    def test_float_plates_through_the_default_shaper(self, workspace: dict) -> None:
        kinds = {s.kind.split()[1] for s in train_plate.load_samples(workspace["root"] / "samples")}
        assert kinds == {"srgb", "acescct"}

    def test_resumes_without_redoing_a_clip(self, workspace: dict) -> None:
        root = workspace["root"]
        before = (root / "samples" / "street.npz").stat().st_mtime_ns
        common = [
            "--data",
            str(root / "clips"),
            "--weights",
            str(workspace["weights"]),
            "--windows-per-clip",
            "2",
        ]
        assert train_plate.main(["collect", *common, "--out", str(root / "samples")]) == 0
        assert (root / "samples" / "street.npz").stat().st_mtime_ns == before


class TestTrainExport:
    def test_log_and_checkpoints(self, workspace: dict) -> None:
        run = workspace["run"]
        rows = (run / "log.csv").read_text().splitlines()
        assert (
            rows[0]
            == "iteration,loss,coarse_mae,plate_mae,coarse_detail,plate_detail,coarse_score,plate_score"
        )
        assert [r.split(",")[0] for r in rows[1:]] == ["0", "2", "4"]
        assert (run / "checkpoint.pt").is_file() and (run / "best.pt").is_file()

    def test_training_moved_the_network(self, workspace: dict) -> None:
        state = torch.load(workspace["run"] / "last.pt", weights_only=False)
        assert float(state["plate"]["net.l17.0.weight"].abs().sum()) > 0  # it starts at zero

    def test_exported_weights_load_with_the_plate_network(self, workspace: dict) -> None:
        model = load_model(workspace["exported"])
        assert model.config.plate and model.plate is not None
        state = torch.load(workspace["run"] / "last.pt", weights_only=False)
        got = model.plate.net.l17[0].weight
        assert torch.allclose(got, state["plate"]["net.l17.0.weight"].float(), atol=1e-3)
        base = read_weights(workspace["weights"])["state_dict"]
        assert torch.allclose(model.net2d.l5[0].weight, base["net2d.l5.0.weight"].float(), atol=1e-3)
        provenance = read_weights(workspace["exported"])["provenance"]["plate"]
        assert provenance["training_clips"] == ["street", "walls"]
        assert provenance["iterations"] == 4
        assert set(provenance["validation"]) >= {"plate_mae", "plate_detail", "coarse_mae"}

    def test_resume_continues(self, workspace: dict) -> None:
        run = workspace["run"]
        args = [
            "train",
            "--samples",
            str(workspace["root"] / "samples"),
            "--val",
            str(workspace["root"] / "val"),
        ]
        args += ["--out", str(run), "--weights", str(workspace["weights"]), "--iterations", "6"]
        args += ["--val-every", "2", "--tile", "32", "--batch", "2", "--resume"]
        assert train_plate.main(args) == 0
        rows = (run / "log.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["0", "2", "4", "6"]

    def test_exception_no_samples(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = ["train", "--samples", str(tmp_path), "--val", str(tmp_path), "--out", str(tmp_path / "r")]
        assert train_plate.main(args) == 2
        assert "no samples here" in capsys.readouterr().err
