"""The Open Job Description template in farm/, run locally with openjd-cli on a real EXR sequence."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import moving_box_matte, one_thread, tiny_model, write_sequence  # noqa: F401

import combcn
from combcn.io import read_image

TEMPLATE = Path(__file__).resolve().parents[1] / "farm" / "combcn_inpaint.openjd.yaml"
BIN = Path(sys.executable).parent


def _openjd() -> str:
    exe = shutil.which("openjd", path=str(BIN)) or shutil.which("openjd")
    assert exe, "openjd-cli is in the dev extra: pip install -e '.[dev]'"
    return exe


def test_template_validates() -> None:
    proc = subprocess.run([_openjd(), "check", str(TEMPLATE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.usefixtures("one_thread")
def test_chunked_farm_job_equals_single_render(tmp_path: Path) -> None:
    from combcn.model import save_weights

    frames = list(range(1001, 1011))
    plate, matte, stored = write_sequence(tmp_path / "in", frames, matte=moving_box_matte(10, 48, 64))
    assert matte is not None
    weights = tmp_path / "tiny.pt"
    save_weights(tiny_model(), weights)
    params = {
        "Plate": plate,
        "Matte": matte,
        "Output": str(tmp_path / "farm/o.####.exr"),
        "Frames": "1001-1010",
        "ChunkSize": "4",
        "Combcn": str(BIN / "combcn"),
        "Weights": str(weights),
        "Threads": "1",
    }
    cmd = [_openjd(), "run", str(TEMPLATE)] + [a for k, v in params.items() for a in ("-p", f"{k}={v}")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Chunks run: 3" in proc.stdout
    single = combcn.inpaint_sequence(plate, matte, str(tmp_path / "single/o.####.exr"), weights=str(weights))
    assert single.written == frames
    matte_values = moving_box_matte(10, 48, 64)
    for i, f in enumerate(frames):
        farm = read_image(tmp_path / f"farm/o.{f}.exr").pixels
        ref = read_image(tmp_path / f"single/o.{f}.exr").pixels
        np.testing.assert_array_equal(farm[matte_values[i] < 0.5], stored[f][matte_values[i] < 0.5])
        # Same windows, same inputs, one thread each: bit-identical (docs/FARM.md states the tolerance).
        np.testing.assert_array_equal(farm, ref)
