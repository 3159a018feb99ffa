"""combcn.inpaint_sequence on real EXR (and PNG, movie) files written and read through OpenImageIO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
from helpers import moving_box_matte, one_thread, plate_spec, tiny_model, write_sequence  # noqa: F401

import combcn
from combcn.engine import Engine
from combcn.io import ImageData, read_image, write_image_atomic

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES = list(range(1001, 1011))


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(device="cpu", model=tiny_model())


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[int, np.ndarray], np.ndarray]:
    """Half RGBAZ plate, data window (4, 6) inside an 80x60 display window, matte sequence."""
    folder = tmp_path_factory.mktemp("shot")
    spec = plate_spec(64, 48, ("R", "G", "B", "A", "Z"), data_window=(4, 6), display=(80, 60))
    matte = moving_box_matte(len(FRAMES), 48, 64)
    plate, matte_pattern, stored = write_sequence(folder, FRAMES, spec=spec, matte=matte)
    assert matte_pattern is not None
    return plate, matte_pattern, stored, matte


def test_smoke_everything_outside_the_matte_is_kept(shot: tuple, engine: Engine, tmp_path: Path) -> None:
    plate, matte_pattern, stored, matte = shot
    report = combcn.inpaint_sequence(plate, matte_pattern, str(tmp_path / "out.####.exr"), engine=engine)
    assert report.written == FRAMES and report.skipped == []
    for i, f in enumerate(FRAMES):
        out = read_image(tmp_path / f"out.{f:04d}.exr")
        src = read_image(plate.replace("####", f"{f:04d}"))
        assert out.pixels.dtype == np.float16  # half in, half out
        outside = matte[i] < 0.5
        np.testing.assert_array_equal(out.pixels[outside], stored[f][outside])
        np.testing.assert_array_equal(out.pixels[..., 3:], stored[f][..., 3:])  # A and Z untouched
        assert not np.array_equal(out.pixels[~outside][:, :3], stored[f][~outside][:, :3])
        assert np.isfinite(out.pixels).all()
        s, t = out.spec, src.spec
        assert (s.x, s.y, s.width, s.height) == (t.x, t.y, t.width, t.height) == (4, 6, 64, 48)
        assert (s.full_width, s.full_height) == (80, 60)
        assert list(s.channelnames) == ["R", "G", "B", "A", "Z"]
        for name in ("compression", "myStudio/shot"):
            assert s.get_string_attribute(name) == t.get_string_attribute(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out.{f:04d}.exr" for f in FRAMES]


def test_chunked_render_equals_single_render_bit_exact(shot: tuple, engine: Engine, tmp_path: Path) -> None:
    plate, matte_pattern, _, _ = shot
    combcn.inpaint_sequence(plate, matte_pattern, str(tmp_path / "single/o.####.exr"), engine=engine)
    written = []
    for chunk in ("1001-1003", "1004-1007", "1008-1010"):
        r = combcn.inpaint_sequence(
            plate, matte_pattern, str(tmp_path / "chunks/o.####.exr"), chunk, engine=engine
        )
        written += r.written
    assert written == FRAMES
    for f in FRAMES:
        a = read_image(tmp_path / f"single/o.{f:04d}.exr").pixels
        b = read_image(tmp_path / f"chunks/o.{f:04d}.exr").pixels
        np.testing.assert_array_equal(a, b)


def test_check_pass_frames_are_decoded_once_and_render_the_same_bits(
    shot: tuple, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check pass keeps the first ``window + 4`` frames it decoded (plate and matte) and each frame's
    range outside its hole for the render; the output equals a render without the check pass, whose
    every read and guard scan is the render's own."""
    from combcn.io.plate import Plate

    plate, matte_pattern, _, _ = shot
    combcn.inpaint_sequence(plate, matte_pattern, str(tmp_path / "a/o.####.exr"), engine=engine, check=False)
    reads: dict[tuple[str, int], int] = {}
    real = Plate.read

    def counted(self: Plate, frame: int, **kwargs: bool) -> ImageData:
        reads[(self.what, frame)] = reads.get((self.what, frame), 0) + 1
        return real(self, frame, **kwargs)

    monkeypatch.setattr(Plate, "read", counted)
    combcn.inpaint_sequence(plate, matte_pattern, str(tmp_path / "b/o.####.exr"), engine=engine)
    kept = engine.window + 4
    for what in ("plate", "matte"):
        assert [reads[(what, f)] for f in FRAMES] == [1] * kept + [2] * (len(FRAMES) - kept)
    for f in FRAMES:
        a = read_image(tmp_path / f"a/o.{f:04d}.exr")
        b = read_image(tmp_path / f"b/o.{f:04d}.exr")
        assert a.pixels.tobytes() == b.pixels.tobytes() and a.spec.serialize() == b.spec.serialize()


def test_frame_set_with_step_writes_only_those_frames(shot: tuple, engine: Engine, tmp_path: Path) -> None:
    plate, matte_pattern, _, _ = shot
    report = combcn.inpaint_sequence(
        plate, matte_pattern, str(tmp_path / "o.%04d.exr"), "1002-1008x3", engine=engine
    )
    assert report.written == [1002, 1005, 1008]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.1002.exr", "o.1005.exr", "o.1008.exr"]


def test_resume_skips_complete_frames(shot: tuple, engine: Engine, tmp_path: Path) -> None:
    plate, matte_pattern, _, _ = shot
    out = str(tmp_path / "o.####.exr")
    combcn.inpaint_sequence(plate, matte_pattern, out, "1001-1004", engine=engine)
    report = combcn.inpaint_sequence(plate, matte_pattern, out, "1001-1006", engine=engine, resume=True)
    assert report.skipped == [1001, 1002, 1003, 1004] and report.written == [1005, 1006]


def test_matte_from_a_named_channel_of_a_multipart_plate(engine: Engine, tmp_path: Path) -> None:
    beauty = plate_spec(64, 48, ("R", "G", "B"))
    beauty.attribute("name", "beauty")
    masks = oiio.ImageSpec(64, 48, 2, "half")
    masks.channelnames = ("dog.A", "cat.A")
    masks.attribute("name", "masks")
    matte = moving_box_matte(4, 48, 64)
    rng = np.random.default_rng(5)
    rgbs = {}
    for i, f in enumerate(range(1, 5)):
        rgb = rng.random((48, 64, 3), dtype=np.float32).astype(np.float16)
        m = np.stack([matte[i], np.zeros_like(matte[i])], -1).astype(np.float16)
        rgbs[f] = rgb
        write_image_atomic(
            tmp_path / f"mp.{f:04d}.exr", ImageData(rgb, beauty, 0, [(beauty, rgb), (masks, m)])
        )
    pattern = str(tmp_path / "mp.####.exr")
    combcn.inpaint_sequence(
        pattern,
        pattern,
        str(tmp_path / "out/mp.####.exr"),
        matte_part="masks",
        matte_channel="dog.A",
        engine=engine,
    )
    for i, f in enumerate(range(1, 5)):
        out = read_image(tmp_path / f"out/mp.{f:04d}.exr", "beauty")
        np.testing.assert_array_equal(out.pixels[matte[i] < 0.5], rgbs[f][matte[i] < 0.5])
        assert not np.array_equal(out.pixels[matte[i] > 0.5], rgbs[f][matte[i] > 0.5])
        masks_in = read_image(tmp_path / f"mp.{f:04d}.exr", "masks")
        masks_out = read_image(tmp_path / f"out/mp.{f:04d}.exr", "masks")
        assert masks_out.channel_names == masks_in.channel_names
        np.testing.assert_array_equal(masks_out.pixels, masks_in.pixels)


def test_matte_from_the_plate_alpha_and_8bit_png(engine: Engine, tmp_path: Path) -> None:
    spec = plate_spec(64, 48, ("R", "G", "B", "A"), "uint8")
    spec.attribute("oiio:UnassociatedAlpha", 1)  # PNG stores unassociated colour: keep it as is
    matte = moving_box_matte(3, 48, 64)
    rng = np.random.default_rng(6)
    stored = {}
    for i, f in enumerate((7, 8, 9)):
        px = rng.integers(0, 255, (48, 64, 4)).astype(np.uint8)
        px[..., 3] = (matte[i] * 255).astype(np.uint8)
        stored[f] = px
        write_image_atomic(tmp_path / f"p.{f:04d}.png", ImageData(px, spec))
    report = combcn.inpaint_sequence(
        str(tmp_path / "p.####.png"), None, str(tmp_path / "o/p.####.png"), engine=engine
    )
    assert report.written == [7, 8, 9]
    for i, f in enumerate((7, 8, 9)):
        out = read_image(tmp_path / f"o/p.{f:04d}.png").pixels
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out[matte[i] < 0.5], stored[f][matte[i] < 0.5])


def test_movie_plate_to_png_sequence(engine: Engine, tmp_path: Path) -> None:
    import av

    movie = tmp_path / "shot.mp4"
    with av.open(str(movie), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            img = np.full((48, 64, 3), 40 + 30 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    matte = moving_box_matte(4, 48, 64)
    mspec = oiio.ImageSpec(64, 48, 1, "uint8")
    for i in range(4):
        write_image_atomic(
            tmp_path / f"m.{i + 1:04d}.png", ImageData((matte[i] * 255).astype(np.uint8)[..., None], mspec)
        )
    report = combcn.inpaint_sequence(
        str(movie), str(tmp_path / "m.####.png"), str(tmp_path / "o.####.png"), engine=engine
    )
    assert report.written == [1, 2, 3, 4]
    assert read_image(tmp_path / "o.0002.png").pixels.shape == (48, 64, 3)


def test_matte_with_another_data_window_is_aligned_by_display_window(engine: Engine, tmp_path: Path) -> None:
    # Plate: data window 64x48 at (10, 8) in an 80x60 display; matte: the full 80x60 display window.
    spec = plate_spec(64, 48, ("R", "G", "B"), data_window=(10, 8), display=(80, 60))
    plate, _, stored = write_sequence(tmp_path, [1, 2, 3], spec=spec)
    full = moving_box_matte(3, 60, 80)
    mspec = oiio.ImageSpec(80, 60, 1, "half")
    mspec.channelnames = ("Y",)
    for i in range(3):
        write_image_atomic(
            tmp_path / f"m.{i + 1:04d}.exr", ImageData(full[i][..., None].astype(np.float16), mspec)
        )
    combcn.inpaint_sequence(
        plate, str(tmp_path / "m.####.exr"), str(tmp_path / "o/o.####.exr"), engine=engine
    )
    for i in range(3):
        inside = full[i, 8:56, 10:74] > 0.5  # the matte seen through the plate's data window
        out = read_image(tmp_path / f"o/o.{i + 1:04d}.exr").pixels
        np.testing.assert_array_equal(out[~inside], stored[i + 1][~inside])
        assert not np.array_equal(out[inside], stored[i + 1][inside])


def test_single_image_matte_applies_to_every_frame(shot: tuple, engine: Engine, tmp_path: Path) -> None:
    plate, _, stored, _ = shot
    still = np.zeros((48, 64, 1), np.float16)
    still[10:20, 30:40] = 1.0
    mspec = plate_spec(64, 48, ("A",), data_window=(4, 6), display=(80, 60))
    write_image_atomic(tmp_path / "garbage_matte.exr", ImageData(still, mspec))
    report = combcn.inpaint_sequence(
        plate, str(tmp_path / "garbage_matte.exr"), str(tmp_path / "o/o.####.exr"), "1001-1003", engine=engine
    )
    assert report.written == [1001, 1002, 1003]
    keep = still[..., 0] < 0.5
    for f in report.written:
        out = read_image(tmp_path / f"o/o.{f:04d}.exr").pixels
        np.testing.assert_array_equal(out[keep], stored[f][keep])
        assert not np.array_equal(out[~keep][:, :3], stored[f][~keep][:, :3])


def test_inpaint_sequence_keeps_the_loaded_engine_between_calls(
    shot: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights are loaded once per process and settings, not on every call."""
    import combcn.model
    from combcn.model import save_weights

    weights = tmp_path / "tiny.pt"
    save_weights(tiny_model(), weights)
    loads = []
    real = combcn.model.load_model

    def counting(*args: object, **kwargs: object) -> object:
        loads.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(combcn.model, "load_model", counting)
    plate, matte_pattern, _, _ = shot
    for name in ("a", "b"):
        combcn.inpaint_sequence(
            plate, matte_pattern, str(tmp_path / f"{name}/o.####.exr"), weights=str(weights)
        )
    assert len(loads) == 1


def test_inpaint_takes_a_boolean_matte_as_its_float_matte() -> None:
    """combcn.inpaint reads a numpy or torch bool matte as every library does: True = remove."""
    import torch

    rng = np.random.default_rng(1)
    frames = rng.random((3, 48, 64, 3), dtype=np.float32)
    matte = moving_box_matte(3, 48, 64)
    model = tiny_model()
    expected = combcn.inpaint(frames, matte, model=model)
    np.testing.assert_array_equal(combcn.inpaint(frames, matte > 0.5, model=model), expected)
    out = combcn.inpaint(torch.from_numpy(frames), torch.from_numpy(matte > 0.5), model=model)
    np.testing.assert_array_equal(out.numpy(), expected)
