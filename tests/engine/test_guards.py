"""What a render refuses to write and what it does when stopped, on real files through OpenImageIO:
resume re-checks existing frames, NaN and runaway fills, lossy outputs, the output lock, SIGTERM/SIGINT.

Signals, exit codes and concurrent renders run ``combcn inpaint`` as real subprocesses; the rest runs
in-process for speed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
import torch
from helpers import moving_box_matte, one_thread, plate_spec, tiny_model, write_sequence  # noqa: F401

import combcn
from combcn.cli import main
from combcn.engine import Engine
from combcn.engine.guards import (
    RANGE_FLOOR,
    RANGE_MARGIN,
    FillGuard,
    OutputLock,
    known_range,
    outside_range,
)
from combcn.errors import ModelError, OutputError
from combcn.io import ImageData, read_image, write_image_atomic
from combcn.io.image import verify_image
from combcn.io.sequence import SequencePattern

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = [1001, 1002, 1003, 1004]
EXE = shutil.which("combcn", path=str(Path(sys.executable).parent)) or "combcn"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", model=tiny_model())


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    from combcn.model import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(tiny_model(), path)
    return str(path)


def _shot(folder: Path, frames: list[int] = FRAMES) -> tuple[str, str, dict[int, np.ndarray]]:
    plate, matte, stored = write_sequence(folder, frames, matte=moving_box_matte(len(frames), 48, 64))
    assert matte is not None
    return plate, matte, stored


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(["inpaint", *argv])
    return rc, capsys.readouterr().err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


class TestResume:
    def test_truncated_and_mistyped_frames_are_rendered_again(
        self, engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        plate, matte, _ = _shot(tmp_path / "in")
        out = str(tmp_path / "out" / "o.####.exr")
        combcn.inpaint_sequence(plate, matte, out, engine=engine)
        first = {f: read_image(out.replace("####", str(f))).pixels for f in FRAMES}
        cut = tmp_path / "out" / "o.1002.exr"
        data = cut.read_bytes()
        cut.write_bytes(data[: len(data) * 9 // 10])  # cut short: the header still reads
        assert verify_image(cut, read_image(tmp_path / "out" / "o.1001.exr").spec) is not None
        wrong = tmp_path / "out" / "o.1004.exr"  # complete, but float where this render writes half
        write_image_atomic(wrong, read_image(wrong), pixel_type="float")
        with caplog.at_level(logging.WARNING, logger="combcn"):
            report = combcn.inpaint_sequence(plate, matte, out, engine=engine, resume=True)
        assert report.skipped == [1001, 1003] and report.written == [1002, 1004]
        warned = [r.getMessage() for r in caplog.records if "rendering it again" in r.getMessage()]
        assert len(warned) == 2 and "o.1002.exr" in warned[0] and "o.1004.exr" in warned[1]
        assert "pixel types" in warned[1]
        for f in FRAMES:  # deterministic: the re-rendered frames equal the first render
            np.testing.assert_array_equal(read_image(out.replace("####", str(f))).pixels, first[f])
        assert _leftovers(tmp_path / "out") == []

    def test_cut_short_jpeg_is_not_complete(self, tmp_path: Path) -> None:
        spec = oiio.ImageSpec(64, 48, 3, "uint8")
        pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3)).astype(np.uint8)
        path = tmp_path / "f.jpg"
        write_image_atomic(path, ImageData(pixels, spec))
        assert verify_image(path, read_image(path).spec, types=["uint8"] * 3) is None
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # the decoder pads it with grey and reports nothing
        assert "cut short" in (verify_image(path, read_image(path).spec) or "")


def _nan_model() -> torch.nn.Module:
    model = tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return model


class TestFillGuard:
    def test_exception_nan_fill_writes_nothing(self, tmp_path: Path) -> None:
        plate, matte, _ = _shot(tmp_path / "in")
        with pytest.raises(ModelError, match="NaN or Inf") as caught:
            combcn.inpaint_sequence(
                plate,
                matte,
                str(tmp_path / "out/o.####.exr"),
                engine=Engine(device="cpu", model=_nan_model()),
            )
        assert caught.value.frame == FRAMES[0] and "\n" not in str(caught.value)
        assert list((tmp_path / "out").iterdir()) == []  # no frame, no temp file, no lock

    def test_exception_nan_weights_cli_one_line_nonzero(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from combcn.model import save_weights

        bad = tmp_path / "diverged.pt"
        save_weights(_nan_model(), bad)  # type: ignore[arg-type]
        plate, matte, _ = _shot(tmp_path / "in")
        rc, err = _run(
            capsys, plate, "-m", matte, "-o", str(tmp_path / "out/o.####.exr"), "-w", str(bad), "-p", "none"
        )
        assert rc != 0 and len(_errors(err)) == 1 and "Traceback" not in err
        assert "NaN" in _errors(err)[0] or "finite" in _errors(err)[0]  # at load or in the fill
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("o.*.exr"))

    def test_exception_nan_fill_array_api(self) -> None:
        frames = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
        with pytest.raises(ModelError, match="frame 0"):
            Engine(device="cpu", model=_nan_model()).inpaint(frames, moving_box_matte(4, 32, 32, size=8))

    def test_huge_hole_fill_stays_in_the_known_range(
        self, engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        t, h, w = 4, 48, 64
        matte = np.ones((t, h, w), np.float32)
        matte[:, :5, :6] = 0.0  # 30 known pixels: a hole over 99% of the frame
        spec = plate_spec(w, h, ("R", "G", "B"), "float")
        plate, matte_pattern, _ = write_sequence(tmp_path / "in", FRAMES, spec=spec, matte=matte, hdr=False)
        for f in FRAMES:  # the known corner is one flat colour, the hidden rest is bright noise
            data = read_image(plate.replace("####", str(f)))
            data.pixels[:5, :6] = [0.2, 0.5, 0.8]
            data.pixels[5:] *= 9.0
            write_image_atomic(plate.replace("####", str(f)), data)
        out = str(tmp_path / "out/o.####.exr")
        with caplog.at_level(logging.WARNING, logger="combcn"):
            report = combcn.inpaint_sequence(plate, matte_pattern, out, engine=engine)
        clamped = [r.getMessage() for r in caplog.records if "clamped" in r.getMessage()]
        assert len(clamped) == 1 and f"in {len(FRAMES)} frame(s)" in clamped[0]
        assert sum("clamped" in m for m in report.warnings) == 1
        slack = RANGE_FLOOR + 1e-6
        for f in FRAMES:
            filled = read_image(out.replace("####", str(f))).pixels[matte[0] > 0]
            assert (filled >= np.array([0.2, 0.5, 0.8], np.float32) - slack).all()
            assert (filled <= np.array([0.2, 0.5, 0.8], np.float32) + slack).all()

    def test_fill_within_the_margin_is_kept(self) -> None:
        from combcn.engine.core import FrameFill

        plate = np.zeros((8, 8, 3), np.float32)
        plate[0, 0] = 1.0  # known range [0, 1] in every channel
        alpha = np.ones((4, 4), np.float32)
        near = 1.0 + RANGE_MARGIN / 2
        fill = np.full((4, 4, 3), near, np.float32)
        fill[0, 0] = 5.0
        guard = FillGuard()
        out = guard.check(plate, FrameFill((2, 6, 2, 6), fill, alpha), path=None, frame=7)
        assert out.fill is not None and out.fill[0, 0, 0] == pytest.approx(1 + RANGE_MARGIN + RANGE_FLOOR)
        assert (out.fill[1:] == np.float32(near)).all()
        assert (guard.pixels, guard.frames) == (1, 1) and "1 fill pixel(s) in 1 frame(s)" in (
            guard.warning() or ""
        )

    @pytest.mark.parametrize("spread", [0.1, 0.6, 3.0])
    def test_clamps_exactly_the_composited_pixels_beyond_the_range(self, spread: float) -> None:
        """The guard's fast passes (the fill's range per channel; OpenCV's masked range of the box)
        clamp the same pixels to the same bits as the rule written out pixel by pixel."""
        from combcn.engine.core import FrameFill

        rng = np.random.default_rng(int(spread * 10))
        plate = rng.normal(0.5, 0.2, (40, 50, 3)).astype(np.float32)
        box = (5, 35, 8, 45)
        y0, y1, x0, x1 = box
        alpha = (rng.random((y1 - y0, x1 - x0)) > 0.4).astype(np.float32)
        plate[y0:y1, x0:x1][alpha > 0] = 50.0  # hole pixels never count in the range
        fill = rng.normal(0.5, spread, (y1 - y0, x1 - x0, 3)).astype(np.float32)
        known = np.ones(plate.shape[:2], bool)
        known[y0:y1, x0:x1] = alpha <= 0
        lo, hi = plate[known].min(axis=0), plate[known].max(axis=0)
        slack = RANGE_MARGIN * (hi - lo) + RANGE_FLOOR
        lo, hi = lo - slack, hi + slack
        beyond = ((fill < lo) | (fill > hi)).any(axis=-1) & (alpha > 0)
        expected = np.where(beyond[..., None], np.clip(fill, lo, hi), fill).astype(np.float32)
        for outside in (None, outside_range(plate, box)):
            guard = FillGuard()
            given = plate if outside is None else plate[y0:y1, x0:x1]
            out = guard.check(given, FrameFill(box, fill, alpha), path=None, frame=1, outside=outside)
            assert out.fill is not None and out.fill.tobytes() == expected.tobytes()
            assert guard.pixels == int(beyond.sum()) and guard.frames == int(beyond.any())

    @pytest.mark.parametrize("box", [(2, 6, 2, 6), (0, 8, 0, 8), (0, 8, 3, 5)])
    def test_range_measured_outside_the_box_gives_the_same_fill(self, box: tuple[int, int, int, int]) -> None:
        """With the range outside the box measured beforehand (when the frame is read), the guard scans
        the box alone and returns the same bits."""
        from combcn.engine.core import FrameFill

        rng = np.random.default_rng(sum(box))
        plate = rng.normal(0.5, 0.2, (8, 8, 3)).astype(np.float32)
        y0, y1, x0, x1 = box
        alpha = (rng.random((y1 - y0, x1 - x0)) > 0.3).astype(np.float32)
        fill = rng.normal(0.5, 2.0, (y1 - y0, x1 - x0, 3)).astype(np.float32)
        whole, by_box = FillGuard(), FillGuard()
        a = whole.check(plate, FrameFill(box, fill, alpha), path=None, frame=3)
        b = by_box.check(
            plate[y0:y1, x0:x1],
            FrameFill(box, fill, alpha),
            path=None,
            frame=3,
            outside=outside_range(plate, box),
        )
        assert a.fill is not None and b.fill is not None and a.fill.tobytes() == b.fill.tobytes()
        assert (whole.pixels, whole.clamped) == (by_box.pixels, by_box.clamped) and whole.pixels > 0
        with pytest.raises(ValueError, match="measured around"):
            FillGuard().check(
                plate,
                FrameFill(box, fill, alpha),
                path=None,
                frame=3,
                outside=outside_range(plate, (0, 1, 0, 1)),
            )


class TestLossy:
    @pytest.fixture
    def png_shot(self, tmp_path: Path) -> tuple[str, str]:
        rng = np.random.default_rng(3)
        matte = moving_box_matte(len(FRAMES), 48, 64)
        spec = oiio.ImageSpec(64, 48, 3, "uint8")
        mspec = oiio.ImageSpec(64, 48, 1, "uint8")
        (tmp_path / "in").mkdir()
        for i, f in enumerate(FRAMES):
            pixels = rng.integers(0, 255, (48, 64, 3)).astype(np.uint8)
            write_image_atomic(tmp_path / f"in/p.{f}.png", ImageData(pixels, spec))
            write_image_atomic(
                tmp_path / f"in/m.{f}.png", ImageData((matte[i] * 255).astype(np.uint8)[..., None], mspec)
            )
        return str(tmp_path / "in/p.####.png"), str(tmp_path / "in/m.####.png")

    def test_jpeg_out_refused_then_accepted_with_lossy_ok(
        self,
        png_shot: tuple[str, str],
        weights: str,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        plate, matte = png_shot
        out = str(tmp_path / "out/o.####.jpg")
        rc, err = _run(capsys, plate, "-m", matte, "-o", out, "-w", weights, "-p", "none")
        assert rc != 0 and len(_errors(err)) == 1
        assert "JPEG" in err and "--lossy-ok" in err and "Traceback" not in err
        assert not (tmp_path / "out").exists()
        with caplog.at_level(logging.WARNING, logger="combcn"):
            rc, err = _run(capsys, plate, "-m", matte, "-o", out, "-w", weights, "-p", "none", "--lossy-ok")
        assert rc == 0, err
        lossy = [r.getMessage() for r in caplog.records if "lossy" in r.getMessage()]
        assert len(lossy) == 1 and "JPEG" in lossy[0]
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"o.{f}.jpg" for f in FRAMES]

    @pytest.mark.parametrize(
        ("out_name", "extra", "said"),
        [
            ("o.####.exr", ["--compression", "dwaa:45"], "--compression dwaa"),
            ("o.####.exr", ["--compression", "b44"], "--compression b44"),
            ("o.####.exr", [], "compression dwab"),  # the plate's own compression, kept on output
            ("o.####.png", [], "png stores these half pixels as uint"),
        ],
    )
    def test_exception_lossy_exr_and_narrow_formats(
        self,
        out_name: str,
        extra: list[str],
        said: str,
        weights: str,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        spec = plate_spec()
        if not extra and out_name.endswith(".exr"):
            spec.attribute("compression", "dwab")
        plate, matte, _ = write_sequence(
            tmp_path / "in", FRAMES, spec=spec, matte=moving_box_matte(4, 48, 64)
        )
        assert matte is not None
        rc, err = _run(
            capsys, plate, "-m", matte, "-o", str(tmp_path / "out" / out_name), "-w", weights, *extra
        )
        assert rc != 0 and len(_errors(err)) == 1 and said in err and "--lossy-ok" in err
        assert not (tmp_path / "out").exists()


class TestLock:
    def test_overlapping_frames_refused_disjoint_allowed(self, tmp_path: Path) -> None:
        out = SequencePattern(tmp_path / "o.####.exr")
        held = OutputLock(out, list(range(1001, 1011)))
        held.acquire()
        try:
            assert held.path.is_file() and json.loads(held.path.read_text())["pid"] == os.getpid()
            for frames in (list(range(1001, 1011)), list(range(1005, 1016))):
                with pytest.raises(OutputError, match="is writing these frames") as caught:
                    OutputLock(out, frames).acquire()
                assert str(held.path) in str(caught.value) and "\n" not in str(caught.value)
            with OutputLock(out, list(range(1011, 1021))) as other:
                assert other.path.is_file()
            assert not other.path.exists()
        finally:
            held.release()
        assert not held.path.exists()

    def test_stale_lock_of_a_dead_process_is_taken_over(self, tmp_path: Path) -> None:
        out = SequencePattern(tmp_path / "o.####.exr")
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        first = OutputLock(out, FRAMES)
        first.owner["pid"] = int(dead.stdout)  # a lock left by a killed render on this host
        assert first._create()
        lock = OutputLock(out, FRAMES)
        lock.acquire()
        try:
            assert (
                len(lock.warnings) == 1
                and "stale lock" in lock.warnings[0]
                and str(dead.stdout.strip()) in lock.warnings[0]
            )
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        finally:
            lock.release()

    def test_stale_lock_among_finished_frames_is_removed_live_one_kept(
        self, engine: Engine, tmp_path: Path
    ) -> None:
        plate, matte, _ = _shot(tmp_path / "in")
        out = tmp_path / "out/o.####.exr"
        combcn.inpaint_sequence(plate, matte, str(out), engine=engine)
        pattern = SequencePattern(out)
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        stale = OutputLock(pattern, FRAMES[1:])
        stale.owner["pid"] = int(dead.stdout)  # a render killed after its last frame, on this host
        assert stale._create()
        live = OutputLock(pattern, [1010])  # this process's: alive, other frames
        assert live._create()
        report = combcn.inpaint_sequence(plate, matte, str(out), engine=engine, resume=True)
        assert report.written == [] and report.skipped == FRAMES
        assert not stale.path.exists() and live.path.exists()
        removed = [w for w in report.warnings if "stale lock" in w]
        assert len(removed) == 1 and str(stale.path) in removed[0] and dead.stdout.strip() in removed[0]


def _cli(plate: str, matte: str, out: Path, weights: str, *extra: str) -> list[str]:
    return [
        EXE,
        "inpaint",
        plate,
        "-m",
        matte,
        "-o",
        str(out),
        "-w",
        weights,
        "-j",
        "1",
        "-p",
        "json",
        *extra,
    ]


def _wait_for_frames(proc: subprocess.Popen[str], count: int) -> int:
    assert proc.stdout is not None
    done = 0
    deadline = time.monotonic() + 120
    while done < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        done += json.loads(line)["event"] == "frame"
    return done


class TestProcess:
    @pytest.mark.parametrize(
        ("sig", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")]
    )
    def test_signal_stops_cleanly(
        self, sig: signal.Signals, code: int, name: str, weights: str, tmp_path: Path
    ) -> None:
        frames = list(range(1001, 1017))
        plate, matte, _ = _shot(tmp_path / "in", frames)
        out = tmp_path / "out"
        proc = subprocess.Popen(
            _cli(plate, matte, out / "o.####.exr", weights),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        done = _wait_for_frames(proc, 2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert done >= 2, "the render finished or failed before it could be stopped"
        assert proc.returncode == code, err
        stopped = [line for line in err.splitlines() if name in line]
        assert len(stopped) == 1 and "--resume" in stopped[0] and "Traceback" not in err
        assert _leftovers(out) == []  # no temp file, no lock
        written = sorted(out.glob("o.*.exr"))
        assert 2 <= len(written) < len(frames)
        for path in written:
            assert read_image(path).pixels.shape == (48, 64, 4)

    def test_identical_renders_do_not_both_run(self, weights: str, tmp_path: Path) -> None:
        frames = list(range(1001, 1017))
        plate, matte, _ = _shot(tmp_path / "in", frames)
        cmd = _cli(plate, matte, tmp_path / "out/o.####.exr", weights)
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert _wait_for_frames(first, 1) == 1
            first.send_signal(signal.SIGSTOP)  # paused mid-render, lock held: the render is "still running"
            second = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
        finally:
            first.send_signal(signal.SIGCONT)
            rest, _ = first.communicate(timeout=300)
        assert second.returncode != 0
        errors = _errors(second.stderr)
        assert len(errors) == 1 and ".combcn-lock" in errors[0] and f"pid {first.pid}" in errors[0], (
            second.stderr
        )
        assert first.returncode == 0
        assert json.loads(rest.splitlines()[-1])["written"] == len(frames)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"o.{f}.exr" for f in frames]

    def test_lock_of_a_render_killed_after_its_last_frame_is_removed_by_the_next(
        self, weights: str, tmp_path: Path
    ) -> None:
        """Renders killed with SIGKILL (a farm pre-empting a task): the first once its lock exists,
        the resume that renders the rest after its last frame, before it lets go of its lock; the
        final --resume has nothing to render and must still leave no lock behind."""
        frames = list(range(1001, 1017))
        plate, matte, _ = _shot(tmp_path / "in", frames)
        out = tmp_path / "out"
        cmd = _cli(plate, matte, out / "o.####.exr", weights)
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not list(out.glob(".*.combcn-lock")) and time.monotonic() < deadline:
            assert first.poll() is None, "the render ended before it could be killed"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        # the resume renders every frame left, then is held where it would release its lock
        held = "\n".join(
            [
                "import sys, time",
                "from combcn.engine.guards import OutputLock",
                "OutputLock.release = lambda self: time.sleep(600)",
                "from combcn.cli import main",
                "sys.exit(main(sys.argv[1:]))",
            ]
        )
        second = subprocess.Popen(
            [sys.executable, "-c", held, *cmd[1:], "--resume"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert second.stdout is not None
        done, total = 0, -1
        deadline = time.monotonic() + 120
        while done != total and time.monotonic() < deadline:
            line = second.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            if event["event"] == "frame":
                done, total = event["done"], event["total"]
        second.send_signal(signal.SIGKILL)
        second.wait(timeout=30)
        assert done == total > 0, "the resume did not render the frames left"
        assert sorted(p.name for p in out.glob("o.*.exr")) == [f"o.{f}.exr" for f in frames]
        assert len(list(out.glob(".*.combcn-lock"))) == 1  # the killed resume's
        last = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
        assert last.returncode == 0, last.stderr
        summary = json.loads(last.stdout.splitlines()[-1])
        assert summary["written"] == 0 and summary["skipped"] == len(frames)
        assert _leftovers(out) == [], "a stale lock was left among the delivered frames"

    def test_different_chunks_run_together(self, weights: str, tmp_path: Path) -> None:
        frames = list(range(1001, 1017))
        plate, matte, _ = _shot(tmp_path / "in", frames)
        out = tmp_path / "out/o.####.exr"
        first = subprocess.Popen(
            _cli(plate, matte, out, weights, "-f", "1001-1008"),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert _wait_for_frames(first, 1) == 1
            first.send_signal(signal.SIGSTOP)  # the first chunk holds its lock while the second runs
            second = subprocess.run(
                _cli(plate, matte, out, weights, "-f", "1009-1016"),
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            first.send_signal(signal.SIGCONT)
            first.communicate(timeout=300)
        assert second.returncode == 0, second.stderr
        assert first.returncode == 0
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"o.{f}.exr" for f in frames]


@pytest.mark.parametrize("box", [(3, 9, 4, 12), (0, 16, 0, 20), (0, 5, 7, 20), (10, 16, 0, 3)])
def test_known_range_is_the_range_of_every_pixel_outside_the_hole(box: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(sum(box))
    plate = rng.normal(0.0, 3.0, (16, 20, 3)).astype(np.float32)
    y0, y1, x0, x1 = box
    known_in_box = rng.random((y1 - y0, x1 - x0)) > 0.6
    known = np.ones((16, 20), bool)
    known[y0:y1, x0:x1] = known_in_box
    hidden = ~known
    plate[hidden] = 100.0  # hole pixels must not count
    span = known_range(plate, box, known_in_box)
    if not known.any():
        assert span is None
        return
    assert span is not None
    np.testing.assert_array_equal(span[0], plate[known].min(axis=0))
    np.testing.assert_array_equal(span[1], plate[known].max(axis=0))
    plate[0, 0] = np.nan  # the API takes arrays the reader would refuse: only finite pixels count
    plate[15, 19, 1] = np.inf
    span = known_range(plate, box, known_in_box)
    finite = known & np.isfinite(plate).all(-1)
    assert span is not None
    np.testing.assert_array_equal(span[1], plate[finite].max(axis=0))


def test_files_are_written_behind_the_render_in_order_and_a_write_error_stops_it(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes run on a background thread; frames still count as written in order, only once their file
    is complete, and a failed write is the render's error (frames handed over before it are complete,
    no temp file is left)."""
    import threading

    import combcn.engine.sequence as sequence_module

    plate, matte, _ = _shot(tmp_path / "in")
    real = sequence_module.write_image_atomic
    threads: list[str] = []

    def slow_write(path: Path, *args: object, **kwargs: object) -> Path:
        threads.append(threading.current_thread().name)
        time.sleep(0.05)  # later frames are computed while this one is written
        if "fail" in str(path) and path.name.endswith(f"{FRAMES[2]:04d}.exr"):
            raise OutputError("writing failed: disk full", path=path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sequence_module, "write_image_atomic", slow_write)
    done: list[int] = []
    progress = lambda event: done.append(event["frame"]) if event["event"] == "frame" else None  # noqa: E731
    out = tmp_path / "ok" / "o.####.exr"
    report = combcn.inpaint_sequence(plate, matte, str(out), engine=engine, progress=progress)
    assert report.written == done == FRAMES
    assert all(name.startswith("combcn-write") for name in threads)
    assert all((tmp_path / "ok" / f"o.{f:04d}.exr").is_file() for f in FRAMES)
    with pytest.raises(OutputError, match="disk full"):
        combcn.inpaint_sequence(plate, matte, str(tmp_path / "fail" / "o.####.exr"), engine=engine)
    files = sorted(p.name for p in (tmp_path / "fail").iterdir())
    assert f"o.{FRAMES[2]:04d}.exr" not in files and f"o.{FRAMES[1]:04d}.exr" in files
    assert not _leftovers(tmp_path / "fail")
