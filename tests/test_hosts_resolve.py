"""The Resolve script (plugin/resolve): type-checked against fusionscript-stubs, run against a FAKE Resolve.

DaVinci Resolve cannot run here. ``mypy --strict`` checks plugin/resolve against the published
``fusionscript-stubs``; behaviour is tested with the minimal fake Resolve object graph of
tests/hosts_helpers.py (project, timeline, tracks, media pool, folders, ImportMedia, AppendToTimeline)
and a fake ``combcn`` program that speaks the engine's JSON progress protocol and writes the frames.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hosts_helpers import (
    PLUGIN,
    REPO,
    FakeFolder,
    FakeMediaPool,
    FakeMediaPoolItem,
    FakeResolve,
    FakeTimeline,
    FakeTimelineItem,
    fake_runs,
    write_fake_combcn,
)

RESOLVE_DIR = PLUGIN / "resolve"


def test_mypy_strict_against_fusionscript_stubs(tmp_path: Path) -> None:
    """plugin/resolve passes ``mypy --strict`` with fusionscript-stubs (combcn_host found via MYPYPATH)."""
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\npython_version = 3.10\n")  # no ignore_missing_imports: stubs must resolve
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(config),
            str(RESOLVE_DIR / "combcn_resolve.py"),
        ],
        cwd=REPO,
        env={**os.environ, "MYPYPATH": str(PLUGIN / "common")},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(RESOLVE_DIR))
    for name in ("combcn_resolve", "combcn_host"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setenv("COMBCN_EXECUTABLE", str(write_fake_combcn(tmp_path)))
    monkeypatch.setenv("FAKE_COMBCN_LOG", str(tmp_path / "runs.jsonl"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no stray user options
    monkeypatch.delenv("COMBCN_RESOLVE_CONFIG", raising=False)
    import combcn_resolve

    yield combcn_resolve
    for name in ("combcn_resolve", "combcn_host"):
        sys.modules.pop(name, None)


def _project(
    tmp_path: Path, *, matte: str = "pool", tracks: int = 1, left_offset: int = 2, duration: int = 3
) -> SimpleNamespace:
    """A project: plate.[1001-1010].exr in Pool/Plates, on track 1 at record frame 86400; its matte
    either in Pool/Mattes by name (``pool``) or on track 2 (``track``) or nowhere (``none``)."""
    plate = FakeMediaPoolItem("plate.[1001-1010].exr", str(tmp_path / "plates" / "plate.[1001-1010].exr"))
    roto = FakeMediaPoolItem(
        "plate_matte.[1001-1010].exr", str(tmp_path / "plates" / "plate_matte.[1001-1010].exr")
    )
    other = FakeMediaPoolItem("shot.mov", str(tmp_path / "shot.mov"))
    root = FakeFolder("Master", [other])
    plates = FakeFolder("Plates", [plate])
    mattes = FakeFolder("Mattes", [roto] if matte == "pool" else [])
    root.subfolders = [plates, mattes]
    timeline = FakeTimeline(tracks)
    item = timeline.add(FakeTimelineItem(plate, 1, 86400, duration, left_offset))
    if matte == "track":
        timeline.add(FakeTimelineItem(roto, 2, 86390, 20))
    timeline.current = item
    pool = FakeMediaPool(root, timeline)
    return SimpleNamespace(
        resolve=FakeResolve(pool, timeline), pool=pool, timeline=timeline, item=item, plates=plates, root=root
    )


class TestPaths:
    def test_parse_sequence_path(self, adapter: ModuleType) -> None:
        seq = adapter.parse_sequence_path("/a/b/plate_v001.[0998-1100].exr")
        assert (seq.pattern, seq.first, seq.last, seq.extension) == (
            "/a/b/plate_v001.%04d.exr",
            998,
            1100,
            ".exr",
        )
        assert adapter.parse_sequence_path("/x/scan_[001-009].DPX").pattern == "/x/scan_%03d.DPX"
        with pytest.raises(adapter.combcn_host.HostError, match="not an image sequence"):
            adapter.parse_sequence_path("/x/shot.mov")

    @pytest.mark.parametrize(
        ("name", "stem"),
        [
            ("plate.[1001-1100].exr", "plate"),
            ("plate_matte_[1-9].dpx", "plate_matte"),
            ("roto.1001.exr", "roto"),
        ],
    )
    def test_clip_stem(self, adapter: ModuleType, name: str, stem: str) -> None:
        assert adapter.clip_stem(name) == stem


class TestRun:
    def test_matte_by_name_import_beside_source_and_place_above(
        self, adapter: ModuleType, tmp_path: Path
    ) -> None:
        p = _project(tmp_path, matte="pool")
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options(expand=2, device="cpu"))
        # (no --no-track: the weights' own camera track is kept by default)

        (run,) = fake_runs(tmp_path / "runs.jsonl")
        out = tmp_path / "plates" / "combcn" / "plate_combcn.%04d.exr"
        assert run["argv"] == [
            "inpaint",
            str(tmp_path / "plates" / "plate.%04d.exr"),
            "-o",
            str(out),
            "--frames",
            "1003-1005",
            "--matte",
            str(tmp_path / "plates" / "plate_matte.%04d.exr"),
            "--expand",
            "2",
            "--device",
            "cpu",
            "--overwrite",
            "--progress",
            "json",
        ]  # fmt: skip  (frames: the item's left offset 2 and duration 3 into 1001-1010)
        assert sorted(os.listdir(out.parent)) == [f"plate_combcn.{f}.exr" for f in (1003, 1004, 1005)]
        assert p.pool.imports == [("Plates", [{"FilePath": str(out), "StartIndex": 1003, "EndIndex": 1005}])]
        assert p.pool.current is p.root  # the artist's current folder is restored
        assert (
            outcome.imported in p.plates.clips
            and outcome.imported.GetName() == "plate_combcn.[1003-1005].exr"
        )
        assert outcome.track == 2 and len(p.timeline.tracks) == 2  # a new track above the plate
        (placed,) = p.timeline.tracks[2]
        assert (placed.clip, placed.start, placed.duration, placed.left_offset) == (
            outcome.imported,
            86400,
            3,
            0,
        )

    def test_matte_on_the_track_above_and_a_free_track(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path, matte="track", tracks=3)
        p.timeline.add(FakeTimelineItem(FakeMediaPoolItem("x", None), 3, 86350, 51))  # covers 86400: busy
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options(whole_clip=True, matte_channel="R"))
        argv = fake_runs(tmp_path / "runs.jsonl")[0]["argv"]
        assert argv[argv.index("--matte") + 1] == str(tmp_path / "plates" / "plate_matte.%04d.exr")
        assert (
            argv[argv.index("--frames") + 1] == "1001-1010" and argv[argv.index("--matte-channel") + 1] == "R"
        )
        assert outcome.track == 4
        (placed,) = p.timeline.tracks[4]  # whole clip rendered, but only the item's 3 frames placed, aligned
        assert (placed.clip, placed.start, placed.duration, placed.left_offset) == (
            outcome.imported,
            86400,
            3,
            2,
        )

    def test_no_placement_when_turned_off(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path)
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options(place_on_track=False, track=False))
        assert outcome.track is None and len(p.timeline.tracks) == 1
        assert "--no-track" in fake_runs(tmp_path / "runs.jsonl")[0]["argv"]  # the camera-track option

    def test_output_dir_option(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path)
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options(output_dir=str(tmp_path / "clean")))
        assert outcome.request.output == str(tmp_path / "clean" / "plate_combcn.%04d.exr")

    def test_missing_matte_says_the_convention(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path, matte="none")
        with pytest.raises(adapter.combcn_host.HostError, match=r"plate_matte\.\[first-last\]\.exr"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert fake_runs(tmp_path / "runs.jsonl") == []

    def test_not_a_sequence_or_no_clip(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path)
        p.item.clip = FakeMediaPoolItem("shot.mov", str(tmp_path / "shot.mov"))
        with pytest.raises(adapter.combcn_host.HostError, match="EXR or DPX"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        p.timeline.current = None
        with pytest.raises(adapter.combcn_host.HostError, match="playhead"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())


class TestLaunch:
    def test_options_file(self, adapter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        assert adapter.load_options() == adapter.Options()  # no file: defaults
        config = tmp_path / "config" / "combcn" / "resolve.json"
        config.parent.mkdir(parents=True)
        config.write_text(
            json.dumps({"invert": True, "feather": 2.0, "place_on_track": False, "track": False})
        )
        options = adapter.load_options()
        assert options == adapter.Options(invert=True, feather=2.0, place_on_track=False, track=False)
        assert adapter.Options().track is True
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"invret": True}))
        monkeypatch.setenv("COMBCN_RESOLVE_CONFIG", str(bad))
        with pytest.raises(adapter.combcn_host.HostError, match="unknown option.*invret"):
            adapter.load_options()

    def test_engine_failure_is_printed_not_raised(
        self,
        adapter: ModuleType,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("FAKE_COMBCN_FAIL", "plate.1003.exr: NaN in the plate")
        p = _project(tmp_path)
        assert adapter.launch({"resolve": p.resolve}) == 1
        out = capsys.readouterr().out
        assert "CombCN: error: plate.1003.exr: NaN in the plate" in out and "Traceback" not in out
        assert p.pool.imports == []

    def test_connect_through_davinci_resolve_script(
        self, adapter: ModuleType, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        app = object()
        fake_module = ModuleType("DaVinciResolveScript")
        fake_module.scriptapp = lambda name: app if name == "Resolve" else None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "DaVinciResolveScript", fake_module)
        assert adapter.connect({}) is app
        bmd = SimpleNamespace(scriptapp=lambda name: "from bmd")
        assert adapter.connect({"bmd": bmd}) == "from bmd"
        fake_module.scriptapp = lambda name: None  # type: ignore[attr-defined]
        with pytest.raises(adapter.combcn_host.HostError, match="not running"):
            adapter.connect({})


def test_installed_menu_script_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """install-resolve.sh's launcher, run as Resolve runs a menu script (``resolve`` predefined), with the
    engine path it recorded (COMBCN_EXECUTABLE unset, nothing on PATH)."""
    fake = write_fake_combcn(tmp_path)
    scripts = tmp_path / "Scripts" / "Utility"
    subprocess.run(
        [str(REPO / "install" / "install-resolve.sh"), "--prefix", str(scripts), "--executable", str(fake)],
        env={**os.environ, "HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    for name in ("combcn_resolve", "combcn_host"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delenv("COMBCN_EXECUTABLE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    p = _project(tmp_path)
    runpy.run_path(str(scripts / "CombCN Inpaint.py"), init_globals={"resolve": p.resolve})
    out = capsys.readouterr().out
    assert "CombCN: frame 1005 (3/3, 100%)" in out and "CombCN: done: plate_combcn.[1003-1005].exr" in out
    assert len(p.timeline.tracks) == 2
    for name in ("combcn_resolve", "combcn_host"):
        sys.modules.pop(name, None)
