#!/usr/bin/env python3
"""Make the bundled sample plate ``combcn/data/sample/plate.####.exr`` + ``matte.####.exr``.

Source: the ``dogs_jump`` clip (MIT, researchmm/STTN ``examples/dogs_jump_orig.mp4``) from the
project's clip pool (``/work/shared/data/clips/dogs_jump``: JPG frames + palette object masks).
The matte removes the big jumping dog (palette object 2), dilated by a few pixels.

What the plate shows off (each is something combcn must keep bit-exact):

- half-float, scene-linear RGB (sRGB-decoded, exposure x1.5, so the sky goes above 1.0);
- an alpha channel and a depth-like ``Z`` AOV that are not inpainted;
- a data window (432x240 at 0,0) larger than the display window (416x224 at 8,8), like overscan;
- custom metadata (``combcn/source``, ``combcn/licence``) and PIZ compression;
- frame numbers from 1001.

Usage: ``python tools/make_sample_plate.py [--clip DIR] [--frames 32] [--out combcn/data/sample]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import OpenImageIO as oiio

from combcn.io import ImageData, write_image_atomic

SOURCE = "researchmm/STTN examples/dogs_jump_orig.mp4 (commit f39f62c5bbbe), via the combcn clip pool"
LICENCE = "MIT (STTN)"
DOG = (0, 128, 0)  # palette colour of object 2, the big dog that jumps across


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clip", type=Path, default=Path("/work/shared/data/clips/dogs_jump"))
    parser.add_argument("--frames", type=int, default=32, help="number of frames (default: 32)")
    parser.add_argument("--first", type=int, default=0, help="first source frame (default: 0)")
    parser.add_argument("--expand", type=int, default=4, help="matte dilation in pixels (default: 4)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "combcn/data/sample"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in list(args.out.glob("plate.*.exr")) + list(args.out.glob("matte.*.exr")):
        old.unlink()
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * args.expand + 1, 2 * args.expand + 1))
    for i in range(args.frames):
        src = args.first + i
        frame = 1001 + i
        rgb8 = oiio.ImageBuf(str(args.clip / f"{src:05d}.jpg")).get_pixels(oiio.UINT8)
        masks = oiio.ImageBuf(str(args.clip / "masks" / f"{src:05d}.png")).get_pixels(oiio.UINT8)
        h, w = rgb8.shape[:2]
        linear = srgb_to_linear(rgb8.astype(np.float32) / 255.0) * 1.5
        depth = np.broadcast_to(np.linspace(50.0, 5.0, h, dtype=np.float32)[:, None], (h, w))
        pixels = np.concatenate([linear, np.ones((h, w, 1), np.float32), depth[..., None]], -1).astype(
            np.float16
        )
        spec = oiio.ImageSpec(w, h, 5, "half")
        spec.channelnames = ("R", "G", "B", "A", "Z")
        spec.alpha_channel = 3
        spec.full_x, spec.full_y, spec.full_width, spec.full_height = 8, 8, w - 16, h - 16
        spec.attribute("compression", "piz")
        spec.attribute("combcn/source", SOURCE)
        spec.attribute("combcn/licence", LICENCE)
        spec.attribute("framesPerSecond", oiio.TypeDesc("rational2i"), (24, 1))
        write_image_atomic(args.out / f"plate.{frame:04d}.exr", ImageData(pixels, spec))

        dog = (masks == np.array(DOG, np.uint8)).all(-1).astype(np.uint8)
        matte = cv2.dilate(dog, disk).astype(np.float16)[..., None]
        mspec = oiio.ImageSpec(w, h, 1, "half")
        mspec.channelnames = ("A",)
        mspec.full_x, mspec.full_y, mspec.full_width, mspec.full_height = 8, 8, w - 16, h - 16
        mspec.attribute("compression", "zip")
        mspec.attribute("combcn/source", SOURCE + " object masks, object 2 (dog), dilated")
        write_image_atomic(args.out / f"matte.{frame:04d}.exr", ImageData(matte, mspec))
    total = sum(p.stat().st_size for p in args.out.glob("*.exr"))
    print(f"wrote {args.frames} plate + matte frames to {args.out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
