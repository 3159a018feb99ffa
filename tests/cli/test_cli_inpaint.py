"""``combcn inpaint`` on real EXR sequences: progress, refusals, and one clear error per bad input.

Bad-input tests run the CLI in-process (``combcn.cli.main``) for speed; the kill-and-resume test runs
``.venv/bin/combcn`` as a real subprocess and kills it mid-render.
"""

from __future__ import annotations

import json
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
from helpers import moving_box_matte, one_thread, plate_spec, tiny_model, write_sequence  # noqa: F401

from combcn.cli import main
from combcn.io import ImageData, read_image, write_image_atomic

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = [1001, 1002, 1003, 1004]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    from combcn.model import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(tiny_model(), path)
    return str(path)


def _shot(
    folder: Path, frames: list[int] = FRAMES, **kwargs: object
) -> tuple[str, str, dict[int, np.ndarray]]:
    plate, matte, stored = write_sequence(
        folder, frames, matte=moving_box_matte(len(frames), 48, 64), **kwargs
    )
    assert matte is not None
    return plate, matte, stored


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["inpaint", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def test_smoke_progress_json(tmp_path: Path, weights: str, capsys: pytest.CaptureFixture[str]) -> None:
    plate, matte, stored = _shot(tmp_path / "in")
    out = str(tmp_path / "out" / "clean.%04d.exr")
    rc, stdout, _ = _run(capsys, plate, "--matte", matte, "-o", out, "-w", weights, "--progress", "json")
    assert rc == 0
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[-1] == {"event": "done", "written": 4, "skipped": 0}
    assert [e["frame"] for e in events[:-1]] == FRAMES
    assert [e["done"] for e in events[:-1]] == [1, 2, 3, 4] and {e["total"] for e in events[:-1]} == {4}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"clean.{f}.exr" for f in FRAMES]
    # existing outputs are refused without --resume / --overwrite, then skipped / replaced with them
    rc, _, err = _run(capsys, plate, "-m", matte, "-o", out, "-w", weights, "-p", "none")
    assert rc != 0 and "--resume" in err and "--overwrite" in err
    rc, stdout, _ = _run(capsys, plate, "-m", matte, "-o", out, "-w", weights, "-p", "json", "--resume")
    assert rc == 0 and json.loads(stdout.splitlines()[-1]) == {"event": "done", "written": 0, "skipped": 4}
    rc, _, _ = _run(
        capsys, plate, "-m", matte, "-o", out, "-w", weights, "-p", "none", "--overwrite", "-f", "1002"
    )
    assert rc == 0


def test_help_shows_defaults_and_short_forms(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["inpaint", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "-m MATTE, --matte",
        "-o OUTPUT, --output",
        "-f SET, --frames",
        "-r, --resume",
        "--progress {bar,json,none}",
        "default: 0.5",
    ):
        assert flag in text


def test_empty_matte_copies_through_with_a_warning(
    tmp_path: Path, weights: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    plate, matte, stored = _shot(tmp_path / "in")
    for f in FRAMES:
        write_image_atomic(
            tmp_path / "in" / f"matte.{f}.exr",
            ImageData(np.zeros((48, 64, 1), np.float16), read_image(tmp_path / "in" / f"matte.{f}.exr").spec),
        )
    rc, _, err = _run(capsys, plate, "-m", matte, "-o", str(tmp_path / "out/o.####.exr"), "-w", weights)
    assert rc == 0 and "matte is empty" in caplog.text
    for f in FRAMES:
        np.testing.assert_array_equal(read_image(tmp_path / f"out/o.{f}.exr").pixels, stored[f])


def _break_missing_frame(folder: Path) -> list[str]:
    (folder / "plate.1003.exr").unlink()
    return ["missing", "1003"]


def _break_size(folder: Path) -> list[str]:
    spec = oiio.ImageSpec(32, 24, 1, "half")
    spec.channelnames = ("A",)
    write_image_atomic(folder / "matte.1002.exr", ImageData(np.ones((24, 32, 1), np.float16), spec))
    return ["matte is 32x24", "plate is 64x48", "1002"]


def _break_nan(folder: Path) -> list[str]:
    data = read_image(folder / "plate.1004.exr")
    data.pixels[5, 7, 1] = np.inf
    write_image_atomic(folder / "plate.1004.exr", data)
    return ["NaN or Inf", "1004"]


def _break_full_matte(folder: Path) -> list[str]:
    data = read_image(folder / "matte.1002.exr")
    data.pixels[...] = 1.0
    write_image_atomic(folder / "matte.1002.exr", data)
    return ["whole frame", "1002"]


def _break_unreadable(folder: Path) -> list[str]:
    (folder / "plate.1002.exr").write_bytes(b"\x76\x2f\x31\x01 truncated")
    return ["cannot read", "plate.1002.exr"]


BAD_INPUTS = {
    "missing_frame": (_break_missing_frame, []),
    "size_mismatch": (_break_size, []),
    "nan_in_plate": (_break_nan, []),
    "full_matte": (_break_full_matte, []),
    "unreadable_file": (_break_unreadable, []),
    "unknown_channel": (lambda folder: ["no channel 'mask.A'", "A"], ["--matte-channel", "mask.A"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_exception_bad_input_one_message_nothing_written(
    case: str, tmp_path: Path, weights: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plate, matte, _ = _shot(tmp_path / "in")
    breaker, extra = BAD_INPUTS[case]
    expected = breaker(tmp_path / "in")
    rc, _, err = _run(
        capsys, plate, "-m", matte, "-o", str(tmp_path / "out/o.####.exr"), "-w", weights, *extra
    )
    assert rc != 0
    errors = _errors(err)
    assert len(errors) == 1, err
    for word in expected:
        assert word in errors[0], errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_exception_output_folder_not_writable(
    tmp_path: Path, weights: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plate, matte, _ = _shot(tmp_path / "in")
    (tmp_path / "blocker").write_bytes(b"")
    rc, _, err = _run(
        capsys, plate, "-m", matte, "-o", str(tmp_path / "blocker/sub/o.####.exr"), "-w", weights
    )
    assert rc != 0 and len(_errors(err)) == 1 and "output folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the case above covers it")
def test_exception_output_folder_read_only(
    tmp_path: Path, weights: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plate, matte, _ = _shot(tmp_path / "in")
    (tmp_path / "ro").mkdir(mode=0o500)
    rc, _, err = _run(capsys, plate, "-m", matte, "-o", str(tmp_path / "ro/o.####.exr"), "-w", weights)
    assert rc != 0 and "not writable" in err


@pytest.mark.parametrize("out_name", ["plate.####.exr", "plate.%04d.exr", "plate.@@@@.exr"])
def test_exception_output_equal_to_input(
    out_name: str, tmp_path: Path, weights: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plate, matte, stored = _shot(tmp_path / "in")
    rc, _, err = _run(capsys, plate, "-m", matte, "-o", str(tmp_path / "in" / out_name), "-w", weights)
    assert rc != 0 and "never writes over its input" in err
    for f in FRAMES:
        np.testing.assert_array_equal(read_image(tmp_path / f"in/plate.{f}.exr").pixels, stored[f])


def test_killed_render_resumes_without_a_bad_frame(tmp_path: Path, weights: str) -> None:
    frames = list(range(1001, 1017))
    plate, matte, stored = _shot(tmp_path / "in", frames)
    out_dir = tmp_path / "out"
    exe = shutil.which("combcn", path=str(Path(sys.executable).parent)) or "combcn"
    cmd = [
        exe,
        "inpaint",
        plate,
        "-m",
        matte,
        "-o",
        str(out_dir / "o.####.exr"),
        "-w",
        weights,
        "-j",
        "1",
        "--progress",
        "json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    done = 0
    deadline = time.monotonic() + 90
    while done < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        done += json.loads(line)["event"] == "frame"
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: like a farm node dying
    proc.wait(timeout=30)
    assert done >= 3, "the render finished or failed before it could be killed"
    finished = sorted(p.name for p in out_dir.glob("o.*.exr"))
    assert 3 <= len(finished) < len(frames)
    for name in finished:  # every frame under its final name is complete
        assert read_image(out_dir / name).pixels.shape == (48, 64, 4)
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.splitlines()[-1])
    assert summary["skipped"] == len(finished) and summary["written"] == len(frames) - len(finished)
    assert sorted(p.name for p in out_dir.iterdir()) == [f"o.{f}.exr" for f in frames]  # no temp files left
    matte_values = moving_box_matte(len(frames), 48, 64)
    for i, f in enumerate(frames):
        out = read_image(out_dir / f"o.{f}.exr").pixels
        np.testing.assert_array_equal(out[matte_values[i] < 0.5], stored[f][matte_values[i] < 0.5])


def test_expected_error_written_to_the_metadata(
    tmp_path: Path, weights: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # the probe holes' figure reaches the compositor in each output's header; --no-probe writes none
    import OpenImageIO as oiio

    from combcn.engine.sequence import EXPECTED_ERROR_ATTRIBUTE

    plate, matte, _ = _shot(tmp_path / "in")
    probed, plain = str(tmp_path / "a" / "o.####.exr"), str(tmp_path / "b" / "o.####.exr")
    assert (
        _run(capsys, plate, "-m", matte, "-o", probed, "-w", weights, "-p", "none", "--no-propagate")[0] == 0
    )
    assert (
        _run(
            capsys,
            plate,
            "-m",
            matte,
            "-o",
            plain,
            "-w",
            weights,
            "-p",
            "none",
            "--no-propagate",
            "--no-probe",
        )[0]
        == 0
    )
    for frame in FRAMES:
        spec = oiio.ImageInput.open(str(tmp_path / "a" / f"o.{frame}.exr")).spec()
        value = spec.getattribute(EXPECTED_ERROR_ATTRIBUTE)
        assert isinstance(value, float) and 0.0 <= value < 255.0
        assert (
            oiio.ImageInput.open(str(tmp_path / "b" / f"o.{frame}.exr"))
            .spec()
            .getattribute(EXPECTED_ERROR_ATTRIBUTE)
            is None
        )
