"""Reference frames: a frame the artist cleaned, carried along the motion to the rest of the shot.

The plates are the synthetic camera moves of ``test_propagate`` (the truth behind the occluder is
known); a reference is the truth at one frame. The network is a tiny random one, so a hole pixel it
fills is far from the truth: what these tests measure is what the reference carried.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
import torch
from helpers import one_thread, tiny_model  # noqa: F401 (fixture)
from test_propagate import (
    MEAN_TOLERANCE,
    P95_TOLERANCE,
    H,
    T,
    W,
    _run,
    _write,
    synthetic_shot,
)

import combcn
from combcn.engine import Engine
from combcn.engine.core import FrameFill, RenderSettings, render_windows
from combcn.engine.engine import _references
from combcn.engine.propagate import PropagationSettings
from combcn.engine.sequence import QC_REFERENCED
from combcn.engine.shaper import get_shaper
from combcn.errors import ConfigError, InputError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine() -> Engine:
    torch.manual_seed(0)
    return Engine(model=tiny_model(window=16, resolution=32), device="cpu")  # one window holds a shot


@pytest.fixture(scope="module")
def short_windows() -> Engine:
    """Windows of 4 frames: a reference 9 frames away lies in another window."""
    torch.manual_seed(0)
    return Engine(model=tiny_model(window=4, resolution=32), device="cpu")


def hidden_everywhere() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pan whose occluder moves with the background: no frame shows what it hides, so without a
    reference every hole pixel is synthesised. (plate, truth, matte) as ``synthetic_shot``."""
    _, truth, _ = synthetic_shot("pan", parallax=False)
    yy, xx = np.mgrid[0:H, 0:W]
    matte = np.zeros((T, H, W), np.float32)
    for t in range(T):  # the pan moves the background by (-2.5, -0.8) pixels a frame
        matte[t] = (yy - (50 - 0.8 * t)) ** 2 + (xx - (80 - 2.5 * t)) ** 2 <= 14**2
    plate = np.where(matte[..., None] > 0, np.float32([0.9, 0.1, 0.9]), truth)
    return plate, truth, matte


def _errors(out: np.ndarray, truth: np.ndarray, matte: np.ndarray) -> list[np.ndarray]:
    """Per frame, the largest channel error of every hole pixel."""
    return [np.abs(out[t] - truth[t]).max(-1)[matte[t] > 0] for t in range(T)]


def _within_propagation_tolerance(errors: list[np.ndarray], skip: int) -> None:
    for t, err in enumerate(errors):
        if t == skip:
            continue
        assert err.mean() < MEAN_TOLERANCE, f"frame {t}: mean error {err.mean():.4f}"
        assert np.percentile(err, 95) < P95_TOLERANCE, (
            f"frame {t}: 95th percentile {np.percentile(err, 95):.4f}"
        )


class TestCarry:
    @pytest.mark.parametrize("reference", [0, 5, 9])
    def test_a_reference_fills_frames_no_other_frame_shows(
        self, short_windows: Engine, reference: int
    ) -> None:
        """Forwards (from frame 0), backwards (from 9) and both ways (from 5), across windows of 4
        frames: every frame's hole, which no other frame shows, within the propagated pixels'
        tolerances; the reference frame itself is the reference."""
        plate, truth, matte = hidden_everywhere()
        without = _errors(_run(short_windows, plate, matte), truth, matte)
        assert min(e.mean() for e in without) > 0.05  # the network alone is far off: the test can fail
        out = _run(short_windows, plate, matte, references={reference: truth[reference]})
        errors = _errors(out, truth, matte)
        assert errors[reference].max() < 1e-6
        _within_propagation_tolerance(errors, reference)
        hole = matte > 0
        assert np.array_equal(out[~hole], plate[~hole])

    @pytest.mark.parametrize("kind", ["zoom", "rotate"])
    def test_a_reference_follows_zoom_and_rotation(self, engine: Engine, kind: str) -> None:
        plate, truth, matte = synthetic_shot(kind, exposure=0.03, parallax=False)
        out = _run(engine, plate, matte, references={4: truth[4]})
        errors = _errors(out, truth, matte)
        assert errors[4].max() < 1e-6
        # pooled over the other frames, as test_propagate measures propagated pixels (the frames far
        # from every source, here the last of a zoom, are the worst with or without a reference)
        pooled = np.concatenate(errors[:4] + errors[5:])
        assert pooled.mean() < MEAN_TOLERANCE and np.percentile(pooled, 95) < P95_TOLERANCE

    def test_a_locked_off_static_box_takes_the_reference_exactly(self, engine: Engine) -> None:
        _, still, _ = synthetic_shot("still", parallax=False)
        matte = np.zeros((T, H, W), np.float32)
        matte[:, 30:60, 50:90] = 1.0
        plate = np.where(matte[..., None] > 0, np.float32(0.5), still)
        assert np.abs(_run(engine, plate, matte) - still).max() > 0.05
        out = _run(engine, plate, matte, references={3: still[3]})
        assert np.abs(out - still).max() < 1e-5

    def test_only_the_references_hole_is_used(self, engine: Engine) -> None:
        """A clean plate that differs outside the hole (another take, a grade) changes nothing there."""
        _, still, _ = synthetic_shot("still", parallax=False)
        matte = np.zeros((T, H, W), np.float32)
        matte[:, 30:60, 50:90] = 1.0
        plate = np.where(matte[..., None] > 0, np.float32(0.5), still)
        reference = still[3].copy()
        reference[matte[3] == 0] = 0.0
        out = _run(engine, plate, matte, references={3: reference})
        assert np.abs(out - still).max() < 1e-5


def _fills(
    engine: Engine, plate: np.ndarray, matte: np.ndarray, **references: object
) -> dict[int, FrameFill]:
    """Every frame's :class:`FrameFill` (its QC maps), through the engine's window loop."""
    refs = _references(references["given"], references.get("wins", False), plate, list(matte))
    fills: dict[int, FrameFill] = {}
    render_windows(
        engine.model,
        T,
        range(T),
        lambda p, b: plate[p, b[0] : b[1], b[2] : b[3]].copy(),
        lambda p: matte[p],
        fills.__setitem__,
        shaper=get_shaper("none"),
        settings=RenderSettings(),
        device=engine.device,
        propagation=PropagationSettings(),
        references=refs,
    )
    return fills


class TestPrecedence:
    def test_nearer_real_pixels_win_unless_the_reference_is_asked_to(self, engine: Engine) -> None:
        """The occluder moves 9 pixels a frame: frame 0's hole is shown by frames 1-3, nearer than a
        reference at 6. By default they fill it; with ``wins`` the reference does."""
        plate, truth, matte = synthetic_shot("pan", parallax=False)
        for wins, least, most in ((False, 0.0, 0.2), (True, 0.9, 1.0)):
            fills = _fills(engine, plate, matte, given={6: truth[6]}, wins=wins)
            first = fills[0]
            assert first.referenced is not None and first.offset is not None and first.alpha is not None
            share = first.referenced[first.alpha > 0].mean()
            assert least <= share <= most, f"wins={wins}: {share:.2f} of frame 0 from the reference"
            assert np.all(first.offset[first.referenced] == 6)
            assert fills[6].referenced is not None and fills[6].referenced[fills[6].alpha > 0].all()

    def test_the_nearest_of_two_references_wins(self, engine: Engine) -> None:
        """Each frame's fill comes mostly from the reference nearer along the trace."""
        plate, truth, matte = hidden_everywhere()
        fills = _fills(engine, plate, matte, given={1: truth[1], 8: truth[8]})
        for t, nearest in ((0, 1), (3, 1), (6, 8), (9, 8)):
            fill = fills[t]
            assert fill.referenced is not None and fill.offset is not None
            inside = fill.alpha is not None and fill.alpha > 0
            offsets = fill.offset[fill.referenced & inside]
            assert fill.referenced[inside].mean() > 0.9
            # (where the two agree they are blended, weighed by how well each fits: mostly the nearer)
            assert np.mean(offsets == nearest - t) > 0.75, f"frame {t}: {np.unique(offsets)}"


class TestException:
    def test_bad_references_are_refused(self, engine: Engine) -> None:
        plate, truth, matte = synthetic_shot("pan", parallax=False)
        with pytest.raises(InputError, match="not a frame"):
            engine.inpaint(plate, matte, references={T: truth[0]})
        with pytest.raises(InputError, match="frame 2: the reference is"):
            engine.inpaint(plate, matte, references={2: truth[2, :50]})
        broken = truth[2].copy()
        broken[matte[2] > 0] = np.nan
        with pytest.raises(InputError, match="NaN"):
            engine.inpaint(plate, matte, references={2: broken})
        with pytest.raises(ConfigError, match="propagat"):
            engine.inpaint(plate, matte, references={2: truth[2]}, propagate=False)
        with pytest.raises(ConfigError, match="dict"):
            engine.inpaint(plate, matte, references=[truth[2]])
        with pytest.raises(ConfigError, match="reference_wins"):
            _references({2: truth[2]}, "yes", plate, list(matte))

    def test_api_function_takes_references(self) -> None:
        plate, truth, matte = hidden_everywhere()
        out = combcn.inpaint(
            plate,
            matte,
            model=tiny_model(window=16, resolution=32),
            device="cpu",
            shaper="none",
            references={0: torch.from_numpy(truth[0])},
        )
        _within_propagation_tolerance(_errors(out, truth, matte), 0)


def _read(path: Path) -> np.ndarray:
    pixels: np.ndarray = oiio.ImageBuf(str(path)).get_pixels(oiio.FLOAT)
    return pixels


class TestSequence:
    """Real EXR files through OpenImageIO: ``inpaint_sequence(references={frame: path})``."""

    @pytest.fixture
    def shot(self, tmp_path: Path) -> tuple[str, str, str, np.ndarray]:
        plate, truth, matte = hidden_everywhere()
        plate = np.concatenate([plate, plate[::-1]])  # 20 frames: windows of 4 overlapping by 1
        matte = np.concatenate([matte, matte[::-1]])
        truth = np.concatenate([truth, truth[::-1]])
        plate_p = _write(tmp_path / "in", "plate", plate, ("R", "G", "B"))
        matte_p = _write(tmp_path / "in", "matte", matte, ("A",))
        _write(tmp_path / "paint", "clean", truth[:3], ("R", "G", "B"))  # the truth at 1001-1003
        return plate_p, matte_p, str(tmp_path / "paint" / "clean.1003.exr"), truth

    def test_chunked_renders_equal_a_single_render(
        self, short_windows: Engine, tmp_path: Path, shot: tuple[str, str, str, np.ndarray]
    ) -> None:
        plate_p, matte_p, clean, truth = shot
        single = tmp_path / "single"
        combcn.inpaint_sequence(
            plate_p,
            matte_p,
            str(single / "o.####.exr"),
            engine=short_windows,
            shaper="none",
            references={1003: clean},
        )
        chunks = tmp_path / "chunks"
        for part in ("1001-1006", "1007-1013", "1014-1020"):
            combcn.inpaint_sequence(
                plate_p,
                matte_p,
                str(chunks / "o.####.exr"),
                part,
                engine=short_windows,
                shaper="none",
                references={1003: clean},
            )
        for f in range(1001, 1021):
            a, b = _read(single / f"o.{f}.exr"), _read(chunks / f"o.{f}.exr")
            assert np.array_equal(a, b), f"frame {f}"
        # frames after the first window took the reference: near the truth, not the network's guess
        err = np.abs(_read(single / "o.1010.exr") - truth[9]).max(-1)
        assert err.mean() < 0.01

    def test_resume_renders_the_rest_as_one_render_would(
        self, short_windows: Engine, tmp_path: Path, shot: tuple[str, str, str, np.ndarray]
    ) -> None:
        plate_p, matte_p, clean, _ = shot
        options = {"engine": short_windows, "shaper": "none", "references": {1003: clean}}
        combcn.inpaint_sequence(plate_p, matte_p, str(tmp_path / "a" / "o.####.exr"), **options)
        combcn.inpaint_sequence(plate_p, matte_p, str(tmp_path / "b" / "o.####.exr"), "1001-1008", **options)
        report = combcn.inpaint_sequence(
            plate_p, matte_p, str(tmp_path / "b" / "o.####.exr"), resume=True, **options
        )
        assert report.skipped == list(range(1001, 1009)) and report.written == list(range(1009, 1021))
        for f in range(1001, 1021):
            assert np.array_equal(_read(tmp_path / "a" / f"o.{f}.exr"), _read(tmp_path / "b" / f"o.{f}.exr"))

    def test_qc_marks_reference_pixels_and_their_source_frame(
        self, short_windows: Engine, tmp_path: Path, shot: tuple[str, str, str, np.ndarray]
    ) -> None:
        plate_p, matte_p, clean, _ = shot
        out = tmp_path / "qc" / "o.####.exr"
        combcn.inpaint_sequence(
            plate_p,
            matte_p,
            str(out),
            "1001-1008",
            engine=short_windows,
            shaper="none",
            qc=True,
            references={1003: clean},
        )
        for f in range(1001, 1009):
            buf = oiio.ImageBuf(str(tmp_path / "qc" / f"o.{f}.exr"))
            names = list(buf.spec().channelnames)
            pixels = buf.get_pixels(oiio.FLOAT)
            revealed, offset = (
                pixels[..., names.index("fill.revealed")],
                pixels[..., names.index("fill.offset")],
            )
            matte = oiio.ImageBuf(matte_p.replace("####", f"{f}")).get_pixels(oiio.FLOAT)[..., 0] > 0
            assert np.all(revealed[~matte] == 0) and np.all(offset[~matte] == 0)
            marked = revealed == QC_REFERENCED
            assert marked[matte].mean() > 0.9, f"frame {f}"
            assert np.all(offset[marked] == 1003 - f), f"frame {f}"


class TestEval:
    def test_reference_middle_gives_the_engine_the_true_middle_frame(self, engine: Engine) -> None:
        """``combcn eval --reference-middle``: on a locked-off static box (pure synthesis without a
        reference) the engine's row gets the truth at the window's middle, and its hole error drops to
        almost nothing; the plain row and the baselines get no reference."""
        from combcn.eval.clips import Window
        from combcn.eval.evaluate import baseline_method, engine_method, evaluate

        _, still, _ = synthetic_shot("still", parallax=False)
        hole = np.zeros((T, H, W), np.float32)
        hole[:, 30:60, 50:90] = 1.0
        window = Window(
            "still",
            0,
            (30, 50, 30, 40),
            torch.from_numpy(still).permute(3, 0, 1, 2)[None].contiguous(),
            torch.from_numpy(hole)[None, None],
            "native",
        )
        methods = {
            "plain": engine_method(engine, "plain"),
            "referenced": engine_method(engine, "referenced", reference_middle=True),
            "telea": baseline_method("telea"),
        }
        summary = evaluate([window], methods, progress=False).summary()
        assert summary["referenced"]["hole_mae"] < 0.01 < summary["plain"]["hole_mae"] / 3
        assert summary["telea"]["hole_mae"] > 1.0
