"""The window loop: frames and mattes in, fills out, one temporal window at a time.

:func:`render_windows` is shared by the array API and the sequence renderer. It asks for each
frame's RGB and alpha when a window needs them and hands each frame's fill to ``emit`` as soon as
no later window can change it, so memory holds one window of working-size crops plus the fills of
the frames in flight, never the sequence.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from combcn.engine import probe
from combcn.engine.matte import bbox
from combcn.engine.probe import Verdict
from combcn.engine.propagate import (
    MotionCache,
    Propagated,
    PropagationSettings,
    Propagator,
    membrane_fill,
    region_around,
)
from combcn.engine.shaper import Shaper
from combcn.engine.windows import Crop, Window, plan_crop, plan_windows
from combcn.errors import ConfigError

log = logging.getLogger("combcn.engine")

#: Synthesised content is kept on every KEY_FRAMES-th frame of a window and carried along the motion
#: to the frames between (a Nuke-style reference frame every third of a second at 24 fps).
KEY_FRAMES = 8
#: On a locked-off window, each synthesised pixel is smoothed along time with a Gaussian of this many
#: frames (sigma), over the frames of the window where it is synthesised too (:func:`_hold_still`).
STILL_SIGMA = 2.0
#: Band pixels at or below this (plate units) say nothing of a frame's exposure (:meth:`_ring_gains`)
LEVEL_FLOOR = 1e-4
#: The band around the synthesised pixels whose ratios give the exposure gain between two frames
#: (plate pixels), and the fewest of its pixels to trust it
RING = 8
RING_POINTS = 64
#: Seams between the frames the hole's pixels came from are softened where their detail is above this
#: many times that inside the patches they join, with the smallest of these Gaussian sigmas (plate
#: pixels) that brings it within; the inside must have this many pixels (:func:`_soften_seams`)
SEAM_EXCESS = 1.25
SEAM_SIGMAS = (0.5, 0.7, 1.0)
SEAM_POINTS = 64
#: What no frame shows is filled by this candidate (:data:`probe.METHODS`) where probing is on but no
#: probe hole fits beside the matte (it covers too much of the frame, or sweeps across it): the
#: network. (With the plate's texture it scored better on average over the probes of held-out clips
#: once detail counts, but where a matte sweeps across the frame, the case that most often leaves no
#: room, the copy's texture comes from whatever the search finds: on the bundled sample, the dog's
#: dark fur over the woman's trousers; and it keeps the window's plate rows, 1.9 GB at 4K.)
UNPROBED = "network"

Box = tuple[int, int, int, int]


@dataclass
class FrameFill:
    """The fill of one frame, ready to composite.

    Attributes:
        box: ``(y0, y1, x0, x1)`` of the frame's hole (alpha > 0) in plate pixels, or None (no hole).
        fill (ndarray[y1-y0, x1-x0, 3] float32): fill values in the plate's units (shaper decoded).
        alpha (ndarray[y1-y0, x1-x0] float32): compositing alpha inside ``box``.
        revealed (ndarray[y1-y0, x1-x0] bool | None): pixels whose value another frame showed
            (propagated at plate resolution); the rest was synthesised by the network.
        offset (ndarray[y1-y0, x1-x0] float32 | None): the frame offset a revealed pixel came from.
        expected_error: the synthesised pixels' hole MAE (0-255 of the working range) measured on
            probe holes cut into the plate's known pixels, or None where nothing was synthesised or
            it could not be measured.
        referenced (ndarray[y1-y0, x1-x0] bool | None): revealed pixels whose value came mostly from
            a reference frame (:class:`References`).
    """

    box: Box | None
    fill: np.ndarray | None
    alpha: np.ndarray | None
    revealed: np.ndarray | None = None
    offset: np.ndarray | None = None
    expected_error: float | None = None
    referenced: np.ndarray | None = None


@dataclass(frozen=True)
class References:
    """Frames the artist filled by hand (or a clean plate placed at a frame): inside each such frame's
    hole their pixels are known, and propagation carries them along the motion to the other frames.

    Attributes:
        positions: sequence positions that have a reference, ascending.
        rgb_at: (position, (y0, y1, x0, x1)) -> the reference's RGB over that box, ndarray[h, w, 3]
            float32 in plate units (a new array); only its pixels inside that frame's hole are used.
        wins: the reference wins wherever it reaches; False: a frame that shows the point itself,
            nearer in time than the reference, wins (each trace stops at the nearest frame that knows
            the point, the reference included).
    """

    positions: tuple[int, ...]
    rgb_at: Callable[[int, Box], np.ndarray]
    wins: bool = False

    def span(self, lo: int, hi: int) -> tuple[int, int]:
        """:func:`reference_span` of these references."""
        return reference_span(self.positions, lo, hi)


def reference_span(positions: Iterable[int], lo: int, hi: int) -> tuple[int, int]:
    """The frames ``[lo, hi)`` of a window (plus reach) widened to the nearest reference position before
    and after it, with the frames between (the motion is chained frame by frame)."""
    ordered = sorted(positions)
    before = [p for p in ordered if p < lo]
    after = [p for p in ordered if p >= hi]
    return (before[-1] if before else lo), (after[0] + 1 if after else hi)


@dataclass(frozen=True)
class RenderSettings:
    """How windows are laid out and cropped.

    Attributes:
        overlap: frames shared by consecutive windows (cross-faded); None = a quarter of the window.
        margin: spatial context around the hole, as a fraction of the hole box's longer side.
        context: frames beyond the written ones that may be read (None = as many as the window
            grid needs, which makes chunked renders identical to a single render).
        probe: measure the synthesis on holes of the matte's shape cut into known pixels beside it,
            fill what no frame shows with the candidate that scores best there (the network or
            Telea), and report its error (:mod:`combcn.engine.probe`).
    """

    overlap: int | None = None
    margin: float = 0.5
    context: int | None = None
    probe: bool = True


def composite(plate_rgb: np.ndarray, frame_fill: FrameFill) -> np.ndarray:
    """Blend a fill into plate RGB; pixels where alpha == 0 keep their stored values bit-exact.

    Args:
        plate_rgb (ndarray[H, W, 3]): any dtype (float16/32/64, uint8/16); not modified.
        frame_fill: the fill of this frame.

    Returns:
        ndarray[H, W, 3] of the same dtype.
    """
    out = plate_rgb.copy()
    if frame_fill.box is None or frame_fill.fill is None or frame_fill.alpha is None:
        return out
    y0, y1, x0, x1 = frame_fill.box
    region = out[y0:y1, x0:x1]
    alpha = frame_fill.alpha[..., None]
    dtype = plate_rgb.dtype
    if np.issubdtype(dtype, np.integer):
        top = float(np.iinfo(dtype).max)
        base = region.astype(np.float32) / top
        blended = alpha * frame_fill.fill + (1.0 - alpha) * base
        values = np.clip(np.rint(blended * top), 0, top).astype(dtype)
    else:
        base = region.astype(np.float32)
        blended = alpha * frame_fill.fill + (1.0 - alpha) * base
        if dtype == np.float16:  # no Inf from an out-of-range fill
            blended = np.clip(blended, -65504.0, 65504.0)
        values = blended.astype(dtype)
    region[...] = np.where(alpha > 0, values, region)
    return out


class _Accumulator:
    """Cross-fade sum of one frame's fills over the windows that cover it (in plate units), and the
    QC maps of the window that weighs most."""

    def __init__(self, box: Box, alpha: np.ndarray):
        self.box = box
        self.alpha = alpha
        y0, y1, x0, x1 = box
        self.total = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        self.weight = 0.0
        self.revealed = np.zeros((y1 - y0, x1 - x0), np.float32)
        self.offset = np.zeros((y1 - y0, x1 - x0), np.float32)
        self.referenced = np.zeros((y1 - y0, x1 - x0), np.float32)
        self.best = -1.0
        self.expected = 0.0
        self.expected_weight = 0.0

    def add(
        self,
        weight: float,
        fill: np.ndarray,
        revealed: np.ndarray,
        offset: np.ndarray,
        expected: float | None,
        referenced: np.ndarray | None = None,
    ) -> None:
        self.total += weight * fill
        self.weight += weight
        self.revealed += weight * revealed
        if referenced is not None:
            self.referenced += weight * referenced
        if expected is not None:
            self.expected += weight * expected
            self.expected_weight += weight
        if weight > self.best:
            self.best = weight
            self.offset = offset

    def result(self) -> FrameFill:
        revealed = self.revealed / self.weight >= 0.5
        expected = self.expected / self.expected_weight if self.expected_weight > 0 else None
        return FrameFill(
            self.box,
            self.total / self.weight,
            self.alpha,
            revealed,
            np.where(revealed, self.offset, 0.0),
            expected,
            revealed & (self.referenced / self.weight >= 0.5),
        )


def _to_working(region: np.ndarray, crop: Crop, shaper: Shaper) -> torch.Tensor:
    """Plate RGB over the crop -> shaped, clipped, scaled crop Tensor[3, h, w]."""
    shaped = np.clip(shaper.encode(region), 0.0, 1.0)
    t = torch.from_numpy(np.ascontiguousarray(shaped.transpose(2, 0, 1)))
    if crop.scaled:
        t = F.interpolate(t[None], size=(crop.height, crop.width), mode="area")[0]
    return t


def needed_windows(
    n: int, targets: Iterable[int], length: int, settings: RenderSettings
) -> tuple[list[Window], tuple[int, int]]:
    """The windows of the global grid that touch ``targets`` (positions), and the readable range.

    Returns:
        (windows clipped to the readable range, (first, last + 1) positions that will be read).
    """
    wanted = sorted(set(targets))
    if not wanted:
        return [], (0, 0)
    lo, hi = 0, n
    if settings.context is not None:
        lo, hi = max(0, wanted[0] - settings.context), min(n, wanted[-1] + 1 + settings.context)
    wanted_set = set(wanted)
    windows: list[Window] = []
    clipped = False
    overlap = length // 4 if settings.overlap is None else settings.overlap
    if overlap >= length:
        raise ConfigError(
            f"--overlap {overlap} must be less than the model's window of {length} frames; "
            f"give 0 to {length - 1} (default {length // 4})"
        )
    for w in plan_windows(n, length, overlap):
        if not any(p in wanted_set for p in range(w.first, w.end)):
            continue
        start, end = max(w.start, lo), min(w.end, hi)
        clipped |= (start, end) != (w.start, w.end)
        windows.append(Window(start, end, w.previous_overlap, w.next_overlap, max(0, w.first - start)))
    if clipped:
        log.warning(
            "--context %d cuts some temporal windows short: chunk edges may differ slightly from a "
            "single render (leave --context unset for identical results)",
            settings.context,
        )
    first = min(w.start for w in windows)
    last = max(w.end for w in windows)
    return windows, (first, last)


def span(
    window: Window, n: int, propagation: PropagationSettings, references: References | None
) -> tuple[int, int]:
    """The positions ``[lo, hi)`` a window reads: itself, its reach, and with references the nearest
    reference before and after it and the frames between."""
    reach = propagation.reach if propagation.enabled else 0
    lo, hi = max(0, window.start - reach), min(n, window.end + reach)
    if references is not None and references.positions and propagation.enabled:
        lo, hi = references.span(lo, hi)
    return lo, hi


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        max(b[1] for b in boxes),
        min(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _in_box(values: np.ndarray, region: Box, box: Box) -> np.ndarray:
    """The part of ``values`` (laid over ``region``) inside ``box`` (which lies inside ``region``)."""
    y0, y1, x0, x1 = box
    return values[y0 - region[0] : y1 - region[0], x0 - region[2] : x1 - region[2]]


@dataclass
class _WindowFill:
    """One window's fill of one frame over its hole box: values (plate units), which pixels were
    revealed by propagation, and from which frame offset."""

    fill: np.ndarray
    revealed: np.ndarray
    offset: np.ndarray
    expected: float | None = None
    referenced: np.ndarray | None = None


class _HoleFill:
    """A frame's network fill over its crop kept at the frame's unresolved pixels alone (what the join
    reads), and its range per channel over the rest of the crop (what the join clips to, with the
    range of the unresolved pixels' values): at 4K a window's fills over the whole crop took 1.9 GB.

    Args:
        values (ndarray[h, w, 3] float32): the fill over the crop.
        hole (ndarray[h, w] bool): the frame's unresolved pixels over the crop.
    """

    def __init__(self, values: np.ndarray, hole: np.ndarray):
        self.shape = values.shape
        self.bits = np.packbits(hole)
        self.pixels = values[hole]
        rest = values[~hole]
        self.rest = (rest.min(axis=0), rest.max(axis=0)) if len(rest) else None

    def hole(self) -> np.ndarray:
        out: np.ndarray = np.unpackbits(self.bits, count=self.shape[0] * self.shape[1]).reshape(
            self.shape[:2]
        )
        return out.astype(bool)

    def dense(self) -> np.ndarray:
        """The fill over the crop: the kept values at the unresolved pixels, 0 elsewhere (a new array)."""
        out = np.zeros(self.shape, np.float32)
        out[self.hole()] = self.pixels
        return out

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        """The fill's least and greatest value per channel over the whole crop."""
        found = [(self.pixels.min(axis=0), self.pixels.max(axis=0))] if len(self.pixels) else []
        both = found + ([self.rest] if self.rest is not None else [])
        return np.min([lo for lo, _ in both], axis=0), np.max([hi for _, hi in both], axis=0)


class _Window:
    """The work of one temporal window: propagate at plate resolution, synthesise the rest at working
    size, join the two. Frames' alpha comes from ``alpha_info``; pixels from ``rgb_at``."""

    def __init__(
        self,
        model: torch.nn.Module,
        window: Window,
        n: int,
        rgb_at: Callable[[int, Box], np.ndarray],
        infos: dict[int, tuple[Box | None, np.ndarray | None]],
        plate_size: tuple[int, int],
        *,
        shaper: Shaper,
        settings: RenderSettings,
        propagation: PropagationSettings,
        device: torch.device,
        references: References | None = None,
        motion: MotionCache | None = None,
    ):
        self.model = model
        self.window = window
        self.n = n
        self.rgb_at = rgb_at
        self.infos = infos
        self.height, self.width = plate_size
        self.shaper = shaper
        self.settings = settings
        self.propagation = propagation
        self.device = device
        #: frame pairs' motion shared with the render's other windows (None: this window's own)
        self.motion = motion
        #: the frames the network sees; of them, the window fills ``own`` (its lead is context only)
        self.positions = list(range(window.start, window.end))
        self.own = list(range(window.first, window.end))
        self.ran_model = False
        self.lo = window.start
        self.references = references if references is not None and references.positions else None
        #: the frames propagation reads: the window, its reach, and the nearest references either side
        self.span = span(window, n, propagation, self.references)
        #: what the probe holes chose for the synthesised pixels, and their expected error (None: not
        #: measured: nothing synthesised, probing off, or no free place to cut a probe)
        self.verdict: Verdict | None = None
        #: how what no frame shows is filled: the probes' verdict, :data:`UNPROBED` where no probe hole
        #: fits, the network alone where probing is off
        self.method = "network"
        #: per frame, the network's fill kept at its unresolved pixels alone (:meth:`_synthesise`)
        self.at_holes: dict[int, _HoleFill] = {}
        #: per frame between key frames, the synthesised pixels a key frame's joined fill reached
        #: (:meth:`_carry_key_frames`), over the frame's hole box: kept as carried by the join
        self.carried: dict[int, np.ndarray] = {}

    def hole_in(self, position: int, region: Box) -> np.ndarray:
        """ndarray[h, w] bool: the frame's hole (alpha > 0) over ``region`` (any plate box)."""
        out = np.zeros((region[1] - region[0], region[3] - region[2]), bool)
        box, alpha = self.infos[position]
        if box is not None and alpha is not None:
            y0, y1 = max(box[0], region[0]), min(box[1], region[1])
            x0, x1 = max(box[2], region[2]), min(box[3], region[3])
            if y1 > y0 and x1 > x0:
                out[y0 - region[0] : y1 - region[0], x0 - region[2] : x1 - region[2]] = (
                    alpha[y0 - box[0] : y1 - box[0], x0 - box[2] : x1 - box[2]] > 0
                )
        return out

    def run(self) -> dict[int, _WindowFill]:
        if all(self.infos[p][0] is None for p in self.own):
            return {}
        # the region around every hole the network sees, the lead's too: the same as the previous
        # window's where the holes allow, so the frame pairs it measured are read again, not remeasured
        boxes = [self.infos[p][0] for p in self.positions if self.infos[p][0] is not None]
        propagated = self._propagate(_union(boxes))  # type: ignore[arg-type]
        unresolved: dict[int, np.ndarray] = {}
        for p in self.own:
            box, alpha = self.infos[p]
            if box is None or alpha is None:
                continue
            hole = alpha > 0
            if propagated is not None and p - self.lo in propagated.revealed:
                hole = hole & ~propagated.get("revealed", p - self.lo, box)
            unresolved[p] = hole
        synthesised: dict[int, tuple[np.ndarray, Crop]] = {}
        if any(u.any() for u in unresolved.values()):
            self.verdict = self._probe(unresolved, propagated) if self.settings.probe else None
            if self.verdict is not None:
                self.method = self.verdict.method
            elif self.settings.probe:
                self.method = UNPROBED
            method = self.method
            at_plate = method.startswith("network") and getattr(self.model, "plate", None) is not None
            # the plate rows are read only by the other candidates and the plate network: not kept
            # otherwise (at 4K they are a window's worth of crops)
            keep_rows = method != "network" or at_plate
            synthesised, rows = self._synthesise(unresolved, propagated, keep_rows=keep_rows)
            if at_plate:
                carry = propagated is not None and len(synthesised) > 2
                used = _key_frames(sorted(synthesised)) if carry else set(synthesised)
                over = {
                    p: self._over(c, self.infos[p][0], unresolved[p]) for p, (_, c) in synthesised.items()
                }
                self._at_plate(synthesised, rows, over, used)
            if method.startswith("telea"):
                synthesised = self._telea(synthesised, unresolved, rows)
            if method.startswith("blend"):
                smooth = self._telea(synthesised, unresolved, rows)
                synthesised = {p: (probe.mean_fill(v, smooth[p][0]), c) for p, (v, c) in synthesised.items()}
            if method == "patch":
                synthesised = self._patch(synthesised, unresolved, rows, propagated)
            elif method.endswith("+texture"):
                textures = self._patch(synthesised, unresolved, rows, propagated, texture=True)
                synthesised = self._textured(synthesised, textures, unresolved, rows)
        keys: dict[int, _WindowFill] = {}
        # (a copy of the plate needs no carry: each frame copies its own pixels, or the window's median)
        copy = self.verdict is not None and self.verdict.method == "patch"
        if propagated is not None and len(synthesised) > 2 and not copy:
            keys = self._carry_key_frames(unresolved, propagated, synthesised)
        fills = {
            p: keys[p] if p in keys else self._join(p, unresolved[p], propagated, synthesised.get(p))
            for p in unresolved
        }
        if propagated is not None and propagated.locked_off and synthesised:
            held: dict[int, Box] = {p: self.infos[p][0] for p in unresolved}  # type: ignore[misc]
            _hold_still(fills, unresolved, held, self._ring_gains(unresolved))
        if self.verdict is not None:
            for p, fill in fills.items():
                if unresolved[p].any():
                    fill.expected = self.verdict.expected
        if self.references is not None:
            for p, fill in fills.items():
                source = p + np.rint(fill.offset).astype(np.int64)
                fill.referenced = fill.revealed & np.isin(source, self.references.positions)
        return fills

    def _ring_gains(self, unresolved: dict[int, np.ndarray]) -> Callable[[int, int], np.ndarray] | None:
        """The exposure gain from one frame to another where they have synthesised pixels: per channel,
        the median over a band of :data:`RING` plate pixels around the box of every frame's synthesised
        pixels (those no frame's matte covers) of each pixel's ratio between the two frames. On a
        locked-off shot a still pixel's ratio is its exposure's; a passer-by over part of the band
        moves the median little (the median of the band's values would: measured, it made the fill
        flicker more than without smoothing). None where the band has fewer than :data:`RING_POINTS`
        such pixels."""
        y0, y1, x0, x1 = self._unresolved_box(unresolved)
        grown = self._grown((y0, y1, x0, x1), RING)
        band = np.ones((grown[1] - grown[0], grown[3] - grown[2]), bool)
        band[y0 - grown[0] : y1 - grown[0], x0 - grown[2] : x1 - grown[2]] = False
        for p in self.positions:
            band &= ~self.hole_in(p, grown)
        if band.sum() < RING_POINTS:
            return None
        values = {p: self.rgb_at(p, grown)[band] for p in unresolved if unresolved[p].any()}

        def gain(p: int, q: int) -> np.ndarray:
            out = np.ones(3, np.float32)
            for c in range(3):
                mine, theirs = values[p][:, c], values[q][:, c]
                ok = (mine > LEVEL_FLOOR) & (theirs > LEVEL_FLOOR)
                if ok.sum() >= RING_POINTS:
                    out[c] = np.median(mine[ok] / theirs[ok])
            return out

        return gain

    def _carry_key_frames(
        self,
        unresolved: dict[int, np.ndarray],
        propagated: Propagated,
        synthesised: dict[int, tuple[np.ndarray, Crop]],
    ) -> dict[int, _WindowFill]:
        """Keep the network's invention on key frames (every ``KEY_FRAMES``-th synthesised frame and the
        last) and carry it along the window's motion to the frames between them, as propagation carries
        real pixels, so invented content moves with the background instead of flickering. A frame's
        pixels that no key frame reaches keep their own synthesis; those it reaches are recorded in
        :attr:`carried`, and the join keeps them as they came (:meth:`_meet_border`).

        Returns:
            the key frames' joined fills (the frames between are updated in ``synthesised``).
        """
        order = sorted(synthesised)
        keys = _key_frames(order)
        region = propagated.region
        frames = self.frames  # the window's own copies (``rgb_at`` returns new arrays): written in place
        holes = list(self.holes)
        joins = {}
        for p in keys:
            joined = joins[p] = self._join(p, unresolved[p], propagated, synthesised[p])
            box, alpha = self.infos[p]
            assert box is not None and alpha is not None
            i = p - self.lo
            _in_box(frames[i], region, box)[alpha > 0] = joined.fill[alpha > 0]
            holes[i] = np.zeros_like(holes[i])
        between = [p for p in order if p not in keys]
        for p in between:  # recovered pixels are known there too: only the synthesised ones are traced
            box, alpha = self.infos[p]
            assert box is not None and alpha is not None
            i = p - self.lo
            revealed = propagated.get("revealed", i, box) if i in propagated.revealed else None
            if revealed is None or not revealed.any():
                continue
            _in_box(frames[i], region, box)[revealed] = propagated.get("values", i, box)[revealed]
            hole = holes[i].copy()
            _in_box(hole, region, box)[...] = unresolved[p]
            holes[i] = hole
        carried = self.propagator.fill(frames, holes, [p - self.lo for p in between], scene=False)
        for p in between:  # what was traced is the unresolved pixels only: take what reached them
            values, crop = synthesised[p]
            if p - self.lo in carried.revealed:
                over = (crop.y0, crop.y1, crop.x0, crop.x1)
                use = carried.get("revealed", p - self.lo, over)
                box = self.infos[p][0]
                assert box is not None
                self.carried[p] = carried.get("revealed", p - self.lo, box)
                if p in self.at_holes:  # (unresolved pixels only: kept at them)
                    kept = self.at_holes[p]
                    dense = kept.dense()
                    dense[use] = carried.get("values", p - self.lo, over)[use]
                    kept.pixels = dense[kept.hole()]
                else:
                    values[use] = carried.get("values", p - self.lo, over)[use]
        return joins

    def _propagate(self, union: Box) -> Propagated | None:
        if not self.propagation.enabled:
            return None
        self.lo, hi = self.span
        referenced = self._referenced()
        if referenced:  # the references' own holes are where their pixels will be needed
            union = _union([union] + [self.infos[p][0] for p in referenced])  # type: ignore[misc]
        region = region_around(union, self.height, self.width)
        frames = [self.rgb_at(p, region) for p in range(self.lo, hi)]
        holes = [self.hole_in(p, region) for p in range(self.lo, hi)]
        targets = [p - self.lo for p in self.own if self.infos[p][0] is not None]
        # the motion is measured on the plate as shot (the references' holes still hide the object)
        self.propagator = Propagator(
            frames, holes, self.propagation, region=region, cache=self.motion, start=self.lo
        )
        if not referenced:
            self.frames, self.holes = frames, holes
            return self.propagator.fill(frames, holes, targets)
        return self._propagate_references(frames, holes, targets, referenced)

    def _referenced(self) -> list[int]:
        """The positions of the span with a reference and a hole (a reference without a hole adds
        nothing: the frame is known there already)."""
        if self.references is None:
            return []
        lo, hi = self.span
        return [p for p in self.references.positions if lo <= p < hi and self.infos[p][0] is not None]

    def _propagate_references(
        self, frames: list[np.ndarray], holes: list[np.ndarray], targets: list[int], referenced: list[int]
    ) -> Propagated:
        """Propagation with the references' pixels known: each reference frame is a source whose hole
        holds the artist's pixels (pasted into the window's copy of that frame, its hole cleared), so
        the same tracing, alignment and exposure match carry them to the other frames. A reference
        frame's own fill is its reference. With ``references.wins``, each other frame is traced again
        with only the references known, and what reaches a reference takes its value."""
        assert self.references is not None
        region = self.propagator.region
        for p in referenced:
            i = p - self.lo
            hole = holes[i]
            frames[i][hole] = self.references.rgb_at(p, region)[hole]
            holes[i] = np.zeros_like(hole)
        self.frames, self.holes = frames, holes
        own = {p - self.lo for p in referenced}
        others = [t for t in targets if t not in own]
        out = self.propagator.fill(frames, holes, others)
        if self.references.wins:
            for t in others:
                self._reference_wins(out, frames, holes, t, own)
        for p in referenced:
            box, alpha = self.infos[p]
            assert box is not None and alpha is not None
            i = p - self.lo
            if i not in targets:
                continue
            out.boxes[i] = box
            out.values[i] = self.references.rgb_at(p, box).astype(np.float32)
            out.revealed[i] = alpha > 0
            out.offset[i] = np.zeros(alpha.shape, np.float32)
        return out

    def _reference_wins(
        self, out: Propagated, frames: list[np.ndarray], holes: list[np.ndarray], t: int, own: set[int]
    ) -> None:
        """Trace target ``t`` with every frame but the references (and ``t`` itself) unknown, and let
        what reaches a reference replace ``out``'s value of ``t`` there."""
        only = [h if s in own or s == t else np.ones_like(h) for s, h in enumerate(holes)]
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # the levels of frames with nothing known
            carried = self.propagator.fill(frames, only, [t])
        if t not in carried.boxes:
            return
        if t not in out.boxes:
            out.boxes[t], out.values[t] = carried.boxes[t], carried.values[t]
            out.revealed[t], out.offset[t] = carried.revealed[t], carried.offset[t]
            return
        box = out.boxes[t]
        use = carried.get("revealed", t, box)
        out.values[t] = np.where(use[..., None], carried.get("values", t, box), out.values[t])
        out.offset[t] = np.where(use, carried.get("offset", t, box), out.offset[t])
        out.revealed[t] = out.revealed[t] | use

    def _synthesise(
        self, unresolved: dict[int, np.ndarray], propagated: Propagated | None, *, keep_rows: bool = True
    ) -> tuple[dict[int, tuple[np.ndarray, Crop]], dict[int, np.ndarray]]:
        """The network's fill (plate units, over each frame's crop) of the pixels no frame showed; the
        pixels propagation recovered are known to it, like the rest of the plate. Also the crop's plate
        rows it saw per frame (propagated pixels pasted), for another candidate to fill from."""
        crop = self._crop_around(self._unresolved_box(unresolved))
        masks = {p: self._over(crop, self.infos[p][0], hole) for p, hole in unresolved.items()}
        # with the network's fill read by the join alone (no other candidate), each frame's is kept
        # at its unresolved pixels alone
        out, rows = self._network(crop, masks, propagated, keep_rows=keep_rows, at_holes=not keep_rows)
        self.ran_model = True
        return {p: (values, crop) for p, values in out.items() if unresolved[p].any()}, rows

    def _unresolved_box(self, unresolved: dict[int, np.ndarray]) -> Box:
        """The plate box of every frame's unresolved pixels (there must be some)."""
        boxes = []
        for p, hole in unresolved.items():
            if hole.any():
                by0, _, bx0, _ = self.infos[p][0]  # type: ignore[misc]
                ys, xs = np.nonzero(hole)
                boxes.append(
                    (
                        by0 + int(ys.min()),
                        by0 + int(ys.max()) + 1,
                        bx0 + int(xs.min()),
                        bx0 + int(xs.max()) + 1,
                    )
                )
        return _union(boxes)

    def _crop_around(self, box: Box) -> Crop:
        resolution = int(getattr(self.model, "resolution", 128))
        return plan_crop(box, self.height, self.width, resolution=resolution, margin=self.settings.margin)

    @staticmethod
    def _over(crop: Crop, box: Box | None, hole: np.ndarray, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
        """ndarray[crop h, crop w] bool: ``hole`` (laid over ``box``, moved by ``shift``) inside the crop."""
        out = np.zeros((crop.y1 - crop.y0, crop.x1 - crop.x0), bool)
        if box is None:
            return out
        y0, y1, x0, x1 = box[0] + shift[0], box[1] + shift[0], box[2] + shift[1], box[3] + shift[1]
        cy0, cy1, cx0, cx1 = max(y0, crop.y0), min(y1, crop.y1), max(x0, crop.x0), min(x1, crop.x1)
        if cy1 > cy0 and cx1 > cx0:
            out[cy0 - crop.y0 : cy1 - crop.y0, cx0 - crop.x0 : cx1 - crop.x0] = hole[
                cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0
            ]
        return out

    def _network(
        self,
        crop: Crop,
        masks: dict[int, np.ndarray],
        propagated: Propagated | None,
        *,
        keep_rows: bool = True,
        at_holes: bool = False,
    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """Run the model on the window over ``crop``, with the hole ``masks`` (crop pixels, per frame
        position; frames not in it have none there, but for the lead's, whose whole hole is unknown)
        and the propagated pixels of those frames pasted.

        Returns:
            (per frame of ``masks``: the network's values over the crop in plate units, per frame of
            ``masks``: the plate rows it saw, propagated pixels pasted, in plate units).
        """
        working = []
        holes = []
        rows_of = {}
        for p in self.positions:
            rows = self.rgb_at(p, (crop.y0, crop.y1, crop.x0, crop.x1))  # a new float32 array
            hole = np.zeros((crop.y1 - crop.y0, crop.x1 - crop.x0), np.float32)
            if p in masks:
                if propagated is not None and p - self.lo in propagated.revealed:
                    self._paste(rows, crop, propagated, p)
                hole[masks[p]] = 1.0
                if keep_rows:
                    rows_of[p] = rows
            elif p < self.window.first:  # the lead: context, its whole hole unknown (nothing propagated)
                box, alpha = self.infos[p]
                if box is not None and alpha is not None:
                    hole[self._over(crop, box, alpha > 0)] = 1.0
            working.append(_to_working(rows, crop, self.shaper))
            t = torch.from_numpy(hole)[None]
            if crop.scaled:
                t = (F.interpolate(t[None], size=(crop.height, crop.width), mode="area")[0] > 0).float()
            holes.append(t)
        frames = torch.stack(working, 1)
        log.debug("window %d-%d: crop %s", self.window.start, self.window.end - 1, crop)
        with torch.inference_mode():
            out = self.model(frames[None].to(self.device), torch.stack(holes, 1)[None].to(self.device))[0]
        out = out.float().cpu()
        result = {}
        crop_h, crop_w = crop.y1 - crop.y0, crop.x1 - crop.x0
        for i, p in enumerate(self.positions):
            if p not in masks:
                continue
            frame_out = out[:, i]
            if crop.scaled:
                frame_out = F.interpolate(
                    frame_out[None], size=(crop_h, crop_w), mode="bilinear", align_corners=False
                )[0]
            result[p] = self.shaper.decode(np.clip(frame_out.permute(1, 2, 0).numpy(), 0.0, 1.0))
            if at_holes:  # (its :class:`_HoleFill`, read as the dense array by the join)
                self.at_holes[p] = _HoleFill(result.pop(p), masks[p])
                result[p] = np.zeros((0, 0, 3), np.float32)
        return result, rows_of

    def _probe(self, unresolved: dict[int, np.ndarray], propagated: Propagated | None) -> Verdict | None:
        """Cut the unresolved pixels' shape into pixels beside them that no frame's matte touches, fill
        it with each candidate (the network, Telea, their mean, a shift-map copy of the plate, and the
        first three with the copy's texture: :data:`probe.METHODS`), and score each against the plate
        (:mod:`probe`).

        Returns:
            the verdict, or None where no such place exists (the matte covers too much).
        """
        union = self._unresolved_box(unresolved)

        def free(box: Box) -> bool:
            return not any(self.hole_in(p, box).any() for p in self.positions)

        for scale in probe.SCALES:
            shifts = probe.placements(union, self.height, self.width, free, scale=scale)
            if shifts:
                break
        else:
            return None
        filled = [p for p in sorted(unresolved) if unresolved[p].any()]
        step = max(1, len(filled) // probe.PROBE_FRAMES)
        scored = filled[::step][: probe.PROBE_FRAMES]
        results: dict[str, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {
            name: ([], [], []) for name in probe.METHODS
        }
        # each frame's unresolved pixels over the union's box, shrunk to the probe's size
        ph, pw = probe.probe_size(union, scale)
        shape = (union[0], union[0] + ph, union[2], union[2] + pw)
        whole = Crop(*union, union[1] - union[0], union[3] - union[2])  # (the union's box, unscaled)
        cuts = {p: probe.shrink(self._over(whole, self.infos[p][0], unresolved[p]), scale) for p in filled}
        used = 0
        for shift in shifts:
            crop = self._crop_around(
                (
                    max(0, shape[0] + shift[0]),
                    min(self.height, shape[1] + shift[0]),
                    max(0, shape[2] + shift[1]),
                    min(self.width, shape[3] + shift[1]),
                )
            )
            cut = {p: self._over(crop, shape, cuts[p], shift) for p in filled}
            masks = {
                p: cut.get(p, np.zeros((crop.y1 - crop.y0, crop.x1 - crop.x0), bool))
                | self._over(crop, self.infos[p][0], unresolved[p])
                for p in unresolved
            }
            if not any(cut[p].any() for p in scored):  # the shape fell past the frame's edge here
                continue
            used += 1
            out, rows = self._network(crop, masks, propagated)
            self._at_plate({p: (out[p], crop) for p in scored}, rows, masks, set(scored), want=cut)
            # one shift-map search per probe, on its middle frame, for the holes of every frame (as
            # :meth:`_patch` fills the real hole)
            every_hole = np.logical_or.reduce([masks[p] for p in filled])
            offsets = probe.patch_offsets(self._encode(rows[filled[len(filled) // 2]]), every_hole)
            for p in scored:
                truth = self._encode(rows[p])
                hole, network = masks[p], self._encode(out[p])
                copied, smooth = probe.patch(truth, hole, offsets), probe.telea(truth, hole)
                sigma = probe.TEXTURE_SIGMA
                # the texture's gain is measured on the probe hole and the plate around it alone (the
                # real hole, filled here too, is neither what is scored nor what its ring shows)
                ring, plate = probe.ring_detail(truth, cut[p]), probe.value_range(truth, ~hole)
                texture = probe.copy_texture(truth, hole, offsets, every_hole)
                network = _clone_to_border(network, truth, hole)
                mixed = probe.mean_fill(network, smooth)
                candidates = {"network": network, "telea": smooth, "blend": mixed}
                for name, base in list(candidates.items()):
                    gain = probe.texture_gain(base, texture, cut[p], ring)
                    textured = probe.add_texture(base, texture, hole, gain, plate)
                    # joined to the border as the real hole's fill is (:meth:`_meet_border`)
                    candidates[f"{name}+texture"] = _clone_to_border(textured, truth, hole, sigma)
                candidates["patch"] = _clone_to_border(copied, truth, hole, sigma)
                for name, fill in candidates.items():
                    results[name][0].append(fill)
                    results[name][1].append(truth)
                    results[name][2].append(cut[p])
        if not used:
            return None  # nothing scored: no error to tell
        scores = {name: probe.score(*lists) for name, lists in results.items()}
        verdict = probe.choose(scores, used)
        return dataclasses.replace(verdict, scale=scale) if scale != 1 else verdict

    def _at_plate(
        self,
        synthesised: dict[int, tuple[np.ndarray, Crop]],
        rows: dict[int, np.ndarray],
        holes: dict[int, np.ndarray],
        frames: set[int],
        *,
        want: dict[int, np.ndarray] | None = None,
    ) -> None:
        """Refine the network's fill of ``frames`` at plate resolution with the model's CombCN at plate
        resolution (:class:`combcn.model.plate.PlateCombCN`, guided by the working-size fill), in place;
        nothing where the model has none. ``holes`` are per frame the crop's unresolved pixels,
        ``want`` the pixels whose fill is needed (both over each frame's crop)."""
        plate = getattr(self.model, "plate", None)
        if plate is None:
            return
        for p in sorted(frames):
            values, crop = synthesised[p]
            hole = holes[p]
            need = None if want is None else want[p]
            refined = plate.fill(
                self._encode(rows[p]), hole, self._encode(values), want=need, origin=(p, crop.y0, crop.x0)
            )
            values[...] = self.shaper.decode(refined)

    def _encode(self, values: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.clip(self.shaper.encode(values), 0.0, 1.0)
        return out

    def _telea(
        self,
        synthesised: dict[int, tuple[np.ndarray, Crop]],
        unresolved: dict[int, np.ndarray],
        rows: dict[int, np.ndarray],
    ) -> dict[int, tuple[np.ndarray, Crop]]:
        """Telea's fill of the unresolved pixels, frame by frame, over the same crops and from the same
        plate rows (propagated pixels pasted) as the network's."""
        out = {}
        for p, (_, crop) in synthesised.items():
            hole = self._over(crop, self.infos[p][0], unresolved[p])
            out[p] = (self.shaper.decode(probe.telea(self._encode(rows[p]), hole)), crop)
        return out

    def _patch(
        self,
        synthesised: dict[int, tuple[np.ndarray, Crop]],
        unresolved: dict[int, np.ndarray],
        rows: dict[int, np.ndarray],
        propagated: Propagated | None,
        *,
        texture: bool = False,
    ) -> dict[int, tuple[np.ndarray, Crop]]:
        """The shift-map fill of the unresolved pixels (:func:`probe.patch_offsets`): one search on the
        window's middle frame for the union of every frame's unresolved pixels, so that each source is
        known in every frame; the plate pixels are then copied along those offsets at plate resolution
        (the plate's own detail and grain). A moving camera's frames each copy their own pixels (the
        copy moves with the background); a locked-off window copies the median of its frames at each
        source, so that what passes through the source does not pass through the fill. Same crops and
        plate rows (propagated pixels pasted) as the network's; the join to each frame's border
        (:meth:`_meet_border`) follows its changes of light. With ``texture``, what is copied is the
        plate's texture alone, in working units (:func:`probe.copy_texture`)."""
        order = sorted(synthesised)
        crop = synthesised[order[0]][1]
        holes = {p: self._over(crop, self.infos[p][0], unresolved[p]) for p in order}
        union = np.logical_or.reduce([holes[p] for p in order])
        offsets = probe.patch_offsets(self._encode(rows[order[len(order) // 2]]), union)
        still = None
        if propagated is not None and propagated.locked_off and len(rows) > 2:
            still = np.median(np.stack([rows[p] for p in sorted(rows)]), axis=0).astype(np.float32)
        out = {}
        # a locked-off window's texture is its still plate's outside the union, the same for every frame
        fine = probe.fine_of(self._encode(still), union) if texture and still is not None else None
        for p in order:
            if fine is not None:
                out[p] = (probe.copy_fine(fine, holes[p], offsets), crop)
                continue
            source = rows[p] if still is None else np.where(union[..., None], rows[p], still)
            if texture:
                out[p] = (probe.copy_texture(self._encode(source), holes[p], offsets, union), crop)
                continue
            values, missing = probe.apply_offsets(source, holes[p], offsets)
            if missing.any():
                values[missing] = self.shaper.decode(probe.telea(self._encode(values), missing))[missing]
            out[p] = (values.astype(np.float32), synthesised[p][1])
        return out

    def _textured(
        self,
        smooth: dict[int, tuple[np.ndarray, Crop]],
        textures: dict[int, tuple[np.ndarray, Crop]],
        unresolved: dict[int, np.ndarray],
        rows: dict[int, np.ndarray],
    ) -> dict[int, tuple[np.ndarray, Crop]]:
        """Each frame's smooth fill with the plate's copied texture (``textures``: :meth:`_patch`;
        :func:`probe.add_texture`) at its unresolved pixels (the rest of the crop keeps the smooth
        fill), scaled to the detail of the frame's own plate around them (:func:`probe.ring_detail`; a
        locked-off window copies the median of its frames, which has lost the grain every frame shows)."""
        out = {}
        for p, (values, crop) in smooth.items():
            base, texture, plate = self._encode(values), textures[p][0], self._encode(rows[p])
            hole = self._over(crop, self.infos[p][0], unresolved[p])
            gain = probe.texture_gain(base, texture, hole, probe.ring_detail(plate, hole))
            textured = probe.add_texture(base, texture, hole, gain, probe.value_range(plate, ~hole))
            out[p] = (self.shaper.decode(np.clip(textured, 0.0, 1.0)).astype(np.float32), crop)
        return out

    def _paste(self, rows: np.ndarray, crop: Crop, propagated: Propagated, p: int) -> None:
        """Write the propagated values of frame ``p`` into its crop pixels."""
        over = (crop.y0, crop.y1, crop.x0, crop.x1)
        mask = propagated.get("revealed", p - self.lo, over)
        rows[mask] = propagated.get("values", p - self.lo, over)[mask]

    def _join(
        self,
        p: int,
        unresolved: np.ndarray,
        propagated: Propagated | None,
        synthesised: tuple[np.ndarray, Crop] | None,
    ) -> _WindowFill:
        """Propagated pixels where another frame showed them, the network's fill elsewhere, cloned so
        that it meets them (and the plate) with no step (:meth:`_meet_border`). (A ramp that also blended
        the network's soft fill over the recovered pixels next to it only blurred them: measured on
        held-out clips, it cost hole error.)"""
        box, _ = self.infos[p]
        assert box is not None
        y0, y1, x0, x1 = box
        shape = (y1 - y0, x1 - x0)
        fill = np.zeros(shape + (3,), np.float32)
        revealed = np.zeros(shape, bool)
        offset = np.zeros(shape, np.float32)
        if propagated is not None and p - self.lo in propagated.revealed:
            revealed = propagated.get("revealed", p - self.lo, box)
            fill = propagated.get("values", p - self.lo, box)
            offset = propagated.get("offset", p - self.lo, box)
        if synthesised is None and not revealed.any():
            return _WindowFill(fill, revealed, offset)
        # the plate around the box, read once for the join and the seams (2 pixels: the seams' blur)
        around = self._grown(box, 2)
        plate = self.rgb_at(p, around)
        if synthesised is not None:
            net = self._meet_border(p, synthesised, unresolved, fill, revealed, plate, around)
            fill = np.where(unresolved[..., None], net, fill).astype(np.float32)
        if revealed.any():
            fill = _soften_seams(plate, around, box, fill, revealed | unresolved, revealed, offset)
        return _WindowFill(fill, revealed, offset)

    def _grown(self, box: Box, margin: int) -> Box:
        """``box`` grown by ``margin`` pixels on every side, clipped to the plate."""
        return (
            max(0, box[0] - margin),
            min(self.height, box[1] + margin),
            max(0, box[2] - margin),
            min(self.width, box[3] + margin),
        )

    def _meet_border(
        self,
        p: int,
        synthesised: tuple[np.ndarray, Crop],
        unresolved: np.ndarray,
        fill: np.ndarray,
        revealed: np.ndarray,
        plate: np.ndarray,
        around: Box,
    ) -> np.ndarray:
        """The network's fill over frame ``p``'s hole box, cloned in the gradient domain: it keeps its
        own detail, and a smooth correction makes it meet every known pixel around what it synthesised
        (the plate's own and the recovered ones) at plate resolution. The correction is the difference,
        on the synthesised pixels that touch a known one, between the mean of those known neighbours
        and the network's value, interpolated as a membrane over the rest (the Poisson solve's
        stand-in). The network's fill is made at working size and scaled up: without this its level
        drifts from the plate's right at the hole's edge (measured on held-out clips: 14-35 % less
        error on the synthesised pixels with it). Between key frames, what a key frame's joined fill
        carried here is known like the recovered pixels: only the rest is moved to meet it. ``plate``:
        the frame over ``around``, the box grown by at least one pixel (read, not written)."""
        box, _ = self.infos[p]
        assert box is not None
        values, crop = synthesised
        kept = self.at_holes.get(p)
        if kept is not None:
            values = kept.dense()
        y0, y1, x0, x1 = box
        g = self._grown(box, 1)
        inner = (slice(y0 - g[0], y1 - g[0]), slice(x0 - g[2], x1 - g[2]))
        # (a copy: written into below)
        known_values = plate[g[0] - around[0] : g[1] - around[0], g[2] - around[2] : g[3] - around[2]].copy()
        known_values[inner][revealed] = fill[revealed]
        todo = np.zeros(known_values.shape[:2], bool)
        todo[inner] = unresolved
        net = np.zeros(known_values.shape, np.float32)
        cy0, cy1, cx0, cx1 = max(g[0], crop.y0), min(g[1], crop.y1), max(g[2], crop.x0), min(g[3], crop.x1)
        net[cy0 - g[0] : cy1 - g[0], cx0 - g[2] : cx1 - g[2]] = values[
            cy0 - crop.y0 : cy1 - crop.y0, cx0 - crop.x0 : cx1 - crop.x0
        ]
        # a copy of the plate carries texture up to the border: only its level is matched there
        copied = self.method in probe.COPIES
        sigma = probe.TEXTURE_SIGMA if copied else None
        # what a key frame's fill carried here was joined there: it stays as carried, and the rest of
        # the synthesised pixels meet it as they meet the plate (joined again to each frame's border,
        # it would follow that border's grain and passers-by frame by frame: flicker)
        carried = self.carried.get(p)
        if carried is not None:
            carried = carried & unresolved
            todo[inner] &= ~carried
            known_values[inner][carried] = net[inner][carried]
        out: np.ndarray = _clone_to_border(net, known_values, todo, sigma)[inner]
        if carried is not None:  # (the correction moves every pixel; only ``todo`` is the join's)
            out[carried] = net[inner][carried]
        # the correction may carry a fill past what the crop shows (a dark fill lowered to meet a dark
        # edge goes below black; a bright grain lifted to a bright edge): kept within the crop's range
        lo, hi = (values.min(axis=(0, 1)), values.max(axis=(0, 1))) if kept is None else kept.range()
        return np.clip(out, np.minimum(lo, 0.0), hi)


def _soften_seams(
    plate: np.ndarray,
    around: Box,
    box: Box,
    fill: np.ndarray,
    hole: np.ndarray,
    revealed: np.ndarray,
    offset: np.ndarray,
) -> np.ndarray:
    """The fill of a frame's hole box with the seams between the frames its recovered pixels came from
    softened, where they are sharper than the inside of the patches they join.

    Propagation takes each hole pixel from the frame its traced point first reaches, and neighbouring
    points reach different frames. Where those frames differ by more than their content (a moving
    camera: each frame's own small misregistration, blur and grain, side by side) the seams speckle:
    on two held-out clips with moving strokes (the cat, the rally car) 20-47 % of the hole's pixels
    lay on a seam, and there the fill carried 2.7-3.3 times the truth's fine detail and 1.6-1.7 times
    the error of the pixels inside one source's patch. On a locked-off shot the frames agree and a
    seam is as sharp as the rest: softening it there only blurred the truth.

    A seam pixel: a recovered pixel with a recovered 4-neighbour from another frame. Where the mean
    |Laplacian| of the luma over the seam pixels is above :data:`SEAM_EXCESS` times that inside the
    patches (recovered pixels at least two pixels from a seam; both where the Laplacian sees no
    synthesised pixel), each seam pixel takes the Gaussian mean of the plate and the recovered pixels
    around it, with the smallest sigma of :data:`SEAM_SIGMAS` that brings the seams' detail within
    that bound (else the largest). The synthesised pixels, and the recovered ones off a seam, keep
    their values, and no synthesised value is mixed into a recovered one (the synthesised fill was
    joined to the recovered pixels already: :meth:`_Window._meet_border`).

    Args:
        plate: the frame over ``around`` (``box`` grown by 2 pixels, clipped to the plate), plate units.
        around, box: plate boxes ``(y0, y1, x0, x1)``.
        fill: ndarray[h, w, 3] over ``box``: the joined fill (valid where ``hole``).
        hole: the frame's hole pixels over ``box``; of them, ``revealed`` were shown by another frame,
            and ``offset`` is there the frame they came from, as an offset from this one.

    Returns:
        ``fill`` itself where nothing is softened, else a new array (the same values off the seams).
    """
    source = np.rint(offset).astype(np.int64)
    seam = np.zeros(hole.shape, bool)
    for a, b in (
        ((slice(1, None),), (slice(None, -1),)),
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
    ):
        differs = revealed[a] & revealed[b] & (source[a] != source[b])
        seam[a] |= differs
        seam[b] |= differs
    # detail is measured where the Laplacian sees no synthesised pixel
    synthesised = hole & ~revealed
    clear = ~(
        cv2.dilate(synthesised.astype(np.uint8), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)) > 0
    )
    inside = revealed & clear & ~(cv2.dilate(seam.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    if inside.sum() < SEAM_POINTS or not (seam & clear).any():
        return fill
    inner = (slice(box[0] - around[0], box[1] - around[0]), slice(box[2] - around[2], box[3] - around[2]))
    frame = plate.copy()
    frame[inner][hole] = fill[hole]
    # the means are over the plate and the recovered pixels alone
    weight = np.ones(plate.shape[:2], np.float32)
    weight[inner][synthesised] = 0.0

    def laplacian(image: np.ndarray) -> np.ndarray:
        """|Laplacian| of the luma over ``box``."""
        luma = image @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        out: np.ndarray = np.abs(cv2.Laplacian(luma, cv2.CV_32F, ksize=1))[inner]
        return out

    lap = laplacian(frame)
    bound = SEAM_EXCESS * float(lap[inside].mean())
    if float(lap[seam & clear].mean()) <= bound:
        return fill
    out = fill.copy()
    for sigma in SEAM_SIGMAS:
        blur = partial(cv2.GaussianBlur, ksize=(0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
        smooth = blur(frame * weight[..., None]) / np.maximum(blur(weight), 1e-6)[..., None]
        out[seam] = smooth[inner][seam]
        softer = frame.copy()
        softer[inner][seam] = out[seam]
        if float(laplacian(softer)[seam & clear].mean()) <= bound:
            break
    return out


def _hold_still(
    fills: dict[int, _WindowFill],
    unresolved: dict[int, np.ndarray],
    boxes: dict[int, Box],
    gains: Callable[[int, int], np.ndarray] | None = None,
) -> None:
    """Smooth the synthesised pixels of a locked-off window along time, in place: each becomes the
    Gaussian-weighted mean (sigma :data:`STILL_SIGMA` frames) of its own plate pixel's fills in the
    frames around it where that pixel is synthesised too, each brought to this frame's exposure first
    (``gains(p, q)``, per channel, where given: :meth:`_Window._ring_gains`; a flash frame's fill
    stays as bright as its border). Where the camera does not move, what no frame shows has no reason
    to change from frame to frame, but each frame's fill follows its own border (people passing it,
    the grain of its ring) and shimmers; the truth behind the hole changes on its own and the fill
    cannot follow that. Revealed and known pixels are not touched, and a pixel synthesised in one
    frame alone keeps its value."""
    order = sorted(p for p in fills if unresolved[p].any())
    radius = int(3 * STILL_SIGMA)
    smoothed: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for p in order:
        # the frame's synthesised pixels alone (on a moving matte a few fragments of its hole box)
        ys, xs = np.nonzero(unresolved[p])
        at_y, at_x = ys + boxes[p][0], xs + boxes[p][2]  # plate pixels
        total = np.zeros((len(ys), 3), np.float32)
        weight = np.zeros(len(ys), np.float32)
        for q in order:
            if abs(q - p) > radius:
                continue
            qy0, qy1, qx0, qx1 = boxes[q]
            qy, qx = at_y - qy0, at_x - qx0
            inside = np.nonzero((qy >= 0) & (qy < qy1 - qy0) & (qx >= 0) & (qx < qx1 - qx0))[0]
            both = inside[unresolved[q][qy[inside], qx[inside]]]
            if not len(both):
                continue
            w = np.float32(np.exp(-0.5 * ((q - p) / STILL_SIGMA) ** 2))
            theirs = fills[q].fill[qy[both], qx[both]]
            if gains is not None and q != p:  # brought to this frame's exposure (a flash, a fade)
                theirs = theirs * gains(p, q)
            total[both] += w * theirs
            weight[both] += w
        # the frame's own value is always in (weight > 0)
        smoothed[p] = (ys, xs, total / np.maximum(weight, 1e-12)[:, None])
        # a frame no later one reads (beyond the radius) takes its smoothed values now, in place: at
        # most 2 radius + 1 frames' synthesised pixels are held twice
        for q in [q for q in smoothed if q <= p - radius]:
            qys, qxs, new = smoothed.pop(q)
            fills[q].fill[qys, qxs] = new
    for q, (qys, qxs, new) in smoothed.items():
        fills[q].fill[qys, qxs] = new


def _key_frames(order: list[int]) -> set[int]:
    """The frames whose synthesis is kept and carried to the others: every ``KEY_FRAMES``-th of
    ``order`` (sorted) and the last."""
    return {p for i, p in enumerate(order) if i % KEY_FRAMES == 0} | {order[-1]}


def _clone_to_border(
    net: np.ndarray, known_values: np.ndarray, todo: np.ndarray, sigma: float | None = None
) -> np.ndarray:
    """``net`` (ndarray[h, w, 3]) at ``todo`` (bool[h, w]) moved by a smooth correction so that it meets
    ``known_values`` (the same grid) around it: the difference, on the ``todo`` pixels that touch a known
    one, between the mean of those known neighbours and ``net``, interpolated as a membrane over the
    rest (the Poisson solve's stand-in). Pixels outside ``todo`` are moved by the membrane too: only
    ``todo``'s are meant to be read. With ``sigma``, the difference is taken from ``net`` blurred by
    that Gaussian: the level is matched and the texture at the border kept (a copy's grain would
    otherwise be cancelled there and its extremes spread inwards)."""
    known = (~todo).astype(np.float32)
    ones = np.ones((3, 3), np.float32)
    count = cv2.filter2D(known, -1, ones, borderType=cv2.BORDER_CONSTANT)
    total = cv2.filter2D(known_values * known[..., None], -1, ones, borderType=cv2.BORDER_CONSTANT)
    edge = todo & (count > 0)  # synthesised pixels with a known neighbour
    if not edge.any():
        return net
    difference = np.zeros_like(net)
    level = net
    if sigma is not None:  # blurred over the fill alone: the known pixels beside it would pull it halfway
        inside = todo.astype(np.float32)
        weight = cv2.GaussianBlur(inside, (0, 0), sigma)
        level = cv2.GaussianBlur(net * inside[..., None], (0, 0), sigma) / np.maximum(weight, 1e-6)[..., None]
    difference[edge] = total[edge] / count[edge][:, None] - level[edge]
    out: np.ndarray = net + membrane_fill(difference, edge)
    return out


def render_windows(
    model: torch.nn.Module,
    n: int,
    targets: Iterable[int],
    rgb_at: Callable[[int, Box], np.ndarray],
    alpha_at: Callable[[int], np.ndarray],
    emit: Callable[[int, FrameFill], None],
    *,
    shaper: Shaper,
    settings: RenderSettings,
    device: torch.device,
    propagation: PropagationSettings | None = None,
    references: References | None = None,
) -> None:
    """Inpaint the frames at ``targets`` (sequence positions ``0 .. n-1``), window by window.

    Args:
        model: an :class:`combcn.model.Inpainter` (attributes ``window``, ``resolution``).
        n: length of the whole sequence (the window grid is anchored at position 0).
        targets: positions whose fills are wanted, emitted in increasing order.
        rgb_at: (position, (y0, y1, x0, x1)) -> plate RGB over that box, ndarray[y1-y0, x1-x0, 3]
            float32 in plate units (finite), a new array each call (a window writes into the frames
            it propagated from once it is done with them); only the boxes a window needs are asked for.
        alpha_at: position -> compositing alpha ndarray[H, W] float32 in [0, 1].
        emit: called once per target with its :class:`FrameFill`, as soon as it is final.
        shaper: working-range curve of the network.
        settings: overlap, margin, context.
        device: where the model runs.
        propagation: carry pixels other frames show at plate resolution first (None: off; the network
            fills every hole pixel). Frames up to ``propagation.reach`` beyond a window are read.
        references: frames the artist filled, carried along the motion (they need propagation); each
            window also reads the nearest reference before and after it, and the frames between.
    """
    propagation = propagation or PropagationSettings(enabled=False)
    if references is not None and references.positions and not propagation.enabled:
        raise ConfigError(
            "reference frames are carried by propagation; drop --no-propagate (propagate=False)"
        )
    wanted = sorted(set(targets))
    windows, _ = needed_windows(n, wanted, int(getattr(model, "window", 32)), settings)
    reach = propagation.reach if propagation.enabled else 0
    # Per frame in flight: its hole box and the alpha inside it only (memory follows the holes).
    alphas: dict[int, tuple[Box | None, np.ndarray | None]] = {}
    plate_size: list[int] = []
    accumulators: dict[int, _Accumulator] = {}
    emitted: set[int] = set()
    wanted_set = set(wanted)
    tracking = bool(getattr(getattr(model, "config", None), "track", False))
    run_windows = tracked_windows = 0
    hole_pixels = revealed_pixels = referenced_pixels = 0
    verdicts: list[Verdict] = []
    # each frame pair's motion is measured once for the render, kept while a later window reads it
    motion = MotionCache()
    later_starts = [span(w, n, propagation, references)[0] for w in windows]

    def alpha_info(position: int) -> tuple[Box | None, np.ndarray | None]:
        if position not in alphas:
            alpha = alpha_at(position)
            plate_size[:] = alpha.shape
            box = bbox(alpha)
            alphas[position] = (box, None if box is None else alpha[box[0] : box[1], box[2] : box[3]].copy())
        return alphas[position]

    for k, window in enumerate(windows):
        lo, hi = span(window, n, propagation, references)
        infos = {p: alpha_info(p) for p in range(lo, hi)}
        work = _Window(
            model,
            window,
            n,
            rgb_at,
            infos,
            (plate_size[0], plate_size[1]),
            shaper=shaper,
            settings=settings,
            propagation=propagation,
            device=device,
            references=references,
            motion=motion,
        )
        fills = work.run()
        motion.forget_before(min(later_starts[k + 1 :], default=n))
        if work.verdict is not None:
            verdicts.append(work.verdict)
            log.info(
                "window %d-%d: what no frame shows, measured on %d probe hole(s) of its shape%s: %s; "
                "filled by %s, expected error %.2f (0-255 of the working range)",
                window.start,
                window.end - 1,
                work.verdict.probes,
                "" if work.verdict.scale == 1 else f" at 1/{work.verdict.scale} of its size",
                ", ".join(f"{n} {v.mae:.2f} (detail {v.detail:.2f})" for n, v in work.verdict.scores.items()),
                work.verdict.method,
                work.verdict.expected,
            )
        elif work.ran_model and settings.probe:  # probing on, synthesised, no probe hole fitted
            log.info(
                "window %d-%d: what no frame shows: no probe hole of its shape fits beside the matte, even "
                "at 1/%d of its size; filled by %s, its error not measured",
                window.start,
                window.end - 1,
                probe.SCALES[-1],
                UNPROBED,
            )
        if work.ran_model:
            run_windows += 1
            last = getattr(model, "last_tracked", None)
            tracked_windows += int(tracking and last is not None and bool(last.any()))
        for p, frame_fill in fills.items():
            if p not in wanted_set:
                continue
            box, alpha = infos[p]
            assert box is not None and alpha is not None
            acc = accumulators.get(p)
            if acc is None:
                acc = accumulators[p] = _Accumulator(box, alpha)
            acc.add(
                window.weight(p),
                frame_fill.fill,
                frame_fill.revealed.astype(np.float32),
                frame_fill.offset,
                frame_fill.expected,
                None if frame_fill.referenced is None else frame_fill.referenced.astype(np.float32),
            )
        # Frames before the next window fills any are final; it reads from its start (less its reach) on.
        final_before = windows[k + 1].first if k + 1 < len(windows) else n
        read_from = windows[k + 1].start if k + 1 < len(windows) else n
        for p in wanted:
            if p >= final_before:
                break
            if p in emitted:
                continue
            acc = accumulators.pop(p, None)
            if acc is None:
                emit(p, FrameFill(None, None, None))
            else:
                result = acc.result()
                assert result.alpha is not None and result.revealed is not None
                hole_pixels += int((result.alpha > 0).sum())
                revealed_pixels += int((result.revealed & (result.alpha > 0)).sum())
                if result.referenced is not None:
                    referenced_pixels += int((result.referenced & (result.alpha > 0)).sum())
                emit(p, result)
            emitted.add(p)
        for p in [p for p in alphas if p < read_from - reach]:
            del alphas[p]
    missing = [p for p in wanted if p not in emitted]
    if missing:  # pragma: no cover - a bug, not a user error
        raise AssertionError(f"frames at positions {missing[:5]} were never rendered")
    if propagation.enabled and hole_pixels:
        log.info(
            "propagation: %.1f%% of the hole pixels came from other frames at plate resolution; the rest was "
            "synthesised",
            100.0 * revealed_pixels / hole_pixels,
        )
    if references is not None and references.positions and hole_pixels:
        log.info(
            "reference frames: %.1f%% of the hole pixels came from the %d reference frame(s)",
            100.0 * referenced_pixels / hole_pixels,
            len(references.positions),
        )
    if verdicts:
        chosen = sorted({v.method for v in verdicts})
        log.info(
            "synthesis: expected error %.2f (0-255 of the working range) on what no frame shows, measured on "
            "probe holes in %d window(s); filled by %s",
            sum(v.expected for v in verdicts) / len(verdicts),
            len(verdicts),
            " and ".join(chosen),
        )
    if tracking and run_windows:
        log.info(
            "camera track: the clean plate followed the camera in %d of %d window(s) (the rest: "
            "locked off, or the track did not fit the shot)",
            tracked_windows,
            run_windows,
        )
