"""plugin/common/combcn_host: finding the engine, the command line, the progress protocol, errors, and
one run of the REAL ``combcn inpaint`` on a tiny generated EXR sequence through the adapter module.

Everything else uses a fake ``combcn`` program (tests/hosts/fakes.py) that speaks the same protocol.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import OpenImageIO as oiio
import pytest
from fakes import (
    PLUGIN,
    alive,
    fake_runs,
    gone_soon,
    query_pids,
    write_fake_combcn,
    write_stalled_engine_python,
)

from combcn.engine import frames_read
from combcn.engine.core import RenderSettings, needed_windows
from combcn.errors import InputError

ENGINE = Path(sys.executable).parent / "combcn"  # the engine installed beside the interpreter running us


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh combcn_host (its installer path reset), imported as a host would import it."""
    monkeypatch.syspath_prepend(str(PLUGIN / "common"))
    monkeypatch.delitem(sys.modules, "combcn_host", raising=False)
    monkeypatch.delenv("COMBCN_EXECUTABLE", raising=False)
    import combcn_host

    yield combcn_host
    sys.modules.pop("combcn_host", None)


def test_pure_standard_library() -> None:
    """Host Pythons have no torch or numpy: the module imports only the standard library (the engine
    query it hands to the engine's own Python is a string, not an import of this module)."""
    tree = ast.parse((PLUGIN / "common" / "combcn_host.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


@pytest.mark.parametrize(
    "path", ["common/combcn_host.py", "nuke/combcn_nuke.py", "resolve/combcn_resolve.py"]
)
def test_syntax_of_older_host_pythons(path: str) -> None:
    """Nuke 13 runs Python 3.7: the adapters use no newer syntax (annotations are not evaluated)."""
    source = (PLUGIN / path).read_text()
    ast.parse(source, feature_version=(3, 7))
    assert "from __future__ import annotations" in source


class TestFindExecutable:
    def test_order_env_then_installer_then_path(
        self, host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        folders = {name: tmp_path / name for name in ("on_path", "installed", "env")}
        for folder in folders.values():
            folder.mkdir()
        on_path, installed, env = (write_fake_combcn(folder) for folder in folders.values())
        monkeypatch.setenv("PATH", str(on_path.parent))
        assert host.find_executable() == str(on_path)
        host.set_installed_executable(str(installed))
        assert host.find_executable() == str(installed)
        monkeypatch.setenv("COMBCN_EXECUTABLE", str(env))
        assert host.find_executable() == str(env)

    def test_errors_say_what_to_do(
        self, host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(host.EngineNotFound, match="COMBCN_EXECUTABLE"):
            host.find_executable()
        monkeypatch.setenv("COMBCN_EXECUTABLE", str(tmp_path / "nope"))
        with pytest.raises(host.EngineNotFound, match="not an executable file"):
            host.find_executable()


def test_command_line(host: ModuleType) -> None:
    request = host.InpaintRequest("p.####.exr", "o/p.####.exr", 1001, 1010)
    assert request.command("combcn") == [
        "combcn", "inpaint", "p.####.exr", "-o", "o/p.####.exr", "--frames", "1001-1010", "--progress", "json"
    ]  # fmt: skip
    full = host.InpaintRequest(
        "p.%04d.exr", "o.%04d.exr", 1, 2, matte="m.%04d.exr", matte_channel="matte.A", invert=True,
        expand=-2, feather=0.5, shaper="none", device="cuda", weights="w.pt", track=False, overwrite=True,
    )  # fmt: skip
    assert full.command("c")[7:] == [
        "--matte", "m.%04d.exr", "--matte-channel", "matte.A", "--invert", "--expand", "-2",
        "--feather", "0.5", "--shaper", "none", "--device", "cuda", "--weights", "w.pt", "--no-track",
        "--overwrite", "--progress", "json",
    ]  # fmt: skip
    with pytest.raises(host.HostError, match="empty"):
        host.InpaintRequest("p", "o", 5, 4).command("c")
    painted = host.InpaintRequest("p", "o", 1, 2, references=((1, "/a/ref.0001.exr"), (9, "/a/r b.exr")))
    assert painted.command("c")[7:] == [
        "--reference", "1=/a/ref.0001.exr", "--reference", "9=/a/r b.exr", "--progress", "json"
    ]  # fmt: skip


def test_parse_event(host: ModuleType) -> None:
    assert host.parse_event('{"event": "frame", "frame": 1001, "done": 1, "total": 2}\n')["frame"] == 1001
    for noise in ["", "combcn: INFO: hi", "{not json", "[1, 2]", '{"frame": 3}', '{"event": 3}']:
        assert host.parse_event(noise) is None


def test_engine_environment_drops_the_host_python(host: ModuleType) -> None:
    env = host.engine_environment(
        {"PYTHONHOME": "/nuke", "PYTHONPATH": "/nuke/lib", "PATH": "/bin", "HOME": "/h"}
    )
    assert env == {"PATH": "/bin", "HOME": "/h", "PYTHONUNBUFFERED": "1"}


def test_run_with_fake_engine(host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMBCN_EXECUTABLE", str(write_fake_combcn(tmp_path)))
    monkeypatch.setenv("FAKE_COMBCN_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("PYTHONPATH", "/a/host/python")  # as inside Nuke: must not reach the engine
    seen: list[tuple[int, int, int, int]] = []
    request = host.InpaintRequest("p.####.exr", str(tmp_path / "o.####.exr"), 7, 9)
    result = host.run_inpaint(
        request, on_progress=lambda p: seen.append((p.frame, p.done, p.total, p.percent))
    )
    assert seen == [(7, 1, 3, 33), (8, 2, 3, 66), (9, 3, 3, 100)]
    assert (result.written, result.skipped, result.frames) == (3, 0, [7, 8, 9])
    assert fake_runs(tmp_path / "log")[0]["argv"][:2] == ["inpaint", "p.####.exr"]


def test_engine_failure_carries_its_message(
    host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMBCN_EXECUTABLE", str(write_fake_combcn(tmp_path)))
    monkeypatch.setenv("FAKE_COMBCN_FAIL", "m.1001.exr: no matte frames found")
    with pytest.raises(host.EngineFailed) as info:
        host.run_inpaint(host.InpaintRequest("p", "o.####.exr", 1, 2))
    assert str(info.value) == "m.1001.exr: no matte frames found" and info.value.returncode == 2
    assert "fake engine starting" in info.value.stderr


def _write_exr(path: Path, pixels: np.ndarray, channels: tuple[str, ...]) -> None:
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], len(channels), "half")
    spec.channelnames = channels
    out = oiio.ImageOutput.create(str(path))
    assert out is not None and out.open(str(path), spec), oiio.geterror()
    assert out.write_image(pixels.astype(np.float16))
    out.close()


def _read_exr(path: Path) -> np.ndarray:
    image = oiio.ImageInput.open(str(path))
    assert image is not None, oiio.geterror()
    pixels = image.read_image("half")
    image.close()
    return np.asarray(pixels)


@pytest.mark.slow
def test_real_engine_through_the_adapter_module(
    host: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``combcn inpaint`` (the running interpreter's environment) run by combcn_host on a 3-frame
    EXR sequence."""
    monkeypatch.setenv("COMBCN_EXECUTABLE", str(ENGINE))
    rng = np.random.default_rng(0)
    plates: dict[int, np.ndarray] = {}
    hole = np.zeros((24, 32), bool)
    hole[8:16, 10:18] = True
    for frame in (1001, 1002, 1003):
        plate = rng.random((24, 32, 4), dtype=np.float32) * np.float32(4.0)  # scene-linear, above 1
        plate[..., 3] = 1.0
        plates[frame] = plate.astype(np.float16)
        _write_exr(tmp_path / f"plate.{frame}.exr", plates[frame], ("R", "G", "B", "A"))
        _write_exr(tmp_path / f"matte.{frame}.exr", hole[..., None].astype(np.float32), ("A",))
    events: list[int] = []
    request = host.InpaintRequest(
        str(tmp_path / "plate.####.exr"), str(tmp_path / "out" / "plate.####.exr"), 1001, 1003,
        matte=str(tmp_path / "matte.####.exr"), device="cpu",
    )  # fmt: skip
    result = host.run_inpaint(request, on_progress=lambda p: events.append(p.frame))
    assert sorted(events) == [1001, 1002, 1003] and result.written == 3
    for frame, plate in plates.items():
        out = _read_exr(tmp_path / "out" / f"plate.{frame}.exr")
        assert out.shape == plate.shape
        assert np.array_equal(out[~hole], plate[~hole])  # outside the matte: bit-exact
        assert np.isfinite(out).all()
    assert sorted(os.listdir(tmp_path / "out")) == ["plate.1001.exr", "plate.1002.exr", "plate.1003.exr"]


class TestFramesRead:
    """combcn.engine.frames_read (what hosts pre-render) is the engine's own plan (core.needed_windows)."""

    @pytest.mark.parametrize("seed", range(4))
    def test_agrees_with_needed_windows(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(150):
            n = int(rng.integers(1, 140))
            start = int(rng.integers(-5, 2000))
            step = int(rng.choice([1, 1, 2]))
            seq = [start + step * i for i in range(n)]
            lo = int(rng.integers(0, n))
            hi = int(rng.integers(lo, min(n, lo + 40)))
            picked = sorted({int(p) for p in rng.integers(lo, hi + 1, size=int(rng.integers(1, 6)))})
            window = int(rng.choice([1, 4, 8, 16, 32]))
            overlap = None if rng.random() < 0.5 else int(rng.integers(0, window))
            context = None if rng.random() < 0.6 else int(rng.integers(0, 40))
            settings = RenderSettings(overlap=overlap, context=context)
            _, (first, last) = needed_windows(n, picked, window, settings)
            got = frames_read(list(reversed(seq)), [seq[p] for p in picked], window, overlap, context)
            assert got == seq[first:last], (n, start, step, picked, window, overlap, context)

    def test_edges(self) -> None:
        assert frames_read(range(1001, 1101), [], 32) == []
        assert frames_read(range(1001, 1011), [1005], 32) == list(range(1001, 1011))  # shorter than a window
        read = frames_read(range(1001, 1101), range(1040, 1051))
        assert read[0] < 1040 and read[-1] > 1050  # context both sides with the default window
        near = frames_read(range(1, 201), [100], 32)
        wider = frames_read(range(1, 201), [100], 32, reach=5)
        assert wider == list(range(near[0] - 5, near[-1] + 6))  # propagation reach: more context each side
        assert frames_read(range(1, 11), [5], 32, reach=50) == list(range(1, 11))  # clamped to the plate
        with pytest.raises(InputError, match="not among the plate's frames"):
            frames_read(range(1, 10), [12], 32)


class TestFramesQuery:
    """combcn_host.frames_read asks the engine's own Python (hosts cannot import combcn)."""

    def test_engine_python_beside_or_from_the_shebang(self, host: ModuleType, tmp_path: Path) -> None:
        assert host.engine_python(str(ENGINE)) == [str(ENGINE.parent / "python3")] or host.engine_python(
            str(ENGINE)
        ) == [str(ENGINE.parent / "python")]
        fake = write_fake_combcn(tmp_path)  # no python beside it: its #! line
        assert host.engine_python(str(fake)) == [sys.executable]
        frozen = tmp_path / "frozen" / "combcn"
        frozen.parent.mkdir()
        frozen.write_bytes(b"\x7fELF")
        with pytest.raises(host.EngineNotFound, match="cannot find the Python"):
            host.engine_python(str(frozen))

    def test_answers_as_the_engine_plans(self, host: ModuleType) -> None:
        from combcn.model.config import ModelConfig
        from combcn.model.weights import DEFAULT_WEIGHTS, read_weights

        window = ModelConfig.from_dict(read_weights(DEFAULT_WEIGHTS)["config"]).window
        frames, targets = list(range(1001, 1201)), list(range(1090, 1101))
        assert host.frames_read(frames, targets, executable=str(ENGINE)) == frames_read(
            frames, targets, window
        )
        settled = host.frames_read(frames, targets, settle=True, executable=str(ENGINE))
        assert frames_read(settled, targets, window) == settled  # a plate of exactly these is read whole
        with pytest.raises(host.EngineFailed, match="not among the plate's frames"):
            host.frames_read([1, 2], [5], executable=str(ENGINE))
        with pytest.raises(host.EngineFailed, match="weights file not found"):
            host.frames_read(frames, targets, weights="/no/such.pt", executable=str(ENGINE))

    def test_references_widen_as_the_engine_reads(self, host: ModuleType) -> None:
        """With references, the answer is the engine's own plan (combcn/engine/sequence.py): each window
        also reads the nearest reference before and after it, and the frames between."""
        from combcn.engine.core import RenderSettings, needed_windows, reference_span
        from combcn.model.config import ModelConfig
        from combcn.model.weights import DEFAULT_WEIGHTS, read_weights

        window = ModelConfig.from_dict(read_weights(DEFAULT_WEIGHTS)["config"]).window
        frames, targets = list(range(1001, 1201)), list(range(1090, 1101))

        def engine_plan(references: list[int]) -> list[int]:
            windows, (first, last) = needed_windows(
                len(frames), [t - 1001 for t in targets], window, RenderSettings()
            )
            for w in windows:
                lo, hi = reference_span([r - 1001 for r in references], w.start, w.end)
                first, last = min(first, lo), max(last, hi)
            return frames[first:last]

        for references in ([1010], [1190], [1010, 1190], [1095], [1020, 1030, 1170]):
            got = host.frames_read(frames, targets, references=references, executable=str(ENGINE))
            assert got == engine_plan(references), references
        settled = host.frames_read(frames, targets, settle=True, references=[1190], executable=str(ENGINE))
        assert settled[-1] == 1190 and settled == sorted(settled)
        again = host.frames_read(settled, targets, references=[1190], executable=str(ENGINE))
        assert again == settled  # a plate of exactly these is read whole

    def test_cancel_ends_the_query_process(self, host: ModuleType, tmp_path: Path) -> None:
        """A cancelled query leaves no process behind: the engine's Python (a real child that never
        answers) and what it started are gone when frames_read raises Cancelled."""
        fake = write_fake_combcn(tmp_path)
        pids = write_stalled_engine_python(tmp_path)
        seen: list[tuple[int, int]] = []

        def should_cancel() -> bool:
            if not seen and pids.exists() and len(pids.read_text().split()) == 2:
                seen.append(query_pids(pids))
                assert all(alive(pid) for pid in seen[0])  # running until the cancel
            return bool(seen)

        started = time.monotonic()
        with pytest.raises(host.Cancelled, match="cancelled while asking"):
            host.frames_read([1, 2, 3], [2], executable=str(fake), should_cancel=should_cancel)
        assert time.monotonic() - started < 8
        query, grandchild = seen[0]
        assert not alive(query)  # ended and reaped before frames_read returned
        assert gone_soon(grandchild)  # its process group was signalled too

    def test_a_query_that_never_answers_times_out_and_ends(self, host: ModuleType, tmp_path: Path) -> None:
        fake = write_fake_combcn(tmp_path)
        pids = write_stalled_engine_python(tmp_path)
        with pytest.raises(host.EngineNotFound, match="did not say which frames"):
            host.frames_read([1, 2, 3], [2], executable=str(fake), timeout_s=1.0)
        query, grandchild = query_pids(pids)
        assert not alive(query) and gone_soon(grandchild)
