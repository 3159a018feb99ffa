"""Frame sets, sequence patterns and images through OpenImageIO (real files in tmp dirs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
from helpers import plate_spec

from combcn.errors import ConfigError, InputError, OutputError
from combcn.io import (
    FrameSet,
    ImageData,
    MovieReader,
    SequencePattern,
    read_header,
    read_image,
    write_image_atomic,
)
from combcn.io.image import check_writable_folder, stale_temp_files


class TestFrameSet:
    def test_smoke(self) -> None:
        assert FrameSet.parse("1001-1005").frames == [1001, 1002, 1003, 1004, 1005]

    def test_step_and_pieces(self) -> None:
        assert FrameSet.parse("1001-1010x2").frames == [1001, 1003, 1005, 1007, 1009]
        assert FrameSet.parse("1001,1005, 1010-1011").frames == [1001, 1005, 1010, 1011]
        assert str(FrameSet.parse("1001-1100x2")) == "1001-1099x2"
        assert str(FrameSet([1, 2, 3, 7])) == "1-3,7"

    @pytest.mark.parametrize("text", ["", "a-b", "1010-1001", "1-5x0", "1-"])
    def test_exception(self, text: str) -> None:
        with pytest.raises(ConfigError):
            FrameSet.parse(text)


class TestSequencePattern:
    @pytest.mark.parametrize(
        ("pattern", "name"),
        [
            ("plate.####.exr", "plate.1001.exr"),
            ("plate.#.exr", "plate.1001.exr"),
            ("plate.%04d.exr", "plate.1001.exr"),
            ("plate.%06d.exr", "plate.001001.exr"),
            ("plate.@@@@@.exr", "plate.01001.exr"),
            ("plate.%d.exr", "plate.1001.exr"),
        ],
    )
    def test_tokens(self, pattern: str, name: str) -> None:
        assert SequencePattern(f"/shots/{pattern}").path(1001) == Path(f"/shots/{name}")

    def test_frames_on_disk(self, tmp_path: Path) -> None:
        for f in (1001, 1002, 1005):
            (tmp_path / f"plate.{f:04d}.exr").write_bytes(b"x")
        (tmp_path / "plate.100.exr").write_bytes(b"x")  # wrong padding: not part of ####
        (tmp_path / "other.1003.exr").write_bytes(b"x")
        assert SequencePattern(tmp_path / "plate.####.exr").frames_on_disk() == [1001, 1002, 1005]
        assert SequencePattern(tmp_path / "plate.%04d.exr").frames_on_disk() == [1001, 1002, 1005]
        assert SequencePattern(tmp_path / "nothing.####.exr").frames_on_disk() == []

    def test_exception(self) -> None:
        with pytest.raises(InputError, match="frame tokens"):
            SequencePattern("plate.####.%04d.exr")


class TestImage:
    def test_half_roundtrip_keeps_everything(self, tmp_path: Path) -> None:
        spec = plate_spec(channels=("R", "G", "B", "A", "Z"), data_window=(5, 7), display=(80, 60))
        pixels = (np.random.default_rng(0).random((48, 64, 5)) * 30 - 1).astype(np.float16)
        write_image_atomic(tmp_path / "a.exr", ImageData(pixels, spec))
        back = read_image(tmp_path / "a.exr")
        assert back.pixels.dtype == np.float16
        np.testing.assert_array_equal(back.pixels, pixels)
        s = back.spec
        assert (s.x, s.y, s.width, s.height, s.full_width, s.full_height) == (5, 7, 64, 48, 80, 60)
        assert s.get_string_attribute("compression") == "piz"
        assert s.get_string_attribute("myStudio/shot") == "sh010"
        assert list(s.channelnames) == ["R", "G", "B", "A", "Z"]
        assert stale_temp_files(tmp_path / "a.exr") == []

    def test_mixed_channel_types_roundtrip_exactly(self, tmp_path: Path) -> None:
        spec = oiio.ImageSpec(16, 8, 4, "half")
        spec.channelnames = ("R", "G", "B", "Z")
        spec.channelformats = (oiio.TypeDesc("half"),) * 3 + (oiio.TypeDesc("float"),)
        pixels = np.random.default_rng(1).random((8, 16, 4)) * 1000.0
        write_image_atomic(tmp_path / "m.exr", ImageData(pixels, spec))
        first = read_image(tmp_path / "m.exr")
        write_image_atomic(tmp_path / "m2.exr", first)
        second = read_image(tmp_path / "m2.exr")
        np.testing.assert_array_equal(first.pixels, second.pixels)
        assert [str(t) for t in second.spec.channelformats] == ["half", "half", "half", "float"]

    def test_multipart_named_part_and_copy_through(self, tmp_path: Path) -> None:
        beauty = plate_spec(16, 8, ("R", "G", "B"))
        beauty.attribute("name", "beauty")
        depth = oiio.ImageSpec(16, 8, 1, "float")
        depth.channelnames = ("Z",)
        depth.attribute("name", "depth")
        rgb = np.random.default_rng(2).random((8, 16, 3)).astype(np.float16)
        z = np.random.default_rng(3).random((8, 16, 1)).astype(np.float32)
        write_image_atomic(tmp_path / "mp.exr", ImageData(rgb, beauty, 0, [(beauty, rgb), (depth, z)]))
        part = read_image(tmp_path / "mp.exr", "depth")
        assert part.part == 1 and part.channel_names == ["Z"]
        np.testing.assert_array_equal(part.pixels, z)
        write_image_atomic(tmp_path / "mp2.exr", part)
        np.testing.assert_array_equal(read_image(tmp_path / "mp2.exr", "beauty").pixels, rgb)
        with pytest.raises(InputError, match="no part named 'diffuse'"):
            read_header(tmp_path / "mp.exr", "diffuse")

    def test_exception_unreadable(self, tmp_path: Path) -> None:
        (tmp_path / "bad.exr").write_bytes(b"not an exr at all")
        with pytest.raises(InputError, match="bad.exr"):
            read_image(tmp_path / "bad.exr")
        with pytest.raises(InputError, match="not found"):
            read_image(tmp_path / "missing.exr")

    def test_exception_unwritable_folder(self, tmp_path: Path) -> None:
        (tmp_path / "afile").write_bytes(b"")
        with pytest.raises(OutputError, match="is a file"):
            check_writable_folder(tmp_path / "afile" / "out.1001.exr")

    def test_formats(self, tmp_path: Path) -> None:
        for ext, fmt in (("png", "uint8"), ("tif", "uint16"), ("dpx", "uint16"), ("jpg", "uint8")):
            spec = plate_spec(16, 8, ("R", "G", "B"), fmt)
            dtype = np.uint8 if fmt == "uint8" else np.uint16
            pixels = np.random.default_rng(4).integers(0, np.iinfo(dtype).max, (8, 16, 3)).astype(dtype)
            write_image_atomic(tmp_path / f"a.{ext}", ImageData(pixels, spec))
            back = read_image(tmp_path / f"a.{ext}")
            assert back.pixels.dtype == dtype, ext
            if ext != "jpg":
                np.testing.assert_array_equal(back.pixels, pixels)


def test_movie_reader_decodes_frames_in_any_order(tmp_path: Path) -> None:
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        for i in range(5):
            img = np.full((16, 32, 3), i * 50, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    movie = MovieReader(path, cache=2)
    assert movie.frames == [1, 2, 3, 4, 5]
    later, earlier = movie.read(4), movie.read(1)
    assert later.shape == (16, 32, 3) and later.dtype == np.uint8
    assert abs(int(later.mean()) - 150) < 8 and abs(int(earlier.mean())) < 8
    movie.close()
