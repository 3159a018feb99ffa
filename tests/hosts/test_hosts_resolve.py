"""The Resolve script (plugin/resolve): type-checked against fusionscript-stubs, run against a FAKE Resolve.

DaVinci Resolve cannot run here. ``mypy --strict`` checks plugin/resolve against the published
``fusionscript-stubs``; behaviour is tested with the minimal fake Resolve object graph of
tests/hosts/fakes.py (project, timeline, tracks, media pool, folders, ImportMedia, AppendToTimeline,
clip properties, Fusion's UIManager), each behaviour citing its public source there (Blackmagic's
scripting README, AYON's Resolve integration, published measurements), and a fake ``combcn`` program
that speaks the engine's JSON progress protocol and writes the frames.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from fakes import (
    PLUGIN,
    REPO,
    FakeFolder,
    FakeMediaPool,
    FakeMediaPoolItem,
    FakeResolve,
    FakeTimeline,
    FakeTimelineItem,
    FakeUI,
    check_frames_env,
    fake_bmd,
    fake_runs,
    frame_file,
    gone_soon,
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
    for name, value in check_frames_env().items():  # refuse missing plate/matte frames as the engine does
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no stray user options
    monkeypatch.delenv("COMBCN_RESOLVE_CONFIG", raising=False)
    import combcn_resolve

    yield combcn_resolve
    for name in ("combcn_resolve", "combcn_host"):
        sys.modules.pop(name, None)


def _sequence(path: Path, frames: range) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        Path(frame_file(str(path), frame)).write_text(f"{path.name} {frame}\n")


def _project(
    tmp_path: Path, *, matte: str = "pool", tracks: int = 1, left_offset: int = 2, duration: int = 3
) -> SimpleNamespace:
    """A project: plate.[1001-1010].exr in Pool/Plates, on track 1 at record frame 86400 (the playhead);
    its matte either in Pool/Mattes by name (``pool``) or on track 2 (``track``) or nowhere (``none``)."""
    _sequence(tmp_path / "plates" / "plate.%04d.exr", range(1001, 1011))
    _sequence(tmp_path / "plates" / "plate_matte.%04d.exr", range(1001, 1011))
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
    if matte == "track":  # lined up: at record frame 86400 both show file frame 1001 + left_offset
        timeline.add(FakeTimelineItem(roto, 2, 86400 - left_offset, 10))
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
        assert (placed.clip, placed.start, placed.duration, placed.source) == (outcome.imported, 86400, 3, 0)

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
        assert (placed.clip, placed.start, placed.duration, placed.source) == (outcome.imported, 86400, 3, 2)

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
        p.item.clip = p.plates.clips[0]
        p.timeline.playhead = 86403  # just past the 3-frame item: nothing under the playhead
        with pytest.raises(adapter.combcn_host.HostError, match="playhead"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert fake_runs(tmp_path / "runs.jsonl") == []


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

    def test_connect_order(self, adapter: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
        app = object()
        fake_module = ModuleType("DaVinciResolveScript")
        fake_module.scriptapp = lambda name: app if name == "Resolve" else None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "DaVinciResolveScript", fake_module)
        assert adapter.connect({}) is app
        bmd = SimpleNamespace(scriptapp=lambda name: "from bmd")
        assert adapter.connect({"bmd": bmd}) == "from bmd"
        fusion_app = SimpleNamespace(GetResolve=lambda: "from app")  # what free-edition scripts are given
        assert adapter.connect({"app": fusion_app, "resolve": "from resolve", "bmd": bmd}) == "from app"
        assert adapter.connect({"app": SimpleNamespace(), "resolve": "from resolve"}) == "from resolve"
        assert adapter.connect({"fusion": SimpleNamespace(GetResolve=lambda: "from fusion")}) == "from fusion"
        fake_module.scriptapp = lambda name: None  # type: ignore[attr-defined]
        with pytest.raises(adapter.combcn_host.HostError, match="not running"):
            adapter.connect({})


def _lua_payload(lua: str) -> str:
    """The Python the Lua launcher hands to ``Execute("!Py3: ...")``."""
    body = lua.split("[==[!Py3: ", 1)[1].split("]==]", 1)[0]
    return body


def test_installed_lua_launcher_runs_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """install-resolve.sh's Lua launcher (listed by free 21.1, which lists no Python) with the engine it
    recorded (COMBCN_EXECUTABLE unset, nothing on PATH): its Python part run as Fusion's Execute runs it,
    with ``app`` predefined. The Lua itself is not run here (no Lua on this machine); its gate is checked
    as text."""
    fake = write_fake_combcn(tmp_path)
    scripts = tmp_path / "Scripts" / "Utility"
    scripts.mkdir(parents=True)
    old = scripts / "CombCN Inpaint.py"  # what the previous installer wrote
    old.write_text("# CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh,\n")
    subprocess.run(
        [str(REPO / "install" / "install-resolve.sh"), "--prefix", str(scripts), "--executable", str(fake)],
        env={**os.environ, "HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in scripts.iterdir()) == ["CombCN Inpaint.lua"]  # the .py is replaced
    lua = (scripts / "CombCN Inpaint.lua").read_text()
    assert (
        'not string.find(product, "Studio", 1, true) and (major > 21 or (major == 21 and minor >= 1))' in lua
    )
    assert "runs no Python scripts" in lua and "runner:Execute(code)" in lua
    # No Python 3 (Execute runs nothing): the launcher says so, as its Python part never made the marker.
    assert "local ran = io.open(marker" in lua and 'show("CombCN: error: Resolve started no Python 3' in lua
    for name in ("combcn_resolve", "combcn_host"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delenv("COMBCN_EXECUTABLE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name, value in check_frames_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "path", list(sys.path))
    p = _project(tmp_path)
    marker = tmp_path / "lua_marker"
    payload = _lua_payload(lua).replace("@MARKER@", str(marker))  # as the Lua's string.gsub does
    script_globals = {"app": SimpleNamespace(GetResolve=lambda: p.resolve)}
    exec(compile(payload, "CombCN Inpaint.lua", "exec"), script_globals)
    assert marker.is_file()  # what tells the Lua that Python 3 ran
    out = capsys.readouterr().out
    assert "CombCN: frame 1005 (3/3, 100%)" in out and "CombCN: done: plate_combcn.[1003-1005].exr" in out
    assert len(p.timeline.tracks) == 2
    for name in ("combcn_resolve", "combcn_host"):
        sys.modules.pop(name, None)


class TestWhichClip:
    """The plate is found by walking the tracks at the playhead, not from GetCurrentVideoItem."""

    def test_matte_above_is_not_the_plate_and_a_rerun_skips_the_result(
        self, adapter: ModuleType, tmp_path: Path
    ) -> None:
        p = _project(tmp_path, matte="track", tracks=2)
        assert p.timeline.GetCurrentVideoItem().clip.GetName().startswith("plate_matte")  # the top-most item
        first = adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert first.track == 3  # the result is now the top-most item under the playhead
        assert p.timeline.GetCurrentVideoItem().clip is first.imported
        adapter.inpaint_current_clip(p.resolve, adapter.Options())
        runs = fake_runs(tmp_path / "runs.jsonl")
        plate = str(tmp_path / "plates" / "plate.%04d.exr")
        assert [run["argv"][1] for run in runs] == [plate, plate]
        assert [run["argv"][run["argv"].index("--matte") + 1] for run in runs] == [
            str(tmp_path / "plates" / "plate_matte.%04d.exr")
        ] * 2

    def test_two_plates_are_ambiguous_until_plate_track_says(
        self, adapter: ModuleType, tmp_path: Path
    ) -> None:
        p = _project(tmp_path, matte="pool", tracks=3)
        _sequence(tmp_path / "other" / "bg.%04d.exr", range(1, 50))
        _sequence(tmp_path / "other" / "bg_matte.%04d.exr", range(1, 50))
        bg = FakeMediaPoolItem("bg.[0001-0049].exr", str(tmp_path / "other" / "bg.[0001-0049].exr"))
        bg_matte = FakeMediaPoolItem("bg_matte.[1-49].exr", str(tmp_path / "other" / "bg_matte.[1-49].exr"))
        p.root.clips += [bg, bg_matte]
        p.timeline.add(FakeTimelineItem(bg, 3, 86390, 20, 5))
        with pytest.raises(adapter.combcn_host.HostError) as info:
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        text = str(info.value)
        assert "2 plates under the playhead" in text and "on V1" in text and "on V3" in text
        assert "plate_track" in text and fake_runs(tmp_path / "runs.jsonl") == []
        adapter.inpaint_current_clip(p.resolve, adapter.Options(plate_track=3, place_on_track=False))
        (run,) = fake_runs(tmp_path / "runs.jsonl")
        assert run["argv"][1] == str(tmp_path / "other" / "bg.%04d.exr")
        assert run["argv"][run["argv"].index("--frames") + 1] == "6-25"  # file 1 + source start 5, 20 frames

    def test_no_track_index_call_needed(
        self, adapter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """GetTrackTypeAndIndex is missing from older READMEs: the walk knows each item's track."""

        def missing(self: FakeTimelineItem) -> tuple[str, int]:
            raise AttributeError("GetTrackTypeAndIndex")

        monkeypatch.setattr(FakeTimelineItem, "GetTrackTypeAndIndex", missing)
        p = _project(tmp_path, matte="track", tracks=2)
        assert adapter.inpaint_current_clip(p.resolve, adapter.Options()).track == 3


class TestPlacement:
    def test_published_append_convention(self, adapter: ModuleType, tmp_path: Path) -> None:
        """AppendToTimeline: startFrame/endFrame in the clip's own (file) frame numbers, end exclusive."""
        p = _project(tmp_path, left_offset=2, duration=3)  # shows files 1003-1005
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options(whole_clip=True))
        (info,) = p.pool.appends
        assert {k: v for k, v in info.items() if k != "mediaPoolItem"} == {
            "startFrame": 1003,  # file frame numbers of the result sequence (imported 1001-1010)
            "endFrame": 1006,  # exclusive: 3 frames
            "mediaType": 1,
            "trackIndex": 2,
            "recordFrame": 86400,
        }
        (placed,) = p.timeline.tracks[2]
        assert (placed.clip, placed.start, placed.GetEnd(), placed.source) == (
            outcome.imported,
            86400,
            86403,
            2,
        )

    def test_placed_result_lines_up_with_the_plate(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path, left_offset=4, duration=5)
        adapter.inpaint_current_clip(p.resolve, adapter.Options())
        (placed,) = p.timeline.tracks[2]
        plate = p.item
        assert (placed.GetStart(), placed.GetEnd()) == (plate.GetStart(), plate.GetEnd())  # not a frame short
        first, _ = placed.clip.frames()
        assert first + placed.GetSourceStartFrame() == 1001 + plate.GetSourceStartFrame()  # the same file


class TestFrames:
    def test_retimed_item_is_refused(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path, duration=3)
        p.item.speed = 2.0
        with pytest.raises(adapter.combcn_host.HostError, match=r"retimed \(6 source frames over 3 timeline"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert fake_runs(tmp_path / "runs.jsonl") == []

    def test_clip_rate_other_than_the_timeline_is_refused(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path)
        p.item.clip.fps = "25"
        with pytest.raises(adapter.combcn_host.HostError, match="25 fps on a 24 fps timeline"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())

    @pytest.mark.parametrize(
        ("timecode", "fps", "frames"),
        [("01:00:00:00", 24.0, 86400), ("00:00:01:05", 25.0, 30), ("00:01:00;02", 29.97, 1800),
         ("00:10:00;00", 29.97, 17982), ("01:00:00;00", 59.94, 215784)],
    )  # fmt: skip
    def test_timecode_frames(self, adapter: ModuleType, timecode: str, fps: float, frames: int) -> None:
        assert adapter.timecode_frames(timecode, fps) == frames


def test_xml_imported_item_without_source_frames_is_one_line(adapter: ModuleType, tmp_path: Path) -> None:
    p = _project(tmp_path)
    p.item.source, p.item.speed = 0, 0.0  # GetSourceStartFrame/EndFrame read 0/0
    with pytest.raises(adapter.combcn_host.HostError, match="no source frames"):
        adapter.inpaint_current_clip(p.resolve, adapter.Options())


def test_missing_api_call_is_one_line(
    adapter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older Resolve without a call the script makes: one line, no traceback."""
    monkeypatch.delattr(FakeTimelineItem, "GetSourceStartFrame")
    p = _project(tmp_path)
    assert adapter.launch({"resolve": p.resolve}) == 1
    out = capsys.readouterr().out
    assert "lacks a call CombCN uses" in out and "GetSourceStartFrame" in out and "Traceback" not in out


def _lined_up_result(p: SimpleNamespace) -> None:
    """The placed result shows, at every record frame, the file frame the plate shows there (both read
    as the clip's Start + the item's left offset)."""
    plate = p.item
    (placed,) = p.timeline.tracks[2]
    assert (placed.GetStart(), placed.GetEnd()) == (plate.GetStart(), plate.GetEnd())
    start = int(placed.clip.GetClipProperty("Start"))
    assert start + placed.GetLeftOffset() == int(plate.clip.GetClipProperty("Start")) + plate.GetLeftOffset()


class TestNumbering:
    """One convention for reading and placing: the clip's Start + the item's GetLeftOffset()."""

    @pytest.mark.parametrize("source_origin", ["file head", "clip Start"])
    def test_frames_do_not_depend_on_what_source_start_counts_from(
        self, adapter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source_origin: str
    ) -> None:
        """The README does not say where GetSourceStartFrame counts from (measured: the file's head);
        only its span (the retime witness) is used, so either origin gives the same frames."""
        if source_origin == "clip Start":
            monkeypatch.setattr(FakeTimelineItem, "GetSourceStartFrame", lambda self: 1001 + self.source)
            monkeypatch.setattr(
                FakeTimelineItem, "GetSourceEndFrame", lambda self: 1001 + self.source + self.duration
            )
        p = _project(tmp_path, left_offset=4, duration=5)
        adapter.inpaint_current_clip(p.resolve, adapter.Options())
        argv = fake_runs(tmp_path / "runs.jsonl")[0]["argv"]
        assert argv[argv.index("--frames") + 1] == "1005-1009"  # Start 1001 + left offset 4, 5 frames
        _lined_up_result(p)

    def test_whole_clip_placed_from_its_start(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path, left_offset=3, duration=4)
        adapter.inpaint_current_clip(p.resolve, adapter.Options(whole_clip=True))
        (info,) = p.pool.appends
        assert (info["startFrame"], info["endFrame"]) == (1004, 1008)  # result clip 1001-1010, Start 1001
        _lined_up_result(p)

    def test_a_resolve_counting_differently_is_caught_and_its_clip_taken_off(
        self, adapter: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        p = _project(tmp_path)
        p.pool.append_mode = "inclusive"  # endFrame read as the last frame: one frame too many
        assert adapter.launch({"resolve": p.resolve}) == 1
        out = capsys.readouterr().out
        (line,) = [text for text in out.splitlines() if text.startswith("CombCN: error:")]
        assert "placed 4 frame(s)" in line and "where 3 were rendered" in line
        assert "taken off the timeline" in line and "by hand" in line
        assert p.timeline.tracks[2] == []  # no wrong clip left behind
        assert len(p.plates.clips) == 2  # the imported result stays in the media pool

    def test_an_item_without_position_is_not_success(
        self, adapter: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        p = _project(tmp_path)
        p.pool.append_mode = "hollow"  # AppendToTimeline answers, but every getter gives None
        assert adapter.launch({"resolve": p.resolve}) == 1
        out = capsys.readouterr().out
        assert "placed nothing usable on video track 2" in out and "CombCN: done" not in out

    def test_placed_elsewhere_is_caught(
        self, adapter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        p = _project(tmp_path)
        append = p.pool.AppendToTimeline

        def late(infos: list[dict[str, Any]]) -> list[FakeTimelineItem]:
            return append([{**info, "recordFrame": info["recordFrame"] + 1} for info in infos])

        monkeypatch.setattr(p.pool, "AppendToTimeline", late)
        with pytest.raises(adapter.combcn_host.HostError, match="at record frame 86401, not 86400"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert p.timeline.tracks[2] == []


class TestMatteTiming:
    """The matte is mapped through its own timeline item to the plate's frames."""

    def _slipped(self, tmp_path: Path, record: int, left: int) -> SimpleNamespace:
        p = _project(tmp_path, matte="none", tracks=2)
        _sequence(tmp_path / "roto" / "roto.%04d.exr", range(1, 21))  # numbered from 1
        roto = FakeMediaPoolItem("roto.[0001-0020].exr", str(tmp_path / "roto" / "roto.[0001-0020].exr"))
        p.root.clips.append(roto)
        p.roto = p.timeline.add(FakeTimelineItem(roto, 2, record, 10, left))
        return p

    def test_matte_numbered_otherwise_and_slipped_is_linked(
        self, adapter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # plate: file 1003 at record 86400; matte: its item starts at 86398 on its file 4 (left offset
        # 3), so it shows file 6 at 86400
        p = self._slipped(tmp_path, 86398, 3)
        seen: dict[str, str] = {}
        real_start = adapter.combcn_host.EngineProcess.start

        def start(proc: Any) -> None:  # the links exist while the engine runs
            folder = Path(proc.request.matte).parent
            seen.update({path.name: path.read_text() for path in folder.iterdir()})
            real_start(proc)

        monkeypatch.setattr(adapter.combcn_host.EngineProcess, "start", start)
        adapter.inpaint_current_clip(p.resolve, adapter.Options())
        (run,) = fake_runs(tmp_path / "runs.jsonl")
        links = tmp_path / "plates" / "combcn" / ".combcn-upstream" / "plate"
        assert run["argv"][run["argv"].index("--matte") + 1] == str(links / "matte.%04d.exr")
        assert seen["matte.1003.exr"] == "roto.%04d.exr 6\n"  # what the matte shows over plate frame 1003
        assert seen["matte.1001.exr"] == "roto.%04d.exr 4\n" and len(seen) == 10  # every plate frame
        assert not links.parent.exists()  # removed after the run

    def test_lined_up_matte_is_given_as_it_is(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = self._slipped(tmp_path, 86398, 0)  # file 3 at 86400, over plate frame 1003: a shift of 1000
        adapter.inpaint_current_clip(p.resolve, adapter.Options(place_on_track=False))
        argv = fake_runs(tmp_path / "runs.jsonl")[0]["argv"]
        assert ".combcn-upstream" in argv[argv.index("--matte") + 1]  # other numbers: still linked
        p2 = _project(tmp_path / "same", matte="track", tracks=2)  # same numbers, lined up: as it is
        adapter.inpaint_current_clip(p2.resolve, adapter.Options(place_on_track=False))
        argv = fake_runs(tmp_path / "runs.jsonl")[1]["argv"]
        assert argv[argv.index("--matte") + 1] == str(tmp_path / "same" / "plates" / "plate_matte.%04d.exr")

    def test_pool_matte_numbered_otherwise_is_one_line(self, adapter: ModuleType, tmp_path: Path) -> None:
        """A matte found by name only (not on the timeline) has no timing to map it by: numbered 1-20 for a
        plate 1001-1010, it is refused before the engine runs, saying how to line it up."""
        p = _project(tmp_path, matte="none")
        _sequence(tmp_path / "plates" / "plate_matte.%04d.exr", range(1, 21))
        p.root.clips.append(
            FakeMediaPoolItem(
                "plate_matte.[0001-0020].exr", str(tmp_path / "plates" / "plate_matte.[0001-0020].exr")
            )
        )
        with pytest.raises(
            adapter.combcn_host.HostError, match=r"holds frames 1-20, not the plate's 1003-1005"
        ):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert fake_runs(tmp_path / "runs.jsonl") == []

    def test_retimed_matte_is_refused(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = self._slipped(tmp_path, 86398, 3)
        p.roto.speed = 2.0
        with pytest.raises(adapter.combcn_host.HostError, match=r"roto\.\[0001-0020\]\.exr on V2 is retimed"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert fake_runs(tmp_path / "runs.jsonl") == []


class TestColour:
    def test_plate_colour_attributes_copied_to_the_result(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path)
        p.item.clip.props.update({"Input Color Space": "ACEScg", "IDT": "ACEScg - CSC"})
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert outcome.imported.GetClipProperty("Input Color Space") == "ACEScg"
        assert outcome.imported.GetClipProperty("IDT") == "ACEScg - CSC"

    def test_a_refused_attribute_is_one_line(
        self,
        adapter: ModuleType,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        p = _project(tmp_path)
        p.item.clip.props["IDT"] = "ACEScg - CSC"
        real_import = p.pool.ImportMedia

        def import_read_only(items: list[Any]) -> list[FakeMediaPoolItem]:
            clips = real_import(items)
            for clip in clips:
                clip.read_only.add("IDT")
            return clips

        monkeypatch.setattr(p.pool, "ImportMedia", import_read_only)
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert outcome.track == 2  # still placed
        assert "Resolve kept its own IDT = ACEScg - CSC on plate_combcn" in capsys.readouterr().out


class TestProgress:
    def _globals(self, p: SimpleNamespace, ui: FakeUI) -> dict[str, Any]:
        return {"resolve": p.resolve, "fusion": SimpleNamespace(UIManager=ui), "bmd": fake_bmd(ui)}

    def test_window_shows_progress_and_the_console_a_line_per_step(
        self, adapter: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        ui = FakeUI()
        p = _project(tmp_path, left_offset=0, duration=10)
        assert adapter.launch(self._globals(p, ui)) == 0
        assert ui.windows == ["CombCNProgress"]
        assert "frame 1010: 10 of 10 (100%)" in ui.texts
        assert "CombCN: frame 1010 (10/10, 100%)" in capsys.readouterr().out

    def test_console_lines_every_tenth(self, adapter: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
        console = adapter.Console()
        for done in range(1, 101):
            console.line(adapter.combcn_host.Progress(1000 + done, done, 100))
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 11 and lines[-1] == "CombCN: frame 1100 (100/100, 100%)"

    def test_cancel_in_the_window_stops_the_engine(
        self,
        adapter: ModuleType,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("FAKE_COMBCN_DELAY", "60")  # frame 1 at once, then a minute per frame
        monkeypatch.setenv("FAKE_COMBCN_CHILD", "1")
        ui = FakeUI()
        ui.press = lambda text: (
            "Cancel" if text.startswith("frame ") else "OK" if text.startswith("CombCN") else None
        )
        p = _project(tmp_path)
        started = time.monotonic()
        assert adapter.launch(self._globals(p, ui)) == 1
        assert time.monotonic() - started < 20
        (run,) = fake_runs(tmp_path / "runs.jsonl")
        assert gone_soon(run["pid"]) and gone_soon(run["child"])  # the engine's whole process group
        out = capsys.readouterr().out
        assert "CombCN: error: cancelled after 1 frame(s)" in out
        assert ui.windows == ["CombCNProgress", "CombCNMessage"]  # the error shown where one looks
        assert p.pool.imports == [] and adapter._running == set()

    def test_engine_ended_when_the_script_stops(
        self, adapter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FAKE_COMBCN_DELAY", "60")
        pids: list[int] = []

        def interrupted(self: Any, proc: Any) -> None:
            pids.append(proc.pid)
            raise KeyboardInterrupt  # the script stopped while the engine runs

        monkeypatch.setattr(adapter.Console, "follow", interrupted)
        p = _project(tmp_path)
        with pytest.raises(KeyboardInterrupt):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert pids and gone_soon(pids[0]) and adapter._running == set()

    def test_engines_still_running_are_stopped_at_exit(
        self, adapter: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FAKE_COMBCN_DELAY", "60")
        proc = adapter.combcn_host.EngineProcess(
            adapter.combcn_host.InpaintRequest("p.%04d.exr", str(tmp_path / "o.%04d.exr"), 1, 3)
        )
        proc.start()
        adapter._running.add(proc)
        adapter.stop_running()  # registered with atexit when the module is imported
        assert gone_soon(proc.pid) and adapter._running == set()


class TestReference:
    """A ``<plate>_reference`` media-pool clip: frames the artist cleaned, given as ``--reference N=file``
    at the frame each file's number says (the plate's file numbering)."""

    def _reference(self, p: SimpleNamespace, tmp_path: Path, name: str, frames: range | None = None) -> Any:
        folder = tmp_path / "paint"
        folder.mkdir(exist_ok=True)
        if frames is None:  # one file, its frame number in its name
            (folder / name).write_text(f"painted {name}\n")
        else:
            _sequence(folder / name.replace("####", "%04d"), frames)
            name = name.replace("####", f"[{frames[0]:04d}-{frames[-1]:04d}]")
        clip = FakeMediaPoolItem(name, str(folder / name))
        p.root.subfolders.append(FakeFolder("Paint", [clip]))  # any folder of the media pool
        return clip

    def test_one_cleaned_frame(
        self, adapter: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        p = _project(tmp_path)
        self._reference(p, tmp_path, "plate_reference.1008.exr")  # beyond the 3 frames written: carried
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options())
        (run,) = fake_runs(tmp_path / "runs.jsonl")
        argv = run["argv"]
        assert (
            argv[argv.index("--reference") + 1] == f"1008={tmp_path / 'paint' / 'plate_reference.1008.exr'}"
        )
        assert argv.count("--reference") == 1 and argv[argv.index("--frames") + 1] == "1003-1005"
        assert run["read"][-1] >= 1008  # the fake engine reads from the frames written to the reference
        assert outcome.request.references == ((1008, str(tmp_path / "paint" / "plate_reference.1008.exr")),)
        assert "reference plate_reference.1008.exr at frame(s) 1008" in capsys.readouterr().out

    def test_a_sequence_of_cleaned_frames(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path)
        self._reference(p, tmp_path, "plate_reference.####.exr", range(1002, 1004))
        adapter.inpaint_current_clip(p.resolve, adapter.Options())
        argv = fake_runs(tmp_path / "runs.jsonl")[0]["argv"]
        given = [argv[i + 1] for i, a in enumerate(argv) if a == "--reference"]
        pattern = str(tmp_path / "paint" / "plate_reference.%04d.exr")
        assert given == [f"1002={pattern % 1002}", f"1003={pattern % 1003}"]

    def test_none_passes_no_reference(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path)
        self._reference(p, tmp_path, "other_reference.1004.exr")  # another plate's
        adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert "--reference" not in fake_runs(tmp_path / "runs.jsonl")[0]["argv"]

    @pytest.mark.parametrize(
        ("name", "says"),
        [
            ("plate_reference.0012.exr", r"numbered 12, but the plate's files are 1001-1010"),
            ("plate_reference.exr", "has no frame number in its file name"),
            ("plate_reference.1004.png", "is not EXR or DPX"),
        ],
    )
    def test_bad_reference_is_one_line_and_nothing_runs(
        self, adapter: ModuleType, tmp_path: Path, name: str, says: str
    ) -> None:
        p = _project(tmp_path)
        self._reference(p, tmp_path, name)
        with pytest.raises(adapter.combcn_host.HostError, match=says):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert fake_runs(tmp_path / "runs.jsonl") == []

    def test_on_the_timeline_it_is_neither_plate_nor_matte(self, adapter: ModuleType, tmp_path: Path) -> None:
        p = _project(tmp_path, matte="none", tracks=2)
        clip = self._reference(p, tmp_path, "plate_reference.####.exr", range(1003, 1004))
        p.timeline.add(FakeTimelineItem(clip, 2, 86400, 1))  # right above the plate, under the playhead
        with pytest.raises(adapter.combcn_host.HostError, match="no matte for plate"):
            adapter.inpaint_current_clip(p.resolve, adapter.Options())
        p.root.subfolders[1].clips.append(
            FakeMediaPoolItem(
                "plate_matte.[1001-1010].exr", str(tmp_path / "plates" / "plate_matte.[1001-1010].exr")
            )
        )
        outcome = adapter.inpaint_current_clip(p.resolve, adapter.Options())
        assert outcome.request.references == ((1003, str(tmp_path / "paint" / "plate_reference.1003.exr")),)
