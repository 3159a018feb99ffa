"""Propagation where what the hole hides moves on its own (a limb, a passer-by): one pose is carried,
never a blend of two, and on a locked-off shot the fill is no worse than a temporal median.

The plates are synthetic, so the truth is known; the stage runs for real (OpenCV DIS flow, RANSAC,
bicubic sampling) through :func:`propagate`, with no network.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import one_thread  # noqa: F401 (fixture)

from combcn.engine.propagate import PropagationSettings, propagate

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 96, 160
#: The limb's flat colour, far from every value of the background's texture (grey-ish, see below).
LIMB = np.float32([0.95, 0.05, 0.85])


def _texture(seed: int, height: int, width: int) -> np.ndarray:
    """A textured background, its colours kept near grey so that the limb's colour stands apart."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3)).astype(np.float32)
    fine = cv2.GaussianBlur(noise, (0, 0), 1.5)
    coarse = cv2.GaussianBlur(noise, (0, 0), 8.0)
    grey = np.clip(0.5 + 2.0 * (fine - 0.5) + 3.0 * (coarse - 0.5), 0.1, 0.9).mean(-1, keepdims=True)
    return np.repeat(grey, 3, -1).astype(np.float32)


def _limb(angle: float) -> np.ndarray:
    """A bar 12 px wide reaching 34 px from a pivot at (48, 80), at ``angle`` degrees: ndarray[H, W] bool
    (hard edged, so every pixel is limb or background)."""
    mask = np.zeros((H, W), np.uint8)
    end = (80 + 34 * np.cos(np.radians(angle)), 48 + 34 * np.sin(np.radians(angle)))
    cv2.line(mask, (80, 48), (int(round(end[0])), int(round(end[1]))), 1, thickness=12)
    return mask > 0


@pytest.mark.parametrize("camera", ["still", "pan"])
def test_a_limb_that_moves_under_the_hole_is_carried_in_one_pose_never_two(camera: str) -> None:
    """Six frames; a limb swings 40 degrees a frame about a pivot under the hole (a disc over the
    pivot in frames 2 and 3), over a background the camera holds still or pans across. The nearest
    frames before and after show the limb in two poses, and no frame lies far enough along either
    trace to settle which. A blend of the two sources is a double exposure, each pose translucent:
    measured, 11 % (still) and 13 % (pan) of the pixels where the two poses differ were 10-90 % limb
    and the rest background. Each recovered pixel away from the limb's edges must be one or the
    other (under 2 % translucent)."""
    frames = 6
    background = _texture(11, H + 40, W + 80)
    yy, xx = np.mgrid[0:H, 0:W]
    plate = np.zeros((frames, H, W, 3), np.float32)
    matte = np.zeros((frames, H, W), bool)
    behind = np.zeros_like(plate)  # the background alone, where the camera puts it in each frame
    limbs = []
    for t in range(frames):
        shift = 3 * t if camera == "pan" else 0
        behind[t] = background[20 : 20 + H, 40 + shift : 40 + shift + W]
        limbs.append(_limb(40.0 * t))
        plate[t] = np.where(limbs[t][..., None], LIMB, behind[t])
        if t in (2, 3):
            matte[t] = (yy - 48) ** 2 + (xx - 80) ** 2 <= 30**2
    # pixels within 2 px of the limb's edge in any frame: bicubic sampling mixes the two there
    ring = np.ones((5, 5), np.uint8)
    edges = np.any(
        [
            (cv2.dilate(m.astype(np.uint8), ring) > 0) & ~(cv2.erode(m.astype(np.uint8), ring) > 0)
            for m in limbs
        ],
        axis=0,
    )
    result = propagate(list(plate), list(matte), [2, 3], PropagationSettings(), region=(0, H, 0, W))
    translucent, differ = 0, 0
    for t in (2, 3):
        revealed = result.get("revealed", t, (0, H, 0, W)) & matte[t]
        assert revealed.sum() > 0.9 * matte[t].sum(), f"frame {t}: {revealed.sum()} of {matte[t].sum()}"
        values = result.get("values", t, (0, H, 0, W))
        # how much limb each pixel shows: 0 = the background, 1 = the limb
        towards = LIMB - behind[t]
        alpha = ((values - behind[t]) * towards).sum(-1) / (towards * towards).sum(-1)
        poses = revealed & ~edges & (limbs[t - 1] ^ limbs[t + 1])
        translucent += int((poses & (alpha > 0.1) & (alpha < 0.9)).sum())
        differ += int(poses.sum())
    assert differ > 300
    assert translucent < 0.02 * differ, f"{translucent} of {differ} pixels are two poses blended"


def test_on_a_locked_off_shot_the_fill_is_no_worse_than_the_temporal_median() -> None:
    """Locked off, sixteen frames; a hole sweeps across the frame while three passers-by (discs of
    flat colour) cross its path at their own speeds. Where a pixel's nearest frames before and after
    disagree (one of them shows a passer-by), the per-pixel temporal median of its known values over
    the window is the better guess, and the fill must be at least as good as it on the pixels both
    fill: measured, 0.021 mean error against the median's 0.012 with the two sources blended."""
    frames = 16
    background = _texture(21, H, W)
    yy, xx = np.mgrid[0:H, 0:W]
    plate = np.repeat(background[None], frames, axis=0).copy()
    walkers = [  # (start x, start y, speed x, speed y, colour)
        (70, -10, 0.0, 9.0, (0.9, 0.2, 0.1)),
        (100, 100, 0.5, -7.0, (0.1, 0.8, 0.3)),
        (40, -20, 1.0, 6.0, (0.2, 0.3, 0.95)),
    ]
    for t in range(frames):
        for x0, y0, vx, vy, colour in walkers:
            disc = (yy - (y0 + vy * t)) ** 2 + (xx - (x0 + vx * t)) ** 2 <= 8**2
            plate[t][disc] = colour
    matte = np.zeros((frames, H, W), bool)
    for t in range(frames):
        left = 20 + 7 * t
        matte[t, 34:62, left : left + 30] = True
    known = np.where(matte[..., None], np.nan, plate)
    median = np.nanmedian(known, axis=0)  # [H, W, 3]; nan where no frame shows the pixel
    targets = list(range(frames))
    result = propagate(list(plate), list(matte), targets, PropagationSettings(), region=(0, H, 0, W))
    ours, theirs, both, shown = [], [], 0, 0
    for t in targets:
        revealed = result.get("revealed", t, (0, H, 0, W)) & matte[t]
        has_median = matte[t] & ~np.isnan(median[..., 0])
        shown += int(has_median.sum())
        use = revealed & has_median
        both += int(use.sum())
        ours.append(np.abs(result.get("values", t, (0, H, 0, W)) - plate[t])[use].mean(-1))
        theirs.append(np.abs(median - plate[t])[use].mean(-1))
    assert both > 0.9 * shown, f"only {both} of the {shown} pixels some frame shows were recovered"
    ours_mean, theirs_mean = np.concatenate(ours).mean(), np.concatenate(theirs).mean()
    assert ours_mean <= theirs_mean, (
        f"mean error {ours_mean:.4f} against the temporal median's {theirs_mean:.4f}"
    )


def test_on_a_locked_off_shot_a_pixel_no_source_fits_takes_the_temporal_median() -> None:
    """Locked off, eight frames; in frames 3 and 4 only, something stands over the patch the hole
    covers and well around it, so no other frame fits them on the known pixels around the hole. On a
    moving shot those pixels go to the network; on a locked-off one, the temporal median of the
    frames that show them is the floor (on the locked-off held-out clip the network scored a third
    worse there): here the background, which every other frame shows."""
    frames = 8
    background = _texture(5, H, W)
    plate = np.repeat(background[None], frames, axis=0).copy()
    red = _texture(6, H, W) * np.float32([1.0, 0.2, 0.2])  # no exposure gain makes it the background
    plate[3:5, 15:75, 35:105] = red[15:75, 35:105]  # there in frames 3 and 4 only
    matte = np.zeros((frames, H, W), bool)
    matte[3:5, 30:60, 50:90] = True
    result = propagate(list(plate), list(matte), [3, 4], PropagationSettings(), region=(0, H, 0, W))
    assert result.locked_off
    for t in (3, 4):
        assert result.get("revealed", t, (0, H, 0, W))[matte[t]].all(), f"frame {t}"
        err = np.abs(result.get("values", t, (0, H, 0, W)) - background).max(-1)[matte[t]]
        assert err.max() < 1e-6, f"frame {t}: {err.max():.4f} from the background"
