"""The one reader (combcn.io.plate): its rules, tested once, on real files written with OpenImageIO.

The engine, finetune, training data and evaluation all open plates and mattes through it, so these
rules (channels, data windows, units, NaN/Inf, tiled and multi-part files, frame folders) hold for all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from combcn.errors import InputError
from combcn.io.image import ImageData, write_image_atomic
from combcn.io.plate import (
    Plate,
    align_matte,
    channels_to_unit,
    check_finite,
    matte_channel_index,
    read_matte_image,
    read_rgb_image,
    rgb_channels,
    rgb_of,
    to_unit,
)


def _spec(w: int, h: int, channels: tuple[str, ...], fmt: str = "half") -> oiio.ImageSpec:
    spec = oiio.ImageSpec(w, h, len(channels), fmt)
    spec.channelnames = channels
    return spec


def test_channels_are_picked_by_name_in_any_order(tmp_path: Path) -> None:
    spec = _spec(8, 6, ("B", "A", "G", "R"))
    pixels = np.stack([np.full((6, 8), v, np.float16) for v in (0.3, 1.0, 0.2, 0.1)], -1)
    write_image_atomic(tmp_path / "a.exr", ImageData(pixels, spec))
    rgb = read_rgb_image(tmp_path / "a.exr")
    assert np.allclose(rgb[0, 0], [0.1, 0.2, 0.3], atol=1e-3)
    data = Plate(tmp_path / "a.exr").read(1)
    names = data.channel_names  # as stored (EXR keeps its own channel order)
    assert [names[i] for i in rgb_channels(data.spec, "a.exr")] == ["R", "G", "B"]
    assert names[matte_channel_index(data.spec, None, "a.exr", own_alpha=True)] == "A"
    with pytest.raises(InputError, match="no channel 'matte'"):
        matte_channel_index(data.spec, "matte", "a.exr", own_alpha=False)


def test_integers_become_unit_floats_and_grey_is_repeated(tmp_path: Path) -> None:
    spec = _spec(4, 4, ("Y",), "uint16")
    write_image_atomic(tmp_path / "g.png", ImageData(np.full((4, 4, 1), 65535, np.uint16), spec))
    assert np.array_equal(read_rgb_image(tmp_path / "g.png"), np.ones((4, 4, 3), np.float32))
    assert read_matte_image(tmp_path / "g.png").max() == 1.0


def test_half_floats_are_widened_exactly_and_contiguously() -> None:
    """A plate-sized half-float selection (strided: RGB out of RGBA) becomes a C-contiguous float32
    array with every value, NaN and Inf included, exactly the half's; a small one too (the two take
    different paths)."""
    rng = np.random.default_rng(0)
    for shape in ((300, 400, 4), (4, 5, 4)):
        half = (rng.standard_normal(shape) * 1000).astype(np.float16)
        half[0, 0, 0], half[0, 1, 1], half[0, 2, 2] = np.nan, np.inf, -np.inf
        half[1, 0, 0] = np.float16(6e-8)  # subnormal
        rgb = half[:, ::2, 2::-1]  # a strided view, channels reversed
        out = to_unit(half[..., :3])
        assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"] and out.flags["WRITEABLE"]
        assert np.array_equal(out, half[..., :3].astype(np.float32), equal_nan=True)
        assert np.array_equal(to_unit(rgb), rgb.astype(np.float32), equal_nan=True)


def test_tiled_exr_rows_come_through_the_tile_api(tmp_path: Path) -> None:
    spec = _spec(40, 30, ("R", "G", "B"))
    spec.tile_width = spec.tile_height = 16
    pixels = np.random.default_rng(0).random((30, 40, 3)).astype(np.float16)
    write_image_atomic(tmp_path / "t.1001.exr", ImageData(pixels, spec))
    plate = Plate(tmp_path / "t.####.exr")
    assert plate.header(1001).tile_width == 16
    assert np.array_equal(plate.read_rgb(1001, [0, 1, 2], (7, 23)), pixels[7:23].astype(np.float32))


def test_mixed_channel_types_read_exactly(tmp_path: Path) -> None:
    spec = _spec(6, 5, ("R", "G", "B", "Z"))
    spec.channelformats = (oiio.TypeHalf, oiio.TypeHalf, oiio.TypeHalf, oiio.TypeFloat)
    pixels = np.random.default_rng(1).random((5, 6, 4)).astype(np.float64)
    pixels[..., :3] = pixels[..., :3].astype(np.float16)
    pixels[..., 3] = pixels[..., 3].astype(np.float32)
    write_image_atomic(tmp_path / "m.exr", ImageData(pixels, spec))
    data = Plate(tmp_path / "m.exr").read(1)
    assert data.pixels.dtype == np.float64
    assert np.array_equal(data.pixels, pixels)


def test_multipart_part_is_picked_by_name(tmp_path: Path) -> None:
    beauty = _spec(8, 6, ("R", "G", "B"))
    beauty.attribute("name", "beauty")
    mattes = _spec(8, 6, ("roto",))
    mattes.attribute("name", "mattes")
    rgb = np.full((6, 8, 3), 0.5, np.float16)
    roto = np.zeros((6, 8, 1), np.float16)
    roto[2:4, 3:5] = 1
    write_image_atomic(tmp_path / "mp.exr", ImageData(rgb, beauty, 0, [(beauty, rgb), (mattes, roto)]))
    data = Plate(tmp_path / "mp.exr", part="mattes", what="matte").read(1)
    assert data.channel_names == ["roto"] and data.pixels[..., 0].sum() == 4
    with pytest.raises(InputError, match="no part named 'nope'"):
        Plate(tmp_path / "mp.exr", part="nope").read(1)


def test_matte_data_window_is_laid_onto_the_plates() -> None:
    plate = _spec(10, 8, ("R", "G", "B"))
    plate.x, plate.y = 2, 1
    matte = _spec(4, 3, ("A",))
    matte.x, matte.y = 5, 4
    values = np.ones((3, 4), np.float32)
    laid = align_matte(values, matte, plate)
    assert laid.shape == (8, 10) and laid.sum() == 12
    assert laid[4 - 1 : 7 - 1, 5 - 2 : 9 - 2].all()


def test_nan_and_inf_are_refused_with_file_and_frame() -> None:
    rgb = np.zeros((2, 2, 3), np.float32)
    check_finite(rgb, "ok.exr")
    rgb[1, 1, 2] = np.inf
    with pytest.raises(InputError) as err:
        check_finite(rgb, "bad.1004.exr", 1004)
    assert "bad.1004.exr" in str(err.value) and "1004" in str(err.value) and "NaN or Inf" in str(err.value)


def test_a_folder_of_frames_is_numbered_by_its_names(tmp_path: Path) -> None:
    for n in (7, 9, 8):
        spec = _spec(4, 4, ("R", "G", "B"), "uint8")
        write_image_atomic(tmp_path / f"shot_{n:05d}.png", ImageData(np.full((4, 4, 3), n, np.uint8), spec))
    plate = Plate(tmp_path)
    assert plate.frames == [7, 8, 9]
    assert rgb_of(plate.read(8), [0, 1, 2])[0, 0, 0] == pytest.approx(8 / 255)
    with pytest.raises(InputError, match="missing"):
        plate.read(10)


def test_missing_sequence_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="frame token"):
        Plate(tmp_path / "nothing.####.exr")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.uint8, np.uint16])
@pytest.mark.parametrize(
    ("channels", "picked"),
    [(4, [0, 1, 2]), (4, [2, 1, 0]), (3, [0, 1, 2]), (9, [4, 5, 6]), (1, [0, 0, 0]), (2, [1, 0, 1])],
)
def test_channels_to_unit_is_to_unit_of_the_channels(dtype: type, channels: int, picked: list[int]) -> None:
    """Widening every channel and then picking some gives the same bits as picking first."""
    rng = np.random.default_rng(channels)
    values = rng.normal(0.0, 4.0, (300, 260, channels))  # over 1 << 16 values: the torch path for halves
    if np.issubdtype(dtype, np.integer):
        values = np.abs(values) * 30
    pixels = values.astype(dtype)
    if dtype == np.float16:
        pixels[0, 0] = [np.nan] * channels
        pixels[1, 1] = [np.inf] * channels
    out = channels_to_unit(pixels, picked)
    expected = to_unit(pixels[..., picked])
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert out.tobytes() == expected.tobytes()
    assert (
        channels_to_unit(pixels[5:50, 7:90], picked).tobytes()
        == to_unit(pixels[5:50, 7:90][..., picked]).tobytes()
    )
