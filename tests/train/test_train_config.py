"""Tests of training configs that inherit: ``base: other.yaml`` and the shipped stage configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from combcn.cli import main
from combcn.errors import ConfigError
from combcn.train.config import load_config, parse_config, resolve_config

REPO = Path(__file__).resolve().parents[2]

BASE = """\
model: {width: 0.5, conv: masked, prefill: plate}
data: {sources: [a, b], window: 8, resolution: 64}
holes: {box: 0.5, strokes: 0.3, objects: 0.2}
train: {iterations: 40, lr: 0.001, seed: 0, out: runs/base}
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class TestBase:
    def test_smoke(self, tmp_path: Path) -> None:
        _write(tmp_path / "base.yaml", BASE)
        child = _write(tmp_path / "child.yaml", "base: base.yaml\ntrain: {seed: 3, out: runs/child}\n")
        cfg = load_config(child)
        assert cfg.train.seed == 3 and cfg.train.out == "runs/child"
        # everything the child does not state comes from the base, section by section
        assert cfg.train.iterations == 40 and cfg.train.lr == 0.001
        assert cfg.model.width == 0.5 and cfg.data.sources == ("a", "b") and cfg.data.window == 8

    def test_module(self, tmp_path: Path) -> None:
        """A chain of three files equals the same config written out flat."""
        _write(tmp_path / "base.yaml", BASE)
        _write(tmp_path / "mid.yaml", "base: base.yaml\nmodel: {seen: true}\ntrain: {lr: 0.0005, seed: 1}\n")
        top = _write(
            tmp_path / "top.yaml",
            "base: mid.yaml\nmodel: {keep_seen: true}\ndata: {sources: [c]}\ntrain: {seed: 2}\n",
        )
        flat = parse_config(
            {
                "model": {
                    "width": 0.5,
                    "conv": "masked",
                    "prefill": "plate",
                    "seen": True,
                    "keep_seen": True,
                },
                "data": {"sources": ["c"], "window": 8, "resolution": 64},
                "holes": {"box": 0.5, "strokes": 0.3, "objects": 0.2},
                "train": {"iterations": 40, "lr": 0.0005, "seed": 2, "out": "runs/base"},
            }
        )
        assert load_config(top) == flat
        assert "base" not in resolve_config(top)

    def test_base_relative_to_config_folder(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        _write(tmp_path / "configs" / "shared" / "base.yaml", BASE)
        child = _write(tmp_path / "configs" / "stage.yaml", "base: shared/base.yaml\ntrain: {seed: 5}\n")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        assert load_config(child).train.seed == 5
        assert load_config(Path("..") / "configs" / "stage.yaml").model.width == 0.5

    def test_toml_and_yaml_mix(self, tmp_path: Path) -> None:
        _write(tmp_path / "base.yaml", BASE)
        child = _write(tmp_path / "child.toml", 'base = "base.yaml"\n[train]\nseed = 7\n')
        cfg = load_config(child)
        assert cfg.train.seed == 7 and cfg.model.width == 0.5

    def test_exception_cycle(self, tmp_path: Path) -> None:
        a = _write(tmp_path / "a.yaml", "base: b.yaml\ntrain: {seed: 1}\n")
        _write(tmp_path / "b.yaml", "base: a.yaml\ntrain: {seed: 2}\n")
        with pytest.raises(ConfigError, match="loops") as info:
            load_config(a)
        message = str(info.value)
        assert "a.yaml -> b.yaml -> a.yaml" in message and "\n" not in message
        itself = _write(tmp_path / "self.yaml", "base: self.yaml\n")
        with pytest.raises(ConfigError, match="self.yaml -> self.yaml"):
            load_config(itself)

    def test_exception_missing_base(self, tmp_path: Path) -> None:
        child = _write(tmp_path / "child.yaml", "base: nowhere.yaml\n")
        with pytest.raises(ConfigError, match="nowhere.yaml not found") as info:
            load_config(child)
        assert str(info.value).startswith(str(child))
        with pytest.raises(ConfigError, match="base must be"):
            load_config(_write(tmp_path / "list.yaml", "base: [a.yaml]\n"))

    def test_exception_names_the_file_that_is_wrong(self, tmp_path: Path) -> None:
        bad_base = _write(tmp_path / "base.yaml", BASE.replace("seed: 0", "seedz: 0"))
        child = _write(tmp_path / "child.yaml", "base: base.yaml\ntrain: {seed: 1}\n")
        with pytest.raises(ConfigError, match="train.seedz") as info:
            load_config(child)
        assert str(info.value).startswith(str(bad_base))
        _write(tmp_path / "base.yaml", BASE)
        _write(tmp_path / "child.yaml", "base: base.yaml\ntrain: {lr: -1.0}\n")
        with pytest.raises(ConfigError, match="train.lr") as info:
            load_config(child)
        assert str(info.value).startswith(str(child))
        _write(tmp_path / "child.yaml", "base: base.yaml\ntrain: 3\n")
        with pytest.raises(ConfigError, match=r"\[train\] must be a table"):
            load_config(child)

    def test_cli_prints_one_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        a = _write(tmp_path / "a.yaml", "base: b.yaml\n")
        _write(tmp_path / "b.yaml", "base: a.yaml\n")
        assert main(["train", str(a)]) == ConfigError.exit_code
        err = capsys.readouterr().err.strip()
        assert "loops" in err and "Traceback" not in err and len(err.splitlines()) == 1


class TestShippedConfigs:
    def test_every_config_loads(self) -> None:
        paths = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs").glob("*.toml"))
        assert paths
        for path in paths:
            load_config(path)

    def test_stages_state_only_their_changes(self) -> None:
        """Each stage names its predecessor as base and restates none of the base's values."""
        stages = ["default.yaml"] + [f"default_stage{n}.yaml" for n in range(2, 6)]
        for before, after in zip(stages[:-1], stages[1:], strict=True):
            raw = resolve_config(REPO / "configs" / before)
            own = yaml.safe_load((REPO / "configs" / after).read_text())
            assert own.pop("base") == before
            for section, keys in own.items():
                for key, value in keys.items():
                    assert raw.get(section, {}).get(key) != value, f"{after} restates {section}.{key}"

    def test_last_stage_is_the_shipped_recipe(self) -> None:
        """The stage that made the shipped weights resolves to the config their provenance records."""
        prov = json.loads((REPO / "combcn" / "weights" / "PROVENANCE.json").read_text())
        shipped = load_config(REPO / "configs" / "default_stage4.yaml").to_dict()
        assert prov["exported_from"].startswith(shipped["train"]["out"] + "/")
        for section, recorded in prov["config"].items():
            for key, value in recorded.items():
                if (section, key) == ("model", "mean_rgb"):
                    continue  # measured from the training clips when the run starts
                assert shipped[section][key] == value, f"{section}.{key}"
