"""The Nuke adapter (plugin/nuke): type-checked against types-nuke, exercised with a FAKE nuke module.

Nuke cannot run here. ``mypy --strict`` checks plugin/nuke against the published ``types-nuke`` stubs;
behaviour is tested with the minimal fake ``nuke`` module of tests/hosts/fakes.py (nodes, groups,
knobs, menus, execute, ProgressTask, a main-thread queue, Crop, formats and bounding boxes, evaluated file
knobs), each behaviour citing Foundry's reference in tests/hosts/fakes.py, and a fake ``combcn`` program
that speaks the engine's JSON progress protocol, writes one small file per frame and refuses what the
real engine refuses (missing frames, plate frames whose data windows differ). The real engine runs through the
shared adapter module in test_hosts_common.py.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fakes import (
    PLUGIN,
    REPO,
    alive,
    check_frames_env,
    fake_runs,
    frame_file,
    gone_soon,
    make_fake_nuke,
    query_pids,
    shipped_window,
    write_fake_combcn,
    write_stalled_engine_python,
)

NUKE_DIR = PLUGIN / "nuke"
WEIGHTS = str(REPO / "combcn" / "weights" / "combcn_default.pt")  # a real file: its window is asked for
COMMON_DIR = PLUGIN / "common"


def test_mypy_strict_against_types_nuke(tmp_path: Path) -> None:
    """plugin/nuke (and the shared combcn_host) pass ``mypy --strict`` with the types-nuke stubs."""
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\npython_version = 3.10\n"
    )  # no ignore_missing_imports: `import nuke` must resolve
    files = [str(NUKE_DIR / name) for name in ("combcn_nuke.py", "init.py", "menu.py")]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(config), *files],
        cwd=REPO,
        env={**os.environ, "MYPYPATH": str(COMMON_DIR)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def nuke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh fake nuke in sys.modules, plugin/nuke importable, a fake combcn as COMBCN_EXECUTABLE."""
    fake = make_fake_nuke(script_path=str(tmp_path / "shots" / "sh010.nk"))
    monkeypatch.setitem(sys.modules, "nuke", fake)
    monkeypatch.syspath_prepend(str(NUKE_DIR))
    for name in ("combcn_nuke", "combcn_host"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    log = tmp_path / "combcn-runs.jsonl"
    monkeypatch.setenv("COMBCN_EXECUTABLE", str(write_fake_combcn(tmp_path)))
    monkeypatch.setenv("FAKE_COMBCN_LOG", str(log))
    for name, value in check_frames_env().items():  # refuse missing plate/matte frames as the engine does
        monkeypatch.setenv(name, value)
    fake.runs_log = log  # type: ignore[attr-defined]
    yield fake
    for name in ("combcn_nuke", "combcn_host"):
        sys.modules.pop(name, None)


def _module(name: str) -> Any:
    return sys.modules[name] if name in sys.modules else __import__(name)


def _files(pattern: Path, frames: range, text: str = "") -> None:
    """Empty (or ``text``) files standing for an image sequence on disk."""
    pattern.parent.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        Path(frame_file(str(pattern), frame)).write_text(text or f"{pattern.name} {frame}\n")


def _plate_reads(nuke: ModuleType, folder: Path, last: int = 1003) -> tuple[Any, Any]:
    _files(folder / "plate.####.exr", range(1001, last + 1))
    _files(folder / "roto.%04d.exr", range(1001, last + 1))
    plate = nuke.nodes.Read(name="Plate", file=str(folder / "plate.####.exr"), first=1001, last=last)
    plate["colorspace"].setValue("ACES - ACEScg")
    matte = nuke.nodes.Read(name="Roto", file=str(folder / "roto.%04d.exr"), first=1001, last=last)
    return plate, matte


def _render_and_wait(combcn_nuke: Any, nuke: ModuleType, group: Any, timeout: float = 20.0) -> None:
    worker = combcn_nuke.render(group)
    assert worker is not None, nuke.messages
    worker.join(timeout)
    assert not worker.is_alive()
    nuke.run_main_thread()


class TestNodeCreation:
    def test_init_and_menu_add_the_node(self, nuke: ModuleType) -> None:
        runpy.run_path(str(NUKE_DIR / "init.py"))
        assert str(COMMON_DIR.resolve()) in sys.path  # init made the shared module importable
        runpy.run_path(str(NUKE_DIR / "menu.py"))
        command = nuke.menus["Nodes"].items["CombCN"].items["CombCN Inpaint"]
        exec(command, {"nuke": nuke})
        group = nuke.root().node("CombCNInpaint")
        assert isinstance(group, nuke.Group)

    def test_knobs_inputs_and_internals(self, nuke: ModuleType) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = combcn_nuke.create_node()
        knobs = group.knobs()
        expected = {
            "first": "Int_Knob",
            "last": "Int_Knob",
            "range_from_input": "PyScript_Knob",
            "matte_channel": "Enumeration_Knob",
            "invert": "Boolean_Knob",
            "expand": "Int_Knob",
            "feather": "Double_Knob",
            "shaper": "Enumeration_Knob",
            "device": "Enumeration_Knob",
            "weights": "File_Knob",
            "track": "Boolean_Knob",
            "output": "File_Knob",
            "render": "PyScript_Knob",
            "status": "Text_Knob",
        }
        assert {name: knobs[name].Class() for name in expected} == expected
        assert (group["first"].value(), group["last"].value()) == (1001, 1010)  # the script's range
        assert group["track"].value() is True  # the weights' own setting unless turned off
        assert knobs["matte_channel"].values() == ["alpha", "red", "green", "blue"]
        assert knobs["shaper"].values()[0] == "auto" and knobs["device"].values() == ["auto", "cpu", "cuda"]
        names = [n.name() for n in group.nodes()]
        assert names[:2] == ["Source", "Matte"]  # input 0 and 1, in creation order
        assert {"Result", "ShowResult", "Output"} <= set(names)
        switch = group.node("ShowResult")
        assert switch.input(0) is group.node("Source") and switch.input(1) is group.node("Result")
        assert switch["which"].value() == 0  # passes the plate through until a render exists
        assert group.node("Output").input(0) is switch

    def test_range_from_input_button(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = combcn_nuke.create_node()
        plate, _ = _plate_reads(nuke, tmp_path)
        group.setInput(0, plate)
        group["range_from_input"].execute()
        assert (group["first"].value(), group["last"].value()) == (1001, 1003)


class TestRender:
    def test_direct_reads_run_the_engine_and_read_back(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = combcn_nuke.create_node()
        plate, roto = _plate_reads(nuke, tmp_path)
        group.setInput(0, plate)
        group.setInput(1, roto)
        output = tmp_path / "clean" / "plate.####.exr"
        for name, value in [("first", 1001), ("last", 1003), ("matte_channel", "red"), ("invert", True),
                            ("expand", 3), ("feather", 1.5), ("shaper", "acescct"), ("device", "cpu"),
                            ("weights", WEIGHTS), ("track", False),
                            ("output", str(output))]:  # fmt: skip
            group[name].setValue(value)

        group["render"].execute()  # the button, as a click runs it
        worker = next(t for t in __import__("threading").enumerate() if t.name == "combcn CombCNInpaint")
        worker.join(20)
        nuke.run_main_thread()

        (run,) = fake_runs(nuke.runs_log)
        assert run["argv"] == [
            "inpaint", str(tmp_path / "plate.%04d.exr"), "-o", str(output), "--frames", "1001-1003",
            "--matte", str(tmp_path / "roto.%04d.exr"), "--matte-channel", "R", "--invert", "--expand", "3",
            "--feather", "1.5", "--shaper", "acescct", "--device", "cpu", "--weights", WEIGHTS,
            "--no-track", "--overwrite", "--progress", "json",
        ]  # fmt: skip
        assert sorted(os.listdir(output.parent)) == ["plate.1001.exr", "plate.1002.exr", "plate.1003.exr"]
        assert nuke.executed == []  # plain EXR Reads are used as they are, nothing pre-rendered
        read = group.node("Result")
        assert read["file"].value() == str(output)
        assert (read["first"].value(), read["last"].value()) == (1001, 1003)
        assert read["colorspace"].value() == "ACES - ACEScg"  # read back as the plate is read
        assert group.node("ShowResult")["which"].value() == 1
        assert "rendered 3 frame(s)" in group["status"].value()
        (task,) = nuke.tasks
        assert task.progress[-1] == 100 and task.progress == sorted(task.progress)
        assert "frame 1003 (3/3)" in task.messages
        assert nuke.messages == []

    def test_other_upstream_is_rendered_to_temporary_exrs(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = combcn_nuke.create_node()
        grade = nuke.nodes.Grade(name="Grade1")  # not a Read: must be rendered first
        roto = nuke.nodes.Read(
            name="RotoPNG", file=str(tmp_path / "roto.####.png")
        )  # a Read, but not EXR/DPX
        group.setInput(0, grade)
        group.setInput(1, roto)
        group["first"].setValue(1001)
        group["last"].setValue(1002)
        group["output"].setValue(str(tmp_path / "out" / "clean.####.exr"))
        _render_and_wait(combcn_nuke, nuke, group)

        # both rendered for the frames the engine reads: the whole short upstream range 1001-1010
        assert nuke.executed == [("CombCNUpstreamSource", 1001, 1010), ("CombCNUpstreamMatte", 1001, 1010)]
        assert nuke.executed_views == [["main"], ["main"]]
        (run,) = fake_runs(nuke.runs_log)
        temp = tmp_path / "out" / ".combcn-upstream" / "CombCNInpaint"
        argv = run["argv"]
        assert argv[1] == str(temp / "source.####.exr")
        assert argv[argv.index("--matte") + 1] == str(temp / "matte.####.exr")
        assert argv[argv.index("--matte-channel") + 1] == "A"
        assert not (tmp_path / "out" / ".combcn-upstream").exists()  # temporary frames removed afterwards
        names = [n.name() for n in group.nodes()]
        assert not any(name.startswith("CombCNUpstream") for name in names)  # the Writes are gone again
        assert group.node("Result")["raw"].value() is True
        assert sorted(os.listdir(tmp_path / "out")) == ["clean.1001.exr", "clean.1002.exr"]

    def test_cancelled_pre_render_leaves_nothing(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = combcn_nuke.create_node()
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))
        group["output"].setValue(str(tmp_path / "out" / "clean.####.exr"))
        nuke.cancel_execute_at = 1003
        assert combcn_nuke.render(group) is None
        assert "Cancelled" in nuke.messages[-1]
        assert not (tmp_path / "out" / ".combcn-upstream").exists()
        assert not any(n.name().startswith("CombCNUpstream") for n in group.nodes())
        assert fake_runs(nuke.runs_log) == [] and combcn_nuke._jobs == {}

    def test_default_output_beside_the_script_and_no_matte_input(
        self, nuke: ModuleType, tmp_path: Path
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = combcn_nuke.create_node()
        plate, _ = _plate_reads(nuke, tmp_path)
        group.setInput(0, plate)
        group["last"].setValue(1002)
        _render_and_wait(combcn_nuke, nuke, group)
        (run,) = fake_runs(nuke.runs_log)
        expected = tmp_path / "shots" / "combcn" / "CombCNInpaint" / "CombCNInpaint.####.exr"
        assert run["argv"][run["argv"].index("-o") + 1] == str(expected)
        assert "--matte" not in run["argv"] and "--matte-channel" not in run["argv"]  # the plate's alpha
        assert (expected.parent / "CombCNInpaint.1002.exr").is_file()

    def test_engine_error_is_a_message(
        self, nuke: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        monkeypatch.setenv("FAKE_COMBCN_FAIL", "plate.1001.exr: 4 channels expected, found 1")
        group = combcn_nuke.create_node()
        group.setInput(0, _plate_reads(nuke, tmp_path)[0])
        group["last"].setValue(1003)
        group["output"].setValue(str(tmp_path / "o.####.exr"))
        _render_and_wait(combcn_nuke, nuke, group)
        (text,) = nuke.messages
        assert "plate.1001.exr: 4 channels expected, found 1" in text and "Traceback" not in text
        assert group["status"].value().startswith("failed")
        assert group.node("ShowResult")["which"].value() == 0

    def test_user_mistakes_are_messages_and_start_nothing(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = combcn_nuke.create_node()
        assert combcn_nuke.render(group) is None
        assert "Source input" in nuke.messages[-1]
        group.setInput(0, _plate_reads(nuke, tmp_path)[0])
        group["output"].setValue(str(tmp_path / "o.####.png"))
        assert combcn_nuke.render(group) is None
        assert "EXR" in nuke.messages[-1]
        group["output"].setValue(str(tmp_path / "o.####.exr"))
        group["last"].setValue(900)
        assert combcn_nuke.render(group) is None
        assert "empty" in nuke.messages[-1]
        assert fake_runs(nuke.runs_log) == []

    def test_missing_engine_is_found_before_any_pre_render(
        self, nuke: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        monkeypatch.setenv("COMBCN_EXECUTABLE", str(tmp_path / "no-such-combcn"))
        group = combcn_nuke.create_node()
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))
        group["output"].setValue(str(tmp_path / "out" / "clean.####.exr"))
        assert combcn_nuke.render(group) is None
        assert "COMBCN_EXECUTABLE" in nuke.messages[-1] and "not an executable file" in nuke.messages[-1]
        assert nuke.executed == [] and not (tmp_path / "out").exists()

    def test_cancel_kills_the_engine(
        self, nuke: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        monkeypatch.setenv("FAKE_COMBCN_DELAY", "60")  # frame 1 at once, then a minute per frame
        monkeypatch.setenv("FAKE_COMBCN_CHILD", "1")
        group = combcn_nuke.create_node()
        group.setInput(0, _plate_reads(nuke, tmp_path, last=1005)[0])
        group["last"].setValue(1005)
        group["output"].setValue(str(tmp_path / "o" / "o.####.exr"))
        worker = combcn_nuke.render(group)
        assert worker is not None
        deadline = time.monotonic() + 20
        while not (nuke.tasks and 20 in nuke.tasks[0].progress) and time.monotonic() < deadline:
            time.sleep(0.05)  # wait for frame 1 of 5
        assert combcn_nuke.render(group) is None  # a second Render while one runs is refused
        assert "already rendering" in nuke.messages[-1]
        (run,) = fake_runs(nuke.runs_log)
        assert alive(run["pid"]) and alive(run["child"])

        started = time.monotonic()
        nuke.tasks[0].cancelled = True  # the progress panel's Cancel
        worker.join(15)
        assert not worker.is_alive() and time.monotonic() - started < 10
        nuke.run_main_thread()
        assert gone_soon(run["pid"]) and gone_soon(run["child"])  # the engine's whole process group
        assert group["status"].value().startswith("cancelled")
        assert os.listdir(tmp_path / "o") == ["o.1001.exr"]  # frames already written are kept
        assert group.node("ShowResult")["which"].value() == 0
        assert combcn_nuke._jobs == {}

    def test_engine_stopped_when_nuke_exits(
        self, nuke: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Quitting Nuke mid-render: the at-exit handler ends the engine (the render thread is a daemon)."""
        combcn_nuke = _module("combcn_nuke")
        monkeypatch.setenv("FAKE_COMBCN_DELAY", "60")
        monkeypatch.setenv("FAKE_COMBCN_CHILD", "1")
        plate, _ = _plate_reads(nuke, tmp_path)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        worker = combcn_nuke.render(group)
        assert worker is not None
        deadline = time.monotonic() + 20
        while not (nuke.tasks and nuke.tasks[-1].progress) and time.monotonic() < deadline:
            time.sleep(0.05)  # frame 1 written: the engine runs
        (run,) = fake_runs(nuke.runs_log)
        combcn_nuke.stop_running()  # registered with atexit when the module is imported
        assert gone_soon(run["pid"]) and gone_soon(run["child"])
        worker.join(15)
        assert not worker.is_alive() and combcn_nuke._jobs == {}


def test_installed_executable_from_the_init_block(
    nuke: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The block install-nuke.sh writes, run by (fake) Nuke, makes the node use the recorded engine."""
    monkeypatch.delenv("COMBCN_EXECUTABLE")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    fake = str(write_fake_combcn(tmp_path))
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run(
        [str(REPO / "install" / "install-nuke.sh"), "--executable", fake],
        env={**os.environ, "HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    exec((home / ".nuke" / "init.py").read_text(), {"nuke": nuke})
    assert nuke.plugin_paths == [str(NUKE_DIR)]
    assert sys.modules["combcn_host"].find_executable() == fake


def _expected_read(frames: range, targets: range) -> list[int]:
    from combcn.engine.windows import frames_read

    return frames_read(frames, targets, shipped_window())


def _group(combcn_nuke: Any, tmp_path: Path, first: int, last: int) -> Any:
    group = combcn_nuke.create_node()
    group["first"].setValue(first)
    group["last"].setValue(last)
    group["output"].setValue(str(tmp_path / "out" / "clean.####.exr"))
    return group


class TestFramesRead:
    """The engine reads whole temporal windows around the range: every input must hold those frames."""

    def test_read_plate_with_a_roto_matte(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        _files(tmp_path / "plate.####.exr", range(1001, 1101))
        plate = nuke.nodes.Read(name="Plate", file=str(tmp_path / "plate.####.exr"), first=1001, last=1100)
        group = _group(combcn_nuke, tmp_path, 1040, 1050)
        group.setInput(0, plate)
        group.setInput(1, nuke.nodes.Roto(name="Roto1"))
        _render_and_wait(combcn_nuke, nuke, group)

        expected = _expected_read(range(1001, 1101), range(1040, 1051))
        assert expected[0] < 1040 and expected[-1] > 1050  # context on both sides of the range
        assert nuke.executed == [("CombCNUpstreamMatte", expected[0], expected[-1])]
        (run,) = fake_runs(nuke.runs_log)
        assert run["argv"][1] == str(tmp_path / "plate.%04d.exr")  # the plate is read as it is
        assert run["read"] == expected  # the engine (checking as the real one does) accepted the matte
        assert nuke.messages == [] and "rendered 11 frame(s)" in group["status"].value()

    def test_both_pre_rendered_hold_exactly_what_is_read(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        nuke.root().last_frame = 1100  # the upstream nodes' range: 1001-1100
        group = _group(combcn_nuke, tmp_path, 1040, 1050)
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))
        group.setInput(1, nuke.nodes.Roto(name="Roto1"))
        _render_and_wait(combcn_nuke, nuke, group)

        (run,) = fake_runs(nuke.runs_log)
        (source, s_first, s_last), (matte, m_first, m_last) = nuke.executed
        assert (source, matte) == ("CombCNUpstreamSource", "CombCNUpstreamMatte")
        assert (s_first, s_last) == (m_first, m_last)
        assert run["read"] == list(range(s_first, s_last + 1))  # every pre-rendered frame is read, no more
        assert s_first < 1040 and s_last > 1050  # with temporal context
        tooltip = group["first"].tooltip
        assert "pre-rendered" in tooltip and "frames outside the range are read for context" not in tooltip

    def test_read_matte_shorter_than_the_context_is_pre_rendered(
        self, nuke: ModuleType, tmp_path: Path
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        _files(tmp_path / "plate.####.exr", range(1001, 1101))
        _files(tmp_path / "roto.####.exr", range(1040, 1051))  # only the written frames were rotoscoped
        plate = nuke.nodes.Read(name="Plate", file=str(tmp_path / "plate.####.exr"), first=1001, last=1100)
        roto = nuke.nodes.Read(name="RotoRead", file=str(tmp_path / "roto.####.exr"), first=1040, last=1050)
        group = _group(combcn_nuke, tmp_path, 1040, 1050)
        group.setInput(0, plate)
        group.setInput(1, roto)
        _render_and_wait(combcn_nuke, nuke, group)
        expected = _expected_read(range(1001, 1101), range(1040, 1051))
        assert nuke.executed == [("CombCNUpstreamMatte", expected[0], expected[-1])]  # Nuke's held frames
        assert fake_runs(nuke.runs_log)[0]["read"] == expected and nuke.messages == []


class TestProxyMode:
    def test_refused_in_one_line_before_anything_runs(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, roto = _plate_reads(nuke, tmp_path)
        _files(tmp_path / "proxy" / "plate.####.exr", range(1001, 1004))
        plate["proxy"].setValue(str(tmp_path / "proxy" / "plate.####.exr"))
        nuke.root()["proxy"].setValue(True)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        group.setInput(1, nuke.nodes.Roto(name="Roto1"))
        assert combcn_nuke.render(group) is None
        (text,) = nuke.messages
        assert "proxy mode is on" in text and "\n" not in text
        assert nuke.executed == [] and fake_runs(nuke.runs_log) == []

        nuke.root()["proxy"].setValue(False)  # full resolution: the plate's own files, full-size pre-render
        _render_and_wait(combcn_nuke, nuke, group)
        (run,) = fake_runs(nuke.runs_log)
        assert run["argv"][1] == str(tmp_path / "plate.%04d.exr")


class TestColourOfTheResult:
    def _render(self, combcn_nuke: Any, nuke: ModuleType, tmp_path: Path, plate: Any) -> Any:
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        _render_and_wait(combcn_nuke, nuke, group)
        return group

    def test_default_colour_space_of_a_dpx_plate(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        _files(tmp_path / "scan.####.dpx", range(1001, 1004))
        plate = nuke.nodes.Read(name="Scan", file=str(tmp_path / "scan.####.dpx"), first=1001, last=1003)
        assert plate["colorspace"].value() == "default (Cineon)"  # what the artist sees on the DPX Read
        group = self._render(combcn_nuke, nuke, tmp_path, plate)
        read = group.node("Result")
        assert read["colorspace"].value() == "Cineon" and read["raw"].value() is False  # on an EXR Read
        assert group.node("ShowResult")["which"].value() == 1 and nuke.messages == []

    def test_raw_plate_and_explicit_colour_space(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, _ = _plate_reads(nuke, tmp_path)
        plate["raw"].setValue(True)
        assert self._render(combcn_nuke, nuke, tmp_path, plate).node("Result")["raw"].value() is True
        plate["raw"].setValue(False)
        read = self._render(combcn_nuke, nuke, tmp_path, plate).node("Result")
        assert (read["raw"].value(), read["colorspace"].value()) == (False, "ACES - ACEScg")

    def test_a_refused_colour_space_does_not_switch(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, _ = _plate_reads(nuke, tmp_path)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        worker = combcn_nuke.render(group)
        assert worker is not None
        worker.join(20)
        nuke.colorspaces.remove("ACES - ACEScg")  # the Result read's config lacks the plate's space
        nuke.run_main_thread()
        (text,) = nuke.messages
        assert "refused colorspace 'ACES - ACEScg'" in text and "\n" not in text.split(": ", 1)[1]
        assert group["status"].value().startswith("failed: rendered 3 frame(s)")
        assert group.node("ShowResult")["which"].value() == 0


def test_rerender_reloads_the_result(nuke: ModuleType, tmp_path: Path) -> None:
    """Each render rewrites the same files: the Result Read is reloaded after its file is set."""
    combcn_nuke = _module("combcn_nuke")
    plate, _ = _plate_reads(nuke, tmp_path)
    group = _group(combcn_nuke, tmp_path, 1001, 1003)
    group.setInput(0, plate)
    _render_and_wait(combcn_nuke, nuke, group)
    out = str(tmp_path / "out" / "clean.####.exr")
    assert nuke.reloads == [("Result", out)]
    _render_and_wait(combcn_nuke, nuke, group)
    assert nuke.reloads == [("Result", out), ("Result", out)]


class TestFrameHandling:
    def _read(self, nuke: ModuleType, tmp_path: Path, mode: str, frame: str) -> Any:
        _files(tmp_path / "plate.####.exr", range(1, 21))
        read = nuke.nodes.Read(name="Plate", file=str(tmp_path / "plate.####.exr"), first=1, last=20)
        read["frame_mode"].setValue(mode)
        read["frame"].setValue(frame)
        return read

    @pytest.mark.parametrize(
        ("mode", "frame", "nuke_first"),
        [("start at", "1001", 1001), ("start at", "0", 0), ("offset", "100", 101)],
    )
    def test_frame_mode_offsets(
        self, nuke: ModuleType, tmp_path: Path, mode: str, frame: str, nuke_first: int
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = _group(combcn_nuke, tmp_path, nuke_first + 2, nuke_first + 4)  # files 3-5
        group.setInput(0, self._read(nuke, tmp_path, mode, frame))
        _render_and_wait(combcn_nuke, nuke, group)
        assert nuke.executed == []  # linked, not pre-rendered
        (run,) = fake_runs(nuke.runs_log)
        assert run["argv"][run["argv"].index("--frames") + 1] == f"{nuke_first + 2}-{nuke_first + 4}"
        assert run["read"] == list(range(nuke_first, nuke_first + 20))  # the 20 files, in Nuke's numbers
        assert sorted(os.listdir(tmp_path / "out")) == [
            f"clean.{f:04d}.exr" for f in range(nuke_first + 2, nuke_first + 5)
        ]
        assert not (tmp_path / "out" / ".combcn-upstream").exists()

    def test_links_point_at_the_right_files(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        seen: dict[str, str] = {}
        real_start = combcn_nuke.combcn_host.EngineProcess.start

        def start(proc: Any) -> None:  # look at the links while they exist (removed after the run)
            folder = Path(proc.request.source).parent
            seen.update({p.name: p.read_text() for p in folder.iterdir()})
            real_start(proc)

        monkeypatch.setattr(combcn_nuke.combcn_host.EngineProcess, "start", start)
        group = _group(combcn_nuke, tmp_path, 1003, 1004)
        group.setInput(0, self._read(nuke, tmp_path, "start at", "1001"))
        _render_and_wait(combcn_nuke, nuke, group)
        assert (
            seen["source.1001.exr"] == "plate.####.exr 1\n"
            and seen["source.1020.exr"] == "plate.####.exr 20\n"
        )
        assert len(seen) == 20

    def test_slate_outside_the_trim_is_not_context(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        _files(tmp_path / "plate.####.exr", range(1000, 1021))  # 1000 is a slate on disk
        read = nuke.nodes.Read(name="Plate", file=str(tmp_path / "plate.####.exr"), first=1001, last=1020)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, read)
        _render_and_wait(combcn_nuke, nuke, group)
        (run,) = fake_runs(nuke.runs_log)
        assert run["read"] == list(range(1001, 1021)) and 1000 not in run["read"]
        assert nuke.messages == []

    def test_frame_expression_is_pre_rendered(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, self._read(nuke, tmp_path, "expression", "frame*2"))
        _render_and_wait(combcn_nuke, nuke, group)
        assert nuke.executed[0][0] == "CombCNUpstreamSource"

    def test_range_outside_the_read_is_one_line(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = _group(combcn_nuke, tmp_path, 15, 25)
        group.setInput(0, self._read(nuke, tmp_path, "expression", ""))
        assert combcn_nuke.render(group) is None
        assert nuke.messages == [
            "CombCN: frames 21-25 are outside Plate's frames 1-20; narrow the frame range"
        ]


class TestViews:
    def test_per_view_files_are_refused(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        nuke.view_list = ["left", "right"]
        read = nuke.nodes.Read(name="Plate", file=str(tmp_path / "plate_%V.####.exr"), first=1001, last=1003)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, read)
        assert combcn_nuke.render(group) is None
        (text,) = nuke.messages
        assert "views left, right" in text and "Plate" in text and fake_runs(nuke.runs_log) == []
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))  # a node to pre-render may differ per view too
        assert combcn_nuke.render(group) is None and nuke.executed == []

    def test_one_file_for_all_views_runs(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        nuke.view_list = ["left", "right"]
        plate, _ = _plate_reads(nuke, tmp_path)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        _render_and_wait(combcn_nuke, nuke, group)
        assert len(fake_runs(nuke.runs_log)) == 1 and nuke.messages == []


def _engine_inputs(combcn_nuke: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Record the temporary inputs (pre-rendered or linked frames) the engine is given: they are
    removed after the run, so they are read when the engine starts."""
    seen: dict[str, str] = {}
    real_start = combcn_nuke.combcn_host.EngineProcess.start

    def start(proc: Any) -> None:
        request = proc.request
        for folder in {Path(request.source).parent, Path(request.matte or request.source).parent}:
            seen.update({p.name: p.read_text() for p in folder.iterdir() if p.is_file()})
        real_start(proc)

    monkeypatch.setattr(combcn_nuke.combcn_host.EngineProcess, "start", start)
    return seen


class TestPreRender:
    """What a pre-render writes (fake Write: one text file per frame naming its channels, data window
    and format, as tests/hosts/fakes.py's ``execute`` cites)."""

    def test_moving_bbox_gives_every_frame_the_format_as_data_window(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        seen = _engine_inputs(combcn_nuke, monkeypatch)
        nuke.root()["format"].setValue("2048 858")
        grade = nuke.nodes.Grade(name="Grade1")
        grade.bbox_at = lambda f: (f - 1000, 10, 900 + f - 1000, 400)  # a bbox that moves every frame
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, grade)
        _render_and_wait(combcn_nuke, nuke, group)

        # the fake engine refuses plate frames whose data windows differ, as the real one does
        assert nuke.messages == [] and "rendered 3 frame(s)" in group["status"].value()
        sources = [text for name, text in seen.items() if name.startswith("source.")]
        assert sources and all("dataWindow 0 0 2048 858 format 2048 858" in t for t in sources)
        assert not any(n.name().startswith("CombCNCrop") for n in group.nodes())  # removed again

    def test_without_the_crop_the_engine_would_refuse(self, nuke: ModuleType, tmp_path: Path) -> None:
        """The control: the same moving bbox written by a Write straight from the Grade gives frames the
        (fake, as the real) engine refuses."""
        combcn_nuke = _module("combcn_nuke")
        grade = nuke.nodes.Grade(name="Grade1")
        grade.bbox_at = lambda f: (f - 1000, 10, 900 + f - 1000, 400)
        write = nuke.nodes.Write(name="W", file=str(tmp_path / "raw" / "plate.####.exr"))
        write.setInput(0, grade)
        nuke.execute(write, 1001, 1010)
        request = combcn_nuke.combcn_host.InpaintRequest(
            str(tmp_path / "raw" / "plate.####.exr"), str(tmp_path / "o.####.exr"), 1001, 1003
        )
        with pytest.raises(combcn_nuke.combcn_host.EngineFailed, match="differs from frame 1001"):
            combcn_nuke.combcn_host.run_inpaint(request)

    @pytest.mark.parametrize(
        ("matte_channel", "matte_written"), [("alpha", "alpha"), ("red", "rgb"), ("blue", "rgb")]
    )
    def test_only_the_channels_the_engine_reads(
        self,
        nuke: ModuleType,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        matte_channel: str,
        matte_written: str,
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        seen = _engine_inputs(combcn_nuke, monkeypatch)
        group = _group(combcn_nuke, tmp_path, 1001, 1002)
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))
        group.setInput(1, nuke.nodes.Roto(name="Roto1"))
        group["matte_channel"].setValue(matte_channel)
        _render_and_wait(combcn_nuke, nuke, group)
        assert all(" channels rgb " in t for n, t in seen.items() if n.startswith("source."))
        assert all(f" channels {matte_written} " in t for n, t in seen.items() if n.startswith("matte."))
        argv = fake_runs(nuke.runs_log)[0]["argv"]
        assert argv[argv.index("--matte-channel") + 1] == combcn_nuke.MATTE_CHANNELS[matte_channel]

    def test_source_without_a_matte_keeps_its_alpha(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        seen = _engine_inputs(combcn_nuke, monkeypatch)
        group = _group(combcn_nuke, tmp_path, 1001, 1002)
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))  # no Matte input: the alpha is the matte
        _render_and_wait(combcn_nuke, nuke, group)
        assert seen and all(" channels rgba " in t for t in seen.values())


class TestPassThrough:
    def test_dots_noops_and_disabled_nodes_lead_to_the_read(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, roto = _plate_reads(nuke, tmp_path)
        dot = nuke.nodes.Dot(name="Dot1")
        dot.setInput(0, plate)
        grade = nuke.nodes.Grade(name="Grade1", disable=True)  # disabled: passes its input 0 on
        grade.setInput(0, dot)
        noop = nuke.nodes.NoOp(name="NoOp1")
        noop.setInput(0, grade)
        matte_dot = nuke.nodes.Dot(name="Dot2")
        matte_dot.setInput(0, roto)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, noop)
        group.setInput(1, matte_dot)
        _render_and_wait(combcn_nuke, nuke, group)
        assert nuke.executed == []  # nothing pre-rendered: the Reads' own files
        argv = fake_runs(nuke.runs_log)[0]["argv"]
        assert argv[1] == str(tmp_path / "plate.%04d.exr")
        assert argv[argv.index("--matte") + 1] == str(tmp_path / "roto.%04d.exr")
        assert group.node("Result")["colorspace"].value() == "ACES - ACEScg"  # the Read's, through the Dot

    def test_an_enabled_grade_is_pre_rendered(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, _ = _plate_reads(nuke, tmp_path)
        grade = nuke.nodes.Grade(name="Grade1")
        grade.setInput(0, plate)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, grade)
        _render_and_wait(combcn_nuke, nuke, group)
        assert [name for name, _, _ in nuke.executed] == ["CombCNUpstreamSource"]

    def test_a_disabled_read_is_not_its_files(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, _ = _plate_reads(nuke, tmp_path)
        plate["disable"].setValue(True)  # Nuke shows black, not the files
        assert combcn_nuke.read_sequence(combcn_nuke.upstream_read(plate)) is None


class TestFailuresClearTheJob:
    """Every failure is one line and leaves the node free to render again."""

    def test_unwritable_output_folder(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        (tmp_path / "notafolder").write_text("a file where the output folder should be\n")
        group = _group(combcn_nuke, tmp_path, 1001, 1002)
        group["output"].setValue(str(tmp_path / "notafolder" / "clean.####.exr"))
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))  # pre-rendered beside the output: mkdir fails
        assert combcn_nuke.render(group) is None
        (text,) = nuke.messages
        assert text.startswith("CombCN: cannot write or link") and "notafolder" in text and "\n" not in text
        assert combcn_nuke._jobs == {} and nuke.executed == []

        group["output"].setValue(str(tmp_path / "out" / "clean.####.exr"))  # fixed: renders, not "already"
        _render_and_wait(combcn_nuke, nuke, group)
        assert len(nuke.messages) == 1 and "rendered 2 frame(s)" in group["status"].value()

    def test_failed_link(self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        combcn_nuke = _module("combcn_nuke")

        def no_links(*args: Any) -> None:
            raise PermissionError(13, "Permission denied", str(args[-1]))

        for name in ("symlink", "link"):
            monkeypatch.setattr(combcn_nuke.os, name, no_links)
        monkeypatch.setattr(combcn_nuke.shutil, "copyfile", no_links)
        _files(tmp_path / "plate.####.exr", range(1, 21))
        read = nuke.nodes.Read(name="Plate", file=str(tmp_path / "plate.####.exr"), first=1, last=20)
        read["frame_mode"].setValue("start at")
        read["frame"].setValue("1001")  # linked, not used as it is
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, read)
        assert combcn_nuke.render(group) is None
        (text,) = nuke.messages
        assert "Permission denied" in text and "source.1001.exr" in text and "\n" not in text
        assert combcn_nuke._jobs == {} and not (tmp_path / "out" / ".combcn-upstream").exists()

    def test_unexpected_error_in_the_worker(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        combcn_nuke = _module("combcn_nuke")

        pids: list[int] = []

        def broken(self: Any, *args: Any, **kwargs: Any) -> None:
            pids.append(self.pid)
            raise OSError(28, "No space left on device", "/shots/out/clean.1001.exr")

        monkeypatch.setattr(combcn_nuke.combcn_host.EngineProcess, "wait", broken)
        plate, _ = _plate_reads(nuke, tmp_path)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        _render_and_wait(combcn_nuke, nuke, group)
        (text,) = nuke.messages
        assert "No space left on device" in text and "Traceback" not in text
        assert group["status"].value().startswith("failed: cannot write or link /shots/out/clean.1001.exr")
        assert combcn_nuke._jobs == {}
        assert len(pids) == 1 and gone_soon(pids[0])  # the engine the worker started is not left running

    def test_result_read_that_cannot_open_its_file(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """fromUserText opens the first frame (Nuke ref): a file Nuke cannot open is one line, in the main
        thread's call, and the output stays on the Source."""
        combcn_nuke = _module("combcn_nuke")

        def cannot_open(self: Any, text: str) -> None:
            raise RuntimeError("clean.1001.exr: Read error: No such file or directory")

        monkeypatch.setattr(nuke.File_Knob, "fromUserText", cannot_open)
        plate, _ = _plate_reads(nuke, tmp_path)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        _render_and_wait(combcn_nuke, nuke, group)  # run_main_thread raises nothing
        (text,) = nuke.messages
        assert "rendered 3 frame(s)" in text and "Read error" in text and "\n" not in text.split(":\n")[-1]
        assert group["status"].value().startswith("failed: rendered 3 frame(s)")
        assert group.node("ShowResult")["which"].value() == 0 and combcn_nuke._jobs == {}


class TestPaths:
    def test_output_and_weights_are_evaluated(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Nuke ref, EvalString_Knob.evaluate: expressions and $env(...) expanded; a relative path is
        taken from the project directory (fake knobs cite both). A file knob's evaluate() also puts the
        current frame in place of ####: the output stays a sequence, and the knob keeps its text."""
        combcn_nuke = _module("combcn_nuke")
        monkeypatch.setenv("COMBCN_TEST_SHOTS", str(tmp_path / "shots"))
        nuke.root()["project_directory"].setValue(str(REPO / "combcn"))
        plate, _ = _plate_reads(nuke, tmp_path)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        group["output"].setValue("$env(COMBCN_TEST_SHOTS)/clean/plate.####.exr")
        group["weights"].setValue("weights/combcn_default.pt")  # relative: from the project directory
        _render_and_wait(combcn_nuke, nuke, group)
        argv = fake_runs(nuke.runs_log)[0]["argv"]
        assert argv[argv.index("-o") + 1] == str(tmp_path / "shots" / "clean" / "plate.####.exr")
        assert argv[argv.index("--weights") + 1] == WEIGHTS
        assert (tmp_path / "shots" / "clean" / "plate.1003.exr").is_file()
        assert group["output"].getText() == "$env(COMBCN_TEST_SHOTS)/clean/plate.####.exr"
        assert combcn_nuke.evaluated(group["output"]) == str(tmp_path / "shots" / "clean" / "plate.####.exr")
        group["output"].setValue("[getenv COMBCN_TEST_SHOTS]/v%03d/plate_%02d.%04d.exr")  # every token kept
        assert combcn_nuke.knob_path(group, "output") == str(tmp_path / "shots" / "v%03d/plate_%02d.%04d.exr")

    def test_read_path_from_the_environment(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        monkeypatch.setenv("COMBCN_TEST_PLATES", str(tmp_path))
        _files(tmp_path / "plate.####.exr", range(1001, 1004))
        plate = nuke.nodes.Read(name="Plate", file="[getenv COMBCN_TEST_PLATES]/plate.####.exr", first=1001,
                                last=1003)  # fmt: skip
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        _render_and_wait(combcn_nuke, nuke, group)
        assert fake_runs(nuke.runs_log)[0]["argv"][1] == str(tmp_path / "plate.%04d.exr")


class TestFramesQuery:
    """Which frames the engine reads is asked of its own Python: shown as a progress task, cancellable."""

    def test_shown_as_a_progress_task(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = _group(combcn_nuke, tmp_path, 1001, 1002)
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))  # pre-rendered: its frames are asked for
        _render_and_wait(combcn_nuke, nuke, group)
        query = nuke.tasks[0]
        assert query.messages[0].startswith("asking combcn which frames it reads")
        assert query.progress[-1] == 100 and query.progress == sorted(query.progress)
        assert nuke.tasks[-1].messages[-1] == "frame 1002 (2/2)"  # then the engine's own task

    def test_cancel_while_asking(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        release = __import__("threading").Event()

        def slow_query(*args: Any, should_cancel: Any = None, **kwargs: Any) -> list[int]:
            while not release.wait(0.05):  # the engine's Python still starting
                if should_cancel is not None and should_cancel():
                    raise combcn_nuke.combcn_host.Cancelled("cancelled while asking")
            return [1001, 1002]

        monkeypatch.setattr(combcn_nuke.combcn_host, "frames_read", slow_query)
        monkeypatch.setattr(nuke.ProgressTask, "isCancelled", lambda self: len(self.progress) >= 2)
        group = _group(combcn_nuke, tmp_path, 1001, 1002)
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))
        started = time.monotonic()
        assert combcn_nuke.render(group) is None
        release.set()
        assert time.monotonic() - started < 5
        assert nuke.messages == ["CombCN: cancelled while asking combcn which frames it reads"]
        assert nuke.executed == [] and fake_runs(nuke.runs_log) == [] and combcn_nuke._jobs == {}

    def test_cancel_ends_the_query_process(
        self, nuke: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The engine's Python asked (a real child process that never answers) is ended by the cancel,
        with what it started, before Render reports it."""
        combcn_nuke = _module("combcn_nuke")
        pids = write_stalled_engine_python(tmp_path)  # beside the fake combcn: the query runs it

        def cancelled(task: Any) -> bool:
            return pids.exists() and len(pids.read_text().split()) == 2  # once the query process runs

        monkeypatch.setattr(nuke.ProgressTask, "isCancelled", cancelled)
        group = _group(combcn_nuke, tmp_path, 1001, 1002)
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))
        started = time.monotonic()
        assert combcn_nuke.render(group) is None
        assert time.monotonic() - started < 10
        assert nuke.messages == ["CombCN: cancelled while asking combcn which frames it reads"]
        query, grandchild = query_pids(pids)
        assert not alive(query) and gone_soon(grandchild)
        assert nuke.executed == [] and fake_runs(nuke.runs_log) == [] and combcn_nuke._jobs == {}


def test_result_read_takes_the_format_of_its_files(nuke: ModuleType, tmp_path: Path) -> None:
    """Nuke ref, File_Knob.fromUserText opens the file to set the format (setValue does not): the
    Result has the plate's 2048x858, not the project's 1920x1080."""
    combcn_nuke = _module("combcn_nuke")
    _files(tmp_path / "plate.####.exr", range(1001, 1004), text="plate format 2048 858\n")
    plate = nuke.nodes.Read(name="Plate", file=str(tmp_path / "plate.####.exr"), first=1001, last=1003)
    group = _group(combcn_nuke, tmp_path, 1001, 1003)
    group.setInput(0, plate)
    assert group.node("Result").format().width() == 1920  # the project's, before a render
    _render_and_wait(combcn_nuke, nuke, group)
    result = group.node("Result")
    assert (result.format().width(), result.format().height()) == (2048, 858)
    assert result["file"].value() == str(tmp_path / "out" / "clean.####.exr")
    assert (result["first"].value(), result["last"].value()) == (1001, 1003)


class TestReference:
    """The optional Reference input: one frame the artist painted clean, rendered and given to the engine
    as ``--reference N=file`` (the engine carries it along the motion)."""

    def test_input_and_knobs(self, nuke: ModuleType) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = combcn_nuke.create_node()
        assert [n.name() for n in group.nodes()][:3] == ["Source", "Matte", "Reference"]  # input 2
        assert group["reference_frame"].Class() == "Int_Knob"
        assert group["reference_frame"].value() == 1001  # the script's first frame
        nuke.frame(1007)  # the frame the artist painted, shown in the viewer
        group["reference_from_current"].execute()
        assert group["reference_frame"].value() == 1007

    def test_connected_renders_that_frame_in_the_plates_colour(
        self, nuke: ModuleType, tmp_path: Path
    ) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, roto = _plate_reads(nuke, tmp_path)
        paint = nuke.nodes.RotoPaint(name="RotoPaint1")
        paint.setInput(0, plate)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        group.setInput(1, roto)
        group.setInput(2, paint)
        group["reference_frame"].setValue(1002)
        _render_and_wait(combcn_nuke, nuke, group)

        assert nuke.messages == []
        assert nuke.executed == [("CombCNUpstreamReference", 1002, 1002)]  # that one frame, nothing else
        (run,) = fake_runs(nuke.runs_log)
        argv = run["argv"]
        temp = Path(group["output"].value()).parent / ".combcn-upstream" / "CombCNInpaint"
        assert argv[1] == str(tmp_path / "plate.%04d.exr")  # the plate Read still used as it is
        assert argv[argv.index("--reference") + 1] == f"1002={temp / 'reference.1002.exr'}"
        assert argv.count("--reference") == 1
        (painted,) = run["references"].values()
        assert "CombCNCropReference frame 1002 channels rgb " in painted
        # the plate's file values (the engine reads the plate's files as they are), not working space
        assert "raw False colorspace ACES - ACEScg" in painted
        assert not temp.parent.exists()  # removed after the run
        assert not any(n.name().startswith("CombCN") for n in group.nodes())
        assert group.node("ShowResult")["which"].value() == 1

    def test_widens_what_a_pre_rendered_plate_holds(self, nuke: ModuleType, tmp_path: Path) -> None:
        """A reference beyond the frames the windows read: the engine reads from it to them, so the
        Source and Matte are pre-rendered that far (asked of the engine's Python), raw."""
        combcn_nuke = _module("combcn_nuke")
        root = nuke.root()
        root.first_frame, root.last_frame = 1001, 1100
        group = _group(combcn_nuke, tmp_path, 1001, 1002)
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))
        group.setInput(1, nuke.nodes.Roto(name="Roto1"))
        group.setInput(2, nuke.nodes.RotoPaint(name="RotoPaint1"))
        group["reference_frame"].setValue(1090)
        _render_and_wait(combcn_nuke, nuke, group)

        assert nuke.messages == []
        without = max(_expected_read(range(1001, 1101), range(1001, 1003)))
        assert without < 1090  # the windows alone would not reach the reference
        assert nuke.executed == [
            ("CombCNUpstreamSource", 1001, 1090),
            ("CombCNUpstreamMatte", 1001, 1090),
            ("CombCNUpstreamReference", 1090, 1090),
        ]
        (run,) = fake_runs(nuke.runs_log)
        assert run["read"] == list(range(1001, 1091))  # the fake engine's own reading: all there
        (painted,) = run["references"].values()
        assert "raw True " in painted  # working-space values, as the pre-rendered plate

    def test_not_connected_passes_no_reference(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, roto = _plate_reads(nuke, tmp_path)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        group.setInput(1, roto)
        group["reference_frame"].setValue(5000)  # unused without the input
        _render_and_wait(combcn_nuke, nuke, group)
        assert nuke.messages == [] and nuke.executed == []
        (run,) = fake_runs(nuke.runs_log)
        assert "--reference" not in run["argv"]

    @pytest.mark.parametrize("frame", [990, 1004])
    def test_frame_outside_the_plate_is_refused(self, nuke: ModuleType, tmp_path: Path, frame: int) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, roto = _plate_reads(nuke, tmp_path)
        group = _group(combcn_nuke, tmp_path, 1001, 1003)
        group.setInput(0, plate)
        group.setInput(1, roto)
        group.setInput(2, nuke.nodes.RotoPaint(name="RotoPaint1"))
        group["reference_frame"].setValue(frame)
        assert combcn_nuke.render(group) is None
        assert nuke.messages == [
            f"CombCN: the reference frame {frame} is outside Plate's frames 1001-1003; set the reference "
            "frame knob to the frame the Reference input shows clean"
        ]
        assert nuke.executed == [] and fake_runs(nuke.runs_log) == [] and combcn_nuke._jobs == {}
        assert not (Path(group["output"].value()).parent / ".combcn-upstream").exists()

    def test_frame_outside_a_pre_rendered_source_is_refused(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        group = _group(combcn_nuke, tmp_path, 1001, 1002)
        group.setInput(0, nuke.nodes.Grade(name="Grade1"))
        group.setInput(2, nuke.nodes.RotoPaint(name="RotoPaint1"))
        group["reference_frame"].setValue(1011)
        assert combcn_nuke.render(group) is None
        (message,) = nuke.messages
        assert "the reference frame 1011 is outside the Source input's frames 1001-1010" in message
        assert nuke.executed == [] and fake_runs(nuke.runs_log) == []

    def test_reference_frame_missing_on_disk_is_refused(self, nuke: ModuleType, tmp_path: Path) -> None:
        combcn_nuke = _module("combcn_nuke")
        plate, roto = _plate_reads(nuke, tmp_path)
        os.remove(frame_file(str(tmp_path / "plate.####.exr"), 1002))
        group = _group(combcn_nuke, tmp_path, 1003, 1003)
        group.setInput(0, plate)
        group.setInput(1, roto)
        group.setInput(2, nuke.nodes.RotoPaint(name="RotoPaint1"))
        group["reference_frame"].setValue(1002)
        assert combcn_nuke.render(group) is None
        (message,) = nuke.messages
        assert "(the reference frame 1002) is missing" in message and "plate.1002.exr" in message
        assert nuke.executed == [] and fake_runs(nuke.runs_log) == []
