"""``combcn inpaint --reference``: frames the artist cleaned, given on the command line as real EXR files.

Run in-process (``combcn.cli.main``); the plate is a locked-off shot of the other CLI tests' noise
(one frame held), a box matte moving one pixel a frame, and a reference is the plate frame itself
(what the matte hides is then known exactly), written through OpenImageIO.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import moving_box_matte, one_thread, plate_spec, tiny_model, write_sequence  # noqa: F401

from combcn.cli import main
from combcn.io import ImageData, read_image, write_image_atomic

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = list(range(1001, 1011))  # windows of 4: a reference at 1002 lies outside the later windows


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    from combcn.model import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(tiny_model(), path)
    return str(path)


@pytest.fixture
def shot(tmp_path: Path) -> tuple[str, str, dict[int, np.ndarray]]:
    plate, matte, stored = write_sequence(
        tmp_path / "in", FRAMES, matte=moving_box_matte(len(FRAMES), 48, 64)
    )
    assert matte is not None
    for f in FRAMES:  # locked off: every frame shows the same background
        write_image_atomic(tmp_path / "in" / f"plate.{f}.exr", ImageData(stored[FRAMES[0]], plate_spec()))
        stored[f] = stored[FRAMES[0]]
    return plate, matte, stored


def _clean(folder: Path, frame: int, pixels: np.ndarray, name: str = "clean") -> Path:
    """A cleaned frame on disk: ``name.FRAME.exr`` holding ``pixels`` (the plate's spec)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{frame}.exr"
    write_image_atomic(path, ImageData(pixels, plate_spec()))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = main(["inpaint", *argv])
    return rc, capsys.readouterr().err


def _hole(matte_pattern: str, frame: int) -> np.ndarray:
    return read_image(matte_pattern.replace("####", str(frame))).pixels[..., 0] > 0.5


def test_help_lists_the_reference_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["inpaint", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "-R FRAME=FILE|PATTERN, --reference FRAME=FILE|PATTERN" in text
    assert "--reference-wins" in text and "2 from a reference frame" in text


@pytest.mark.parametrize("form", ["numbered", "pattern"])
def test_the_reference_fills_its_frame_and_is_carried(
    form: str,
    tmp_path: Path,
    weights: str,
    shot: tuple[str, str, dict[int, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    plate, matte, stored = shot
    clean = _clean(tmp_path / "paint", 1002, stored[1002])
    given = f"1002={clean}" if form == "numbered" else str(tmp_path / "paint" / "clean.####.exr")
    out = tmp_path / "out"
    rc, err = _run(
        capsys,
        plate,
        "-m",
        matte,
        "-o",
        str(out / "o.####.exr"),
        "-w",
        weights,
        "-p",
        "none",
        "--reference",
        given,
    )
    assert rc == 0, err
    for f in FRAMES:
        written = read_image(out / f"o.{f}.exr").pixels
        hole = _hole(matte, f)
        assert np.array_equal(written[~hole], stored[f][~hole])  # bit-exact outside the matte
        if f == 1002:  # the reference's own frame is the reference
            assert np.array_equal(written, stored[f])


def test_chunked_renders_and_resume_equal_a_single_render(
    tmp_path: Path,
    weights: str,
    shot: tuple[str, str, dict[int, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    plate, matte, stored = shot
    given = f"1002={_clean(tmp_path / 'paint', 1002, stored[1002])}"
    common = ["-m", matte, "-w", weights, "-p", "none", "--reference", given]
    assert _run(capsys, plate, "-o", str(tmp_path / "single/o.####.exr"), *common)[0] == 0
    for chunk in ("1001-1004", "1005-1007", "1008-1010"):
        assert _run(capsys, plate, "-o", str(tmp_path / "chunks/o.####.exr"), "-f", chunk, *common)[0] == 0
    assert _run(capsys, plate, "-o", str(tmp_path / "resumed/o.####.exr"), "-f", "1001-1006", *common)[0] == 0
    assert _run(capsys, plate, "-o", str(tmp_path / "resumed/o.####.exr"), "--resume", *common)[0] == 0
    for f in FRAMES:
        single = read_image(tmp_path / f"single/o.{f}.exr").pixels
        assert np.array_equal(single, read_image(tmp_path / f"chunks/o.{f}.exr").pixels), f"frame {f}"
        assert np.array_equal(single, read_image(tmp_path / f"resumed/o.{f}.exr").pixels), f"frame {f}"
    # the reference filled what the windows of 1008 and 1009 do not show (the test could fail): it
    # holds the background exactly; without it that part is synthesised
    assert _run(capsys, plate, "-o", str(tmp_path / "none/o.####.exr"), *common[:-2])[0] == 0
    for f in (1008, 1009):
        hole = _hole(matte, f)
        assert np.array_equal(read_image(tmp_path / f"single/o.{f}.exr").pixels, stored[f]), f"frame {f}"
        assert not np.array_equal(read_image(tmp_path / f"none/o.{f}.exr").pixels[hole], stored[f][hole])


def _other_size(folder: Path, stored: dict[int, np.ndarray]) -> tuple[list[str], list[str]]:
    spec = plate_spec(32, 24)
    write_image_atomic(folder / "small.exr", ImageData(np.zeros((24, 32, 4), np.float16), spec))
    return [f"1002={folder / 'small.exr'}"], [
        "reference is 32x24",
        "plate is 64x48",
        "frame 1002",
        "small.exr",
    ]


def _outside(folder: Path, stored: dict[int, np.ndarray]) -> tuple[list[str], list[str]]:
    clean = _clean(folder, 1099, stored[1002])
    return [f"1099={clean}"], ["frame 1099", "plate does not have", "1001-1010", "clean.1099.exr"]


def _no_number(folder: Path, stored: dict[int, np.ndarray]) -> tuple[list[str], list[str]]:
    write_image_atomic(folder / "clean.exr", ImageData(stored[1002], plate_spec()))
    return [str(folder / "clean.exr")], ["no frame number", "FRAME=FILE", "clean.exr"]


def _unreadable(folder: Path, stored: dict[int, np.ndarray]) -> tuple[list[str], list[str]]:
    path = _clean(folder, 1002, stored[1002])
    path.write_bytes(b"\x76\x2f\x31\x01 truncated")
    return [f"1002={path}"], ["cannot read", "clean.1002.exr", "frame 1002"]


def _missing(folder: Path, stored: dict[int, np.ndarray]) -> tuple[list[str], list[str]]:
    return [f"1002={folder / 'nope.1002.exr'}"], ["no reference frames found", "nope.1002.exr"]


def _twice(folder: Path, stored: dict[int, np.ndarray]) -> tuple[list[str], list[str]]:
    clean = _clean(folder, 1002, stored[1002])
    return [f"1002={clean}", str(folder / "clean.####.exr")], ["frame 1002", "two references"]


def _nan(folder: Path, stored: dict[int, np.ndarray]) -> tuple[list[str], list[str]]:
    pixels = stored[1002].copy()
    pixels[20, 20, 0] = np.nan
    return [f"1002={_clean(folder, 1002, pixels)}"], ["NaN or Inf", "reference", "frame 1002"]


def _no_propagate(folder: Path, stored: dict[int, np.ndarray]) -> tuple[list[str], list[str]]:
    return [f"1002={_clean(folder, 1002, stored[1002])}", "--no-propagate"], ["propagation", "--no-propagate"]


BAD_REFERENCES = {
    "other_size": _other_size,
    "frame_outside_the_plate": _outside,
    "no_frame_number": _no_number,
    "unreadable": _unreadable,
    "missing_file": _missing,
    "given_twice": _twice,
    "nan": _nan,
    "without_propagation": _no_propagate,
}


@pytest.mark.parametrize("case", sorted(BAD_REFERENCES))
def test_exception_a_bad_reference_is_one_line_and_nothing_is_written(
    case: str,
    tmp_path: Path,
    weights: str,
    shot: tuple[str, str, dict[int, np.ndarray]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    plate, matte, stored = shot
    (tmp_path / "paint").mkdir()
    given, expected = BAD_REFERENCES[case](tmp_path / "paint", stored)
    argv = []
    for item in given:
        argv += [item] if item.startswith("--") else ["--reference", item]
    rc, err = _run(capsys, plate, "-m", matte, "-o", str(tmp_path / "out/o.####.exr"), "-w", weights, *argv)
    assert rc != 0
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    for word in expected:
        assert word in errors[0], errors[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
