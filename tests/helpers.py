"""Shared test helpers: tiny models, small real EXR sequences and PNG frames."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest
import torch

from combcn.io.image import ImageData, write_image_atomic
from combcn.model import Inpainter, ModelConfig


def tiny_model(window: int = 4, resolution: int = 32) -> Inpainter:
    """A randomly initialised, very narrow model: fast enough for tests, same code paths."""
    torch.manual_seed(0)
    return Inpainter(ModelConfig(width=0.0625, window=window, resolution=resolution)).eval()


def plate_spec(
    width: int = 64,
    height: int = 48,
    channels: Sequence[str] = ("R", "G", "B", "A"),
    fmt: str = "half",
    *,
    data_window: tuple[int, int] | None = None,
    display: tuple[int, int] | None = None,
) -> oiio.ImageSpec:
    spec = oiio.ImageSpec(width, height, len(channels), fmt)
    spec.channelnames = tuple(channels)
    if "A" in channels:
        spec.alpha_channel = list(channels).index("A")
    if data_window is not None:
        spec.x, spec.y = data_window
    if display is not None:
        spec.full_x, spec.full_y = 0, 0
        spec.full_width, spec.full_height = display
    spec.attribute("compression", "piz")
    spec.attribute("myStudio/shot", "sh010")
    return spec


def moving_box_matte(t: int, height: int, width: int, size: int = 10) -> np.ndarray:
    """(T, H, W) float32: a square that moves right one pixel per frame."""
    matte = np.zeros((t, height, width), np.float32)
    for i in range(t):
        y0, x0 = height // 3, width // 4 + i
        matte[i, y0 : y0 + size, x0 : x0 + size] = 1.0
    return matte


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write 8-bit pixels (ndarray[H, W] or [H, W, C] uint8) as a PNG through OpenImageIO."""
    h, w = pixels.shape[:2]
    c = 1 if pixels.ndim == 2 else pixels.shape[2]
    out = oiio.ImageOutput.create(str(path))
    assert out is not None
    out.open(str(path), oiio.ImageSpec(w, h, c, oiio.UINT8))
    out.write_image(np.ascontiguousarray(pixels))
    out.close()


def write_sequence(
    folder: Path,
    frames: Sequence[int],
    *,
    spec: oiio.ImageSpec | None = None,
    matte: np.ndarray | None = None,
    name: str = "plate",
    seed: int = 0,
    hdr: bool = True,
) -> tuple[str, str | None, dict[int, np.ndarray]]:
    """Write ``name.####.exr`` (and ``matte.####.exr`` when ``matte`` is given).

    Returns (plate pattern, matte pattern or None, {frame: stored pixels}).
    """
    spec = spec or plate_spec()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stored: dict[int, np.ndarray] = {}
    dtype = {"half": np.float16, "float": np.float32, "uint8": np.uint8, "uint16": np.uint16}[
        str(spec.format)
    ]
    for i, f in enumerate(frames):
        base = rng.random((spec.height, spec.width, spec.nchannels), dtype=np.float32)
        if hdr and np.issubdtype(dtype, np.floating):
            base[..., 0] *= 20.0  # values above 1 and below 0 must survive outside the hole
            base[..., 1] -= 0.05
        if np.issubdtype(dtype, np.integer):
            pixels = (base * np.iinfo(dtype).max).astype(dtype)
        else:
            pixels = base.astype(dtype)
        write_image_atomic(folder / f"{name}.{f:04d}.exr", ImageData(pixels, spec))
        stored[f] = pixels
        if matte is not None:
            mspec = oiio.ImageSpec(spec.width, spec.height, 1, "half")
            mspec.channelnames = ("A",)
            mspec.x, mspec.y = spec.x, spec.y
            mspec.full_x, mspec.full_y, mspec.full_width, mspec.full_height = (
                spec.full_x,
                spec.full_y,
                spec.full_width,
                spec.full_height,
            )
            write_image_atomic(
                folder / f"matte.{f:04d}.exr", ImageData(matte[i][..., None].astype(np.float16), mspec)
            )
    return (
        str(folder / f"{name}.####.exr"),
        str(folder / "matte.####.exr") if matte is not None else None,
        stored,
    )


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one torch thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
